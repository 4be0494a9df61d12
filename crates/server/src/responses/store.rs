//! The stored responses that `previous_response_id`, `GET` and `DELETE /v1/responses/{id}` find:
//! in memory only, bounded in count and bytes, least recently used first out, and forgotten after
//! a time to live, so a long-running server holds a fixed amount of conversation at most.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Responses kept at most.
pub const MAX_RESPONSES: usize = 1024;
/// Bytes of stored JSON kept at most.
pub const MAX_BYTES: usize = 64 << 20;
/// How long a stored response can be continued or read.
pub const TTL: Duration = Duration::from_secs(3600);

/// One stored response.
#[derive(Debug)]
pub struct Stored {
    /// The response object as it was answered.
    pub response: Value,
    /// The conversation it ended, as chat messages: its input (after any earlier responses it
    /// continued, without `instructions`, which a continuation does not inherit) and its output
    /// as the assistant's turn.
    pub conversation: Vec<Value>,
}

struct Entry {
    stored: Arc<Stored>,
    bytes: usize,
    created: Instant,
    /// Its key in `Inner::lru`.
    used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Use tick → id, oldest first.
    lru: BTreeMap<u64, String>,
    bytes: usize,
    tick: u64,
}

pub struct ResponseStore {
    inner: Mutex<Inner>,
    max_responses: usize,
    max_bytes: usize,
    ttl: Duration,
}

impl Default for ResponseStore {
    fn default() -> Self {
        ResponseStore::new(MAX_RESPONSES, MAX_BYTES, TTL)
    }
}

impl ResponseStore {
    pub fn new(max_responses: usize, max_bytes: usize, ttl: Duration) -> Self {
        ResponseStore {
            inner: Mutex::default(),
            max_responses,
            max_bytes,
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves the maps consistent: every method
        // updates them together before it can panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, id: String, stored: Stored) {
        self.insert_at(id, stored, Instant::now());
    }

    pub fn get(&self, id: &str) -> Option<Arc<Stored>> {
        self.get_at(id, Instant::now())
    }

    /// Forgets a response; false if there was none (or it had expired).
    pub fn remove(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        let live = inner
            .entries
            .get(id)
            .is_some_and(|e| now.duration_since(e.created) < self.ttl);
        inner.remove(id);
        live
    }

    fn insert_at(&self, id: String, stored: Stored, now: Instant) {
        let bytes = size_of(&stored);
        if bytes > self.max_bytes {
            tracing::info!("{id}: not stored ({bytes} bytes, over the store's budget)");
            return;
        }
        let mut inner = self.lock();
        inner.remove(&id);
        inner.tick += 1;
        let used = inner.tick;
        inner.lru.insert(used, id.clone());
        inner.bytes += bytes;
        let entry = Entry {
            stored: Arc::new(stored),
            bytes,
            created: now,
            used,
        };
        inner.entries.insert(id, entry);
        while inner.entries.len() > self.max_responses || inner.bytes > self.max_bytes {
            let Some((_, oldest)) = inner.lru.pop_first() else {
                break;
            };
            inner.remove(&oldest);
        }
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<Arc<Stored>> {
        let mut inner = self.lock();
        let e = inner.entries.get(id)?;
        if now.duration_since(e.created) >= self.ttl {
            inner.remove(id);
            return None;
        }
        let (stored, old) = (e.stored.clone(), e.used);
        inner.tick += 1;
        let used = inner.tick;
        inner.lru.remove(&old);
        inner.lru.insert(used, id.to_string());
        if let Some(e) = inner.entries.get_mut(id) {
            e.used = used;
        }
        Some(stored)
    }
}

impl Inner {
    fn remove(&mut self, id: &str) {
        if let Some(e) = self.entries.remove(id) {
            self.lru.remove(&e.used);
            self.bytes -= e.bytes;
        }
    }
}

/// What a stored response costs: its JSON text, which is close to what it holds in memory.
fn size_of(s: &Stored) -> usize {
    let conversation: usize = s.conversation.iter().map(|m| m.to_string().len()).sum();
    s.response.to_string().len() + conversation
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(text: &str) -> Stored {
        Stored {
            response: json!({"text": text}),
            conversation: vec![json!({"role": "user", "content": text})],
        }
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let store = ResponseStore::new(2, 1 << 20, TTL);
        let t = Instant::now();
        store.insert_at("a".into(), stored("a"), t);
        store.insert_at("b".into(), stored("b"), t);
        assert!(store.get_at("a", t).is_some());
        store.insert_at("c".into(), stored("c"), t);
        assert!(store.get_at("b", t).is_none(), "b was used least recently");
        assert!(store.get_at("a", t).is_some());
        assert!(store.get_at("c", t).is_some());
        assert!(store.remove("a"));
        assert!(!store.remove("a"));
    }

    #[test]
    fn the_byte_budget_and_the_ttl_bound_the_store() {
        let one = size_of(&stored("xxxxxxxx"));
        let store = ResponseStore::new(100, 2 * one + 1, Duration::from_secs(60));
        let t = Instant::now();
        for id in ["a", "b", "c"] {
            store.insert_at(id.into(), stored("xxxxxxxx"), t);
        }
        assert!(store.get_at("a", t).is_none());
        assert_eq!(store.lock().bytes, 2 * one);
        let later = t + Duration::from_secs(61);
        assert!(store.get_at("b", later).is_none(), "expired");
        assert_eq!(store.lock().entries.len(), 1);
        // Too big for the store at all: not stored.
        let big = ResponseStore::new(100, 10, TTL);
        big.insert_at("a".into(), stored("a"), t);
        assert!(big.get_at("a", t).is_none());
    }
}
