//! Who may send as whom on submission (RFC 6409 section 6.1: the MSA
//! checks the submitter's right to the addresses it uses).
//!
//! The envelope sender and every `From:` address must be one of the
//! authenticated principal's own addresses, or an address of a principal
//! that granted it `send-as` or `send-on-behalf`. Sending on behalf needs a
//! `Sender:` field naming the user (RFC 5322 section 3.6.2: the agent
//! responsible for the transmission), so recipients see who really sent it.
//! Pure functions over data loaded at AUTH time: no storage here.

use bulwark_core::{EmailAddress, PrincipalId, Right};
use mail_parser::{Address, HeaderName, HeaderValue, MessageParser};

/// A right to use another principal's address, as loaded at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// Whose address it is (the principal that granted the right).
    pub grantor: PrincipalId,
    /// The address.
    pub address: EmailAddress,
    /// [`Right::SendAs`] or [`Right::SendOnBehalf`].
    pub right: Right,
}

/// The authenticated user of a submission session and the addresses it
/// may send from. Built by the driver when AUTH succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The login: the principal's primary address.
    pub login: String,
    /// The principal.
    pub principal: PrincipalId,
    /// How it authenticated (`password`, `app-password`), for the audit log.
    pub auth_method: String,
    /// Its own addresses, primary and aliases.
    pub addresses: Vec<EmailAddress>,
    /// Addresses of principals that granted it send-as or send-on-behalf.
    pub delegations: Vec<Delegation>,
}

impl Identity {
    fn owns(&self, address: &EmailAddress) -> bool {
        self.addresses.contains(address)
    }

    fn delegation(&self, address: &EmailAddress, right: Right) -> Option<&Delegation> {
        self.delegations
            .iter()
            .find(|d| d.right == right && &d.address == address)
    }

    /// Whether the user may use `address` as envelope sender; `Some` with
    /// the delegation used when it is not one of its own.
    pub(crate) fn envelope_sender(&self, address: &EmailAddress) -> Option<Option<Delegation>> {
        if self.owns(address) {
            return Some(None);
        }
        self.delegation(address, Right::SendAs)
            .or_else(|| self.delegation(address, Right::SendOnBehalf))
            .map(|d| Some(d.clone()))
    }
}

/// Why the header check refused a message: the reply code, enhanced code
/// and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: u16,
    pub(crate) status: [u8; 3],
    pub(crate) text: String,
}

fn refuse(code: u16, status: [u8; 3], text: impl Into<String>) -> Refusal {
    Refusal {
        code,
        status,
        text: text.into(),
    }
}

/// What the header block of a submitted message says and lacks.
#[derive(Debug, Default)]
pub(crate) struct HeaderFacts {
    /// Delegations the `From:`/`Sender:` fields use (to be audited).
    pub(crate) delegations: Vec<Delegation>,
    pub(crate) has_date: bool,
    pub(crate) has_message_id: bool,
}

/// Addresses of an address header, groups flattened. Unparsable entries
/// come back as their raw text so they are refused, not skipped.
fn addresses(value: &HeaderValue<'_>) -> Vec<String> {
    let list: Vec<Option<String>> = match value {
        HeaderValue::Address(Address::List(list)) => list
            .iter()
            .map(|a| a.address.as_ref().map(|s| s.to_string()))
            .collect(),
        HeaderValue::Address(Address::Group(groups)) => groups
            .iter()
            .flat_map(|g| g.addresses.iter())
            .map(|a| a.address.as_ref().map(|s| s.to_string()))
            .collect(),
        _ => Vec::new(),
    };
    list.into_iter().map(|a| a.unwrap_or_default()).collect()
}

fn shown(address: &str) -> String {
    address
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}

