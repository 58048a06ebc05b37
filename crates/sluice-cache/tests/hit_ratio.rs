//! The memory tier's S3-FIFO keeps more hits than a plain LRU of the same byte budget when
//! a scan runs through a Zipf workload: the scan's one-time keys pass through the small
//! queue without flushing the hot set. A behaviour test on a fixed seed, not a benchmark
//! (`cargo run --release -p sluice-cache --example hit_ratio` prints the full table).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/hit_ratio/sim.rs"]
mod sim;

use sim::{hit_ratio, key_space_bytes, trace, Lru, S3Fifo, Sizes, TraceSpec};

#[test]
fn s3_fifo_beats_lru_on_a_zipf_trace_with_a_scan() {
    let spec = TraceSpec { keys: 10_000, requests: 100_000, scan: 20_000, zipf_s: 0.9, seed: 7 };
    let requests = trace(&spec);
    assert_eq!(requests.len(), 120_000);
    for sizes in [Sizes::Fixed(1_000), Sizes::Variable { min: 100, max: 20_000 }] {
        for percent in [1, 5, 10] {
            let budget = key_space_bytes(spec.keys, sizes) * percent / 100;
            let s3 = hit_ratio(&mut S3Fifo::new(budget, 1), &requests, sizes);
            let lru = hit_ratio(&mut Lru::new(budget), &requests, sizes);
            assert!(s3 > lru, "{sizes} at {percent} %: S3-FIFO {s3:.4}, LRU {lru:.4}");
        }
    }
}

#[test]
fn the_trace_is_deterministic_and_the_scan_sits_in_the_middle_third() {
    let spec = TraceSpec { keys: 1_000, requests: 3_000, scan: 500, zipf_s: 1.1, seed: 1 };
    let requests = trace(&spec);
    assert_eq!(requests, trace(&spec));
    let scan_at: Vec<usize> = requests.iter().enumerate().filter(|(_, id)| **id >= spec.keys).map(|(i, _)| i).collect();
    assert_eq!(scan_at.len(), 500);
    assert!(scan_at[0] >= 1_000 && *scan_at.last().unwrap() < 2_500);
    let hottest = requests.iter().filter(|&&id| id == 0).count();
    assert!(hottest > requests.iter().filter(|&&id| id == 10).count(), "rank 1 is asked for most");
}
