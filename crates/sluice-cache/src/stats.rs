//! Counters of a tier.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a tier did since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lookups that found an entry.
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Entries stored (new or replacing an older version).
    pub inserts: u64,
    /// Entries pushed out to stay within the byte budget.
    pub evictions: u64,
    /// Entries refused for being larger than the tier's `max_object`.
    pub rejected: u64,
}

impl Stats {
    /// Hits over lookups (0 without lookups).
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

/// The live counters behind [`Stats`]; relaxed atomics, summed when read.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    rejected: AtomicU64,
}

impl Counters {
    pub(crate) fn lookup(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn inserted(&self, evicted: usize) {
        self.inserts.fetch_add(1, Ordering::Relaxed);
        if evicted > 0 {
            self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn evicted(&self, n: usize) {
        self.evictions.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds these counters to `stats`.
    pub(crate) fn add_to(&self, stats: &mut Stats) {
        stats.hits += self.hits.load(Ordering::Relaxed);
        stats.misses += self.misses.load(Ordering::Relaxed);
        stats.inserts += self.inserts.load(Ordering::Relaxed);
        stats.evictions += self.evictions.load(Ordering::Relaxed);
        stats.rejected += self.rejected.load(Ordering::Relaxed);
    }
}
