//! Loading certificates, keys and CA bundles from PEM files, and reading what a
//! certificate says about itself (names, validity, subject).
//!
//! Every failure is a [`TlsFileError`] that names the file and says how to fix it: the
//! config checker turns it into a diagnostic pointing at the option that named the file,
//! and a reload logs it and keeps the previous certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

/// A certificate file, key file or CA bundle that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM block of the expected kind.
    #[error("`{path}` contains no {what}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// What was looked for ("PEM certificate", "PEM private key").
        what: &'static str,
    },
    /// A PEM block could not be decoded.
    #[error("`{path}` is not valid PEM: {detail}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// The decoder's complaint.
        detail: String,
    },
    /// A certificate could not be parsed as X.509.
    #[error("`{path}`: certificate {index} is not a valid X.509 certificate: {detail}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// 1-based position in the file.
        index: usize,
        /// The parser's complaint.
        detail: String,
    },
    /// The key is of a kind rustls cannot sign with.
    #[error("`{path}`: unsupported private key: {detail}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// rustls' complaint.
        detail: String,
    },
    /// The key does not belong to the certificate.
    #[error("the private key in `{key}` does not match the certificate in `{cert}`")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

impl TlsFileError {
    /// A hint for the person fixing the configuration.
    pub fn help(&self) -> &'static str {
        match self {
            Self::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "no file exists there; relative paths are resolved from the config file's directory"
            }
            Self::Read { .. } => "check that the file exists and that this user may read it",
            Self::Missing { what: "PEM private key", .. } => {
                "the key file must hold a \"-----BEGIN PRIVATE KEY-----\" (PKCS#8), \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block"
            }
            Self::Missing { .. } => {
                "the file must hold \"-----BEGIN CERTIFICATE-----\" blocks: the server's certificate first, then its intermediates"
            }
            Self::BadPem { .. } | Self::BadCertificate { .. } => {
                "the file looks damaged; re-export it in PEM format (e.g. `openssl x509 -in cert.der -inform der -out cert.pem`)"
            }
            Self::BadKey { .. } => "supported keys are RSA (2048 bits or more), ECDSA P-256/P-384 and Ed25519",
            Self::KeyMismatch { .. } => {
                "the certificate and the key were not issued together; compare `openssl x509 -noout -pubkey -in CERT` with `openssl pkey -pubout -in KEY`"
            }
        }
    }
}

