//! The engine's run records in PostgreSQL (`etl_runs`, `etl_run_stages`, `etl_rejects`): a run's
//! start and end, each stage's outcome with its digests and rejects, and what the next run reads
//! back to reuse a load; and the file ledger (`etl_files`). The statements are the Plan's
//! (`plan::records`).

use sqlx::{PgPool, Row};

use super::{Tx, db, value};
use crate::exec::error::ExecError;
use crate::exec::csv::write_record;
use crate::exec::ledger;
use crate::exec::report::{FileReport, StageReport, Status};
use crate::exec::source::Source;
use crate::plan::StagePlan;
use crate::exec::reuse::fingerprint::Fingerprint;
use crate::exec::validate::Reject;
use crate::plan::postgres::CURRENT_XID;
use crate::plan::records;
use crate::plan::severity_word;
use crate::spec::model::Severity;

/// Records the start of a run on `conn`, a connection kept open for the whole run, which takes
/// the run's liveness lock before the run's row is visible to anyone; then marks every other run
/// of the spec left `running` by a process that died as `abandoned`. Returns the run's id and
/// the abandoned runs' ids.
pub async fn begin_run_held(
    conn: &mut sqlx::PgConnection,
    spec_name: &str,
    hash: &str,
    path: &str,
    job_id: Option<&str>,
    date: chrono::NaiveDate,
) -> Result<(i64, Vec<i64>), ExecError> {
    use sqlx::Connection;
    let host = std::env::var("HOSTNAME").ok();
    let mut tx = conn.begin().await.map_err(db("record the run"))?;
    let run_id: i64 = sqlx::query_scalar(records::BEGIN_RUN)
        .bind(spec_name)
        .bind(hash)
        .bind(path)
        .bind(job_id)
        .bind(host)
        .bind(date)
        .fetch_one(&mut *tx)
        .await
        .map_err(db("record the run"))?;
    sqlx::query(records::HOLD_RUN).bind(run_id).execute(&mut *tx).await.map_err(db("hold the run's lock"))?;
    tx.commit().await.map_err(db("record the run"))?;
    let abandoned = sweep(conn, spec_name, run_id).await?;
    Ok((run_id, abandoned))
}

async fn sweep(conn: &mut sqlx::PgConnection, spec_name: &str, run_id: i64) -> Result<Vec<i64>, ExecError> {
    let running: Vec<i64> =
        sqlx::query_scalar(records::RUNNING_RUNS).bind(spec_name).bind(run_id).fetch_all(&mut *conn).await.map_err(db("find runs left running"))?;
    let mut abandoned = Vec::new();
    for other in running {
        let dead: bool = sqlx::query_scalar(records::TRY_RUN).bind(other).fetch_one(&mut *conn).await.map_err(db("look for a run's process"))?;
        if dead {
            sqlx::query(records::ABANDON_RUN).bind(other).bind(run_id).execute(&mut *conn).await.map_err(db("record an abandoned run"))?;
            sqlx::query(records::RELEASE_RUN).bind(other).execute(&mut *conn).await.map_err(db("record an abandoned run"))?;
            abandoned.push(other);
        }
    }
    Ok(abandoned)
}

/// Records the end of a run.
pub async fn finish_run(pool: &PgPool, run_id: i64, status: Status, error: Option<&str>) -> Result<(), ExecError> {
    sqlx::query(records::FINISH_RUN)
        .bind(run_id)
        .bind(status.as_str())
        .bind(error)
        .execute(pool)
        .await
        .map_err(db("record the run's end"))?;
    Ok(())
}

/// Records the webhooks that failed to be told of the run's end.
pub async fn notify_failed(pool: &PgPool, run_id: i64, error: &str) -> Result<(), ExecError> {
    sqlx::query(records::NOTIFY_FAILED).bind(run_id).bind(error).execute(pool).await.map_err(db("record the failed notifications"))?;
    Ok(())
}

