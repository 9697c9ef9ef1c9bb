//! The executor: the only layer that touches files, S3, DuckDB and databases. It runs a compiled
//! plan stage by stage (extract, validate, load) and returns a report of every row's fate.

pub mod duck;
pub mod fingerprint;
pub mod incremental;
pub mod pgcopy;
pub mod postgres;
pub mod progress;
pub mod read;
pub mod report;
pub mod s3;
pub mod source;
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
    /// A server could not be reached or refused the login.
    #[error("cannot connect to {what}: {message}")]
    #[diagnostic(code(run::connect), help("check that the server runs and the spec's (or --db-*/--s3-*) address and credentials"))]
    Connect {
        /// What.
        what: String,
        /// Why (never with a password).
        message: String,
    },
    /// A database statement failed.
    #[error("PostgreSQL failed to {what}: {message}")]
    #[diagnostic(code(run::database))]
    Database {
        /// What was attempted.
        what: String,
        /// The server's message.
        message: String,
    },
    /// The connection to the database broke mid-run (a restart, a network cut, a terminated
    /// session); the unfinished stage was rolled back with it.
    #[error("lost the connection to PostgreSQL while trying to {what}: {message}")]
    #[diagnostic(code(run::connection_lost), help("the server restarted or dropped the session; nothing of the unfinished stage was committed, so run again"))]
    ConnectionLost {
        /// What was attempted.
        what: String,
        /// The driver's message.
        message: String,
    },
    /// An existing target table does not match the spec; nothing was loaded.
    #[error("table {table} does not match the spec: {problems}")]
    #[diagnostic(code(run::table_mismatch), help("alter the table to match, or drop it and let etl create it"))]
    TableMismatch {
        /// The table.
        table: String,
        /// What differs.
        problems: String,
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
    /// Something this version cannot do yet.
    #[error("{0}")]
    #[diagnostic(code(run::unsupported))]
    Unsupported(String),
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
    /// A PostgreSQL error: a broken connection (exit 3) or a failed statement.
    pub fn database(what: impl Into<String>, e: sqlx::Error) -> ExecError {
        let lost = match &e {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
            // SQLSTATE class 08 (connection exception) and 57P (the server shut down or
            // terminated the session).
            sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
            _ => false,
        };
        let (what, message) = (what.into(), e.to_string());
        if lost { ExecError::ConnectionLost { what, message } } else { ExecError::Database { what, message } }
    }
    fn csv(path: &Path) -> impl Fn(duckdb::Error) -> ExecError + '_ {
        move |e| ExecError::Csv { file: path.display().to_string(), message: first_line(&e.to_string()) }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExecError::Source { .. } | ExecError::Connect { .. } | ExecError::ConnectionLost { .. } => crate::exit::CONNECT,
            _ => crate::exit::ERROR,
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// DuckDB's memory limit for a run: `ETL_DUCKDB_MEMORY`, else 256MB. Past it DuckDB spills to
/// the temp directory, so a run's memory is bounded by this and the batch size, not the file.
pub fn duckdb_memory() -> String {
    std::env::var("ETL_DUCKDB_MEMORY").ok().filter(|m| !m.trim().is_empty()).unwrap_or_else(|| "256MB".into())
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
    /// The scheduler job that started this run, if any.
    pub job_id: Option<String>,
    /// Print no progress (e.g. for `--output json` piped somewhere).
    pub quiet: bool,
    /// Log every batch.
    pub verbose: bool,
    /// Load every stage, even one whose source, spec and tables are unchanged since its last
    /// load.
    pub force: bool,
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
    /// The object's ETag (S3), if any.
    pub etag: Option<String>,
    /// Data rows in the file (malformed lines included).
    pub rows_read: u64,
    /// Rows that passed every check.
    pub rows_valid: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
    /// Valid rows flagged by `warn` rules.
    pub rows_warned: u64,
    /// What the load did (None: not loaded, e.g. a dry run or over budget).
    pub loaded: Option<postgres::Merged>,
    /// Valid rows the load would write (a dry run) or wrote.
    pub rows_staged: u64,
    /// Valid rows equal to the target's current rows, found in the extract and not written.
    #[serde(skip)]
    pub skipped_unchanged: u64,
    /// `succeeded`, `rejected` (loaded, some rows rejected), `over_budget` or `failed`.
    pub status: String,
    /// Why the stage went over its error budget.
    pub budget: Option<String>,
    /// Rejected rows by rule (a row failing two rules counts under both).
    pub rejects_by_rule: BTreeMap<String, u64>,
    /// Every reject, in line order.
    #[serde(skip)]
    pub rejects: Vec<Reject>,
    /// The stage was skipped: its source, spec and tables are as the load of this run left
    /// them, so its outcome (counts, rejects) is that load's.
    pub unchanged_since_run: Option<i64>,
    /// What the load depended on, recorded for the next run to compare.
    #[serde(skip)]
    pub fingerprint: Option<fingerprint::Fingerprint>,
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

/// Extracts and validates one stage from a local file, handing each batch of valid rows to
/// `on_valid` as soon as it is checked: memory holds one batch, not the file.
///
/// With `changes` (the file split against the stage's last load), only the changed records are
/// read and checked; the unchanged ones' outcome is carried over.
pub fn check_stage(
    reader: &read::Reader,
    stage: &StagePlan,
    path: &Path,
    shown: &str,
    changes: Option<&incremental::Changes>,
    mut on_valid: impl FnMut(polars::prelude::DataFrame) -> Result<(), ExecError>,
) -> Result<StageReport, ExecError> {
    let bytes = std::fs::metadata(path)
        .map_err(|e| ExecError::Source { source_name: shown.to_string(), message: e.to_string() })?
        .len();
    let (staged, csv_errors) = reader.stage(stage, changes.map_or(path, |c| c.path.as_path()), shown)?;
    let mut report = StageReport {
        stage: stage.name.clone(),
        source: shown.to_string(),
        bytes,
        etag: None,
        rows_read: staged + csv_errors.len() as u64,
        rows_valid: 0,
        rows_rejected: csv_errors.len() as u64,
        rows_warned: 0,
        loaded: None,
        rows_staged: 0,
        skipped_unchanged: 0,
        status: "running".into(),
        budget: None,
        rejects_by_rule: BTreeMap::new(),
        rejects: Vec::new(),
        unchanged_since_run: None,
        fingerprint: None,
    };
    let malformed = csv_errors.iter().map(|e| e.line).collect();
    let lines = match changes {
        None => validate::Lines::new(stage, malformed),
        Some(c) => validate::Lines::mapped(stage, malformed, c.lines.clone()),
    };
    for e in csv_errors {
        *report.rejects_by_rule.entry("csv".into()).or_default() += 1;
        report.rejects.push(Reject {
            line: lines.original(e.line),
            column: e.column,
            rule: "csv".into(),
            value: e.text.map(|t| t.trim_matches(['\r', '\n']).to_string()),
            message: format!("{}: {}", e.kind.to_lowercase(), first_line(&e.message)),
            severity: crate::spec::model::Severity::Error,
        });
    }
    if let Some(c) = changes {
        report.rows_read += c.same;
        report.rows_valid += c.valid;
        report.skipped_unchanged += c.valid;
        report.rows_rejected += c.rejected;
        report.rows_warned += c.warned;
        count_rules(&mut report, &c.rejects);
        report.rejects.extend(c.rejects.iter().cloned());
    }
    reader.typed_batches(stage, stage.batch_size as usize, |batch| {
        let v = validate::validate(stage, &lines, batch)?;
        report.rows_valid += v.valid_rows;
        report.skipped_unchanged += v.unchanged;
        report.rows_rejected += v.rejected_rows;
        report.rows_warned += v.warned_rows;
        count_rules(&mut report, &v.rejects);
        report.rejects.extend(v.rejects);
        on_valid(v.valid)
    })?;
    report.rejects.sort_by_key(|r| r.line);
    if !report.balanced() {
        return Err(ExecError::Internal(format!(
            "stage {}: {} rows read but {} valid + {} rejected",
            stage.name, report.rows_read, report.rows_valid, report.rows_rejected
        )));
    }
    Ok(report)
}

/// Counts rejected rows by rule: each (line, rule) once, error severity only.
pub fn count_rules(report: &mut StageReport, rejects: &[Reject]) {
    let mut seen = std::collections::BTreeSet::new();
    for r in rejects {
        if r.severity == crate::spec::model::Severity::Error && seen.insert((r.line, r.rule.clone())) {
            *report.rejects_by_rule.entry(r.rule.clone()).or_default() += 1;
        }
    }
}

/// Appends a CSV field in double quotes, doubling the quotes inside.
pub fn push_quoted(out: &mut Vec<u8>, v: &str) {
    out.push(b'"');
    for b in v.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Extracts and validates a stage, handing each non-empty batch of rows to write to
/// `stage_batch` with progress shown: what both targets do before their merge.
#[allow(clippy::too_many_arguments)]
fn stage_rows(
    reader: &read::Reader,
    st: &StagePlan,
    path: &Path,
    shown: &str,
    changes: Option<&incremental::Changes>,
    progress: &progress::Progress,
    mut stage_batch: impl FnMut(polars::prelude::DataFrame) -> Result<(), ExecError>,
) -> Result<StageReport, ExecError> {
    let mut staged = 0u64;
    let mut first = true;
    check_stage(reader, st, path, shown, changes, |batch| {
        if std::mem::take(&mut first) {
            progress.detail(&st.name, "extracted; first batch validated");
        }
        if batch.height() == 0 {
            return Ok(());
        }
        staged += batch.height() as u64;
        progress.rows(&st.name, staged);
        progress.detail(&st.name, &format!("staged {} rows ({staged} so far)", batch.height()));
        stage_batch(batch)
    })
}

/// Appends one CSV record (RFC 4180; None is an empty unquoted field, text is always quoted).
pub fn write_csv_record(out: &mut Vec<u8>, fields: &[Option<String>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if let Some(v) = f {
            push_quoted(out, v);
        }
    }
    out.push(b'\n');
}

/// The plan's stages selected by `opts`.
pub fn selected<'a>(plan: &'a Plan, opts: &RunOptions) -> Vec<&'a StagePlan> {
    crate::plan::select(plan, opts.stages.as_deref())
}

/// One analytics query's result, every value as the database printed it.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyticResult {
    /// Query name.
    pub name: String,
    /// Column names in order.
    pub columns: Vec<String>,
    /// Rows of values (None: NULL).
    pub rows: Vec<Vec<Option<String>>>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's id in etl_runs (None for a dry run).
    pub run_id: Option<i64>,
    /// Spec name.
    pub spec: String,
    /// SHA-256 of the spec file.
    pub spec_hash: String,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// `succeeded`, `rejected` or `over_budget`.
    pub status: String,
    /// Per stage, in run order.
    pub stages: Vec<StageReport>,
    /// Analytics results.
    pub analytics: Vec<AnalyticResult>,
}

