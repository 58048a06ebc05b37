#![allow(clippy::unwrap_used)]

use super::*;

fn head(version: Version, target: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().uri(target).version(version);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn status(e: &Error) -> u16 {
    crate::status_for(e).as_u16()
}

#[test]
fn authorities_follow_the_uri_host_grammar() {
    for ok in ["a", "example.com", "Example.COM:8080", "127.0.0.1", "[::1]", "[::1]:443", "a-b_c~d", "x%41y", "h:65535"]
    {
        assert!(valid_authority(ok.as_bytes()), "{ok}");
    }
    for bad in [
        "",
        ":80",
        "evil.example/x",
        "a b",
        "a\\b",
        "a:",
        "a:99999",
        "a:123456",
        "a:8x",
        "[::1",
        "[::1]x",
        "[v1.x]",
        "[127.0.0.1]",
        "x%4",
        "x%zz",
        "a@b",
        "a#b",
        "a?b",
    ] {
        assert!(!valid_authority(bad.as_bytes()), "{bad:?}");
    }
}

#[test]
fn http11_needs_exactly_one_valid_host() {
    let mut two = head(Version::HTTP_11, "/x", &[("host", "public.example"), ("host", "admin.example")]);
    assert_eq!(status(&host_http1(&mut two).unwrap_err()), 400);
    let mut none = head(Version::HTTP_11, "/", &[]);
    assert_eq!(status(&host_http1(&mut none).unwrap_err()), 400);
    let mut bad = head(Version::HTTP_11, "/", &[("host", "evil.example/x")]);
    assert_eq!(status(&host_http1(&mut bad).unwrap_err()), 400);
    let mut http10 = head(Version::HTTP_10, "/", &[]);
    assert!(host_http1(&mut http10).is_ok());
    let mut upper = head(Version::HTTP_11, "/", &[("host", "Victim.Example:1337")]);
    host_http1(&mut upper).unwrap();
    assert_eq!(upper.headers[header::HOST], "victim.example:1337");
}

#[test]
fn the_absolute_form_authority_replaces_host() {
    let mut abs = head(Version::HTTP_11, "http://Other.example/abs", &[("host", "a")]);
    host_http1(&mut abs).unwrap();
    assert_eq!(abs.headers.get_all(header::HOST).iter().count(), 1);
    assert_eq!(abs.headers[header::HOST], "other.example");
    // Still exactly one Host field is required in HTTP/1.1.
    let mut without = head(Version::HTTP_11, "http://other.example/abs", &[]);
    assert!(host_http1(&mut without).is_err());
}

#[test]
fn request_target_forms_are_checked() {
    let uri = |s: &str| s.parse::<Uri>().unwrap();
    assert!(target_form(&Method::GET, &uri("/a")).is_ok());
    assert!(target_form(&Method::OPTIONS, &uri("*")).is_ok());
    assert!(target_form(&Method::GET, &uri("*")).is_err());
    assert!(target_form(&Method::GET, &uri("example.com:80")).is_err());
    assert!(target_form(&Method::GET, &uri("ftp://example.com/")).is_err());
    assert!(target_form(&Method::GET, &uri("http://user@example.com/")).is_err());
    assert!(target_form(&Method::GET, &uri("https://example.com/")).is_ok());
}

#[test]
fn http2_host_must_match_authority() {
    let mut h2 = head(Version::HTTP_2, "https://secure.test/", &[("host", "other")]);
    assert_eq!(status(&host_http2(&mut h2).unwrap_err()), 400);
    let mut same = head(Version::HTTP_2, "https://secure.test/", &[("host", "SECURE.test")]);
    host_http2(&mut same).unwrap();
    assert_eq!(same.headers[header::HOST], "secure.test");
    let mut neither = head(Version::HTTP_2, "/", &[]);
    assert!(host_http2(&mut neither).is_err());
}

#[test]
fn transfer_encoding_must_be_one_list_ending_in_chunked() {
    let te = |values: &[&str]| {
        let headers: Vec<(&str, &str)> = values.iter().map(|v| ("transfer-encoding", *v)).collect();
        let h = head(Version::HTTP_11, "/", &headers);
        transfer_encoding(&h.headers, Version::HTTP_11).map_err(|e| status(&e))
    };
    assert_eq!(te(&["chunked"]), Ok(()));
    assert_eq!(te(&["Chunked"]), Ok(()));
    assert_eq!(te(&["chunked", "chunked"]), Err(400));
    assert_eq!(te(&[",chunked"]), Err(400));
    assert_eq!(te(&["chunked,"]), Err(400));
    assert_eq!(te(&["chunked, chunked"]), Err(400));
    assert_eq!(te(&["gzip"]), Err(400));
    assert_eq!(te(&["chunked, gzip"]), Err(400));
    assert_eq!(te(&["chunked;x=1"]), Err(400));
    assert_eq!(te(&["x y, chunked"]), Err(400));
    assert_eq!(te(&["gzip, chunked"]), Err(501));
    assert_eq!(te(&["foo;q=1, chunked"]), Err(501));
}

#[test]
fn http2_values_with_surrounding_whitespace_are_malformed() {
    let mut h = HeaderMap::new();
    h.insert("test1", HeaderValue::from_static("a b"));
    assert!(http2_field_values(&h).is_ok());
    h.insert("test1", HeaderValue::from_static("\ta\t"));
    assert_eq!(status(&http2_field_values(&h).unwrap_err()), 400);
    h.insert("test1", HeaderValue::from_static("a "));
    assert!(http2_field_values(&h).is_err());
}

#[test]
fn underscored_names_are_dropped_and_credentials_are_singletons() {
    let mut h = HeaderMap::new();
    h.insert("x_user_id", HeaderValue::from_static("admin"));
    h.insert("x-user-id", HeaderValue::from_static("alice"));
    drop_underscored(&mut h);
    assert!(h.get("x_user_id").is_none());
    assert_eq!(h["x-user-id"], "alice");
    h.append(header::AUTHORIZATION, HeaderValue::from_static("Basic a"));
    assert!(singleton(&h, &header::AUTHORIZATION).is_ok());
    h.append(header::AUTHORIZATION, HeaderValue::from_static("Basic b"));
    assert!(singleton(&h, &header::AUTHORIZATION).is_err());
}
