//! FETCH: which data items a command asks for, and rendering them for one
//! message (RFC 9051 section 6.4.5, response syntax section 7.5.2).
//! Sans-I/O: the caller supplies the stored entry and, when needed, the
//! message bytes.

use std::fmt::Write as _;

use bulwark_core::ThreadId;
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItemName, Part, Section,
};
use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{Address, MessageParser};

use crate::flags;
use crate::listing::Entry;
use crate::mime::{self, Entity, Kind};
use crate::objectid::{self, Extras};
use crate::out::{self, Wrap};

/// One requested data item.
#[derive(Debug, Clone)]
enum Item {
    Flags,
    Uid,
    InternalDate,
    Size,
    Envelope,
    /// BODYSTRUCTURE (`extended`) or BODY.
    Structure {
        extended: bool,
    },
    /// BODY[...] / BODY.PEEK[...].
    Section {
        section: Option<Section<'static>>,
        partial: Option<(u32, u32)>,
    },
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    /// MODSEQ (RFC 7162 section 3.1.4.1).
    ModSeq,
    /// EMAILID (RFC 8474 section 5.1).
    EmailId,
    /// THREADID (RFC 8474 section 5.2).
    ThreadId,
    /// BINARY[...] / BINARY.PEEK[...] (RFC 3516 section 4.2).
    Binary {
        section: Vec<u32>,
        partial: Option<(u32, u32)>,
    },
    /// BINARY.SIZE[...] (RFC 3516 section 4.2).
    BinarySize {
        section: Vec<u32>,
    },
}

/// What a FETCH command asks for.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    items: Vec<Item>,
    /// Whether the message bytes are needed (ENVELOPE included).
    pub needs_body: bool,
    /// Whether an item other than ENVELOPE needs the message's MIME
    /// structure or bytes.
    needs_tree: bool,
    /// Whether fetching sets `\Seen` (BODY[...] without PEEK, RFC822,
    /// RFC822.TEXT).
    pub sets_seen: bool,
}

impl Plan {
    /// Adds MODSEQ unless asked for already (CHANGEDSINCE, or FLAGS once
    /// CONDSTORE is on: RFC 7162 sections 3.1.4.1 and 3.1.4.2).
    pub(crate) fn add_modseq(&mut self) {
        if !self.asks_modseq() {
            self.items.push(Item::ModSeq);
        }
    }

    /// Whether MODSEQ is among the items (a CONDSTORE enabling use).
    pub(crate) fn asks_modseq(&self) -> bool {
        self.items.iter().any(|i| matches!(i, Item::ModSeq))
    }

    /// Whether ENVELOPE is among the items.
    pub(crate) fn asks_envelope(&self) -> bool {
        self.items.iter().any(|i| matches!(i, Item::Envelope))
    }

    /// Whether a known ENVELOPE is all this plan needs of the message
    /// bytes, so they need not be read.
    pub(crate) fn envelope_suffices(&self) -> bool {
        !self
            .items
            .iter()
            .any(|i| !from_listing(i) && !matches!(i, Item::Envelope))
    }

    /// Whether FLAGS is among the items.
    pub(crate) fn asks_flags(&self) -> bool {
        self.items.iter().any(|i| matches!(i, Item::Flags))
    }

    /// Adds the OBJECTID items the pre-parse took out (`objectid.rs`);
    /// drops the UID that only held their place, unless UID FETCH wants
    /// it anyway.
    pub(crate) fn add_object_ids(&mut self, extras: Extras, uid: bool) {
        if extras.placeholder && !uid {
            self.items.retain(|i| !matches!(i, Item::Uid));
        }
        if extras.email_id {
            self.items.push(Item::EmailId);
        }
        if extras.thread_id {
            self.items.push(Item::ThreadId);
        }
    }

    /// Whether THREADID is among the items (the thread id is then looked
    /// up for each message).
    pub(crate) fn asks_thread(&self) -> bool {
        self.items.iter().any(|i| matches!(i, Item::ThreadId))
    }

    /// Whether any BINARY item names a part whose content transfer
    /// encoding this server cannot decode (RFC 3516 section 4.3:
    /// `NO [UNKNOWN-CTE]`).
    pub(crate) fn unknown_cte(&self, raw: &[u8]) -> bool {
        let wants = self
            .items
            .iter()
            .any(|i| matches!(i, Item::Binary { .. } | Item::BinarySize { .. }));
        if !wants {
            return false;
        }
        let tree = mime::parse(raw);
        self.items.iter().any(|i| match i {
            Item::Binary { section, .. } | Item::BinarySize { section } => {
                matches!(binary_bytes(raw, &tree, section), Some(Err(())))
            }
            _ => false,
        })
    }
}