impl RunReport {
    /// Exit code: 4 when any row was rejected or a stage went over its error budget, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.stages.iter().any(|s| s.rows_rejected > 0 || s.status == "over_budget") {
            crate::exit::REJECTED
        } else {
            crate::exit::OK
        }
    }
}

fn over_budget(stage: &StagePlan, report: &StageReport) -> Option<String> {
    if let Some(max) = stage.max_rejects
        && report.rows_rejected > max {
            return Some(format!("{} rows rejected, more than max_rejects {max}", report.rows_rejected));
        }
    if let Some(ratio) = stage.max_reject_ratio {
        let got = report.rows_rejected as f64 / report.rows_read.max(1) as f64;
        if got > ratio {
            return Some(format!("{:.4} of rows rejected, more than max_reject_ratio {ratio}", got));
        }
    }
    None
}

/// A stage's target database.
enum Target<'r> {
    Pg(postgres::Pg),
    Duck(duck::Duck<'r>),
}

/// Runs the selected stages of a plan: extract, validate, load; then the analytics.
pub fn run(loaded: &crate::spec::LoadedSpec, plan: &Plan, opts: &RunOptions) -> Result<RunReport, ExecError> {
    let spec = &loaded.spec;
    let stages = selected(plan, opts);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| ExecError::Internal(e.to_string()))?;
    let reader = read::Reader::open(&opts.temp_dir, &opts.duckdb_memory)?;
    let mut targets: indexmap::IndexMap<String, Target> = indexmap::IndexMap::new();
    let mut connections: Vec<&str> = stages.iter().map(|s| s.target.connection.as_str()).collect();
    if !opts.dry_run && opts.stages.is_none() {
        connections.extend(plan.analytics.iter().map(|a| a.connection.as_str()));
    }
    for name in connections {
        if targets.contains_key(name) {
            continue;
        }
        let target = match spec.connections.get(name) {
            Some(Connection::Postgres(c)) => Target::Pg(postgres::Pg::connect(name, c)?),
            Some(Connection::Duckdb(d)) => Target::Duck(duck::Duck::open(&reader, &opts.spec_dir.join(&d.path))?),
            _ => return Err(ExecError::Internal(format!("connection {name} is not a target"))),
        };
        targets.insert(name.to_string(), target);
    }
    let _contexts: Vec<_> = targets.values().filter_map(|t| if let Target::Pg(pg) = t { Some(pg.enter()) } else { None }).collect();
    let engine = targets.values().next().ok_or_else(|| ExecError::Internal("no stage selected".into()))?;
    let path = loaded.path.display().to_string();
    let run_id = if opts.dry_run {
        None
    } else {
        Some(match engine {
            Target::Pg(pg) => {
                pg.migrate()?;
                pg.block(postgres::begin_run(pg.pool(), &spec.name, &loaded.hash, &path, opts.job_id.as_deref()))?
            }
            Target::Duck(d) => {
                d.migrate()?;
                d.begin_run(&spec.name, &loaded.hash, &path, opts.job_id.as_deref())?
            }
        })
    };
    let finish = |status: &str, error: Option<&str>| -> Result<(), ExecError> {
        let Some(id) = run_id else { return Ok(()) };
        match engine {
            Target::Pg(pg) => pg.block(postgres::finish_run(pg.pool(), id, status, error)),
            Target::Duck(d) => d.finish_run(id, status, error),
        }
    };
    let reports = match run_stages(spec, &stages, &targets, &reader, &rt, opts, run_id, engine) {
        Ok(r) => r,
        Err(e) => {
            let _ = finish("failed", Some(&e.to_string()));
            return Err(e);
        }
    };
    let mut analytics = Vec::new();
    if !opts.dry_run && opts.stages.is_none() {
        match run_analytics(spec, plan, &targets) {
            Ok(r) => analytics = r,
            Err(e) => {
                let _ = finish("failed", Some(&e.to_string()));
                return Err(e);
            }
        }
    }
    let status = if reports.iter().any(|s| s.status == "over_budget") {
        "over_budget"
    } else if reports.iter().any(|s| s.rows_rejected > 0) {
        "rejected"
    } else {
        "succeeded"
    };
    finish(if status == "over_budget" { "rejected" } else { status }, None)?;
    Ok(RunReport {
        run_id,
        spec: spec.name.clone(),
        spec_hash: loaded.hash.clone(),
        dry_run: opts.dry_run,
        status: status.into(),
        stages: reports,
        analytics,
    })
}

