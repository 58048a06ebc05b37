//! TLS configuration errors and warnings as `sluice check` reports them (file:line:col),
//! relative certificate paths, and the binary's TLS features: `sluice proxy --cert --key`
//! and certificate reload on a real SIGHUP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pki;

use std::process::{Child, Command};
use std::sync::Arc;

use common::{free_port, spawn_until_started, BIN};
use pki::{server_name, Alg, Pki};

fn cert_line(issued: &pki::Issued) -> String {
    format!("certificate \"{}\" key=\"{}\"", issued.cert.display(), issued.key.display())
}

fn site_config(site_host: &str, certificate: &str) -> String {
    format!(
        "listener \"127.0.0.1:0\" {{\n    tls\n}}\nupstream \"o\" {{ server \"127.0.0.1:9\" }}\nsite \"{site_host}\" {{\n    {certificate}\n    route \"/\" {{ proxy \"o\" }}\n}}\n"
    )
}

/// Parses `text`; returns the rendered report of the errors.
fn errors(text: &str) -> String {
    match sluice_config::parse("sluice.kdl", text) {
        Ok(_) => panic!("expected errors in:\n{text}"),
        Err(e) => e.render(false),
    }
}

#[test]
fn missing_files_are_reported_at_the_option_that_names_them() {
    let pki = Pki::new("cfg-missing");
    let good = pki.server("good", &["a.test"]);
    let text = site_config("a.test", &format!("certificate \"{}\" key=\"/nonexistent/key.pem\"", good.cert.display()));
    let report = errors(&text);
    assert!(report.contains("cannot read `/nonexistent/key.pem`"), "{report}");
    assert!(report.contains("sluice.kdl:6:"), "points at the certificate line: {report}");
    assert!(report.contains("relative paths are resolved from the config file's directory"), "{report}");

    let text = site_config("a.test", "certificate \"/nonexistent/cert.pem\" key=\"/nonexistent/key.pem\"");
    assert!(errors(&text).contains("cannot read `/nonexistent/cert.pem`"));
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_an_error() {
    let pki = Pki::new("cfg-mismatch");
    let a = pki.server("a", &["a.test"]);
    let b = pki.server("b", &["a.test"]);
    let text = site_config("a.test", &format!("certificate \"{}\" key=\"{}\"", a.cert.display(), b.key.display()));
    let report = errors(&text);
    assert!(report.contains("does not match the certificate"), "{report}");
    assert!(report.contains("openssl pkey -pubout"), "{report}");
}

#[test]
fn garbage_instead_of_pem_is_an_error() {
    let pki = Pki::new("cfg-garbage");
    let a = pki.server("a", &["a.test"]);
    std::fs::write(&a.cert, "hello").unwrap();
    let report = errors(&site_config("a.test", &cert_line(&a)));
    assert!(report.contains("contains no PEM certificate"), "{report}");
    std::fs::write(&a.cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    let report = errors(&site_config("a.test", &cert_line(&a)));
    assert!(report.contains("not a valid X.509 certificate"), "{report}");
}

#[test]
fn a_certificate_for_none_of_the_sites_names_is_an_error() {
    let pki = Pki::new("cfg-names");
    let other = pki.server("other", &["other.test"]);
    let report = errors(&site_config("a.test", &cert_line(&other)));
    assert!(report.contains("covers none of the site's names"), "{report}");
    assert!(report.contains("certificate is for: other.test"), "{report}");

    // Wildcards: a *.example.test certificate covers the site *.example.test and
    // a.example.test, but not a.b.example.test.
    let wild = pki.server("wild", &["*.example.test"]);
    for ok in ["*.example.test", "a.example.test"] {
        sluice_config::parse("sluice.kdl", &site_config(ok, &cert_line(&wild))).unwrap();
    }
    assert!(errors(&site_config("a.b.example.test", &cert_line(&wild))).contains("covers none"));
}

#[test]
fn every_key_type_loads() {
    let pki = Pki::new("cfg-keys");
    for (stem, alg) in [("ecdsa", Alg::EcdsaP256), ("ed25519", Alg::Ed25519), ("rsa", Alg::Rsa)] {
        let issued = pki.issue(stem, &["a.test"], alg, None, false);
        let config = sluice_config::parse("sluice.kdl", &site_config("a.test", &cert_line(&issued)));
        assert!(config.is_ok(), "{stem}: {}", config.err().map(|e| e.render(false)).unwrap_or_default());
    }
}

#[test]
fn an_expired_certificate_is_a_loud_warning_not_an_error() {
    let pki = Pki::new("cfg-expired");
    let old = pki.issue("old", &["a.test"], Alg::EcdsaP256, Some((2020, 1, 1)), false);
    let config = sluice_config::parse("sluice.kdl", &site_config("a.test", &cert_line(&old))).unwrap();
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].starts_with("sluice.kdl:6:"), "{:?}", config.warnings);
    assert!(config.warnings[0].contains("EXPIRED on 2020-01-01T00:00:00Z"), "{:?}", config.warnings);
}