/// What a certificate says about itself.
#[derive(Debug, Clone)]
pub struct CertificateInfo {
    /// The subject, e.g. `CN=example.com, O=Example`.
    pub subject: String,
    /// DNS names: subjectAltName entries, or the common name when there are none.
    pub dns_names: Vec<String>,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertificateInfo {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                    dns_names.push(n.to_ascii_lowercase());
                }
            }
        }
        if dns_names.is_empty() {
            for cn in cert.subject().iter_common_name() {
                if let Ok(cn) = cn.as_str() {
                    dns_names.push(cn.to_ascii_lowercase());
                }
            }
        }
        Ok(Self {
            subject: cert.subject().to_string(),
            dns_names,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Whether the certificate is past its end of validity now.
    pub fn is_expired(&self) -> bool {
        unix_now() > self.not_after
    }

    /// Whether the certificate is not valid yet.
    pub fn is_not_yet_valid(&self) -> bool {
        unix_now() < self.not_before
    }

    /// The end of validity as an RFC 3339 date-time (UTC), for messages.
    pub fn not_after_text(&self) -> String {
        crate::time::rfc3339(self.not_after)
    }

    /// Whether the certificate is valid for the host name `name` (lower case), following
    /// RFC 6125: a `*.` wildcard stands for exactly one left-most label.
    pub fn covers(&self, name: &str) -> bool {
        self.dns_names.iter().any(|n| dns_name_matches(n, name))
    }

    /// Whether the certificate covers at least one name below `suffix` (`.example.com`,
    /// as the site pattern `*.example.com` is stored): it holds the wildcard itself or a
    /// name under it.
    pub fn covers_some_name_under(&self, suffix: &str) -> bool {
        self.dns_names
            .iter()
            .any(|n| n.strip_prefix('*') == Some(suffix) || (n.len() > suffix.len() && n.ends_with(suffix)))
    }
}

fn dns_name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(rest) => name.split_once('.').is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
        None => pattern == name,
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A certificate chain with its private key, ready for rustls, and what the leaf says.
#[derive(Debug, Clone)]
pub struct LoadedCertificate {
    /// The chain and signing key.
    pub key: Arc<CertifiedKey>,
    /// The leaf certificate's names and validity.
    pub info: CertificateInfo,
}

/// Loads a PEM certificate chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or
/// SEC1; RSA, ECDSA or Ed25519), and checks that they belong together.
pub fn load_certificate(cert_path: &Path, key_path: &Path) -> Result<LoadedCertificate, TlsFileError> {
    let chain = read_certificates(cert_path)?;
    let info = CertificateInfo::parse(&chain[0]).map_err(|detail| TlsFileError::BadCertificate {
        path: cert_path.to_owned(),
        index: 1,
        detail,
    })?;
    let key_pem = read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            TlsFileError::Missing { path: key_path.to_owned(), what: "PEM private key" }
        }
        other => TlsFileError::BadPem { path: key_path.to_owned(), detail: other.to_string() },
    })?;
    let certified = CertifiedKey::from_der(chain, key, &super::provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            TlsFileError::KeyMismatch { cert: cert_path.to_owned(), key: key_path.to_owned() }
        }
        other => TlsFileError::BadKey { path: key_path.to_owned(), detail: other.to_string() },
    })?;
    Ok(LoadedCertificate { key: Arc::new(certified), info })
}

/// Reads every certificate of a PEM file (at least one), checking each parses as X.509.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read(path)?;
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(&pem) {
        let der = item.map_err(|e| TlsFileError::BadPem { path: path.to_owned(), detail: e.to_string() })?;
        if let Err(e) = x509_parser::parse_x509_certificate(&der) {
            return Err(TlsFileError::BadCertificate {
                path: path.to_owned(),
                index: chain.len() + 1,
                detail: e.to_string(),
            });
        }
        chain.push(der);
    }
    if chain.is_empty() {
        return Err(TlsFileError::Missing { path: path.to_owned(), what: "PEM certificate" });
    }
    Ok(chain)
}

/// Loads a bundle of trusted CA certificates (PEM).
pub fn load_ca_bundle(path: &Path) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for der in read_certificates(path)? {
        roots.add(der).map_err(|e| TlsFileError::BadCertificate {
            path: path.to_owned(),
            index: roots.len() + 1,
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The operating system's trusted roots (e.g. `/etc/ssl/certs` on Debian). Unreadable
/// entries are skipped with a warning; an empty result is an error.
pub fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "skipping an unreadable system CA certificate");
    }
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err("no trusted CA certificates found on this system (install the `ca-certificates` package, or set `ca` on the upstream's `tls`)".to_owned());
    }
    Ok(roots)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(dns_name_matches("*.example.com", "a.example.com"));
        assert!(!dns_name_matches("*.example.com", "a.b.example.com"));
        assert!(!dns_name_matches("*.example.com", "example.com"));
        assert!(dns_name_matches("example.com", "example.com"));
    }

    #[test]
    fn names_under_a_wildcard_site() {
        let info = CertificateInfo {
            subject: String::new(),
            dns_names: vec!["*.example.com".into(), "api.other.org".into()],
            not_before: 0,
            not_after: 0,
        };
        assert!(info.covers_some_name_under(".example.com"));
        assert!(info.covers_some_name_under(".other.org"));
        assert!(!info.covers_some_name_under(".org.uk"));
        assert!(info.covers("x.example.com"));
    }
}