#[allow(clippy::too_many_arguments)]
fn run_stages(
    spec: &Spec,
    stages: &[&StagePlan],
    targets: &indexmap::IndexMap<String, Target<'_>>,
    reader: &read::Reader,
    rt: &tokio::runtime::Runtime,
    opts: &RunOptions,
    run_id: Option<i64>,
    engine: &Target<'_>,
) -> Result<Vec<StageReport>, ExecError> {
    let mut reports = Vec::new();
    // Every source is located before any stage loads: a missing or unreadable object fails the
    // run with nothing loaded.
    let progress = progress::Progress::new(opts.quiet, opts.verbose);
    let mut sources: std::collections::HashMap<String, source::Source> = std::collections::HashMap::new();
    for st in stages {
        let src = source::Source::locate(spec, st, &opts.spec_dir, rt)?;
        progress.step(&st.name, &format!("source {} ({})", src.shown, progress::bytes(src.bytes)));
        sources.insert(st.name.clone(), src);
    }
    // A stage that looks unchanged since its last load is downloaded only if the check under its
    // locks finds otherwise; every other source is downloaded now, before anything loads.
    let reusable = reusable_loads(spec, stages, targets, opts, &sources)?;
    for st in stages {
        if reusable.get(&st.name).is_none_or(|r| r.index.is_some())
            && let Some(src) = sources.get_mut(&st.name)
        {
            src.path(&opts.temp_dir, rt)?;
        }
    }
    // A dry run keeps one transaction per target for the whole run (so later stages see what
    // earlier ones would have loaded) and rolls it back at the end.
    let mut dry: indexmap::IndexMap<String, sqlx::Transaction<'static, sqlx::Postgres>> = indexmap::IndexMap::new();
    let mut duck_dry_open: Vec<String> = Vec::new();
    let result = (|| -> Result<(), ExecError> {
        for st in stages {
            let src = sources.get_mut(&st.name).ok_or_else(|| ExecError::Internal(format!("stage {} has no source", st.name)))?;
            let report = match &targets[&st.target.connection] {
                Target::Pg(pg) => pg_stage(pg, &spec.name, st, reader, src, reusable.get(&st.name), rt, opts, &mut dry, &progress)?,
                Target::Duck(d) => {
                    if opts.dry_run && !duck_dry_open.contains(&st.target.connection) {
                        d.execute("BEGIN TRANSACTION", "begin a transaction")?;
                        duck_dry_open.push(st.target.connection.clone());
                    }
                    let path = src.path(&opts.temp_dir, rt)?;
                    let mut report = duck_stage(d, st, reader, &path, &src.shown, opts, &progress)?;
                    report.etag = src.etag.clone();
                    report
                }
            };
            if let Some(run) = report.unchanged_since_run {
                progress.step(&st.name, &format!("unchanged since run {run} (same source, spec and tables): not loaded again"));
            } else {
                let loaded = report.loaded.map_or("nothing loaded".to_string(), |m| {
                    format!("{} inserted, {} updated, {} unchanged", m.inserted, m.updated, m.unchanged)
                });
                progress.step(&st.name, &format!("{} rows read, {} rejected; {loaded}", report.rows_read, report.rows_rejected));
            }
            if let Some(id) = run_id {
                match engine {
                    Target::Pg(pg) => pg.block(postgres::record_stage(pg.pool(), id, &report, &report.status, report.budget.as_deref()))?,
                    Target::Duck(d) => d.record_stage(id, &report)?,
                }
            }
            let stop = report.status == "over_budget";
            reports.push(report);
            if stop {
                break;
            }
        }
        Ok(())
    })();
    for (conn, tx) in dry {
        if let Target::Pg(pg) = &targets[&conn] {
            let _ = pg.block(tx.rollback());
        }
    }
    for conn in duck_dry_open {
        if let Target::Duck(d) = &targets[&conn] {
            let _ = d.execute("ROLLBACK", "roll back the dry run");
        }
    }
    result.map(|()| reports)
}

