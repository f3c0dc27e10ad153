//! A short-lived cache of API key lookups, so a busy API does not query the store for every
//! request. Only the lookup is cached: the presented key is still hashed and compared in
//! constant time on every request. Entries expire after `TTL`, which bounds how long a revoked
//! key keeps working; unknown prefixes are cached too (briefly) so a flood of bad keys does
//! not reach the store.

use crate::services::Caller;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const TTL: Duration = Duration::from_secs(10);
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone)]
pub struct CachedKey {
    pub secret_hash: Vec<u8>,
    pub revoked: bool,
    /// A rotated (or login) key stops working then.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub caller: Caller,
}

#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (Instant, Option<CachedKey>)>>,
}

impl KeyCache {
    /// `Some(Some(key))` known, `Some(None)` known not to exist, `None` ask the store.
    pub fn lookup(&self, prefix: &str) -> Option<Option<CachedKey>> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(prefix)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, k)| k.clone())
    }

    /// A cached key, if present and fresh (unknown prefixes count as absent here).
    pub fn get(&self, prefix: &str) -> Option<CachedKey> {
        self.lookup(prefix).flatten()
    }

    pub fn put(&self, prefix: &str, key: Option<CachedKey>) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (at, _)| at.elapsed() < TTL);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(prefix.to_string(), (Instant::now(), key));
    }

    /// Forgets everything (after a key is revoked).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloud_api::ProjectId;
    use cloud_api::ids::ApiKeyId;

    #[test]
    fn caches_hits_and_misses_and_bounds_its_size() {
        let c = KeyCache::default();
        assert!(c.lookup("abc").is_none());
        c.put("abc", None);
        assert!(matches!(c.lookup("abc"), Some(None)));
        let key = CachedKey {
            secret_hash: vec![1],
            revoked: false,
            expires_at: None,
            caller: Caller {
                key_id: ApiKeyId::new(),
                user: None,
                project: ProjectId::new(),
                permissions: std::sync::Arc::new(crate::authz::PermissionSet::all()),
            },
        };
        c.put("def", Some(key));
        assert!(c.get("def").is_some());
        for i in 0..(MAX_ENTRIES + 5) {
            c.put(&format!("k{i}"), None);
        }
        assert!(c.entries.lock().unwrap().len() <= MAX_ENTRIES);
        c.clear();
        assert!(c.lookup("def").is_none());
    }
}
