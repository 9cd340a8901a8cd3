//! DKIM keys and signing (RFC 6376).
//!
//! Every domain gets an RSA-2048 key when it is added: RSA because it is
//! what every receiver verifies (Ed25519, RFC 8463, is not yet checked by
//! the large providers, so a message signed only with it counts as
//! unsigned there). Keys live in the store so a backup holds them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bulwark_store::DkimKey;
use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};

/// RSA modulus size: RFC 8301 requires at least 1024 and recommends 2048;
/// 2048 still fits one DNS TXT string set.
const RSA_BITS: usize = 2048;

/// The headers covered by our signatures (RFC 6376 section 5.4.1's
/// recommendations). `From` is listed twice so no second `From` can be
/// added after signing without breaking the signature.
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
    "References",
];

/// Why a key could not be made or used.
#[derive(Debug)]
pub struct DkimError(pub String);

impl std::fmt::Display for DkimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DkimError {}

/// A fresh RSA-2048 signing key under `selector`.
pub fn generate_key(selector: &str) -> Result<DkimKey, DkimError> {
    let mut rng = rand_core::OsRng;
    let private = rsa::RsaPrivateKey::new(&mut rng, RSA_BITS)
        .map_err(|e| DkimError(format!("RSA key generation failed: {e}")))?;
    let pkcs8 = private
        .to_pkcs8_der()
        .map_err(|e| DkimError(format!("cannot encode the DKIM key: {e}")))?;
    let public = private
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| DkimError(format!("cannot encode the DKIM public key: {e}")))?;
    Ok(DkimKey {
        selector: selector.to_string(),
        algorithm: "rsa-sha256".into(),
        private_key: pkcs8.as_bytes().to_vec(),
        public_key: STANDARD.encode(public.as_bytes()),
        created_at: 0,
    })
}

/// A selector naming the month it was made (`bulwark-202611`), so a
/// rotated key gets a new DNS name and the old record can stay published
/// while mail signed with it is in flight.
pub fn default_selector(now_ms: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(now_ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("bulwark-{:04}{:02}", date.year(), u8::from(date.month()))
}

/// The TXT record to publish at `SELECTOR._domainkey.DOMAIN`.
pub fn dns_record(key: &DkimKey) -> String {
    let k = if key.algorithm.starts_with("ed25519") {
        "ed25519"
    } else {
        "rsa"
    };
    format!("v=DKIM1; k={k}; p={}", key.public_key)
}

/// The `DKIM-Signature` header field (with its CRLF) for `message`,
/// signed by `domain` with `key`, to be put in front of the message.
pub fn sign(message: &[u8], domain: &str, key: &DkimKey) -> Result<String, DkimError> {
    if key.algorithm != "rsa-sha256" {
        return Err(DkimError(format!(
            "signing with {} is not supported",
            key.algorithm
        )));
    }
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.private_key.as_slice());
    let rsa = RsaKey::<Sha256>::from_key_der(der.into())
        .map_err(|e| DkimError(format!("the DKIM key of {domain} is unusable: {e}")))?;
    let signature = DkimSigner::from_key(rsa)
        .domain(domain)
        .selector(&key.selector)
        .headers(SIGNED_HEADERS.iter().copied())
        .sign(message)
        .map_err(|e| DkimError(format!("DKIM signing failed: {e}")))?;
    Ok(signature.to_header())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_publish() {
        let key = generate_key("bulwark-202611").unwrap();
        assert_eq!(key.algorithm, "rsa-sha256");
        let record = dns_record(&key);
        assert!(record.starts_with("v=DKIM1; k=rsa; p=MII"), "{record}");
        let message = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n";
        let header = sign(message, "example.com", &key).unwrap();
        assert!(header.starts_with("DKIM-Signature: "), "{header}");
        assert!(header.contains("d=example.com"));
        assert!(header.contains("s=bulwark-202611"));
        assert!(header.ends_with("\r\n"));
        let other = generate_key("x").unwrap();
        assert_ne!(other.private_key, key.private_key);
    }

    #[test]
    fn selectors_name_the_month() {
        // 2026-11-25T00:00:00Z
        assert_eq!(default_selector(1_795_564_800_000), "bulwark-202611");
    }

    #[test]
    fn broken_keys_are_refused() {
        let mut key = generate_key("s").unwrap();
        key.private_key.truncate(10);
        assert!(sign(b"From: a@b.c\r\n\r\n", "b.c", &key).is_err());
        key.algorithm = "ed25519-sha256".into();
        assert!(sign(b"From: a@b.c\r\n\r\n", "b.c", &key).is_err());
    }
}
