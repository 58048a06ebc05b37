//! The disk tier: one file per entry, an in-memory index, a byte budget.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;

use crate::entry::Entry;
use crate::format;
use crate::key::nibble;
use crate::s3fifo::S3Fifo;
use crate::stats::{Counters, Stats};
use crate::tags::TagIndex;
use crate::CacheKey;

/// Where files are written before they are renamed into place.
const TMP_DIR: &str = "tmp";

/// Cached responses on disk, under a byte budget, surviving restarts.
///
/// Each entry is a file named after its key, `<dir>/ab/abcd…` (two hex digits of fan-out
/// keep directories small), written whole to `<dir>/tmp/` and renamed into place, so a
/// reader never sees half a file. An in-memory index (key, size, tags) is rebuilt at
/// [`DiskTier::open`] from the files' heads; damaged files are deleted then, or when read.
///
/// The policy is the memory tier's S3-FIFO over file sizes. Scan resistance matters here
/// too: with write-through every response that reaches the cache is written to disk, so a
/// crawler's one-time URLs would otherwise push out the hot set.
///
/// Everything here is blocking `std::fs`: call it from the blocking pool
/// (`tokio::task::spawn_blocking`). One process uses a directory at a time; during a binary
/// upgrade the old process's in-flight writes may be lost (the new one clears `tmp/`).
#[derive(Debug)]
pub struct DiskTier {
    dir: PathBuf,
    budget: u64,
    max_object: u64,
    state: Mutex<DiskState>,
    stats: Counters,
    next_tmp: AtomicU64,
}

#[derive(Debug)]
struct DiskState {
    /// Values are the entries' tags, to clean the tag index on eviction.
    policy: S3Fifo<Vec<String>>,
    tags: TagIndex,
}

/// A file found when opening the tier.
struct Found {
    modified: SystemTime,
    key: CacheKey,
    meta: format::Meta,
}

