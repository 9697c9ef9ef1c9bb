//! Any bytes as a CSV file through the real extract, row checks and incremental path; the
//! property is in `fuzz/props/csv_extract.rs` (shared with the test that replays found inputs).
//! Build with `cargo +nightly fuzz run --features engine csv_extract`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../props/csv_extract.rs"]
mod props;

thread_local! {
    static HARNESS: props::Harness = props::Harness::new();
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| h.check(data));
});
