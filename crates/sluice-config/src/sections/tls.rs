//! TLS nodes: a listener's `tls { ... }`, a site's `certificate` and `client-auth`, an
//! upstream's `tls { ... }`. Only shapes and values are checked here; the files they name
//! are opened and checked in [`crate::validate`] (`tls_files`), where the sites are known.

use kdl::KdlNode;
use miette::SourceSpan;

use crate::diagnostic::Diagnostics;
use crate::model::{CertificatePair, ClientAuthConfig, ListenerTls, SniFallback, TlsVersion, UpstreamTls};
use crate::reader::{children, leaf, name, name_span, single, take_props, unknown_node, Arity, Once};
use crate::sections::headers::header_name;
use crate::value::{boolean, choice, duration, integer, non_empty_string};

const LISTENER_NODES: &[&str] = &[
    "certificate",
    "min-version",
    "http2",
    "without-sni",
    "unknown-sni",
    "session-tickets",
    "session-cache",
    "handshake-timeout",
    "client-auth",
];
const UPSTREAM_NODES: &[&str] = &["server-name", "ca", "verify", "certificate"];
pub(crate) const CERTIFICATE_USAGE: &str = "certificate \"certs/example.com.pem\" key=\"certs/example.com.key\"";
pub(crate) const CLIENT_AUTH_USAGE: &str =
    "client-auth \"required\" ca=\"certs/clients-ca.pem\" subject-header=\"X-Client-Subject\"";

/// A certificate and key pair with where each path was written.
#[derive(Debug, Clone)]
pub(crate) struct RawCertificate {
    pub pair: CertificatePair,
    pub cert_span: SourceSpan,
    pub key_span: SourceSpan,
}

/// A client certificate policy with where its CA bundle was written.
#[derive(Debug, Clone)]
pub(crate) struct RawClientAuth {
    pub config: ClientAuthConfig,
    pub ca_span: SourceSpan,
}

/// A listener's `tls` block.
#[derive(Debug, Clone)]
pub(crate) struct RawListenerTls {
    /// Settings; `certificate` and `client_auth` are filled from the raw parts below.
    pub config: ListenerTls,
    pub certificate: Option<RawCertificate>,
    pub client_auth: Option<RawClientAuth>,
    /// The `tls` node's name.
    pub span: SourceSpan,
}

/// An upstream's `tls` block.
#[derive(Debug, Clone)]
pub(crate) struct RawUpstreamTls {
    pub config: UpstreamTls,
    pub ca_span: Option<SourceSpan>,
    pub certificate: Option<RawCertificate>,
    /// Where `verify #false` was written.
    pub verify_off_span: Option<SourceSpan>,
}

