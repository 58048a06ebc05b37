//! Helpers shared by the unit tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::{Entry, StoredHead};

/// An entry under `key` with a body of `body_len` bytes and the given tags.
pub(crate) fn entry(key: &str, body_len: usize, tags: &[&str]) -> Entry {
    Entry {
        key: key.to_owned(),
        head: StoredHead {
            status: 200,
            headers: vec![
                ("content-type".to_owned(), b"text/plain".to_vec()),
                ("cache-control".to_owned(), b"max-age=60".to_vec()),
            ],
        },
        body: Bytes::from(vec![b'x'; body_len]),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        stored_at: SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
    }
}

/// A fresh directory under the system's temporary directory, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("sluice-cache-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
