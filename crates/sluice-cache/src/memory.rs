//! The in-memory tier: sharded S3-FIFO under a byte budget.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::entry::Entry;
use crate::s3fifo::S3Fifo;
use crate::stats::{Counters, Stats};
use crate::tags::TagIndex;
use crate::CacheKey;

/// Most shards [`MemoryTier::new`] uses.
const MAX_SHARDS: usize = 16;
/// Smallest shard [`MemoryTier::new`] makes, in bytes: sharding only pays under
/// contention, and each shard's queues must hold enough objects to tell hot from cold.
const MIN_SHARD_BYTES: u64 = 1 << 20;

/// Cached responses in memory, under a byte budget, with S3-FIFO admission and eviction.
///
/// The key space is split over shards by hash, each with its own lock, policy and share
/// of the budget. A hit takes the shard's lock shared; inserts and evictions take it
/// exclusively. Evicted entries are dropped after the lock is released.
#[derive(Debug)]
pub struct MemoryTier {
    shards: Box<[Shard]>,
    budget: u64,
    max_object: u64,
}

#[derive(Debug)]
struct Shard {
    state: RwLock<ShardState>,
    stats: Counters,
}

#[derive(Debug)]
struct ShardState {
    policy: S3Fifo<Arc<Entry>>,
    tags: TagIndex,
}

impl Shard {
    // A panic while holding the lock leaves a consistent state (the policy never panics
    // half-way through on valid input), so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, ShardState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, ShardState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryTier {
    /// A tier holding at most `budget` bytes (as [`Entry::weight`] counts them) and refusing
    /// entries heavier than `max_object`. The number of shards (up to 16) is chosen so that
    /// each holds at least 1 MiB and eight of the largest objects.
    pub fn new(budget: u64, max_object: u64) -> Self {
        let min_shard = max_object.saturating_mul(8).max(MIN_SHARD_BYTES);
        let mut shards = MAX_SHARDS;
        while shards > 1 && budget / (shards as u64) < min_shard {
            shards /= 2;
        }
        Self::with_shards(budget, max_object, shards)
    }

    /// A tier with an explicit number of shards (at least one). Each shard gets an equal
    /// share of `budget`; `max_object` is lowered to that share if it is larger.
    pub fn with_shards(budget: u64, max_object: u64, shards: usize) -> Self {
        let count = shards.max(1);
        let share = budget / count as u64;
        let shards = (0..count)
            .map(|_| Shard {
                state: RwLock::new(ShardState { policy: S3Fifo::new(share), tags: TagIndex::default() }),
                stats: Counters::default(),
            })
            .collect();
        Self { shards, budget: share * count as u64, max_object: max_object.min(share) }
    }

    fn shard(&self, key: &CacheKey) -> &Shard {
        // The index is below the shard count, which fits in usize.
        let index = (key.low64() % self.shards.len() as u64) as usize;
        &self.shards[index]
    }

    /// The entry under `key`, counting a hit or a miss. The caller compares
    /// [`Entry::key`] with the full key it asked for ([`crate::Store`] does).
    pub fn get(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        let shard = self.shard(key);
        let found = shard.read().policy.get(key).cloned();
        shard.stats.lookup(found.is_some());
        found
    }

    /// The entry under `key`, without counting a read or a hit.
    pub fn peek(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        self.shard(key).read().policy.peek(key).cloned()
    }

    /// Stores `entry` under `key` (replacing any older version), evicting as needed.
    /// Returns false if the entry is heavier than `max_object`; any older version is
    /// removed then too, so a stale response is not served after a newer one was refused.
    pub fn insert(&self, key: CacheKey, entry: Arc<Entry>) -> bool {
        let shard = self.shard(&key);
        let weight = entry.weight();
        let mut evicted = Vec::new();
        let mut guard = shard.write();
        let state = &mut *guard;
        let (stored, old) = if weight <= self.max_object {
            let new = Arc::clone(&entry);
            match state.policy.insert(key, entry, weight, &mut evicted) {
                Ok(old) => {
                    if let Some(old) = &old {
                        state.tags.remove(&key, &old.tags);
                    }
                    state.tags.add(key, &new.tags);
                    (true, old)
                }
                // Not reached: `max_object` is at most the shard's budget.
                Err(_) => (false, None),
            }
        } else {
            let old = state.policy.remove(&key);
            if let Some(old) = &old {
                state.tags.remove(&key, &old.tags);
            }
            (false, old)
        };
        for (gone, entry) in &evicted {
            state.tags.remove(gone, &entry.tags);
        }
        drop(guard);
        if stored {
            shard.stats.inserted(evicted.len());
        } else {
            shard.stats.rejected();
        }
        // `old` and `evicted` are dropped here, outside the lock: freeing large bodies
        // does not hold up readers.
        drop(old);
        stored
    }

    /// Removes the entry under `key`.
    pub fn remove(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        let mut guard = self.shard(key).write();
        let state = &mut *guard;
        let old = state.policy.remove(key)?;
        state.tags.remove(key, &old.tags);
        Some(old)
    }

    /// Removes every entry tagged `tag`; returns how many.
    pub fn purge_tag(&self, tag: &str) -> usize {
        self.purge_tag_keys(tag).len()
    }

    /// Removes every entry tagged `tag`; returns their keys.
    pub(crate) fn purge_tag_keys(&self, tag: &str) -> Vec<CacheKey> {
        let mut purged = Vec::new();
        for shard in self.shards.iter() {
            let mut dropped = Vec::new();
            let mut guard = shard.write();
            let state = &mut *guard;
            for key in state.tags.take(tag) {
                if let Some(old) = state.policy.remove(&key) {
                    state.tags.remove(&key, &old.tags);
                    purged.push(key);
                    dropped.push(old);
                }
            }
            drop(guard);
            drop(dropped);
        }
        purged
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().policy.len()).sum()
    }

    /// Whether the tier holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held, as [`Entry::weight`] counts them.
    pub fn bytes(&self) -> u64 {
        self.shards.iter().map(|shard| shard.read().policy.bytes()).sum()
    }

    /// The byte budget (rounded down to a multiple of the number of shards).
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The heaviest entry the tier accepts.
    pub fn max_object(&self) -> u64 {
        self.max_object
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Counters summed over the shards.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        for shard in self.shards.iter() {
            shard.stats.add_to(&mut stats);
        }
        stats
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
