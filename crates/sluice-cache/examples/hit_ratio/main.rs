//! Hit ratio of the memory tier (S3-FIFO) against a plain LRU of the same byte budget, on
//! deterministic Zipf traces (100,000 objects, 1,000,000 requests) with and without a scan
//! of 200,000 one-time objects spread over the middle third, with fixed and variable
//! object sizes, at cache sizes of 1, 5 and 10 % of the objects' total weight.
//!
//!     cargo run --release -p sluice-cache --example hit_ratio
//!
//! Prints a markdown table. S3-FIFO runs with one shard (the policy alone, comparable to
//! the single LRU list) and with 16 (as `MemoryTier::new` shards a large budget: each
//! shard gets a sixteenth of the budget and of the keys).

mod sim;

use sim::{hit_ratio, key_space_bytes, trace, Lru, S3Fifo, Sizes, TraceSpec};

fn main() {
    println!("| Zipf s | scan | sizes | cache | S3-FIFO | S3-FIFO, 16 shards | LRU | S3-FIFO - LRU |");
    println!("|---:|---:|---|---:|---:|---:|---:|---:|");
    for zipf_s in [0.9, 1.1] {
        for scan in [0, 200_000] {
            let spec = TraceSpec { keys: 100_000, requests: 1_000_000, scan, zipf_s, seed: 42 };
            let requests = trace(&spec);
            for sizes in [Sizes::Fixed(1_000), Sizes::Variable { min: 100, max: 20_000 }] {
                let space = key_space_bytes(spec.keys, sizes);
                for percent in [1, 5, 10] {
                    let budget = space * percent / 100;
                    let s3 = hit_ratio(&mut S3Fifo::new(budget, 1), &requests, sizes);
                    let s3_sharded = hit_ratio(&mut S3Fifo::new(budget, 16), &requests, sizes);
                    let lru = hit_ratio(&mut Lru::new(budget), &requests, sizes);
                    println!(
                        "| {zipf_s} | {scan} | {sizes} | {percent} % | {:.2} % | {:.2} % | {:.2} % | {:+.2} |",
                        s3 * 100.0,
                        s3_sharded * 100.0,
                        lru * 100.0,
                        (s3 - lru) * 100.0,
                    );
                }
            }
        }
    }
}
