//! TLS for the client: the two rustls configurations (verified, and the
//! opportunistic one that accepts any certificate) and the root store
//! helper.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A configuration that checks the certificate chain against `roots` and
/// the name the caller gives at connect time.
pub(crate) fn verified_config(roots: &Arc<RootCertStore>) -> Result<ClientConfig, rustls::Error> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(Arc::clone(roots))
        .with_no_client_auth())
}

/// A configuration for opportunistic STARTTLS (RFC 3207 section 4.1, RFC
/// 7435): any certificate is accepted, since without MTA-STS or DANE there
/// is no name an MX certificate could be checked against, and encryption
/// without authentication still beats plaintext against passive eavesdroppers.
pub(crate) fn opportunistic_config() -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    let verifier = AcceptAnyCertificate {
        algorithms: provider.signature_verification_algorithms,
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Accepts any certificate chain, but still checks the handshake
/// signatures against the certificate's key: the peer must hold the
/// private key of the certificate it sends, so the handshake stays sound
/// even though nobody vouches for who that peer is.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The Mozilla roots shipped in `webpki-roots`.
pub(crate) fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// Why [`root_store`] could not use the extra certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootStoreError(String);

impl fmt::Display for RootStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RootStoreError {}

/// The roots for the verified TLS modes: the Mozilla roots shipped in
/// `webpki-roots`, plus every `CERTIFICATE` block of `extra_pem` (a
/// private CA, a smarthost's self-signed certificate, a test CA).
///
/// Extra PEM that holds no certificate, or a certificate that cannot be a
/// trust anchor, is an error rather than silently ignored: a missing root
/// would only show later, as every delivery to that host failing.
pub fn root_store(extra_pem: Option<&[u8]>) -> Result<RootCertStore, RootStoreError> {
    let mut roots = webpki_roots();
    if let Some(pem) = extra_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert =
                cert.map_err(|e| RootStoreError(format!("cannot read PEM certificates: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| RootStoreError(format!("unusable CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(RootStoreError(
                "no CERTIFICATE block in the extra PEM".into(),
            ));
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn root_store_adds_pem_certificates() {
        let base = root_store(None).unwrap().len();
        assert!(base > 100, "webpki-roots missing");

        let one = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let two = rcgen::generate_simple_self_signed(vec!["b.test".into()]).unwrap();
        let pem = format!(
            "comment lines are skipped\n{}{}",
            one.cert.pem(),
            two.cert.pem()
        );
        assert_eq!(root_store(Some(pem.as_bytes())).unwrap().len(), base + 2);
    }

    #[test]
    fn root_store_refuses_useless_pem() {
        assert!(root_store(Some(b"")).is_err());
        assert!(root_store(Some(b"not pem at all")).is_err());
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert!(root_store(Some(key.as_bytes())).is_err());
        assert!(
            root_store(Some(
                b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"
            ))
            .is_err()
        );
    }
}
