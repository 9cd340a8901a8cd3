//! The selected mailbox as one session knows it: message sequence numbers,
//! UIDs and flags, and what must be told to the client to bring its view up
//! to date. Sans-I/O: fed with fresh listings from the store, it returns
//! the untagged responses to send.
//!
//! Rules (RFC 9051 sections 7.4.1, 7.5.1; RFC 3501 section 7.4.1):
//! * An expunge by anyone must not be announced while a FETCH, STORE or
//!   SEARCH (the MSN forms) is answered, nor when no command is in
//!   progress (except during IDLE). Until it is announced the message keeps
//!   its sequence number: it is a "ghost" that still counts in EXISTS.
//! * EXISTS may be sent at any time; new messages are appended in UID order.
//! * Flag changes by others are announced as `FETCH (FLAGS ...)`.

use std::sync::Arc;

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use crate::flags;
use crate::listing::{Entry, Keywords, Listing};

/// An untagged response the view wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unsolicited {
    /// `* n EXPUNGE`, or `* VANISHED uid` under QRESYNC.
    Expunge {
        /// Sequence number.
        msn: u32,
        /// UID.
        uid: u32,
    },
    /// `* n FETCH (FLAGS (...) [UID u] [MODSEQ (m)])`
    Flags {
        /// Sequence number.
        msn: u32,
        /// UID.
        uid: u32,
        /// The new keywords.
        keywords: Keywords,
        /// The entry's modification sequence.
        modseq: u64,
    },
    /// `* n EXISTS`
    Exists(u32),
}

/// Which extensions shape the responses (RFC 7162).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ext {
    /// FETCH responses carry MODSEQ (RFC 7162 section 3.1.4.1).
    pub condstore: bool,
    /// Expunges are announced as VANISHED (RFC 7162 section 3.2.10).
    pub qresync: bool,
}

impl Unsolicited {
    /// The response line, `include_uid` for UID commands (RFC 9051
    /// section 6.4.9: FETCH responses to UID commands carry the UID).
    pub(crate) fn render(&self, include_uid: bool, ext: Ext) -> String {
        match self {
            Unsolicited::Expunge { uid, .. } if ext.qresync => format!("* VANISHED {uid}\r\n"),
            Unsolicited::Expunge { msn, .. } => format!("* {msn} EXPUNGE\r\n"),
            Unsolicited::Exists(n) => format!("* {n} EXISTS\r\n"),
            Unsolicited::Flags {
                msn,
                uid,
                keywords,
                modseq,
            } => {
                let mut line = format!("* {msn} FETCH (");
                // RFC 7162 section 3.2.4: under QRESYNC unsolicited FETCH
                // responses carry the UID.
                if include_uid || ext.qresync {
                    line.push_str(&format!("UID {uid} "));
                }
                line.push_str(&format!("FLAGS {}", flags::flag_list(keywords)));
                if ext.condstore {
                    line.push_str(&format!(" MODSEQ ({modseq})"));
                }
                line.push_str(")\r\n");
                line
            }
        }
    }
}

/// Why a sequence set could not be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResolveError {
    /// A message sequence number beyond EXISTS (or `*` in an empty mailbox).
    NoSuchMessage,
    /// More elements than the limit.
    TooMany,
}

/// One message in the view.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ViewMessage<'a> {
    /// The message as the client last learnt of it.
    pub entry: &'a Entry,
    /// Gone from the store, not yet announced with EXPUNGE.
    pub gone: bool,
}

/// The session's view of its selected mailbox: a shared [`Listing`] (the
/// mailbox as this client knows it, so sequence numbers are positions in
/// it) and the UIDs in it that are gone but not yet announced. Nothing
/// per message is kept per session beyond those ghosts and, until the
/// next refresh, the chunks holding flags the session stored itself.
#[derive(Debug)]
pub(crate) struct View {
    known: Arc<Listing>,
    /// Sorted.
    ghosts: Vec<u32>,
}

impl View {
    /// A view of a freshly selected mailbox.
    pub(crate) fn new(listing: Arc<Listing>) -> View {
        View {
            known: listing,
            ghosts: Vec::new(),
        }
    }

