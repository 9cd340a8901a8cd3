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

use bulwark_store::MessageEntry;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use crate::flags;

/// One message in the view.
#[derive(Debug, Clone)]
pub(crate) struct ViewMessage {
    /// The store's entry as last seen.
    pub entry: MessageEntry,
    /// Gone from the store, not yet announced with EXPUNGE.
    pub gone: bool,
}

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
        keywords: Vec<String>,
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

/// The session's view of its selected mailbox.
#[derive(Debug)]
pub(crate) struct View {
    messages: Vec<ViewMessage>,
}

impl View {
    /// A view of a freshly selected mailbox.
    pub(crate) fn new(entries: Vec<MessageEntry>) -> View {
        View {
            messages: entries
                .into_iter()
                .map(|entry| ViewMessage { entry, gone: false })
                .collect(),
        }
    }

    /// EXISTS as the client knows it (ghosts included).
    pub(crate) fn exists(&self) -> u32 {
        u32::try_from(self.messages.len()).unwrap_or(u32::MAX)
    }

    /// The message at index `i` (sequence number `i + 1`).
    pub(crate) fn get(&self, i: usize) -> Option<&ViewMessage> {
        self.messages.get(i)
    }

    /// Every message, in sequence order.
    pub(crate) fn messages(&self) -> &[ViewMessage] {
        &self.messages
    }

