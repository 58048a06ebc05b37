//! TLS with rustls (ring provider): termination for listeners ([`server`]) and the
//! certificate, key and CA loading shared with upstream TLS ([`certs`]).
//!
//! ring rather than aws-lc-rs: it builds with a C compiler only (no cmake, no Go), which
//! keeps a fresh build on a 2-core machine short, and its ECDSA P-256, X25519 and AES-GCM
//! paths are assembly-optimised.

pub mod certs;
pub mod server;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The crypto provider every TLS config of the process uses.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}
