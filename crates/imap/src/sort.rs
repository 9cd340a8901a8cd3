//! SORT and THREAD (RFC 5256) over facts the caller collected for each
//! message. Sans-I/O: base subject extraction (section 2.1), the sent
//! date rule (section 2.2), the sort order (section 3, SORT), both
//! threading algorithms (section 3, THREAD) and the response syntax
//! (section 4).
//!
//! The facts come from the store's cached header index (`EmailMeta`):
//! decoded subject, the formatted From and To lists, Date, Message-ID and
//! the message ids of References followed by In-Reply-To. Only CC needs
//! the message bytes. The index keeps In-Reply-To after the References
//! ids, so when both are present the REFERENCES algorithm sees
//! In-Reply-To as the last reference; the two agree for well-behaved
//! mail, where In-Reply-To repeats the last References id.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt::Write as _;

use imap_codec::imap_types::extensions::sort::{SortCriterion, SortKey};

/// Deepest thread tree kept: deeper messages become thread roots, so that
/// walking the tree stays bounded whatever the References headers say.
pub(crate) const MAX_THREAD_DEPTH: usize = 256;

/// What SORT and THREAD know about one message.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    /// The number reported: the sequence number or, for UID SORT/THREAD,
    /// the UID.
    pub number: u32,
    /// The sequence number, the last tie-breaker (RFC 5256 section 3).
    pub seq: u32,
    /// Internal date, Unix milliseconds.
    pub arrival: i64,
    /// RFC822.SIZE.
    pub size: u64,
    /// Sent date: the Date header, or the internal date when it is missing
    /// or unparseable (section 2.2).
    pub sent: i64,
    /// Decoded Subject.
    pub subject: String,
    /// Mailbox part of the first From address, lower case.
    pub from: String,
    /// Mailbox part of the first To address, lower case.
    pub to: String,
    /// Mailbox part of the first Cc address, lower case.
    pub cc: String,
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    /// Parent ids, oldest first (References, then In-Reply-To).
    pub references: Vec<String>,
}

/// The base subject and whether something marking a reply or forward was
/// removed (RFC 5256 section 2.1).
pub(crate) fn base_subject(subject: &str) -> (String, bool) {
    // Step 1: the subject is already decoded to UTF-8 by the caller; tabs
    // and line breaks become spaces and runs of spaces collapse.
    let mut s = String::with_capacity(subject.len());
    for c in subject.chars() {
        let c = if c == '\t' || c == '\r' || c == '\n' {
            ' '
        } else {
            c
        };
        if c == ' ' && s.ends_with(' ') {
            continue;
        }
        s.push(c);
    }
    let mut s = s.trim().to_string();
    let mut reply = false;
    loop {
        // Step 2: trailing "(fwd)" and whitespace, repeatedly.
        loop {
            let trimmed = s.trim_end();
            let lower = trimmed.to_ascii_lowercase();
            if lower.ends_with("(fwd)") {
                s = trimmed[..trimmed.len() - 5].to_string();
                reply = true;
            } else {
                s = trimmed.to_string();
                break;
            }
        }
        // Steps 3 to 5: leading blobs and Re/Fw/Fwd markers, until nothing
        // changes.
        loop {
            let before = s.clone();
            s = s.trim_start().to_string();
            if let Some(rest) = strip_refwd(&s) {
                s = rest;
                reply = true;
            } else if let Some(rest) = strip_blob(&s) {
                // Step 3's subj-leader is `*subj-blob subj-refwd`: blobs
                // go only when a marker follows them.
                if let Some(after) = strip_refwd(&rest) {
                    s = after;
                    reply = true;
                } else if !rest.trim().is_empty() {
                    // Step 4: a leading blob goes if something remains.
                    s = rest;
                }
            }
            if s == before {
                break;
            }
        }
        // Step 6: "[fwd: ... ]" wraps a forwarded subject.
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("[fwd:") && s.ends_with(']') {
            s = s[5..s.len() - 1].trim().to_string();
            reply = true;
            continue;
        }
        break;
    }
    (s, reply)
}

/// `subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"`, removed with
/// the whitespace after it.
fn strip_refwd(s: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let after = if lower.starts_with("fwd") {
        3
    } else if lower.starts_with("re") || lower.starts_with("fw") {
        2
    } else {
        return None;
    };
    let rest = s[after..].trim_start();
    let rest = match strip_blob(rest) {
        Some(r) => r,
        None => rest.to_string(),
    };
    rest.strip_prefix(':').map(|r| r.trim_start().to_string())
}

