use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use super::*;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn http_date(secs: u64) -> String {
    httpdate::fmt_http_date(at(secs))
}

#[test]
fn directives_are_parsed_case_insensitively_with_quotes_and_lists() {
    let d = Directives::parse(&headers(&[
        ("cache-control", "Public, MAX-AGE=60, no-cache=\"set-cookie, x-a\""),
        ("cache-control", "s-maxage=\"120\", stale-while-revalidate=30, max-age=5"),
    ]));
    assert!(d.public && d.no_cache);
    assert_eq!(d.max_age, Some(60), "the first max-age wins");
    assert_eq!(d.s_maxage, Some(120));
    assert_eq!(d.stale_while_revalidate, Some(30));
    let r = Directives::parse(&headers(&[("cache-control", "max-stale, min-fresh=10, only-if-cached")]));
    assert_eq!(r.max_stale, Some(None));
    assert_eq!(r.min_fresh, Some(10));
    assert!(r.only_if_cached);
    assert_eq!(Directives::parse(&HeaderMap::new()), Directives::default());
}

#[test]
fn what_may_be_stored() {
    let o = Overrides::default();
    let none = Directives::default();
    let get = Method::GET;
    let ok = |status: u16, resp: &[(&'static str, &str)], req: &[(&'static str, &str)]| {
        let (req, resp) = (headers(req), headers(resp));
        let (rd, d) = (Directives::parse(&req), Directives::parse(&resp));
        storable(&get, &req, &rd, StatusCode::from_u16(status).unwrap(), &resp, &d, &o)
    };
    assert_eq!(ok(200, &[], &[]), Ok(()), "200 is heuristically cacheable");
    assert_eq!(ok(200, &[("cache-control", "no-store")], &[]), Err("no-store"));
    assert_eq!(ok(200, &[], &[("cache-control", "no-store")]), Err("no-store"));
    assert_eq!(ok(200, &[("cache-control", "private, max-age=60")], &[]), Err("private"));
    assert_eq!(ok(200, &[("set-cookie", "a=b"), ("cache-control", "max-age=60")], &[]), Err("set-cookie"));
    assert_eq!(ok(200, &[("vary", "accept, *")], &[]), Err("vary-star"));
    assert_eq!(ok(206, &[("cache-control", "max-age=60")], &[]), Err("status"));
    assert_eq!(ok(302, &[], &[]), Err("status"), "302 needs explicit freshness");
    assert_eq!(ok(302, &[("cache-control", "max-age=60")], &[]), Ok(()));
    assert_eq!(ok(500, &[], &[]), Err("status"));
    // Authorization: only with public, s-maxage or must-revalidate.
    let auth = [("authorization", "Bearer x")];
    assert_eq!(ok(200, &[("cache-control", "max-age=60")], &auth), Err("authorization"));
    assert_eq!(ok(200, &[("cache-control", "s-maxage=60")], &auth), Ok(()));
    assert_eq!(ok(200, &[("cache-control", "public")], &auth), Ok(()));
    assert_eq!(
        storable(&Method::POST, &HeaderMap::new(), &none, StatusCode::OK, &HeaderMap::new(), &none, &o),
        Err("method")
    );
    // Overrides.
    let o2 = Overrides { store_set_cookie: true, store_private: true, ..Default::default() };
    let resp = headers(&[("set-cookie", "a=b"), ("cache-control", "private, max-age=1")]);
    let d = Directives::parse(&resp);
    assert_eq!(storable(&get, &HeaderMap::new(), &none, StatusCode::OK, &resp, &d, &o2), Ok(()));
}