/// Records a stage's outcome and its rejects, in a transaction of its own (a stage that wrote
/// nothing: skipped, over budget, refused).
pub async fn record_stage(pool: &PgPool, run_id: i64, report: &StageReport) -> Result<(), ExecError> {
    let mut tx = pool.begin().await.map_err(db("record the stage"))?;
    record_stage_in(&mut tx, run_id, report).await?;
    tx.commit().await.map_err(db("record the stage"))?;
    Ok(())
}

/// Records a stage's outcome and its rejects in `tx`: for a stage that loads, its own
/// transaction, so its rows and its record commit together or not at all.
pub async fn record_stage_in(tx: &mut super::Tx, run_id: i64, report: &StageReport) -> Result<(), ExecError> {
    let f = report.fingerprint.as_ref();
    sqlx::query(records::RECORD_STAGE)
        .bind(run_id)
        .bind(&report.stage)
        .bind(&report.source)
        .bind(report.bytes as i64)
        .bind(report.etag.as_deref())
        .bind(report.status.as_str())
        .bind(report.rows_read as i64)
        .bind(report.loaded.map(|m| m.inserted as i64))
        .bind(report.loaded.map(|m| m.updated as i64))
        .bind(report.loaded.map(|m| m.unchanged as i64))
        .bind(report.rows_rejected as i64)
        .bind(report.rows_warned as i64)
        .bind(report.balanced())
        .bind(report.budget.as_deref().or(report.refused.as_deref()))
        .bind(&report.target)
        .bind(f.map(|f| f.context.as_str()))
        .bind(f.map(|f| f.source.as_str()))
        .bind(f.map(|f| f.table_state.as_str()))
        .bind(report.unchanged_since_run)
        .bind(crate::exec::reuse::fingerprint::rejects_digest(&report.rejects))
        .bind(report.replay_of)
        .bind(report.started)
        .bind(f.and_then(|f| f.lines.as_deref()))
        .bind(f.and_then(|f| f.as_of.as_deref()))
        .execute(&mut **tx)
        .await
        .map_err(db("record the stage"))?;
    // A replay: the rows it loaded are no longer rejected.
    if let Some(of) = report.replay_of {
        for (source, line) in &report.replayed {
            sqlx::query(records::MARK_REPLAYED)
                .bind(run_id)
                .bind(of)
                .bind(&report.stage)
                .bind(source)
                .bind(line)
                .execute(&mut **tx)
                .await
                .map_err(db("mark the replayed rejects"))?;
        }
    }
    // A stage unchanged since an earlier load has that load's rejects, kept under its run
    // (`unchanged_since_run`): not copied again on every re-run.
    if !report.rejects.is_empty() && report.unchanged_since_run.is_none() {
        let mut copy = tx.copy_in_raw(records::COPY_REJECTS).await.map_err(db("record the rejects"))?;
        let mut buf = Vec::new();
        for r in &report.rejects {
            let fields = [
                Some(run_id.to_string()),
                Some(report.stage.clone()),
                Some(r.file.clone().unwrap_or_else(|| report.source.clone())),
                Some(r.line.to_string()),
                r.column.clone(),
                Some(r.rule.clone()),
                r.value.clone(),
                Some(r.message.clone()),
                Some(severity_word(r.severity).to_string()),
                r.record.clone(),
            ];
            write_record(&mut buf, &fields);
        }
        copy.send(buf).await.map_err(db("record the rejects"))?;
        copy.finish().await.map_err(db("record the rejects"))?;
    }
    for c in &report.checks {
        sqlx::query(records::RECORD_CHECK)
            .bind(run_id)
            .bind(&report.stage)
            .bind(&c.check)
            .bind(c.severity)
            .bind(c.passed)
            .bind(c.observed.as_deref())
            .bind(c.expected.as_deref())
            .bind(&c.message)
            .bind((!c.rows.is_empty()).then(|| format!("[{}]", c.rows.join(","))))
            .execute(&mut **tx)
            .await
            .map_err(db("record the stage's checks"))?;
    }
    Ok(())
}

