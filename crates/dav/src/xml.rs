//! The XML of WebDAV requests and answers.
//!
//! Requests are read into a small namespace-resolved tree with hard limits:
//! a DOCTYPE (the home of entity definitions, hence of "billion laughs" and
//! external entities) is refused, only the predefined entities and
//! character references are understood, and depth, element count and text
//! size are bounded. Answers are written with fixed prefixes and escaped
//! text; nothing from a request is echoed unescaped.

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

/// `DAV:`.
pub const DAV: &str = "DAV:";
/// CalDAV (RFC 4791).
pub const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";
/// CardDAV (RFC 6352).
pub const CARDDAV: &str = "urn:ietf:params:xml:ns:carddav";
/// Calendar Server extensions (getctag).
pub const CALSERVER: &str = "http://calendarserver.org/ns/";
/// Apple iCal extensions (calendar-color).
pub const APPLE: &str = "http://apple.com/ns/ical/";

const MAX_DEPTH: usize = 32;
const MAX_ELEMENTS: usize = 20_000;
const MAX_TEXT: usize = 64 * 1024;

/// Why a document was refused; the client gets a 400 naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError(pub &'static str);

/// An element with its namespace resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Namespace URI ("" when none).
    pub ns: String,
    /// Local name.
    pub name: String,
    /// Attributes by local name.
    pub attrs: Vec<(String, String)>,
    /// Child elements in order.
    pub children: Vec<Element>,
    /// Text directly inside.
    pub text: String,
}

impl Element {
    /// Whether this is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// The first child `{ns}name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// Every child `{ns}name`.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// An attribute by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn predefined(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => return None,
    })
}

fn namespace(result: ResolveResult<'_>) -> Result<String, XmlError> {
    match result {
        ResolveResult::Bound(ns) => Ok(String::from_utf8_lossy(ns.as_ref()).into_owned()),
        ResolveResult::Unbound => Ok(String::new()),
        ResolveResult::Unknown(_) => Err(XmlError("undeclared namespace prefix")),
    }
}

/// Parses a request body into its root element.
pub fn parse(body: &[u8]) -> Result<Element, XmlError> {
    let text = std::str::from_utf8(body).map_err(|_| XmlError("not UTF-8"))?;
    let mut reader = NsReader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let event = reader.read_event().map_err(|_| XmlError("malformed XML"))?;
        match event {
            Event::DocType(_) => return Err(XmlError("DOCTYPE is not accepted")),
            Event::PI(_) => return Err(XmlError("processing instructions are not accepted")),
            Event::Start(ref e) | Event::Empty(ref e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError("too many elements"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError("too deeply nested"));
                }
                if root.is_some() {
                    return Err(XmlError("content after the root element"));
                }
                let (ns, local) = reader.resolve_element(e.name());
                let mut element = Element {
                    ns: namespace(ns)?,
                    name: String::from_utf8_lossy(local.as_ref()).into_owned(),
                    ..Element::default()
                };
                for attr in e.attributes() {
                    let attr = attr.map_err(|_| XmlError("malformed attribute"))?;
                    let key = attr.key.local_name();
                    if attr.key.as_ref().starts_with(b"xmlns") {
                        continue;
                    }
                    let value = attr
                        .unescape_value()
                        .map_err(|_| XmlError("bad attribute value"))?;
                    if value.len() > MAX_TEXT {
                        return Err(XmlError("attribute too long"));
                    }
                    element.attrs.push((
                        String::from_utf8_lossy(key.as_ref()).into_owned(),
                        value.into_owned(),
                    ));
                }
                if matches!(event, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => root = Some(element),
                    }
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let done = stack.pop().ok_or(XmlError("unbalanced end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => {
                let piece = t.decode().map_err(|_| XmlError("bad text"))?;
                push_text(&mut stack, &piece)?;
            }
            Event::CData(t) => {
                let piece = String::from_utf8_lossy(&t.into_inner()).into_owned();
                push_text(&mut stack, &piece)?;
            }
            Event::GeneralRef(r) => {
                let c = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c,
                        _ => return Err(XmlError("bad character reference")),
                    }
                } else {
                    let name = r.decode().map_err(|_| XmlError("bad entity"))?;
                    predefined(&name).ok_or(XmlError("unknown entity"))?
                };
                push_text(&mut stack, c.encode_utf8(&mut [0u8; 4]))?;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError("unclosed elements"));
    }
    root.ok_or(XmlError("empty document"))
}

fn push_text(stack: &mut [Element], piece: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(e) => {
            if e.text.len() + piece.len() > MAX_TEXT {
                return Err(XmlError("text too long"));
            }
            e.text.push_str(piece);
            Ok(())
        }
        // Whitespace around the root is fine; anything else is not.
        None if piece.trim().is_empty() => Ok(()),
        None => Err(XmlError("text outside the root element")),
    }
}

/// Escapes text for element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    escape_into(text, &mut out);
    out
}

/// Appends `text` escaped to `out`. The characters replaced are all
/// ASCII, so the text is copied in runs between them.
pub fn escape_into(text: &str, out: &mut String) {
    let mut run = 0;
    for (i, b) in text.bytes().enumerate() {
        let replacement = match b {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'&' => "&amp;",
            b'"' => "&quot;",
            b'\'' => "&apos;",
            // Characters XML 1.0 cannot carry are dropped.
            b if b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r') => "",
            _ => continue,
        };
        out.push_str(&text[run..i]);
        out.push_str(replacement);
        run = i + 1;
    }
    out.push_str(&text[run..]);
}