impl DiskTier {
    /// Opens (creating it if needed) the cache directory `dir`, holding at most `budget`
    /// bytes of files, each at most `max_object` bytes (lowered to `budget` if larger).
    ///
    /// Rebuilds the index from the files' heads. Files that were not fully written or are
    /// damaged are deleted; files whose names are not cache file names are left alone.
    /// Entries come back oldest first (by modification time), so if the budget shrank
    /// since the last run the oldest go.
    pub fn open(dir: impl Into<PathBuf>, budget: u64, max_object: u64) -> io::Result<Self> {
        let dir = dir.into();
        let tmp = dir.join(TMP_DIR);
        fs::create_dir_all(&tmp)?;
        clear_tmp(&tmp)?;
        let mut found = scan(&dir)?;
        found.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.key.cmp(&b.key)));

        let tier = Self {
            budget,
            max_object: max_object.min(budget),
            state: Mutex::new(DiskState { policy: S3Fifo::new(budget), tags: TagIndex::default() }),
            stats: Counters::default(),
            next_tmp: AtomicU64::new(0),
            dir,
        };
        let mut evicted = Vec::new();
        let mut doomed = Vec::new();
        {
            let mut guard = tier.lock();
            let state = &mut *guard;
            for Found { key, meta, .. } in found {
                if meta.size > tier.max_object {
                    doomed.push(key);
                    continue;
                }
                state.tags.add(key, &meta.tags);
                if let Err(tags) = state.policy.load(key, meta.tags, meta.size, &mut evicted) {
                    // Not reached: the size is at most `max_object`, which is at most the budget.
                    state.tags.remove(&key, &tags);
                    doomed.push(key);
                }
                for (gone, tags) in evicted.drain(..) {
                    state.tags.remove(&gone, &tags);
                    doomed.push(gone);
                }
            }
        }
        if !doomed.is_empty() {
            tracing::info!(dir = %tier.dir.display(), files = doomed.len(), "removing cache files over the budget");
            tier.stats.evicted(doomed.len());
        }
        for key in &doomed {
            tier.delete(key);
        }
        tracing::info!(dir = %tier.dir.display(), entries = tier.len(), bytes = tier.bytes(), "disk cache opened");
        Ok(tier)
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file of `key`.
    fn path_of(&self, key: &CacheKey) -> PathBuf {
        let hex = key.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Reads the entry under `key`, counting a hit or a miss. A file found damaged, or
    /// holding another key, is deleted and counts as a miss. The caller compares
    /// [`Entry::key`] with the full key it asked for ([`crate::Store`] does).
    pub fn get(&self, key: &CacheKey) -> io::Result<Option<Entry>> {
        if self.lock().policy.get(key).is_none() {
            self.stats.lookup(false);
            return Ok(None);
        }
        let path = &self.path_of(key);
        let data = match fs::read(path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Deleted behind the index's back: forget it.
                self.forget_if_missing(key, path);
                self.stats.lookup(false);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let found = match format::decode(Bytes::from(data)) {
            Ok(entry) if CacheKey::of(&entry.key) == *key => Some(entry),
            Ok(entry) => {
                tracing::warn!(file = %path.display(), key = %entry.key, "cache file holds another key; removed");
                self.discard(key);
                None
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "damaged cache file; removed");
                self.discard(key);
                None
            }
        };
        self.stats.lookup(found.is_some());
        Ok(found)
    }

    /// Writes `entry` (replacing any older version), evicting files as needed. Returns
    /// false if the file would be larger than `max_object`; any older version is removed
    /// then too.
    pub fn insert(&self, entry: &Entry) -> io::Result<bool> {
        let key = CacheKey::of(&entry.key);
        let encoded = format::encode(entry)?;
        let size = encoded.file_len(entry.body.len());
        if size > self.max_object {
            self.stats.rejected();
            self.remove(&key)?;
            return Ok(false);
        }
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = &self.dir.join(TMP_DIR).join(format!("{}.{}.{n}.tmp", key.to_hex(), std::process::id()));
        let path = &self.path_of(&key);
        let parts: [&[u8]; 3] = [&encoded.prefix, &entry.body, &encoded.trailer];
        let written = write_file(tmp, &parts).and_then(|()| match path.parent() {
            Some(parent) => fs::create_dir_all(parent),
            None => Ok(()),
        });
        if let Err(e) = written {
            remove_quietly(tmp);
            return Err(e);
        }

        let mut evicted = Vec::new();
        {
            // Renamed and indexed under the lock, so the index and the files agree.
            let mut guard = self.lock();
            let state = &mut *guard;
            if let Err(e) = fs::rename(tmp, path) {
                drop(guard);
                remove_quietly(tmp);
                return Err(e);
            }
            match state.policy.insert(key, entry.tags.clone(), size, &mut evicted) {
                Ok(old) => {
                    if let Some(old) = &old {
                        state.tags.remove(&key, old);
                    }
                    state.tags.add(key, &entry.tags);
                }
                // Not reached: `max_object` is at most the budget.
                Err(_) => remove_quietly(path),
            }
            for (gone, tags) in &evicted {
                state.tags.remove(gone, tags);
                // Deleted under the lock: a concurrent insert of the same key cannot have
                // renamed its new file into place yet.
                self.delete(gone);
            }
        }
        self.stats.inserted(evicted.len());
        Ok(true)
    }

    /// Removes the entry under `key`; returns whether there was one. The file is deleted
    /// even if the index does not know it.
    pub fn remove(&self, key: &CacheKey) -> io::Result<bool> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let indexed = match state.policy.remove(key) {
            Some(tags) => {
                state.tags.remove(key, &tags);
                true
            }
            None => false,
        };
        match fs::remove_file(self.path_of(key)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(indexed),
            Err(e) => Err(e),
        }
    }

    /// Removes every entry tagged `tag`; returns how many.
    pub fn purge_tag(&self, tag: &str) -> io::Result<usize> {
        self.purge_tag_keys(tag).map(|keys| keys.len())
    }

    /// Removes every entry tagged `tag`; returns their keys. The index is updated under
    /// the lock, the files deleted after it (a purge may delete many).
    pub(crate) fn purge_tag_keys(&self, tag: &str) -> io::Result<Vec<CacheKey>> {
        let mut purged = Vec::new();
        {
            let mut guard = self.lock();
            let state = &mut *guard;
            for key in state.tags.take(tag) {
                if let Some(tags) = state.policy.remove(&key) {
                    state.tags.remove(&key, &tags);
                    purged.push(key);
                }
            }
        }
        let mut failed = None;
        for key in &purged {
            if let Err(e) = fs::remove_file(self.path_of(key)) {
                if e.kind() != io::ErrorKind::NotFound && failed.is_none() {
                    failed = Some(e);
                }
            }
        }
        match failed {
            // The index has forgotten them, but the files would come back at restart.
            Some(e) => Err(e),
            None => Ok(purged),
        }
    }

    /// Drops `key` from the index and deletes its file.
    fn discard(&self, key: &CacheKey) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(tags) = state.policy.remove(key) {
            state.tags.remove(key, &tags);
        }
        self.delete(key);
    }

    /// Drops `key` from the index if its file is gone.
    fn forget_if_missing(&self, key: &CacheKey, path: &Path) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let missing = matches!(fs::symlink_metadata(path), Err(e) if e.kind() == io::ErrorKind::NotFound);
        if !missing {
            return;
        }
        if let Some(tags) = state.policy.remove(key) {
            state.tags.remove(key, &tags);
        }
    }

    /// Deletes `key`'s file, logging failures (the index has already forgotten it).
    fn delete(&self, key: &CacheKey) {
        remove_quietly(&self.path_of(key));
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lock().policy.len()
    }

    /// Whether the tier holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of files held.
    pub fn bytes(&self) -> u64 {
        self.lock().policy.bytes()
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The largest file the tier accepts.
    pub fn max_object(&self) -> u64 {
        self.max_object
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters since the tier was opened (files dropped at open count as evictions).
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        self.stats.add_to(&mut stats);
        stats
    }
}

