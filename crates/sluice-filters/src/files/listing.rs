//! An HTML directory listing (`listing #true`): directories first, then files, by name;
//! hidden entries (names starting with `.`) left out; names escaped for HTML and links
//! percent-encoded.

use std::fmt::Write as _;
use std::path::Path;

/// The listing page of `dir`, shown at `uri` (decoded, ends with `/`). Symbolic links are
/// not followed: with `follow_symlinks` off they are left out (they cannot be fetched), and
/// otherwise listed by name only, so a link that leaves the root does not show the size and
/// modification time of what it points to (`/etc/passwd`'s, say).
pub fn render(dir: &Path, uri: &str, follow_symlinks: bool) -> std::io::Result<String> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let meta = std::fs::symlink_metadata(entry.path()).ok();
        if meta.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
            if follow_symlinks {
                entries.push((true, name, None, None));
            }
            continue;
        }
        let is_dir = meta.as_ref().is_some_and(std::fs::Metadata::is_dir);
        let size = meta.as_ref().map(std::fs::Metadata::len);
        let modified = meta.and_then(|m| m.modified().ok());
        entries.push((!is_dir, name, size, modified));
    }
    entries.sort();
    let title = escape(uri);
    let mut out = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n<table>\n<tr><th>Name</th><th>Size</th><th>Modified</th></tr>\n"
    );
    if uri != "/" {
        out.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for (is_file, name, size, modified) in entries {
        let slash = if is_file { "" } else { "/" };
        let size = match size {
            Some(size) if is_file => size.to_string(),
            _ => "-".to_owned(),
        };
        let modified = modified.map(httpdate::fmt_http_date).unwrap_or_default();
        let _ = writeln!(
            out,
            "<tr><td><a href=\"{}{slash}\">{}{slash}</a></td><td>{size}</td><td>{modified}</td></tr>",
            encode(&name),
            escape(&name)
        );
    }
    out.push_str("</table>\n</body></html>\n");
    Ok(out)
}

/// Escapes text for HTML element content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a file name for a relative link (one path segment).
fn encode(name: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(name, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_links_encoded() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(encode("a b/c?.txt"), "a%20b%2Fc%3F.txt");
        assert_eq!(encode("café"), "caf%C3%A9");
    }

    #[test]
    fn symlinks_show_no_size_or_date_of_their_target() {
        let dir = std::env::temp_dir().join(format!("sluice-listing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("own.txt"), "12345").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
        let followed = render(&dir, "/", true).unwrap();
        let line = followed.lines().find(|l| l.contains("passwd")).unwrap();
        assert!(line.ends_with("<td>-</td><td></td></tr>"), "{line}");
        assert!(followed.lines().any(|l| l.contains("own.txt") && l.contains("<td>5</td>")), "{followed}");
        let hidden = render(&dir, "/", false).unwrap();
        assert!(!hidden.contains("passwd"), "{hidden}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
