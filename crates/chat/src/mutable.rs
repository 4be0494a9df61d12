//! Python lists that templates change in place: Kimi K2's templates keep a queue of tool-call ids
//! in a namespace (`namespace(ids=[])`, then `ids.append(id)` and `ids.pop(0)`), which Jinja2
//! runs and minijinja's immutable sequences cannot. A list given to `namespace(...)` becomes a
//! [`PyList`] with `append` and `pop`; everything else about it is a plain sequence.

use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::{Error, ErrorKind, State, Value};
use std::sync::{Arc, Mutex, MutexGuard};

/// A list with Python's `append` and `pop`.
#[derive(Debug, Default)]
pub(crate) struct PyList(Mutex<Vec<Value>>);

impl PyList {
    fn items(&self) -> MutexGuard<'_, Vec<Value>> {
        // A panic while the lock was held cannot leave the vector half-changed.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `i` (negative from the end, as Python counts) as an index into `len` items.
fn py_index(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { len as i64 + i } else { i };
    usize::try_from(i).ok().filter(|&i| i < len)
}

impl Object for PyList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let items = self.items();
        let i = py_index(i64::try_from(key.clone()).ok()?, items.len())?;
        Some(items[i].clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.items().clone())
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match (method, args) {
            ("append", [v]) => {
                self.items().push(v.clone());
                Ok(Value::from(()))
            }
            ("pop", [] | [_]) => {
                let mut items = self.items();
                let at = match args.first() {
                    Some(i) => i64::try_from(i.clone())?,
                    None => -1,
                };
                let i = py_index(at, items.len()).ok_or_else(|| {
                    Error::new(ErrorKind::InvalidOperation, "pop index out of range")
                })?;
                Ok(items.remove(i))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// Jinja2's `namespace(...)`, its lists made [`PyList`]s.
pub(crate) fn namespace(defaults: Option<Value>) -> Result<Value, Error> {
    let Some(defaults) = defaults else {
        return minijinja::functions::namespace(None);
    };
    let pairs = defaults
        .as_object()
        .filter(|o| matches!(o.repr(), ObjectRepr::Map))
        .and_then(|o| o.try_iter_pairs())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "namespace: expected keyword arguments, got {}",
                    defaults.kind()
                ),
            )
        })?;
    let converted: Vec<(Value, Value)> = pairs
        .map(|(k, v)| {
            let v = match v.kind() {
                minijinja::value::ValueKind::Seq
                    if v.as_object().is_none_or(|o| !o.is::<PyList>()) =>
                {
                    let items: Vec<Value> = v.try_iter().map(Iterator::collect).unwrap_or_default();
                    Value::from_object(PyList(Mutex::new(items)))
                }
                _ => v,
            };
            (k, v)
        })
        .collect();
    minijinja::functions::namespace(Some(Value::from_iter(converted)))
}
