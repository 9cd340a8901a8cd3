//! ENVELOPEs already rendered, shared by all sessions, so a client that
//! lists a mailbox again (or several clients listing one) does not make
//! the server read and parse every message again. Keyed by the message's
//! content address: an ENVELOPE depends on the bytes alone, so an entry
//! never goes stale and is the same whoever fetches it (a session only
//! asks for messages it may read). Bounded by bytes; when full, an
//! arbitrary half is dropped, which costs a re-parse and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bulwark_core::BlobId;

/// Bytes of rendered ENVELOPEs kept: about 200,000 typical messages.
const BUDGET_BYTES: usize = 64 << 20;

/// Bookkeeping per entry besides the rendering itself.
const ENTRY_OVERHEAD: usize = 64;

/// The shared ENVELOPE cache.
pub(crate) struct Envelopes {
    inner: Mutex<Inner>,
    budget: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<BlobId, Arc<[u8]>>,
    bytes: usize,
}

impl Default for Envelopes {
    fn default() -> Envelopes {
        Envelopes::with_budget(BUDGET_BYTES)
    }
}

impl Envelopes {
    fn with_budget(budget: usize) -> Envelopes {
        Envelopes {
            inner: Mutex::default(),
            budget,
        }
    }

    /// The ENVELOPE of the message with this content, when known.
    pub(crate) fn get(&self, blob: &BlobId) -> Option<Arc<[u8]>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.map.get(blob).cloned()
    }

    /// Keeps an ENVELOPE.
    pub(crate) fn insert(&self, blob: BlobId, envelope: Arc<[u8]>) {
        let cost = envelope.len() + ENTRY_OVERHEAD;
        if cost > self.budget / 4 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.bytes + cost > self.budget {
            let mut freed = 0;
            let target = inner.bytes / 2;
            inner.map.retain(|_, e| {
                if freed >= target {
                    return true;
                }
                freed += e.len() + ENTRY_OVERHEAD;
                false
            });
            inner.bytes -= freed;
        }
        if let Some(old) = inner.map.insert(blob, envelope) {
            inner.bytes -= old.len() + ENTRY_OVERHEAD;
        }
        inner.bytes += cost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_budget() {
        let cache = Envelopes::with_budget(10_000);
        for i in 0..1000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            cache.insert(BlobId(id), vec![b'x'; 100].into());
            let inner = cache.inner.lock().expect("lock");
            assert!(inner.bytes <= 10_000);
            let counted: usize = inner.map.values().map(|e| e.len() + ENTRY_OVERHEAD).sum();
            assert_eq!(counted, inner.bytes);
        }
        let mut last = [0u8; 32];
        last[..4].copy_from_slice(&999u32.to_be_bytes());
        assert_eq!(cache.get(&BlobId(last)).as_deref(), Some(&[b'x'; 100][..]));
    }
}
