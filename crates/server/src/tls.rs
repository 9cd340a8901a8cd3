//! Loading the server certificate and building the rustls configuration.
//!
//! One certificate chain and key serve every TLS listener. The crypto
//! provider is always `ring`, chosen explicitly so that no other provider
//! linked into the binary can change what we offer.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use tokio_rustls::TlsAcceptor;

/// A certificate or key that could not be loaded. Every variant names the
/// file at fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not valid PEM.
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key (PKCS#8, PKCS#1 or SEC1).
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the pair, for example because the key does not match
    /// the certificate or uses an unsupported algorithm.
    Rejected {
        /// The certificate file.
        certificate: PathBuf,
        /// The key file.
        private_key: PathBuf,
        /// Why.
        source: rustls::Error,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TlsError::Pem { path, source } => {
                write!(f, "{}: invalid PEM: {source}", path.display())
            }
            TlsError::NoCertificate { path } => {
                write!(
                    f,
                    "{}: no certificate (expected a PEM CERTIFICATE block)",
                    path.display()
                )
            }
            TlsError::NoPrivateKey { path } => write!(
                f,
                "{}: no private key (expected a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)",
                path.display()
            ),
            TlsError::Rejected {
                certificate,
                private_key,
                source,
            } => write!(
                f,
                "certificate {} with key {} rejected: {source}",
                certificate.display(),
                private_key.display()
            ),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } | TlsError::Pem { source, .. } => Some(source),
            TlsError::Rejected { source, .. } => Some(source),
            TlsError::NoCertificate { .. } | TlsError::NoPrivateKey { .. } => None,
        }
    }
}

/// Reads a PEM certificate chain and a PEM private key and builds the server
/// configuration shared by every TLS listener: TLS 1.2 and 1.3 with rustls'
/// safe defaults, the `ring` provider, no client certificates, no ALPN.
pub fn load_server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certificates(cert_pem)?;
    let key = read_private_key(key_pem)?;
    let rejected = |source| TlsError::Rejected {
        certificate: cert_pem.to_path_buf(),
        private_key: key_pem.to_path_buf(),
        source,
    };
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(rejected)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(rejected)?;
    Ok(Arc::new(config))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_named() {
        let err = load_server_config(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }

    #[test]
    fn empty_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "").expect("write");
        std::fs::write(&key, "").expect("write");
        let err = load_server_config(&cert, &key)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("cert.pem") && err.contains("no certificate"),
            "{err}"
        );
    }
}