/// Applies the error budget; true when over it.
fn settle(stage: &StagePlan, report: &mut StageReport) -> bool {
    report.rows_staged = report.rows_valid;
    if let Some(why) = over_budget(stage, report) {
        report.status = "over_budget".into();
        report.budget = Some(why);
        return true;
    }
    false
}

fn status_of(report: &StageReport) -> String {
    if report.rows_rejected > 0 { "rejected".into() } else { "succeeded".into() }
}

/// Loads one stage into PostgreSQL in one transaction (the run's shared one in a dry run, under
/// a savepoint). The table is locked against other writers; the extract joins the referenced key
/// sets and the table's current rows, exported from the same transaction. Rows go in one binary
/// COPY: straight into a table that is new (created bare, its keys, indexes and foreign keys
/// built after the load) or empty, else into a staging table merged into the table.
#[allow(clippy::too_many_arguments)]
fn pg_stage(
    pg: &postgres::Pg,
    spec_name: &str,
    st: &StagePlan,
    reader: &read::Reader,
    src: &mut source::Source,
    reuse: Option<&Reuse>,
    rt: &tokio::runtime::Runtime,
    opts: &RunOptions,
    dry: &mut indexmap::IndexMap<String, sqlx::Transaction<'static, sqlx::Postgres>>,
    progress: &progress::Progress,
) -> Result<StageReport, ExecError> {
    use crate::spec::model::LoadMode;
    // The stage's own transaction: committed after the merge, rolled back on drop.
    let mut own_tx: Option<sqlx::Transaction<'static, sqlx::Postgres>> = None;
    let tx: &mut sqlx::Transaction<'static, sqlx::Postgres> = if opts.dry_run {
        if !dry.contains_key(&st.target.connection) {
            dry.insert(st.target.connection.clone(), pg.begin()?);
        }
        dry.get_mut(&st.target.connection).expect("inserted above")
    } else {
        own_tx.insert(pg.begin()?)
    };
    let t = &st.target;
    let table = crate::plan::load::qualified(t);
    let run = |tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, sql: &str, what: &'static str| pg.block(postgres::execute(tx, sql, what));
    if opts.dry_run {
        run(tx, "SAVEPOINT etl_stage", "open the stage's savepoint")?;
    }
    // Lookups are exported as text that DuckDB parses back: ISO dates, exact floats.
    run(tx, "SET LOCAL DateStyle = ISO", "set the date style")?;
    run(tx, "SET LOCAL extra_float_digits = 1", "set the float format")?;
    pg.block(postgres::lock_table(tx, st))?;
    let created = pg.block(postgres::ensure_table(tx, st))?;
    if !created {
        run(tx, &format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"), "lock the target table")?;
    }
    // Checked again now that the table and the tables it references are locked: the whole
    // stage, or its unchanged lines, may be reused.
    let mut reuse_lines: Option<(&Reuse, &Path)> = None;
    if let Some(reuse) = reuse
        && !created
    {
        let context = stage_context(pg, tx, st, true)?;
        let state = pg.block(postgres::table_state(tx, &table))?;
        let f = &reuse.last.fingerprint;
        if context.as_ref() == Some(&f.context) && state.as_ref() == Some(&f.table_state) {
            if src.fingerprint.as_ref() == Some(&f.source) {
                return unchanged_stage(pg, st, src, &reuse.last);
            }
            if let Some(index) = &reuse.index {
                reuse_lines = Some((reuse, index));
            }
        }
    }
    let path = src.path(&opts.temp_dir, rt)?;
    let (path, shown, etag) = (path.as_path(), src.shown.as_str(), src.etag.clone());
    let mut empty = created || pg.block(postgres::is_empty(tx, st))?;
    if !empty && t.mode == LoadMode::Replace {
        run(tx, &format!("DELETE FROM {table}"), "empty the target table")?;
        empty = true;
    }
    // Where this file's line index goes, for the next load to find its unchanged records.
    let next_index = match &src.fingerprint {
        Some(source) if !opts.dry_run && t.mode == LoadMode::Upsert => incremental::cache_dir().map(|dir| incremental::index_path(&dir, spec_name, &st.name, &table, source)),
        _ => None,
    };
    let columns = if st.csv.header { read::file_columns(st, path, shown)? } else { st.columns.iter().map(|c| c.header.clone()).collect() };
    let mut changes = match reuse_lines {
        None => None,
        Some((reuse, index)) => {
            let previous = pg.block(postgres::rejects_of(pg.pool(), reuse.last.run_id, &st.name))?;
            match incremental::changes(st, path, &columns, index, &previous, &opts.temp_dir, next_index.as_deref())? {
                Ok(c) => {
                    progress.detail(&st.name, &format!("compared with the file of run {}: {} lines unchanged, {} to check", reuse.last.loaded_by, c.same, c.lines.len()));
                    Some(c)
                }
                Err(why) => {
                    progress.detail(&st.name, &format!("every line is checked: {why}"));
                    None
                }
            }
        }
    };
    // Only the changed records reach the comparison with the table's rows, in the merge.
    pg_lookups(pg, tx, st, reader, &opts.temp_dir, empty || changes.is_some(), created)?;
    // The referenced tables are locked: their states hold until the stage commits.
    let context = if opts.dry_run || t.mode == LoadMode::Append { None } else { stage_context(pg, tx, st, false)? };
    let how = if changes.is_some() {
        "; only the changed lines are read"
    } else if empty {
        "; the table is empty: COPY straight into it"
    } else {
        ""
    };
    progress.detail(&st.name, &format!("lookups loaded{how}"));
    let direct = empty || t.mode == LoadMode::Append;
    let copy_sql = if direct {
        // FREEZE writes the rows of a table created in this (sub)transaction as already visible.
        if created && !opts.dry_run { t.sql.copy_direct.replacen("(FORMAT binary)", "(FORMAT binary, FREEZE)", 1) } else { t.sql.copy_direct.clone() }
    } else {
        run(tx, &t.sql.create_staging, "create the staging table")?;
        t.sql.copy.clone()
    };
    let mut report = postgres::copy_stream(pg, tx, st, &copy_sql, |hand| stage_rows(reader, st, path, shown, changes.as_ref(), progress, hand))?;
    progress.detail(&st.name, &format!("{} rows validated, {} written by COPY", report.rows_read, report.rows_valid - report.skipped_unchanged));
    report.etag = etag;
    if settle(st, &mut report) {
        if opts.dry_run {
            // Keep the shared transaction as it was before this stage.
            run(tx, "ROLLBACK TO SAVEPOINT etl_stage", "roll back the stage")?;
        }
        return Ok(report);
    }
    let written = report.rows_valid - report.skipped_unchanged;
    // The file's line index (unless the comparison wrote it) is written while the database
    // merges, or builds the new table's keys, indexes and foreign keys.
    let index = if changes.is_none() { next_index.filter(|_| context.is_some()) } else { None };
    let (loaded, indexed) = std::thread::scope(|scope| {
        let load = scope.spawn(|| -> Result<postgres::Merged, ExecError> {
            let merged = if direct { postgres::Merged { inserted: written, ..Default::default() } } else { pg.block(postgres::merge(tx, st, written))? };
            if created {
                pg.block(postgres::add_constraints(tx, st))?;
                pg.block(postgres::finish_table(tx, st))?;
            }
            Ok(merged)
        });
        let indexed = index.as_deref().map(|p| incremental::index_file(st, path, &columns, p));
        (load.join(), indexed)
    });
    let mut merged = loaded.map_err(|_| ExecError::Internal("the load's thread panicked".into()))??;
    progress.detail(&st.name, if created { "keys, indexes and foreign keys built" } else if direct { "copied" } else { "merged into the table" });
    let pending = match indexed {
        Some(Ok(pending)) => pending,
        Some(Err(e)) => {
            progress.detail(&st.name, &format!("no line index kept ({e}): the next load checks every line"));
            None
        }
        None => changes.as_mut().and_then(|c| c.index.take()),
    };
    merged.unchanged += report.skipped_unchanged;
    report.loaded = Some(merged);
    if let (Some(context), Some(source)) = (context, src.fingerprint.clone()) {
        // A table that was empty holds only this stage's rows: its state needs no scan.
        let state = if direct {
            Some(fingerprint::fresh_table_state(written, pg.block(postgres::current_xid(tx))?))
        } else {
            pg.block(postgres::table_state(tx, &table))?
        };
        if let Some(table_state) = state {
            report.fingerprint = Some(fingerprint::Fingerprint { table: table.clone(), context, source, table_state });
        }
    }
    if let Some(t) = own_tx.take() {
        pg.block(t.commit()).map_err(|e| ExecError::database("commit the stage", e))?;
        if let Some(Err(e)) = pending.map(incremental::PendingIndex::keep) {
            progress.detail(&st.name, &format!("no line index kept ({e}): the next load checks every line"));
        }
    }
    report.status = status_of(&report);
    Ok(report)
}

