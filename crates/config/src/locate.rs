//! Maps a byte offset in a TOML document back to the dotted key path that
//! holds it, so that deserialization errors can name the offending key.
//!
//! The document is parsed a second time into a small tree that records the
//! span of every key and value. The spans come from the `toml` crate's
//! span protocol (the one `toml::Spanned` uses); tables that carry no span
//! (implicit tables created by dotted keys) are still walked through their
//! children. This only runs when loading has already failed.

use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

// The span protocol of `serde_spanned` (re-exported as `toml::Spanned`):
// a deserializer that knows where a value sits answers a request for a
// struct with this name and these fields with a three-entry map.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// Renders a path as `listener[1].bind`. Keys that are not bare TOML keys
/// are quoted.
pub(crate) fn render_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(key);
                } else {
                    out.push('"');
                    for c in key.chars() {
                        match c {
                            '"' => out.push_str("\\\""),
                            '\\' => out.push_str("\\\\"),
                            c if c.is_control() => {
                                out.push_str(&format!("\\u{:04X}", u32::from(c)))
                            }
                            c => out.push(c),
                        }
                    }
                    out.push('"');
                }
            }
            Segment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// Returns the path of the innermost key or value that contains byte
/// `offset` of `text`, or `None` when the document cannot be walked or the
/// offset lies outside every key and value (for example on the root).
pub(crate) fn path_at(text: &str, offset: usize) -> Option<Vec<Segment>> {
    let root: Node = Node::deserialize_from(toml::Deserializer::new(text)).ok()?;
    let mut path = Vec::new();
    if find(&root, offset, &mut path) || contains(&root.span, offset) {
        Some(path)
    } else {
        None
    }
}

/// Returns the path of the table whose span is exactly `span`: the table
/// that a "missing field" error is about. `None` means no table matched
/// (the error is about the root table).
pub(crate) fn table_with_span(text: &str, span: &Range<usize>) -> Option<Vec<Segment>> {
    let root: Node = Node::deserialize_from(toml::Deserializer::new(text)).ok()?;
    let mut path = Vec::new();
    find_table(&root, span, &mut path).then_some(path)
}

fn find_table(node: &Node, span: &Range<usize>, path: &mut Vec<Segment>) -> bool {
    let children: Box<dyn Iterator<Item = (Segment, &Node)>> = match &node.kind {
        Kind::Leaf => return false,
        Kind::Table(entries) => Box::new(
            entries
                .iter()
                .map(|e| (Segment::Key(e.key.clone()), &e.value)),
        ),
        Kind::Array(items) => Box::new(
            items
                .iter()
                .enumerate()
                .map(|(i, n)| (Segment::Index(i), n)),
        ),
    };
    for (segment, child) in children {
        path.push(segment);
        let is_it = matches!(child.kind, Kind::Table(_)) && child.span.as_ref() == Some(span);
        if is_it || find_table(child, span, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn contains(span: &Option<Range<usize>>, offset: usize) -> bool {
    span.as_ref().is_some_and(|s| s.contains(&offset))
}

/// Depth-first search; children win over their parent.
fn find(node: &Node, offset: usize, path: &mut Vec<Segment>) -> bool {
    match &node.kind {
        Kind::Leaf => false,
        Kind::Table(entries) => {
            for entry in entries {
                path.push(Segment::Key(entry.key.clone()));
                if contains(&entry.key_span, offset)
                    || find(&entry.value, offset, path)
                    || contains(&entry.value.span, offset)
                {
                    return true;
                }
                path.pop();
            }
            false
        }
        Kind::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(Segment::Index(index));
                if find(item, offset, path) || contains(&item.span, offset) {
                    return true;
                }
                path.pop();
            }
            false
        }
    }
}

#[derive(Debug)]
struct Node {
    span: Option<Range<usize>>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Leaf,
    Table(Vec<Entry>),
    Array(Vec<Node>),
}

#[derive(Debug)]
struct Entry {
    key: String,
    key_span: Option<Range<usize>>,
    value: Node,
}

impl Node {
    fn leaf() -> Node {
        Node {
            span: None,
            kind: Kind::Leaf,
        }
    }

    /// Asks for the value together with its span; a deserializer that has no
    /// span for it answers with the plain value instead.
    fn deserialize_from<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, NodeVisitor { spanned: true })
    }
}

