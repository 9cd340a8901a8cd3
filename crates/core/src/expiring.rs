//! A small shared map whose entries lapse, for the caches in front of
//! lookups (recipient resolutions, DNS records).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// Entries valid until their own deadline, usable from many threads, and
/// bounded: when full, lapsed entries go, and if none had lapsed, all of
/// them (a flood of distinct keys then costs only misses, never memory).
pub struct ExpiringMap<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    max_entries: usize,
}

impl<K: Hash + Eq, V: Clone> ExpiringMap<K, V> {
    /// An empty map holding at most `max_entries`.
    pub fn new(max_entries: usize) -> ExpiringMap<K, V> {
        ExpiringMap {
            entries: Mutex::new(HashMap::new()),
            max_entries,
        }
    }

    /// The value under `key`, unless it has lapsed.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (value, valid_until) = entries.get(key)?;
        (Instant::now() < *valid_until).then(|| value.clone())
    }

    /// Takes the value under `key` out, lapsed or not.
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(key).map(|(value, _)| value)
    }

    /// Keeps `value` under `key` until `valid_until`.
    pub fn insert(&self, key: K, value: V, valid_until: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max_entries && !entries.contains_key(&key) {
            let now = Instant::now();
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= self.max_entries {
                entries.clear();
            }
        }
        entries.insert(key, (value, valid_until));
    }

    /// Entries held, lapsed ones included.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
