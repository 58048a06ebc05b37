//! The documented example config parses into the expected model, with defaults filled in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{lines, ok};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use sluice_config::*;

const FULL_EXAMPLE: &str = r#"
server {
    worker-threads 4                 // integer 1..=1024
    shutdown-grace "30s"
    access-log "stdout" format="json"
}

listener "127.0.0.1:8080" name="public" {
    max-connections 10000
    max-header-size "64KiB"
    header-read-timeout "30s"
    keepalive-timeout "75s"
    h2c #true
}
listener "127.0.0.1:8081"

upstream "origins" {
    server "127.0.0.1:8081" weight=2
    server "origin.internal:80"
    protocol "http1"
    pool max-idle=128 idle-timeout="60s"
    timeouts connect="5s" first-byte="60s" read-idle="60s"
}

site "example.com" "*.example.com" "*" {
    listen "public" "127.0.0.1:8081"
    request-headers {
        set "X-A" "1"
        add "X-B" "2"
        remove "X-C" "X-D"
    }
    response-headers { set "Server" "sluice" }
    route "/api" {
        methods "GET" "POST"
        proxy "origins" rewrite-prefix="/v2" host="api.internal"
        request-headers { set "X-Route" "api" }
        response-headers { remove "X-Powered-By" }
    }
    route "/healthz" exact=#true {
        respond 200 "ok\n" {
            header "content-type" "text/plain"
        }
    }
    route "/old" {
        redirect 301 "https://{host}/new{query}"
    }
}
"#;

