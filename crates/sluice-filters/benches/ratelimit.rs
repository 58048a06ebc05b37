//! What a local rate-limit check costs on the request path: keying a request (client
//! address, or a header) and the GCRA decision, for one hot key, for keys spread over
//! 100,000 clients, and for a new key every time under a full `max-keys` (eviction).
//!
//!     cargo bench -p sluice-filters --bench ratelimit
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use sluice_filters::ratelimit::{KeyPart, RateLimit};

fn limit(key: Vec<KeyPart>, max_keys: usize) -> RateLimit {
    // Never binds: every request takes the full allowed path.
    RateLimit::new("bench".into(), 1e9, 1_000_000, key, Duration::ZERO, max_keys)
}

fn bench(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("local rate limit");

    let l = limit(vec![KeyPart::ClientIp], 100_000);
    let hot = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    g.bench_function("client-ip, one hot key", |b| {
        b.iter(|| l.check(l.key_of(black_box(hot), &headers, 0)));
    });

    let l = limit(vec![KeyPart::ClientIp], 100_000);
    let mut n = 0u32;
    g.bench_function("client-ip, 100k clients in turn", |b| {
        b.iter(|| {
            n = (n + 1) % 100_000;
            l.check(l.key_of(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)), &headers, 0))
        });
    });

    let l = limit(vec![KeyPart::ClientIp], 100_000);
    let mut n = 0u64;
    g.bench_function("client-ip v6, a new /64 every time (evicting)", |b| {
        b.iter(|| {
            n += 1;
            let ip = Ipv6Addr::from((u128::from(n) << 64) | 1);
            l.check(l.key_of(IpAddr::V6(ip), &headers, 0))
        });
    });

    let l = limit(vec![KeyPart::Header(http::HeaderName::from_static("x-api-key"))], 100_000);
    let mut with_key = HeaderMap::new();
    with_key.insert("x-api-key", "k-0123456789abcdef".parse().unwrap());
    g.bench_function("header:x-api-key, one hot key", |b| {
        b.iter(|| l.check(l.key_of(hot, black_box(&with_key), 0)));
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
