//! The embedded DuckDB target (the quick start's): the target file is attached to the run's
//! DuckDB database, on the reader's own connection, so a stage's extract joins the target's
//! tables in the stage's transaction. It is loaded like PostgreSQL is — table created from the
//! spec or checked, one transaction per stage, staged batches merged, unchanged rows skipped —
//! and the run, its stages and its rejects are recorded in the same file.

use std::path::Path;

use polars::prelude::{DataFrame, DataType};

use super::{ExecError, StageReport, postgres::Merged};
use crate::plan::StagePlan;
use crate::plan::extract::{ident, literal};
use crate::plan::load::{sql_type, staging_table};
use crate::spec::model::{ColumnType, Severity};

use crate::plan::load::DUCKDB_CATALOG as CATALOG;

/// A DuckDB target: the run's DuckDB connection with the target file attached.
pub struct Duck<'r> {
    conn: &'r duckdb::Connection,
    /// The file, for messages.
    pub path: String,
}

fn err(what: &'static str) -> impl Fn(duckdb::Error) -> ExecError {
    move |e| ExecError::Duckdb { what, message: e.to_string() }
}

const ENGINE_TABLES: &str = "
CREATE SEQUENCE IF NOT EXISTS etl_runs_seq;
CREATE TABLE IF NOT EXISTS etl_runs (
    run_id BIGINT PRIMARY KEY DEFAULT nextval('etl_runs_seq'), spec_name TEXT NOT NULL, spec_hash TEXT NOT NULL,
    spec_path TEXT NOT NULL, job_id TEXT, started_at TIMESTAMPTZ NOT NULL DEFAULT now(), finished_at TIMESTAMPTZ,
    status TEXT NOT NULL DEFAULT 'running', error TEXT);
CREATE TABLE IF NOT EXISTS etl_run_stages (
    run_id BIGINT NOT NULL, stage TEXT NOT NULL, source TEXT NOT NULL, source_bytes BIGINT, source_etag TEXT,
    finished_at TIMESTAMPTZ DEFAULT now(), status TEXT NOT NULL, rows_read BIGINT, rows_inserted BIGINT,
    rows_updated BIGINT, rows_unchanged BIGINT, rows_rejected BIGINT, rows_warned BIGINT, balanced BOOLEAN, error TEXT);
CREATE TABLE IF NOT EXISTS etl_rejects (
    run_id BIGINT NOT NULL, stage TEXT NOT NULL, source TEXT NOT NULL, line BIGINT NOT NULL, column_name TEXT,
    rule TEXT NOT NULL, value TEXT, message TEXT NOT NULL, severity TEXT NOT NULL);
";

