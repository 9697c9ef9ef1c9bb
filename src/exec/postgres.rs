//! PostgreSQL: connecting (never showing the password), the engine's migrations and run records,
//! creating or checking a stage's target table, exporting the lookups a stage's extract joins,
//! and loading a stage in one transaction: one binary COPY, fed from a thread of its own, into
//! the table itself (new or empty) or into a staging table merged into it.

use std::str::FromStr;

use polars::prelude::DataFrame;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::ExecError;
use crate::plan::extract::ident;
use crate::plan::load::qualified;
use crate::plan::{StagePlan, load::sql_type};
use crate::spec::model::{ColumnType, PostgresConnection, Severity};

/// An open PostgreSQL target.
pub struct Pg {
    rt: tokio::runtime::Runtime,
    pool: PgPool,
    /// `host:port/database` for messages.
    pub label: String,
}

/// Connection options from a spec connection: the URL first, then its parts over it.
pub fn connect_options(c: &PostgresConnection) -> Result<PgConnectOptions, String> {
    // An empty value (a template that rendered nothing) is unset.
    let set = |v: &Option<String>| v.as_deref().filter(|s| !s.trim().is_empty()).map(str::to_string);
    let mut o = match c.url.as_ref().map(|u| u.expose()).filter(|u| !u.trim().is_empty()) {
        Some(url) => PgConnectOptions::from_str(url).map_err(|e| scrub(&e.to_string(), c))?,
        None => PgConnectOptions::new_without_pgpass().host("localhost").port(5432),
    };
    if let Some(h) = set(&c.host) {
        o = o.host(&h);
    }
    if let Some(p) = c.port {
        o = o.port(p);
    }
    if let Some(d) = set(&c.database) {
        o = o.database(&d);
    }
    if let Some(u) = set(&c.user) {
        o = o.username(&u);
    }
    if let Some(p) = c.password.as_ref().filter(|p| !p.expose().is_empty()) {
        o = o.password(p.expose());
    }
    if let Some(m) = &c.sslmode {
        o = o.ssl_mode(PgSslMode::from_str(m).map_err(|e| e.to_string())?);
    }
    Ok(o.application_name("etl"))
}

/// Removes the connection's password from a message, wherever a driver may have put it.
pub fn scrub(message: &str, c: &PostgresConnection) -> String {
    let mut m = message.to_string();
    if let Some(p) = &c.password
        && !p.expose().is_empty() {
            m = m.replace(p.expose(), "******");
        }
    if let Some(url) = &c.url
        && let Some(pw) = url.expose().split_once("://").and_then(|(_, r)| r.split_once('@')).and_then(|(ui, _)| ui.split_once(':')).map(|(_, p)| p)
            && !pw.is_empty() {
                m = m.replace(pw, "******");
            }
    m
}

impl Pg {
    /// Connects; a failure is a connection error (exit 3) naming the server, never the password.
    pub fn connect(name: &str, c: &PostgresConnection) -> Result<Pg, ExecError> {
        let opts = connect_options(c).map_err(|message| ExecError::Connect { what: format!("PostgreSQL connection `{name}`"), message })?;
        let label = format!("{}:{}/{}", opts.get_host(), opts.get_port(), opts.get_database().unwrap_or("(default)"));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| ExecError::Internal(e.to_string()))?;
        let fail = |e: sqlx::Error| ExecError::Connect { what: format!("PostgreSQL at {label} (connection `{name}`)"), message: scrub(&e.to_string(), c) };
        // One direct connection first: its error says why (refused, bad password, no database)
        // at once, where a pool would retry until its timeout and only say it timed out.
        rt.block_on(async {
            use sqlx::Connection;
            let probe = sqlx::PgConnection::connect_with(&opts).await?;
            probe.close().await
        })
        .map_err(fail)?;
        let pool = rt
            .block_on(PgPoolOptions::new().max_connections(4).acquire_timeout(std::time::Duration::from_secs(30)).connect_with(opts))
            .map_err(fail)?;
        Ok(Pg { rt, pool, label })
    }

    /// Runs a future to completion.
    pub fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Enters the runtime's context, so connections and transactions dropped while it is held
    /// (on an error path) can return to the pool or roll back.
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.rt.enter()
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the engine's migrations (etl_runs, etl_run_stages, etl_rejects, ...).
    pub fn migrate(&self) -> Result<(), ExecError> {
        self.block(sqlx::migrate!("./migrations").run(&self.pool)).map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => ExecError::database("apply the engine's migrations", e),
            e => ExecError::Database { what: "apply the engine's migrations".into(), message: e.to_string() },
        })
    }

    /// Begins a transaction.
    pub fn begin(&self) -> Result<Transaction<'static, Postgres>, ExecError> {
        self.block(self.pool.begin()).map_err(db("begin a transaction"))
    }
}