/// A reject as the run records keep it, for `etl rejects`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredReject {
    /// The run that recorded it.
    pub run_id: i64,
    /// Its stage.
    pub stage: String,
    /// The file the row is in.
    pub source: String,
    /// Its line.
    pub line: i64,
    /// The column, when the check is about one.
    pub column: Option<String>,
    /// The check.
    pub rule: String,
    /// The offending value.
    pub value: Option<String>,
    /// What is wrong.
    pub message: String,
    /// `error` (rejected) or `warn` (loaded, flagged).
    pub severity: String,
    /// The row's fields as read (a JSON object), when kept.
    pub record: Option<serde_json::Value>,
    /// The replay that loaded the row since, if one did.
    pub replayed_by: Option<i64>,
    /// The business date of the run that recorded it.
    pub business_date: Option<String>,
}

/// The rejects `etl rejects` selects (see `records::REJECTS_LIST`).
pub async fn stored_rejects(pool: &PgPool, spec: &str, run: Option<i64>, stage: Option<&str>, rule: Option<&str>, line: Option<i64>) -> Result<Vec<StoredReject>, ExecError> {
    let rows = sqlx::query(records::REJECTS_LIST)
        .bind(spec)
        .bind(run)
        .bind(stage)
        .bind(rule)
        .bind(line)
        .fetch_all(pool)
        .await
        .map_err(db("read the rejects"))?;
    Ok(rows
        .into_iter()
        .map(|r| StoredReject {
            run_id: r.get(0),
            stage: r.get(1),
            source: r.get(2),
            line: r.get(3),
            column: r.get(4),
            rule: r.get(5),
            value: r.get(6),
            message: r.get(7),
            severity: r.get(8),
            record: r.get::<Option<String>, _>(9).and_then(|t| serde_json::from_str(&t).ok()),
            replayed_by: r.get(10),
            business_date: r.get(11),
        })
        .collect())
}

/// A stage's last load by this spec, as `etl_run_stages` recorded it.
#[derive(Debug, Clone)]
pub struct LastLoad {
    /// The run that recorded it.
    pub run_id: i64,
    /// The run whose load it was (itself, or the one a skipped stage reused).
    pub loaded_by: i64,
    /// Its digests.
    pub fingerprint: Fingerprint,
    /// How it ended: succeeded, or loaded with rejects.
    pub status: Status,
    /// Rows it read.
    pub rows_read: u64,
    /// Rows it rejected.
    pub rows_rejected: u64,
    /// Rows its `warn` rules flagged.
    pub rows_warned: u64,
    /// The digest of its rejects as recorded (None: recorded before the engine kept it).
    pub rejects_digest: Option<String>,
}

/// The latest load of `stage` by the spec `spec` that committed rows (succeeded, or loaded with
/// rejects), if it recorded its digests.
pub async fn last_load(pool: &PgPool, spec: &str, stage: &str, table: &str) -> Result<Option<LastLoad>, ExecError> {
    let row = sqlx::query(records::LAST_LOAD)
        .bind(spec)
        .bind(stage)
        .bind(table)
        .fetch_optional(pool)
        .await
        .map_err(db("read the stage's last load"))?;
    let Some(row) = row else { return Ok(None) };
    let text = |i: usize| row.try_get::<Option<String>, _>(i).ok().flatten();
    let (Some(context), Some(source), Some(table_state)) = (text(2), text(3), text(4)) else { return Ok(None) };
    let Some(status) = text(5).as_deref().and_then(Status::from_word) else { return Ok(None) };
    let count = |i: usize| row.try_get::<Option<i64>, _>(i).ok().flatten().unwrap_or(0).max(0) as u64;
    Ok(Some(LastLoad {
        run_id: row.get(0),
        loaded_by: row.get(1),
        fingerprint: Fingerprint { table: table.to_string(), context, source, table_state, lines: text(10), as_of: text(11) },
        status,
        rows_read: count(6),
        rows_rejected: count(7),
        rows_warned: count(8),
        rejects_digest: text(9),
    }))
}

