//! The request path as routing sees it (RFC 3986 §6.2.2): percent-encoded unreserved
//! characters decoded (`%61` is `a`), other escapes kept with upper-case hex, a `%` that
//! starts no escape written `%25`, dot-segments
//! removed (`/a/../admin` is `/admin`), and repeated slashes merged (as nginx's
//! `merge_slashes`). The normalized path is also what the origin receives, so a rule on
//! `/admin` cannot be walked around by spelling it differently.

use std::borrow::Cow;

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
    use super::path;

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