fn header(name: &str) -> HeaderName {
    HeaderName::from_bytes(name.as_bytes()).unwrap()
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn full_example_parses_to_the_expected_model() {
    let config = ok(FULL_EXAMPLE);

    assert_eq!(config.server.worker_threads, Some(4));
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(config.server.access_log, AccessLogConfig { target: LogTarget::Stdout, format: LogFormat::Json });

    assert_eq!(config.listeners.len(), 2);
    let public = &config.listeners[0];
    assert_eq!(public.name, "public");
    assert_eq!(public.address, addr("127.0.0.1:8080"));
    assert_eq!(public.max_connections, 10_000);
    assert_eq!(public.max_header_size, 64 * 1024);
    assert_eq!(public.header_read_timeout, Duration::from_secs(30));
    assert_eq!(public.keepalive_timeout, Duration::from_secs(75));
    assert!(public.h2c);
    assert_eq!(config.listeners[1], ListenerConfig::new(addr("127.0.0.1:8081")));
    assert_eq!(config.listeners[1].name, "127.0.0.1:8081");

    assert_eq!(config.upstreams.len(), 1);
    let origins = &config.upstreams[0];
    assert_eq!(origins.name, "origins");
    assert_eq!(
        origins.servers,
        vec![
            UpstreamServer { address: "127.0.0.1:8081".into(), weight: 2, srv: false },
            UpstreamServer { address: "origin.internal:80".into(), weight: 1, srv: false },
        ]
    );
    assert_eq!(origins.protocol, UpstreamProtocol::Http1);
    assert_eq!(origins.pool, PoolConfig { max_idle_per_server: 128, idle_timeout: Duration::from_secs(60) });
    assert_eq!(origins.timeouts, UpstreamTimeouts::default());

    assert_eq!(config.sites.len(), 1);
    let site = &config.sites[0];
    assert_eq!(
        site.hosts,
        vec![HostPattern::Exact("example.com".into()), HostPattern::Wildcard(".example.com".into()), HostPattern::Any]
    );
    assert_eq!(site.listeners, vec!["public".to_owned(), "127.0.0.1:8081".to_owned()]);
    assert_eq!(
        site.request_headers.edits,
        vec![
            HeaderEdit::Set(header("x-a"), value("1")),
            HeaderEdit::Add(header("x-b"), value("2")),
            HeaderEdit::Remove(header("x-c")),
            HeaderEdit::Remove(header("x-d")),
        ]
    );
    assert_eq!(site.response_headers.edits, vec![HeaderEdit::Set(header("server"), value("sluice"))]);

    assert_eq!(site.routes.len(), 3);
    let api = &site.routes[0];
    assert_eq!(api.path, PathMatch::Prefix("/api".into()));
    assert_eq!(api.methods, vec![Method::GET, Method::POST]);
    assert_eq!(
        api.action,
        RouteAction::Proxy(ProxyAction {
            upstream: "origins".into(),
            strip_prefix: false,
            rewrite_prefix: Some("/v2".into()),
            host: Some("api.internal".into()),
            ..ProxyAction::to("origins")
        })
    );
    assert_eq!(api.request_headers.edits, vec![HeaderEdit::Set(header("x-route"), value("api"))]);
    assert_eq!(api.response_headers.edits, vec![HeaderEdit::Remove(header("x-powered-by"))]);

    let health = &site.routes[1];
    assert_eq!(health.path, PathMatch::Exact("/healthz".into()));
    assert!(health.methods.is_empty());
    assert!(health.request_headers.is_empty() && health.response_headers.is_empty());
    assert_eq!(
        health.action,
        RouteAction::Respond {
            status: StatusCode::OK,
            body: bytes::Bytes::from_static(b"ok\n"),
            headers: vec![(header("content-type"), value("text/plain"))],
        }
    );

    assert_eq!(
        site.routes[2].action,
        RouteAction::Redirect { status: StatusCode::MOVED_PERMANENTLY, location: "https://{host}/new{query}".into() }
    );
}

#[test]
fn a_lone_listener_gets_every_default() {
    let config = ok("listener \"0.0.0.0:80\"\n");
    assert_eq!(config.server.worker_threads, None);
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(config.server.access_log, AccessLogConfig::default());
    assert_eq!(config.listeners, vec![ListenerConfig::new(addr("0.0.0.0:80"))]);
    assert_eq!(config.listeners[0].name, "0.0.0.0:80");
    assert_eq!(config.listeners[0].max_header_size, 65_536);
    assert!(config.upstreams.is_empty());
    assert!(config.sites.is_empty());
}

#[test]
fn non_default_values_are_read() {
    let config = ok(&lines(&[
        r#"server {"#,
        r#"    shutdown-grace 0"#,
        r#"    access-log "/var/log/sluice/access.log" format="text""#,
        r#"}"#,
        r#"listener "[::1]:8443" {"#,
        r#"    max-connections 5"#,
        r#"    max-header-size 16384"#,
        r#"    header-read-timeout "1m30s""#,
        r#"    keepalive-timeout 5"#,
        r#"    h2c #false"#,
        r#"}"#,
        r#"upstream "fast" {"#,
        r#"    server "[::1]:9000""#,
        r#"    protocol "h2c""#,
        r#"    pool max-idle=0"#,
        r#"    timeouts first-byte="500ms""#,
        r#"}"#,
        r#"site "WWW.Example.COM" {"#,
        r#"    listen "[::1]:8443""#,
        r#"    route "/" { proxy "fast" strip-prefix=#true; methods "get" "Post"; }"#,
        r#"}"#,
    ]));
    assert_eq!(config.server.shutdown_grace, Duration::ZERO);
    assert_eq!(
        config.server.access_log,
        AccessLogConfig {
            target: LogTarget::File(PathBuf::from("/var/log/sluice/access.log")),
            format: LogFormat::Text
        }
    );
    let listener = &config.listeners[0];
    assert_eq!(listener.address, addr("[::1]:8443"));
    assert_eq!(listener.name, "[::1]:8443");
    assert_eq!(listener.max_connections, 5);
    assert_eq!(listener.max_header_size, 16_384);
    assert_eq!(listener.header_read_timeout, Duration::from_secs(90));
    assert_eq!(listener.keepalive_timeout, Duration::from_secs(5));
    assert!(!listener.h2c);
    let upstream = &config.upstreams[0];
    assert_eq!(upstream.protocol, UpstreamProtocol::H2c);
    assert_eq!(upstream.pool.max_idle_per_server, 0);
    assert_eq!(upstream.pool.idle_timeout, Duration::from_secs(60));
    assert_eq!(upstream.timeouts.first_byte, Duration::from_millis(500));
    assert_eq!(upstream.timeouts.connect, Duration::from_secs(5));
    let site = &config.sites[0];
    assert_eq!(site.hosts, vec![HostPattern::Exact("www.example.com".into())]);
    assert_eq!(site.listeners, vec!["[::1]:8443".to_owned()]);
    let route = &site.routes[0];
    assert_eq!(route.methods, vec![Method::GET, Method::POST]);
    let RouteAction::Proxy(proxy) = &route.action else { panic!("expected proxy") };
    assert!(proxy.strip_prefix);
    assert_eq!(proxy.rewrite_prefix, None);
    assert_eq!(proxy.host, None);
}

#[test]
fn access_log_targets() {
    for (text, target) in [("off", LogTarget::Off), ("stdout", LogTarget::Stdout), ("stderr", LogTarget::Stderr)] {
        let config = ok(&format!("server {{ access-log {text:?}; }}\nlistener \"127.0.0.1:1\"\n"));
        assert_eq!(config.server.access_log.target, target);
        assert_eq!(config.server.access_log.format, LogFormat::Json);
    }
}

#[test]
fn sizes_accept_every_documented_spelling() {
    for (text, bytes) in [
        ("\"8192\"", 8192),
        ("\"8192B\"", 8192),
        ("\"64K\"", 65_536),
        ("\"64k\"", 65_536),
        ("\"1MiB\"", 1 << 20),
        ("\"1M\"", 1 << 20),
        ("\"1m\"", 1 << 20),
        ("\"16MiB\"", 16 << 20),
        ("10000", 10_000),
    ] {
        let config = ok(&format!("listener \"127.0.0.1:1\" {{ max-header-size {text}; }}\n"));
        assert_eq!(config.listeners[0].max_header_size, bytes, "{text}");
    }
}

#[test]
fn same_host_on_different_listeners_and_same_path_with_other_methods_are_fine() {
    let config = ok(&lines(&[
        r#"listener "127.0.0.1:8080" name="a""#,
        r#"listener "127.0.0.1:8081" name="b""#,
        r#"site "example.com" { listen "a"; route "/" { respond 200; }; }"#,
        r#"site "example.com" { listen "b"; route "/" { respond 200; }; }"#,
        r#"site "*" {"#,
        r#"    listen "127.0.0.1:8080""#,
        r#"    route "/x" { methods "GET"; respond 200; }"#,
        r#"    route "/x" { methods "POST"; respond 201; }"#,
        r#"    route "/x" exact=#true { respond 204; }"#,
        r#"}"#,
    ]));
    assert_eq!(config.sites.len(), 3);
    assert_eq!(config.sites[2].listeners, vec!["a".to_owned()]);
    assert_eq!(config.sites[2].routes.len(), 3);
}

#[test]
fn tracing_is_off_unless_an_otlp_endpoint_is_given() {
    assert_eq!(ok("listener \"127.0.0.1:1\"\n").server.tracing, None);
    let config = ok(&lines(&[
        r#"server {"#,
        r#"    tracing {"#,
        r#"        otlp "http://127.0.0.1:4318/v1/traces""#,
        r#"    }"#,
        r#"}"#,
        r#"listener "127.0.0.1:1""#,
    ]));
    let tracing = config.server.tracing.unwrap();
    assert_eq!(tracing, TracingSettings::new("http://127.0.0.1:4318/v1/traces"));
    assert_eq!(tracing.service_name, "sluice");
    assert_eq!(tracing.batch_size, 512);
    assert_eq!(tracing.flush_interval, Duration::from_secs(1));
    assert_eq!(tracing.queue, 8192);
}

#[test]
fn tracing_settings_are_read() {
    let config = ok(&lines(&[
        r#"server {"#,
        r#"    tracing {"#,
        r#"        otlp "http://collector.internal:4318/v1/traces?tenant=edge""#,
        r#"        service-name "edge-proxy""#,
        r#"        batch-size 100"#,
        r#"        flush-interval "250ms""#,
        r#"        queue 1000"#,
        r#"    }"#,
        r#"}"#,
        r#"listener "127.0.0.1:1""#,
    ]));
    assert_eq!(
        config.server.tracing,
        Some(TracingSettings {
            endpoint: "http://collector.internal:4318/v1/traces?tenant=edge".into(),
            service_name: "edge-proxy".into(),
            batch_size: 100,
            flush_interval: Duration::from_millis(250),
            queue: 1000,
        })
    );
    for endpoint in ["http://[::1]:4318/v1/traces", "HTTP://otel:55681/", "http://10.0.0.7:4318/otlp/v1/traces"] {
        let config = ok(&format!("server {{ tracing {{ otlp {endpoint:?}; }} }}\nlistener \"127.0.0.1:1\"\n"));
        assert_eq!(config.server.tracing.map(|t| t.endpoint), Some(endpoint.to_owned()));
    }
}

#[test]
fn compress_blocks_are_read() {
    let config = ok(&lines(&[
        r#"listener "127.0.0.1:1""#,
        r#"upstream "u" { server "127.0.0.1:2"; }"#,
        r#"site "*" {"#,
        r#"    compress"#,
        r#"    route "/" { proxy "u"; }"#,
        r#"    route "/api" {"#,
        r#"        proxy "u""#,
        r#"        compress {"#,
        r#"            codings "gzip" "zstd""#,
        r#"            level gzip=6 zstd=9"#,
        r#"            min-size "1KiB""#,
        r#"            types "text/*" "Application/JSON""#,
        r#"            decompress #true"#,
        r#"        }"#,
        r#"    }"#,
        r#"    route "/raw" { proxy "u"; compress #false; }"#,
        r#"}"#,
        r#"site "a.example" { compress #true; route "/" { respond 200; } }"#,
        r#"site "b.example" { route "/" { respond 200; } }"#,
    ]));
    let defaults = CompressConfig::default();
    assert!(defaults.enabled);
    assert_eq!(defaults.codings, vec![ContentCoding::Zstd, ContentCoding::Brotli, ContentCoding::Gzip]);
    assert_eq!((defaults.gzip_level, defaults.brotli_level, defaults.zstd_level), (5, 4, 3));
    assert_eq!(defaults.min_size, 256);
    assert!(
        defaults.types.iter().any(|t| t == "text/html") && !defaults.types.iter().any(|t| t.starts_with("image/png"))
    );
    assert!(!defaults.decompress);

    let site = &config.sites[0];
    assert_eq!(site.compress, Some(defaults.clone()));
    assert_eq!(site.routes[0].compress, None, "a route without `compress` uses its site's");
    assert_eq!(
        site.routes[1].compress,
        Some(CompressConfig {
            enabled: true,
            codings: vec![ContentCoding::Gzip, ContentCoding::Zstd],
            gzip_level: 6,
            brotli_level: 4,
            zstd_level: 9,
            min_size: 1024,
            types: vec!["text/*".to_owned(), "application/json".to_owned()],
            decompress: true,
        })
    );
    assert_eq!(site.routes[2].compress, Some(CompressConfig::disabled()));
    assert!(!CompressConfig::disabled().enabled);
    assert_eq!(config.sites[1].compress, Some(defaults));
    assert_eq!(config.sites[2].compress, None);
}