/// Generated SQL: every identifier in it came through the spec's identifier check and is quoted
/// (STYLE habit 7); values never go in, they are bound or COPYed.
pub fn generated(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql.to_string())
}

/// Maps a driver error of the statement doing `what`.
pub fn db(what: &'static str) -> impl Fn(sqlx::Error) -> ExecError {
    move |e| ExecError::database(what, e)
}

/// Creates the stage's table when missing (with its key), or checks that the existing one holds
/// the spec's columns with compatible types and a unique key. Returns true when it created the
/// table: its secondary indexes and foreign keys are then built after the load (`finish_table`),
/// as PostgreSQL's documentation advises for bulk loads; otherwise they are ensured now.
pub async fn ensure_table(tx: &mut Transaction<'static, Postgres>, stage: &StagePlan) -> Result<bool, ExecError> {
    let t = &stage.target;
    let schema = t.schema.clone().unwrap_or_else(|| "public".into());
    let existing = sqlx::query(
        "SELECT column_name::text, data_type::text, character_maximum_length, numeric_precision, numeric_scale
         FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
    )
    .bind(&schema)
    .bind(&t.table)
    .fetch_all(&mut **tx)
    .await
    .map_err(db("read the target table's columns"))?;
    if existing.is_empty() {
        // Only when missing: creating a schema needs a privilege on the database that a loader
        // working in an existing schema need not have.
        let has_schema: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(&schema)
            .fetch_one(&mut **tx)
            .await
            .map_err(db("look up the target schema"))?;
        if !has_schema {
            sqlx::query(generated(&format!("CREATE SCHEMA {}", ident(&schema)))).execute(&mut **tx).await.map_err(db("create the target schema"))?;
        }
        for s in &t.sql.create_table {
            sqlx::query(generated(s)).execute(&mut **tx).await.map_err(db("create the target table"))?;
        }
    } else {
        let mut problems = Vec::new();
        for c in &stage.columns {
            let Some(row) = existing.iter().find(|r| r.get::<String, _>(0) == c.name) else {
                problems.push(format!("column `{}` is missing (the spec wants {})", c.name, sql_type(c, t.dialect)));
                continue;
            };
            let data_type: String = row.get(1);
            let max_len: Option<i32> = row.get(2);
            let precision: Option<i32> = row.get(3);
            let scale: Option<i32> = row.get(4);
            let ok = match c.ty {
                ColumnType::String => match data_type.as_str() {
                    "text" => true,
                    "character varying" => max_len.is_none_or(|m| c.max_length.is_some_and(|n| n as i32 <= m)),
                    _ => false,
                },
                ColumnType::Int32 => matches!(data_type.as_str(), "integer" | "bigint" | "numeric"),
                ColumnType::Int64 => matches!(data_type.as_str(), "bigint" | "numeric"),
                ColumnType::Decimal { precision: p, scale: s } => {
                    data_type == "numeric" && precision.is_none_or(|tp| tp - scale.unwrap_or(0) >= i32::from(p) - i32::from(s)) && scale.is_none_or(|ts| ts >= i32::from(s))
                }
                ColumnType::Float64 => data_type == "double precision",
                ColumnType::Bool => data_type == "boolean",
                ColumnType::Date => matches!(data_type.as_str(), "date" | "timestamp without time zone"),
                ColumnType::Timestamp => data_type == "timestamp without time zone",
            };
            if !ok {
                let shown = match (max_len, precision, scale) {
                    (Some(m), _, _) => format!("{data_type}({m})"),
                    (_, Some(p), Some(s)) if data_type == "numeric" => format!("numeric({p},{s})"),
                    _ => data_type.clone(),
                };
                problems.push(format!("column `{}` is {shown}, which cannot hold the spec's {}", c.name, sql_type(c, t.dialect)));
            }
        }
        if !t.key.is_empty() {
            let mut key = t.key.clone();
            key.sort();
            let unique: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique
                    AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a
                          WHERE a.attrelid = c.oid AND a.attnum = ANY (i.indkey)) = $3)",
            )
            .bind(&schema)
            .bind(&t.table)
            .bind(&key)
            .fetch_one(&mut **tx)
            .await
            .map_err(db("read the target table's keys"))?;
            if !unique {
                problems.push(format!("the key ({}) has no unique constraint or index", t.key.join(", ")));
            }
        }
        if !problems.is_empty() {
            return Err(ExecError::TableMismatch { table: qualified(t), problems: problems.join("; ") });
        }
    }
    if existing.is_empty() {
        return Ok(true);
    }
    finish_table(tx, stage).await?;
    Ok(false)
}