    /// Sets the keywords the session itself just stored, so they are not
    /// announced again as someone else's change.
    pub(crate) fn set_keywords(&mut self, uid: u32, keywords: Vec<String>, modseq: Option<u64>) {
        if let Ok(i) = self.messages.binary_search_by_key(&uid, |m| m.entry.uid) {
            self.messages[i].entry.keywords = keywords;
            if let Some(modseq) = modseq {
                self.messages[i].entry.modseq = bulwark_core::ModSeq(modseq);
            }
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
        let count = self.messages.len();
        let mut marks = vec![false; count];
        for item in items {
            let (a, b) = match item {
                Sequence::Single(x) => (*x, *x),
                Sequence::Range(a, b) => (*a, *b),
            };
            if uid {
                let Some(last) = self.messages.last().map(|m| m.entry.uid) else {
                    continue;
                };
                let value = |x: SeqOrUid| match x {
                    SeqOrUid::Value(v) => v.get(),
                    SeqOrUid::Asterisk => last,
                };
                let (lo, hi) = order(value(a), value(b));
                let start = self.messages.partition_point(|m| m.entry.uid < lo);
                let end = self.messages.partition_point(|m| m.entry.uid <= hi);
                for mark in marks.iter_mut().take(end).skip(start) {
                    *mark = true;
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
                for mark in marks.iter_mut().take(hi).skip(lo - 1) {
                    *mark = true;
                }
            }
        }
        Ok(marks
            .iter()
            .enumerate()
            .filter_map(|(i, &m)| m.then_some(i))
            .collect())
    }

    /// Brings the view up to `fresh` (the mailbox's current listing, in UID
    /// order). Expunges are announced only when `allow_expunge`; otherwise
    /// the messages stay as ghosts until a later call allows it. The
    /// executor uses [`View::apply_changes`]; this full-listing form is the
    /// reference the tests compare it with.
    #[cfg(test)]
    pub(crate) fn apply(
        &mut self,
        fresh: Vec<MessageEntry>,
        allow_expunge: bool,
    ) -> Vec<Unsolicited> {
        let out = Vec::new();
        let known_last = self.messages.last().map_or(0, |m| m.entry.uid);
        let mut fresh = fresh.into_iter().peekable();
        let mut changed: Vec<usize> = Vec::new();
        for (i, message) in self.messages.iter_mut().enumerate() {
            // Skip fresh entries the view never had (cannot happen with
            // increasing UIDs; ignored defensively).
            while fresh.peek().is_some_and(|f| f.uid < message.entry.uid) {
                fresh.next();
            }
            match fresh.peek() {
                Some(f) if f.uid == message.entry.uid => {
                    let Some(f) = fresh.next() else { break };
                    if !message.gone && f.keywords != message.entry.keywords {
                        changed.push(i);
                    }
                    message.entry = f;
                }
                _ => message.gone = true,
            }
        }
        let new: Vec<MessageEntry> = fresh.filter(|f| f.uid > known_last).collect();
        self.announce(changed, new, allow_expunge, out)
    }

    /// Brings the view up to date from what changed after the point it
    /// was last in step with: `changed` (entries added or with new flags,
    /// in UID order) and `removed` (UIDs expunged). Same rules as
    /// [`View::apply`], without listing the whole mailbox.
    pub(crate) fn apply_changes(
        &mut self,
        changed: Vec<MessageEntry>,
        removed: &[u32],
        allow_expunge: bool,
    ) -> Vec<Unsolicited> {
        for uid in removed {
            if let Ok(i) = self.messages.binary_search_by_key(uid, |m| m.entry.uid) {
                self.messages[i].gone = true;
            }
        }
        let known_last = self.messages.last().map_or(0, |m| m.entry.uid);
        let mut flagged: Vec<usize> = Vec::new();
        let mut new = Vec::new();
        for entry in changed {
            if removed.contains(&entry.uid) {
                continue;
            }
            match self
                .messages
                .binary_search_by_key(&entry.uid, |m| m.entry.uid)
            {
                Ok(i) => {
                    let message = &mut self.messages[i];
                    if !message.gone && entry.keywords != message.entry.keywords {
                        flagged.push(i);
                    }
                    message.entry = entry;
                }
                Err(_) if entry.uid > known_last => new.push(entry),
                // Below the last known UID and not in the view: it was
                // expunged and announced already.
                Err(_) => {}
            }
        }
        self.announce(flagged, new, allow_expunge, Vec::new())
    }

    /// The shared end of both updates: expunges (when allowed), flag
    /// changes, then new messages.
    fn announce(
        &mut self,
        mut changed: Vec<usize>,
        new: Vec<MessageEntry>,
        allow_expunge: bool,
        mut out: Vec<Unsolicited>,
    ) -> Vec<Unsolicited> {
        if allow_expunge {
            // Highest first, so every number is right when it is sent.
            for i in (0..self.messages.len()).rev() {
                if self.messages[i].gone {
                    let gone = self.messages.remove(i);
                    out.push(Unsolicited::Expunge {
                        msn: i as u32 + 1,
                        uid: gone.entry.uid,
                    });
                    for c in changed.iter_mut().filter(|c| **c > i) {
                        *c -= 1;
                    }
                }
            }
        }
        for i in changed {
            let m = &self.messages[i].entry;
            out.push(Unsolicited::Flags {
                msn: i as u32 + 1,
                uid: m.uid,
                keywords: m.keywords.clone(),
                modseq: m.modseq.0,
            });
        }
        if !new.is_empty() {
            self.messages.extend(
                new.into_iter()
                    .map(|entry| ViewMessage { entry, gone: false }),
            );
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
    use bulwark_core::{BlobId, EmailId, ModSeq};

    fn entry(uid: u32, keywords: &[&str]) -> MessageEntry {
        MessageEntry {
            uid,
            email: EmailId(i64::from(uid)),
            modseq: ModSeq(1),
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
            size: 10,
            received_at: 0,
            blob: BlobId([0; 32]),
        }
    }

    fn set(s: &str) -> SequenceSet {
        s.parse().expect("sequence set")
    }

    #[test]
    fn resolve_msn_and_uid() {
        let view = View::new(vec![entry(3, &[]), entry(7, &[]), entry(9, &[])]);
        assert_eq!(view.resolve(&set("1:*"), false, 10), Ok(vec![0, 1, 2]));
        assert_eq!(view.resolve(&set("3,1"), false, 10), Ok(vec![0, 2]));
        assert_eq!(
            view.resolve(&set("4"), false, 10),
            Err(ResolveError::NoSuchMessage)
        );
        assert_eq!(view.resolve(&set("4:8"), true, 10), Ok(vec![1]));
        assert_eq!(view.resolve(&set("10:*"), true, 10), Ok(vec![2]));
        assert_eq!(view.resolve(&set("100"), true, 10), Ok(vec![]));
        assert_eq!(
            view.resolve(&set("1,2,3"), true, 2),
            Err(ResolveError::TooMany)
        );
        let empty = View::new(vec![]);
        assert_eq!(empty.resolve(&set("1:*"), true, 10), Ok(vec![]));
        assert_eq!(
            empty.resolve(&set("*"), false, 10),
            Err(ResolveError::NoSuchMessage)
        );
    }

    #[test]
    fn expunges_wait_for_an_allowed_moment() {
        let mut view = View::new(vec![entry(1, &[]), entry(2, &[]), entry(3, &[])]);
        // Another session expunged UID 2 and flagged UID 3.
        let fresh = vec![entry(1, &[]), entry(3, &["$seen"])];
        let during_fetch = view.apply(fresh.clone(), false);
        assert_eq!(
            during_fetch,
            vec![Unsolicited::Flags {
                msn: 3,
                uid: 3,
                keywords: vec!["$seen".into()],
                modseq: 1,
            }]
        );
        assert_eq!(view.exists(), 3, "the ghost keeps its number");
        let at_noop = view.apply(fresh, true);
        assert_eq!(at_noop, vec![Unsolicited::Expunge { msn: 2, uid: 2 }]);
        assert_eq!(view.exists(), 2);
        assert_eq!(view.get(1).map(|m| m.entry.uid), Some(3));
    }

    #[test]
    fn expunge_numbers_are_right_when_sent() {
        let mut view = View::new((1..=5).map(|u| entry(u, &[])).collect());
        let fresh = vec![entry(1, &[]), entry(4, &["$flagged"]), entry(6, &[])];
        let out = view.apply(fresh, true);
        assert_eq!(
            out,
            vec![
                Unsolicited::Expunge { msn: 5, uid: 5 },
                Unsolicited::Expunge { msn: 3, uid: 3 },
                Unsolicited::Expunge { msn: 2, uid: 2 },
                Unsolicited::Flags {
                    msn: 2,
                    uid: 4,
                    keywords: vec!["$flagged".into()],
                    modseq: 1,
                },
                Unsolicited::Exists(3),
            ]
        );
    }

    #[test]
    fn new_messages_while_ghosts_remain() {
        let mut view = View::new(vec![entry(1, &[]), entry(2, &[])]);
        let out = view.apply(vec![entry(2, &[]), entry(3, &[])], false);
        assert_eq!(out, vec![Unsolicited::Exists(3)]);
        let out = view.apply(vec![entry(2, &[]), entry(3, &[])], true);
        assert_eq!(out, vec![Unsolicited::Expunge { msn: 1, uid: 1 }]);
        assert_eq!(view.exists(), 2);
    }

    #[test]
    fn rfc_7162_renderings() {
        let flags = Unsolicited::Flags {
            msn: 4,
            uid: 8,
            keywords: vec!["$seen".into()],
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

    /// The delta form says exactly what the full-listing form says, over
    /// random sequences of deliveries, flag changes and expunges.
    #[test]
    fn changes_and_listings_agree() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            // The store: UID -> (keywords, modseq).
            let mut store: Vec<MessageEntry> = (1..=5).map(|u| entry(u, &[])).collect();
            let mut modseq = 1u64;
            let mut by_listing = View::new(store.clone());
            let mut by_changes = View::new(store.clone());
            let mut synced = modseq;
            let mut removed_log: Vec<(u64, u32)> = Vec::new();
            let mut next_uid = 6;
            for _ in 0..12 {
                modseq += 1;
                match next(3) {
                    0 => {
                        let mut e = entry(next_uid, &[]);
                        e.modseq = ModSeq(modseq);
                        store.push(e);
                        next_uid += 1;
                    }
                    1 if !store.is_empty() => {
                        let i = next(store.len() as u64) as usize;
                        store[i].keywords = vec![format!("k{modseq}")];
                        store[i].modseq = ModSeq(modseq);
                    }
                    _ if !store.is_empty() => {
                        let i = next(store.len() as u64) as usize;
                        removed_log.push((modseq, store.remove(i).uid));
                    }
                    _ => {}
                }
                let allow = next(2) == 0;
                let a = by_listing.apply(store.clone(), allow);
                let changed: Vec<MessageEntry> = store
                    .iter()
                    .filter(|e| e.modseq.0 > synced)
                    .cloned()
                    .collect();
                let removed: Vec<u32> = removed_log
                    .iter()
                    .filter(|(m, _)| *m > synced)
                    .map(|(_, u)| *u)
                    .collect();
                let b = by_changes.apply_changes(changed, &removed, allow);
                synced = modseq;
                assert_eq!(a, b);
                let uids = |v: &View| {
                    v.messages()
                        .iter()
                        .map(|m| (m.entry.uid, m.gone))
                        .collect::<Vec<_>>()
                };
                assert_eq!(uids(&by_listing), uids(&by_changes));
            }
        }
    }
}
