//! Mailbox listings shared by every session that has the mailbox selected.
//!
//! A [`Listing`] is an immutable, versioned list of a mailbox's messages in
//! UID order, cut into chunks held by `Arc`. A new version copies only the
//! chunks a change touches and shares the rest, so a thousand sessions on
//! a 100,000-message mailbox hold one listing between them (plus, briefly,
//! the chunks one of them changed on its own), and two versions are
//! compared in time proportional to what changed: chunks that are the same
//! allocation in both are skipped whole.
//!
//! [`Listings`] keeps the newest version of each mailbox in use, brought up
//! to date from the store's change log on demand, so SELECT and the
//! refresh after another session's change never re-read the whole mailbox.
//! It holds no rights: callers check them before they ask.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bulwark_core::{BlobId, EmailId, MailboxId, ModSeq, PrincipalId};
use bulwark_store::{Error as StoreError, MessageEntry, Store};

use crate::flags;

/// Messages per chunk: small enough that a copied chunk is cheap, large
/// enough that the chunk table stays short (about 200 entries at 100,000).
const CHUNK: usize = 512;

/// Keywords of a message, sorted; messages with the same set share it.
pub(crate) type Keywords = Arc<[String]>;

/// Non-system keywords reported in SELECT's FLAGS, at most.
const MAX_LISTED_KEYWORDS: usize = 100;

/// Idle listings (no session holds them) kept for a quick SELECT later:
/// at most this many mailboxes...
const MAX_IDLE_LISTINGS: usize = 32;

/// ...holding at most this many messages together (about 100 bytes each).
const MAX_IDLE_MESSAGES: usize = 500_000;

/// Distinct keyword sets shared per mailbox before sharing stops growing.
const MAX_INTERNED_SETS: usize = 4096;

/// One message as sessions see it: the store's entry with shared keywords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// UID in the mailbox.
    pub uid: u32,
    /// The email.
    pub email: EmailId,
    /// Modification sequence of the last change to this entry.
    pub modseq: ModSeq,
    /// Keywords, sorted.
    pub keywords: Keywords,
    /// Size in bytes.
    pub size: u64,
    /// Arrival time, Unix milliseconds.
    pub received_at: i64,
    /// Content address of the raw message.
    pub blob: BlobId,
}

impl Entry {
    /// Whether the message carries `keyword`.
    pub(crate) fn has(&self, keyword: &str) -> bool {
        self.keywords.iter().any(|k| k == keyword)
    }
}

/// Gives equal keyword sets one allocation.
#[derive(Default)]
struct Interner {
    sets: HashSet<Keywords>,
}

impl Interner {
    fn keywords(&mut self, keywords: Vec<String>) -> Keywords {
        if let Some(shared) = self.sets.get(keywords.as_slice()) {
            return shared.clone();
        }
        let shared: Keywords = keywords.into();
        if self.sets.len() < MAX_INTERNED_SETS {
            self.sets.insert(shared.clone());
        }
        shared
    }

    fn entry(&mut self, m: MessageEntry) -> Entry {
        Entry {
            uid: m.uid,
            email: m.email,
            modseq: m.modseq,
            keywords: self.keywords(m.keywords),
            size: m.size,
            received_at: m.received_at,
            blob: m.blob,
        }
    }
}

/// Up to a few [`CHUNK`]s of consecutive messages, with what SELECT needs
/// to know about them worked out once.
#[derive(Debug)]
struct Chunk {
    entries: Vec<Entry>,
    /// Index of the first message without `\Seen`.
    first_unseen: Option<usize>,
    /// Non-system keywords in use, sorted, capped.
    keywords: Vec<String>,
}

impl Chunk {
    fn new(entries: Vec<Entry>) -> Chunk {
        let first_unseen = entries.iter().position(|e| !e.has(flags::SEEN));
        let mut keywords = BTreeSet::new();
        let mut last: Option<&Keywords> = None;
        for e in &entries {
            // Neighbours usually share their set; look at each set once.
            if last.is_some_and(|l| Arc::ptr_eq(l, &e.keywords)) {
                continue;
            }
            last = Some(&e.keywords);
            for k in e.keywords.iter() {
                if !flags::is_system(k) && keywords.len() < MAX_LISTED_KEYWORDS {
                    keywords.insert(k.clone());
                }
            }
        }
        Chunk {
            entries,
            first_unseen,
            keywords: keywords.into_iter().collect(),
        }
    }