/// Whether the item is answered from the listing entry (and the thread
/// id), without the message bytes.
fn from_listing(item: &Item) -> bool {
    matches!(
        item,
        Item::Flags
            | Item::Uid
            | Item::InternalDate
            | Item::Size
            | Item::ModSeq
            | Item::EmailId
            | Item::ThreadId
    )
}

/// Builds the plan; `uid` adds UID (RFC 9051 section 6.4.9). Items this
/// server does not offer are refused with the text returned.
pub(crate) fn plan(
    names: &MacroOrMessageDataItemNames<'_>,
    uid: bool,
) -> Result<Plan, &'static str> {
    let names: Vec<MessageDataItemName<'_>> = match names {
        MacroOrMessageDataItemNames::Macro(m) => m.expand(),
        MacroOrMessageDataItemNames::MessageDataItemNames(n) => n.clone(),
    };
    let mut items = Vec::new();
    let mut sets_seen = false;
    if uid {
        items.push(Item::Uid);
    }
    for name in names {
        let item = match name {
            MessageDataItemName::Flags => Item::Flags,
            MessageDataItemName::Uid => Item::Uid,
            MessageDataItemName::InternalDate => Item::InternalDate,
            MessageDataItemName::Rfc822Size => Item::Size,
            MessageDataItemName::Envelope => Item::Envelope,
            MessageDataItemName::BodyStructure => Item::Structure { extended: true },
            MessageDataItemName::Body => Item::Structure { extended: false },
            MessageDataItemName::BodyExt {
                section,
                partial,
                peek,
            } => {
                sets_seen |= !peek;
                Item::Section {
                    section: section.map(imap_codec::imap_types::IntoStatic::into_static),
                    partial: partial.map(|(o, n)| (o, n.get())),
                }
            }
            MessageDataItemName::Rfc822 => {
                sets_seen = true;
                Item::Rfc822
            }
            MessageDataItemName::Rfc822Header => Item::Rfc822Header,
            MessageDataItemName::Rfc822Text => {
                sets_seen = true;
                Item::Rfc822Text
            }
            MessageDataItemName::Binary {
                section,
                partial,
                peek,
            } => {
                // RFC 3516 section 4.2: BINARY sets \Seen like BODY[].
                sets_seen |= !peek;
                Item::Binary {
                    section: section.iter().map(|n| n.get()).collect(),
                    partial: partial.map(|(o, n)| (o, n.get())),
                }
            }
            MessageDataItemName::BinarySize { section } => Item::BinarySize {
                section: section.iter().map(|n| n.get()).collect(),
            },
            MessageDataItemName::ModSeq => Item::ModSeq,
            #[allow(unreachable_patterns)]
            _ => return Err("FETCH item not supported"),
        };
        let duplicate = matches!(item, Item::Uid | Item::ModSeq)
            && items
                .iter()
                .any(|i| std::mem::discriminant(i) == std::mem::discriminant(&item));
        if !duplicate {
            items.push(item);
        }
    }
    let needs_body = items.iter().any(|i| !from_listing(i));
    // The whole message, its header or its text are found without
    // parsing the MIME structure.
    let needs_tree = items.iter().any(|i| {
        matches!(
            i,
            Item::Structure { .. }
                | Item::Section {
                    section: Some(_),
                    ..
                }
                | Item::Binary { .. }
                | Item::BinarySize { .. }
        )
    });
    Ok(Plan {
        items,
        needs_body,
        needs_tree,
        sets_seen,
    })
}

/// What [`render`] draws on besides the listing entry.
#[derive(Default)]
pub(crate) struct Source<'a> {
    /// The message bytes; needed when [`Plan::needs_body`], unless only
    /// the ENVELOPE needs them and it is given.
    pub raw: Option<&'a [u8]>,
    /// The ENVELOPE as [`envelope_of`] renders it, when known.
    pub envelope: Option<&'a [u8]>,
    /// The thread, when [`Plan::asks_thread`].
    pub thread: Option<ThreadId>,
}

/// The ENVELOPE of a message (RFC 9051 section 7.5.2), from its header
/// alone; it depends on nothing but the bytes, so it can be kept.
pub(crate) fn envelope_of(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    envelope(&mut out, &raw[..mime::header_end(raw, 0, raw.len())]);
    out
}

/// Renders `* msn FETCH (...)\r\n`. `with_flags` adds FLAGS even when not
/// asked for (after an implicit `\Seen`).
#[cfg(test)]
pub(crate) fn render(
    msn: u32,
    entry: &Entry,
    plan: &Plan,
    with_flags: bool,
    source: &Source<'_>,
) -> Vec<u8> {
    let mut out = Vec::new();
    render_into(&mut out, msn, entry, plan, with_flags, source);
    out
}

