//! The embedded DuckDB target (the quick start's): the target file is attached to the run's
//! DuckDB database, on the reader's own connection, so a stage's extract joins the target's
//! tables in the stage's transaction. It is loaded like PostgreSQL is — table created from the
//! spec or checked, one transaction per stage, staged batches merged, unchanged rows skipped —
//! and the run, its stages and its rejects are recorded in the same file. Every statement is the
//! Plan's.

use std::path::Path;

use polars::prelude::{DataFrame, DataType};

use super::csv::push_quoted;
use super::extract::{FileInput, Reader};
use super::ledger;
use super::report::{AnalyticResult, FileReport, Merged, StageReport, Status};
use super::source::Source;
use super::stage::{over_budget, stage_rows};
use super::context::StageContext;
use super::error::ExecError;
use crate::plan::MergeStep;
use crate::plan::load::sql_type;
use crate::plan::{StagePlan, duck, records, severity_word};
use crate::spec::model::{ColumnType, Select};

/// A DuckDB target: the run's DuckDB connection with the target file attached.
pub struct Duck<'r> {
    conn: &'r duckdb::Connection,
    /// The file, for messages.
    pub path: String,
}

fn err(what: &'static str) -> impl Fn(duckdb::Error) -> ExecError {
    move |e| ExecError::Duckdb { what, message: e.to_string() }
}