    fn last_uid(&self) -> u32 {
        self.entries.last().map_or(0, |e| e.uid)
    }
}

/// What tells two listings apart, from the older one's point of view.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    /// Messages only in the older listing: (index there, UID), ascending.
    pub removed: Vec<(usize, u32)>,
    /// UIDs in both whose keywords differ, ascending.
    pub flagged: Vec<u32>,
    /// Messages only in the newer listing.
    pub added: usize,
}

/// An immutable version of a mailbox's messages in UID order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Listing {
    /// Never empty chunks, in UID order.
    chunks: Vec<Arc<Chunk>>,
    /// Index of each chunk's first message.
    starts: Vec<usize>,
    len: usize,
}

impl Listing {
    /// A listing of `entries` (in UID order).
    pub(crate) fn new(entries: Vec<Entry>) -> Listing {
        let mut chunks = Vec::with_capacity(entries.len().div_ceil(CHUNK));
        let mut rest = entries.into_iter().peekable();
        while rest.peek().is_some() {
            chunks.push(Arc::new(Chunk::new(rest.by_ref().take(CHUNK).collect())));
        }
        Listing::from_chunks(chunks)
    }

    fn from_chunks(chunks: Vec<Arc<Chunk>>) -> Listing {
        let mut starts = Vec::with_capacity(chunks.len());
        let mut len = 0;
        for c in &chunks {
            starts.push(len);
            len += c.entries.len();
        }
        Listing {
            chunks,
            starts,
            len,
        }
    }

    /// Number of messages.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The message at index `i`.
    pub(crate) fn get(&self, i: usize) -> Option<&Entry> {
        if i >= self.len {
            return None;
        }
        let k = self.starts.partition_point(|&s| s <= i) - 1;
        self.chunks[k].entries.get(i - self.starts[k])
    }