#[test]
fn tls_shapes_that_cannot_work_are_errors() {
    let pki = Pki::new("cfg-shapes");
    let a = pki.server("a", &["a.test"]);
    // A TLS listener with no certificate anywhere.
    let report = errors(&site_config("a.test", ""));
    assert!(report.contains("TLS listener `127.0.0.1:0` has no certificate"), "{report}");
    // A certificate on a site whose listeners are all plain text.
    let text = format!(
        "listener \"127.0.0.1:0\"\nupstream \"o\" {{ server \"127.0.0.1:9\" }}\nsite \"a.test\" {{\n    {}\n    route \"/\" {{ proxy \"o\" }}\n}}\n",
        cert_line(&a)
    );
    assert!(errors(&text).contains("none of its listeners uses TLS"));
    // h2 needs TLS; h2c cannot have it.
    let report = errors(
        "listener \"127.0.0.1:0\"\nupstream \"o\" {\n    server \"127.0.0.1:9\"\n    protocol \"h2\"\n}\nsite \"*\" { route \"/\" { proxy \"o\" } }\n",
    );
    assert!(report.contains("protocol \"h2\" needs TLS") && report.contains("sluice.kdl:4:14"), "{report}");
    let report = errors(
        "listener \"127.0.0.1:0\"\nupstream \"o\" {\n    server \"127.0.0.1:9\"\n    protocol \"h2c\"\n    tls\n}\nsite \"*\" { route \"/\" { proxy \"o\" } }\n",
    );
    assert!(report.contains("use protocol \"h2\""), "{report}");
    // Unknown options list the valid ones; bad values are explained.
    let report = errors(&site_config("a.test", &format!("{}\n    client-auth \"sometimes\" ca=\"x\"", cert_line(&a))));
    assert!(report.contains("unknown client-auth mode `sometimes`"), "{report}");
    let report = errors(
        "listener \"127.0.0.1:0\" {\n    tls {\n        min-version \"1.1\"\n        alpn \"h3\"\n    }\n}\nsite \"*\" { route \"/\" { respond 200 } }\n",
    );
    assert!(report.contains("unknown TLS version `1.1`"), "{report}");
    assert!(report.contains("unknown node `alpn`"), "{report}");
    let report = errors(&format!(
        "listener \"127.0.0.1:0\" {{\n    h2c #true\n    tls {{ {} }}\n}}\nsite \"*\" {{ route \"/\" {{ respond 200 }} }}\n",
        cert_line(&a)
    ));
    assert!(report.contains("`h2c` does not apply to a TLS listener") && report.contains("sluice.kdl:2:5"), "{report}");
}

