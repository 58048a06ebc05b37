//! Request head handling on arbitrary bytes: the HTTP/1 framing guard (the smuggling
//! checks in front of hyper) and path normalization before routing.
//!
//! - The guard's verdict (heads accepted, where a head was rejected) must be the same
//!   whether the bytes arrive at once or in reads of any size, or a client could pick the
//!   split that slips a request past it. (A head longer than the limit is left to hyper's
//!   431, whatever the split, so those inputs only check that nothing panics.)
//! - The normalized path of any request target is idempotent and free of dot-segments
//!   and empty segments, so routing cannot be walked around.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let max = 1024;
    let whole = sluice_core::guard::screen(bytes, max, bytes.len().max(1));
    let pieces = sluice_core::guard::screen(bytes, max, usize::from(split % 64) + 1);
    if !whole.passed_through && !pieces.passed_through {
        assert_eq!(whole.heads, pieces.heads, "heads accepted depend on the read size");
        assert_eq!(whole.rejected_at, pieces.rejected_at, "the rejection depends on the read size");
    }

    // The request target of the first line, as hyper would hand it to routing.
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or(bytes);
    if let Ok(target) = std::str::from_utf8(target) {
        let path = target.split('?').next().unwrap_or("");
        if path.starts_with('/') {
            let once = sluice_filters::normalize::path(path).into_owned();
            let twice = sluice_filters::normalize::path(&once).into_owned();
            assert_eq!(once, twice, "normalization is not idempotent for {path:?}");
            assert!(!once.contains("//"), "{once:?}");
            assert!(!once.split('/').any(|s| s == "." || s == ".."), "{once:?}");
        }
    }
});
