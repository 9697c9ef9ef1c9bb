//! The executor: the only layer that touches files, S3, DuckDB and databases. It runs a compiled
//! plan stage by stage (extract, validate, load) and returns a report of every row's fate.

pub mod read;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::plan::{Plan, StagePlan};
use crate::spec::model::{Connection, Spec};
use validate::Reject;

/// Why a run failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum ExecError {
    /// A source could not be fetched.
    #[error("cannot read {source_name}: {message}")]
    #[diagnostic(code(run::source))]
    Source {
        /// The object or file.
        source_name: String,
        /// Why.
        message: String,
    },
    /// The CSV header lacks columns the spec reads.
    #[error("{file} has no column {missing}; its header is: {found}")]
    #[diagnostic(code(run::header), help("rename the columns in the file, or point the spec at them with `from:`"))]
    Header {
        /// The file.
        file: String,
        /// Missing headers.
        missing: String,
        /// The header found.
        found: String,
    },
    /// DuckDB could not read a CSV file.
    #[error("cannot read CSV {file}: {message}")]
    #[diagnostic(code(run::csv))]
    Csv {
        /// The file.
        file: String,
        /// DuckDB's message.
        message: String,
    },
    /// A DuckDB operation failed.
    #[error("DuckDB failed to {what}: {message}")]
    #[diagnostic(code(run::duckdb))]
    Duckdb {
        /// What was attempted.
        what: &'static str,
        /// DuckDB's message.
        message: String,
    },
    /// A Polars operation failed.
    #[error("Polars failed to {what}: {message}")]
    #[diagnostic(code(run::polars))]
    Polars {
        /// What was attempted.
        what: &'static str,
        /// Polars' message.
        message: String,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {message}")]
    #[diagnostic(code(run::write))]
    Write {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A bug in etl.
    #[error("internal error (a bug in etl, please report it): {0}")]
    #[diagnostic(code(run::internal))]
    Internal(String),
}

impl ExecError {
    fn duckdb(what: &'static str) -> impl Fn(duckdb::Error) -> ExecError {
        move |e| ExecError::Duckdb { what, message: e.to_string() }
    }
    fn polars(what: &'static str) -> impl Fn(polars::error::PolarsError) -> ExecError {
        move |e| ExecError::Polars { what, message: e.to_string() }
    }
    fn csv(path: &Path) -> impl Fn(duckdb::Error) -> ExecError + '_ {
        move |e| ExecError::Csv { file: path.display().to_string(), message: first_line(&e.to_string()) }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExecError::Source { .. } => crate::exit::CONNECT,
            _ => crate::exit::ERROR,
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Only these stages (None: all), in plan order.
    pub stages: Option<Vec<String>>,
    /// Validate everything, load nothing.
    pub dry_run: bool,
    /// Directory of the spec file: relative paths in connections start here.
    pub spec_dir: PathBuf,
    /// Where DuckDB may spill.
    pub temp_dir: PathBuf,
    /// DuckDB's memory limit, e.g. `1GB`.
    pub duckdb_memory: String,
}

/// What happened to one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// Stage name.
    pub stage: String,
    /// The source as the user knows it (`s3://bucket/key` or a path).
    pub source: String,
    /// Size of the source in bytes.
    pub bytes: u64,
    /// Data rows in the file (malformed lines included).
    pub rows_read: u64,
    /// Rows that passed every check.
    pub rows_valid: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
    /// Valid rows flagged by `warn` rules.
    pub rows_warned: u64,
    /// Rejected rows by rule (a row failing two rules counts under both).
    pub rejects_by_rule: BTreeMap<String, u64>,
    /// Every reject, in line order.
    #[serde(skip)]
    pub rejects: Vec<Reject>,
}

impl StageReport {
    /// rows read = valid + rejected: checked for every stage.
    pub fn balanced(&self) -> bool {
        self.rows_read == self.rows_valid + self.rows_rejected
    }
}

/// Where a stage's source file is, for a local connection.
pub fn local_path(spec: &Spec, stage: &StagePlan, spec_dir: &Path) -> Option<PathBuf> {
    match spec.connections.get(&stage.source_connection)? {
        Connection::Local(l) => Some(spec_dir.join(&l.path).join(&stage.source_key)),
        _ => None,
    }
}

/// Extracts and validates one stage from a local file: everything before the load.
pub fn check_stage(reader: &read::Reader, stage: &StagePlan, path: &Path) -> Result<(StageReport, Vec<polars::prelude::DataFrame>), ExecError> {
    let shown = path.display().to_string();
    let bytes = std::fs::metadata(path)
        .map_err(|e| ExecError::Source { source_name: shown.clone(), message: e.to_string() })?
        .len();
    let (staged, csv_errors) = reader.stage(stage, path, &shown)?;
    let mut report = StageReport {
        stage: stage.name.clone(),
        source: shown,
        bytes,
        rows_read: staged + csv_errors.len() as u64,
        rows_valid: 0,
        rows_rejected: csv_errors.len() as u64,
        rows_warned: 0,
        rejects_by_rule: BTreeMap::new(),
        rejects: Vec::new(),
    };
    for e in csv_errors {
        *report.rejects_by_rule.entry("csv".into()).or_default() += 1;
        report.rejects.push(Reject {
            line: e.line,
            column: e.column,
            rule: "csv".into(),
            value: e.text,
            message: format!("{}: {}", e.kind.to_lowercase(), first_line(&e.message)),
            severity: crate::spec::model::Severity::Error,
        });
    }
    let mut valid = Vec::new();
    reader.typed_batches(stage, path, stage.batch_size as usize, |batch| {
        let v = validate::validate(stage, batch)?;
        report.rows_valid += v.valid.height() as u64;
        report.rows_rejected += v.rejected_rows;
        report.rows_warned += v.warned_rows;
        let mut seen_rules: BTreeMap<(u64, String), ()> = BTreeMap::new();
        for r in &v.rejects {
            if r.severity == crate::spec::model::Severity::Error && seen_rules.insert((r.line, r.rule.clone()), ()).is_none() {
                *report.rejects_by_rule.entry(r.rule.clone()).or_default() += 1;
            }
        }
        report.rejects.extend(v.rejects);
        valid.push(v.valid);
        Ok(())
    })?;
    report.rejects.sort_by_key(|r| r.line);
    if !report.balanced() {
        return Err(ExecError::Internal(format!(
            "stage {}: {} rows read but {} valid + {} rejected",
            stage.name, report.rows_read, report.rows_valid, report.rows_rejected
        )));
    }
    Ok((report, valid))
}

/// The plan's stages selected by `opts`.
pub fn selected<'a>(plan: &'a Plan, opts: &RunOptions) -> Vec<&'a StagePlan> {
    crate::plan::select(plan, opts.stages.as_deref())
}