#[test]
fn relative_paths_are_resolved_from_the_config_files_directory() {
    let pki = Pki::new("cfg-relative");
    pki.server("site", &["a.test"]);
    let path = pki.dir.join("sluice.kdl");
    std::fs::write(&path, site_config("a.test", "certificate \"site.pem\" key=\"site.key\"")).unwrap();
    // From another working directory, as `sluice check -c /etc/sluice/sluice.kdl` would be.
    let out = Command::new(BIN).args(["check", "-c", path.to_str().unwrap()]).current_dir("/").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_prints_warnings_and_fails_on_tls_errors() {
    let pki = Pki::new("cfg-check");
    let old = pki.issue("old", &["a.test"], Alg::EcdsaP256, Some((2021, 6, 1)), false);
    let path = pki.dir.join("expired.kdl");
    std::fs::write(&path, site_config("a.test", &cert_line(&old))).unwrap();
    let out = Command::new(BIN).args(["check", "-c", path.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: ") && stderr.contains("EXPIRED"), "{stderr}");

    let other = pki.server("other", &["other.test"]);
    let path = pki.dir.join("wrong.kdl");
    std::fs::write(&path, site_config("a.test", &cert_line(&other))).unwrap();
    let out = Command::new(BIN).args(["check", "-c", path.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("wrong.kdl:6:"), "{stderr}");
}

fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

async fn served_certificate(port: u16, config: Arc<rustls::ClientConfig>, sni: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(server_name(sni), tcp).await.unwrap();
    let conn = tls.get_ref().1;
    (conn.peer_certificates().unwrap()[0].to_vec(), conn.alpn_protocol().map(<[u8]>::to_vec))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_one_liner_serves_https_with_h2() {
    let pki = Pki::new("cli-https");
    let cert = pki.server("localhost", &["localhost"]);
    let origin = common::Origin::named("origin").await;
    let port = free_port();
    let (listen, to) = (format!("127.0.0.1:{port}"), format!("http://{}", origin.addr));
    let (c, k) = (cert.cert.to_str().unwrap().to_owned(), cert.key.to_str().unwrap().to_owned());
    let (mut child, _log) = tokio::task::spawn_blocking(move || {
        spawn_until_started(&[
            "proxy",
            "--listen",
            &listen,
            "--to",
            &to,
            "--cert",
            &c,
            "--key",
            &k,
            "--access-log",
            "off",
        ])
    })
    .await
    .unwrap();
    let config = pki.client_config(&["h2", "http/1.1"], None);
    let (served, alpn) = served_certificate(port, config.clone(), "localhost").await;
    assert_eq!(served, cert.der.to_vec());
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(server_name("localhost"), tcp).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp =
        sender.send_request(http::Request::get("https://localhost/").body(common::full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    signal(&child, "-TERM");
    assert!(tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_configuration_and_its_certificates() {
    let pki = Pki::new("cli-hup");
    let old = pki.server("site", &["a.test"]);
    let port = free_port();
    let path = pki.dir.join("sluice.kdl");
    std::fs::write(
        &path,
        format!(
            "server {{ access-log \"off\" }}\nlistener \"127.0.0.1:{port}\" {{ tls }}\nsite \"a.test\" {{\n    certificate \"site.pem\" key=\"site.key\"\n    route \"/\" {{ respond 200 \"hi\" }}\n}}\n"
        ),
    )
    .unwrap();
    let p = path.to_str().unwrap().to_owned();
    let (mut child, log) = tokio::task::spawn_blocking(move || spawn_until_started(&["run", "-c", &p])).await.unwrap();
    let (served, _) = served_certificate(port, pki.client_config(&["http/1.1"], None), "a.test").await;
    assert_eq!(served, old.der.to_vec());

    let new = pki.server("site", &["a.test"]);
    signal(&child, "-HUP");
    let reloaded = tokio::task::spawn_blocking(move || loop {
        let line = log.recv_timeout(std::time::Duration::from_secs(20)).expect("no reload logged");
        if line.contains("configuration reloaded") {
            return log;
        }
    })
    .await
    .unwrap();
    let (served, _) = served_certificate(port, pki.client_config(&["http/1.1"], None), "a.test").await;
    assert_eq!(served, new.der.to_vec());
    drop(reloaded);
    signal(&child, "-TERM");
    assert!(tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap().success());
}

#[test]
fn the_tls_example_is_valid_once_its_certificate_exists() {
    let pki = Pki::new("example");
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tls.kdl");
    std::fs::create_dir_all(pki.dir.join("certs")).unwrap();
    for name in ["localhost", "api.localhost"] {
        let issued = pki.server(name, &[name]);
        std::fs::rename(&issued.cert, pki.dir.join(format!("certs/{name}.pem"))).unwrap();
        std::fs::rename(&issued.key, pki.dir.join(format!("certs/{name}.key"))).unwrap();
    }
    let copy = pki.dir.join("tls.kdl");
    std::fs::copy(&example, &copy).unwrap();
    let out = Command::new(BIN).args(["check", "-c", copy.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Without the certificate, `check` says which file is missing, where.
    std::fs::remove_file(pki.dir.join("certs/localhost.key")).unwrap();
    let out = Command::new(BIN).args(["check", "-c", copy.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("certs/localhost.key") && stderr.contains("tls.kdl:"), "{stderr}");
}