    /// EXISTS as the client knows it (ghosts included).
    pub(crate) fn exists(&self) -> u32 {
        u32::try_from(self.known.len()).unwrap_or(u32::MAX)
    }

    /// The highest UID the client knows, 0 when empty.
    pub(crate) fn last_uid(&self) -> u32 {
        self.known.last_uid()
    }

    /// Whether expunges wait to be announced.
    pub(crate) fn has_ghosts(&self) -> bool {
        !self.ghosts.is_empty()
    }

    fn message<'a>(&self, entry: &'a Entry) -> ViewMessage<'a> {
        ViewMessage {
            entry,
            gone: !self.ghosts.is_empty() && self.ghosts.binary_search(&entry.uid).is_ok(),
        }
    }

    /// The message at index `i` (sequence number `i + 1`).
    pub(crate) fn get(&self, i: usize) -> Option<ViewMessage<'_>> {
        self.known.get(i).map(|e| self.message(e))
    }

    /// Every message, in sequence order.
    pub(crate) fn messages(&self) -> impl Iterator<Item = ViewMessage<'_>> + '_ {
        self.known.iter().map(|e| self.message(e))
    }

    /// Index of `uid` in the view.
    pub(crate) fn position(&self, uid: u32) -> Option<usize> {
        self.known.position(uid).ok()
    }

    /// Sets the keywords the session itself just stored, so they are not
    /// announced again as someone else's change: (UID, keywords, new
    /// modification sequence).
    pub(crate) fn set_keywords(&mut self, stored: Vec<(u32, Keywords, Option<u64>)>) {
        let updated: Vec<Entry> = stored
            .into_iter()
            .filter_map(|(uid, keywords, modseq)| {
                let i = self.known.position(uid).ok()?;
                let mut entry = self.known.get(i)?.clone();
                entry.keywords = keywords;
                if let Some(modseq) = modseq {
                    entry.modseq = bulwark_core::ModSeq(modseq);
                }
                Some(entry)
            })
            .collect();
        if !updated.is_empty() {
            self.known = Arc::new(self.known.with_changes(updated, &[]));
        }
    }

    /// Indices (sequence number - 1) selected by `set`, ascending, each
    /// once. MSN sets must name existing messages; UID sets ignore UIDs
    /// that do not exist (RFC 9051 section 6.4.9).
    pub(crate) fn resolve(
        &self,
        set: &SequenceSet,
        uid: bool,
        max_items: usize,
    ) -> Result<Vec<usize>, ResolveError> {
        let items = set.0.as_ref();
        if items.len() > max_items {
            return Err(ResolveError::TooMany);
        }
        let count = self.known.len();
        let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(items.len());
        for item in items {
            let (a, b) = match item {
                Sequence::Single(x) => (*x, *x),
                Sequence::Range(a, b) => (*a, *b),
            };
            if uid {
                if count == 0 {
                    continue;
                }
                let last = self.known.last_uid();
                let value = |x: SeqOrUid| match x {
                    SeqOrUid::Value(v) => v.get(),
                    SeqOrUid::Asterisk => last,
                };
                let (lo, hi) = order(value(a), value(b));
                let start = self.known.position(lo).unwrap_or_else(|i| i);
                let end = match self.known.position(hi) {
                    Ok(i) => i + 1,
                    Err(i) => i,
                };
                if start < end {
                    ranges.push((start, end));
                }
            } else {
                let value = |x: SeqOrUid| match x {
                    SeqOrUid::Value(v) => v.get() as usize,
                    SeqOrUid::Asterisk => count,
                };
                let (lo, hi) = order(value(a), value(b));
                if lo == 0 || hi > count {
                    return Err(ResolveError::NoSuchMessage);
                }
                ranges.push((lo - 1, hi));
            }
        }
        ranges.sort_unstable();
        let mut out = Vec::new();
        let mut next = 0;
        for (start, end) in ranges {
            out.extend(start.max(next)..end);
            next = next.max(end);
        }
        Ok(out)
    }

    /// Brings the view up to `latest` (the mailbox's newest listing).
    /// Expunges are announced only when `allow_expunge`; otherwise the
    /// messages stay as ghosts until a later call allows it.
    pub(crate) fn catch_up(
        &mut self,
        latest: Arc<Listing>,
        allow_expunge: bool,
    ) -> Vec<Unsolicited> {
        let diff = Listing::diff(&self.known, &latest);
        let mut out = Vec::new();
        if diff.removed.is_empty() || allow_expunge {
            // Highest first, so every number is right when it is sent.
            for &(i, uid) in diff.removed.iter().rev() {
                out.push(Unsolicited::Expunge {
                    msn: i as u32 + 1,
                    uid,
                });
            }
            self.known = latest;
            self.ghosts.clear();
        } else {
            let ghosts: Vec<Entry> = diff
                .removed
                .iter()
                .filter_map(|&(i, _)| self.known.get(i).cloned())
                .collect();
            self.ghosts = diff.removed.iter().map(|&(_, uid)| uid).collect();
            self.known = Arc::new(latest.with_changes(ghosts, &[]));
        }
        for uid in diff.flagged {
            if let Ok(i) = self.known.position(uid)
                && let Some(m) = self.known.get(i)
            {
                out.push(Unsolicited::Flags {
                    msn: i as u32 + 1,
                    uid,
                    keywords: m.keywords.clone(),
                    modseq: m.modseq.0,
                });
            }
        }
        if diff.added > 0 {
            out.push(Unsolicited::Exists(self.exists()));
        }
        out
    }
}