/// Checks `From:` and `Sender:` of a submitted message (its header block)
/// against what `identity` may use.
pub(crate) fn check_headers(identity: &Identity, header: &[u8]) -> Result<HeaderFacts, Refusal> {
    let no_from = || {
        refuse(
            550,
            [5, 6, 0],
            "the message has no From: header field (RFC 5322 section 3.6)",
        )
    };
    let Some(message) = MessageParser::default().parse_headers(header) else {
        return Err(no_from());
    };
    let count = |name: HeaderName<'_>| message.headers().iter().filter(|h| h.name == name).count();
    let from_fields = count(HeaderName::From);
    if from_fields == 0 {
        return Err(no_from());
    }
    if from_fields > 1 || count(HeaderName::Sender) > 1 {
        return Err(refuse(
            550,
            [5, 6, 0],
            "the message has more than one From: or Sender: field (RFC 5322 section 3.6)",
        ));
    }
    let mut facts = HeaderFacts {
        has_date: count(HeaderName::Date) > 0,
        has_message_id: count(HeaderName::MessageId) > 0,
        ..HeaderFacts::default()
    };

    let from = message
        .header(HeaderName::From)
        .map(addresses)
        .unwrap_or_default();
    if from.is_empty() {
        return Err(refuse(550, [5, 6, 0], "the From: field holds no address"));
    }
    let sender = match message.header(HeaderName::Sender) {
        None => None,
        Some(value) => {
            let list = addresses(value);
            let [one] = list.as_slice() else {
                return Err(refuse(
                    550,
                    [5, 6, 0],
                    "the Sender: field must hold exactly one address",
                ));
            };
            let parsed = one.parse::<EmailAddress>().ok();
            match parsed {
                Some(address) if identity.owns(&address) => Some(address),
                Some(address) => match identity.delegation(&address, Right::SendAs) {
                    Some(d) => {
                        facts.delegations.push(d.clone());
                        Some(address)
                    }
                    None => {
                        return Err(refuse(
                            550,
                            [5, 7, 1],
                            format!(
                                "Sender: <{}> is not one of your addresses",
                                shown(address.as_str())
                            ),
                        ));
                    }
                },
                None => {
                    return Err(refuse(
                        550,
                        [5, 7, 1],
                        format!("Sender: <{}> is not one of your addresses", shown(one)),
                    ));
                }
            }
        }
    };
    if from.len() > 1 && sender.is_none() {
        return Err(refuse(
            550,
            [5, 6, 0],
            "a From: field with several addresses needs a Sender: field (RFC 5322 section 3.6.2)",
        ));
    }
    let sender_is_user = sender.as_ref().is_some_and(|s| identity.owns(s));

    for text in &from {
        let Ok(address) = text.parse::<EmailAddress>() else {
            return Err(refuse(
                550,
                [5, 7, 1],
                format!("From: <{}> is not one of your addresses", shown(text)),
            ));
        };
        if identity.owns(&address) {
            continue;
        }
        if let Some(d) = identity.delegation(&address, Right::SendAs) {
            facts.delegations.push(d.clone());
            continue;
        }
        if let Some(d) = identity.delegation(&address, Right::SendOnBehalf) {
            if !sender_is_user {
                return Err(refuse(
                    550,
                    [5, 7, 1],
                    format!(
                        "sending on behalf of <{}> needs a Sender: field with your own address",
                        address
                    ),
                ));
            }
            facts.delegations.push(d.clone());
            continue;
        }
        return Err(refuse(
            550,
            [5, 7, 1],
            format!(
                "From: <{}> is not one of your addresses and you hold no send-as or send-on-behalf right for it",
                shown(address.as_str())
            ),
        ));
    }
    facts
        .delegations
        .dedup_by(|a, b| a.grantor == b.grantor && a.right == b.right);
    Ok(facts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr(s: &str) -> EmailAddress {
        s.parse().unwrap()
    }

    fn alice() -> Identity {
        Identity {
            login: "alice@example.com".into(),
            principal: PrincipalId(1),
            auth_method: "password".into(),
            addresses: vec![addr("alice@example.com"), addr("a@example.com")],
            delegations: vec![
                Delegation {
                    grantor: PrincipalId(3),
                    address: addr("shared@example.com"),
                    right: Right::SendAs,
                },
                Delegation {
                    grantor: PrincipalId(4),
                    address: addr("boss@example.com"),
                    right: Right::SendOnBehalf,
                },
            ],
        }
    }

    fn check(header: &str) -> Result<HeaderFacts, Refusal> {
        check_headers(&alice(), header.as_bytes())
    }

    #[test]
    fn own_addresses_pass() {
        let facts = check(
            "From: Alice <alice@example.com>\r\nDate: Tue, 1 Jul 2025 10:00:00 +0000\r\n\r\n",
        )
        .unwrap();
        assert!(facts.delegations.is_empty());
        assert!(facts.has_date);
        assert!(!facts.has_message_id);
        let facts = check("FROM: A@Example.COM\r\nMessage-ID: <x@y>\r\n\r\n").unwrap();
        assert!(facts.has_message_id);
    }

    #[test]
    fn spoofing_is_refused() {
        for header in [
            "From: mallory@example.com\r\n\r\n",
            "From: \"alice@example.com\" <ceo@example.com>\r\n\r\n",
            "From: alice@example.com\r\nFrom: ceo@example.com\r\n\r\n",
            "From: alice@example.com, ceo@example.com\r\nSender: alice@example.com\r\n\r\n",
            "From: alice@example.com\r\nSender: ceo@example.com\r\n\r\n",
            "From: undisclosed:;\r\n\r\n",
            "Subject: no from\r\n\r\n",
            "From: boss@example.com\r\n\r\n",
            "From: boss@example.com\r\nSender: boss@example.com\r\n\r\n",
        ] {
            let refused = check(header).err();
            assert!(refused.is_some(), "accepted: {header:?}");
            let code = refused.map(|r| r.code);
            assert_eq!(code, Some(550), "{header:?}");
        }
    }

    #[test]
    fn delegations_are_reported() {
        let facts = check("From: Shared <shared@example.com>\r\n\r\n").unwrap();
        assert_eq!(facts.delegations.len(), 1);
        assert_eq!(facts.delegations[0].right, Right::SendAs);
        assert_eq!(facts.delegations[0].grantor, PrincipalId(3));

        let facts =
            check("From: boss@example.com\r\nSender: Alice <alice@example.com>\r\n\r\n").unwrap();
        assert_eq!(facts.delegations.len(), 1);
        assert_eq!(facts.delegations[0].right, Right::SendOnBehalf);
    }

    #[test]
    fn envelope() {
        let a = alice();
        assert_eq!(a.envelope_sender(&addr("a@example.com")), Some(None));
        assert!(matches!(
            a.envelope_sender(&addr("shared@example.com")),
            Some(Some(Delegation {
                right: Right::SendAs,
                ..
            }))
        ));
        assert!(matches!(
            a.envelope_sender(&addr("boss@example.com")),
            Some(Some(Delegation {
                right: Right::SendOnBehalf,
                ..
            }))
        ));
        assert_eq!(a.envelope_sender(&addr("ceo@example.com")), None);
    }
}