/// [`render`], appending to `out`.
pub(crate) fn render_into(
    out: &mut Vec<u8>,
    msn: u32,
    entry: &Entry,
    plan: &Plan,
    with_flags: bool,
    source: &Source<'_>,
) {
    let raw = source.raw;
    let thread = source.thread;
    out.reserve(64 + raw.map_or(0, <[u8]>::len));
    let _ = write!(Wrap(out), "* {msn} FETCH (");
    let tree = if plan.needs_tree {
        raw.map(mime::parse)
    } else {
        None
    };
    let empty: &[u8] = b"";
    let raw = raw.unwrap_or(empty);
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b' ');
        }
        first = false;
    };
    let mut flags_done = false;
    for item in &plan.items {
        sep(out);
        match item {
            Item::Flags => {
                flags_done = true;
                out.extend_from_slice(b"FLAGS ");
                flags::write_flag_list(out, &entry.keywords);
            }
            Item::Uid => {
                let _ = write!(Wrap(out), "UID {}", entry.uid);
            }
            Item::ModSeq => {
                let _ = write!(Wrap(out), "MODSEQ ({})", entry.modseq.0);
            }
            Item::InternalDate => {
                let _ = write!(
                    Wrap(out),
                    "INTERNALDATE \"{}\"",
                    out::internal_date(entry.received_at)
                );
            }
            Item::Size => {
                let _ = write!(Wrap(out), "RFC822.SIZE {}", entry.size);
            }
            Item::Envelope => {
                out.extend_from_slice(b"ENVELOPE ");
                match (source.envelope, source.raw) {
                    (Some(known), _) => out.extend_from_slice(known),
                    (None, Some(raw)) => out.extend_from_slice(&envelope_of(raw)),
                    (None, None) => {
                        out.extend_from_slice(b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)")
                    }
                }
            }
            Item::Structure { extended } => {
                out.extend_from_slice(if *extended {
                    b"BODYSTRUCTURE "
                } else {
                    b"BODY "
                });
                match &tree {
                    Some(tree) => structure(out, raw, tree, *extended),
                    None => out.extend_from_slice(
                        b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)",
                    ),
                }
            }
            Item::Section { section, partial } => {
                out.extend_from_slice(b"BODY[");
                section_name(out, section.as_ref());
                out.push(b']');
                // The whole message needs no parsing (and no copy).
                let data: Option<std::borrow::Cow<'_, [u8]>> = match (section, source.raw) {
                    (None, Some(whole)) => Some(whole.into()),
                    _ => tree
                        .as_ref()
                        .and_then(|t| section_bytes(raw, t, section.as_ref()))
                        .map(Into::into),
                };
                match (data, partial) {
                    (Some(data), Some((origin, count))) => {
                        let _ = write!(Wrap(out), "<{origin}> ");
                        let start = (*origin as usize).min(data.len());
                        let end = start.saturating_add(*count as usize).min(data.len());
                        out::literal(out, &data[start..end]);
                    }
                    (Some(data), None) => {
                        out.push(b' ');
                        out::literal(out, &data);
                    }
                    (None, _) => out.extend_from_slice(b" NIL"),
                }
            }
            Item::EmailId => {
                let _ = write!(Wrap(out), "EMAILID ({})", objectid::email_id(entry.email.0));
            }
            Item::ThreadId => match thread {
                Some(t) => {
                    let _ = write!(Wrap(out), "THREADID ({})", objectid::thread_id(t.0));
                }
                // RFC 8474 section 5.2: NIL when there is no thread id.
                None => out.extend_from_slice(b"THREADID NIL"),
            },
            Item::Binary { section, partial } => {
                out.extend_from_slice(b"BINARY[");
                out.extend_from_slice(dotted(section).as_bytes());
                out.push(b']');
                let data = tree.as_ref().and_then(|t| binary_bytes(raw, t, section));
                match (data, partial) {
                    (Some(Ok(data)), Some((origin, count))) => {
                        let _ = write!(Wrap(out), "<{origin}> ");
                        let start = (*origin as usize).min(data.len());
                        let end = start.saturating_add(*count as usize).min(data.len());
                        literal8(out, &data[start..end]);
                    }
                    (Some(Ok(data)), None) => {
                        out.push(b' ');
                        literal8(out, &data);
                    }
                    // Unknown encodings are refused before rendering
                    // (`Plan::unknown_cte`); a missing part is NIL.
                    _ => out.extend_from_slice(b" NIL"),
                }
            }
            Item::BinarySize { section } => {
                out.extend_from_slice(b"BINARY.SIZE[");
                out.extend_from_slice(dotted(section).as_bytes());
                out.push(b']');
                let size = tree
                    .as_ref()
                    .and_then(|t| binary_bytes(raw, t, section))
                    .and_then(Result::ok)
                    .map_or(0, |d| d.len());
                let _ = write!(Wrap(out), " {size}");
            }
            Item::Rfc822 => {
                out.extend_from_slice(b"RFC822 ");
                out::literal(out, raw);
            }
            Item::Rfc822Header => {
                out.extend_from_slice(b"RFC822.HEADER ");
                let end = mime::header_end(raw, 0, raw.len());
                out::literal(out, &raw[..end]);
            }
            Item::Rfc822Text => {
                out.extend_from_slice(b"RFC822.TEXT ");
                let end = mime::header_end(raw, 0, raw.len());
                out::literal(out, &raw[end..]);
            }
        }
    }
    if with_flags && !flags_done {
        sep(out);
        out.extend_from_slice(b"FLAGS ");
        flags::write_flag_list(out, &entry.keywords);
    }
    out.extend_from_slice(b")\r\n");
}

