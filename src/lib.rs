//! etl: a declarative, YAML-spec batch ETL engine. The spec layer (`spec`) and the compiler
//! (`plan`) are pure and always built; the executor (`exec`), the scheduler (`schedule`) and the
//! command line (`cli`) come with the `engine` feature (on by default), so the pure layers can be
//! built and fuzzed without DuckDB, PostgreSQL or S3.

pub mod exit;
pub mod plan;
pub mod spec;

#[cfg(feature = "engine")]
pub mod cli;
#[cfg(feature = "engine")]
pub mod exec;
#[cfg(feature = "engine")]
pub mod schedule;

#[cfg(feature = "engine")]
pub use cli::{prepare::default_spec_path, run};

/// Golden files for unit tests: compared with the reviewed file, or rewritten with
/// UPDATE_GOLDEN=1 (review the diff before committing).
#[cfg(all(test, feature = "engine"))]
pub(crate) mod golden {
    /// Compares `actual` with the golden file at `path` (relative to the crate's root).
    /// `UPDATE_GOLDEN=1` rewrites it instead: any other value is a mistake, and under CI
    /// (`CI` set) rewriting is refused.
    pub fn check(path: &str, actual: &str) {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let update = match std::env::var("UPDATE_GOLDEN").ok().as_deref() {
            None => false,
            Some("1") if std::env::var_os("CI").is_some() => panic!("UPDATE_GOLDEN=1 is refused under CI (CI is set)"),
            Some("1") => true,
            Some(other) => panic!("UPDATE_GOLDEN={other}: set it to 1 to rewrite the golden files, or unset it"),
        };
        if update {
            std::fs::create_dir_all(full.parent().expect("golden files live in a folder")).unwrap();
            std::fs::write(&full, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&full).unwrap_or_else(|_| panic!("golden file {path} is missing; run with UPDATE_GOLDEN=1 to create it\n{actual}"));
        assert_eq!(expected, actual, "output differs from golden file {path} (UPDATE_GOLDEN=1 rewrites it)");
    }
}
