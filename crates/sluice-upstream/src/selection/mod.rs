//! Choosing a backend for a request: the load-balancing algorithms, all behind
//! [`Selector`].
//!
//! | algorithm | module | weights | cost of a pick |
//! |---|---|---|---|
//! | round-robin | [`round_robin`] | ignored | one atomic increment |
//! | smooth weighted round-robin (nginx) | [`round_robin`] | yes | one atomic increment (precomputed schedule) |
//! | random | [`load`] | yes | one random number, a binary search |
//! | least outstanding requests | [`load`] | yes (requests / weight) | two random candidates (power of two choices) |
//! | peak-EWMA latency, power of two choices | [`load`] | yes | two random candidates |
//! | Ketama consistent hashing | [`hashing`] | yes (points on the ring) | a binary search |
//! | Maglev consistent hashing | [`hashing`] | yes (table entries) | one table lookup |
//!
//! A selector returns the index of a backend in its group. It never returns a backend the
//! caller rules out (`usable`), unless every backend is ruled out, in which case it returns
//! `None`: the caller decides what that means (fail open or 503).

pub mod hashing;
pub mod load;
pub mod round_robin;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use crate::Backend;

/// What a request offers for choosing: a hash of its affinity key (client IP, a header, a
/// cookie ...), for the consistent-hashing algorithms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pick {
    /// The request's affinity key, hashed with [`hash_key`]; `None` when it has none (the
    /// hashing algorithms then pick at random).
    pub key: Option<u64>,
}

/// A load-balancing algorithm over a fixed list of backends.
pub trait Selector: Send + Sync + std::fmt::Debug {
    /// The index of the backend for this request, among those for which `usable` is true;
    /// `None` when no backend is usable.
    fn select(&self, pick: Pick, usable: &dyn Fn(usize) -> bool) -> Option<usize>;
}

/// The algorithms a group can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Each backend in turn, weights ignored.
    RoundRobin,
    /// nginx's smooth weighted round-robin.
    WeightedRoundRobin,
    /// Weighted random.
    Random,
    /// The fewer outstanding requests per unit of weight, the likelier (power of two choices).
    LeastRequests,
    /// Lowest peak-EWMA latency × (outstanding requests + 1) / weight of two random backends.
    PeakEwma,
    /// Ketama ring.
    Ketama,
    /// Maglev lookup table.
    Maglev,
}

impl Algorithm {
    /// Whether the algorithm uses [`Pick::key`].
    pub fn uses_key(self) -> bool {
        matches!(self, Algorithm::Ketama | Algorithm::Maglev)
    }
}

/// Builds the selector of `algorithm` for `backends` (in group order).
pub fn build(algorithm: Algorithm, backends: &[Arc<Backend>]) -> Box<dyn Selector> {
    let weights: Vec<u32> = backends.iter().map(|b| b.weight()).collect();
    match algorithm {
        Algorithm::RoundRobin => Box::new(round_robin::RoundRobin::new(backends.len())),
        Algorithm::WeightedRoundRobin => Box::new(round_robin::SmoothWeighted::new(&weights)),
        Algorithm::Random => Box::new(load::WeightedRandom::new(&weights)),
        Algorithm::LeastRequests => Box::new(load::TwoChoices::least_requests(backends.to_vec())),
        Algorithm::PeakEwma => Box::new(load::TwoChoices::peak_ewma(backends.to_vec())),
        Algorithm::Ketama => {
            Box::new(hashing::Ketama::new(&backends.iter().map(|b| (b.key(), b.weight())).collect::<Vec<_>>()))
        }
        Algorithm::Maglev => {
            Box::new(hashing::Maglev::new(&backends.iter().map(|b| (b.key(), b.weight())).collect::<Vec<_>>()))
        }
    }
}

/// A fixed, process-independent 64-bit hash of an affinity key (the same key always maps
/// to the same server, across restarts and across Sluice instances with the same config).
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
    h.write(bytes);
    mix(h.finish())
}

/// A strong 64-bit finalizer (splitmix64), spreading hashes over the whole range.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The first usable index at or after `start`, wrapping around; `None` if none is usable.
pub(crate) fn first_usable(n: usize, start: usize, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
    (0..n).map(|i| (start + i) % n).find(|&i| usable(i))
}

#[cfg(test)]
pub(crate) fn counts(selector: &dyn Selector, n: usize, picks: usize, usable: &dyn Fn(usize) -> bool) -> Vec<usize> {
    let mut c = vec![0; n];
    for i in 0..picks {
        let pick = Pick { key: Some(hash_key(&(i as u64).to_le_bytes())) };
        if let Some(b) = selector.select(pick, usable) {
            c[b] += 1;
        }
    }
    c
}
