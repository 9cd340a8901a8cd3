//! QUOTA (RFC 9208) responses. Sans-I/O.
//!
//! Each account has one storage quota, set by administrators (`bulwark
//! user quota`), so there is one quota root, named "", for every mailbox
//! of the account. An account without a quota (0 bytes) has no quota root
//! at all (RFC 9208 section 4.3.2: QUOTAROOT then lists no roots).

use crate::out;

/// Usage and limit in the units of the STORAGE resource, 1024 octets
/// (RFC 9208 section 5.1). Usage rounds up so a nearly full account never
/// looks emptier than it is; the limit rounds down.
pub(crate) fn storage_kib(used_bytes: u64, limit_bytes: u64) -> (u64, u64) {
    (used_bytes.div_ceil(1024), limit_bytes / 1024)
}

/// `* QUOTA "" (STORAGE used limit)` (RFC 9208 section 7.1).
pub(crate) fn quota(used_bytes: u64, limit_bytes: u64) -> Vec<u8> {
    let (used, limit) = storage_kib(used_bytes, limit_bytes);
    format!("* QUOTA \"\" (STORAGE {used} {limit})\r\n").into_bytes()
}

/// `* QUOTAROOT mailbox [""]` and, with a quota, its QUOTA line (RFC 9208
/// sections 4.3.2 and 7.2). `mailbox` is the name as the client sees it.
pub(crate) fn quota_root(mailbox: &str, quota_bytes: u64, used_bytes: u64) -> Vec<u8> {
    let mut data = b"* QUOTAROOT ".to_vec();
    out::astring(&mut data, mailbox.as_bytes());
    if quota_bytes == 0 {
        data.extend_from_slice(b"\r\n");
        return data;
    }
    data.extend_from_slice(b" \"\"\r\n");
    data.extend_from_slice(&quota(used_bytes, quota_bytes));
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_units() {
        assert_eq!(storage_kib(0, 0), (0, 0));
        assert_eq!(storage_kib(1, 1023), (1, 0));
        assert_eq!(storage_kib(1024, 1024 * 1024), (1, 1024));
        assert_eq!(storage_kib(1025, 10_000), (2, 9));
    }

    #[test]
    fn responses() {
        // RFC 9208 section 4.3.2's example shape.
        assert_eq!(
            String::from_utf8(quota_root("INBOX", 512 * 1024, 10 * 1024 + 1)).expect("utf-8"),
            "* QUOTAROOT INBOX \"\"\r\n* QUOTA \"\" (STORAGE 11 512)\r\n"
        );
        assert_eq!(
            String::from_utf8(quota_root("My Box", 0, 99)).expect("utf-8"),
            "* QUOTAROOT \"My Box\"\r\n"
        );
        assert_eq!(
            String::from_utf8(quota(2048, 4096)).expect("utf-8"),
            "* QUOTA \"\" (STORAGE 2 4)\r\n"
        );
    }
}