    /// Every message in UID order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.chunks.iter().flat_map(|c| c.entries.iter())
    }

    /// The highest UID, 0 when empty.
    pub(crate) fn last_uid(&self) -> u32 {
        self.chunks.last().map_or(0, |c| c.last_uid())
    }

    /// Index of `uid`, or where it would go.
    pub(crate) fn position(&self, uid: u32) -> Result<usize, usize> {
        let k = self.chunks.partition_point(|c| c.last_uid() < uid);
        let Some(chunk) = self.chunks.get(k) else {
            return Err(self.len);
        };
        chunk
            .entries
            .binary_search_by_key(&uid, |e| e.uid)
            .map(|j| self.starts[k] + j)
            .map_err(|j| self.starts[k] + j)
    }

    /// Index of the first message without `\Seen`.
    pub(crate) fn first_unseen(&self) -> Option<usize> {
        self.chunks
            .iter()
            .zip(&self.starts)
            .find_map(|(c, start)| c.first_unseen.map(|j| start + j))
    }

    /// Non-system keywords in use (at most [`MAX_LISTED_KEYWORDS`]).
    pub(crate) fn keywords(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        for c in &self.chunks {
            for k in &c.keywords {
                if out.len() >= MAX_LISTED_KEYWORDS {
                    return out;
                }
                out.insert(k.as_str());
            }
        }
        out
    }

    /// A new version with `upserts` put in place (replacing entries with
    /// the same UID, inserting the others in order) and `removed` UIDs
    /// taken out; of two upserts for one UID the later wins. Chunks
    /// neither touches are shared with `self`.
    pub(crate) fn with_changes(&self, mut upserts: Vec<Entry>, removed: &[u32]) -> Listing {
        upserts.sort_by_key(|e| e.uid);
        upserts.reverse();
        upserts.dedup_by_key(|e| e.uid);
        upserts.reverse();
        let mut removed = removed.to_vec();
        removed.sort_unstable();
        let mut upserts = upserts.into_iter().peekable();
        let mut removed = removed.into_iter().peekable();
        let mut chunks: Vec<Arc<Chunk>> = Vec::with_capacity(self.chunks.len() + 1);
        let count = self.chunks.len();
        for (k, chunk) in self.chunks.iter().enumerate() {
            let last = k + 1 == count;
            // Everything below the next chunk's first UID lands here; the
            // last chunk takes the rest.
            let bound = self
                .chunks
                .get(k + 1)
                .map_or(u64::MAX, |n| u64::from(n.entries[0].uid));
            let mut mine: Vec<Entry> = Vec::new();
            while let Some(e) = upserts.next_if(|e| u64::from(e.uid) < bound) {
                mine.push(e);
            }
            let mut gone: Vec<u32> = Vec::new();
            while let Some(u) = removed.next_if(|&u| u64::from(u) < bound) {
                gone.push(u);
            }
            if mine.is_empty() && gone.is_empty() {
                chunks.push(chunk.clone());
                continue;
            }
            // Messages past the end of a full last chunk start new chunks,
            // so appending never copies a full chunk.
            let tail_from = if last && chunk.entries.len() >= CHUNK {
                mine.partition_point(|e| e.uid <= chunk.last_uid())
            } else {
                mine.len()
            };
            let tail = mine.split_off(tail_from);
            let merged = merge(&chunk.entries, mine, &gone);
            push_split(&mut chunks, merged);
            push_split(&mut chunks, tail);
        }
        // An empty listing takes everything as new chunks.
        push_split(&mut chunks, upserts.collect());
        Listing::from_chunks(chunks)
    }

    /// What changed from `old` to `new`.
    pub(crate) fn diff(old: &Listing, new: &Listing) -> Diff {
        let mut out = Diff::default();
        let (mut a, mut b) = (Cursor::default(), Cursor::default());
        loop {
            if a.offset == 0
                && b.offset == 0
                && let (Some(x), Some(y)) = (old.chunks.get(a.chunk), new.chunks.get(b.chunk))
                && Arc::ptr_eq(x, y)
            {
                a.index += x.entries.len();
                a.chunk += 1;
                b.chunk += 1;
                continue;
            }
            match (a.entry(old), b.entry(new)) {
                (None, None) => break,
                (Some(x), None) => {
                    out.removed.push((a.index, x.uid));
                    a.advance(old);
                }
                (None, Some(_)) => {
                    out.added += 1;
                    b.advance(new);
                }
                (Some(x), Some(y)) => match x.uid.cmp(&y.uid) {
                    std::cmp::Ordering::Less => {
                        out.removed.push((a.index, x.uid));
                        a.advance(old);
                    }
                    std::cmp::Ordering::Greater => {
                        // UIDs only grow, so a message below the older
                        // listing's last UID cannot be new; counted all
                        // the same rather than lost.
                        out.added += 1;
                        b.advance(new);
                    }
                    std::cmp::Ordering::Equal => {
                        if !Arc::ptr_eq(&x.keywords, &y.keywords) && x.keywords != y.keywords {
                            out.flagged.push(x.uid);
                        }
                        a.advance(old);
                        b.advance(new);
                    }
                },
            }
        }
        out
    }
}

/// A position while walking a listing.
#[derive(Default)]
struct Cursor {
    chunk: usize,
    offset: usize,
    index: usize,
}

impl Cursor {
    fn entry<'a>(&self, listing: &'a Listing) -> Option<&'a Entry> {
        listing
            .chunks
            .get(self.chunk)
            .and_then(|c| c.entries.get(self.offset))
    }

    fn advance(&mut self, listing: &Listing) {
        self.index += 1;
        self.offset += 1;
        if self.offset >= listing.chunks[self.chunk].entries.len() {
            self.chunk += 1;
            self.offset = 0;
        }
    }
}

/// `entries` with `upserts` (sorted) put in place and `gone` left out.
fn merge(entries: &[Entry], upserts: Vec<Entry>, gone: &[u32]) -> Vec<Entry> {
    let mut out = Vec::with_capacity(entries.len() + upserts.len());
    let mut upserts = upserts.into_iter().peekable();
    for e in entries {
        while let Some(u) = upserts.next_if(|u| u.uid < e.uid) {
            if gone.binary_search(&u.uid).is_err() {
                out.push(u);
            }
        }
        let replacement = upserts.next_if(|u| u.uid == e.uid);
        if gone.binary_search(&e.uid).is_ok() {
            continue;
        }
        out.push(replacement.unwrap_or_else(|| e.clone()));
    }
    out.extend(upserts.filter(|u| gone.binary_search(&u.uid).is_err()));
    out
}