/// The stage's context digest now: the compiled stage and the state of each table it
/// references (each locked SHARE first when `lock`). None when one of them does not exist.
fn stage_context(pg: &postgres::Pg, tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, st: &StagePlan, lock: bool) -> Result<Option<String>, ExecError> {
    let mut tables: Vec<&str> = st.lookups.references.iter().map(|r| r.table.as_str()).collect();
    tables.sort_unstable();
    tables.dedup();
    let mut states = Vec::new();
    for table in tables {
        if lock && pg.block(postgres::exists(tx, table))? {
            pg.block(postgres::execute(tx, &format!("LOCK TABLE {table} IN SHARE MODE"), "lock a referenced table"))?;
        }
        let Some(state) = pg.block(postgres::table_state(tx, table))? else { return Ok(None) };
        states.push((table.to_string(), state));
    }
    Ok(Some(fingerprint::context(st, &states)))
}

/// A stage's last load that this run may reuse, as it looked before the stage's locks were
/// taken: all of it (`index` None: the same source) or, for an upsert of a new source, its
/// unchanged lines (`index`: the line index of the last load's file).
struct Reuse {
    last: postgres::LastLoad,
    index: Option<PathBuf>,
}

/// The stages whose last load looks reusable: the same compiled stage, the referenced tables and
/// the table itself as that load left them. Each is checked again under its locks. None in a dry
/// run, with `--force`, for an append stage, or for a stage whose target is not the engine's
/// PostgreSQL connection.
fn reusable_loads(
    spec: &Spec,
    stages: &[&StagePlan],
    targets: &indexmap::IndexMap<String, Target<'_>>,
    opts: &RunOptions,
    sources: &std::collections::HashMap<String, source::Source>,
) -> Result<std::collections::HashMap<String, Reuse>, ExecError> {
    use crate::spec::model::LoadMode;
    let mut out = std::collections::HashMap::new();
    let Some((engine, Target::Pg(pg))) = targets.get_index(0) else { return Ok(out) };
    if opts.dry_run || opts.force {
        return Ok(out);
    }
    let cache = incremental::cache_dir();
    // Tables an earlier stage of this run loads: a stage referencing one cannot reuse its load.
    let mut reloaded: Vec<String> = Vec::new();
    for st in stages {
        let table = crate::plan::load::qualified(&st.target);
        let eligible = st.target.connection == *engine
            && st.target.mode != LoadMode::Append
            && !st.lookups.references.iter().any(|r| reloaded.contains(&r.table));
        let source = sources.get(&st.name).and_then(|s| s.fingerprint.clone());
        let mut found = None;
        if eligible
            && let Some(source) = source
            && let Some(last) = pg.block(postgres::last_load(pg.pool(), &spec.name, &st.name, &table))?
        {
            let index = if last.fingerprint.source == source {
                None
            } else {
                cache
                    .as_ref()
                    .map(|dir| incremental::index_path(dir, &spec.name, &st.name, &table, &last.fingerprint.source))
                    .filter(|p| st.target.mode == LoadMode::Upsert && p.is_file())
            };
            if last.fingerprint.source == source || index.is_some() {
                let mut tx = pg.begin()?;
                let context = stage_context(pg, &mut tx, st, false)?;
                let state = pg.block(postgres::table_state(&mut tx, &table))?;
                if context.as_ref() == Some(&last.fingerprint.context) && state.as_ref() == Some(&last.fingerprint.table_state) {
                    found = Some(Reuse { last, index });
                }
            }
        }
        match found {
            Some(reuse) => {
                if reuse.index.is_some() {
                    reloaded.push(table);
                }
                out.insert(st.name.clone(), reuse);
            }
            None => reloaded.push(table),
        }
    }
    Ok(out)
}

