//! Loading only the lines that changed since a stage's last load. Each load leaves a line index
//! of its file in the cache directory (two 64-bit hashes of each line's fields as read, and its
//! record number). When a stage's spec, referenced tables and table are as its last load left
//! them but its file is new, a line equal to a line of the last file is neither cast, checked,
//! compared nor sent: its row is in the table as it would be loaded again, or it was rejected for
//! the same reasons, which are carried over with its new line number. Lines whose key repeats
//! within the file are always checked. Every other line goes the usual way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ExecError;
use super::read::Reader;
use super::validate::{Lines, Reject};
use crate::plan::StagePlan;
use crate::plan::extract::same_lines_table;
use crate::spec::model::Severity;

/// Where line indexes are kept: `$ETL_CACHE_DIR`, else `$XDG_CACHE_HOME/etl`, else
/// `$HOME/.cache/etl`; in its `line-index` folder. None when none is set.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = var("ETL_CACHE_DIR").or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("etl"))).or_else(|| var("HOME").map(|d| d.join(".cache/etl")))?;
    Some(base.join("line-index"))
}

/// The stem shared by every index of one stage's table (one kept at a time).
fn stem(spec: &str, stage: &str, table: &str, duckdb: &str) -> String {
    let digest = Sha256::digest(format!("{spec}\n{stage}\n{table}\n{duckdb}\n{}", env!("CARGO_PKG_VERSION")).as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The index file of `source` (a source digest) for a stage's table.
pub fn index_path(dir: &Path, spec: &str, stage: &str, table: &str, duckdb: &str, source: &str) -> PathBuf {
    dir.join(format!("{}-{}.duckdb", stem(spec, stage, table, duckdb), &source[..source.len().min(32)]))
}

/// Writes the staged file's index to `path` (through a temporary name, so a reader never sees
/// half a file) and removes the stage's older indexes.
pub fn write_index(reader: &Reader, stage: &StagePlan, path: &Path) -> Result<(), ExecError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| ExecError::Write { path: dir.display().to_string(), message: e.to_string() };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let partial = dir.join(format!(".{name}.{}.partial", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    reader.write_line_index(stage, &partial)?;
    std::fs::rename(&partial, path).map_err(fail)?;
    let prefix = name.split('-').next().unwrap_or_default();
    for entry in std::fs::read_dir(dir).map_err(fail)?.flatten() {
        let other = entry.file_name();
        let other = other.to_string_lossy();
        if other != name && other.starts_with(prefix) && other.ends_with(".duckdb") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The checks whose outcome for a line depends on other lines of the file.
const REPEATS: [&str; 2] = ["duplicate_key", "unique"];

/// What the unchanged lines contribute to a stage's report.
#[derive(Debug, Default)]
pub struct Carried {
    /// Unchanged lines.
    pub same: u64,
    /// Of them, rows that passed every check (in the table already).
    pub valid: u64,
    /// Of them, rows rejected.
    pub rejected: u64,
    /// Of them, valid rows flagged by `warn` rules.
    pub warned: u64,
    /// Their rejects, at their new lines.
    pub rejects: Vec<Reject>,
}

/// Finds the staged lines equal to a line of the last load's file (whose index is loaded) and
/// carries over that load's rejects of them (`previous`, at the last file's lines) to their lines
/// in this file (`lines`).
pub fn carry_over(reader: &Reader, stage: &StagePlan, lines: &Lines, previous: &[Reject]) -> Result<Carried, ExecError> {
    let mut same = reader.same_lines(stage)?;
    let header = u64::from(stage.csv.header);
    // Lines the last file's reader could not split: they have no record number.
    let malformed: Vec<u64> = previous.iter().filter(|r| r.rule == "csv").map(|r| r.line).collect::<BTreeSet<_>>().into_iter().collect();
    let record_of = |line: u64| line.saturating_sub(header + malformed.partition_point(|&m| m < line) as u64);
    let mut by_record: BTreeMap<u64, Vec<&Reject>> = BTreeMap::new();
    for r in previous.iter().filter(|r| r.rule != "csv") {
        by_record.entry(record_of(r.line)).or_default().push(r);
    }
    // A line that lost to an earlier one with its key depended on that line: checked again.
    let repeated: Vec<u64> = by_record.iter().filter(|(_, rs)| rs.iter().any(|r| REPEATS.contains(&r.rule.as_str()))).map(|(k, _)| *k).collect();
    same -= reader.forget_same_lines(stage, &repeated)?;
    by_record.retain(|k, _| repeated.binary_search(k).is_err());
    let wanted: Vec<u64> = by_record.keys().copied().collect();
    let mut moved: HashMap<u64, Vec<u64>> = HashMap::new();
    for (prev, record) in reader.same_lines_of(stage, &wanted)? {
        moved.entry(prev).or_default().push(record);
    }
    let mut carried = Carried { same, ..Carried::default() };
    for (prev, records) in &moved {
        let rejects = &by_record[prev];
        let error = rejects.iter().any(|r| r.severity == Severity::Error);
        for &record in records {
            if error {
                carried.rejected += 1;
            } else {
                carried.warned += 1;
            }
            let line = lines.line(record);
            carried.rejects.extend(rejects.iter().map(|r| Reject { line, ..(*r).clone() }));
        }
    }
    carried.valid = same - carried.rejected;
    Ok(carried)
}

/// The table `typed_batches` leaves out: the unchanged lines.
pub fn except(stage: &StagePlan) -> String {
    same_lines_table(stage)
}