/// Reads `certificate "cert.pem" key="key.pem"`.
pub(crate) fn read_certificate(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<RawCertificate> {
    let (args, props) = leaf(d, node, Arity::Exactly(1), &["key"], CERTIFICATE_USAGE);
    let cert = args.first().and_then(|e| Some((non_empty_string(d, e, CERTIFICATE_USAGE)?, e.span())));
    let key = match props.get("key") {
        Some(e) => non_empty_string(d, e, CERTIFICATE_USAGE).map(|k| (k, e.span())),
        None => {
            d.error(name_span(node), "`certificate` needs the private key: key=\"...\"")
                .label("no key= property")
                .help(format!("write it like: {CERTIFICATE_USAGE}"));
            None
        }
    };
    let ((cert, cert_span), (key, key_span)) = (cert?, key?);
    Some(RawCertificate { pair: CertificatePair { certificate: d.path(cert), key: d.path(key) }, cert_span, key_span })
}

/// Reads `client-auth "optional"|"required" ca="..." [subject-header=".."] [san-header=".."]`.
pub(crate) fn read_client_auth(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<RawClientAuth> {
    let (args, props) = leaf(d, node, Arity::Exactly(1), &["ca", "subject-header", "san-header"], CLIENT_AUTH_USAGE);
    let mode = args.first().and_then(|e| choice(d, e, "client-auth mode", &["optional", "required"]));
    let subject_header = props.get("subject-header").and_then(|e| header_name(d, e, CLIENT_AUTH_USAGE));
    let san_header = props.get("san-header").and_then(|e| header_name(d, e, CLIENT_AUTH_USAGE));
    let ca = match props.get("ca") {
        Some(e) => non_empty_string(d, e, CLIENT_AUTH_USAGE).map(|ca| (d.path(ca), e.span())),
        None => {
            d.error(name_span(node), "`client-auth` needs the CA bundle client certificates are verified against")
                .label("no ca= property")
                .help(format!("write it like: {CLIENT_AUTH_USAGE}"));
            None
        }
    };
    let (mode, (ca, ca_span)) = (mode?, ca?);
    Some(RawClientAuth {
        config: ClientAuthConfig { required: mode == "required", ca, subject_header, san_header },
        ca_span,
    })
}

/// Reads a listener's `tls { ... }` (the block may be empty: sites bring certificates).
pub(crate) fn read_listener_tls(d: &mut Diagnostics<'_>, node: &KdlNode) -> RawListenerTls {
    take_props(d, node, &[], "tls { certificate \"default.pem\" key=\"default.key\" }");
    crate::reader::take_args(d, node, Arity::Exactly(0), "tls { ... }");
    let mut raw =
        RawListenerTls { config: ListenerTls::default(), certificate: None, client_auth: None, span: name_span(node) };
    let mut once = Once::default();
    for child in children(node) {
        if LISTENER_NODES.contains(&name(child)) && !once.first(d, child, "in `tls`") {
            continue;
        }
        let c = &mut raw.config;
        match name(child) {
            "certificate" => raw.certificate = read_certificate(d, child),
            "client-auth" => raw.client_auth = read_client_auth(d, child),
            "min-version" => {
                if let Some(e) = single(d, child, "min-version \"1.2\"") {
                    match choice(d, e, "TLS version", &["1.2", "1.3"]) {
                        Some("1.3") => c.min_version = TlsVersion::Tls13,
                        Some(_) => c.min_version = TlsVersion::Tls12,
                        None => {}
                    }
                }
            }
            "http2" => {
                if let Some(on) = single(d, child, "http2 #true").and_then(|e| boolean(d, e)) {
                    c.http2 = on;
                }
            }
            "without-sni" | "unknown-sni" => {
                let usage = format!("{} \"default\"", name(child));
                if let Some(e) = single(d, child, &usage) {
                    let fallback = match choice(d, e, "SNI fallback", &["default", "refuse"]) {
                        Some("refuse") => SniFallback::Refuse,
                        Some(_) => SniFallback::Default,
                        None => continue,
                    };
                    if name(child) == "without-sni" {
                        c.without_sni = fallback;
                    } else {
                        c.unknown_sni = fallback;
                    }
                }
            }
            "session-tickets" => {
                if let Some(on) = single(d, child, "session-tickets #true").and_then(|e| boolean(d, e)) {
                    c.session_tickets = on;
                }
            }
            "session-cache" => {
                if let Some(n) = single(d, child, "session-cache 10000").and_then(|e| integer(d, e, 0, 10_000_000)) {
                    c.session_cache = usize::try_from(n).unwrap_or(0);
                }
            }
            "handshake-timeout" => {
                if let Some(t) = single(d, child, "handshake-timeout \"10s\"").and_then(|e| duration(d, e, false)) {
                    c.handshake_timeout = t;
                }
            }
            _ => unknown_node(d, child, Some("tls"), LISTENER_NODES),
        }
    }
    raw.config.certificate = raw.certificate.as_ref().map(|c| c.pair.clone());
    raw.config.client_auth = raw.client_auth.as_ref().map(|c| c.config.clone());
    raw
}

/// Reads an upstream's `tls { ... }` (an empty block verifies against the system roots).
pub(crate) fn read_upstream_tls(d: &mut Diagnostics<'_>, node: &KdlNode) -> RawUpstreamTls {
    take_props(d, node, &[], "tls { server-name \"api.internal\" }");
    crate::reader::take_args(d, node, Arity::Exactly(0), "tls { ... }");
    let mut raw = RawUpstreamTls {
        config: UpstreamTls { verify: true, ..UpstreamTls::default() },
        ca_span: None,
        certificate: None,
        verify_off_span: None,
    };
    let mut once = Once::default();
    for child in children(node) {
        if UPSTREAM_NODES.contains(&name(child)) && !once.first(d, child, "in `tls`") {
            continue;
        }
        match name(child) {
            "server-name" => {
                let usage = "server-name \"api.internal\"";
                if let Some(e) = single(d, child, usage) {
                    if let Some(n) = non_empty_string(d, e, usage) {
                        if rustls_name_ok(n) {
                            raw.config.server_name = Some(n.to_ascii_lowercase());
                        } else {
                            d.error(e.span(), format!("invalid TLS server name `{n}`"))
                                .label("not a DNS name or IP address")
                                .help("write a host name like \"api.internal\" (no port, no scheme)");
                        }
                    }
                }
            }
            "ca" => {
                let usage = "ca \"certs/internal-ca.pem\"";
                if let Some(e) = single(d, child, usage) {
                    if let Some(path) = non_empty_string(d, e, usage) {
                        raw.config.ca = Some(d.path(path));
                        raw.ca_span = Some(e.span());
                    }
                }
            }
            "verify" => {
                if let Some(e) = single(d, child, "verify #true") {
                    if let Some(on) = boolean(d, e) {
                        raw.config.verify = on;
                        if !on {
                            raw.verify_off_span = Some(e.span());
                        }
                    }
                }
            }
            "certificate" => {
                raw.certificate = read_certificate(d, child);
                raw.config.client_certificate = raw.certificate.as_ref().map(|c| c.pair.clone());
            }
            _ => unknown_node(d, child, Some("tls"), UPSTREAM_NODES),
        }
    }
    raw
}

/// A name usable as SNI: an IP address or a DNS name.
fn rustls_name_ok(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok() || super::upstream::check_host_name(name).is_ok()
}
