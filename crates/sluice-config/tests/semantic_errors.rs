//! Problems with what the file means: addresses, names that must resolve or must not clash,
//! routes, header edits, statuses and limits. Each is checked for message and location.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{err, expect, expect_only, help, lines};

const LISTENER: &str = r#"listener "127.0.0.1:8080""#;
const UPSTREAM: &str = r#"upstream "origins" { server "127.0.0.1:9000"; }"#;

#[test]
fn no_listener_at_all() {
    let text = lines(&[UPSTREAM]);
    let problem = expect_only(&text, "no listener defined", 0, 0);
    assert!(help(&problem).contains("listener \"127.0.0.1:8080\""));
    assert_eq!(problem.span(), None);
}

#[test]
fn an_empty_file_has_no_listener() {
    expect_only("", "no listener defined", 0, 0);
}

#[test]
fn invalid_listener_addresses() {
    let text = lines(&[
        r#"listener "localhost:8080""#,
        r#"listener "127.0.0.1""#,
        r#"listener "::1:8080""#,
        r#"listener "127.0.0.1:99999""#,
    ]);
    let err = err(&text);
    assert_eq!(err.problems().len(), 4, "{}", err.render(false));
    let problem = expect(&text, "invalid listener address `localhost:8080`", 1, 10);
    assert!(help(&problem).contains("host names are not allowed"));
    let problem = expect(&text, "invalid listener address `127.0.0.1`", 2, 10);
    assert!(help(&problem).contains("the port is required"));
    let problem = expect(&text, "invalid listener address `::1:8080`", 3, 10);
    assert!(help(&problem).contains("[::1]:8080"));
    expect(&text, "invalid listener address `127.0.0.1:99999`", 4, 10);
}