/// The rejects a run recorded for a stage, in line order.
pub async fn rejects_of(pool: &PgPool, run_id: i64, stage: &str) -> Result<Vec<Reject>, ExecError> {
    let rows = sqlx::query(records::REJECTS_OF)
        .bind(run_id)
        .bind(stage)
        .fetch_all(pool)
        .await
        .map_err(db("read the rejects of the stage's last load"))?;
    Ok(rows
        .into_iter()
        .map(|r| Reject {
            file: None,
            line: r.get::<i64, _>(0).max(0) as u64,
            column: r.get(1),
            rule: r.get(2),
            value: r.get(3),
            message: r.get(4),
            severity: if r.get::<String, _>(5) == "warn" { Severity::Warn } else { Severity::Error },
            record: r.get(6),
        })
        .collect())
}

/// The files of a stage's set the ledger holds as loaded from `origin`.
pub async fn ledger_loaded<'e>(ex: impl sqlx::PgExecutor<'e>, spec: &str, stage: &StagePlan, origin: &str) -> Result<Vec<ledger::Entry>, ExecError> {
    let rows = sqlx::query(records::LEDGER_LOADED)
        .bind(spec)
        .bind(&stage.name)
        .bind(&stage.target.qualified)
        .bind(origin)
        .fetch_all(ex)
        .await
        .map_err(db("read the file ledger"))?;
    Ok(rows
        .into_iter()
        .map(|r| ledger::Entry { key: r.get(0), digest: r.get(1), etag: r.get(2), bytes: r.get::<i64, _>(3).max(0) as u64, run_id: r.get(4) })
        .collect())
}

/// For `etl backfill`: the (business date, stage) pairs in `from..=to` a finished run of the spec
/// loaded or found unchanged.
pub async fn dates_done(pool: &PgPool, spec: &str, from: chrono::NaiveDate, to: chrono::NaiveDate) -> Result<Vec<(String, String, Option<String>)>, ExecError> {
    let rows = sqlx::query(records::DATES_DONE)
        .bind(spec)
        .bind(from.format("%Y-%m-%d").to_string())
        .bind(to.format("%Y-%m-%d").to_string())
        .fetch_all(pool)
        .await
        .map_err(db("read which dates are loaded"))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

/// Records in the stage's transaction each file of its set that it loaded.
pub async fn ledger_record(tx: &mut Tx, run_id: i64, spec: &str, stage: &StagePlan, files: &[(&Source, &FileReport)]) -> Result<(), ExecError> {
    for (src, f) in files {
        let digest = src.sha256.as_deref().ok_or_else(|| ExecError::Internal(format!("{} was loaded without its digest", src.shown)))?;
        sqlx::query(records::LEDGER_RECORD)
            .bind(run_id)
            .bind(spec)
            .bind(&stage.name)
            .bind(&stage.target.qualified)
            .bind(&src.origin)
            .bind(&src.key)
            .bind(src.bytes as i64)
            .bind(src.etag.as_deref())
            .bind(digest)
            .bind(f.rows_read as i64)
            .bind(f.rows_valid as i64)
            .bind(f.rows_rejected as i64)
            .execute(&mut **tx)
            .await
            .map_err(db("record a file in the file ledger"))?;
    }
    Ok(())
}

/// The current transaction's id as a row's `xmin` shows it (its low 32 bits).
pub async fn current_xid(tx: &mut Tx) -> Result<u64, ExecError> {
    let xid: i64 = value(tx, CURRENT_XID, "read the transaction's id").await?;
    Ok(xid as u64)
}

/// What `etl report` shows: a spec's latest runs (newest first), their stages, and of the newest
/// (the run reported) its rejects by rule and by column, its contracts and its set's files.
#[derive(Debug, Clone, serde::Serialize)]
pub struct History {
    /// The runs, newest first: the first is the run reported.
    pub runs: Vec<RunRow>,
    /// Their stages, oldest run first.
    pub stages: Vec<StageRow>,
    /// The reported run's rejected rows by (stage, rule).
    pub by_rule: Vec<(String, String, i64)>,
    /// The reported run's rejected values by (stage, column).
    pub by_column: Vec<(String, String, i64)>,
    /// The reported run's contracts.
    pub checks: Vec<CheckRow>,
    /// The files of sets the reported run loaded.
    pub files: Vec<FileRow>,
}

/// A run as `etl_runs` keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRow {
    pub run_id: i64,
    pub business_date: Option<String>,
    /// UTC, `YYYY-MM-DD HH:MM:SS`.
    pub started_at: String,
    /// None while running.
    pub seconds: Option<f64>,
    pub status: String,
    pub error: Option<String>,
    pub job_id: Option<String>,
}

