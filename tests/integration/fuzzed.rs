//! The inputs the fuzz targets found faults with (`fuzz/corpus/*/found_*`), replayed through the
//! targets' own properties (`fuzz/props/`) on every test run: a fixed fault stays fixed.

use crate::util::root;

#[path = "../../fuzz/props/csv_extract.rs"]
mod csv_extract;
#[path = "../../fuzz/props/spec_load.rs"]
mod spec_load;

fn found(target: &str) -> Vec<std::path::PathBuf> {
    let dir = root().join("fuzz/corpus").join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("found_")))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no found_ input in {}", dir.display());
    out
}

#[test]
fn every_input_a_fuzz_target_found_a_fault_with_passes_its_property() {
    for path in found("spec_load") {
        spec_load::check(&std::fs::read(&path).unwrap());
    }
    let harness = csv_extract::Harness::new();
    for path in found("csv_extract") {
        harness.check(&std::fs::read(&path).unwrap());
    }
}