/// Seed for a value that may arrive wrapped in the span protocol.
struct SpannedNode;

impl<'de> DeserializeSeed<'de> for SpannedNode {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize_from(deserializer)
    }
}

/// Seed for the inner value of a span-protocol map (never wrapped again).
struct PlainNode;

impl<'de> DeserializeSeed<'de> for PlainNode {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor { spanned: false })
    }
}

struct NodeVisitor {
    /// Whether a map may be the span protocol rather than a table.
    spanned: bool,
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::leaf())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::leaf())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::leaf())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::leaf())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::leaf())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(SpannedNode)? {
            items.push(item);
        }
        Ok(Node {
            span: None,
            kind: Kind::Array(items),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Some(first) = map.next_key_seed(KeySeed)? else {
            return Ok(Node {
                span: None,
                kind: Kind::Table(Vec::new()),
            });
        };
        if self.spanned && first.span.is_none() && first.name == SPANNED_START {
            let start: usize = map.next_value()?;
            let _: Option<Key> = map.next_key_seed(KeySeed)?;
            let end: usize = map.next_value()?;
            let _: Option<Key> = map.next_key_seed(KeySeed)?;
            let mut node = map.next_value_seed(PlainNode)?;
            node.span = Some(start..end);
            return Ok(node);
        }
        let mut entries = Vec::new();
        let value = map.next_value_seed(SpannedNode)?;
        entries.push(Entry {
            key: first.name,
            key_span: first.span,
            value,
        });
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(SpannedNode)?;
            entries.push(Entry {
                key: key.name,
                key_span: key.span,
                value,
            });
        }
        Ok(Node {
            span: None,
            kind: Kind::Table(entries),
        })
    }
}

/// A table key with its span when the deserializer knows it.
struct Key {
    name: String,
    span: Option<Range<usize>>,
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML key")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
        Ok(Key {
            name: name.to_owned(),
            span: None,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        let mut start = None;
        let mut end = None;
        let mut name = None;
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                SPANNED_START => start = Some(map.next_value::<usize>()?),
                SPANNED_END => end = Some(map.next_value::<usize>()?),
                SPANNED_VALUE => name = Some(map.next_value::<String>()?),
                other => return Err(de::Error::unknown_field(other, SPANNED_FIELDS)),
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field(SPANNED_VALUE))?;
        let span = match (start, end) {
            (Some(start), Some(end)) => Some(start..end),
            _ => None,
        };
        Ok(Key { name, span })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, needle: &str) -> Option<String> {
        let offset = text.find(needle).expect("needle is in the text");
        path_at(text, offset).map(|p| render_path(&p))
    }

    #[test]
    fn finds_keys_and_values_in_header_tables() {
        let text =
            "[server]\nhostname = \"a\"\ndata_dir = \"d\"\n\n[limits]\nmax_connections = 7\n";
        assert_eq!(at(text, "hostname").as_deref(), Some("server.hostname"));
        assert_eq!(at(text, "\"d\"").as_deref(), Some("server.data_dir"));
        assert_eq!(at(text, "7").as_deref(), Some("limits.max_connections"));
        assert_eq!(at(text, "[limits]").as_deref(), Some("limits"));
    }

    #[test]
    fn finds_array_of_tables_and_inline_values() {
        let text = "[[listener]]\nprotocol = \"smtp\"\nbind = \"x\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = \"y\"\n\
                    [other]\nlist = [1, {a = 2}, \"z\"]\n";
        assert_eq!(at(text, "\"y\"").as_deref(), Some("listener[1].bind"));
        assert_eq!(
            at(text, "\"smtp\"").as_deref(),
            Some("listener[0].protocol")
        );
        assert_eq!(at(text, "2}").as_deref(), Some("other.list[1].a"));
        assert_eq!(at(text, "\"z\"").as_deref(), Some("other.list[2]"));
    }

    #[test]
    fn finds_dotted_keys() {
        let text = "server.hostname = 5\n\"odd key\".x = 1\n";
        assert_eq!(at(text, "5").as_deref(), Some("server.hostname"));
        assert_eq!(at(text, "1").as_deref(), Some("\"odd key\".x"));
    }

    #[test]
    fn root_and_bad_documents_have_no_path() {
        assert_eq!(path_at("a = 1\n\n", 6), None);
        assert_eq!(path_at("a = = 1", 0), None);
    }
}
