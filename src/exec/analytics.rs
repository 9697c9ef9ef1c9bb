//! The analytics queries run after the stages: a PostgreSQL target's at once, each on a
//! connection of its own in a transaction rolled back after it, DuckDB's one after another; every
//! value as the database prints it. A query that fails is reported as failed, beside the others'
//! results: the loads before it are committed and stay so. A PostgreSQL analytic of the run
//! records' connection whose tables are as an earlier run found them (the digest of its
//! statements and their states, `etl_analytics`) reports that run's result instead of querying.

use indexmap::IndexMap;
use sqlx::Row;

use super::postgres::{Pg, arguments, generated};
use super::report::{AnalyticResult, CheckResult};
use super::context::Target;
use super::error::ExecError;
use crate::plan::{AnalyticPlan, Plan, records};

/// Where the analytics' results are recorded, and whether an earlier run's may be reported.
pub struct Recorded<'a> {
    /// The connection holding the run records.
    pub connection: &'a str,
    /// The run.
    pub run_id: i64,
    /// False with `--force`: every analytic queries.
    pub reuse: bool,
}

/// Runs the plan's analytics, in the plan's order; each failure is kept in its result. `loaded`:
/// the tables the run's stages loaded or found unchanged, each with its state then (qualified).
pub fn run_all(plan: &Plan, targets: &IndexMap<String, Target<'_>>, recorded: Option<&Recorded<'_>>, loaded: &[(String, String)]) -> Vec<AnalyticResult> {
    let mut results: Vec<Option<Result<AnalyticResult, ExecError>>> = plan.analytics.iter().map(|_| None).collect();
    for (name, target) in targets {
        let Target::Pg(pg) = target else { continue };
        let records = recorded.filter(|r| r.connection == name.as_str());
        let mine: Vec<usize> = (0..plan.analytics.len()).filter(|&i| plan.analytics[i].connection == *name).collect();
        // Each table's state is read once for all the analytics reading it.
        let states = match records {
            Some(_) => pg.block(table_states(pg.pool(), mine.iter().map(|&i| &plan.analytics[i]), loaded)),
            None => Ok(States::default()),
        };
        let states = match states {
            Ok(s) => s,
            Err(e) => {
                for &i in &mine {
                    results[i] = Some(Err(ExecError::Internal(format!("read the states of the analytics' tables: {e}"))));
                }
                continue;
            }
        };
        // As many at once as the pool has connections: the others wait their turn here, not
        // for a connection, which the pool gives up waiting for (a 100M-row table's analytics
        // each run longer than that: they timed out).
        use futures_util::StreamExt;
        let queries = futures_util::stream::iter(mine.iter().map(|&i| run_or_reuse(pg, &plan.name, &plan.analytics[i], records, &states)));
        let ran: Vec<_> = pg.block(queries.buffered(super::postgres::POOL_CONNECTIONS as usize).collect());
        for (i, r) in mine.iter().zip(ran) {
            results[*i] = Some(r);
        }
    }
    let mut out = Vec::new();
    for (a, result) in plan.analytics.iter().zip(results) {
        let result = match (result, targets.get(&a.connection)) {
            (Some(r), _) => r,
            (None, Some(Target::Duck(d))) => a.materialize.as_deref().map_or(Ok(()), |m| d.execute(m, "compute an analytic")).and_then(|()| d.analytic(&a.name, &a.run)).and_then(|mut r| {
                for (cond, sql) in &a.expect {
                    r.expectations.push(expectation(cond, d.offending_rows(&a.name, sql)?));
                }
                Ok(r)
            }),
            (None, _) => continue,
        };
        let mut result = result.unwrap_or_else(|e| AnalyticResult { name: a.name.clone(), error: Some(e.to_string()), ..AnalyticResult::default() });
        result.description = a.description.clone();
        out.push(result);
    }
    out
}

/// An analytic of a PostgreSQL target: an earlier run's result when its digest is this one's
/// (and `records` allow), else queried; recorded with its digest when `records` are here.
async fn run_or_reuse(pg: &Pg, spec: &str, a: &AnalyticPlan, records: Option<&Recorded<'_>>, states: &States) -> Result<AnalyticResult, ExecError> {
    let pool = pg.pool();
    let fail = |e: sqlx::Error| ExecError::database(format!("record analytics `{}`", a.name), e);
    let digest = match (records, &a.reads) {
        (Some(_), Ok(tables)) => digest(a, tables, states),
        _ => None,
    };
    if let (Some(r), Some(d)) = (records.filter(|r| r.reuse), &digest)
        && let Some(row) = sqlx::query(records::LAST_ANALYTIC).bind(spec).bind(&a.name).bind(d).fetch_optional(pool).await.map_err(fail)?
    {
        let (run, stored): (i64, String) = (row.get(0), row.get(1));
        if let Some(result) = serde_json::from_str(&stored).ok().and_then(|v| AnalyticResult::from_stored(&a.name, &v, run)) {
            record(pool, r.run_id, a, d, &result, Some(run)).await.map_err(fail)?;
            return Ok(result);
        }
    }
    let result = run_pg(pool, a).await?;
    if let (Some(r), Some(d)) = (records, &digest) {
        record(pool, r.run_id, a, d, &result, None).await.map_err(fail)?;
    }
    Ok(result)
}

/// The state of each table the analytics read (None: not a plain or partitioned table of their
/// search path: a view, a missing name), found once in a transaction with their search path: a
/// table a stage of the run loaded or checked has the state the stage found, the others are read.
#[derive(Default)]
struct States(std::collections::HashMap<String, Option<String>>);

