//! The parsers that read client and origin bytes (request paths, `Range`,
//! `Cache-Control`, `Accept-Encoding`, cache keys) never panic, and keep their promises, on
//! random and hostile input. A fixed-seed generator makes every run the same; cargo-fuzz
//! needs a nightly toolchain this project does not use, so this is the stable stand-in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::header::{HeaderMap, HeaderValue};
use sluice_filters::cache::key;
use sluice_filters::cache::policy::Directives;
use sluice_filters::files::path::{normalize, Refused};
use sluice_filters::files::range::{self, Ranges};

/// Bytes drawn mostly from the characters these parsers care about.
fn hostile(rng: &mut fastrand::Rng, max: usize) -> String {
    const ALPHABET: &[u8] = b"/.%2eEfF0159aZ-=,; \\t\\\"*qbytes=\\x00";
    let len = rng.usize(0..max);
    let bytes: Vec<u8> = (0..len)
        .map(|_| if rng.u8(0..10) == 0 { rng.u8(..) } else { ALPHABET[rng.usize(0..ALPHABET.len())] })
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn request_paths_never_escape() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..200_000 {
        let path = format!("/{}", hostile(&mut rng, 40));
        match normalize(&path) {
            Ok(n) => {
                for s in &n.segments {
                    assert!(!s.is_empty() && s != "." && s != "..", "{path:?} -> {s:?}");
                    assert!(!s.contains('/') && !s.contains('\0'), "{path:?} -> {s:?}");
                }
            }
            Err(Refused::Traversal | Refused::Malformed) => {}
        }
    }
}

#[test]
fn ranges_stay_inside_the_representation() {
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..200_000 {
        let header = format!("bytes={}", hostile(&mut rng, 30).replace(' ', ""));
        let len = rng.u64(0..1000);
        if let Ranges::Some(ranges) = range::parse(&header, len) {
            let mut last_end: Option<u64> = None;
            for (start, end) in ranges {
                assert!(start <= end && end < len, "{header:?} len {len}: {start}-{end}");
                if let Some(previous) = last_end {
                    assert!(start > previous + 1, "{header:?}: not coalesced");
                }
                last_end = Some(end);
            }
        }
    }
}

#[test]
fn header_parsers_take_anything() {
    let mut rng = fastrand::Rng::with_seed(13);
    for _ in 0..100_000 {
        let mut h = HeaderMap::new();
        for name in ["cache-control", "accept-encoding", "vary", "cookie", "expires", "age", "date", "last-modified"] {
            if let Ok(v) = HeaderValue::from_str(&hostile(&mut rng, 60)) {
                h.append(name, v);
            }
        }
        let d = Directives::parse(&h);
        let _ = sluice_filters::files::accepted_q(&h, "gzip");
        let names = key::vary_names(&h);
        let _ = key::secondary(&names, &h);
        let settings = key::KeySettings { sort_query: true, cookies: vec!["a".into()], ..Default::default() };
        let _ = key::primary(&settings, "http", "h", "/", Some(&hostile(&mut rng, 30)), &h);
        let now = std::time::SystemTime::now();
        let overrides = sluice_filters::cache::policy::Overrides::default();
        let _ = sluice_filters::cache::policy::freshness_lifetime(http::StatusCode::OK, &h, &d, &overrides, now);
        let _ = sluice_filters::cache::policy::current_age(&h, now, now, now);
    }
}

#[test]
fn routing_normalization_is_idempotent_and_leaves_no_dot_segments() {
    let mut rng = fastrand::Rng::with_seed(17);
    let crafted = ["/%%36%31dmin", "/%%2e%2e/admin", "/%2%35%36%31", "/%25%36%31"];
    let random: Vec<String> = (0..200_000).map(|_| format!("/{}", hostile(&mut rng, 40))).collect();
    for path in crafted.iter().map(|p| p.to_string()).chain(random) {
        let once = sluice_filters::normalize::path(&path).into_owned();
        assert!(once.starts_with('/'), "{path:?} -> {once:?}");
        assert!(!once.split('/').any(|s| s == "." || s == ".."), "{path:?} -> {once:?}");
        assert!(!once.contains("//"), "{path:?} -> {once:?}");
        assert_eq!(sluice_filters::normalize::path(&once), once.as_str(), "{path:?}: not idempotent");
    }
}
