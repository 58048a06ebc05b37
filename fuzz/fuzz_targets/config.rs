//! The configuration parser on arbitrary text: it must report problems, never panic, and
//! every problem it reports must point inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(err) = sluice_config::parse("fuzz.kdl", text) {
        for problem in err.problems() {
            if let Some(span) = problem.span() {
                assert!(span.end <= text.len(), "span past the end of the text");
            }
        }
        let _ = err.render(false);
    }
});
