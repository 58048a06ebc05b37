//! Checks the files TLS settings name, so that `sluice check` catches a missing file, a
//! key that does not match its certificate, or a certificate for the wrong names before
//! anything starts. Each problem points at the option that named the file.
//!
//! The files are read again when the server starts (and on every reload); what is checked
//! here is that they are usable now.

use miette::SourceSpan;
use sluice_core::tls::certs::{load_ca_bundle, load_certificate, CertificateInfo, TlsFileError};

use crate::diagnostic::Diagnostics;
use crate::model::HostPattern;
use crate::sections::tls::{RawCertificate, RawClientAuth};
use crate::sections::{RawListener, RawSite, RawUpstream};

/// Loads a certificate and key; reports problems at the path that caused them.
fn certificate(d: &mut Diagnostics<'_>, raw: &RawCertificate) -> Option<CertificateInfo> {
    match load_certificate(&raw.pair.certificate, &raw.pair.key) {
        Ok(loaded) => {
            let info = loaded.info;
            if info.is_expired() {
                d.warning(
                    raw.cert_span,
                    format!(
                        "certificate `{}` EXPIRED on {}: clients will refuse it",
                        raw.pair.certificate.display(),
                        info.not_after_text()
                    ),
                );
            } else if info.is_not_yet_valid() {
                d.warning(raw.cert_span, format!("certificate `{}` is not valid yet", raw.pair.certificate.display()));
            }
            Some(info)
        }
        Err(e) => {
            let span = match &e {
                TlsFileError::Read { path, .. }
                | TlsFileError::Missing { path, .. }
                | TlsFileError::BadPem { path, .. }
                | TlsFileError::BadKey { path, .. }
                    if *path == raw.pair.key =>
                {
                    raw.key_span
                }
                TlsFileError::KeyMismatch { .. } => raw.key_span,
                _ => raw.cert_span,
            };
            report(d, span, &e);
            None
        }
    }
}

fn ca_bundle(d: &mut Diagnostics<'_>, path: &std::path::Path, span: SourceSpan) {
    if let Err(e) = load_ca_bundle(path) {
        report(d, span, &e);
    }
}

fn client_auth(d: &mut Diagnostics<'_>, raw: &RawClientAuth) {
    ca_bundle(d, &raw.config.ca, raw.ca_span);
}

fn report(d: &mut Diagnostics<'_>, span: SourceSpan, e: &TlsFileError) {
    let label = match e {
        TlsFileError::Read { .. } => "cannot read this file",
        TlsFileError::KeyMismatch { .. } => "not the certificate's key",
        _ => "unusable file",
    };
    d.error(span, e.to_string()).label(label).help(e.help());
}

/// Checks a site's certificate and client-auth files, and that they are used at all.
/// `serving` are the listeners that serve the site.
pub(crate) fn check_site(d: &mut Diagnostics<'_>, site: &RawSite, serving: &[usize], listeners: &[RawListener]) {
    let on_tls = serving.iter().any(|&i| listeners[i].tls.is_some());
    if let Some(cert) = &site.certificate {
        if !on_tls {
            d.error(cert.cert_span, "this site has a certificate, but none of its listeners uses TLS")
                .label("never used")
                .help("add a `tls { }` block to the listener the site listens on, or remove the certificate");
        }
        if let Some(info) = certificate(d, cert) {
            check_names(d, site, cert, &info);
        }
    }
    if let Some(auth) = &site.client_auth {
        if !on_tls {
            d.error(auth.ca_span, "this site asks for client certificates, but none of its listeners uses TLS")
                .label("never used")
                .help("client certificates need TLS: add a `tls { }` block to the site's listener");
        }
        client_auth(d, auth);
    }
    if site.https_redirect.is_some() && !serving.is_empty() && serving.iter().all(|&i| listeners[i].tls.is_some()) {
        d.warning(site.span, "`https-redirect` has no effect: every listener of this site already uses TLS");
    }
}

/// A certificate must cover at least one of the site's host patterns.
fn check_names(d: &mut Diagnostics<'_>, site: &RawSite, cert: &RawCertificate, info: &CertificateInfo) {
    let mut named = site.hosts.iter().filter(|(h, _)| *h != HostPattern::Any).peekable();
    if named.peek().is_none() {
        return;
    }
    let covered = named.any(|(h, _)| match h {
        HostPattern::Exact(name) => info.covers(name),
        HostPattern::Wildcard(suffix) => info.covers_some_name_under(suffix),
        HostPattern::Any => true,
    });
    if !covered {
        let names = if info.dns_names.is_empty() { "no DNS names".to_owned() } else { info.dns_names.join(", ") };
        d.error(
            cert.cert_span,
            format!("certificate `{}` covers none of the site's names", cert.pair.certificate.display()),
        )
        .label(format!("certificate is for: {names}"))
        .also(site.hosts[0].1, "site names")
        .help("use the certificate issued for this site, or add the site's names to the certificate (subjectAltName)");
    }
}

/// Checks a TLS listener's own files and that it has a certificate to answer with.
/// `sites_with_certificates` counts sites with a certificate served on the listener.
pub(crate) fn check_listener(d: &mut Diagnostics<'_>, listener: &RawListener, sites_with_certificates: usize) {
    let Some(tls) = &listener.tls else { return };
    if let Some(cert) = &tls.certificate {
        certificate(d, cert);
    }
    if let Some(auth) = &tls.client_auth {
        client_auth(d, auth);
    }
    if tls.certificate.is_none() && sites_with_certificates == 0 {
        d.error(tls.span, format!("TLS listener `{}` has no certificate", listener.name))
            .label("no certificate here or in its sites")
            .help("add `certificate \"cert.pem\" key=\"key.pem\"` inside this `tls` block, or to a site that listens here");
    }
}

/// Checks an upstream's CA bundle and client certificate, and warns when verification is off.
pub(crate) fn check_upstream(d: &mut Diagnostics<'_>, upstream: &RawUpstream) {
    let Some(tls) = &upstream.tls else { return };
    if let (Some(ca), Some(span)) = (&tls.config.ca, tls.ca_span) {
        ca_bundle(d, ca, span);
    }
    if let Some(cert) = &tls.certificate {
        certificate(d, cert);
    }
    if let Some(span) = tls.verify_off_span {
        d.warning(
            span,
            format!(
                "certificate verification is OFF for upstream `{}`: anyone on the path can impersonate its servers",
                upstream.config.name
            ),
        );
    }
}