async fn table_states<'p>(pool: &sqlx::PgPool, analytics: impl Iterator<Item = &'p AnalyticPlan>, loaded: &[(String, String)]) -> Result<States, ExecError> {
    let fail = |e: sqlx::Error| ExecError::database("read the state of the analytics' tables", e);
    let mut states = States::default();
    let mut tx: Option<sqlx::Transaction<'static, sqlx::Postgres>> = None;
    let mut by_oid: std::collections::HashMap<i64, &str> = std::collections::HashMap::new();
    for a in analytics {
        let Ok(tables) = &a.reads else { continue };
        for (table, state) in tables {
            if states.0.contains_key(table) {
                continue;
            }
            let t = match tx.as_mut() {
                Some(t) => t,
                None => {
                    let mut t = pool.begin().await.map_err(fail)?;
                    // The analytics of one connection share its search path.
                    if let Some(q) = &a.search_path {
                        sqlx::query_with(generated(&q.sql), arguments(q)?).execute(&mut *t).await.map_err(fail)?;
                    }
                    for (qualified, state) in loaded {
                        let found: Option<(i64, bool)> = sqlx::query_as(records::ANALYTIC_TABLE).bind(qualified).fetch_optional(&mut *t).await.map_err(fail)?;
                        if let Some((oid, true)) = found {
                            by_oid.insert(oid, state.as_str());
                        }
                    }
                    tx.insert(t)
                }
            };
            let found: Option<(i64, bool)> = sqlx::query_as(records::ANALYTIC_TABLE).bind(table).fetch_optional(&mut **t).await.map_err(fail)?;
            let value = match found {
                Some((oid, true)) => match by_oid.get(&oid) {
                    Some(known) => Some((*known).to_string()),
                    None => Some(sqlx::query_scalar::<_, String>(generated(state)).fetch_one(&mut **t).await.map_err(fail)?),
                },
                _ => None,
            };
            states.0.insert(table.clone(), value);
        }
    }
    if let Some(t) = tx {
        t.rollback().await.map_err(fail)?;
    }
    Ok(states)
}

/// The digest of an analytic's statements and its tables' states; None when one of them is not
/// a table.
fn digest(a: &AnalyticPlan, tables: &[(String, String)], states: &States) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [a.run.as_str(), a.materialize.as_deref().unwrap_or_default(), &format!("{:?}", a.search_path)] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for (cond, sql) in &a.expect {
        h.update(cond.as_bytes());
        h.update([0]);
        h.update(sql.as_bytes());
        h.update([0]);
    }
    for (table, _) in tables {
        let state = states.0.get(table)?.as_deref()?;
        h.update(table.as_bytes());
        h.update([0]);
        h.update(state.as_bytes());
        h.update([0]);
    }
    Some(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

async fn record(pool: &sqlx::PgPool, run_id: i64, a: &AnalyticPlan, digest: &str, result: &AnalyticResult, reused_from: Option<i64>) -> Result<(), sqlx::Error> {
    sqlx::query(records::RECORD_ANALYTIC).bind(run_id).bind(&a.name).bind(digest).bind(result.stored().to_string()).bind(reused_from).execute(pool).await.map(|_| ())
}

/// An `expect` condition's result from the rows that fail it (`(count of them, row as JSON)`,
/// up to 20).
fn expectation(cond: &str, failing: Vec<(i64, String)>) -> CheckResult {
    let count = failing.first().map_or(0, |f| f.0);
    CheckResult {
        check: cond.to_string(),
        severity: "error",
        passed: failing.is_empty(),
        observed: Some(count.to_string()),
        expected: Some("0 rows failing it".into()),
        message: if failing.is_empty() { "every row meets it".into() } else { format!("{count} rows do not meet it") },
        rows: failing.into_iter().map(|f| f.1).collect(),
    }
}

/// Runs one query on PostgreSQL: its rows come back as (row, column, value as text).
async fn run_pg(pool: &sqlx::PgPool, a: &AnalyticPlan) -> Result<AnalyticResult, ExecError> {
    let fail = |e: sqlx::Error| ExecError::database(format!("run analytics `{}`", a.name), e);
    let mut tx = pool.begin().await.map_err(fail)?;
    if let Some(q) = &a.search_path {
        sqlx::query_with(generated(&q.sql), arguments(q)?).execute(&mut *tx).await.map_err(fail)?;
    }
    if let Some(m) = &a.materialize {
        sqlx::query(generated(m)).execute(&mut *tx).await.map_err(fail)?;
    }
    let rows = sqlx::query(generated(&a.run)).fetch_all(&mut *tx).await.map_err(fail)?;
    let mut expectations = Vec::new();
    for (cond, sql) in &a.expect {
        let failing = sqlx::query(generated(sql)).fetch_all(&mut *tx).await.map_err(fail)?;
        expectations.push(expectation(cond, failing.iter().map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1))).collect()));
    }
    tx.rollback().await.map_err(fail)?;
    let mut result = AnalyticResult { name: a.name.clone(), expectations, ..AnalyticResult::default() };
    let mut current: Option<i64> = None;
    for r in rows {
        let n: i64 = r.get(0);
        let key: String = r.get(1);
        let value: Option<String> = r.get(2);
        let kind: Option<String> = r.get(3);
        if current != Some(n) {
            current = Some(n);
            result.rows.push(Vec::new());
        }
        if result.rows.len() == 1 {
            result.columns.push(key);
            result.numeric.push(false);
        }
        // A column is numeric when its values are JSON numbers (nulls say nothing).
        let column = result.rows.last().map_or(0, Vec::len);
        if kind.as_deref() == Some("number")
            && let Some(n) = result.numeric.get_mut(column)
        {
            *n = true;
        }
        if let Some(row) = result.rows.last_mut() {
            row.push(value);
        }
    }
    Ok(result)
}