/// Builds the key and unique constraints of a table the run created bare, once it is loaded.
pub async fn add_constraints(tx: &mut Transaction<'static, Postgres>, stage: &StagePlan) -> Result<(), ExecError> {
    for s in &stage.target.sql.constraints {
        sqlx::query(generated(s)).execute(&mut **tx).await.map_err(db("add the key"))?;
    }
    Ok(())
}

/// Ensures the table's secondary indexes and foreign keys (a foreign key added to a loaded table
/// is validated in bulk).
pub async fn finish_table(tx: &mut Transaction<'static, Postgres>, stage: &StagePlan) -> Result<(), ExecError> {
    let t = &stage.target;
    let schema = t.schema.clone().unwrap_or_else(|| "public".into());
    for s in &t.sql.create_indexes {
        sqlx::query(generated(s)).execute(&mut **tx).await.map_err(db("create an index"))?;
    }
    for fk in &t.sql.foreign_keys {
        let present: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
               JOIN pg_namespace n ON n.oid = r.relnamespace WHERE n.nspname = $1 AND r.relname = $2 AND c.conname = $3)",
        )
        .bind(&schema)
        .bind(&t.table)
        .bind(&fk.name)
        .fetch_one(&mut **tx)
        .await
        .map_err(db("read the target table's foreign keys"))?;
        if !present {
            sqlx::query(generated(&fk.sql)).execute(&mut **tx).await.map_err(db("add a foreign key"))?;
        }
    }
    Ok(())
}

/// Takes the transaction-scoped advisory lock of a table: two runs never interleave on it.
pub async fn lock_table(tx: &mut Transaction<'static, Postgres>, stage: &StagePlan) -> Result<(), ExecError> {
    let key = format!("etl:{}", qualified(&stage.target));
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(key)
        .execute(&mut **tx)
        .await
        .map_err(db("lock the target table"))?;
    Ok(())
}

/// Whether the table holds no row.
pub async fn is_empty(tx: &mut Transaction<'static, Postgres>, stage: &StagePlan) -> Result<bool, ExecError> {
    let sql = format!("SELECT NOT EXISTS (SELECT 1 FROM {})", qualified(&stage.target));
    sqlx::query_scalar(generated(&sql)).fetch_one(&mut **tx).await.map_err(db("look into the target table"))
}

/// Runs one statement of the load.
pub async fn execute(tx: &mut Transaction<'static, Postgres>, sql: &str, what: &'static str) -> Result<(), ExecError> {
    sqlx::query(generated(sql)).execute(&mut **tx).await.map_err(db(what))?;
    Ok(())
}

/// Whether a table exists (`qualified` is quoted SQL).
pub async fn exists(tx: &mut Transaction<'static, Postgres>, qualified: &str) -> Result<bool, ExecError> {
    let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text").bind(qualified).fetch_one(&mut **tx).await.map_err(db("look up a table"))?;
    Ok(found.is_some())
}

