//! Typed readers for KDL values: strings, integers, booleans, durations and sizes.
//!
//! Each reader reports a problem at the value's span and returns `None` when the value does
//! not fit, so callers keep their default and carry on looking for more problems.

use std::time::Duration;

use kdl::{KdlEntry, KdlValue};

use crate::diagnostic::Diagnostics;
use crate::reader::valid_list;

/// How the duration syntax is explained in help lines.
pub(crate) const DURATION_HELP: &str =
    "durations look like \"500ms\", \"30s\", \"2m\", \"1h\" or \"1m30s\"; a bare integer means seconds";

/// How the size syntax is explained in help lines.
pub(crate) const SIZE_HELP: &str =
    "sizes look like \"512\", \"512B\", \"64KiB\" (or \"64K\"), \"1MiB\" (or \"1M\"), \"1GiB\"; K, M and G are powers of 1024; a bare integer means bytes";

/// "a boolean (#true)" and friends, for "found ..." messages.
pub(crate) fn describe(value: &KdlValue) -> String {
    match value {
        KdlValue::String(s) => format!("a string ({s:?})"),
        KdlValue::Integer(i) => format!("an integer ({i})"),
        KdlValue::Float(f) => format!("a number ({f:?})"),
        KdlValue::Bool(b) => format!("a boolean (#{b})"),
        KdlValue::Null => "#null".to_owned(),
    }
}

/// A string value.
pub(crate) fn string<'a>(d: &mut Diagnostics<'_>, entry: &'a KdlEntry, usage: &str) -> Option<&'a str> {
    match entry.value() {
        KdlValue::String(s) => Some(s),
        other => {
            d.error(entry.span(), format!("expected a string, found {}", describe(other)))
                .label("not a string")
                .help(format!("strings are written in double quotes, like: {usage}"));
            None
        }
    }
}

/// A string value that is not empty.
pub(crate) fn non_empty_string<'a>(d: &mut Diagnostics<'_>, entry: &'a KdlEntry, usage: &str) -> Option<&'a str> {
    let s = string(d, entry, usage)?;
    if s.is_empty() {
        d.error(entry.span(), "expected a non-empty string").label("empty").help(format!("write it like: {usage}"));
        return None;
    }
    Some(s)
}

/// A string that must be one of `choices`; `what` names it for the message ("protocol").
pub(crate) fn choice<'a>(
    d: &mut Diagnostics<'_>,
    entry: &'a KdlEntry,
    what: &str,
    choices: &[&str],
) -> Option<&'a str> {
    let usage = format!("{:?}", choices.first().copied().unwrap_or_default());
    let s = string(d, entry, &usage)?;
    if choices.contains(&s) {
        return Some(s);
    }
    d.error(entry.span(), format!("unknown {what} `{s}`")).label(format!("not a valid {what}")).help(valid_list(
        "valid values",
        s,
        choices,
    ));
    None
}

/// A boolean value.
pub(crate) fn boolean(d: &mut Diagnostics<'_>, entry: &KdlEntry) -> Option<bool> {
    match entry.value() {
        KdlValue::Bool(b) => Some(*b),
        other => {
            let help = match other {
                KdlValue::String(s) if s == "true" || s == "false" => {
                    format!("KDL v2 booleans are written without quotes: #{s}")
                }
                _ => "write #true or #false".to_owned(),
            };
            d.error(entry.span(), format!("expected a boolean (#true or #false), found {}", describe(other)))
                .label("not a boolean")
                .help(help);
            None
        }
    }
}

/// An integer within `min..=max`.
pub(crate) fn integer(d: &mut Diagnostics<'_>, entry: &KdlEntry, min: i128, max: i128) -> Option<i128> {
    let value = match entry.value() {
        KdlValue::Integer(i) => *i,
        other => {
            let help = match other {
                KdlValue::String(s) if s.parse::<i128>().is_ok() => {
                    format!("write the number without quotes: {s}")
                }
                _ => format!("write a whole number between {min} and {max}"),
            };
            d.error(entry.span(), format!("expected an integer, found {}", describe(other)))
                .label("not an integer")
                .help(help);
            return None;
        }
    };
    if value < min || value > max {
        let message = if value < min && min == 1 && value <= 0 {
            format!("expected a positive integer, found {value}")
        } else {
            format!("{value} is out of range")
        };
        d.error(entry.span(), message).label("out of range").help(format!("use a value between {min} and {max}"));
        return None;
    }
    Some(value)
}

/// A duration: a string like "30s" or a bare integer number of seconds.
///
/// With `allow_zero` false, zero is rejected too.
pub(crate) fn duration(d: &mut Diagnostics<'_>, entry: &KdlEntry, allow_zero: bool) -> Option<Duration> {
    let parsed = match entry.value() {
        KdlValue::Integer(i) if *i >= 0 => {
            u64::try_from(*i).map(Duration::from_secs).map_err(|_| "too large".to_owned())
        }
        KdlValue::Integer(i) => Err(format!("a duration cannot be negative ({i})")),
        KdlValue::String(s) => parse_duration(s),
        other => {
            d.error(entry.span(), format!("expected a duration like \"30s\", found {}", describe(other)))
                .label("not a duration")
                .help(DURATION_HELP);
            return None;
        }
    };
    match parsed {
        Ok(value) if value.is_zero() && !allow_zero => {
            d.error(entry.span(), "the duration must be greater than zero").label("zero").help(DURATION_HELP);
            None
        }
        Ok(value) => Some(value),
        Err(why) => {
            d.error(entry.span(), format!("invalid duration: {why}")).label("not a duration").help(DURATION_HELP);
            None
        }
    }
}

