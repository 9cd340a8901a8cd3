//! `EmailAddress` and `DomainName` parsing over arbitrary UTF-8: never
//! panics; what is accepted is lower-case and round-trips through its
//! textual form.
#![no_main]

use bulwark_core::{DomainName, EmailAddress};
use libfuzzer_sys::fuzz_target;

fn is_lower(s: &str) -> bool {
    s == s.to_lowercase()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(domain) = text.parse::<DomainName>() {
        let shown = domain.to_string();
        assert_eq!(shown, domain.as_str());
        assert!(is_lower(&shown), "domain {shown:?} not lower-case");
        let again: DomainName = shown.parse().expect("a shown domain parses again");
        assert_eq!(again, domain, "domain does not round-trip");
    }

    if let Ok(address) = text.parse::<EmailAddress>() {
        let shown = address.to_string();
        assert_eq!(shown, address.as_str());
        assert!(is_lower(&shown), "address {shown:?} not lower-case");
        assert_eq!(
            format!("{}@{}", address.local_part(), address.domain()),
            shown,
            "local part and domain do not make up the address"
        );
        let again: EmailAddress = shown.parse().expect("a shown address parses again");
        assert_eq!(again, address, "address does not round-trip");
        // Building from the parts gives the same address.
        let rebuilt = EmailAddress::new(address.local_part(), &address.domain())
            .expect("parts of a valid address build one");
        assert_eq!(rebuilt, address);
    }
});