/// The state of a table's rows (see `fingerprint`), or None when it does not exist.
pub async fn table_state(tx: &mut Transaction<'static, Postgres>, qualified: &str) -> Result<Option<String>, ExecError> {
    if !exists(tx, qualified).await? {
        return Ok(None);
    }
    let sql = super::fingerprint::table_state_sql(qualified);
    let state: String = sqlx::query_scalar(generated(&sql)).fetch_one(&mut **tx).await.map_err(db("read a table's state"))?;
    Ok(Some(state))
}

/// The current transaction's id as a row's `xmin` shows it (its low 32 bits).
pub async fn current_xid(tx: &mut Transaction<'static, Postgres>) -> Result<u64, ExecError> {
    let xid: i64 = sqlx::query_scalar("SELECT txid_current() % 4294967296").fetch_one(&mut **tx).await.map_err(db("read the transaction's id"))?;
    Ok(xid as u64)
}

/// A stage's last load by this spec, as `etl_run_stages` recorded it.
#[derive(Debug, Clone)]
pub struct LastLoad {
    /// The run that recorded it.
    pub run_id: i64,
    /// The run whose load it was (itself, or the one a skipped stage reused).
    pub loaded_by: i64,
    /// Its digests.
    pub fingerprint: super::fingerprint::Fingerprint,
    /// Its outcome.
    pub status: String,
    pub rows_read: u64,
    pub rows_rejected: u64,
    pub rows_warned: u64,
}

/// The latest load of `stage` by the spec `spec` that committed rows (succeeded, or loaded with
/// rejects), if it recorded its digests.
pub async fn last_load(pool: &PgPool, spec: &str, stage: &str, table: &str) -> Result<Option<LastLoad>, ExecError> {
    let row = sqlx::query(
        "SELECT s.run_id, coalesce(s.unchanged_since, s.run_id), s.context_fingerprint, s.source_fingerprint, s.table_state,
                s.status, s.rows_read, s.rows_rejected, s.rows_warned
           FROM etl_run_stages s JOIN etl_runs r ON r.run_id = s.run_id
          WHERE r.spec_name = $1 AND s.stage = $2 AND s.target_table = $3 AND s.status IN ('succeeded', 'rejected')
          ORDER BY s.finished_at DESC, s.run_id DESC
          LIMIT 1",
    )
    .bind(spec)
    .bind(stage)
    .bind(table)
    .fetch_optional(pool)
    .await
    .map_err(db("read the stage's last load"))?;
    let Some(row) = row else { return Ok(None) };
    let text = |i: usize| row.try_get::<Option<String>, _>(i).ok().flatten();
    let (Some(context), Some(source), Some(table_state)) = (text(2), text(3), text(4)) else { return Ok(None) };
    let count = |i: usize| row.try_get::<Option<i64>, _>(i).ok().flatten().unwrap_or(0).max(0) as u64;
    Ok(Some(LastLoad {
        run_id: row.get(0),
        loaded_by: row.get(1),
        fingerprint: super::fingerprint::Fingerprint { table: table.to_string(), context, source, table_state },
        status: row.get(5),
        rows_read: count(6),
        rows_rejected: count(7),
        rows_warned: count(8),
    }))
}

/// The rejects a run recorded for a stage, in line order.
pub async fn rejects_of(pool: &PgPool, run_id: i64, stage: &str) -> Result<Vec<super::validate::Reject>, ExecError> {
    let rows = sqlx::query("SELECT line, column_name, rule, value, message, severity FROM etl_rejects WHERE run_id = $1 AND stage = $2 ORDER BY line, rule")
        .bind(run_id)
        .bind(stage)
        .fetch_all(pool)
        .await
        .map_err(db("read the rejects of the stage's last load"))?;
    Ok(rows
        .into_iter()
        .map(|r| super::validate::Reject {
            line: r.get::<i64, _>(0).max(0) as u64,
            column: r.get(1),
            rule: r.get(2),
            value: r.get(3),
            message: r.get(4),
            severity: if r.get::<String, _>(5) == "warn" { Severity::Warn } else { Severity::Error },
        })
        .collect())
}