/// `1.2.3`.
fn dotted(section: &[u32]) -> String {
    let numbers: Vec<String> = section.iter().map(u32::to_string).collect();
    numbers.join(".")
}

/// A literal, or a literal8 (`~{n}`) when the data holds NUL, which a
/// plain literal must not (RFC 3516 section 4.2).
fn literal8(out: &mut Vec<u8>, data: &[u8]) {
    if data.contains(&0) {
        out.push(b'~');
    }
    out::literal(out, data);
}

/// The decoded content a BINARY section names (RFC 3516 section 4.2):
/// `None` when the part does not exist, `Err` when its content transfer
/// encoding is unknown. An empty section is the whole message as stored;
/// multiparts and encapsulated messages are given as stored (their
/// encoding can only be an identity one).
fn binary_bytes(raw: &[u8], root: &Entity, section: &[u32]) -> Option<Result<Vec<u8>, ()>> {
    if section.is_empty() {
        return Some(Ok(raw.to_vec()));
    }
    let entity = root.part(section)?;
    let body = &raw[entity.body.clone()];
    if !matches!(entity.kind, Kind::Leaf) {
        return Some(Ok(body.to_vec()));
    }
    let fields = mime::fields(&raw[entity.header.clone()]);
    let encoding = mime::field(&fields, "Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    Some(match encoding.as_str() {
        "7bit" | "8bit" | "binary" | "" => Ok(body.to_vec()),
        "base64" => {
            // mail-parser's decoder skips line breaks and stops at bad
            // input; an empty body decodes to nothing.
            if body.iter().all(u8::is_ascii_whitespace) {
                Ok(Vec::new())
            } else {
                Ok(base64_decode(body).unwrap_or_default())
            }
        }
        "quoted-printable" => Ok(quoted_printable_decode(body).unwrap_or_default()),
        _ => Err(()),
    })
}

fn part_prefix(out: &mut Vec<u8>, part: Option<&Part>) {
    if let Some(part) = part {
        let numbers: Vec<String> = part.0.as_ref().iter().map(|n| n.to_string()).collect();
        out.extend_from_slice(numbers.join(".").as_bytes());
        out.push(b'.');
    }
}

/// The section spec echoed in the response, as the client wrote it.
fn section_name(out: &mut Vec<u8>, section: Option<&Section<'_>>) {
    let Some(section) = section else { return };
    match section {
        Section::Part(part) => {
            let numbers: Vec<String> = part.0.as_ref().iter().map(|n| n.to_string()).collect();
            out.extend_from_slice(numbers.join(".").as_bytes());
        }
        Section::Header(part) => {
            part_prefix(out, part.as_ref());
            out.extend_from_slice(b"HEADER");
        }
        Section::Text(part) => {
            part_prefix(out, part.as_ref());
            out.extend_from_slice(b"TEXT");
        }
        Section::Mime(part) => {
            part_prefix(out, Some(part));
            out.extend_from_slice(b"MIME");
        }
        Section::HeaderFields(part, names) | Section::HeaderFieldsNot(part, names) => {
            part_prefix(out, part.as_ref());
            out.extend_from_slice(if matches!(section, Section::HeaderFields(..)) {
                b"HEADER.FIELDS ("
            } else {
                b"HEADER.FIELDS.NOT ("
            });
            for (i, name) in names.as_ref().iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                out::astring(out, name.as_ref());
            }
            out.push(b')');
        }
    }
}

fn path(part: &Part) -> Vec<u32> {
    part.0.as_ref().iter().map(|n| n.get()).collect()
}

