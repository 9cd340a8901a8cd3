//! The global address list: a read-only address book in every user's
//! address book home, generated from the directory each time it is read
//! so it is always in step with it. It lists the people, groups, shared
//! mailboxes, rooms and equipment of the owner's domain.
//!
//! Its cards are not stored; their ETags and the collection's tag are
//! digests of the generated text, so clients see exactly what changed.

use bulwark_core::{ModSeq, PrincipalKind};
use bulwark_store::{
    Backend, DavCollection, DavCollectionId, DavCollectionProps, DavKind, DavObject, DavObjectMeta,
    Principal, Result,
};

/// The GAL's collection name; users cannot make one of their own.
pub const GAL_COLLECTION: &str = "directory";

/// Whether `collection` is a generated GAL rather than a stored one.
pub fn is_gal(collection: &DavCollection) -> bool {
    collection.kind == DavKind::AddressBook && collection.id.0 <= 0
}

/// A 63-bit FNV-1a digest: stable across runs, enough to tell versions apart.
fn digest(parts: &[&str]) -> ModSeq {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    ModSeq(h >> 1)
}

/// vCard 3.0 text escaping.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn card(p: &Principal, aliases: &[String]) -> String {
    let kind = match p.kind {
        PrincipalKind::Individual => "individual",
        PrincipalKind::Group => "group",
        PrincipalKind::Shared => "shared-mailbox",
        PrincipalKind::Room => "room",
        PrincipalKind::Equipment => "equipment",
    };
    let name = if p.display_name.is_empty() {
        p.address.to_string()
    } else {
        p.display_name.clone()
    };
    let mut out = format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nPRODID:-//Bulwark//Directory//EN\r\nUID:urn:bulwark:principal:{}\r\n\
         FN:{}\r\nN:{};;;;\r\nEMAIL;TYPE=INTERNET,PREF:{}\r\n",
        p.id.0,
        esc(&name),
        esc(&name),
        esc(&p.address.to_string()),
    );
    for alias in aliases {
        out.push_str(&format!("EMAIL;TYPE=INTERNET:{}\r\n", esc(alias)));
    }
    out.push_str(&format!("X-BULWARK-KIND:{kind}\r\n"));
    if p.kind == PrincipalKind::Group {
        out.push_str("X-ADDRESSBOOKSERVER-KIND:group\r\n");
    }
    out.push_str("END:VCARD\r\n");
    out
}

/// The cards of `owner`'s domain, by name.
pub fn cards(b: &dyn Backend, owner: &Principal) -> Result<Vec<DavObject>> {
    let mut out = Vec::new();
    for p in b.principals(Some(owner.domain), None)? {
        let aliases: Vec<String> = b
            .addresses(p.id)?
            .into_iter()
            .map(|a| a.to_string())
            .filter(|a| *a != p.address.to_string())
            .collect();
        let data = card(&p, &aliases);
        let name = format!("{}.vcf", p.id.0);
        out.push(DavObject {
            meta: DavObjectMeta {
                uid: format!("urn:bulwark:principal:{}", p.id.0),
                component: "VCARD".into(),
                modseq: digest(&[&data]),
                size: data.len() as u64,
                deleted: false,
                name,
            },
            data,
            open_ended: false,
        });
    }
    out.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
    Ok(out)
}

/// The GAL collection of `owner`, tagged from its current `cards`.
pub fn collection(owner: &Principal, cards: &[DavObject]) -> DavCollection {
    let tags: Vec<String> = cards
        .iter()
        .map(|c| format!("{}={}", c.meta.name, c.meta.modseq.0))
        .collect();
    let parts: Vec<&str> = tags.iter().map(String::as_str).collect();
    DavCollection {
        id: DavCollectionId(-owner.id.0),
        account: owner.id,
        kind: DavKind::AddressBook,
        name: GAL_COLLECTION.into(),
        props: DavCollectionProps {
            display_name: "Directory".into(),
            description: "Everyone in the organisation (read-only)".into(),
            color: None,
        },
        components: String::new(),
        modseq: digest(&parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_digests() {
        assert_eq!(esc("a,b;c\\d\ne\u{7}"), "a\\,b\\;c\\\\d\\ne");
        assert_eq!(digest(&["x"]), digest(&["x"]));
        assert_ne!(digest(&["x", "y"]), digest(&["xy"]));
        assert!(digest(&["anything"]).0 < 1 << 63);
    }
}
