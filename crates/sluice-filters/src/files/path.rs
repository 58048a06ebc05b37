//! From a request path to a path under the root: percent-decoding, `.` and empty segments
//! removed, and anything that could leave the root refused (`..` in any spelling, NUL,
//! invalid UTF-8). Symlinks are checked later, on the file system.

/// Why a request path cannot name a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A `..` segment (also `%2e%2e`, `.%2E`, and `..` formed by a decoded `%2f`).
    Traversal,
    /// Bad percent-encoding, a NUL byte, or bytes that are not UTF-8.
    Malformed,
}

/// A normalized request path: `/`-separated segments, none empty, `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The segments, decoded.
    pub segments: Vec<String>,
    /// Whether the request path ended with `/` (a directory was asked for).
    pub trailing_slash: bool,
}

impl Normalized {
    /// The path as a URI path (`/a/b`, or `/a/b/` with a trailing slash), decoded.
    pub fn uri(&self) -> String {
        let mut out = String::with_capacity(self.segments.iter().map(|s| s.len() + 1).sum::<usize>() + 1);
        for s in &self.segments {
            out.push('/');
            out.push_str(s);
        }
        if self.trailing_slash || out.is_empty() {
            out.push('/');
        }
        out
    }

    /// The path relative to the root (no leading `/`).
    pub fn relative(&self) -> std::path::PathBuf {
        self.segments.iter().collect()
    }
}

/// Decodes and normalizes `path` (the URI path, without the query).
pub fn normalize(path: &str) -> Result<Normalized, Refused> {
    let decoded = decode(path)?;
    if decoded.contains('\0') {
        return Err(Refused::Malformed);
    }
    let trailing_slash = decoded.ends_with('/');
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(Refused::Traversal),
            s => segments.push(s.to_owned()),
        }
    }
    Ok(Normalized { segments, trailing_slash })
}

/// Percent-decodes a whole path; `%2F` becomes `/` (and is then a separator, so `..%2F`
/// is a `..` segment like any other).
fn decode(path: &str) -> Result<String, Refused> {
    let bytes = path.as_bytes();
    if !bytes.contains(&b'%') {
        return Ok(path.to_owned());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(Refused::Malformed)?;
            let hex = std::str::from_utf8(hex).map_err(|_| Refused::Malformed)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| Refused::Malformed)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Refused::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<String> {
        normalize(path).unwrap().segments
    }

    #[test]
    fn paths_are_decoded_and_normalized() {
        assert_eq!(segs("/a/b.txt"), ["a", "b.txt"]);
        assert_eq!(segs("//a/./b//c/"), ["a", "b", "c"]);
        assert_eq!(segs("/hello%20world.txt"), ["hello world.txt"]);
        assert_eq!(segs("/caf%C3%A9"), ["café"]);
        assert!(normalize("/a/").unwrap().trailing_slash);
        assert_eq!(normalize("/").unwrap().uri(), "/");
        assert_eq!(normalize("/a/b/").unwrap().uri(), "/a/b/");
        assert_eq!(normalize("/a%2Fb").unwrap().segments, ["a", "b"]);
        // `...` and names that merely start with dots are names.
        assert_eq!(segs("/.../..a/a.."), ["...", "..a", "a.."]);
    }

    #[test]
    fn every_spelling_of_dot_dot_is_refused() {
        for path in [
            "/..",
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/.%2e/x",
            "/%2e./x",
            "/a/..%2f..%2fetc/passwd",
            "/a%2f..%2f..%2fetc",
            "/a/%2e%2e",
        ] {
            assert_eq!(normalize(path), Err(Refused::Traversal), "{path}");
        }
    }

    #[test]
    fn malformed_paths_are_refused() {
        for path in ["/%", "/%2", "/%zz", "/a%00b", "/%ff%fe", "/a\0b"] {
            assert_eq!(normalize(path), Err(Refused::Malformed), "{path}");
        }
    }
}
