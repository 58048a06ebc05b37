//! Both tiers behind one interface, keyed by the full key string.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;

use crate::disk::DiskTier;
use crate::entry::Entry;
use crate::memory::MemoryTier;
use crate::CacheKey;

/// The cache's storage: a memory tier and an optional disk tier.
///
/// Lookups try memory, then disk, and promote a disk hit to memory. Inserts write through
/// to both tiers, so what is cached survives a restart. Keys are full key strings: the
/// store hashes them and checks that a hit holds the same string, so colliding hashes
/// cost a miss, never a wrong response.
///
/// With a disk tier, [`Store::get`], [`Store::get_disk`], [`Store::insert`],
/// [`Store::remove`] and [`Store::purge_tag`] block on file I/O: run them on the blocking
/// pool. [`Store::get_memory`] never blocks, so the usual pattern is to try it inline and
/// go to the blocking pool only on a miss.
#[derive(Debug)]
pub struct Store {
    memory: MemoryTier,
    disk: Option<DiskTier>,
}

impl Store {
    /// A store over a memory tier and, optionally, a disk tier.
    pub fn new(memory: MemoryTier, disk: Option<DiskTier>) -> Self {
        Self { memory, disk }
    }

    /// The memory tier.
    pub fn memory(&self) -> &MemoryTier {
        &self.memory
    }

    /// The disk tier, if any.
    pub fn disk(&self) -> Option<&DiskTier> {
        self.disk.as_ref()
    }

    /// The largest object either tier keeps: a response bigger than this bypasses the
    /// cache (the caller stops buffering it once it is).
    pub fn max_object(&self) -> u64 {
        let disk = self.disk.as_ref().map_or(0, DiskTier::max_object);
        self.memory.max_object().max(disk)
    }

    /// The entry under `key`, from memory or else from disk (blocking).
    pub fn get(&self, key: &str) -> io::Result<Option<Arc<Entry>>> {
        match self.get_memory(key) {
            Some(entry) => Ok(Some(entry)),
            None => self.get_disk(key),
        }
    }

    /// The entry under `key` if it is in memory. Never blocks.
    pub fn get_memory(&self, key: &str) -> Option<Arc<Entry>> {
        self.memory.get(&CacheKey::of(key)).filter(|entry| entry.key == key)
    }

    /// The entry under `key` from the disk tier (blocking), promoted to memory on a hit.
    /// `None` without a disk tier.
    pub fn get_disk(&self, key: &str) -> io::Result<Option<Arc<Entry>>> {
        let Some(disk) = &self.disk else { return Ok(None) };
        let hash = CacheKey::of(key);
        let Some(entry) = disk.get(&hash)?.filter(|entry| entry.key == key) else { return Ok(None) };
        let entry = Arc::new(entry);
        self.memory.insert(hash, Arc::clone(&entry));
        Ok(Some(entry))
    }

    /// Stores `entry` in both tiers (replacing older versions). Returns whether either
    /// tier kept it; a tier that refuses it for its size drops its older version.
    pub fn insert(&self, entry: Arc<Entry>) -> io::Result<bool> {
        let hash = CacheKey::of(&entry.key);
        let in_memory = self.memory.insert(hash, Arc::clone(&entry));
        let on_disk = match &self.disk {
            Some(disk) => match disk.insert(&entry) {
                Ok(stored) => stored,
                Err(e) => {
                    // The older version on disk would come back once memory drops the new one.
                    if let Err(e) = disk.remove(&hash) {
                        tracing::warn!(key = %entry.key, error = %e, "cannot remove an outdated cache file");
                    }
                    return Err(e);
                }
            },
            None => false,
        };
        Ok(in_memory || on_disk)
    }

    /// Removes the entry under `key` from both tiers; returns whether there was one.
    pub fn remove(&self, key: &str) -> io::Result<bool> {
        let hash = CacheKey::of(key);
        let in_memory = self.memory.remove(&hash).is_some();
        let on_disk = match &self.disk {
            Some(disk) => disk.remove(&hash)?,
            None => false,
        };
        Ok(in_memory || on_disk)
    }

    /// Removes every entry tagged `tag` from both tiers; returns how many distinct keys
    /// went.
    pub fn purge_tag(&self, tag: &str) -> io::Result<usize> {
        let mut purged: HashSet<CacheKey> = self.memory.purge_tag_keys(tag).into_iter().collect();
        if let Some(disk) = &self.disk {
            purged.extend(disk.purge_tag_keys(tag)?);
        }
        Ok(purged.len())
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
