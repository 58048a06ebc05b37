//! Cost of one backend pick for every load-balancing algorithm, at 3 and at 1,000
//! backends: it must stay flat (O(1) or O(log n)).
//!
//!     cargo bench -p sluice-upstream --bench selection
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use sluice_upstream::selection::{build, hash_key, Algorithm, Pick};
use sluice_upstream::{Backend, BackendSettings, Upstream};

fn backends(n: usize) -> Vec<Arc<Backend>> {
    (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 8080));
            Arc::new(Backend::new(addr.to_string(), addr, 1 + (i % 3) as u32, BackendSettings::default()))
        })
        .collect()
}

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for n in [3usize, 1000] {
        let b = backends(n);
        for (name, algorithm) in [
            ("round-robin", Algorithm::RoundRobin),
            ("weighted-round-robin", Algorithm::WeightedRoundRobin),
            ("random", Algorithm::Random),
            ("least-requests", Algorithm::LeastRequests),
            ("peak-ewma", Algorithm::PeakEwma),
            ("ketama", Algorithm::Ketama),
            ("maglev", Algorithm::Maglev),
        ] {
            let selector = build(algorithm, &b);
            let mut k = 0u64;
            group.bench_with_input(BenchmarkId::new(name, n), &n, |bench, _| {
                bench.iter(|| {
                    k = k.wrapping_add(1);
                    let pick = Pick { key: Some(hash_key(&k.to_le_bytes())) };
                    black_box(selector.select(pick, &|_| true))
                })
            });
        }
    }
    group.finish();

    // The whole pick a request makes: the group's member snapshot, health and slow-start
    // filtering, then the algorithm.
    let mut group = c.benchmark_group("upstream_select");
    for n in [3usize, 1000] {
        let upstream = Upstream::with_algorithm("g", backends(n), Algorithm::WeightedRoundRobin);
        group.bench_with_input(BenchmarkId::new("weighted-round-robin", n), &n, |bench, _| {
            bench.iter(|| black_box(upstream.select(Pick::default(), None)))
        });
    }
    group.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
