//! Any bytes as a spec; the property is in `fuzz/props/spec_load.rs` (shared with the test that
//! replays found inputs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../props/spec_load.rs"]
mod props;

fuzz_target!(|data: &[u8]| props::check(data));