/// `subj-blob = "[" *BLOBCHAR "]" *WSP`, where BLOBCHAR excludes brackets.
fn strip_blob(s: &str) -> Option<String> {
    let inner = s.strip_prefix('[')?;
    let end = inner.find([']', '['])?;
    if inner.as_bytes()[end] != b']' {
        return None;
    }
    Some(inner[end + 1..].trim_start().to_string())
}

/// The mailbox part (before `@`) of the first address in a formatted
/// address list (`Name <a@b>, c@d`), lower case; "" when there is none.
pub(crate) fn first_mailbox(list: &str) -> String {
    let first = list.split(", ").next().unwrap_or_default();
    let address = if first.contains('@') {
        match (first.rfind('<'), first.rfind('>')) {
            (Some(a), Some(b)) if a < b => &first[a + 1..b],
            _ => first.trim(),
        }
    } else {
        // A display name with a comma in it: the first bracketed address.
        match (list.find('<'), list.find('>')) {
            (Some(a), Some(b)) if a < b => &list[a + 1..b],
            _ => "",
        }
    };
    address
        .rsplit_once('@')
        .map_or(address, |(mailbox, _)| mailbox)
        .to_lowercase()
}

fn compare(a: &Facts, b: &Facts, key: &SortKey, subjects: &HashMap<u32, String>) -> Ordering {
    match key {
        SortKey::Arrival => a.arrival.cmp(&b.arrival),
        SortKey::Cc => a.cc.cmp(&b.cc),
        SortKey::Date => a.sent.cmp(&b.sent),
        SortKey::From | SortKey::DisplayFrom => a.from.cmp(&b.from),
        SortKey::To | SortKey::DisplayTo => a.to.cmp(&b.to),
        SortKey::Size => a.size.cmp(&b.size),
        SortKey::Subject => {
            let empty = String::new();
            let sa = subjects.get(&a.seq).unwrap_or(&empty);
            let sb = subjects.get(&b.seq).unwrap_or(&empty);
            sa.cmp(sb)
        }
    }
}

