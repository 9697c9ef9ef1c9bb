//! The analytics queries run after the stages: a PostgreSQL target's at once, each on a
//! connection of its own in a transaction rolled back after it, DuckDB's one after another; every
//! value as the database prints it. A query that fails is reported as failed, beside the others'
//! results: the loads before it are committed and stay so.

use indexmap::IndexMap;
use sqlx::Row;

use super::postgres::{arguments, generated};
use super::report::{AnalyticResult, CheckResult};
use super::context::Target;
use super::error::ExecError;
use crate::plan::{AnalyticPlan, Plan};

/// Runs the plan's analytics, in the plan's order; each failure is kept in its result.
pub fn run_all(plan: &Plan, targets: &IndexMap<String, Target<'_>>) -> Vec<AnalyticResult> {
    let mut results: Vec<Option<Result<AnalyticResult, ExecError>>> = plan.analytics.iter().map(|_| None).collect();
    for (name, target) in targets {
        let Target::Pg(pg) = target else { continue };
        let mine: Vec<usize> = (0..plan.analytics.len()).filter(|&i| plan.analytics[i].connection == *name).collect();
        let queries = mine.iter().map(|&i| run_pg(pg.pool(), &plan.analytics[i]));
        for (i, r) in mine.iter().zip(pg.block(futures_util::future::join_all(queries))) {
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
