//! Reading the small XML documents clients send, safely: a DOCTYPE
//! (where entity definitions live, and with them "billion laughs" and
//! external entities) is refused outright, only the five predefined
//! entities and character references are understood, and depth and text
//! size are bounded.

use quick_xml::Reader;
use quick_xml::events::Event;

/// Deepest element nesting accepted.
const MAX_DEPTH: usize = 32;
/// Longest text collected for one element.
const MAX_TEXT: usize = 1024;

/// Why a document was refused; shown to the client as a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError(pub &'static str);

/// What an Autodiscover request asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutodiscoverRequest {
    pub email: Option<String>,
    pub schema: Option<String>,
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

/// Parses `<Autodiscover><Request><EMailAddress>…` (element names matched
/// by local name, whatever the namespace prefix).
pub fn autodiscover_request(body: &[u8]) -> Result<AutodiscoverRequest, XmlError> {
    let text = std::str::from_utf8(body).map_err(|_| XmlError("not UTF-8"))?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut path: Vec<String> = Vec::new();
    let mut out = AutodiscoverRequest::default();
    let mut current = String::new();
    loop {
        match reader.read_event() {
            Err(_) => return Err(XmlError("malformed XML")),
            Ok(Event::DocType(_)) => return Err(XmlError("DOCTYPE is not accepted")),
            Ok(Event::PI(_)) => return Err(XmlError("processing instructions are not accepted")),
            Ok(Event::Start(e)) => {
                if path.len() >= MAX_DEPTH {
                    return Err(XmlError("too deeply nested"));
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                path.push(name);
                current.clear();
            }
            Ok(Event::Empty(_)) => current.clear(),
            Ok(Event::Text(t)) => {
                let piece = t.decode().map_err(|_| XmlError("bad text"))?;
                current.push_str(&piece);
            }
            Ok(Event::CData(t)) => {
                current.push_str(&String::from_utf8_lossy(&t.into_inner()));
            }
            Ok(Event::GeneralRef(r)) => {
                if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => current.push(c),
                        _ => return Err(XmlError("bad character reference")),
                    }
                } else {
                    let name = r.decode().map_err(|_| XmlError("bad entity"))?;
                    current.push(predefined(&name).ok_or(XmlError("unknown entity"))?);
                }
            }
            Ok(Event::End(_)) => {
                if current.len() > MAX_TEXT {
                    return Err(XmlError("text too long"));
                }
                let within = |names: &[&str]| {
                    path.len() == names.len()
                        && path
                            .iter()
                            .zip(names)
                            .all(|(a, b)| a.eq_ignore_ascii_case(b))
                };
                let value = current.trim().to_string();
                if within(&["Autodiscover", "Request", "EMailAddress"]) {
                    out.email = Some(value);
                } else if within(&["Autodiscover", "Request", "AcceptableResponseSchema"]) {
                    out.schema = Some(value);
                }
                path.pop();
                current.clear();
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
        }
        if current.len() > MAX_TEXT {
            return Err(XmlError("text too long"));
        }
    }
    if !path.is_empty() {
        return Err(XmlError("unclosed elements"));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn outlook_requests_parse() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>alice&#64;example.com</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>"#;
        let r = autodiscover_request(body).unwrap();
        assert_eq!(r.email.as_deref(), Some("alice@example.com"));
        assert!(r.schema.unwrap().ends_with("responseschema/2006a"));
    }

    #[test]
    fn hostile_documents_are_refused() {
        let laughs = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<Autodiscover><Request><EMailAddress>&lol2;</EMailAddress></Request></Autodiscover>"#;
        assert_eq!(
            autodiscover_request(laughs),
            Err(XmlError("DOCTYPE is not accepted"))
        );
        let external = br#"<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><Autodiscover><Request><EMailAddress>&xxe;</EMailAddress></Request></Autodiscover>"#;
        assert!(autodiscover_request(external).is_err());
        let undefined =
            b"<Autodiscover><Request><EMailAddress>&xxe;</EMailAddress></Request></Autodiscover>";
        assert_eq!(
            autodiscover_request(undefined),
            Err(XmlError("unknown entity"))
        );
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert_eq!(
            autodiscover_request(deep.as_bytes()),
            Err(XmlError("too deeply nested"))
        );
        let long = format!(
            "<Autodiscover><Request><EMailAddress>{}</EMailAddress></Request></Autodiscover>",
            "x".repeat(5000)
        );
        assert_eq!(
            autodiscover_request(long.as_bytes()),
            Err(XmlError("text too long"))
        );
        assert!(autodiscover_request(b"<Autodiscover><Request>").is_err());
        assert!(autodiscover_request(b"\xff\xfe").is_err());
    }
}
