//! The engine's build id (`ETL_BUILD_ID`): a hash of the crate's sources, its locked dependency
//! versions (DuckDB, Polars, ...) and the compiler. A load's recorded digests include it, so
//! after any change to the code that reads, casts and checks rows, an earlier load's outcomes are
//! never reused.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let mut all = Vec::new();
    files(&root.join("src"), &mut all);
    files(&root.join("migrations"), &mut all);
    all.push(root.join("Cargo.lock"));
    all.push(root.join("Cargo.toml"));
    all.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in &all {
        p.strip_prefix(&root).unwrap_or(p).hash(&mut h);
        std::fs::read(p).unwrap_or_default().hash(&mut h);
    }
    let rustc = std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    rustc.hash(&mut h);
    std::env::var("PROFILE").unwrap_or_default().hash(&mut h);
    println!("cargo:rustc-env=ETL_BUILD_ID={}-{:016x}", std::env::var("CARGO_PKG_VERSION").unwrap_or_default(), h.finish());
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=Cargo.toml");
}