/// The report of a stage skipped as unchanged: its last load's counts and rejects.
fn unchanged_stage(pg: &postgres::Pg, st: &StagePlan, src: &source::Source, last: &postgres::LastLoad) -> Result<StageReport, ExecError> {
    let rejects = pg.block(postgres::rejects_of(pg.pool(), last.run_id, &st.name))?;
    let valid = last.rows_read.saturating_sub(last.rows_rejected);
    let mut report = StageReport {
        stage: st.name.clone(),
        source: src.shown.clone(),
        bytes: src.bytes,
        etag: src.etag.clone(),
        rows_read: last.rows_read,
        rows_valid: valid,
        rows_rejected: last.rows_rejected,
        rows_warned: last.rows_warned,
        loaded: Some(postgres::Merged { inserted: 0, updated: 0, unchanged: valid }),
        rows_staged: 0,
        skipped_unchanged: valid,
        status: last.status.clone(),
        budget: None,
        rejects_by_rule: BTreeMap::new(),
        rejects: Vec::new(),
        unchanged_since_run: Some(last.loaded_by),
        fingerprint: Some(last.fingerprint.clone()),
    };
    count_rules(&mut report, &rejects);
    report.rejects = rejects;
    Ok(report)
}

/// Fills the DuckDB relations a PostgreSQL stage's extract joins: the key set of each table it
/// references (locked against writes until the stage commits) and, for an upsert, the table's
/// current rows (left empty `without_current`: the table is empty, or only changed records are
/// read and the merge compares them).
fn pg_lookups(
    pg: &postgres::Pg,
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    st: &StagePlan,
    reader: &read::Reader,
    dir: &Path,
    without_current: bool,
    created: bool,
) -> Result<(), ExecError> {
    // A new table gets its foreign keys after the load, which takes SHARE ROW EXCLUSIVE on the
    // referenced table: taken now, so a writer queued meanwhile cannot deadlock with it.
    let mode = if created { "SHARE ROW EXCLUSIVE" } else { "SHARE" };
    use crate::plan::extract::{ident, lookup_sql};
    let scratch = || {
        tempfile::Builder::new()
            .prefix("etl-lookup-")
            .suffix(".csv")
            .tempfile_in(dir)
            .map_err(|e| ExecError::Write { path: dir.display().to_string(), message: e.to_string() })
    };
    for r in &st.lookups.references {
        let ty = st.columns.iter().find(|c| c.name == r.column).map(|c| c.ty).ok_or_else(|| ExecError::Internal(format!("no column {}", r.column)))?;
        if !pg.block(postgres::exists(tx, &r.table))? {
            return Err(ExecError::Database {
                what: format!("check the references of {}", r.column),
                message: format!("the table {} it references does not exist; load the stage that creates it first", r.table),
            });
        }
        pg.block(postgres::execute(tx, &format!("LOCK TABLE {} IN {mode} MODE", r.table), "lock a referenced table"))?;
        let file = scratch()?;
        let k = ident(&r.ref_column);
        pg.block(postgres::export_csv(tx, &format!("SELECT DISTINCT {k} FROM {} WHERE {k} IS NOT NULL", r.table), file.path()))?;
        reader.load_lookup(&lookup_sql(&r.relation, &[(r.ref_column.clone(), ty)], Some(&file.path().display().to_string())))?;
    }
    if let Some(current) = &st.lookups.current {
        let columns: Vec<(String, crate::spec::model::ColumnType)> = st.columns.iter().map(|c| (c.name.clone(), c.ty)).collect();
        if without_current {
            reader.load_lookup(&lookup_sql(current, &columns, None))?;
        } else {
            let file = scratch()?;
            let list: Vec<String> = st.columns.iter().map(|c| ident(&c.name)).collect();
            let sql = format!("SELECT {} FROM {}", list.join(", "), crate::plan::load::qualified(&st.target));
            pg.block(postgres::export_csv(tx, &sql, file.path()))?;
            reader.load_lookup(&lookup_sql(current, &columns, Some(&file.path().display().to_string())))?;
        }
    }
    Ok(())
}