/// Writes the rows of `query` to `path` as CSV (NULL an empty field, empty text `""`).
pub async fn export_csv(tx: &mut Transaction<'static, Postgres>, query: &str, path: &std::path::Path) -> Result<(), ExecError> {
    use futures_util::StreamExt;
    use std::io::Write;
    let write_err = |e: std::io::Error| ExecError::Write { path: path.display().to_string(), message: e.to_string() };
    let file = std::fs::File::create(path).map_err(write_err)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let sql = format!("COPY ({query}) TO STDOUT (FORMAT csv)");
    let mut stream = (**tx).copy_out_raw(&sql).await.map_err(db("export a lookup"))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(db("export a lookup"))?;
        out.write_all(&chunk).map_err(write_err)?;
    }
    out.flush().map_err(write_err)
}

/// COPYs batches into `copy_sql` (a binary COPY) on a thread of its own while `produce` validates
/// the next ones: `produce` gets a function that hands one batch over. Returns what `produce`
/// returned; a COPY failure ends `produce` at its next batch and is the error returned.
pub fn copy_stream<T>(
    pg: &Pg,
    tx: &mut Transaction<'static, Postgres>,
    stage: &StagePlan,
    copy_sql: &str,
    produce: impl FnOnce(&mut dyn FnMut(DataFrame) -> Result<(), ExecError>) -> Result<T, ExecError>,
) -> Result<T, ExecError> {
    let (send, receive) = std::sync::mpsc::sync_channel::<DataFrame>(2);
    std::thread::scope(|scope| {
        let copier = scope.spawn(move || -> Result<(), ExecError> {
            let mut copy = pg.block((**tx).copy_in_raw(copy_sql)).map_err(db("start COPY"))?;
            let mut buf = Vec::with_capacity(1 << 20);
            buf.extend_from_slice(super::pgcopy::HEADER);
            for batch in receive {
                super::pgcopy::encode(stage, &batch, &mut buf)?;
                drop(batch);
                pg.block(copy.send(buf.as_slice())).map_err(db("COPY a batch"))?;
                buf.clear();
            }
            buf.extend_from_slice(super::pgcopy::TRAILER);
            pg.block(copy.send(buf.as_slice())).map_err(db("COPY a batch"))?;
            pg.block(copy.finish()).map_err(db("finish COPY"))?;
            Ok(())
        });
        let mut stopped = false;
        let mut hand = |batch: DataFrame| -> Result<(), ExecError> {
            if send.send(batch).is_err() {
                stopped = true;
                return Err(ExecError::Internal("the COPY stopped".into()));
            }
            Ok(())
        };
        let produced = produce(&mut hand);
        drop(send);
        let copied = copier.join().unwrap_or_else(|_| Err(ExecError::Internal("the COPY thread panicked".into())));
        match (produced, copied) {
            // The COPY's own error explains a producer stopped by it.
            (Err(_), Err(e)) if stopped => Err(e),
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(e),
            (Ok(t), Ok(())) => Ok(t),
        }
    })
}

/// What a merge did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Merged {
    /// New rows.
    pub inserted: u64,
    /// Changed rows.
    pub updated: u64,
    /// Rows equal to what the table held.
    pub unchanged: u64,
}

/// Writes the staged rows into the table.
pub async fn merge(tx: &mut Transaction<'static, Postgres>, stage: &StagePlan, staged: u64) -> Result<Merged, ExecError> {
    let mut m = Merged::default();
    for s in &stage.target.sql.merge {
        if s.contains("RETURNING (xmax = 0) AS inserted") {
            let wrapped = format!("WITH merged AS ({s}) SELECT count(*) FILTER (WHERE inserted), count(*) FROM merged");
            let row = sqlx::query(generated(&wrapped)).fetch_one(&mut **tx).await.map_err(db("merge into the target table"))?;
            let inserted: i64 = row.get(0);
            let total: i64 = row.get(1);
            m.inserted = inserted as u64;
            m.updated = (total - inserted) as u64;
        } else if s.starts_with("DELETE") {
            sqlx::query(generated(s)).execute(&mut **tx).await.map_err(db("empty the target table"))?;
        } else {
            let r = sqlx::query(generated(s)).execute(&mut **tx).await.map_err(db("insert into the target table"))?;
            m.inserted = r.rows_affected();
        }
    }
    m.unchanged = staged.saturating_sub(m.inserted + m.updated);
    Ok(m)
}

