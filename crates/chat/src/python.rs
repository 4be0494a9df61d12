//! Where Jinja2 (as transformers runs it) and minijinja differ, Jinja2's way: the `iterable` and
//! `sequence` tests, and Python's `str()` of template values, where minijinja's own text differs: lists and dicts
//! (`['a', 1]`, `{'k': None}` rather than JSON-like text) and floats (`1e-05`, `1e+16`). Templates
//! print values through the `string` filter and `{{ }}`: Qwen3-Coder writes a parameter's
//! `type | string`, which is a list for `["string", "integer"]`.

use minijinja::value::ValueKind;
use minijinja::{Error, Output, State, Value};

/// `str(value)` as Python writes it.
pub(crate) fn str_of(v: &Value) -> String {
    let mut out = String::new();
    match v.kind() {
        ValueKind::String => out.push_str(v.as_str().unwrap_or_default()),
        _ => write_repr(&mut out, v, 0),
    }
    out
}

/// The `string` filter: Python's `str()`; undefined stays empty, as in Jinja2.
pub(crate) fn string_filter(v: &Value) -> Value {
    match v.kind() {
        ValueKind::String => v.clone(),
        ValueKind::Undefined => Value::from(""),
        _ => Value::from(str_of(v)),
    }
}

/// The formatter for `{{ }}`: Python's text for lists, dicts and floats, minijinja's for the rest
/// (the same as Python's there).
pub(crate) fn formatter(out: &mut Output, state: &State, v: &Value) -> Result<(), Error> {
    let pythonic =
        matches!(v.kind(), ValueKind::Seq | ValueKind::Map) || (v.is_number() && !v.is_integer());
    if pythonic && !v.is_safe() {
        out.write_str(&str_of(v))
            .map_err(|e| Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
    } else {
        minijinja::escape_formatter(out, state, v)
    }
}

/// Jinja2's `iterable` test: whatever `iter()` takes, which `None` is not (minijinja iterates
/// over none as over nothing). Templates write `tools is iterable and tools | length > 0`.
pub(crate) fn is_iterable(v: &Value) -> bool {
    v.kind() != ValueKind::None && v.try_iter().is_ok()
}

/// Jinja2's `sequence` test: anything with a length and items, so strings and dicts too (and
/// Jinja2's undefined).
pub(crate) fn is_sequence(v: &Value) -> bool {
    matches!(
        v.kind(),
        ValueKind::Seq
            | ValueKind::Map
            | ValueKind::String
            | ValueKind::Bytes
            | ValueKind::Undefined
    )
}

/// Deepest nesting written out; deeper values are written as `...` (Python's own recursion
/// guard prints that for self-references, and values from JSON cannot be that deep anyway).
const MAX_DEPTH: usize = 64;

/// `repr(value)`.
fn write_repr(out: &mut String, v: &Value, depth: usize) {
    if depth > MAX_DEPTH {
        out.push_str("...");
        return;
    }
    match v.kind() {
        ValueKind::None => out.push_str("None"),
        ValueKind::Undefined => {}
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::String => write_str_repr(out, v.as_str().unwrap_or_default()),
        ValueKind::Number if !v.is_integer() => match f64::try_from(v.clone()) {
            Ok(f) => out.push_str(&float_repr(f)),
            Err(_) => out.push_str(&v.to_string()),
        },
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in v.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, &item, depth + 1);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in v.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, &key, depth + 1);
                out.push_str(": ");
                let item = v.get_item(&key).unwrap_or_default();
                write_repr(out, &item, depth + 1);
            }
            out.push('}');
        }
        _ => out.push_str(&v.to_string()),
    }
}

/// `repr(float)`: the shortest text that reads back the same number, with an exponent below
/// 1e-4 and from 1e16 on, as `1e-05` and `1e+16`.
pub(crate) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f < 0.0 { "-inf" } else { "inf" }.into();
    }
    // Rust's `{:?}` gives the same shortest digits and switches to an exponent at the same
    // magnitudes; only the exponent's spelling differs.
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// `repr(str)`: single quotes unless the text has some and no double quotes; backslash escapes
/// for the quote, backslashes and characters Python does not print (controls, and the
/// invisible separators and format characters listed in [`unprintable`]).
fn write_str_repr(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if unprintable(c) => {
                let n = c as u32;
                if n <= 0xFF {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n <= 0xFFFF {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Characters `str.isprintable()` rejects, as far as a table this small can tell: controls,
/// the space separators other than ' ', line and paragraph separators, and the common format
/// characters (soft hyphen, zero-width and direction marks, BOM).
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{A0}' | '\u{AD}' | '\u{1680}' | '\u{2000}'..='\u{200F}' | '\u{2028}'..='\u{202F}'
            | '\u{205F}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{3000}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_as_python_writes_them() {
        for (f, want) in [
            (0.5, "0.5"),
            (1.0, "1.0"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (1.2345e100, "1.2345e+100"),
            (123456789012345.0, "123456789012345.0"),
            (0.0001, "0.0001"),
            (-2.5, "-2.5"),
        ] {
            assert_eq!(float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn containers_as_python_writes_them() {
        let v = Value::from_serialize(serde_json::json!({
            "a": [1, 2.5, true, null, "x"], "b": {"c": "it's"}, "d": "say \"hi\" it's\n\u{a0}"
        }));
        assert_eq!(
            str_of(&v),
            r#"{'a': [1, 2.5, True, None, 'x'], 'b': {'c': "it's"}, 'd': 'say "hi" it\'s\n\xa0'}"#
        );
        assert_eq!(str_of(&Value::from("plain")), "plain");
        assert_eq!(str_of(&Value::from(())), "None");
    }
}