fn order<T: Ord>(a: T, b: T) -> (T, T) {
    if a <= b { (a, b) } else { (b, a) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::tests::entry;
    use bulwark_core::ModSeq;

    fn set(s: &str) -> SequenceSet {
        s.parse().expect("sequence set")
    }

    fn view(entries: Vec<Entry>) -> View {
        View::new(Arc::new(Listing::new(entries)))
    }

    fn latest(entries: Vec<Entry>) -> Arc<Listing> {
        Arc::new(Listing::new(entries))
    }

    fn kw(list: &[&str]) -> Keywords {
        list.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn resolve_msn_and_uid() {
        let view = view(vec![entry(3, &[]), entry(7, &[]), entry(9, &[])]);
        assert_eq!(view.resolve(&set("1:*"), false, 10), Ok(vec![0, 1, 2]));
        assert_eq!(view.resolve(&set("3,1"), false, 10), Ok(vec![0, 2]));
        assert_eq!(view.resolve(&set("1:2,2:3"), false, 10), Ok(vec![0, 1, 2]));
        assert_eq!(
            view.resolve(&set("4"), false, 10),
            Err(ResolveError::NoSuchMessage)
        );
        assert_eq!(view.resolve(&set("4:8"), true, 10), Ok(vec![1]));
        assert_eq!(view.resolve(&set("10:*"), true, 10), Ok(vec![2]));
        assert_eq!(view.resolve(&set("100"), true, 10), Ok(vec![]));
        assert_eq!(view.resolve(&set("5:6"), true, 10), Ok(vec![]));
        assert_eq!(view.resolve(&set("9,3,7:9"), true, 10), Ok(vec![0, 1, 2]));
        assert_eq!(
            view.resolve(&set("1,2,3"), true, 2),
            Err(ResolveError::TooMany)
        );
        let empty = View::new(Arc::default());
        assert_eq!(empty.resolve(&set("1:*"), true, 10), Ok(vec![]));
        assert_eq!(
            empty.resolve(&set("*"), false, 10),
            Err(ResolveError::NoSuchMessage)
        );
    }

    #[test]
    fn expunges_wait_for_an_allowed_moment() {
        let mut view = view(vec![entry(1, &[]), entry(2, &[]), entry(3, &[])]);
        // Another session expunged UID 2 and flagged UID 3.
        let fresh = latest(vec![entry(1, &[]), entry(3, &["$seen"])]);
        let during_fetch = view.catch_up(fresh.clone(), false);
        assert_eq!(
            during_fetch,
            vec![Unsolicited::Flags {
                msn: 3,
                uid: 3,
                keywords: kw(&["$seen"]),
                modseq: 1,
            }]
        );
        assert_eq!(view.exists(), 3, "the ghost keeps its number");
        assert!(view.get(1).is_some_and(|m| m.gone));
        let at_noop = view.catch_up(fresh, true);
        assert_eq!(at_noop, vec![Unsolicited::Expunge { msn: 2, uid: 2 }]);
        assert_eq!(view.exists(), 2);
        assert_eq!(view.get(1).map(|m| m.entry.uid), Some(3));
        assert!(!view.has_ghosts());
    }

    #[test]
    fn expunge_numbers_are_right_when_sent() {
        let mut view = view((1..=5).map(|u| entry(u, &[])).collect());
        let fresh = latest(vec![entry(1, &[]), entry(4, &["$flagged"]), entry(6, &[])]);
        let out = view.catch_up(fresh, true);
        assert_eq!(
            out,
            vec![
                Unsolicited::Expunge { msn: 5, uid: 5 },
                Unsolicited::Expunge { msn: 3, uid: 3 },
                Unsolicited::Expunge { msn: 2, uid: 2 },
                Unsolicited::Flags {
                    msn: 2,
                    uid: 4,
                    keywords: kw(&["$flagged"]),
                    modseq: 1,
                },
                Unsolicited::Exists(3),
            ]
        );
    }

    #[test]
    fn new_messages_while_ghosts_remain() {
        let mut view = view(vec![entry(1, &[]), entry(2, &[])]);
        let fresh = latest(vec![entry(2, &[]), entry(3, &[])]);
        let out = view.catch_up(fresh.clone(), false);
        assert_eq!(out, vec![Unsolicited::Exists(3)]);
        let out = view.catch_up(fresh, true);
        assert_eq!(out, vec![Unsolicited::Expunge { msn: 1, uid: 1 }]);
        assert_eq!(view.exists(), 2);
    }

    #[test]
    fn own_stores_are_not_announced_again() {
        let mut view = view(vec![entry(1, &[]), entry(2, &[])]);
        view.set_keywords(vec![(2, kw(&["$seen"]), Some(5))]);
        let out = view.catch_up(latest(vec![entry(1, &[]), entry(2, &["$seen"])]), true);
        assert_eq!(out, vec![]);
    }

    #[test]
    fn rfc_7162_renderings() {
        let flags = Unsolicited::Flags {
            msn: 4,
            uid: 8,
            keywords: kw(&["$seen"]),
            modseq: 12121231000,
        };
        let plain = Ext::default();
        let condstore = Ext {
            condstore: true,
            qresync: false,
        };
        let qresync = Ext {
            condstore: true,
            qresync: true,
        };
        assert_eq!(flags.render(false, plain), "* 4 FETCH (FLAGS (\\Seen))\r\n");
        assert_eq!(
            flags.render(false, condstore),
            "* 4 FETCH (FLAGS (\\Seen) MODSEQ (12121231000))\r\n"
        );
        assert_eq!(
            flags.render(false, qresync),
            "* 4 FETCH (UID 8 FLAGS (\\Seen) MODSEQ (12121231000))\r\n"
        );
        let gone = Unsolicited::Expunge { msn: 3, uid: 7 };
        assert_eq!(gone.render(false, condstore), "* 3 EXPUNGE\r\n");
        // RFC 7162 section 3.2.10: VANISHED replaces EXPUNGE.
        assert_eq!(gone.render(false, qresync), "* VANISHED 7\r\n");
    }

    /// The rules written out plainly over a vector of (entry, gone), to
    /// hold the shared-listing view to.
    struct Model {
        messages: Vec<(Entry, bool)>,
    }

    impl Model {
        fn apply(&mut self, fresh: &[Entry], allow_expunge: bool) -> Vec<Unsolicited> {
            let mut changed = Vec::new();
            for (m, gone) in self.messages.iter_mut() {
                match fresh.iter().find(|f| f.uid == m.uid) {
                    Some(f) => {
                        if !*gone && f.keywords != m.keywords {
                            changed.push(m.uid);
                        }
                        *m = f.clone();
                    }
                    None => *gone = true,
                }
            }
            let known_last = self.messages.last().map_or(0, |(m, _)| m.uid);
            let mut out = Vec::new();
            if allow_expunge {
                for i in (0..self.messages.len()).rev() {
                    if self.messages[i].1 {
                        let (m, _) = self.messages.remove(i);
                        out.push(Unsolicited::Expunge {
                            msn: i as u32 + 1,
                            uid: m.uid,
                        });
                    }
                }
            }
            for uid in changed {
                let i = self
                    .messages
                    .iter()
                    .position(|(m, _)| m.uid == uid)
                    .expect("a changed message is in the model");
                let m = &self.messages[i].0;
                out.push(Unsolicited::Flags {
                    msn: i as u32 + 1,
                    uid,
                    keywords: m.keywords.clone(),
                    modseq: m.modseq.0,
                });
            }
            let new: Vec<&Entry> = fresh.iter().filter(|f| f.uid > known_last).collect();
            if !new.is_empty() {
                self.messages
                    .extend(new.into_iter().map(|e| (e.clone(), false)));
                out.push(Unsolicited::Exists(self.messages.len() as u32));
            }
            out
        }
    }

    /// Over random deliveries, flag changes, expunges and the session's
    /// own stores, the view says exactly what the plain model says, and
    /// both agree on every sequence number and ghost.
    #[test]
    fn view_follows_the_plain_rules() {
        let mut next = crate::listing::tests::numbers(0x2545_f491_4f6c_dd1d);
        for _ in 0..200 {
            let start = 1 + next(1200) as u32;
            let mut store: Vec<Entry> = (1..=start).map(|u| entry(u, &[])).collect();
            let mut shared = latest(store.clone());
            let mut model = Model {
                messages: store.iter().map(|e| (e.clone(), false)).collect(),
            };
            let mut view = View::new(shared.clone());
            let mut modseq = 1u64;
            let mut next_uid = start + 1;
            for _ in 0..16 {
                let mut upserts = Vec::new();
                let mut removed = Vec::new();
                for _ in 0..1 + next(4) {
                    modseq += 1;
                    match next(4) {
                        0 => {
                            let mut e = entry(next_uid, &[]);
                            e.modseq = ModSeq(modseq);
                            upserts.push(e.clone());
                            store.push(e);
                            next_uid += 1;
                        }
                        1 | 2 if !store.is_empty() => {
                            let i = next(store.len() as u64) as usize;
                            store[i].keywords = kw(&[&format!("k{modseq}")]);
                            store[i].modseq = ModSeq(modseq);
                            upserts.push(store[i].clone());
                        }
                        _ if !store.is_empty() => {
                            let i = next(store.len() as u64) as usize;
                            removed.push(store.remove(i).uid);
                        }
                        _ => {}
                    }
                }
                upserts.retain(|e| !removed.contains(&e.uid));
                shared = Arc::new(shared.with_changes(upserts, &removed));
                let allow = next(2) == 0;
                let a = model.apply(&store, allow);
                let b = view.catch_up(shared.clone(), allow);
                assert_eq!(a, b);
                let seen_by_view: Vec<(u32, bool)> =
                    view.messages().map(|m| (m.entry.uid, m.gone)).collect();
                let seen_by_model: Vec<(u32, bool)> =
                    model.messages.iter().map(|(m, g)| (m.uid, *g)).collect();
                assert_eq!(seen_by_view, seen_by_model);
                // Sometimes the session stores a flag itself.
                if next(3) == 0
                    && let Some(i) = (0..model.messages.len()).find(|&i| !model.messages[i].1)
                {
                    modseq += 1;
                    let uid = model.messages[i].0.uid;
                    let keywords = kw(&[&format!("own{modseq}")]);
                    let s = store
                        .iter_mut()
                        .find(|e| e.uid == uid)
                        .expect("a message not gone is in the store");
                    s.keywords = keywords.clone();
                    s.modseq = ModSeq(modseq);
                    model.messages[i].0 = s.clone();
                    shared = Arc::new(shared.with_changes(vec![s.clone()], &[]));
                    view.set_keywords(vec![(uid, keywords, Some(modseq))]);
                }
            }
        }
    }
}