fn duck_stage(
    d: &duck::Duck<'_>,
    st: &StagePlan,
    reader: &read::Reader,
    path: &Path,
    shown: &str,
    opts: &RunOptions,
    progress: &progress::Progress,
) -> Result<StageReport, ExecError> {
    if !opts.dry_run {
        d.execute("BEGIN TRANSACTION", "begin a transaction")?;
    }
    let work = (|| -> Result<StageReport, ExecError> {
        d.ensure_table(st)?;
        d.execute(&st.target.sql.create_staging, "create the staging table")?;
        let batch_file = tempfile::Builder::new()
            .prefix("etl-batch-")
            .suffix(".csv")
            .tempfile_in(&opts.temp_dir)
            .map_err(|e| ExecError::Write { path: opts.temp_dir.display().to_string(), message: e.to_string() })?;
        let mut report = stage_rows(reader, st, path, shown, None, progress, |batch| d.copy_batch(st, &batch, batch_file.path()))?;
        if settle(st, &mut report) {
            return Ok(report);
        }
        let mut merged = d.merge(st, report.rows_valid - report.skipped_unchanged)?;
        merged.unchanged += report.skipped_unchanged;
        report.loaded = Some(merged);
        report.status = status_of(&report);
        Ok(report)
    })();
    let staging = crate::plan::extract::ident(&crate::plan::load::staging_table(&st.target));
    match (&work, opts.dry_run) {
        (Ok(r), false) if r.status != "over_budget" => d.execute("COMMIT", "commit the stage")?,
        (_, false) => d.execute("ROLLBACK", "roll back the stage")?,
        (_, true) => {
            let _ = d.execute(&format!("DROP TABLE IF EXISTS {staging}"), "drop the staging table");
        }
    }
    work
}

