//! The storage layer of Sluice's HTTP cache.
//!
//! It keeps whole responses ([`Entry`]: the full key string, the response head, the body,
//! purge tags and the time it was stored) under a 128-bit [`CacheKey`], in two tiers:
//!
//! - [`MemoryTier`]: sharded, with a byte budget and the S3-FIFO admission and eviction
//!   policy. Reads take a shared lock and bump a 2-bit counter; nothing moves on a hit.
//! - [`DiskTier`]: one file per entry under a directory, its own byte budget, the same
//!   policy over an in-memory index that is rebuilt from the files at start, so the tier
//!   survives a restart. Blocking `std::fs`: callers run it on the blocking pool.
//!
//! [`Store`] puts the two together (memory first, then disk with promotion; write-through
//! inserts; purge by key and by tag on both) and checks the full key string on every hit,
//! so two keys whose hashes collide never get each other's response. Objects larger than a
//! tier's `max_object` are refused by that tier: the caller buffers a response up to
//! [`Store::max_object`] and lets larger ones bypass the cache.
//!
//! The crate knows nothing of HTTP semantics (freshness, `Vary`, revalidation): the layer
//! above decides what to store and what a stored response is still good for.
//!
//! # Why S3-FIFO
//!
//! S3-FIFO (Yang et al., "FIFO queues are all you need for cache eviction", SOSP 2023)
//! keeps three FIFO queues: a small one (10 % of the bytes) where new objects enter, a main
//! one, and a ghost queue of keys recently dropped from the small one. An object read while
//! in the small queue moves to the main queue; one that was not leaves at once, its key
//! remembered as a ghost, and comes back straight into the main queue if it is asked for
//! again soon. The main queue gives objects read since their last pass another round.
//!
//! - Scan resistance: a scan's one-time keys pass through the small queue and out again
//!   without touching the main queue, where the hot set lives. Plain LRU lets a scan flush
//!   everything (`cargo run --release -p sluice-cache --example hit_ratio` measures it).
//! - Concurrency: a hit is a shared lock and a relaxed atomic store, not a list move under
//!   an exclusive lock as in LRU, so readers of a shard do not serialise.
//! - Hit ratio: on the paper's production web and key-value traces it matches or beats
//!   W-TinyLFU and ARC with far less machinery (no count-min sketch, no window, no
//!   adaptive tuning).
//!
//! TinyUFO (Pingora) is S3-FIFO with a TinyLFU frequency sketch as an extra admission
//! filter; it is worth considering if traces show many keys whose second request comes
//! after their ghost entry expired, at the price of a sketch to size and age.

mod disk;
mod entry;
mod format;
mod key;
mod memory;
mod s3fifo;
mod stats;
mod store;
mod tags;
#[cfg(test)]
mod test_support;

pub use disk::DiskTier;
pub use entry::{Entry, StoredHead};
pub use key::CacheKey;
pub use memory::MemoryTier;
pub use stats::Stats;
pub use store::Store;
