//! Validated domain names and mail addresses.
//!
//! Both are stored lower-cased so lookups never depend on the case a client
//! typed. Only ASCII is accepted for now (RFC 5321 syntax); internationalised
//! addresses (RFC 6531) will widen `EmailAddress` without changing callers.

use std::fmt;
use std::str::FromStr;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not valid: {}", self.input, self.reason)
    }
}

impl std::error::Error for AddressError {}

fn refuse(input: &str, reason: &'static str) -> AddressError {
    // Echo at most a bounded prefix: hostile input may be huge.
    let input: String = input.chars().take(80).collect();
    AddressError { input, reason }
}

/// A DNS domain name: dot-separated labels of letters, digits and hyphens
/// (RFC 1035 section 2.3.1, relaxed by RFC 1123 to allow a leading digit).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainName(String);

impl DomainName {
    /// The lower-case textual form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DomainName {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let name = input.strip_suffix('.').unwrap_or(input);
        if name.is_empty() {
            return Err(refuse(input, "empty domain"));
        }
        if name.len() > 253 {
            return Err(refuse(input, "longer than 253 characters"));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(refuse(input, "empty label"));
            }
            if label.len() > 63 {
                return Err(refuse(input, "label longer than 63 characters"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(refuse(input, "label starts or ends with '-'"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(refuse(
                    input,
                    "only letters, digits, '-' and '.' are allowed",
                ));
            }
        }
        Ok(DomainName(name.to_ascii_lowercase()))
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mail address `local@domain` with a dot-atom local part
/// (RFC 5321 section 4.1.2), at most 64 characters before the `@`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EmailAddress {
    text: String,
    at: usize,
}

impl EmailAddress {
    /// Builds an address from an already validated domain.
    pub fn new(local: &str, domain: &DomainName) -> Result<Self, AddressError> {
        format!("{local}@{domain}").parse()
    }

    /// The full lower-case address.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The part before `@`.
    pub fn local_part(&self) -> &str {
        &self.text[..self.at]
    }

    /// The part after `@`.
    pub fn domain(&self) -> DomainName {
        DomainName(self.text[self.at + 1..].to_string())
    }
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

impl FromStr for EmailAddress {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.len() > 254 {
            return Err(refuse(input, "longer than 254 characters"));
        }
        let (local, domain) = input
            .rsplit_once('@')
            .ok_or_else(|| refuse(input, "no '@'"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(refuse(input, "local part must have 1 to 64 characters"));
        }
        if local
            .split('.')
            .any(|atom| atom.is_empty() || !atom.bytes().all(is_atext))
        {
            return Err(refuse(input, "local part is not a dot-atom"));
        }
        let domain: DomainName = domain.parse().map_err(|_| refuse(input, "bad domain"))?;
        let local = local.to_ascii_lowercase();
        let at = local.len();
        Ok(EmailAddress {
            text: format!("{local}@{domain}"),
            at,
        })
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_lowercased_and_checked() {
        assert_eq!(
            "Example.COM.".parse::<DomainName>().map(|d| d.0),
            Ok("example.com".into())
        );
        for bad in [
            "",
            ".",
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(bad.parse::<DomainName>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn addresses_are_dot_atoms() {
        let a: EmailAddress = "Alice.Smith+tag@Example.com".parse().expect("valid");
        assert_eq!(a.as_str(), "alice.smith+tag@example.com");
        assert_eq!(a.local_part(), "alice.smith+tag");
        assert_eq!(a.domain().as_str(), "example.com");
        for bad in [
            "alice",
            "@example.com",
            "a..b@example.com",
            ".a@example.com",
            "a b@x.com",
            "a@",
            "\"q\"@x.com",
        ] {
            assert!(bad.parse::<EmailAddress>().is_err(), "{bad:?} accepted");
        }
        assert!(
            format!("{}@x.com", "a".repeat(65))
                .parse::<EmailAddress>()
                .is_err()
        );
    }
}
