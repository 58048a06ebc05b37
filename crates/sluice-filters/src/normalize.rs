//! The request path as routing sees it (RFC 3986 §6.2.2): percent-encoded unreserved
//! characters decoded (`%61` is `a`), other escapes kept with upper-case hex, a `%` that
//! starts no escape written `%25`, dot-segments
//! removed (`/a/../admin` is `/admin`), and repeated slashes merged (as nginx's
//! `merge_slashes`). The normalized path is also what the origin receives, so a rule on
//! `/admin` cannot be walked around by spelling it differently.

use std::borrow::Cow;

/// What to do with a path that spells a separator in another way: `%2F` or `%5C`
/// (escaped slash and backslash) or a literal `\`. Many origins (and frameworks on Windows)
/// read them as `/`, so `/admin%2f` or `/\admin` could reach `/admin` past a rule that
/// protects it. Envoy's `path_with_escaped_slashes_action` is the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Refuse the request with 400 (the default).
    #[default]
    Reject,
    /// Decode them to `/` and route (and forward) the result.
    Decode,
    /// Route and forward them as they are (the origin must not treat them as `/`).
    Keep,
}

/// Why a path was refused.
pub type Refusal = &'static str;

/// The normalized form of `path` (see [`path`]), after the checks every request path
/// passes: no NUL (`%00`), and escaped slashes and backslashes handled per `escaped`.
pub fn checked(path: &str, escaped: EscapedSlashes) -> Result<Cow<'_, str>, Refusal> {
    let bytes = path.as_bytes();
    let mut has_escaped_slash = bytes.contains(&b'\\');
    for i in memchr::memchr_iter(b'%', bytes) {
        match bytes.get(i + 1..i + 3) {
            Some(b"00") => return Err("NUL (%00) in the path"),
            Some([b'2', b'f' | b'F'] | [b'5', b'c' | b'C']) => has_escaped_slash = true,
            _ => {}
        }
    }
    if !has_escaped_slash {
        return Ok(self::path(path));
    }
    match escaped {
        EscapedSlashes::Reject => Err("escaped slash or backslash in the path"),
        EscapedSlashes::Keep => Ok(self::path(path)),
        EscapedSlashes::Decode => {
            let mut decoded = String::with_capacity(path.len());
            let mut i = 0;
            while i < bytes.len() {
                match (bytes[i], bytes.get(i + 1..i + 3)) {
                    (b'%', Some([b'2', b'f' | b'F'] | [b'5', b'c' | b'C'])) => {
                        decoded.push('/');
                        i += 3;
                        continue;
                    }
                    (b'\\', _) => decoded.push('/'),
                    _ => {
                        let ch = path[i..].chars().next().unwrap_or('\u{fffd}');
                        decoded.push(ch);
                        i += ch.len_utf8();
                        continue;
                    }
                }
                i += 1;
            }
            Ok(Cow::Owned(self::path(&decoded).into_owned()))
        }
    }
}

/// The normalized form of `path` (the URI path, without the query); borrowed when it is
/// already normal.
pub fn path(path: &str) -> Cow<'_, str> {
    let needs = path.contains('%') || path.contains("//") || path.split('/').any(|s| s == "." || s == "..");
    if !needs {
        return Cow::Borrowed(path);
    }
    // 1. Escapes: decode the unreserved ones, upper-case the rest.
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = (hi * 16 + lo) as u8;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(char::from(c));
                } else {
                    decoded.push('%');
                    decoded.push(char::from(bytes[i + 1]).to_ascii_uppercase());
                    decoded.push(char::from(bytes[i + 2]).to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        // A `%` that starts no escape is a literal percent sign: written `%25`, so that
        // decoding it later (`%%36%31` -> `%61` -> `a`) cannot make a new path.
        let ch = path[i..].chars().next().unwrap_or('\u{fffd}');
        if ch == '%' {
            decoded.push_str("%25");
        } else {
            decoded.push(ch);
        }
        i += ch.len_utf8();
    }
    // 2. Segments: drop empty and `.`, pop on `..` (never above the root).
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for s in &out {
        normal.push('/');
        normal.push_str(s);
    }
    if normal.is_empty() || (trailing && !normal.ends_with('/')) {
        normal.push('/');
    }
    if normal == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normal)
    }
}

#[cfg(test)]
mod tests {
    use super::{checked, path, EscapedSlashes};

    #[test]
    fn escaped_slashes_and_nul_follow_the_policy() {
        for p in ["/admin%2f", "/%2fadmin", "/x/..%2fadmin", "/\\admin", "/%5cadmin", "/%5Cadmin"] {
            assert!(checked(p, EscapedSlashes::Reject).is_err(), "{p}");
            assert_eq!(checked(p, EscapedSlashes::Keep).unwrap(), path(p), "{p}");
        }
        assert_eq!(checked("/admin%2f", EscapedSlashes::Decode).unwrap(), "/admin/");
        assert_eq!(checked("/%2fadmin", EscapedSlashes::Decode).unwrap(), "/admin");
        assert_eq!(checked("/x/..%2fadmin", EscapedSlashes::Decode).unwrap(), "/admin");
        assert_eq!(checked("/\\admin", EscapedSlashes::Decode).unwrap(), "/admin");
        for policy in [EscapedSlashes::Reject, EscapedSlashes::Decode, EscapedSlashes::Keep] {
            assert!(checked("/admin%00", policy).is_err());
            assert_eq!(checked("/a%20b", policy).unwrap(), "/a%20b");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        assert!(matches!(path("/api/v1/users"), std::borrow::Cow::Borrowed(_)));
        assert!(matches!(path("/"), std::borrow::Cow::Borrowed(_)));
        assert!(matches!(path("/a/"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn spellings_of_the_same_path_become_one() {
        assert_eq!(path("/%61dmin"), "/admin");
        assert_eq!(path("/a/../admin"), "/admin");
        assert_eq!(path("/a/./b/../../admin/"), "/admin/");
        assert_eq!(path("//admin"), "/admin");
        assert_eq!(path("/x/%2e%2e/admin"), "/admin");
        assert_eq!(path("/../../admin"), "/admin", "never above the root");
        assert_eq!(path("/a/.."), "/");
        assert_eq!(path("/a/b/.."), "/a/");
        assert_eq!(path("/%7euser"), "/~user");
    }

    #[test]
    fn reserved_escapes_stay_escaped() {
        assert_eq!(path("/a%2fb"), "/a%2Fb", "an encoded slash is data, not a separator");
        assert_eq!(path("/a%20b"), "/a%20b");
        assert_eq!(path("/%zz"), "/%25zz", "a stray percent sign is a literal one");
        assert_eq!(path("/a%2"), "/a%252");
        // Double encoding does not turn into a new path after one decoding.
        assert_eq!(path("/%%36%31dmin"), "/%2561dmin");
        assert_eq!(path(&path("/%%36%31dmin")), "/%2561dmin");
    }
}
