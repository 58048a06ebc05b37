//! Problems with the shape of the file: syntax, unknown names, arguments, properties,
//! children, value types and repeated nodes. Each is checked for message and location.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{err, expect, expect_only, help, lines};

const LISTENER: &str = r#"listener "127.0.0.1:8080""#;

#[test]
fn syntax_error_is_located() {
    let text = lines(&[LISTENER, r#"listener "127.0.0.1:8081" {"#, "    h2c #tru", "}"]);
    let problem = expect(&text, "syntax error", 3, 9);
    assert!(help(&problem).contains("#true"), "{problem:?}");
}

#[test]
fn several_syntax_errors_are_all_reported() {
    let text = lines(&[LISTENER, r#"server { worker-threads 1. }"#, r#"site "x"#, r#"upstream "u" {"#]);
    let err = err(&text);
    let located: Vec<usize> = err.problems().iter().map(|p| p.line).collect();
    assert!(err.problems().len() >= 3, "{}", err.render(false));
    assert!(located.contains(&2) && located.contains(&3) && located.contains(&4), "{located:?}");
}

#[test]
fn unknown_node_in_a_block_lists_valid_nodes_and_suggests_a_near_miss() {
    let text = lines(&[r#"listener "127.0.0.1:8080" {"#, "    max-conections 10", "}"]);
    let problem = expect_only(&text, "unknown node `max-conections` in `listener`", 2, 5);
    assert!(help(&problem).contains("did you mean `max-connections`?"), "{problem:?}");
    assert!(
        help(&problem).contains(
            "valid nodes here: max-connections, max-header-size, header-read-timeout, keepalive-timeout, h2c"
        ),
        "{problem:?}"
    );
}

#[test]
fn unknown_top_level_node() {
    let text = lines(&[LISTENER, "", r#"  sever { worker-threads 2; }"#]);
    let problem = expect_only(&text, "unknown top-level node `sever`", 3, 3);
    assert!(help(&problem).contains("did you mean `server`?"));
    assert!(help(&problem).contains("valid nodes here: server, listener, upstream, site"));
}

#[test]
fn unknown_nodes_deep_inside_are_reported() {
    let text = lines(&[
        LISTENER,
        r#"site "*" {"#,
        r#"    route "/" {"#,
        r#"        respond 200 { headr "a" "b"; }"#,
        r#"        response-headers { delete "x"; }"#,
        r#"    }"#,
        r#"}"#,
    ]);
    expect(&text, "unknown node `headr` in `respond`", 4, 23);
    let problem = expect(&text, "unknown node `delete` in `response-headers`", 5, 28);
    assert!(help(&problem).contains("valid nodes here: set, add, remove"));
}

#[test]
fn unknown_property_lists_valid_properties() {
    let text = lines(&[r#"listener "127.0.0.1:8080" nmae="public""#]);
    let problem = expect_only(&text, "unknown property `nmae` on `listener`", 1, 27);
    assert!(help(&problem).contains("did you mean `name`? valid properties: name"), "{problem:?}");

    let text =
        lines(&[LISTENER, r#"upstream "u" {"#, r#"    server "h:1""#, r#"    pool max-idle=1 timeout="1s""#, "}"]);
    let problem = expect_only(&text, "unknown property `timeout` on `pool`", 4, 21);
    assert!(help(&problem).contains("valid properties: max-idle, idle-timeout"));
}

#[test]
fn property_on_a_node_without_properties() {
    let text = lines(&[LISTENER, r#"server { worker-threads 4 max=8; }"#]);
    let problem = expect_only(&text, "unknown property `max` on `worker-threads`", 2, 27);
    assert!(help(&problem).contains("takes no properties"));
}

#[test]
fn repeated_property() {
    let text = lines(&[LISTENER, r#"site "*" { route "/" exact=#true exact=#false { respond 200; }; }"#]);
    expect_only(&text, "property `exact` given twice on `route`", 2, 34);
}

#[test]
fn unexpected_extra_argument() {
    let text = lines(&[LISTENER, "server {", "    worker-threads 4 5", "}"]);
    let problem = expect_only(&text, "unexpected extra argument to `worker-threads`", 3, 22);
    assert!(help(&problem).contains("worker-threads 4"));

    let text = lines(&[LISTENER, r#"upstream "u" "v" { server "h:1"; }"#]);
    expect_only(&text, "unexpected extra argument to `upstream`", 2, 14);
}

#[test]
fn missing_required_argument() {
    let text = lines(&[LISTENER, "", "listener {", "    h2c #true", "}"]);
    let problem = expect_only(&text, "`listener` needs an argument", 3, 1);
    assert!(help(&problem).contains(r#"listener "127.0.0.1:8080""#));

    let text = lines(&[LISTENER, r#"site "*" { route "/" { redirect 301; }; }"#]);
    expect_only(&text, "`redirect` needs 2 arguments, found 1", 2, 24);
}

#[test]
fn children_block_where_none_is_allowed() {
    let text = lines(&[r#"listener "127.0.0.1:8080" {"#, "    h2c #true { x 1; }", "}"]);
    let problem = expect_only(&text, "`h2c` does not take a children block", 2, 17);
    assert!(help(&problem).contains("remove the `{ ... }` block"));
}

#[test]
fn type_errors_say_what_was_expected_and_found() {
    let text = lines(&[
        "server {",
        "    worker-threads \"4\"",
        "    shutdown-grace #true",
        "}",
        "listener 8080",
        r#"listener "127.0.0.1:8081" {"#,
        r#"    h2c "yes""#,
        "    max-header-size 1.5",
        "}",
    ]);
    let problem = expect(&text, "expected an integer, found a string (\"4\")", 2, 20);
    assert!(help(&problem).contains("without quotes"));
    let problem = expect(&text, "expected a duration like \"30s\", found a boolean (#true)", 3, 20);
    assert!(help(&problem).contains("\"500ms\""));
    expect(&text, "expected a string, found an integer (8080)", 5, 10);
    let problem = expect(&text, "expected a boolean (#true or #false), found a string (\"yes\")", 7, 9);
    assert_eq!(help(&problem), "write #true or #false");
    expect(&text, "expected a size like \"64KiB\", found a number (1.5)", 8, 21);
    assert_eq!(err(&text).problems().len(), 5);
}

#[test]
fn invalid_durations_and_sizes() {
    let text = lines(&[
        r#"listener "127.0.0.1:8080" {"#,
        r#"    header-read-timeout "30 seconds""#,
        r#"    keepalive-timeout "0s""#,
        r#"    max-header-size "64KB""#,
        "}",
        r#"server { shutdown-grace -5; }"#,
    ]);
    expect(&text, "invalid duration", 2, 25);
    expect(&text, "the duration must be greater than zero", 3, 23);
    expect(&text, "invalid size: unknown unit `KB`", 4, 21);
    expect(&text, "invalid duration: a duration cannot be negative", 6, 25);
}

#[test]
fn zero_and_negative_numbers_where_not_allowed() {
    let text = lines(&[r#"listener "127.0.0.1:8080" { max-connections 0; }"#, "server { worker-threads -2; }"]);
    expect(&text, "expected a positive integer, found 0", 1, 45);
    expect(&text, "expected a positive integer, found -2", 2, 25);
    let text = lines(&[LISTENER, r#"upstream "u" { server "h:1" weight=0; }"#]);
    expect_only(&text, "expected a positive integer, found 0", 2, 29);
    let text = lines(&[LISTENER, "server { worker-threads 2000; }"]);
    let problem = expect_only(&text, "2000 is out of range", 2, 25);
    assert!(help(&problem).contains("between 1 and 1024"));
}

#[test]
fn unknown_choice_values() {
    let text = lines(&[LISTENER, r#"server { access-log "stdout" format="xml"; }"#]);
    let problem = expect_only(&text, "unknown access log format `xml`", 2, 30);
    assert!(help(&problem).contains("valid values: json, text"));
}

#[test]
fn singleton_node_given_twice() {
    let text = lines(&[
        LISTENER,
        r#"upstream "u" {"#,
        r#"    server "h:1""#,
        r#"    protocol "http1""#,
        r#"    protocol "h2c""#,
        r#"}"#,
    ]);
    let problem = expect_only(&text, "`protocol` given twice in `upstream`", 5, 5);
    assert!(help(&problem).contains("line 4"), "{problem:?}");
}

#[test]
fn server_block_given_twice() {
    let text = lines(&["server { worker-threads 1; }", LISTENER, "server { worker-threads 2; }"]);
    expect_only(&text, "`server` given twice at the top level", 3, 1);
}

#[test]
fn two_actions_in_a_route() {
    let text = lines(&[
        LISTENER,
        r#"upstream "u" { server "h:1"; }"#,
        r#"site "*" {"#,
        r#"    route "/" {"#,
        r#"        proxy "u""#,
        r#"        respond 200"#,
        r#"    }"#,
        r#"}"#,
    ]);
    let problem = expect_only(&text, "route has a second action `respond`", 6, 9);
    assert!(help(&problem).contains("already has `proxy` at line 5"));
}

#[test]
fn header_edit_blocks_and_methods_once_per_route() {
    let text = lines(&[
        LISTENER,
        r#"site "*" {"#,
        r#"    route "/" { methods "GET"; methods "POST"; respond 200; }"#,
        r#"    request-headers { set "a" "b"; }"#,
        r#"    request-headers { set "c" "d"; }"#,
        r#"}"#,
    ]);
    expect(&text, "`methods` given twice in `route`", 3, 32);
    expect(&text, "`request-headers` given twice in `site`", 5, 5);
}

#[test]
fn tracing_without_an_endpoint() {
    let text = lines(&[LISTENER, r#"server { tracing { service-name "edge"; } }"#]);
    let problem = expect_only(&text, "`tracing` needs an `otlp` endpoint", 2, 10);
    assert!(help(&problem).contains("otlp \"http://"), "{problem:?}");
}

#[test]
fn tracing_children_are_checked() {
    let text = lines(&[
        LISTENER,
        "server {",
        "    tracing {",
        r#"        otlp "http://127.0.0.1:4318/v1/traces""#,
        r#"        servce-name "edge""#,
        "        batch-size 0",
        r#"        flush-interval "0s""#,
        "        queue 2000000",
        "    }",
        "}",
    ]);
    assert_eq!(err(&text).problems().len(), 4, "{}", err(&text).render(false));
    let problem = expect(&text, "unknown node `servce-name` in `tracing`", 5, 9);
    assert!(help(&problem).contains("did you mean `service-name`?"), "{problem:?}");
    expect(&text, "expected a positive integer, found 0", 6, 20);
    expect(&text, "the duration must be greater than zero", 7, 24);
    expect(&text, "2000000 is out of range", 8, 15);
}

#[test]
fn compress_settings_are_checked() {
    let text = lines(&[
        LISTENER,
        r#"site "*" {"#,
        r#"    route "/" { respond 200; }"#,
        r#"    compress {"#,
        r#"        codings "gzip" "deflate" "gzip""#,
        r#"        level gzip=10 zstd=22"#,
        r#"        min-size "1KB""#,
        r#"        types "text/html; charset=utf-8" "image/*""#,
        r#"        decompres #true"#,
        r#"    }"#,
        r#"}"#,
    ]);
    assert_eq!(err(&text).problems().len(), 7, "{}", err(&text).render(false));
    let problem = expect(&text, "unknown coding `deflate`", 5, 24);
    assert!(help(&problem).contains("valid values: zstd, br, gzip"), "{problem:?}");
    let problem = expect(&text, "coding listed twice in `codings`", 5, 34);
    assert!(help(&problem).contains("list each coding once"), "{problem:?}");
    let problem = expect(&text, "10 is out of range", 6, 15);
    assert!(help(&problem).contains("between 1 and 9"), "{problem:?}");
    let problem = expect(&text, "zstd levels 20 to 22 are not allowed for HTTP", 6, 23);
    assert!(help(&problem).contains("RFC 9659"), "{problem:?}");
    expect(&text, "invalid size: unknown unit `KB`", 7, 18);
    let problem = expect(&text, "invalid media type `text/html; charset=utf-8`", 8, 15);
    assert!(help(&problem).contains("without parameters"), "{problem:?}");
    let problem = expect(&text, "unknown node `decompres` in `compress`", 9, 9);
    assert!(help(&problem).contains("did you mean `decompress`?"), "{problem:?}");
    assert!(help(&problem).contains("valid nodes here: codings, level, min-size, types, decompress"), "{problem:?}");
}

#[test]
fn compress_shapes() {
    let text = lines(&[LISTENER, r#"site "*" { compress "yes"; route "/" { respond 200; compress { level; }; }; }"#]);
    expect(&text, "expected a boolean (#true or #false), found a string (\"yes\")", 2, 21);
    let problem = expect(&text, "`level` needs at least one of gzip=, br=, zstd=", 2, 64);
    assert!(help(&problem).contains("level gzip=5 br=4 zstd=3"), "{problem:?}");

    let text = lines(&[
        LISTENER,
        r#"site "*" {"#,
        r#"    compress"#,
        r#"    compress #false"#,
        r#"    route "/" {"#,
        r#"        respond 200"#,
        r#"        compress #false { level gzip=1; }"#,
        r#"    }"#,
        r#"}"#,
    ]);
    let problem = expect(&text, "`compress` given twice in `site`", 4, 5);
    assert!(help(&problem).contains("line 3"), "{problem:?}");
    let err = err(&text);
    let disabled = err.problems().iter().find(|p| p.message.contains("`compress #false` takes no settings block"));
    assert_eq!(disabled.map(|p| p.line), Some(7), "{}", err.render(false));
}