/// A stage of a run as `etl_run_stages` keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageRow {
    pub run_id: i64,
    pub stage: String,
    pub source: String,
    pub bytes: Option<i64>,
    pub status: String,
    pub rows_read: Option<i64>,
    pub inserted: Option<i64>,
    pub updated: Option<i64>,
    pub unchanged: Option<i64>,
    pub rejected: Option<i64>,
    pub warned: Option<i64>,
    pub seconds: Option<f64>,
    /// The run whose load it reused, when it found its source, spec and tables unchanged.
    pub unchanged_since: Option<i64>,
    pub error: Option<String>,
}

/// A contract's result as `etl_checks` keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckRow {
    pub stage: String,
    pub check: String,
    pub severity: String,
    pub passed: bool,
    pub observed: Option<String>,
    pub expected: Option<String>,
    pub message: String,
}

/// A file of a set as the file ledger keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileRow {
    pub stage: String,
    pub file: String,
    pub bytes: i64,
    pub rows_read: i64,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
}

/// Reads what `etl report` shows: the spec's `last` runs up to `run` (up to its newest when None).
pub async fn history(pool: &PgPool, spec: &str, run: Option<i64>, last: i64) -> Result<History, ExecError> {
    let read = db("read the run records");
    let runs: Vec<RunRow> = sqlx::query(records::REPORT_RUNS)
        .bind(spec)
        .bind(run)
        .bind(last)
        .fetch_all(pool)
        .await
        .map_err(&read)?
        .into_iter()
        .map(|r| RunRow { run_id: r.get(0), business_date: r.get(1), started_at: r.get(2), seconds: r.get(3), status: r.get(4), error: r.get(5), job_id: r.get(6) })
        .collect();
    let ids: Vec<i64> = runs.iter().map(|r| r.run_id).collect();
    let stages = sqlx::query(records::REPORT_STAGES)
        .bind(&ids)
        .fetch_all(pool)
        .await
        .map_err(&read)?
        .into_iter()
        .map(|r| StageRow {
            run_id: r.get(0),
            stage: r.get(1),
            source: r.get(2),
            bytes: r.get(3),
            status: r.get(4),
            rows_read: r.get(5),
            inserted: r.get(6),
            updated: r.get(7),
            unchanged: r.get(8),
            rejected: r.get(9),
            warned: r.get(10),
            seconds: r.get(11),
            unchanged_since: r.get(12),
            error: r.get(13),
        })
        .collect();
    let mut history = History { runs, stages, by_rule: Vec::new(), by_column: Vec::new(), checks: Vec::new(), files: Vec::new() };
    let Some(focus) = ids.first().copied() else { return Ok(history) };
    let counts = |sql: &'static str| async move {
        sqlx::query(sql).bind(focus).fetch_all(pool).await.map(|rows| rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect::<Vec<(String, String, i64)>>())
    };
    history.by_rule = counts(records::REPORT_REJECTS_BY_RULE).await.map_err(&read)?;
    history.by_column = counts(records::REPORT_REJECTS_BY_COLUMN).await.map_err(&read)?;
    history.checks = sqlx::query(records::REPORT_CHECKS)
        .bind(focus)
        .fetch_all(pool)
        .await
        .map_err(&read)?
        .into_iter()
        .map(|r| CheckRow { stage: r.get(0), check: r.get(1), severity: r.get(2), passed: r.get(3), observed: r.get(4), expected: r.get(5), message: r.get(6) })
        .collect();
    history.files = sqlx::query(records::REPORT_FILES)
        .bind(focus)
        .fetch_all(pool)
        .await
        .map_err(&read)?
        .into_iter()
        .map(|r| FileRow { stage: r.get(0), file: r.get(1), bytes: r.get(2), rows_read: r.get(3), rows_loaded: r.get(4), rows_rejected: r.get(5) })
        .collect();
    Ok(history)
}