impl<'r> Duck<'r> {
    /// Attaches the target file (created when missing) to the run's database.
    pub fn open(reader: &'r super::read::Reader, path: &Path) -> Result<Duck<'r>, ExecError> {
        let conn = reader.connection();
        let shown = path.display().to_string();
        conn.execute_batch(&format!("ATTACH IF NOT EXISTS {} AS {CATALOG}; USE {CATALOG};", literal(&shown)))
            .map_err(|e| ExecError::Connect { what: format!("DuckDB file {shown}"), message: e.to_string() })?;
        Ok(Duck { conn, path: shown })
    }

    /// Creates the engine's tables in the file.
    pub fn migrate(&self) -> Result<(), ExecError> {
        self.conn.execute_batch(ENGINE_TABLES).map_err(err("create the engine's tables"))
    }

    /// Creates the stage's table when missing, or checks it holds the spec's columns.
    pub fn ensure_table(&self, stage: &StagePlan) -> Result<(), ExecError> {
        let t = &stage.target;
        let mut stmt = self
            .conn
            .prepare("SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog = ? AND table_schema = 'main' AND table_name = ?")
            .map_err(err("read the target table's columns"))?;
        let existing: Vec<(String, String)> = stmt
            .query_map([CATALOG, t.table.as_str()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
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

    /// Stages one batch: written as CSV to `file` and read back with DuckDB's COPY, quoted
    /// empty text staying text.
    pub fn copy_batch(&self, stage: &StagePlan, batch: &DataFrame, file: &Path) -> Result<(), ExecError> {
        let bytes = csv_batch(stage, batch)?;
        std::fs::write(file, bytes).map_err(|e| ExecError::Write { path: file.display().to_string(), message: e.to_string() })?;
        let sql = stage.target.sql.copy.replace("'batch.csv'", &literal(&file.display().to_string()));
        self.conn.execute_batch(&sql).map_err(err("stage a batch"))
    }

    /// Writes the staged rows into the table.
    pub fn merge(&self, stage: &StagePlan, staged: u64) -> Result<Merged, ExecError> {
        let t = &stage.target;
        let mut m = Merged::default();
        let existing: u64 = if t.key.is_empty() || t.mode != crate::spec::model::LoadMode::Upsert {
            0
        } else {
            let on: Vec<String> = t.key.iter().map(|k| format!("r.{0} = s.{0}", ident(k))).collect();
            let sql = format!(
                "SELECT count(*) FROM {} AS s WHERE EXISTS (SELECT 1 FROM {} AS r WHERE {})",
                ident(&staging_table(t)),
                ident(&t.table),
                on.join(" AND ")
            );
            self.conn.query_row(&sql, [], |r| r.get::<_, i64>(0)).map_err(err("count existing keys"))? as u64
        };
        let mut affected = 0u64;
        for s in &t.sql.merge {
            let n = self.conn.execute(s, []).map_err(err("merge into the target table"))? as u64;
            if !s.starts_with("DELETE") {
                affected += n;
            }
        }
        m.inserted = staged.saturating_sub(existing).min(affected);
        m.updated = affected.saturating_sub(m.inserted);
        m.unchanged = staged.saturating_sub(m.inserted + m.updated);
        Ok(m)
    }

    /// Records the start of a run.
    pub fn begin_run(&self, spec: &str, hash: &str, path: &str, job: Option<&str>) -> Result<i64, ExecError> {
        self.conn
            .query_row(
                "INSERT INTO etl_runs (spec_name, spec_hash, spec_path, job_id) VALUES (?, ?, ?, ?) RETURNING run_id",
                duckdb::params![spec, hash, path, job],
                |r| r.get::<_, i64>(0),
            )
            .map_err(err("record the run"))
    }

    /// Records the end of a run.
    pub fn finish_run(&self, run_id: i64, status: &str, error: Option<&str>) -> Result<(), ExecError> {
        self.conn
            .execute("UPDATE etl_runs SET finished_at = now(), status = ?, error = ? WHERE run_id = ?", duckdb::params![status, error, run_id])
            .map_err(err("record the run's end"))?;
        Ok(())
    }

    /// Records a stage and its rejects.
    pub fn record_stage(&self, run_id: i64, r: &StageReport) -> Result<(), ExecError> {
        self.conn
            .execute(
                "INSERT INTO etl_run_stages (run_id, stage, source, source_bytes, source_etag, status, rows_read, rows_inserted, rows_updated, rows_unchanged, rows_rejected, rows_warned, balanced, error)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                duckdb::params![
                    run_id,
                    r.stage,
                    r.source,
                    r.bytes as i64,
                    r.etag,
                    r.status,
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
        let mut app = self.conn.appender("etl_rejects").map_err(err("record the rejects"))?;
        for j in &r.rejects {
            let sev = if j.severity == Severity::Error { "error" } else { "warn" };
            app.append_row(duckdb::params![run_id, r.stage, r.source, j.line as i64, j.column, j.rule, j.value, j.message, sev])
                .map_err(err("record the rejects"))?;
        }
        app.flush().map_err(err("record the rejects"))?;
        Ok(())
    }

    /// Runs an analytics query; every value as DuckDB prints it.
    pub fn analytic(&self, name: &str, sql: &str) -> Result<super::AnalyticResult, ExecError> {
        let body = sql.trim().trim_end_matches(';');
        let mut stmt = self.conn.prepare(&format!("DESCRIBE {body}")).map_err(|e| ExecError::Duckdb { what: "describe an analytics query", message: format!("{name}: {e}") })?;
        let columns: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(err("describe an analytics query"))?
            .collect::<Result<_, _>>()
            .map_err(err("describe an analytics query"))?;
        let casts: Vec<String> = columns.iter().map(|c| format!("CAST({} AS VARCHAR)", ident(c))).collect();
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {} FROM ({body}) AS q", casts.join(", ")))
            .map_err(|e| ExecError::Duckdb { what: "run an analytics query", message: format!("{name}: {e}") })?;
        let n = columns.len();
        let rows: Vec<Vec<Option<String>>> = stmt
            .query_map([], |r| (0..n).map(|i| r.get::<_, Option<String>>(i)).collect())
            .map_err(err("run an analytics query"))?
            .collect::<Result<_, _>>()
            .map_err(err("run an analytics query"))?;
        Ok(super::AnalyticResult { name: name.to_string(), columns, rows })
    }
}

/// Encodes a batch's columns as CSV. Text is always quoted, so an empty text is not NULL; NULL is
/// an empty unquoted field.
fn csv_batch(stage: &StagePlan, batch: &DataFrame) -> Result<Vec<u8>, ExecError> {
    let fail = |e: polars::error::PolarsError| ExecError::Polars { what: "format a batch as CSV", message: e.to_string() };
    let mut cols = Vec::with_capacity(stage.columns.len());
    for c in &stage.columns {
        let s = batch.column(&c.name).and_then(|col| col.cast(&DataType::String)).map_err(fail)?;
        cols.push((s.str().map_err(fail)?.clone(), c.ty == ColumnType::String));
    }
    let mut out = Vec::with_capacity(batch.height() * 64);
    for row in 0..batch.height() {
        for (i, (col, quote)) in cols.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if let Some(v) = col.get(row) {
                if *quote || v.contains([',', '"', '\n', '\r']) || v.is_empty() {
                    super::push_quoted(&mut out, v);
                } else {
                    out.extend_from_slice(v.as_bytes());
                }
            }
        }
        out.push(b'\n');
    }
    Ok(out)
}