#[test]
fn an_invalid_listener_does_not_cause_follow_up_errors() {
    // The site names the broken listener; only the address is reported.
    let text =
        lines(&[r#"listener "nope" name="public""#, r#"site "*" { listen "public"; route "/" { respond 200; }; }"#]);
    expect_only(&text, "invalid listener address `nope`", 1, 10);
}

#[test]
fn duplicate_listener_address() {
    let text = lines(&[r#"listener "127.0.0.1:8080" name="a""#, r#"listener "127.0.0.1:8080" name="b""#]);
    let problem = expect_only(&text, "duplicate listener address `127.0.0.1:8080`", 2, 10);
    assert!(help(&problem).contains("line 1"));
}

#[test]
fn duplicate_listener_address_written_differently() {
    let text = lines(&[r#"listener "[::1]:8080""#, r#"listener "[0:0:0:0:0:0:0:1]:8080""#]);
    expect_only(&text, "duplicate listener address `[0:0:0:0:0:0:0:1]:8080`", 2, 10);
}

#[test]
fn duplicate_listener_name() {
    let text = lines(&[r#"listener "127.0.0.1:8080" name="public""#, r#"listener "127.0.0.1:8081" name="public""#]);
    let problem = expect_only(&text, "duplicate listener name `public`", 2, 27);
    assert!(help(&problem).contains("line 1"));
    // A name that equals another listener's address would make `listen` ambiguous.
    let text = lines(&[r#"listener "127.0.0.1:8080""#, r#"listener "127.0.0.1:8081" name="127.0.0.1:8080""#]);
    expect_only(&text, "duplicate listener name `127.0.0.1:8080`", 2, 27);
}

#[test]
fn duplicate_upstream_name() {
    let text = lines(&[LISTENER, UPSTREAM, "", UPSTREAM]);
    let problem = expect_only(&text, "duplicate upstream name `origins`", 4, 10);
    assert!(help(&problem).contains("line 2"));
}

#[test]
fn upstream_without_servers() {
    let text = lines(&[LISTENER, r#"upstream "empty" {"#, r#"    protocol "h2c""#, "}"]);
    let problem = expect_only(&text, "upstream `empty` has no servers", 2, 1);
    assert!(help(&problem).contains("server \"127.0.0.1:8081\""));
}

#[test]
fn invalid_upstream_server_addresses() {
    let text = lines(&[
        LISTENER,
        r#"upstream "u" {"#,
        r#"    server "origin.internal""#,
        r#"    server "origin.internal:0""#,
        r#"    server "origin.internal:http""#,
        r#"    server "::1:80""#,
        r#"    server "http://origin:80""#,
        r#"    server "bad_host!:80""#,
        r#"    server "[::1]:80""#,
        "}",
    ]);
    let err = err(&text);
    assert_eq!(err.problems().len(), 6, "{}", err.render(false));
    expect(&text, "invalid server address `origin.internal`: the port is missing", 3, 12);
    expect(&text, "invalid server address `origin.internal:0`: port 0", 4, 12);
    expect(&text, "`http` is not a port number", 5, 12);
    let problem = expect(&text, "invalid server address `::1:80`", 6, 12);
    assert!(help(&problem).contains("brackets"));
    let problem = expect(&text, "no scheme allowed", 7, 12);
    assert!(help(&problem).contains("remove `http://`"));
    expect(&text, "invalid character '!'", 8, 12);
}

#[test]
fn proxy_to_an_undefined_upstream_lists_defined_ones() {
    let text = lines(&[
        LISTENER,
        UPSTREAM,
        r#"upstream "static" { server "127.0.0.1:9001"; }"#,
        r#"site "*" {"#,
        r#"    route "/" { proxy "orgins"; }"#,
        "}",
    ]);
    let problem = expect_only(&text, "unknown upstream `orgins`", 5, 23);
    assert_eq!(help(&problem), "did you mean `origins`? defined upstreams: origins, static");
}

#[test]
fn proxy_without_any_upstream_defined() {
    let text = lines(&[LISTENER, r#"site "*" { route "/" { proxy "api"; }; }"#]);
    let problem = expect_only(&text, "unknown upstream `api`", 2, 30);
    assert!(help(&problem).contains("no upstream is defined"));
}

#[test]
fn listen_naming_an_unknown_listener() {
    let text = lines(&[
        r#"listener "127.0.0.1:8080" name="public""#,
        r#"site "*" {"#,
        r#"    listen "public" "pubic""#,
        r#"    route "/" { respond 200; }"#,
        "}",
    ]);
    let problem = expect_only(&text, "unknown listener `pubic`", 3, 21);
    assert_eq!(help(&problem), "did you mean `public`? defined listeners: public");
}

#[test]
fn two_sites_claiming_the_same_host_on_one_listener() {
    let text = lines(&[
        LISTENER,
        r#"site "example.com" { route "/" { respond 200; }; }"#,
        r#"site "www.example.com" "EXAMPLE.com" { route "/" { respond 200; }; }"#,
    ]);
    let problem = expect_only(&text, "host `example.com` is already served on listener `127.0.0.1:8080`", 3, 24);
    assert!(help(&problem).contains("line 2"));
}

#[test]
fn duplicate_wildcard_and_duplicate_default_site() {
    let text = lines(&[
        r#"listener "127.0.0.1:8080" name="a""#,
        r#"listener "127.0.0.1:8081" name="b""#,
        r#"site "*" "*.example.com" { listen "b"; route "/" { respond 200; }; }"#,
        r#"site "*" { route "/" { respond 200; }; }"#,
        r#"site "*.example.com" { listen "a"; route "/" { respond 200; }; }"#,
        r#"site "*.Example.com" { listen "b"; route "/" { respond 200; }; }"#,
    ]);
    let err = err(&text);
    assert_eq!(err.problems().len(), 2, "{}", err.render(false));
    expect(&text, "duplicate default site (`*`) on listener `b`", 4, 6);
    expect(&text, "host pattern `*.example.com` is already served on listener `b`", 6, 6);
}

#[test]
fn duplicate_routes_in_one_site() {
    let text = lines(&[
        LISTENER,
        r#"site "*" {"#,
        r#"    route "/api" { respond 200; }"#,
        r#"    route "/api" exact=#true { respond 200; }"#,
        r#"    route "/api" { methods "GET"; respond 201; }"#,
        r#"    route "/x" { methods "GET" "PUT"; respond 200; }"#,
        r#"    route "/x" { methods "put"; respond 200; }"#,
        r#"    route "/x" { methods "POST"; respond 200; }"#,
        "}",
    ]);
    let err = err(&text);
    assert_eq!(err.problems().len(), 2, "{}", err.render(false));
    let problem = expect(&text, "duplicate route: `/api` (prefix match)", 5, 11);
    assert!(help(&problem).contains("line 3"));
    expect(&text, "duplicate route: `/x` (prefix match)", 7, 11);
}

#[test]
fn route_without_action() {
    let text = lines(&[LISTENER, r#"site "*" {"#, r#"    route "/" { methods "GET"; }"#, "}"]);
    let problem = expect_only(&text, "route has no action", 3, 5);
    assert!(help(&problem).contains("proxy"));
}

#[test]
fn route_path_must_start_with_a_slash() {
    let text = lines(&[LISTENER, r#"site "*" {"#, r#"    route "api" { respond 200; }"#, "}"]);
    expect_only(&text, "invalid route path `api`: route path must start with `/`", 3, 11);
    let text = lines(&[LISTENER, r#"site "*" { route "/a?b=1" { respond 200; }; }"#]);
    expect_only(&text, "must not contain a query", 2, 18);
}

#[test]
fn invalid_header_names_and_values() {
    let text = lines(&[
        LISTENER,
        r#"site "*" {"#,
        r#"    request-headers {"#,
        r#"        set "X Bad" "1""#,
        r#"        add "x-ok" "line\nbreak""#,
        r#"        remove "x-ok" "bad:name""#,
        r#"    }"#,
        r#"    route "/" { respond 200 { header "content-type" "caf\u{e9}"; }; }"#,
        "}",
    ]);
    let err = err(&text);
    assert_eq!(err.problems().len(), 4, "{}", err.render(false));
    let problem = expect(&text, "invalid header name `X Bad`", 4, 13);
    assert!(help(&problem).contains("letters, digits"));
    let problem = expect(&text, "invalid header value", 5, 20);
    assert!(help(&problem).contains("visible ASCII"));
    expect(&text, "invalid header name `bad:name`", 6, 23);
    expect(&text, "invalid header value \"café\"", 8, 53);
}

#[test]
fn strip_prefix_together_with_rewrite_prefix() {
    let text = lines(&[
        LISTENER,
        UPSTREAM,
        r#"site "*" {"#,
        r#"    route "/api" { proxy "origins" strip-prefix=#true rewrite-prefix="/v2"; }"#,
        "}",
    ]);
    let problem = expect_only(&text, "`strip-prefix` and `rewrite-prefix` cannot be used together", 4, 55);
    assert!(help(&problem).contains("keep only one"));
}

#[test]
fn proxy_properties_are_checked() {
    let text =
        lines(&[LISTENER, UPSTREAM, r#"site "*" { route "/" { proxy "origins" rewrite-prefix="v2" host="a b"; }; }"#]);
    expect(&text, "invalid rewrite-prefix `v2`", 3, 40);
    expect(&text, "invalid host `a b`", 3, 60);
}

#[test]
fn bad_status_codes() {
    let text = lines(&[
        LISTENER,
        r#"site "*" {"#,
        r#"    route "/a" { respond 99; }"#,
        r#"    route "/b" { respond 600 "x"; }"#,
        r#"    route "/c" { redirect 200 "https://example.com/"; }"#,
        r#"    route "/d" { redirect 304 "https://example.com/"; }"#,
        "}",
    ]);
    let err = err(&text);
    assert_eq!(err.problems().len(), 4, "{}", err.render(false));
    let problem = expect(&text, "invalid status code 99 for `respond`", 3, 26);
    assert!(help(&problem).contains("200 to 599"));
    expect(&text, "invalid status code 600 for `respond`", 4, 26);
    let problem = expect(&text, "200 is not a redirect status", 5, 27);
    assert!(help(&problem).contains("301 or 308"));
    expect(&text, "304 is not a redirect status", 6, 27);
}

#[test]
fn redirect_placeholders_are_checked() {
    let text = lines(&[
        LISTENER,
        r#"site "*" {"#,
        r#"    route "/a" { redirect 302 "https://{hostname}/"; }"#,
        r#"    route "/b" { redirect 302 "https://{host/"; }"#,
        r#"    route "/c" { redirect 302 "{scheme}://{host}{path}{query}{uri}"; }"#,
        "}",
    ]);
    let err = err(&text);
    assert_eq!(err.problems().len(), 2, "{}", err.render(false));
    let problem = expect(&text, "unknown placeholder `{hostname}` in redirect location", 3, 31);
    assert!(help(&problem).contains("{scheme}, {host}, {path}, {query} and {uri}"));
    expect(&text, "unclosed `{`", 4, 31);
}

#[test]
fn max_header_size_out_of_range() {
    let text = lines(&[
        r#"listener "127.0.0.1:8080" { max-header-size "4KiB"; }"#,
        r#"listener "127.0.0.1:8081" { max-header-size "17MiB"; }"#,
    ]);
    let problem = expect(&text, "`max-header-size` must be at least 8192 bytes", 1, 45);
    assert!(help(&problem).contains("hyper"), "{problem:?}");
    expect(&text, "`max-header-size` must be at most 16 MiB", 2, 45);
}

#[test]
fn invalid_host_patterns() {
    let text = lines(&[LISTENER, r#"site "example.com:8080" "a b" "foo.*.com" { route "/" { respond 200; }; }"#]);
    let err = err(&text);
    assert_eq!(err.problems().len(), 3, "{}", err.render(false));
    let problem = expect(&text, "host patterns do not include a port", 2, 6);
    assert!(help(&problem).contains("write \"example.com\""));
    expect(&text, "invalid host pattern `a b`: it contains whitespace", 2, 25);
    expect(&text, "invalid host pattern `foo.*.com`", 2, 31);
}

#[test]
fn invalid_methods() {
    let text = lines(&[LISTENER, r#"site "*" { route "/" { methods "GET" "NOT A METHOD"; respond 200; }; }"#]);
    expect_only(&text, "invalid HTTP method `NOT A METHOD`", 2, 38);
}

#[test]
fn otlp_over_https_is_refused_with_a_clear_reason() {
    let text = lines(&[
        LISTENER,
        "server {",
        "    tracing {",
        r#"        otlp "https://collector:4318/v1/traces""#,
        "    }",
        "}",
    ]);
    let problem = expect_only(&text, "OTLP over HTTPS is not supported", 4, 14);
    assert!(help(&problem).contains("only plain http OTLP is supported for now"), "{problem:?}");
}

#[test]
fn invalid_otlp_endpoints() {
    for (endpoint, needle) in [
        ("grpc://collector:4317", "invalid OTLP endpoint `grpc://collector:4317`: it must start with `http://`"),
        ("collector:4318/v1/traces", "it must start with `http://`"),
        ("http://collector/v1/traces", "the OTLP endpoint `http://collector/v1/traces` has no port"),
        ("http://collector:4318", "the OTLP endpoint `http://collector:4318` has no path"),
        ("http://:4318/v1/traces", "invalid OTLP endpoint `http://:4318/v1/traces`"),
        ("http://user:secret@collector:4318/v1/traces", "user names and passwords are not allowed"),
        ("http://collector:99999/v1/traces", "`99999` is not a port"),
        ("http://collector:0/v1/traces", "`0` is not a port"),
        ("http://collector:4318/v1/traces#x", "a `#fragment` is not allowed"),
    ] {
        let text = lines(&[LISTENER, &format!("server {{ tracing {{ otlp {endpoint:?}; }} }}")]);
        let problem = expect_only(&text, needle, 2, 25);
        assert!(help(&problem).contains("http://127.0.0.1:4318/v1/traces"), "{problem:?}");
    }
}

#[test]
fn a_route_protected_for_some_methods_only_warns_about_the_others() {
    let text = r#"listener "127.0.0.1:8080"
upstream "app" { server "127.0.0.1:8080" }
site "*" {
    route "/admin" {
        methods "GET" "POST"
        allow "10.0.0.0/8"
        deny "all"
        proxy "app"
    }
    route "/" { proxy "app" }
}
"#;
    let config = sluice_config::parse("sluice.kdl", text).unwrap();
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].starts_with("sluice.kdl:4:"), "{:?}", config.warnings);
    assert!(config.warnings[0].contains("covers only GET, POST"), "{:?}", config.warnings);
    // Every method protected: no warning.
    let all = text.replace("        methods \"GET\" \"POST\"\n", "");
    assert!(sluice_config::parse("sluice.kdl", &all).unwrap().warnings.is_empty());
}

#[test]
fn issue_15_options_with_bad_values_point_at_the_value() {
    let text = lines(&["listener \"127.0.0.1:8080\" {", "    escaped-slashes \"maybe\"", "}"]);
    let problem = expect_only(&text, "`escaped-slashes` is \"reject\", \"decode\" or \"keep\"", 2, 21);
    assert!(help(&problem).contains("decode routes %2F"), "{problem:?}");
    let text = lines(&[
        LISTENER,
        "upstream \"origins\" {",
        "    server \"127.0.0.1:9000\"",
        "    max-header-size \"100\"",
        "}",
    ]);
    expect_only(&text, "`max-header-size` must be between 1 KiB and 16 MiB, found 100", 4, 21);
    let text = lines(&[
        LISTENER,
        UPSTREAM,
        "site \"*\" {",
        "    route \"/\" { proxy \"origins\" grpc-timeout-max=\"0s\"; }",
        "}",
    ]);
    expect_only(&text, "the duration must be greater than zero", 4, 33);
    let text = lines(&[LISTENER, UPSTREAM, "site \"*\" {", "    route \"/\" { proxy \"origins\" streaming=1; }", "}"]);
    expect_only(&text, "expected a boolean (#true or #false)", 4, 33);
    let text = lines(&[
        LISTENER,
        UPSTREAM,
        "site \"*\" {",
        "    cache { targeted-cache-control \"not a name\"; }",
        "    route \"/\" { proxy \"origins\"; }",
        "}",
    ]);
    expect_only(&text, "`not a name` is not a header name", 4, 36);
}
