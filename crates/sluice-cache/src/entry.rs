//! What the cache stores: a response head and body under the full key string.

use std::time::SystemTime;

use bytes::Bytes;

/// A stored response head: the status and the header fields in order, duplicates kept.
///
/// Plain strings and bytes rather than `http` types so that the disk format owns its
/// encoding; [`StoredHead::from_http`] and [`StoredHead::to_http`] convert.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredHead {
    /// The status code.
    pub status: u16,
    /// Header fields as (lowercase name, value), in the order received.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl StoredHead {
    /// A head with no header fields.
    pub fn new(status: u16) -> Self {
        Self { status, headers: Vec::new() }
    }

    /// Copies a status and header map.
    pub fn from_http(status: http::StatusCode, headers: &http::HeaderMap) -> Self {
        Self {
            status: status.as_u16(),
            headers: headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect(),
        }
    }

    /// The status and header map, or `None` if anything is not valid HTTP (possible only
    /// for a head built by hand): a response missing one of its fields could be served
    /// wrongly (a dropped `Content-Encoding`), so nothing is skipped.
    pub fn to_http(&self) -> Option<(http::StatusCode, http::HeaderMap)> {
        let status = http::StatusCode::from_u16(self.status).ok()?;
        let mut map = http::HeaderMap::try_with_capacity(self.headers.len()).ok()?;
        for (name, value) in &self.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
            let value = http::HeaderValue::from_bytes(value).ok()?;
            map.try_append(name, value).ok()?;
        }
        Some((status, map))
    }

    /// Approximate memory used by the head, in bytes.
    pub fn size(&self) -> usize {
        size_of::<Self>()
            + self.headers.iter().map(|(n, v)| size_of::<(String, Vec<u8>)>() + n.len() + v.len()).sum::<usize>()
    }
}

/// One stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The full key string ([`crate::CacheKey::of`] hashes it); checked on every hit.
    pub key: String,
    /// The response head.
    pub head: StoredHead,
    /// The whole body.
    pub body: Bytes,
    /// Purge tags (surrogate keys): [`crate::Store::purge_tag`] removes every entry that
    /// carries a tag.
    pub tags: Vec<String>,
    /// When the response was stored (the HTTP layer's "response time").
    pub stored_at: SystemTime,
}

impl Entry {
    /// An entry without tags, stored now.
    pub fn new(key: impl Into<String>, head: StoredHead, body: Bytes) -> Self {
        Self { key: key.into(), head, body, tags: Vec::new(), stored_at: SystemTime::now() }
    }

    /// Adds purge tags.
    pub fn with_tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// What the entry counts against a memory budget: the body, the head, the key, the tags
    /// and the fixed size of the structures holding them.
    pub fn weight(&self) -> u64 {
        let tags: usize = self.tags.iter().map(|t| size_of::<String>() + t.len()).sum();
        let total = size_of::<Self>() + self.key.len() + self.head.size() + self.body.len() + tags;
        u64::try_from(total).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_converts_to_and_from_http() {
        let mut headers = http::HeaderMap::new();
        headers.append("content-type", http::HeaderValue::from_static("text/html"));
        headers.append("set-cookie", http::HeaderValue::from_static("a=1"));
        headers.append("set-cookie", http::HeaderValue::from_static("b=2"));
        let head = StoredHead::from_http(http::StatusCode::NOT_FOUND, &headers);
        assert_eq!(head.status, 404);
        assert_eq!(head.headers.len(), 3, "repeated fields are kept");
        assert_eq!(head.to_http(), Some((http::StatusCode::NOT_FOUND, headers)));

        let bad_name = StoredHead { status: 200, headers: vec![("bad name".to_owned(), b"x".to_vec())] };
        assert_eq!(bad_name.to_http(), None, "nothing is silently dropped");
        assert_eq!(StoredHead::new(1000).to_http(), None);
    }

    #[test]
    fn the_weight_counts_body_head_key_and_tags() {
        let e = Entry::new("/k", StoredHead::new(200), Bytes::from_static(b"hello"));
        let tagged = e.clone().with_tags(["a", "bc"]);
        assert!(e.weight() > 5 + 2);
        assert_eq!(tagged.weight() - e.weight(), (2 * size_of::<String>() + 3) as u64);
    }
}