/// Runs the plan's analytics, in the plan's order: a PostgreSQL target's at once, each on a
/// connection of its own, DuckDB's one after another.
fn run_analytics(spec: &Spec, plan: &Plan, targets: &indexmap::IndexMap<String, Target<'_>>) -> Result<Vec<AnalyticResult>, ExecError> {
    let mut results: Vec<Option<Result<AnalyticResult, ExecError>>> = plan.analytics.iter().map(|_| None).collect();
    for (name, target) in targets {
        let Target::Pg(pg) = target else { continue };
        let schema = match spec.connections.get(name) {
            Some(Connection::Postgres(c)) => c.schema.as_deref(),
            _ => None,
        };
        let mine: Vec<usize> = (0..plan.analytics.len()).filter(|&i| plan.analytics[i].connection == *name).collect();
        let queries = mine.iter().map(|&i| run_analytic(pg.pool(), &plan.analytics[i].name, &plan.analytics[i].sql, schema));
        for (i, r) in mine.iter().zip(pg.block(futures_util::future::join_all(queries))) {
            results[*i] = Some(r);
        }
    }
    let mut out = Vec::new();
    for (a, result) in plan.analytics.iter().zip(results) {
        let result = match (result, targets.get(&a.connection)) {
            (Some(r), _) => r,
            (None, Some(Target::Duck(d))) => d.analytic(&a.name, &a.sql),
            (None, _) => continue,
        };
        out.push(result?);
    }
    Ok(out)
}

/// Runs an analytics query; with the connection's `schema` first on the search path, so the
/// query's unqualified table names are the ones the stages loaded.
async fn run_analytic(pool: &sqlx::PgPool, name: &str, sql: &str, schema: Option<&str>) -> Result<AnalyticResult, ExecError> {
    use sqlx::Row;
    let fail = |e: sqlx::Error| ExecError::database(format!("run analytics `{name}`"), e);
    // json_each_text keeps the query's column order and prints each value exactly as PostgreSQL
    // does (numeric in full), so no value passes through a float.
    let wrapped = format!(
        "SELECT r.n, e.key, e.value FROM (SELECT row_number() OVER () AS n, row_to_json(q) AS j FROM ({}) AS q) AS r, \
         LATERAL json_each_text(r.j) WITH ORDINALITY AS e(key, value, pos) ORDER BY r.n, e.pos",
        sql.trim().trim_end_matches(';')
    );
    let mut tx = pool.begin().await.map_err(fail)?;
    if let Some(s) = schema {
        sqlx::query("SELECT set_config('search_path', $1 || ', ' || current_setting('search_path'), true)")
            .bind(crate::plan::extract::ident(s))
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
    }
    let rows = sqlx::query(postgres::generated(&wrapped)).fetch_all(&mut *tx).await.map_err(fail)?;
    tx.rollback().await.map_err(fail)?;
    let mut result = AnalyticResult { name: name.to_string(), columns: Vec::new(), rows: Vec::new() };
    let mut current: Option<i64> = None;
    for r in rows {
        let n: i64 = r.get(0);
        let key: String = r.get(1);
        let value: Option<String> = r.get(2);
        if current != Some(n) {
            current = Some(n);
            result.rows.push(Vec::new());
        }
        if result.rows.len() == 1 {
            result.columns.push(key);
        }
        if let Some(row) = result.rows.last_mut() {
            row.push(value);
        }
    }
    Ok(result)
}

/// Empties the target tables of the selected stages (`etl clean`). Returns what was emptied.
pub fn clean(spec: &Spec, plan: &Plan, opts: &RunOptions) -> Result<Vec<String>, ExecError> {
    let stages = selected(plan, opts);
    let mut done = Vec::new();
    let mut by_conn: indexmap::IndexMap<&str, Vec<&StagePlan>> = indexmap::IndexMap::new();
    for st in &stages {
        by_conn.entry(st.target.connection.as_str()).or_default().push(st);
    }
    for (name, sts) in by_conn {
        match spec.connections.get(name) {
            Some(Connection::Postgres(c)) => {
                let pg = postgres::Pg::connect(name, c)?;
                let _ctx = pg.enter();
                let mut tables = Vec::new();
                for st in &sts {
                    let q = crate::plan::load::qualified(&st.target);
                    let exists: Option<String> = pg
                        .block(sqlx::query_scalar("SELECT to_regclass($1)::text").bind(&q).fetch_one(pg.pool()))
                        .map_err(|e| ExecError::database("look up a table", e))?;
                    if exists.is_some() {
                        tables.push(q);
                    }
                }
                if !tables.is_empty() {
                    let sql = format!("TRUNCATE {}", tables.join(", "));
                    pg.block(sqlx::query(postgres::generated(&sql)).execute(pg.pool()))
                        .map_err(|e| ExecError::database("empty the tables", e))?;
                    done.extend(tables.into_iter().map(|t| format!("{t} in {}", pg.label)));
                }
            }
            Some(Connection::Duckdb(d)) => {
                let reader = read::Reader::open(&opts.temp_dir, &opts.duckdb_memory)?;
                let duck = duck::Duck::open(&reader, &opts.spec_dir.join(&d.path))?;
                // Referencing tables first: they load later.
                for st in sts.iter().rev() {
                    let t = crate::plan::extract::ident(&st.target.table);
                    if duck.execute(&format!("DELETE FROM {t}"), "empty a table").is_ok() {
                        done.push(format!("{} in {}", st.target.table, duck.path));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(done)
}

/// Applies the engine's migrations to the first PostgreSQL target (`etl migrate`).
pub fn migrate(spec: &Spec, plan: &Plan) -> Result<String, ExecError> {
    for st in &plan.stages {
        if let Some(Connection::Postgres(c)) = spec.connections.get(&st.target.connection) {
            let pg = postgres::Pg::connect(&st.target.connection, c)?;
            let _ctx = pg.enter();
            pg.migrate()?;
            return Ok(pg.label.clone());
        }
    }
    Err(ExecError::Unsupported("the spec has no PostgreSQL target to migrate".into()))
}
