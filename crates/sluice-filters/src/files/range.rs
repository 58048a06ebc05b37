//! `Range: bytes=...` (RFC 9110 §14): parsing against the representation's length,
//! coalescing overlapping and adjacent ranges, and `If-Range`.

/// Most ranges one request may ask for; more is treated as no `Range` at all (a full
/// `200`), which is what RFC 9110 allows and what stops range-based amplification.
const MAX_RANGES: usize = 64;

/// What a `Range` header asks of a representation of a given length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// Serve the whole representation: no header, another unit, invalid syntax, or too
    /// many ranges (all of which RFC 9110 lets a server ignore).
    Full,
    /// No range overlaps the representation: `416` with `Content-Range: bytes */len`.
    Unsatisfiable,
    /// Inclusive byte ranges, sorted, without overlaps or adjacency (coalesced).
    Some(Vec<(u64, u64)>),
}

/// Parses `header` (the `Range` value) for a representation of `len` bytes.
pub fn parse(header: &str, len: u64) -> Ranges {
    let Some(specs) = header.trim().strip_prefix("bytes=") else {
        return Ranges::Full;
    };
    let mut ranges = Vec::new();
    let mut count = 0;
    for spec in specs.split(',') {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        count += 1;
        if count > MAX_RANGES {
            return Ranges::Full;
        }
        let Some((first, last)) = spec.split_once('-') else {
            return Ranges::Full;
        };
        let (first, last) = (first.trim(), last.trim());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let range = if first.is_empty() {
            // `-N`: the last N bytes.
            if !digits(last) {
                return Ranges::Full;
            }
            let Ok(n) = last.parse::<u64>() else { return Ranges::Full };
            if n == 0 || len == 0 {
                None
            } else {
                Some((len.saturating_sub(n), len - 1))
            }
        } else {
            if !digits(first) || !(last.is_empty() || digits(last)) {
                return Ranges::Full;
            }
            let Ok(start) = first.parse::<u64>() else { return Ranges::Full };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                let Ok(end) = last.parse::<u64>() else { return Ranges::Full };
                if end < start {
                    // An invalid range-spec makes the whole header invalid.
                    return Ranges::Full;
                }
                end
            };
            (start < len).then(|| (start, end.min(len - 1)))
        };
        if let Some(r) = range {
            ranges.push(r);
        }
    }
    if count == 0 {
        return Ranges::Full;
    }
    if ranges.is_empty() {
        return Ranges::Unsatisfiable;
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    Ranges::Some(merged)
}

/// Whether an `If-Range` value still matches the representation: a strong ETag equal to
/// `etag`, or an HTTP date equal to `last_modified` (RFC 9110 §13.1.5). A weak ETag never
/// matches.
pub fn if_range_matches(value: &str, etag: &str, last_modified: &str) -> bool {
    let value = value.trim();
    if value.starts_with('"') {
        return value == etag;
    }
    if value.starts_with("W/") {
        return false;
    }
    value == last_modified
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse("bytes=0-0", 10), Ranges::Some(vec![(0, 0)]));
        assert_eq!(parse("bytes=2-5", 10), Ranges::Some(vec![(2, 5)]));
        assert_eq!(parse("bytes=2-", 10), Ranges::Some(vec![(2, 9)]));
        assert_eq!(parse("bytes=5-100", 10), Ranges::Some(vec![(5, 9)]), "the end is clamped");
        assert_eq!(parse("bytes=-3", 10), Ranges::Some(vec![(7, 9)]));
        assert_eq!(parse("bytes=-30", 10), Ranges::Some(vec![(0, 9)]), "a suffix longer than the file is all of it");
        assert_eq!(parse(" bytes= 1 - 2 ", 10), Ranges::Some(vec![(1, 2)]));
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(parse("bytes=10-", 10), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=10-20", 10), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 10), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), Ranges::Unsatisfiable, "nothing of an empty file");
        assert_eq!(parse("bytes=20-30, 40-", 10), Ranges::Unsatisfiable);
        // One satisfiable range is enough.
        assert_eq!(parse("bytes=20-30, 0-1", 10), Ranges::Some(vec![(0, 1)]));
    }

    #[test]
    fn overlapping_and_adjacent_ranges_are_coalesced() {
        assert_eq!(parse("bytes=0-4,2-6", 10), Ranges::Some(vec![(0, 6)]));
        assert_eq!(parse("bytes=5-6,0-4", 10), Ranges::Some(vec![(0, 6)]), "adjacent");
        assert_eq!(parse("bytes=0-1,4-5,-2", 10), Ranges::Some(vec![(0, 1), (4, 5), (8, 9)]));
        assert_eq!(parse("bytes=0-,3-4,-5", 10), Ranges::Some(vec![(0, 9)]));
    }

    #[test]
    fn invalid_headers_are_ignored() {
        for h in ["items=0-1", "bytes=a-b", "bytes=5-2", "bytes=1", "bytes=", "bytes=--1", "bytes=1-2-3", "bytes=+1-2"]
        {
            assert_eq!(parse(h, 10), Ranges::Full, "{h}");
        }
        let many: Vec<String> = (0..65).map(|i| format!("{i}-{i}")).collect();
        assert_eq!(parse(&format!("bytes={}", many.join(",")), 100), Ranges::Full);
    }

    #[test]
    fn if_range() {
        assert!(if_range_matches("\"abc\"", "\"abc\"", "x"));
        assert!(!if_range_matches("\"abd\"", "\"abc\"", "x"));
        assert!(!if_range_matches("W/\"abc\"", "\"abc\"", "x"));
        assert!(if_range_matches("Sun, 06 Nov 1994 08:49:37 GMT", "\"abc\"", "Sun, 06 Nov 1994 08:49:37 GMT"));
        assert!(!if_range_matches("Sun, 06 Nov 1994 08:49:38 GMT", "\"abc\"", "Sun, 06 Nov 1994 08:49:37 GMT"));
    }
}
