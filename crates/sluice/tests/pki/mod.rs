//! Certificates for tests, generated at run time with rcgen: a CA per test, leaf
//! certificates with any names and key type, client certificates, and TLS clients that
//! trust the test CA. Files go to a fresh temporary directory.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// Key algorithms the tests use.
#[derive(Debug, Clone, Copy)]
pub enum Alg {
    EcdsaP256,
    Ed25519,
    /// The committed test-only RSA key (ring cannot generate RSA keys).
    Rsa,
}

/// A certificate and key written to files.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
    pub key_pem: String,
}

impl Issued {
    /// Chain and key for a rustls client config.
    pub fn client_auth(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        use rustls::pki_types::pem::PemObject;
        (vec![self.der.clone()], PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap())
    }
}

/// A test certificate authority with its own directory.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_path: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    /// PEM of the intermediates between `ca` and the root, appended to every issued
    /// certificate file (a full chain).
    chain: String,
    /// The root this CA chains to (itself for a root).
    root: rustls::pki_types::CertificateDer<'static>,
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!("sluice-{tag}-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn key_for(alg: Alg) -> KeyPair {
    match alg {
        Alg::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        Alg::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        Alg::Rsa => {
            let pem = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-only-rsa-2048.key"),
            )
            .unwrap();
            KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap()
        }
    }
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Pki {
        let dir = temp_dir(name);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let root = ca.der().clone();
        Pki { dir, ca_path, ca, ca_key, chain: String::new(), root }
    }

    /// An intermediate CA signed by this one: certificates it issues are written as full
    /// chains (leaf, then the intermediates), and its `roots()` are this CA's.
    pub fn intermediate(&self, name: &str) -> Pki {
        let dir = temp_dir(name);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("{name} intermediate CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ca = params.signed_by(&ca_key, &self.ca, &self.ca_key).unwrap();
        let chain = format!("{}{}", ca.pem(), self.chain);
        Pki { dir, ca_path: self.ca_path.clone(), ca, ca_key, chain, root: self.root.clone() }
    }

    /// A server certificate for `names` (DNS names, `*.` wildcards allowed).
    pub fn server(&self, stem: &str, names: &[&str]) -> Issued {
        self.issue(stem, names, Alg::EcdsaP256, None, false)
    }

    /// A certificate with full control: key type, expiry (year, month, day), client use.
    pub fn issue(
        &self,
        stem: &str,
        names: &[&str],
        alg: Alg,
        not_after: Option<(i32, u8, u8)>,
        client: bool,
    ) -> Issued {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or(stem));
        params.distinguished_name.push(DnType::OrganizationName, "Sluice Tests");
        if let Some((y, m, d)) = not_after {
            params.not_before = rcgen::date_time_ymd(y - 1, m, d);
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        if client {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.subject_alt_names.push(SanType::Rfc822Name(format!("{stem}@example.test").try_into().unwrap()));
        }
        let key = key_for(alg);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let cert_path = self.dir.join(format!("{stem}.pem"));
        let key_path = self.dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, format!("{}{}", cert.pem(), self.chain)).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued { cert: cert_path, key: key_path, der: cert.der().clone(), key_pem: key.serialize_pem() }
    }

    /// A client certificate with common name `cn`.
    pub fn client(&self, cn: &str) -> Issued {
        self.issue(cn, &[cn], Alg::EcdsaP256, None, true)
    }

    /// Roots holding this CA.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.root.clone()).unwrap();
        roots
    }

    /// A client trusting this CA, offering `alpn`, optionally with a client certificate.
    pub fn client_config(&self, alpn: &[&str], cert: Option<&Issued>) -> Arc<ClientConfig> {
        client_config(self.roots(), alpn, cert)
    }
}

pub fn client_config(roots: RootCertStore, alpn: &[&str], cert: Option<&Issued>) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(c) => {
            let (chain, key) = c.client_auth();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

pub fn server_name(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).unwrap()
}