#[test]
fn freshness_lifetime_follows_the_rfc_order() {
    let o = Overrides { heuristic_max: Duration::from_secs(86_400), ..Default::default() };
    let now = at(1_000_000);
    let life = |status: u16, pairs: &[(&'static str, &str)]| {
        let h = headers(pairs);
        freshness_lifetime(StatusCode::from_u16(status).unwrap(), &h, &Directives::parse(&h), &o, now)
    };
    assert_eq!(life(200, &[("cache-control", "max-age=60, s-maxage=120")]), Duration::from_secs(120), "s-maxage first");
    assert_eq!(life(200, &[("cache-control", "max-age=60")]), Duration::from_secs(60));
    let date = http_date(1_000_000);
    let expires = http_date(1_000_300);
    assert_eq!(life(200, &[("date", &date), ("expires", &expires)]), Duration::from_secs(300));
    assert_eq!(life(200, &[("date", &date), ("expires", "0")]), Duration::ZERO, "invalid Expires: expired");
    assert_eq!(life(200, &[("cache-control", "max-age=10"), ("expires", &expires)]), Duration::from_secs(10));
    // Heuristic: 10 % of the time since Last-Modified, capped.
    let modified = http_date(1_000_000 - 10_000);
    assert_eq!(life(200, &[("date", &date), ("last-modified", &modified)]), Duration::from_secs(1_000));
    let long_ago = http_date(10);
    assert_eq!(life(200, &[("date", &date), ("last-modified", &long_ago)]), Duration::from_secs(86_400));
    assert_eq!(life(302, &[("date", &date), ("last-modified", &modified)]), Duration::ZERO, "no heuristic for 302");
    assert_eq!(life(200, &[]), Duration::ZERO);

    let configured = Overrides {
        default_ttl: vec![(200, Duration::from_secs(30)), (404, Duration::from_secs(5))],
        override_ttl: vec![(301, Duration::from_secs(3600))],
        ..o.clone()
    };
    let h = HeaderMap::new();
    let d = Directives::default();
    assert_eq!(freshness_lifetime(StatusCode::OK, &h, &d, &configured, now), Duration::from_secs(30));
    assert_eq!(freshness_lifetime(StatusCode::NOT_FOUND, &h, &d, &configured, now), Duration::from_secs(5));
    let explicit = headers(&[("cache-control", "max-age=7")]);
    let de = Directives::parse(&explicit);
    assert_eq!(
        freshness_lifetime(StatusCode::OK, &explicit, &de, &configured, now),
        Duration::from_secs(7),
        "explicit beats default"
    );
    assert_eq!(
        freshness_lifetime(StatusCode::MOVED_PERMANENTLY, &explicit, &de, &configured, now),
        Duration::from_secs(3600),
        "override beats explicit"
    );
}

#[test]
fn current_age_corrects_for_delay_and_residence() {
    let date = http_date(1_000);
    let h = headers(&[("date", &date), ("age", "5")]);
    // Sent at 1000, received at 1002 (2 s delay), now 1010: 5 + 2 + 8 = 15.
    assert_eq!(current_age(&h, at(1_000), at(1_002), at(1_010)), Duration::from_secs(15));
    // A Date in the past dominates a small Age.
    let old = headers(&[("date", &http_date(900))]);
    assert_eq!(current_age(&old, at(1_000), at(1_000), at(1_000)), Duration::from_secs(100));
    assert_eq!(current_age(&HeaderMap::new(), at(1_000), at(1_000), at(1_030)), Duration::from_secs(30));
    let _ = header::AGE;
}

#[test]
fn age_lists_count_by_their_first_member_and_junk_is_invalid() {
    let with_age = |v: &str| {
        let mut h = HeaderMap::new();
        h.insert(header::AGE, v.parse().unwrap());
        age_value(&h)
    };
    assert_eq!(age_value(&HeaderMap::new()), Ok(Duration::ZERO));
    assert_eq!(with_age("7200, 0"), Ok(Duration::from_secs(7200)));
    assert_eq!(with_age(" 5 "), Ok(Duration::from_secs(5)));
    assert_eq!(with_age("99999999999999999999999"), Ok(Duration::from_secs(1 << 31)));
    assert!(with_age("soon").is_err());
    assert!(with_age("-1").is_err());
    assert!(with_age(", 5").is_err());
}

#[test]
fn a_targeted_field_parses_like_cache_control() {
    let mut h = HeaderMap::new();
    h.insert("cdn-cache-control", "max-age=60, stale-if-error=30".parse().unwrap());
    let d = Directives::parse_field(&h, &header::HeaderName::from_static("cdn-cache-control"));
    assert_eq!((d.max_age, d.stale_if_error), (Some(60), Some(30)));
}
