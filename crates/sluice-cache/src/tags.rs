//! The tag index: which keys carry a purge tag.

use std::collections::{HashMap, HashSet};

use crate::CacheKey;

/// Tag to keys, kept next to a tier's policy and updated under the same lock.
#[derive(Debug, Default)]
pub(crate) struct TagIndex {
    keys: HashMap<String, HashSet<CacheKey>>,
}

impl TagIndex {
    /// Notes that `key` carries `tags`.
    pub(crate) fn add(&mut self, key: CacheKey, tags: &[String]) {
        for tag in tags {
            self.keys.entry(tag.clone()).or_default().insert(key);
        }
    }

    /// Forgets that `key` carries `tags` (tags that no longer name any key go away).
    pub(crate) fn remove(&mut self, key: &CacheKey, tags: &[String]) {
        for tag in tags {
            if let Some(keys) = self.keys.get_mut(tag.as_str()) {
                keys.remove(key);
                if keys.is_empty() {
                    self.keys.remove(tag.as_str());
                }
            }
        }
    }

    /// Removes `tag`, returning the keys that carried it. The caller removes those entries
    /// and calls [`TagIndex::remove`] for their other tags.
    pub(crate) fn take(&mut self, tag: &str) -> Vec<CacheKey> {
        self.keys.remove(tag).map(|keys| keys.into_iter().collect()).unwrap_or_default()
    }
}
