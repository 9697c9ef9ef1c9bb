//! What the stages of a run share: how to run (`RunOptions`), the opened targets, and the
//! context every stage gets (its Plan, options, the run's DuckDB reader, runtime and progress).

use std::path::{Path, PathBuf};

use super::duck::Duck;
use super::extract::Reader;
use super::postgres::Pg;
use super::progress::Progress;
use crate::plan::Plan;

/// DuckDB's memory limit for a run: `ETL_DUCKDB_MEMORY`, else [`crate::plan::duck::DEFAULT_MEMORY`]. Past it DuckDB
/// spills to the temp directory, so a run's memory is bounded by this and the batch size, not
/// the file.
pub fn duckdb_memory() -> String {
    std::env::var("ETL_DUCKDB_MEMORY").ok().filter(|m| !m.trim().is_empty()).unwrap_or_else(|| crate::plan::duck::DEFAULT_MEMORY.into())
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Only these stages (None: all), in plan order.
    pub stages: Option<Vec<String>>,
    /// Validate everything, load nothing.
    pub dry_run: bool,
    /// The spec file (relative paths in connections start at its directory).
    pub spec_path: PathBuf,
    /// SHA-256 of the spec file, recorded with the run.
    pub spec_hash: String,
    /// Where DuckDB may spill.
    pub temp_dir: PathBuf,
    /// DuckDB's memory limit, e.g. `1GB`.
    pub duckdb_memory: String,
    /// The scheduler job that started this run, if any.
    pub job_id: Option<String>,
    /// The run's business date (`run.date`), recorded with it.
    pub date: chrono::NaiveDate,
    /// Print no progress (e.g. for `--output json` piped somewhere).
    pub quiet: bool,
    /// Log every batch.
    pub verbose: bool,
    /// Load every stage, even one whose source, spec and tables are unchanged since its last
    /// load.
    pub force: bool,
    /// `etl rejects replay`: the rows a stage reads are rejected rows of an earlier load.
    pub replay: Option<Replay>,
    /// `etl run --distribute`: the files of the stages that commit file by file are queued for
    /// `etl worker`s (and this run) to load.
    pub distribute: bool,
    /// How long a claim on a queued file holds without being renewed.
    pub lease: std::time::Duration,
}

/// A replay of rejected rows (`etl rejects replay`): one stage reads a file of rows an earlier load
/// rejected, each line standing for the rejects of one row of that load.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The stage.
    pub stage: String,
    /// The run whose rejects they are.
    pub of_run: i64,
    /// Which rejected rows a row of the replayed file stands for.
    pub rows: ReplayedRows,
}

/// How a replayed file's rows stand for rejected rows.
#[derive(Debug, Clone)]
pub enum ReplayedRows {
    /// The file is the rejected rows themselves: per line (the first row is line 2 with a
    /// header), the file and line of the row it is.
    Lines(std::collections::HashMap<u64, (String, i64)>),
    /// A corrected file: a row that loads stands for the rejected rows with its key (the key
    /// columns' text by header, as read), each given by its file and line.
    Keys {
        /// The headers of the key columns.
        headers: Vec<String>,
        /// The rejected rows by their key's text.
        rows: std::collections::HashMap<Vec<String>, Vec<(String, i64)>>,
    },
}

impl RunOptions {
    /// The spec file's directory.
    pub fn spec_dir(&self) -> PathBuf {
        self.spec_path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

/// A stage's target database, opened.
pub enum Target<'r> {
    /// A PostgreSQL database.
    Pg(Pg),
    /// A DuckDB file attached to the run's DuckDB database.
    Duck(Duck<'r>),
}

/// What every stage of a run shares: its Plan, options, DuckDB reader, runtime and progress.
pub struct StageContext<'a> {
    /// The compiled spec.
    pub plan: &'a Plan,
    /// How to run.
    pub opts: &'a RunOptions,
    /// The run's DuckDB database.
    pub reader: &'a Reader,
    /// The runtime S3 requests run on.
    pub rt: &'a tokio::runtime::Runtime,
    /// What the run tells a person while it works.
    pub progress: &'a Progress,
    /// The run's id in the records and the connection that keeps them (None for a dry run): a
    /// stage loading into that connection records itself in its own transaction.
    pub records: Option<(i64, &'a str)>,
    /// A file claimed from the work queue: its row turns `done` in the load's transaction.
    pub claim: Option<&'a super::queue::Claim>,
}