/// Appends `entries` as chunks of at most [`CHUNK`] (nothing when empty).
fn push_split(chunks: &mut Vec<Arc<Chunk>>, entries: Vec<Entry>) {
    if entries.len() <= 2 * CHUNK {
        if !entries.is_empty() {
            chunks.push(Arc::new(Chunk::new(entries)));
        }
        return;
    }
    let mut rest = entries.into_iter().peekable();
    while rest.peek().is_some() {
        chunks.push(Arc::new(Chunk::new(rest.by_ref().take(CHUNK).collect())));
    }
}

/// The newest known version of one mailbox.
#[derive(Default)]
struct Slot {
    /// The listing and the mailbox's highest modification sequence it
    /// reflects; `None` until first loaded.
    current: Option<(Arc<Listing>, ModSeq)>,
    interner: Interner,
    used: Option<Instant>,
}

/// A mailbox's slot, locked while it is brought up to date so one session
/// reads a change from the store and the others reuse the result.
type SharedSlot = Arc<tokio::sync::Mutex<Slot>>;

/// The newest listing of every mailbox in use, shared by all sessions.
#[derive(Default)]
pub(crate) struct Listings {
    slots: Mutex<HashMap<(PrincipalId, MailboxId), SharedSlot>>,
}

impl Listings {
    /// The mailbox's listing as it is now: loaded once, then brought up to
    /// date with only what changed since the last call.
    pub(crate) async fn latest(
        &self,
        store: &Store,
        account: PrincipalId,
        mailbox: MailboxId,
    ) -> Result<Arc<Listing>, StoreError> {
        self.at_least(store, account, mailbox, None).await
    }

    /// The mailbox's listing, at least as new as the mailbox row the
    /// caller just read (`highest`, its highest modification sequence):
    /// every change to a mailbox's messages raises that number, so when
    /// the listing already reflects it the store is not asked at all.
    pub(crate) async fn at_least(
        &self,
        store: &Store,
        account: PrincipalId,
        mailbox: MailboxId,
        highest: Option<ModSeq>,
    ) -> Result<Arc<Listing>, StoreError> {
        let slot = self.slot(account, mailbox);
        let mut slot = slot.lock().await;
        slot.used = Some(Instant::now());
        if let (Some((listing, mark)), Some(highest)) = (&slot.current, highest)
            && *mark >= highest
        {
            return Ok(listing.clone());
        }
        let since = slot.current.as_ref().map(|(_, mark)| *mark);
        let read = store
            .run(move |b| {
                let (changed, mark) =
                    b.messages_changed_since(account, mailbox, since.unwrap_or(ModSeq(0)))?;
                let removed = match since {
                    Some(since) => crate::handler::destroyed_since(b, account, mailbox, since.0)?,
                    None => Vec::new(),
                };
                Ok((changed, removed, mark))
            })
            .await;
        let (changed, removed, mark) = match read {
            Ok(read) => read,
            Err(e) => {
                if matches!(e, StoreError::NotFound { .. }) {
                    drop(slot);
                    self.forget(account, mailbox);
                }
                return Err(e);
            }
        };
        let changed: Vec<Entry> = changed
            .into_iter()
            .map(|m| slot.interner.entry(m))
            .collect();
        let next = match slot.current.take() {
            Some((listing, _)) if changed.is_empty() && removed.is_empty() => listing,
            Some((listing, _)) => Arc::new(listing.with_changes(changed, &removed)),
            None => Arc::new(Listing::new(changed)),
        };
        slot.current = Some((next.clone(), mark));
        Ok(next)
    }

    fn slot(&self, account: PrincipalId, mailbox: MailboxId) -> SharedSlot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get(&(account, mailbox)) {
            return slot.clone();
        }
        evict_idle(&mut slots);
        slots.entry((account, mailbox)).or_default().clone()
    }

    fn forget(&self, account: PrincipalId, mailbox: MailboxId) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.remove(&(account, mailbox));
    }
}