/// A size in bytes: a bare integer or a string like "64KiB".
pub(crate) fn size(d: &mut Diagnostics<'_>, entry: &KdlEntry) -> Option<u64> {
    let parsed = match entry.value() {
        KdlValue::Integer(i) if *i >= 0 => u64::try_from(*i).map_err(|_| "too large".to_owned()),
        KdlValue::Integer(i) => Err(format!("a size cannot be negative ({i})")),
        KdlValue::String(s) => parse_size(s),
        other => {
            d.error(entry.span(), format!("expected a size like \"64KiB\", found {}", describe(other)))
                .label("not a size")
                .help(SIZE_HELP);
            return None;
        }
    };
    match parsed {
        Ok(value) => Some(value),
        Err(why) => {
            d.error(entry.span(), format!("invalid size: {why}")).label("not a size").help(SIZE_HELP);
            None
        }
    }
}

/// Parses "500ms", "30s", "2m", "1h", "1d", "1m30s" or "30" (seconds).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty".to_owned());
    }
    if text.starts_with('-') {
        return Err(format!("a duration cannot be negative (`{text}`)"));
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at `{rest}` in `{text}`"));
        }
        let number: u64 = rest[..digits].parse().map_err(|_| format!("`{text}` is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            "d" => number.checked_mul(86_400).map(Duration::from_secs),
            "" => return Err(format!("missing unit after `{number}` in `{text}`")),
            other => return Err(format!("unknown unit `{other}` in `{text}` (use ms, s, m, h or d)")),
        };
        total = part.and_then(|p| total.checked_add(p)).ok_or_else(|| format!("`{text}` is too large"))?;
    }
    Ok(total)
}

/// Parses "512", "512B", "64K", "64k", "64KiB", "1M", "1m", "1MiB", "1G", "1GiB".
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    if digits == 0 {
        return Err(if trimmed.starts_with('-') {
            format!("a size cannot be negative (`{text}`)")
        } else {
            format!("`{text}` does not start with a number")
        });
    }
    let number: u64 = trimmed[..digits].parse().map_err(|_| format!("`{text}` is too large"))?;
    let unit = trimmed[digits..].trim_start();
    let multiplier: u64 = match unit {
        "" | "B" | "b" => 1,
        "K" | "k" | "KiB" | "Ki" => 1 << 10,
        "M" | "m" | "MiB" | "Mi" => 1 << 20,
        "G" | "g" | "GiB" | "Gi" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` in `{text}` (use B, KiB, MiB or GiB)")),
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("`{text}` is too large"))
}

/// A rate like "10/s", "600/m" or "5000/h", as events per second.
pub(crate) fn rate(d: &mut Diagnostics<'_>, entry: &KdlEntry, usage: &str) -> Option<f64> {
    let text = non_empty_string(d, entry, usage)?;
    let parsed = text.split_once('/').and_then(|(n, unit)| {
        let n: f64 = n.trim().parse().ok().filter(|n: &f64| *n > 0.0 && n.is_finite())?;
        let per = match unit.trim() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        Some(n / per)
    });
    if parsed.is_none() {
        d.error(entry.span(), format!("invalid rate `{text}`"))
            .label("not a rate")
            .help("write a count per second, minute or hour, like \"10/s\", \"600/m\" or \"5000/h\"");
    }
    parsed
}

/// A CIDR block (`10.0.0.0/8`) or a single address.
pub(crate) fn cidr(d: &mut Diagnostics<'_>, entry: &KdlEntry, usage: &str) -> Option<sluice_core::cidr::Cidr> {
    let text = non_empty_string(d, entry, usage)?;
    match text.parse::<sluice_core::cidr::Cidr>() {
        Ok(block) => Some(block),
        Err(e) => {
            let help = match &e {
                sluice_core::cidr::CidrError::HostBits { network, .. } => format!("write \"{network}\""),
                _ => "write an address block like \"10.0.0.0/8\", \"2001:db8::/32\" or one address like \"192.0.2.7\""
                    .to_owned(),
            };
            d.error(entry.span(), format!("invalid address block: {e}")).label("not a CIDR block").help(help);
            None
        }
    }
}

/// Reads a file of address blocks, one per line (`#` starts a comment); problems are
/// reported at `entry` (the `file=` value) with the file's own line number.
pub(crate) fn cidr_file(
    d: &mut Diagnostics<'_>,
    entry: &KdlEntry,
    usage: &str,
) -> Option<Vec<sluice_core::cidr::Cidr>> {
    let written = non_empty_string(d, entry, usage)?;
    let path = d.path(written);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            d.error(entry.span(), format!("cannot read `{}` (address list): {e}", path.display()))
                .label("unreadable file")
                .help("the file holds one address block per line, like 10.0.0.0/8; check the path and permissions");
            return None;
        }
    };
    let mut blocks = Vec::new();
    let mut ok = true;
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match line.parse::<sluice_core::cidr::Cidr>() {
            Ok(block) => blocks.push(block),
            Err(e) => {
                if ok {
                    d.error(entry.span(), format!("{}:{}: invalid address block: {e}", path.display(), n + 1))
                        .label("in this file")
                        .help("each line holds one block like 10.0.0.0/8 or 2001:db8::/32; `#` starts a comment");
                }
                ok = false;
            }
        }
    }
    ok.then_some(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("64K"), Ok(65_536));
        assert_eq!(parse_size("64k"), Ok(65_536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("8 KiB"), Ok(8192));
        assert!(parse_size("-1K").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