/// Records the start of a run; returns its id.
pub async fn begin_run(pool: &PgPool, spec_name: &str, hash: &str, path: &str, job_id: Option<&str>) -> Result<i64, ExecError> {
    let host = std::env::var("HOSTNAME").ok();
    sqlx::query_scalar("INSERT INTO etl_runs (spec_name, spec_hash, spec_path, job_id, host) VALUES ($1, $2, $3, $4, $5) RETURNING run_id")
        .bind(spec_name)
        .bind(hash)
        .bind(path)
        .bind(job_id)
        .bind(host)
        .fetch_one(pool)
        .await
        .map_err(db("record the run"))
}

/// Records the end of a run.
pub async fn finish_run(pool: &PgPool, run_id: i64, status: &str, error: Option<&str>) -> Result<(), ExecError> {
    sqlx::query("UPDATE etl_runs SET finished_at = now(), status = $2, error = $3 WHERE run_id = $1")
        .bind(run_id)
        .bind(status)
        .bind(error)
        .execute(pool)
        .await
        .map_err(db("record the run's end"))?;
    Ok(())
}

/// Records a stage's outcome and its rejects.
pub async fn record_stage(pool: &PgPool, run_id: i64, report: &super::StageReport, status: &str, error: Option<&str>) -> Result<(), ExecError> {
    let mut tx = pool.begin().await.map_err(db("record the stage"))?;
    sqlx::query(
        "INSERT INTO etl_run_stages (run_id, stage, source, source_bytes, source_etag, finished_at, status, rows_read,
           rows_inserted, rows_updated, rows_unchanged, rows_rejected, rows_warned, balanced, error,
           target_table, context_fingerprint, source_fingerprint, table_state, unchanged_since)
         VALUES ($1, $2, $3, $4, $5, now(), $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
    )
    .bind(run_id)
    .bind(&report.stage)
    .bind(&report.source)
    .bind(report.bytes as i64)
    .bind(report.etag.as_deref())
    .bind(status)
    .bind(report.rows_read as i64)
    .bind(report.loaded.map(|m| m.inserted as i64))
    .bind(report.loaded.map(|m| m.updated as i64))
    .bind(report.loaded.map(|m| m.unchanged as i64))
    .bind(report.rows_rejected as i64)
    .bind(report.rows_warned as i64)
    .bind(report.balanced())
    .bind(error)
    .bind(report.fingerprint.as_ref().map(|f| f.table.as_str()))
    .bind(report.fingerprint.as_ref().map(|f| f.context.as_str()))
    .bind(report.fingerprint.as_ref().map(|f| f.source.as_str()))
    .bind(report.fingerprint.as_ref().map(|f| f.table_state.as_str()))
    .bind(report.unchanged_since_run)
    .execute(&mut *tx)
    .await
    .map_err(db("record the stage"))?;
    if !report.rejects.is_empty() {
        let mut copy = tx
            .copy_in_raw("COPY etl_rejects (run_id, stage, source, line, column_name, rule, value, message, severity) FROM STDIN (FORMAT csv)")
            .await
            .map_err(db("record the rejects"))?;
        let mut buf = Vec::new();
        for r in &report.rejects {
            let sev = match r.severity {
                Severity::Error => "error",
                Severity::Warn => "warn",
            };
            let fields = [
                Some(run_id.to_string()),
                Some(report.stage.clone()),
                Some(report.source.clone()),
                Some(r.line.to_string()),
                r.column.clone(),
                Some(r.rule.clone()),
                r.value.clone(),
                Some(r.message.clone()),
                Some(sev.to_string()),
            ];
            super::write_csv_record(&mut buf, &fields);
        }
        copy.send(buf).await.map_err(db("record the rejects"))?;
        copy.finish().await.map_err(db("record the rejects"))?;
    }
    tx.commit().await.map_err(db("record the stage"))?;
    Ok(())
}