/// The numbers of `messages` in SORT order (RFC 5256 section 3): each
/// criterion in turn, REVERSE per criterion, ties by sequence number.
/// Subjects compare by base subject, case-insensitively.
pub(crate) fn sort(messages: &[Facts], criteria: &[SortCriterion]) -> Vec<u32> {
    let subjects: HashMap<u32, String> = if criteria.iter().any(|c| c.key == SortKey::Subject) {
        messages
            .iter()
            .map(|m| (m.seq, base_subject(&m.subject).0.to_lowercase()))
            .collect()
    } else {
        HashMap::new()
    };
    let mut order: Vec<&Facts> = messages.iter().collect();
    order.sort_by(|a, b| {
        for c in criteria {
            let o = compare(a, b, &c.key, &subjects);
            let o = if c.reverse { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.seq.cmp(&b.seq)
    });
    order.iter().map(|m| m.number).collect()
}

/// A thread tree node: a message (its index in the input) or a dummy
/// standing for a message that is referenced but not present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// The message's number, `None` for a dummy.
    pub number: Option<u32>,
    /// Replies, in order.
    pub children: Vec<Node>,
}

/// `(sent date, sequence number)`: the order of threads and siblings.
fn date_key(messages: &[Facts], index: usize) -> (i64, u32) {
    (messages[index].sent, messages[index].seq)
}

/// THREAD=ORDEREDSUBJECT (RFC 5256 section 3): messages grouped by base
/// subject; in each group the earliest message is the parent of all the
/// others; groups ordered by the date of their first message.
pub(crate) fn ordered_subject(messages: &[Facts]) -> Vec<Node> {
    let mut order: Vec<usize> = (0..messages.len()).collect();
    let bases: Vec<String> = messages
        .iter()
        .map(|m| base_subject(&m.subject).0.to_lowercase())
        .collect();
    order.sort_by(|&a, &b| {
        bases[a]
            .cmp(&bases[b])
            .then(date_key(messages, a).cmp(&date_key(messages, b)))
    });
    let mut threads: Vec<(usize, Node)> = Vec::new();
    for &i in &order {
        let leaf = Node {
            number: Some(messages[i].number),
            children: Vec::new(),
        };
        match threads.last_mut() {
            Some((first, node)) if bases[*first] == bases[i] => node.children.push(leaf),
            _ => threads.push((i, leaf)),
        }
    }
    threads.sort_by_key(|(first, _)| date_key(messages, *first));
    threads.into_iter().map(|(_, node)| node).collect()
}

/// The working tree of the REFERENCES algorithm.
struct Arena {
    /// Message index per container (`None`: dummy).
    message: Vec<Option<usize>>,
    parent: Vec<Option<usize>>,
    children: Vec<Vec<usize>>,
}

impl Arena {
    fn add(&mut self, message: Option<usize>) -> usize {
        self.message.push(message);
        self.parent.push(None);
        self.children.push(Vec::new());
        self.message.len() - 1
    }

    /// Whether `a` is `b` or one of its ancestors. Walks at most
    /// [`MAX_THREAD_DEPTH`] steps; a longer chain counts as a loop, so no
    /// link makes the tree deeper than that.
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        let mut at = Some(b);
        for _ in 0..=MAX_THREAD_DEPTH {
            match at {
                Some(x) if x == a => return true,
                Some(x) => at = self.parent[x],
                None => return false,
            }
        }
        true
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.parent[child].take() {
            self.children[p].retain(|&c| c != child);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.unlink(child);
        self.parent[child] = Some(parent);
        self.children[parent].push(child);
    }
}

/// THREAD=REFERENCES (RFC 5256 section 3, steps 1 to 6).
pub(crate) fn references(messages: &[Facts]) -> Vec<Node> {
    let mut arena = Arena {
        message: Vec::new(),
        parent: Vec::new(),
        children: Vec::new(),
    };
    let mut by_id: HashMap<String, usize> = HashMap::new();
    // Messages in sent-date order, so that links come out the same
    // whatever the mailbox order.
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_by_key(|&i| date_key(messages, i));
    for &i in &order {
        let m = &messages[i];
        // Step 1.A: link the references to each other, oldest first,
        // unless a link exists already or would make a loop.
        let mut previous: Option<usize> = None;
        for id in &m.references {
            let c = *by_id.entry(id.clone()).or_insert_with(|| arena.add(None));
            if let Some(p) = previous
                && p != c
                && arena.parent[c].is_none()
                && !arena.is_ancestor(c, p)
            {
                arena.link(p, c);
            }
            previous = Some(c);
        }
        // Step 1.B: the message's own container; a missing or duplicate
        // Message-ID gets a container of its own.
        let own = match m.message_id.as_deref().and_then(|id| by_id.get(id)) {
            Some(&c) if arena.message[c].is_none() => {
                arena.message[c] = Some(i);
                c
            }
            _ => {
                let c = arena.add(Some(i));
                if let Some(id) = &m.message_id {
                    by_id.entry(id.clone()).or_insert(c);
                }
                c
            }
        };
        // Step 1.C: the last reference is the parent, replacing a link a
        // truncated References header made, unless that makes a loop.
        match previous {
            Some(p) if p != own && !arena.is_ancestor(own, p) => arena.link(p, own),
            Some(_) => {}
            None => arena.unlink(own),
        }
    }
    // Step 2: the root set.
    let roots: Vec<usize> = (0..arena.message.len())
        .filter(|&c| arena.parent[c].is_none())
        .collect();
    // Step 3: prune dummies.
    let mut nodes: Vec<Tree> = Vec::new();
    for r in roots {
        nodes.extend(prune(&arena, r, true, 0));
    }
    // Step 4: sort the root set by date (a dummy by its first child).
    for n in &mut nodes {
        sort_children(n, messages);
    }
    nodes.sort_by_key(|n| n.key(messages));
    // Step 5: gather roots with the same base subject.
    let subject_of = |n: &Tree| -> Option<(String, bool)> {
        let i = match n.message {
            Some(i) => i,
            None => n.children.first()?.message?,
        };
        let (base, reply) = base_subject(&messages[i].subject);
        (!base.is_empty()).then(|| (base.to_lowercase(), reply))
    };
    // 5.A/5.B: the table of subjects, preferring a dummy, then a
    // non-reply.
    let mut table: HashMap<String, usize> = HashMap::new();
    for (at, n) in nodes.iter().enumerate() {
        let Some((base, reply)) = subject_of(n) else {
            continue;
        };
        match table.get(&base) {
            None => {
                table.insert(base, at);
            }
            Some(&old) => {
                let old_node = &nodes[old];
                let old_reply = subject_of(old_node).is_some_and(|(_, r)| r);
                if (n.message.is_none() && old_node.message.is_some())
                    || (old_node.message.is_some() && old_reply && !reply)
                {
                    table.insert(base, at);
                }
            }
        }
    }
    // 5.C: merge each root into the one the table names.
    let mut slots: Vec<Option<Tree>> = nodes.into_iter().map(Some).collect();
    for at in 0..slots.len() {
        let Some(current) = slots[at].as_ref() else {
            continue;
        };
        let Some((base, reply)) = subject_of(current) else {
            continue;
        };
        let Some(&target) = table.get(&base) else {
            continue;
        };
        if target == at {
            continue;
        }
        let Some(current) = slots[at].take() else {
            continue;
        };
        let Some(found) = slots[target].take() else {
            slots[at] = Some(current);
            continue;
        };
        let found_reply = subject_of(&found).is_some_and(|(_, r)| r);
        let merged = match (found.message.is_none(), current.message.is_none()) {
            // Both dummies: the children join.
            (true, true) => {
                let mut found = found;
                found.children.extend(current.children);
                found
            }
            // One dummy: the message becomes its child.
            (true, false) => {
                let mut found = found;
                found.children.push(current);
                found
            }
            (false, true) => {
                let mut current = current;
                current.children.push(found);
                current
            }
            // A reply under the original it answers.
            (false, false) if !found_reply && reply => {
                let mut found = found;
                found.children.push(current);
                found
            }
            // Otherwise both go under a new dummy.
            (false, false) => Tree {
                message: None,
                children: vec![found, current],
            },
        };
        slots[target] = Some(merged);
    }
    // Step 6: sort every level by date.
    let mut out: Vec<Tree> = slots.into_iter().flatten().collect();
    for n in &mut out {
        sort_children(n, messages);
    }
    out.iter().map(|t| t.to_node(messages)).collect()
}

/// A pruned thread tree over message indices.
#[derive(Debug)]
struct Tree {
    message: Option<usize>,
    children: Vec<Tree>,
}

impl Tree {
    /// The date a node sorts by: its message's, or its first child's.
    fn key(&self, messages: &[Facts]) -> (i64, u32) {
        match self.message {
            Some(i) => date_key(messages, i),
            None => self
                .children
                .first()
                .map_or((i64::MAX, u32::MAX), |c| c.key(messages)),
        }
    }

    fn to_node(&self, messages: &[Facts]) -> Node {
        Node {
            number: self.message.map(|i| messages[i].number),
            children: self.children.iter().map(|c| c.to_node(messages)).collect(),
        }
    }
}

fn sort_children(tree: &mut Tree, messages: &[Facts]) {
    for c in &mut tree.children {
        sort_children(c, messages);
    }
    tree.children.sort_by_key(|c| c.key(messages));
}

/// Step 3: dummies without children go; a dummy's children take its place,
/// except for a root dummy with several children. Depth is bounded by the
/// links [`Arena::is_ancestor`] allowed.
fn prune(arena: &Arena, c: usize, root: bool, depth: usize) -> Vec<Tree> {
    let mut children = Vec::new();
    if depth < 2 * MAX_THREAD_DEPTH {
        for &k in &arena.children[c] {
            children.extend(prune(arena, k, false, depth + 1));
        }
    }
    match arena.message[c] {
        Some(i) => vec![Tree {
            message: Some(i),
            children,
        }],
        None if children.is_empty() => Vec::new(),
        None if root && children.len() > 1 => vec![Tree {
            message: None,
            children,
        }],
        None => children,
    }
}

/// The THREAD response (RFC 5256 section 4): `* THREAD` and one
/// parenthesised list per thread.
pub(crate) fn thread_response(threads: &[Node]) -> String {
    let mut out = String::from("* THREAD");
    if !threads.is_empty() {
        out.push(' ');
    }
    for t in threads {
        out.push('(');
        members(&mut out, t);
        out.push(')');
    }
    out.push_str("\r\n");
    out
}

/// `thread-members` / `thread-nested`: a message followed by its only
/// reply continues the list; several replies each get a list.
fn members(out: &mut String, node: &Node) {
    if let Some(n) = node.number {
        let _ = write!(out, "{n}");
        match node.children.as_slice() {
            [] => {}
            [only] => {
                out.push(' ');
                members(out, only);
            }
            many => {
                out.push(' ');
                for c in many {
                    out.push('(');
                    members(out, c);
                    out.push(')');
                }
            }
        }
    } else {
        for c in &node.children {
            out.push('(');
            members(out, c);
            out.push(')');
        }
    }
}

/// The SORT response (RFC 5256 section 4).
pub(crate) fn sort_response(numbers: &[u32]) -> String {
    let mut out = String::from("* SORT");
    for n in numbers {
        let _ = write!(out, " {n}");
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects() {
        for (subject, base, reply) in [
            ("Hello", "Hello", false),
            ("Re: Hello", "Hello", true),
            ("RE:Hello", "Hello", true),
            ("Fwd: Re: Hello", "Hello", true),
            ("Fw: hello", "hello", true),
            ("Re[2]: Hello", "Hello", true),
            ("[list] Re: Hello", "Hello", true),
            ("[list] Hello", "Hello", false),
            ("[list]", "[list]", false),
            ("Hello (fwd)", "Hello", true),
            ("Hello (FWD) (fwd)  ", "Hello", true),
            ("[Fwd: Re: Hello]", "Hello", true),
            (
                "  Re:  \t  Hello   world\r\n again ",
                "Hello world again",
                true,
            ),
            ("Re: [x] [y] Hello", "Hello", true),
            ("Reply to all", "Reply to all", false),
            ("Ref: thing", "Ref: thing", false),
            ("", "", false),
        ] {
            assert_eq!(
                base_subject(subject),
                (base.to_string(), reply),
                "{subject:?}"
            );
        }
    }

    #[test]
    fn first_mailboxes() {
        assert_eq!(first_mailbox("Alice <Alice@example.com>, b@x"), "alice");
        assert_eq!(first_mailbox("bob@example.com"), "bob");
        assert_eq!(first_mailbox("Doe, John <jd@example.com>"), "jd");
        assert_eq!(first_mailbox(""), "");
    }

    fn facts(number: u32, sent: i64, subject: &str) -> Facts {
        Facts {
            number,
            seq: number,
            arrival: i64::from(number),
            sent,
            subject: subject.into(),
            ..Facts::default()
        }
    }

    fn criteria(text: &str) -> Vec<SortCriterion> {
        use imap_codec::CommandCodec;
        use imap_codec::decode::Decoder;
        use imap_codec::imap_types::command::CommandBody;
        let line = format!("a SORT ({text}) UTF-8 ALL\r\n");
        let (_, cmd) = CommandCodec::default()
            .decode(line.as_bytes())
            .expect("parses");
        let CommandBody::Sort { sort_criteria, .. } = cmd.body else {
            panic!("not a sort")
        };
        sort_criteria.into_iter().collect()
    }

    #[test]
    fn sort_orders_and_ties() {
        let mut m = vec![
            facts(1, 300, "Re: beta"),
            facts(2, 100, "alpha"),
            facts(3, 200, "Beta"),
            facts(4, 100, "[list] Alpha"),
        ];
        m[0].size = 10;
        m[1].size = 30;
        m[2].size = 20;
        m[3].size = 20;
        m[0].from = "zed".into();
        m[1].from = "amy".into();
        assert_eq!(sort(&m, &criteria("ARRIVAL")), vec![1, 2, 3, 4]);
        assert_eq!(sort(&m, &criteria("REVERSE ARRIVAL")), vec![4, 3, 2, 1]);
        assert_eq!(sort(&m, &criteria("DATE")), vec![2, 4, 3, 1]);
        assert_eq!(sort(&m, &criteria("SUBJECT")), vec![2, 4, 1, 3]);
        assert_eq!(
            sort(&m, &criteria("SUBJECT REVERSE DATE")),
            vec![2, 4, 1, 3]
        );
        assert_eq!(
            sort(&m, &criteria("REVERSE SUBJECT DATE")),
            vec![3, 1, 2, 4]
        );
        assert_eq!(sort(&m, &criteria("SIZE")), vec![1, 3, 4, 2]);
        assert_eq!(sort(&m, &criteria("REVERSE SIZE")), vec![2, 3, 4, 1]);
        // Empty sorts first.
        assert_eq!(sort(&m, &criteria("FROM")), vec![3, 4, 2, 1]);
        assert_eq!(
            sort_response(&sort(&m, &criteria("SIZE"))),
            "* SORT 1 3 4 2\r\n"
        );
        assert_eq!(sort_response(&[]), "* SORT\r\n");
    }

    #[test]
    fn thread_response_syntax() {
        // RFC 5256 section 4's example: (2)(3 6 (4 23)(44 7 96)).
        let leaf = |n| Node {
            number: Some(n),
            children: vec![],
        };
        let chain = |n, c: Node| Node {
            number: Some(n),
            children: vec![c],
        };
        let threads = vec![
            leaf(2),
            chain(
                3,
                Node {
                    number: Some(6),
                    children: vec![chain(4, leaf(23)), chain(44, chain(7, leaf(96)))],
                },
            ),
        ];
        assert_eq!(
            thread_response(&threads),
            "* THREAD (2)(3 6 (4 23)(44 7 96))\r\n"
        );
        // A dummy root: ((1)(2)).
        let dummy = Node {
            number: None,
            children: vec![leaf(1), leaf(2)],
        };
        assert_eq!(thread_response(&[dummy]), "* THREAD ((1)(2))\r\n");
        assert_eq!(thread_response(&[]), "* THREAD\r\n");
    }

    #[test]
    fn ordered_subject_threads() {
        let m = vec![
            facts(1, 50, "Re: lunch"),
            facts(2, 10, "lunch"),
            facts(3, 20, "report"),
            facts(4, 60, "Lunch (fwd)"),
            facts(5, 5, "zebra"),
        ];
        assert_eq!(
            thread_response(&ordered_subject(&m)),
            "* THREAD (5)(2 (1)(4))(3)\r\n"
        );
    }

    fn msg(number: u32, sent: i64, subject: &str, id: &str, refs: &[&str]) -> Facts {
        Facts {
            message_id: Some(id.into()),
            references: refs.iter().map(|r| (*r).to_string()).collect(),
            ..facts(number, sent, subject)
        }
    }

    #[test]
    fn references_threads() {
        let m = vec![
            msg(1, 10, "plan", "a", &[]),
            msg(2, 20, "Re: plan", "b", &["a"]),
            msg(3, 30, "Re: plan", "c", &["a"]),
            msg(4, 40, "Re: plan", "d", &["a", "b"]),
            msg(5, 15, "other", "e", &[]),
            // Its parent is missing; the dummy with one child is pruned.
            msg(6, 50, "Re: lost", "f", &["gone"]),
            // Two replies to a missing message: a dummy root stays.
            msg(7, 60, "Re: old", "g", &["x"]),
            msg(8, 70, "Re: old", "h", &["x"]),
        ];
        assert_eq!(
            thread_response(&references(&m)),
            "* THREAD (1 (2 4)(3))(5)(6)((7)(8))\r\n"
        );
        // Mailbox order does not matter.
        let mut rev = m.clone();
        rev.reverse();
        assert_eq!(
            thread_response(&references(&rev)),
            "* THREAD (1 (2 4)(3))(5)(6)((7)(8))\r\n"
        );
    }

    #[test]
    fn references_subject_grouping_and_loops() {
        let m = vec![
            msg(1, 10, "budget", "a", &[]),
            // No references but a reply subject: goes under 1 (step 5).
            msg(2, 20, "Re: budget", "b", &[]),
            // Same subject, neither a reply: both under a dummy.
            msg(3, 30, "news", "c", &[]),
            msg(4, 40, "news", "d", &[]),
            // A loop in References is not followed.
            msg(5, 50, "loop", "e", &["f"]),
            msg(6, 60, "loop", "f", &["e"]),
            // A duplicate Message-ID is a message of its own.
            msg(7, 70, "dup", "a", &[]),
        ];
        let got = thread_response(&references(&m));
        // 5 names 6 as its parent first; 6 naming 5 would close a loop.
        assert_eq!(got, "* THREAD (1 2)((3)(4))(6 5)(7)\r\n");
    }

    #[test]
    fn references_depth_is_bounded() {
        let n = 3 * MAX_THREAD_DEPTH;
        let m: Vec<Facts> = (0..n)
            .map(|i| {
                let refs: Vec<String> = if i == 0 {
                    vec![]
                } else {
                    vec![format!("m{}", i - 1)]
                };
                Facts {
                    message_id: Some(format!("m{i}")),
                    references: refs,
                    ..facts(i as u32 + 1, i as i64, "chain")
                }
            })
            .collect();
        let threads = references(&m);
        fn depth(n: &Node) -> usize {
            1 + n.children.iter().map(depth).max().unwrap_or(0)
        }
        // The chain is cut into pieces, which step 5 gathers under a dummy.
        assert!(threads.iter().all(|t| depth(t) <= MAX_THREAD_DEPTH + 2));
        assert!(threads.iter().any(|t| depth(t) > MAX_THREAD_DEPTH));
        fn count(n: &Node) -> usize {
            usize::from(n.number.is_some()) + n.children.iter().map(count).sum::<usize>()
        }
        let total: usize = threads.iter().map(count).sum();
        assert_eq!(total, n);
    }
}