/// Appends `text` as CDATA (a `]]>` inside is split across two sections).
/// For object data, which the server checked holds no characters XML
/// cannot carry: copying it whole is much cheaper than escaping it.
pub fn cdata_into(text: &str, out: &mut String) {
    out.push_str("<![CDATA[");
    let mut rest = text;
    while let Some(i) = rest.find("]]>") {
        out.push_str(&rest[..i + 2]);
        out.push_str("]]><![CDATA[");
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out.push_str("]]>");
}

/// Whether `text` has a character XML 1.0 cannot carry.
pub fn has_forbidden_chars(text: &str) -> bool {
    text.bytes()
        .any(|b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
        || text.contains(['\u{fffe}', '\u{ffff}'])
}

/// The prefix our answers use for a namespace, if it is one we declare.
pub fn prefix(ns: &str) -> Option<&'static str> {
    Some(match ns {
        DAV => "D",
        CALDAV => "C",
        CARDDAV => "CR",
        CALSERVER => "CS",
        APPLE => "A",
        _ => return None,
    })
}

/// The XML declaration and root start tag with every prefix declared.
pub fn root_start(local: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:{local} xmlns:D=\"DAV:\" xmlns:C=\"{CALDAV}\" \
         xmlns:CR=\"{CARDDAV}\" xmlns:CS=\"{CALSERVER}\" xmlns:A=\"{APPLE}\">"
    )
}

/// A property element name, written with our prefix or its own namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PropName {
    /// Namespace URI.
    pub ns: String,
    /// Local name.
    pub name: String,
}

impl PropName {
    /// `{ns}name`.
    pub fn new(ns: &str, name: &str) -> PropName {
        PropName {
            ns: ns.into(),
            name: name.into(),
        }
    }

    /// Whether this is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// Appends the start tag.
    pub fn push_open(&self, out: &mut String) {
        match prefix(&self.ns) {
            Some(p) => {
                out.push('<');
                out.push_str(p);
                out.push(':');
                escape_into(&self.name, out);
                out.push('>');
            }
            None => {
                out.push_str("<X:");
                escape_into(&self.name, out);
                out.push_str(" xmlns:X=\"");
                escape_into(&self.ns, out);
                out.push_str("\">");
            }
        }
    }

    /// Appends the end tag.
    pub fn push_close(&self, out: &mut String) {
        out.push_str("</");
        out.push_str(prefix(&self.ns).unwrap_or("X"));
        out.push(':');
        escape_into(&self.name, out);
        out.push('>');
    }

    /// `<p:name>inner</p:name>` (or empty when `inner` is empty).
    pub fn element(&self, inner: &str) -> String {
        let name = escape(&self.name);
        match prefix(&self.ns) {
            Some(p) if inner.is_empty() => format!("<{p}:{name}/>"),
            Some(p) => format!("<{p}:{name}>{inner}</{p}:{name}>"),
            None if inner.is_empty() => format!("<X:{name} xmlns:X=\"{}\"/>", escape(&self.ns)),
            None => format!(
                "<X:{name} xmlns:X=\"{}\">{inner}</X:{name}>",
                escape(&self.ns)
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_resolve() {
        let doc = br#"<?xml version="1.0"?>
<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:prop><d:displayname/><c:calendar-home-set/><x:y xmlns:x="urn:x"/></d:prop>
</d:propfind>"#;
        let root = parse(doc).unwrap();
        assert!(root.is(DAV, "propfind"));
        let prop = root.child(DAV, "prop").unwrap();
        let names: Vec<(&str, &str)> = prop
            .children
            .iter()
            .map(|c| (c.ns.as_str(), c.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (DAV, "displayname"),
                (CALDAV, "calendar-home-set"),
                ("urn:x", "y")
            ]
        );
    }

    #[test]
    fn hostile_documents_are_refused() {
        let laughs = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>
<D:propfind xmlns:D="DAV:"><D:prop>&lol2;</D:prop></D:propfind>"#;
        assert_eq!(parse(laughs), Err(XmlError("DOCTYPE is not accepted")));
        let xxe = br#"<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><D:a xmlns:D="DAV:">&xxe;</D:a>"#;
        assert!(parse(xxe).is_err());
        assert_eq!(
            parse(br#"<D:a xmlns:D="DAV:">&xxe;</D:a>"#),
            Err(XmlError("unknown entity"))
        );
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert_eq!(parse(deep.as_bytes()), Err(XmlError("too deeply nested")));
        let wide = format!("<a>{}</a>", "<b/>".repeat(MAX_ELEMENTS + 1));
        assert_eq!(parse(wide.as_bytes()), Err(XmlError("too many elements")));
        assert!(parse(b"<a><b></a>").is_err());
        assert!(parse(b"<p:a/>").is_err());
        assert!(parse(b"<a/><b/>").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"\xff").is_err());
    }

    #[test]
    fn cdata_sections() {
        let mut out = String::new();
        cdata_into("a]]>b<&", &mut out);
        assert_eq!(out, "<![CDATA[a]]]]><![CDATA[>b<&]]>");
        let doc = format!("<D:x xmlns:D=\"DAV:\">{out}</D:x>");
        assert_eq!(
            parse(doc.as_bytes()).map(|e| e.text),
            Ok("a]]>b<&".to_string())
        );
        assert!(has_forbidden_chars("a\u{1}b") && !has_forbidden_chars("a\r\n\tb"));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(escape("é<ü\r\n"), "é&lt;ü\r\n");
        assert_eq!(
            PropName::new("urn:x", "y").element(""),
            "<X:y xmlns:X=\"urn:x\"/>"
        );
        assert_eq!(
            PropName::new(DAV, "getetag").element("\"1\""),
            "<D:getetag>\"1\"</D:getetag>"
        );
    }
}