/// The bytes a section names; `None` for a part that does not exist.
fn section_bytes(raw: &[u8], root: &Entity, section: Option<&Section<'_>>) -> Option<Vec<u8>> {
    // The message whose header/text a section without part number (or
    // with a message/rfc822 part number) addresses.
    let message = |part: Option<&Part>| -> Option<&Entity> {
        match part {
            None => Some(root),
            Some(p) => root.part(&path(p))?.message(),
        }
    };
    Some(match section {
        None => raw.to_vec(),
        Some(Section::Part(part)) => raw[root.part(&path(part))?.body.clone()].to_vec(),
        Some(Section::Header(part)) => raw[message(part.as_ref())?.header.clone()].to_vec(),
        Some(Section::Text(part)) => raw[message(part.as_ref())?.body.clone()].to_vec(),
        Some(Section::Mime(part)) => raw[root.part(&path(part))?.header.clone()].to_vec(),
        Some(Section::HeaderFields(part, names)) | Some(Section::HeaderFieldsNot(part, names)) => {
            let keep = matches!(section, Some(Section::HeaderFields(..)));
            let block = &raw[message(part.as_ref())?.header.clone()];
            let wanted: Vec<&[u8]> = names.as_ref().iter().map(|n| n.as_ref()).collect();
            let mut data = Vec::new();
            for (name, _, range) in mime::fields(block) {
                let listed = wanted
                    .iter()
                    .any(|w| w.eq_ignore_ascii_case(name.as_bytes()));
                if listed == keep {
                    data.extend_from_slice(&block[range]);
                }
            }
            // RFC 9051 section 6.4.5: the blank line is included.
            data.extend_from_slice(b"\r\n");
            data
        }
    })
}

/// RFC 2047 encoded word for text that is not plain ASCII.
fn encode_word(text: &str) -> String {
    use base64::Engine as _;
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        text.to_string()
    } else {
        format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
        )
    }
}

fn nstring_text(out: &mut Vec<u8>, value: Option<&str>) {
    out::nstring(out, value.map(str::as_bytes));
}

fn address_list(out: &mut Vec<u8>, address: Option<&Address<'_>>) {
    let Some(address) = address else {
        out.extend_from_slice(b"NIL");
        return;
    };
    let one = |out: &mut Vec<u8>, name: Option<&str>, addr: Option<&str>| {
        out.push(b'(');
        nstring_text(out, name.map(encode_word).as_deref());
        out.extend_from_slice(b" NIL ");
        let (mailbox, host) = match addr.and_then(|a| a.rsplit_once('@')) {
            Some((m, h)) => (Some(m), Some(h)),
            None => (addr, None),
        };
        nstring_text(out, mailbox.map(encode_word).as_deref());
        out.push(b' ');
        nstring_text(out, host);
        out.push(b')');
    };
    let mut any = false;
    let mut body = Vec::new();
    match address {
        Address::List(list) => {
            for a in list {
                any = true;
                one(&mut body, a.name.as_deref(), a.address.as_deref());
            }
        }
        Address::Group(groups) => {
            for g in groups {
                any = true;
                if let Some(name) = g.name.as_deref() {
                    // RFC 9051 section 7.5.2: group start and end markers.
                    body.extend_from_slice(b"(NIL NIL ");
                    out::nstring(&mut body, Some(encode_word(name).as_bytes()));
                    body.extend_from_slice(b" NIL)");
                    for a in &g.addresses {
                        one(&mut body, a.name.as_deref(), a.address.as_deref());
                    }
                    body.extend_from_slice(b"(NIL NIL NIL NIL)");
                } else {
                    for a in &g.addresses {
                        one(&mut body, a.name.as_deref(), a.address.as_deref());
                    }
                }
            }
        }
    }
    if any {
        out.push(b'(');
        out.extend_from_slice(&body);
        out.push(b')');
    } else {
        out.extend_from_slice(b"NIL");
    }
}

/// ENVELOPE of the message whose entity is `entity` (RFC 9051 section
/// 7.5.2): date, subject, from, sender, reply-to, to, cc, bcc, in-reply-to,
/// message-id. Strings are the header values as sent; addresses are
/// parsed, with non-ASCII names re-encoded as RFC 2047 words.
fn envelope(out: &mut Vec<u8>, block: &[u8]) {
    let fields = mime::fields(block);
    let parsed = MessageParser::default().parse_headers(block);
    let from = parsed.as_ref().and_then(|m| m.from());
    let sender = parsed.as_ref().and_then(|m| m.sender()).or(from);
    let reply_to = parsed.as_ref().and_then(|m| m.reply_to()).or(from);
    out.push(b'(');
    nstring_text(out, mime::field(&fields, "Date"));
    out.push(b' ');
    nstring_text(out, mime::field(&fields, "Subject"));
    for address in [
        from,
        sender,
        reply_to,
        parsed.as_ref().and_then(|m| m.to()),
        parsed.as_ref().and_then(|m| m.cc()),
        parsed.as_ref().and_then(|m| m.bcc()),
    ] {
        out.push(b' ');
        address_list(out, address);
    }
    out.push(b' ');
    nstring_text(out, mime::field(&fields, "In-Reply-To"));
    out.push(b' ');
    nstring_text(out, mime::field(&fields, "Message-ID"));
    out.push(b')');
}