/// Deletes what a previous run left half-written.
fn clear_tmp(tmp: &Path) -> io::Result<()> {
    for file in fs::read_dir(tmp)?.flatten() {
        let path = file.path();
        if path.extension().is_some_and(|ext| ext == "tmp") {
            remove_quietly(&path);
        }
    }
    Ok(())
}

/// Whether `name` is a fan-out directory's name: two lowercase hex digits.
fn is_fan_out(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| nibble(b).is_some())
}

/// Reads the head of every cache file under `dir`, deleting damaged ones.
fn scan(dir: &Path) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for fan_out in fs::read_dir(dir)?.flatten() {
        let name = fan_out.file_name();
        let Some(prefix) = name.to_str().filter(|name| is_fan_out(name)) else { continue };
        if !fan_out.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let files = match fs::read_dir(fan_out.path()) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(dir = %fan_out.path().display(), error = %e, "cannot list a cache directory; skipped");
                continue;
            }
        };
        for file in files.flatten() {
            let name = file.file_name();
            // Anything not named like a cache file is not ours to delete.
            let Some(key) = name.to_str().and_then(CacheKey::from_hex) else { continue };
            let path = &file.path();
            if !key.to_hex().starts_with(prefix) {
                tracing::warn!(file = %path.display(), "cache file in the wrong directory; removed");
                remove_quietly(path);
                continue;
            }
            match format::read_meta(path) {
                Ok(meta) if CacheKey::of(&meta.key) == key => {
                    let modified = file.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
                    found.push(Found { modified, key, meta });
                }
                Ok(_) => {
                    tracing::warn!(file = %path.display(), "cache file holds another key; removed");
                    remove_quietly(path);
                }
                Err(e) if format::is_damage(&e) => {
                    tracing::warn!(file = %path.display(), error = %e, "damaged cache file; removed");
                    remove_quietly(path);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read a cache file; skipped");
                }
            }
        }
    }
    Ok(found)
}

/// Writes a new file from parts.
fn write_file(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let mut file = fs::File::create_new(path)?;
    for part in parts {
        file.write_all(part)?;
    }
    Ok(())
}

/// Deletes a file; a missing file is fine, other failures are logged.
fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), error = %e, "cannot delete a cache file");
        }
    }
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
