//! Reading the Autodiscover requests clients send, with the safe XML
//! reader DAV uses (`bulwark_dav::xml`): a DOCTYPE (where entity
//! definitions live, and with them "billion laughs" and external entities)
//! is refused outright, only the five predefined entities and character
//! references are understood, and depth and size are bounded.

/// Longest text accepted in an Autodiscover field.
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

/// Parses `<Autodiscover><Request><EMailAddress>…` (element names matched
/// by local name, whatever the namespace).
pub fn autodiscover_request(body: &[u8]) -> Result<AutodiscoverRequest, XmlError> {
    let root = bulwark_dav::xml::parse(body).map_err(|e| XmlError(e.0))?;
    let named = |e: &bulwark_dav::xml::Element, name: &str| {
        e.children
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .cloned()
    };
    let mut out = AutodiscoverRequest::default();
    if !root.name.eq_ignore_ascii_case("Autodiscover") {
        return Ok(out);
    }
    let Some(request) = named(&root, "Request") else {
        return Ok(out);
    };
    let field = |name: &str| -> Result<Option<String>, XmlError> {
        match named(&request, name) {
            Some(e) if e.text.len() > MAX_TEXT => Err(XmlError("text too long")),
            Some(e) => Ok(Some(e.text.trim().to_string())),
            None => Ok(None),
        }
    };
    out.email = field("EMailAddress")?;
    out.schema = field("AcceptableResponseSchema")?;
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
        let sneaky = br#"<a:Autodiscover xmlns:a="urn:x"><a:Request><a:EMailAddress>bob@example.com</a:EMailAddress></a:Request></a:Autodiscover>"#;
        assert_eq!(
            autodiscover_request(sneaky).unwrap().email.as_deref(),
            Some("bob@example.com")
        );
        assert!(autodiscover_request(b"\xff\xfe").is_err());
    }
}