fn params(out: &mut Vec<u8>, params: &[(String, String)]) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out::string(out, name.as_bytes());
        out.push(b' ');
        out::string(out, value.as_bytes());
    }
    out.push(b')');
}

/// `("inline" ("filename" "a.txt"))` or NIL.
fn disposition(out: &mut Vec<u8>, fields: &[(String, String, std::ops::Range<usize>)]) {
    let Some(value) = mime::field(fields, "Content-Disposition") else {
        out.extend_from_slice(b"NIL");
        return;
    };
    let mut pieces = value.split(';');
    let kind = pieces
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let list: Vec<(String, String)> = pieces
        .filter_map(|p| p.split_once('='))
        .map(|(n, v)| {
            (
                n.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            )
        })
        .collect();
    out.push(b'(');
    out::string(out, kind.as_bytes());
    out.push(b' ');
    params(out, &list);
    out.push(b')');
}

fn count_lines(body: &[u8]) -> usize {
    body.iter().filter(|&&b| b == b'\n').count()
}

/// BODY / BODYSTRUCTURE (RFC 9051 section 7.5.2 `body`).
fn structure(out: &mut Vec<u8>, raw: &[u8], entity: &Entity, extended: bool) {
    let fields = mime::fields(&raw[entity.header.clone()]);
    out.push(b'(');
    match &entity.kind {
        Kind::Multipart(children) => {
            for child in children {
                structure(out, raw, child, extended);
            }
            out.push(b' ');
            out::string(out, entity.media.1.as_bytes());
            if extended {
                out.push(b' ');
                params(out, &entity.params);
                out.push(b' ');
                disposition(out, &fields);
                out.push(b' ');
                nstring_text(out, mime::field(&fields, "Content-Language"));
                out.push(b' ');
                nstring_text(out, mime::field(&fields, "Content-Location"));
            }
        }
        kind => {
            out::string(out, entity.media.0.as_bytes());
            out.push(b' ');
            out::string(out, entity.media.1.as_bytes());
            out.push(b' ');
            params(out, &entity.params);
            out.push(b' ');
            nstring_text(out, mime::field(&fields, "Content-ID"));
            out.push(b' ');
            nstring_text(out, mime::field(&fields, "Content-Description"));
            out.push(b' ');
            let encoding = mime::field(&fields, "Content-Transfer-Encoding")
                .map_or_else(|| "7bit".to_string(), |e| e.to_ascii_lowercase());
            out::string(out, encoding.as_bytes());
            let body = &raw[entity.body.clone()];
            let _ = write!(Wrap(out), " {}", body.len());
            if let Kind::Message(inner) = kind {
                out.push(b' ');
                envelope(out, &raw[inner.header.clone()]);
                out.push(b' ');
                structure(out, raw, inner, extended);
                let _ = write!(Wrap(out), " {}", count_lines(body));
            } else if entity.media.0 == "text" {
                let _ = write!(Wrap(out), " {}", count_lines(body));
            }
            if extended {
                out.push(b' ');
                nstring_text(out, mime::field(&fields, "Content-MD5"));
                out.push(b' ');
                disposition(out, &fields);
                out.push(b' ');
                nstring_text(out, mime::field(&fields, "Content-Language"));
                out.push(b' ');
                nstring_text(out, mime::field(&fields, "Content-Location"));
            }
        }
    }
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_core::{BlobId, EmailId, ModSeq};
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;

    const MSG: &[u8] = b"Date: Tue, 1 Jul 2025 10:00:00 +0000\r\nFrom: =?utf-8?q?Ren=C3=A9?= <rene@example.com>\r\nTo: bob@example.com, Team: a@x.org, b@x.org;\r\nSubject: Hello \"world\"\r\nMessage-ID: <m1@example.com>\r\n\r\nBody line\r\n";

    fn entry() -> Entry {
        Entry {
            uid: 7,
            email: EmailId(1),
            modseq: ModSeq(1),
            keywords: vec!["$seen".to_string()].into(),
            size: MSG.len() as u64,
            received_at: 1_751_364_000_000,
            blob: BlobId([0; 32]),
        }
    }

    /// The plan of `a FETCH 1 {items}`.
    fn plan_of(items: &str, uid: bool) -> Plan {
        let line = format!("a FETCH 1 {items}\r\n");
        let (_, cmd) = CommandCodec::default()
            .decode(line.as_bytes())
            .expect("parses");
        let CommandBody::Fetch {
            macro_or_item_names,
            ..
        } = cmd.body
        else {
            panic!("not a fetch")
        };
        plan(&macro_or_item_names, uid).expect("plan")
    }

    /// The FETCH response for message 1 rendered from `raw`.
    fn rendered_from(plan: &Plan, raw: &[u8]) -> String {
        let source = Source {
            raw: Some(raw),
            ..Default::default()
        };
        String::from_utf8_lossy(&render(1, &entry(), plan, false, &source)).into_owned()
    }

    fn fetch(items: &str, uid: bool) -> String {
        rendered_from(&plan_of(items, uid), MSG)
    }

    #[test]
    fn simple_items() {
        assert_eq!(
            fetch("(FLAGS UID RFC822.SIZE INTERNALDATE)", false),
            format!(
                "* 1 FETCH (FLAGS (\\Seen) UID 7 RFC822.SIZE {} INTERNALDATE \"01-Jul-2025 10:00:00 +0000\")\r\n",
                MSG.len()
            )
        );
        assert!(fetch("FLAGS", true).starts_with("* 1 FETCH (UID 7 FLAGS"));
    }

    #[test]
    fn envelope_fields() {
        let got = fetch("ENVELOPE", false);
        assert_eq!(
            got,
            "* 1 FETCH (ENVELOPE (\"Tue, 1 Jul 2025 10:00:00 +0000\" \"Hello \\\"world\\\"\" \
((\"=?utf-8?b?UmVuw6k=?=\" NIL \"rene\" \"example.com\")) \
((\"=?utf-8?b?UmVuw6k=?=\" NIL \"rene\" \"example.com\")) \
((\"=?utf-8?b?UmVuw6k=?=\" NIL \"rene\" \"example.com\")) \
((NIL NIL \"bob\" \"example.com\")(NIL NIL \"Team\" NIL)(NIL NIL \"a\" \"x.org\")(NIL NIL \"b\" \"x.org\")(NIL NIL NIL NIL)) \
NIL NIL NIL \"<m1@example.com>\"))\r\n"
        );
    }

    #[test]
    fn a_known_envelope_reads_like_a_parsed_one() {
        let plan = plan_of("(ENVELOPE FLAGS)", false);
        assert!(plan.envelope_suffices());
        assert!(!plan_of("(ENVELOPE BODY.PEEK[])", false).envelope_suffices());
        let known = envelope_of(MSG);
        let parsed = rendered_from(&plan, MSG).into_bytes();
        let cached = render(
            1,
            &entry(),
            &plan,
            false,
            &Source {
                envelope: Some(&known),
                ..Default::default()
            },
        );
        assert_eq!(parsed, cached);
    }

    #[test]
    fn sections() {
        let got = fetch(
            "(BODY.PEEK[HEADER.FIELDS (Subject FROM)] BODY[TEXT] BODY[]<0.4>)",
            false,
        );
        assert!(
            got.contains("BODY[HEADER.FIELDS (Subject FROM)] {"),
            "{got}"
        );
        assert!(got.contains(
            "From: =?utf-8?q?Ren=C3=A9?= <rene@example.com>\r\nSubject: Hello \"world\"\r\n\r\n"
        ));
        assert!(got.contains("BODY[TEXT] {11}\r\nBody line\r\n"));
        assert!(got.contains("BODY[]<0> {4}\r\nDate"));
        let got = fetch("BODY[5]", false);
        assert!(got.contains("BODY[5] NIL"), "{got}");
        let got = fetch("BODYSTRUCTURE", false);
        assert_eq!(
            got,
            "* 1 FETCH (BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 11 1 NIL NIL NIL NIL))\r\n"
        );
    }

    #[test]
    fn nested_structure() {
        let line = b"a FETCH 1 (BODYSTRUCTURE BODY[2.2] BODY[2.HEADER.FIELDS (SUBJECT)])\r\n";
        let (_, cmd) = CommandCodec::default().decode(line).expect("parses");
        let CommandBody::Fetch {
            macro_or_item_names,
            ..
        } = cmd.body
        else {
            panic!("not a fetch")
        };
        let plan = plan(&macro_or_item_names, false).expect("plan");
        let raw = crate::mime::tests_support::NESTED;
        let got = rendered_from(&plan, raw);
        assert!(got.contains("\"mixed\" (\"boundary\" \"XX\")"), "{got}");
        assert!(got.contains("\"alternative\""), "{got}");
        assert!(got.contains("BODY[2.2] {9}\r\n<p>hi</p>"), "{got}");
        assert!(
            got.contains("BODY[2.HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: inner\r\n\r\n"),
            "{got}"
        );
    }

    #[test]
    fn modseq_item() {
        // RFC 7162 section 3.1.4.1.
        assert_eq!(
            fetch("(FLAGS MODSEQ)", false),
            "* 1 FETCH (FLAGS (\\Seen) MODSEQ (1))\r\n"
        );
        assert_eq!(
            fetch("(MODSEQ MODSEQ)", true),
            "* 1 FETCH (UID 7 MODSEQ (1))\r\n"
        );
        let (_, cmd) = CommandCodec::default()
            .decode(b"a FETCH 1 (FLAGS)\r\n")
            .expect("parses");
        let CommandBody::Fetch {
            macro_or_item_names,
            ..
        } = cmd.body
        else {
            panic!("not a fetch")
        };
        let mut p = plan(&macro_or_item_names, false).expect("plan");
        assert!(p.asks_flags() && !p.asks_modseq());
        p.add_modseq();
        p.add_modseq();
        assert!(!p.needs_body);
        assert_eq!(
            String::from_utf8(render(1, &entry(), &p, false, &Source::default())).expect("utf-8"),
            "* 1 FETCH (FLAGS (\\Seen) MODSEQ (1))\r\n"
        );
    }

    fn fetch_raw(items: &str, raw: &[u8]) -> (String, Plan) {
        let plan = plan_of(items, false);
        (rendered_from(&plan, raw), plan)
    }

    const ENCODED: &[u8] = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Transfer-Encoding: base64\r\n\r\nAAFoaQ==\r\n--B\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\ncaf=C3=A9 =\r\nsoft\r\n--B\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n--B--\r\n";

    #[test]
    fn binary_decodes_parts() {
        // RFC 3516 section 4.2: decoded content, literal8 when it holds NUL.
        let (got, p) = fetch_raw("(BINARY.PEEK[1] BINARY.SIZE[1] BINARY[2])", ENCODED);
        assert!(got.contains("BINARY[1] ~{4}\r\n\x00\x01hi"), "{got:?}");
        assert!(got.contains("BINARY.SIZE[1] 4"), "{got:?}");
        assert!(got.contains("BINARY[2] {10}\r\ncafé soft"), "{got:?}");
        assert!(p.sets_seen && p.needs_body && !p.unknown_cte(ENCODED));
        let (got, p) = fetch_raw("(BINARY.PEEK[2]<1.3> BINARY.PEEK[9])", ENCODED);
        assert!(got.contains("BINARY[2]<1> {3}\r\naf"), "{got:?}");
        assert!(got.contains("BINARY[9] NIL"), "{got:?}");
        assert!(!p.sets_seen);
        // RFC 3516 section 4.3: an unknown encoding fails the command.
        let (_, p) = fetch_raw("(BINARY.PEEK[3])", ENCODED);
        assert!(p.unknown_cte(ENCODED));
        let (_, p) = fetch_raw("(BINARY.SIZE[3])", ENCODED);
        assert!(p.unknown_cte(ENCODED));
        let (got, _) = fetch_raw("(BINARY.PEEK[])", MSG);
        assert!(
            got.contains(&format!("BINARY[] {{{}}}", MSG.len())),
            "{got}"
        );
    }

    #[test]
    fn object_id_items() {
        let (_, cmd) = CommandCodec::default()
            .decode(b"a FETCH 1 (UID)\r\n")
            .expect("parses");
        let CommandBody::Fetch {
            macro_or_item_names,
            ..
        } = cmd.body
        else {
            panic!("not a fetch")
        };
        let extras = Extras {
            email_id: true,
            thread_id: true,
            placeholder: true,
            ..Extras::default()
        };
        let mut p = plan(&macro_or_item_names, false).expect("plan");
        p.add_object_ids(extras, false);
        assert!(p.asks_thread() && !p.needs_body);
        let got = String::from_utf8(render(
            1,
            &entry(),
            &p,
            false,
            &Source {
                thread: Some(ThreadId(9)),
                ..Default::default()
            },
        ))
        .expect("utf-8");
        // RFC 8474 section 5: the placeholder UID is gone.
        assert_eq!(got, "* 1 FETCH (EMAILID (E1) THREADID (T9))\r\n");
        let got =
            String::from_utf8(render(1, &entry(), &p, false, &Source::default())).expect("utf-8");
        assert_eq!(got, "* 1 FETCH (EMAILID (E1) THREADID NIL)\r\n");
        let mut p = plan(&macro_or_item_names, true).expect("plan");
        p.add_object_ids(extras, true);
        let got =
            String::from_utf8(render(1, &entry(), &p, false, &Source::default())).expect("utf-8");
        assert_eq!(got, "* 1 FETCH (UID 7 EMAILID (E1) THREADID NIL)\r\n");
    }
}