impl<'r> Duck<'r> {
    /// Attaches the target file (created when missing) to the run's database.
    pub fn open(reader: &'r Reader, path: &Path) -> Result<Duck<'r>, ExecError> {
        let conn = reader.connection();
        let shown = path.display().to_string();
        conn.execute_batch(&duck::attach(&shown))
            .map_err(|e| ExecError::Connect {
                what: format!("DuckDB file {shown}"),
                message: e.to_string(),
                help: "check that the file's directory exists and may be written, and that no other process holds the file open".into(),
            })?;
        Ok(Duck { conn, path: shown })
    }

    /// Creates the engine's tables in the file.
    pub fn migrate(&self) -> Result<(), ExecError> {
        self.conn.execute_batch(records::DUCKDB_TABLES).map_err(err("create the engine's tables"))
    }

    /// Creates the stage's table when missing, or checks it holds the spec's columns.
    pub fn ensure_table(&self, stage: &StagePlan) -> Result<(), ExecError> {
        let t = &stage.target;
        let sql = t.duckdb().ok_or_else(|| ExecError::Internal(format!("stage {} has no DuckDB statements", stage.name)))?;
        let mut stmt = self.conn.prepare(&sql.read_columns.sql).map_err(err("read the target table's columns"))?;
        let existing: Vec<(String, String)> = stmt
            .query_map(duckdb::params_from_iter(sql.read_columns.texts()), |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(err("read the target table's columns"))?
            .collect::<Result<_, _>>()
            .map_err(err("read the target table's columns"))?;
        if existing.is_empty() {
            for s in &t.sql.create_table {
                self.conn.execute_batch(s).map_err(err("create the target table"))?;
            }
        } else {
            let mut problems = Vec::new();
            for c in &stage.columns {
                match existing.iter().find(|(n, _)| n == &c.name) {
                    None => problems.push(format!("column `{}` is missing (the spec wants {})", c.name, sql_type(c, t.dialect))),
                    Some((_, ty)) => {
                        let want = crate::plan::extract::duckdb_type(c.ty);
                        let base = |s: &str| s.split('(').next().unwrap_or("").trim().to_uppercase();
                        let ok = base(ty) == base(&want) || (c.ty == crate::spec::model::ColumnType::String && base(ty) == "VARCHAR");
                        if !ok {
                            problems.push(format!("column `{}` is {ty}, which cannot hold the spec's {want}", c.name));
                        }
                    }
                }
            }
            if !problems.is_empty() {
                return Err(ExecError::TableMismatch { table: format!("{}:{}", self.path, t.table), problems: problems.join("; ") });
            }
        }
        for s in &t.sql.create_indexes {
            self.conn.execute_batch(s).map_err(err("create an index"))?;
        }
        Ok(())
    }

    /// Runs a statement.
    pub fn execute(&self, sql: &str, what: &'static str) -> Result<(), ExecError> {
        self.conn.execute_batch(sql).map_err(err(what))
    }

    /// Stages the batches spooled while the typed rows streamed: one COPY of the spool's file,
    /// read with a line limit and buffer fitted to its longest row (`extract::read_limits`).
    pub fn copy_spool(&self, stage: &StagePlan, spool: Spool) -> Result<(), ExecError> {
        let (path, longest) = spool.finish()?;
        if longest == 0 {
            return Ok(());
        }
        let copy = stage.target.sql.copy_file.as_ref().ok_or_else(|| ExecError::Internal(format!("stage {} has no batch COPY", stage.name)))?;
        let limits = crate::plan::extract::read_limits(longest);
        self.conn.execute_batch(&copy.with_file_limits(&path.display().to_string(), limits)).map_err(err("stage the rows"))
    }

    /// Writes the staged rows into the table.
    pub fn merge(&self, stage: &StagePlan, staged: u64) -> Result<Merged, ExecError> {
        let t = &stage.target;
        let mut m = Merged::default();
        let existing: u64 = match &t.sql.count_existing {
            None => 0,
            Some(sql) => self.conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map_err(err("count existing keys"))? as u64,
        };
        let mut affected = 0u64;
        for step in &t.sql.merge {
            let n = self.conn.execute(step.sql(), []).map_err(err("merge into the target table"))? as u64;
            if matches!(step, MergeStep::Delete(_)) {
                m.deleted = n;
            } else {
                affected += n;
            }
        }
        m.inserted = staged.saturating_sub(existing).min(affected);
        m.updated = affected.saturating_sub(m.inserted);
        m.unchanged = staged.saturating_sub(m.inserted + m.updated);
        Ok(m)
    }

    /// Records the start of a run.
    pub fn begin_run(&self, spec: &str, hash: &str, path: &str, job: Option<&str>, date: chrono::NaiveDate) -> Result<i64, ExecError> {
        let date = date.format("%Y-%m-%d").to_string();
        self.conn
            .query_row(
                records::DUCKDB_BEGIN_RUN,
                duckdb::params![spec, hash, path, job, date],
                |r| r.get::<_, i64>(0),
            )
            .map_err(err("record the run"))
    }

    /// For `etl backfill`: the (business date, stage) pairs in `from..=to` a finished run of the
    /// spec loaded or found unchanged.
    pub fn dates_done(&self, spec: &str, from: chrono::NaiveDate, to: chrono::NaiveDate) -> Result<Vec<(String, String, Option<String>)>, ExecError> {
        self.migrate()?;
        let (from, to) = (from.format("%Y-%m-%d").to_string(), to.format("%Y-%m-%d").to_string());
        let mut stmt = self.conn.prepare(records::DUCKDB_DATES_DONE).map_err(err("read which dates are loaded"))?;
        stmt.query_map(duckdb::params![spec, from, to], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(err("read which dates are loaded"))?
            .collect::<Result<_, _>>()
            .map_err(err("read which dates are loaded"))
    }

    /// Records the end of a run.
    pub fn finish_run(&self, run_id: i64, status: Status, error: Option<&str>) -> Result<(), ExecError> {
        self.conn
            .execute(records::DUCKDB_FINISH_RUN, duckdb::params![status.as_str(), error, run_id])
            .map_err(err("record the run's end"))?;
        Ok(())
    }

    /// Records the webhooks that failed to be told of the run's end.
    pub fn notify_failed(&self, run_id: i64, error: &str) -> Result<(), ExecError> {
        self.conn.execute(records::DUCKDB_NOTIFY_FAILED, duckdb::params![error, run_id]).map_err(err("record the failed notifications"))?;
        Ok(())
    }

    /// What `etl report` shows of the spec's runs kept in this file (see
    /// `postgres::records::history`): DuckDB keeps no contract results, no stage start, and
    /// never skips a stage.
    pub fn history(&self, spec: &str, run: Option<i64>, last: i64) -> Result<crate::exec::postgres::records::History, ExecError> {
        use crate::exec::postgres::records::{FileRow, History, RunRow, StageRow};
        self.migrate()?;
        let fail = err("read the run records");
        // `2026-12-04 20:00:00.123+00`: the UTC time, to the second, and the seconds between two.
        let time = |t: &str| chrono::DateTime::parse_from_str(&format!("{t}00"), "%Y-%m-%d %H:%M:%S%.f%z").ok();
        let mut stmt = self.conn.prepare(records::DUCKDB_REPORT_RUNS).map_err(&fail)?;
        let runs: Vec<RunRow> = stmt
            .query_map(duckdb::params![spec, run, run, last], |r| {
                let started: String = r.get(2)?;
                let finished: Option<String> = r.get(3)?;
                Ok((r.get(0)?, r.get(1)?, started, finished, r.get(4)?, r.get(5)?, r.get(6)?))
            })
            .map_err(&fail)?
            .collect::<Result<Vec<(i64, Option<String>, String, Option<String>, String, Option<String>, Option<String>)>, _>>()
            .map_err(&fail)?
            .into_iter()
            .map(|(run_id, business_date, started, finished, status, error, job_id)| {
                let (s, f) = (time(&started), finished.as_deref().and_then(time));
                RunRow {
                    run_id,
                    business_date,
                    started_at: s.map_or(started.clone(), |t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S").to_string()),
                    seconds: s.zip(f).map(|(s, f)| (f - s).num_milliseconds() as f64 / 1000.0),
                    status,
                    error,
                    job_id,
                }
            })
            .collect();
        let mut history = History { runs, stages: Vec::new(), by_rule: Vec::new(), by_column: Vec::new(), checks: Vec::new(), files: Vec::new() };
        let mut stmt = self.conn.prepare(records::DUCKDB_REPORT_STAGES).map_err(&fail)?;
        for r in &history.runs {
            let run_id = r.run_id;
            let stages = stmt
                .query_map(duckdb::params![run_id], |x| {
                    Ok(StageRow {
                        run_id,
                        stage: x.get(0)?,
                        source: x.get(1)?,
                        bytes: x.get(2)?,
                        status: x.get(3)?,
                        rows_read: x.get(4)?,
                        inserted: x.get(5)?,
                        updated: x.get(6)?,
                        unchanged: x.get(7)?,
                        rejected: x.get(8)?,
                        warned: x.get(9)?,
                        seconds: None,
                        unchanged_since: None,
                        error: x.get(10)?,
                    })
                })
                .map_err(&fail)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&fail)?;
            history.stages.extend(stages);
        }
        // Oldest run first, as PostgreSQL's are.
        history.stages.sort_by_key(|s| s.run_id);
        let Some(focus) = history.runs.first().map(|r| r.run_id) else { return Ok(history) };
        let counts = |sql: &str| -> Result<Vec<(String, String, i64)>, ExecError> {
            let mut stmt = self.conn.prepare(sql).map_err(&fail)?;
            stmt.query_map(duckdb::params![focus], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(&fail)?.collect::<Result<_, _>>().map_err(&fail)
        };
        history.by_rule = counts(records::DUCKDB_REPORT_REJECTS_BY_RULE)?;
        history.by_column = counts(records::DUCKDB_REPORT_REJECTS_BY_COLUMN)?;
        let mut stmt = self.conn.prepare(records::DUCKDB_REPORT_FILES).map_err(&fail)?;
        history.files = stmt
            .query_map(duckdb::params![focus], |r| {
                Ok(FileRow { stage: r.get(0)?, file: r.get(1)?, bytes: r.get(2)?, rows_read: r.get(3)?, rows_loaded: r.get(4)?, rows_rejected: r.get(5)? })
            })
            .map_err(&fail)?
            .collect::<Result<_, _>>()
            .map_err(&fail)?;
        Ok(history)
    }

    /// The files of a stage's set this file's ledger holds as loaded from `origin`.
    pub fn ledger_loaded(&self, spec: &str, stage: &StagePlan, origin: &str) -> Result<Vec<ledger::Entry>, ExecError> {
        // A target file that never recorded a run has no ledger yet.
        self.migrate()?;
        let mut stmt = self.conn.prepare(records::DUCKDB_LEDGER_LOADED).map_err(err("read the file ledger"))?;
        stmt.query_map(duckdb::params![spec, stage.name, stage.target.qualified, origin], |r| {
            Ok(ledger::Entry { key: r.get(0)?, digest: r.get(1)?, etag: r.get(2)?, bytes: r.get::<_, i64>(3)?.max(0) as u64, run_id: r.get(4)? })
        })
        .map_err(err("read the file ledger"))?
        .collect::<Result<_, _>>()
        .map_err(err("read the file ledger"))
    }

    /// Records each file of a set a stage loaded (in the stage's transaction).
    pub fn ledger_record(&self, run_id: i64, spec: &str, stage: &StagePlan, files: &[(&Source, &FileReport)]) -> Result<(), ExecError> {
        for (src, f) in files {
            let digest = src.sha256.as_deref().ok_or_else(|| ExecError::Internal(format!("{} was loaded without its digest", src.shown)))?;
            self.conn
                .execute(
                    records::DUCKDB_LEDGER_RECORD,
                    duckdb::params![
                        run_id,
                        spec,
                        stage.name,
                        stage.target.qualified,
                        src.origin,
                        src.key,
                        src.bytes as i64,
                        src.etag,
                        digest,
                        f.rows_read as i64,
                        f.rows_valid as i64,
                        f.rows_rejected as i64
                    ],
                )
                .map_err(err("record a file in the file ledger"))?;
        }
        Ok(())
    }

    /// Records a stage and its rejects.
    pub fn record_stage(&self, run_id: i64, r: &StageReport) -> Result<(), ExecError> {
        self.conn
            .execute(
                records::DUCKDB_RECORD_STAGE,
                duckdb::params![
                    run_id,
                    r.stage,
                    r.source,
                    r.bytes as i64,
                    r.etag,
                    r.status.as_str(),
                    r.rows_read as i64,
                    r.loaded.map(|m| m.inserted as i64),
                    r.loaded.map(|m| m.updated as i64),
                    r.loaded.map(|m| m.unchanged as i64),
                    r.rows_rejected as i64,
                    r.rows_warned as i64,
                    r.balanced(),
                    r.budget
                ],
            )
            .map_err(err("record the stage"))?;
        let mut app = self.conn.appender(records::DUCKDB_REJECTS_TABLE).map_err(err("record the rejects"))?;
        for j in &r.rejects {
            let sev = severity_word(j.severity);
            app.append_row(duckdb::params![run_id, r.stage, j.file.as_deref().unwrap_or(&r.source), j.line as i64, j.column, j.rule, j.value, j.message, sev, j.record])
                .map_err(err("record the rejects"))?;
        }
        app.flush().map_err(err("record the rejects"))?;
        Ok(())
    }

    /// Runs an analytics query (the Plan's `run`: every value cast to text as DuckDB prints it).
    pub fn analytic(&self, name: &str, run: &str) -> Result<AnalyticResult, ExecError> {
        let fail = |e: duckdb::Error| ExecError::Duckdb { what: "run an analytics query", message: format!("{name}: {e}") };
        let mut stmt = self.conn.prepare(run).map_err(fail)?;
        let mut rows = stmt.query([]).map_err(fail)?;
        // The first half of the columns are the values, the second their types.
        let mut columns: Vec<String> = rows.as_ref().map(|s| s.column_names()).unwrap_or_default();
        let n = columns.len() / 2;
        columns.truncate(n);
        let mut out = Vec::new();
        let mut numeric = vec![false; n];
        const NUMBERS: [&str; 13] = [
            "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL",
        ];
        while let Some(row) = rows.next().map_err(fail)? {
            out.push((0..n).map(|i| row.get::<_, Option<String>>(i)).collect::<Result<Vec<_>, _>>().map_err(fail)?);
            for (i, is_number) in numeric.iter_mut().enumerate() {
                let ty: Option<String> = row.get(n + i).map_err(fail)?;
                *is_number |= ty.is_some_and(|t| NUMBERS.iter().any(|k| t.starts_with(k)));
            }
        }
        Ok(AnalyticResult { name: name.to_string(), columns, rows: out, numeric, ..AnalyticResult::default() })
    }

    /// The rows an analytic's `expect` statement finds failing: (their count, each as JSON).
    pub fn offending_rows(&self, name: &str, sql: &str) -> Result<Vec<(i64, String)>, ExecError> {
        let fail = |e: duckdb::Error| ExecError::Duckdb { what: "check an analytic's expectation", message: format!("{name}: {e}") };
        let mut stmt = self.conn.prepare(sql).map_err(fail)?;
        let mut rows = stmt.query([]).map_err(fail)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(fail)? {
            out.push((row.get(0).map_err(fail)?, row.get(1).map_err(fail)?));
        }
        Ok(out)
    }
}

/// Loads one stage into the DuckDB target in one transaction (a dry run's one, for every stage).
pub fn load_stage(cx: &StageContext<'_>, d: &Duck<'_>, st: &StagePlan, files: &mut Vec<Source>) -> Result<StageReport, ExecError> {
    let opts = cx.opts;
    if !opts.dry_run {
        d.execute(duck::BEGIN, "begin a transaction")?;
    }
    let set = st.source.set.is_some();
    let work = (|| -> Result<StageReport, ExecError> {
        // A set: the files whose content is in the ledger are left out (the transaction is open:
        // a run that committed before it is seen).
        let mut already = Vec::new();
        if let Some(first) = files.first().filter(|_| set) {
            let entries = if st.source.set.as_ref().is_some_and(|s| s.select == Select::New) && !opts.force {
                d.ledger_loaded(&cx.plan.name, st, &first.origin.clone())?
            } else {
                Vec::new()
            };
            already = ledger::leave_out(&entries, files, |f| f.path(&opts.temp_dir, cx.rt).map(|_| ()))?;
            if files.is_empty() {
                let mut r = crate::exec::postgres::load::nothing_new(st, already);
                r.status = Status::Succeeded;
                return Ok(r);
            }
        }
        let paths: Vec<std::path::PathBuf> = files.iter_mut().map(|f| f.path(&opts.temp_dir, cx.rt)).collect::<Result<_, _>>()?;
        // The senders' trailer lines are set aside, not read as rows.
        if let Some(prefix) = &st.source.trailer {
            for p in &paths {
                crate::exec::source::strip_trailer(p, prefix)?;
            }
        }
        let inputs: Vec<FileInput<'_>> = files.iter().zip(&paths).map(|(f, p)| FileInput { path: p, shown: &f.shown, captures: &f.captures }).collect();
        let shown = crate::exec::postgres::load::shown_of(cx, st, files);
        d.ensure_table(st)?;
        d.execute(&st.target.sql.create_staging, "create the staging table")?;
        let spool_file = tempfile::Builder::new().prefix("etl-rows-").suffix(".csv").tempfile_in(&opts.temp_dir).map_err(ExecError::write(&opts.temp_dir))?;
        let mut spool = Spool::create(spool_file.path())?;
        // Its joins read the target's tables in place, of no size known before: DuckDB's default.
        cx.reader.bound_joins(false)?;
        let mut report = stage_rows(cx.reader, st, &inputs, &shown, None, false, cx.progress, |batch| spool.append(st, &batch))?.report(st)?;
        d.copy_spool(st, spool)?;
        crate::exec::postgres::load::fill_files(&mut report, files, already);
        if !set {
            report.etag = files[0].etag.clone();
        }
        if over_budget(st, &mut report) {
            return Ok(report);
        }
        let mut merged = d.merge(st, report.rows_valid - report.skipped_unchanged)?;
        merged.unchanged += report.skipped_unchanged;
        report.loaded = Some(merged);
        report.status = report.loaded_status();
        if set && !opts.dry_run {
            let run_id = cx.records.map(|(id, _)| id).ok_or_else(|| ExecError::Internal("a set loaded without a run to record it".into()))?;
            let read = ledger::loaded(&mut report, files);
            d.ledger_record(run_id, &cx.plan.name, st, &read)?;
        }
        Ok(report)
    })();
    match (&work, opts.dry_run) {
        (Ok(r), false) if !r.status.loaded_nothing() && r.loaded.is_some() => d.execute(duck::COMMIT, "commit the stage")?,
        (_, false) => d.execute(duck::ROLLBACK, "roll back the stage")?,
        (_, true) => {
            let _ = d.execute(&st.target.sql.drop_staging, "drop the staging table");
        }
    }
    work
}

/// A stage's valid rows as CSV in a file, batch after batch, for one COPY once the typed rows'
/// stream has ended: the stream holds the connection the COPY runs on (DuckDB refuses another
/// statement while a result is open), so a batch cannot be COPYed as it comes.
pub struct Spool {
    file: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
    /// The longest row's bytes, its line end included (0: no row).
    longest: u64,
}

impl Spool {
    /// An empty spool writing to `path` (truncated).
    pub fn create(path: &Path) -> Result<Spool, ExecError> {
        let file = std::fs::File::create(path).map_err(ExecError::write(path))?;
        Ok(Spool { file: std::io::BufWriter::with_capacity(1 << 20, file), path: path.to_path_buf(), longest: 0 })
    }

    /// Appends a batch's rows. Text is always quoted, so an empty text is not NULL; NULL is an
    /// empty unquoted field.
    pub fn append(&mut self, stage: &StagePlan, batch: &DataFrame) -> Result<(), ExecError> {
        use std::io::Write;
        let fail = |e: polars::error::PolarsError| ExecError::Polars { what: "format a batch as CSV", message: e.to_string() };
        let mut cols = Vec::with_capacity(stage.columns.len());
        for c in &stage.columns {
            let s = batch.column(&c.name).and_then(|col| col.cast(&DataType::String)).map_err(fail)?;
            cols.push((s.str().map_err(fail)?.clone(), c.ty == ColumnType::String, c.ty.is_temporal()));
        }
        let mut out = Vec::with_capacity(batch.height() * 64);
        for row in 0..batch.height() {
            let start = out.len();
            for (i, (col, quote, temporal)) in cols.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if let Some(v) = col.get(row) {
                    // chrono writes a year past 9999 with a sign (`+10000-01-01`), which DuckDB
                    // does not read.
                    let v = if *temporal { v.strip_prefix('+').unwrap_or(v) } else { v };
                    if *quote || v.contains([',', '"', '\n', '\r']) || v.is_empty() {
                        push_quoted(&mut out, v);
                    } else {
                        out.extend_from_slice(v.as_bytes());
                    }
                }
            }
            out.push(b'\n');
            self.longest = self.longest.max((out.len() - start) as u64);
        }
        self.file.write_all(&out).map_err(ExecError::write(&self.path))
    }

    /// Flushes the file: its path and longest row.
    fn finish(self) -> Result<(std::path::PathBuf, u64), ExecError> {
        let Spool { file, path, longest } = self;
        file.into_inner().map_err(|e| ExecError::write(&path)(e.into_error()))?;
        Ok((path, longest))
    }
}