/// Before a new mailbox gets a slot: drops the least recently used
/// listings no session holds until the idle ones fit both allowances.
fn evict_idle(slots: &mut HashMap<(PrincipalId, MailboxId), SharedSlot>) {
    let mut idle: Vec<((PrincipalId, MailboxId), Option<Instant>, usize)> = slots
        .iter()
        .filter_map(|(key, slot)| {
            let slot = slot.try_lock().ok()?;
            match &slot.current {
                Some((listing, _)) if Arc::strong_count(listing) > 1 => None,
                current => Some((
                    *key,
                    slot.used,
                    current.as_ref().map_or(0, |(l, _)| l.len()),
                )),
            }
        })
        .collect();
    // Most recently used first: those are kept while they fit.
    idle.sort_by_key(|(_, used, _)| std::cmp::Reverse(*used));
    let mut kept_messages = 0;
    for (n, (key, _, messages)) in idle.into_iter().enumerate() {
        kept_messages += messages;
        if n >= MAX_IDLE_LISTINGS - 1 || kept_messages > MAX_IDLE_MESSAGES {
            slots.remove(&key);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small deterministic generator for the randomised tests:
    /// `next(n)` is in `0..n`.
    pub(crate) fn numbers(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    pub(crate) fn entry(uid: u32, keywords: &[&str]) -> Entry {
        Entry {
            uid,
            email: EmailId(i64::from(uid)),
            modseq: ModSeq(1),
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
            size: 10,
            received_at: 0,
            blob: BlobId([0; 32]),
        }
    }

    fn uids(l: &Listing) -> Vec<u32> {
        l.iter().map(|e| e.uid).collect()
    }

    fn check(l: &Listing) {
        assert!(l.chunks.iter().all(|c| !c.entries.is_empty()));
        let u = uids(l);
        assert!(u.windows(2).all(|w| w[0] < w[1]), "UID order");
        assert_eq!(u.len(), l.len());
        for (i, uid) in u.iter().enumerate() {
            assert_eq!(l.get(i).map(|e| e.uid), Some(*uid));
            assert_eq!(l.position(*uid), Ok(i));
        }
        assert_eq!(l.get(u.len()), None);
    }

    #[test]
    fn lookups_across_chunks() {
        let l = Listing::new((1..=3000).map(|u| entry(u * 2, &[])).collect());
        check(&l);
        assert_eq!(l.len(), 3000);
        assert_eq!(l.last_uid(), 6000);
        assert_eq!(l.position(3), Err(1));
        assert_eq!(l.position(7000), Err(3000));
        assert_eq!(l.position(1), Err(0));
        assert_eq!(Listing::default().position(5), Err(0));
        assert_eq!(Listing::default().get(0), None);
    }

    #[test]
    fn changes_share_untouched_chunks() {
        let old = Listing::new((1..=5000).map(|u| entry(u, &["$seen"])).collect());
        let new = old.with_changes(vec![entry(700, &["$flagged"]), entry(5001, &[])], &[4000]);
        check(&new);
        let shared = old
            .chunks
            .iter()
            .filter(|c| new.chunks.iter().any(|n| Arc::ptr_eq(c, n)))
            .count();
        assert_eq!(
            shared,
            old.chunks.len() - 3,
            "only the touched chunks are copied"
        );
        let diff = Listing::diff(&old, &new);
        assert_eq!(
            diff,
            Diff {
                removed: vec![(3999, 4000)],
                flagged: vec![700],
                added: 1,
            }
        );
        assert_eq!(Listing::diff(&new, &new), Diff::default());
    }

    #[test]
    fn appending_keeps_chunks_bounded() {
        let mut l = Listing::default();
        for u in 1..=2000 {
            l = l.with_changes(vec![entry(u, &[])], &[]);
        }
        check(&l);
        assert!(l.chunks.iter().all(|c| c.entries.len() <= 2 * CHUNK));
        let big = l.with_changes((2001..=9000).map(|u| entry(u, &[])).collect(), &[]);
        check(&big);
        assert!(big.chunks.iter().all(|c| c.entries.len() <= 2 * CHUNK));
        let emptied = big.with_changes(Vec::new(), &(1..=9000).collect::<Vec<_>>());
        assert_eq!(emptied.len(), 0);
        assert!(emptied.chunks.is_empty());
    }

    #[test]
    fn select_summaries() {
        let mut entries: Vec<Entry> = (1..=1500).map(|u| entry(u, &["$seen"])).collect();
        entries[1200] = entry(1201, &["project-x"]);
        let l = Listing::new(entries);
        assert_eq!(l.first_unseen(), Some(1200));
        assert_eq!(
            l.keywords().into_iter().collect::<Vec<_>>(),
            vec!["project-x"]
        );
        let seen = l.with_changes(vec![entry(1201, &["$seen"])], &[]);
        assert_eq!(seen.first_unseen(), None);
        assert!(seen.keywords().is_empty());
    }

    /// Idle listings are dropped beyond the allowances, least recently
    /// used first; listings a session holds never are.
    #[test]
    fn idle_listings_are_bounded() {
        let mut slots: HashMap<(PrincipalId, MailboxId), SharedSlot> = HashMap::new();
        let big = Arc::new(Listing::new((1..=200_000).map(|u| entry(u, &[])).collect()));
        let held = big.clone();
        let start = Instant::now();
        for n in 0..10i64 {
            let slot = Slot {
                current: Some((
                    if n == 0 {
                        big.clone()
                    } else {
                        Arc::new(Listing::new((1..=200_000).map(|u| entry(u, &[])).collect()))
                    },
                    ModSeq(1),
                )),
                interner: Interner::default(),
                used: Some(start + std::time::Duration::from_millis(n as u64)),
            };
            slots.insert(
                (PrincipalId(1), MailboxId(n)),
                Arc::new(tokio::sync::Mutex::new(slot)),
            );
            evict_idle(&mut slots);
        }
        drop(big);
        // The held one survives; of the idle ones only the newest fit.
        assert!(slots.contains_key(&(PrincipalId(1), MailboxId(0))));
        assert!(slots.contains_key(&(PrincipalId(1), MailboxId(9))));
        assert!(slots.len() <= 4, "{} kept", slots.len());
        assert_eq!(held.len(), 200_000);
    }

    #[test]
    fn interned_keyword_sets_are_shared() {
        let mut interner = Interner::default();
        let a = interner.keywords(vec!["$seen".into()]);
        let b = interner.keywords(vec!["$seen".into()]);
        assert!(Arc::ptr_eq(&a, &b));
    }

    /// Random edits: every version agrees with a plain vector model, and
    /// the diff of any two versions matches one computed naively.
    #[test]
    fn random_edits_match_a_plain_model() {
        let mut next = numbers(0x9e37_79b9_7f4a_7c15);
        for _ in 0..30 {
            let mut model: Vec<Entry> = (1..=(next(3000) as u32)).map(|u| entry(u, &[])).collect();
            let mut listing = Listing::new(model.clone());
            let mut next_uid = model.len() as u32 + 1;
            for round in 0..40 {
                let mut upserts = Vec::new();
                let mut removed = Vec::new();
                for _ in 0..next(20) {
                    match next(3) {
                        0 => {
                            upserts.push(entry(next_uid, &[]));
                            next_uid += 1;
                        }
                        1 if !model.is_empty() => {
                            let i = next(model.len() as u64) as usize;
                            let kw = format!("k{round}");
                            upserts.push(entry(model[i].uid, &[kw.as_str()]));
                        }
                        _ if !model.is_empty() => {
                            removed.push(model[next(model.len() as u64) as usize].uid);
                        }
                        _ => {}
                    }
                }
                let old_model = model.clone();
                for u in &upserts {
                    match model.binary_search_by_key(&u.uid, |e| e.uid) {
                        Ok(i) => model[i] = u.clone(),
                        Err(i) => model.insert(i, u.clone()),
                    }
                }
                model.retain(|e| !removed.contains(&e.uid));
                let new = listing.with_changes(upserts, &removed);
                check(&new);
                assert_eq!(new.iter().cloned().collect::<Vec<_>>(), model);
                let diff = Listing::diff(&listing, &new);
                let find = |list: &[Entry], uid: u32| {
                    list.binary_search_by_key(&uid, |e| e.uid)
                        .ok()
                        .map(|i| list[i].clone())
                };
                let expected_removed: Vec<(usize, u32)> = old_model
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| find(&model, e.uid).is_none())
                    .map(|(i, e)| (i, e.uid))
                    .collect();
                let expected_flagged: Vec<u32> = old_model
                    .iter()
                    .filter(|e| find(&model, e.uid).is_some_and(|m| m.keywords != e.keywords))
                    .map(|e| e.uid)
                    .collect();
                let expected_added = model
                    .iter()
                    .filter(|m| find(&old_model, m.uid).is_none())
                    .count();
                assert_eq!(diff.removed, expected_removed);
                assert_eq!(diff.flagged, expected_flagged);
                assert_eq!(diff.added, expected_added);
                listing = new;
            }
        }
    }
}
