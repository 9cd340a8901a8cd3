//! Credentials proven recently, so a DAV client that sends Basic
//! credentials with each of thousands of requests costs one Argon2 check
//! per few minutes rather than one per request.
//!
//! Entries are keyed by a keyed SHA-256 of login and password (the key is
//! random per process), never the password itself, and expire after
//! [`TTL`]; a password change or ban therefore takes effect within that
//! time for a client that already proved its credentials.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bulwark_store::Principal;
use sha2::{Digest, Sha256};

/// How long a proven credential is trusted without asking the directory.
pub const TTL: Duration = Duration::from_secs(120);
/// Most entries; the cache starts over when full.
const MAX_ENTRIES: usize = 10_000;

pub struct AuthCache {
    key: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl AuthCache {
    pub fn new() -> AuthCache {
        let mut key = [0u8; 32];
        // Without randomness the cache keys are still unguessable hashes of
        // secrets, only not keyed; the cache stays usable.
        if let Err(e) = getrandom::getrandom(&mut key) {
            tracing::warn!(error = %e, "no randomness for the credential cache key");
        }
        AuthCache {
            key,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn digest(&self, login: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update((login.len() as u64).to_be_bytes());
        h.update(login.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// The principal these credentials proved within [`TTL`].
    pub fn get(&self, login: &str, password: &str) -> Option<Principal> {
        let digest = self.digest(login, password);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&digest) {
            Some((principal, at)) if at.elapsed() < TTL => Some(principal.clone()),
            Some(_) => {
                entries.remove(&digest);
                None
            }
            None => None,
        }
    }

    /// Remembers credentials the directory just accepted.
    pub fn insert(&self, login: &str, password: &str, principal: Principal) {
        let digest = self.digest(login, password);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(digest, (principal, Instant::now()));
    }
}
