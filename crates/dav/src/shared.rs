//! Collections shared through grants, shown in the grantee's own home.
//!
//! A calendar `work` of `bob@example.com` granted to alice appears in
//! alice's calendar home as `shared~bob@example.com~work`. The name is
//! only a way to reach it: every request through it checks bob's grant to
//! alice again, and acts on bob's collection with alice as the actor (so
//! the store audits it as a delegate's access).

/// Prefix of shared-collection names in a home.
const PREFIX: &str = "shared~";

/// The alias under which `owner`'s collection `name` appears.
pub fn alias(owner: &str, name: &str) -> String {
    format!("{PREFIX}{owner}~{name}")
}

/// The owner and collection name an alias stands for.
pub fn parse_alias(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(PREFIX)?;
    // The domain has no `~`, so the first one after the `@` ends the address.
    let at = rest.find('@')?;
    let cut = at + rest[at..].find('~')?;
    let (owner, name) = (&rest[..cut], &rest[cut + 1..]);
    (!owner.is_empty() && !name.is_empty()).then_some((owner, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_round_trip() {
        let a = alias("bo~b@example.com", "work~x");
        assert_eq!(parse_alias(&a), Some(("bo~b@example.com", "work~x")));
        assert_eq!(parse_alias("work"), None);
        assert_eq!(parse_alias("shared~bob@example.com~"), None);
        assert_eq!(parse_alias("shared~bob@example.com"), None);
        assert_eq!(parse_alias("shared~nobody~x"), None);
    }
}
