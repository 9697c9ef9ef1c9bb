//! A stage's contracts (`checks:`) at run time: the control totals, counted over the valid rows
//! as they are staged (exact: integers and decimals as scaled 128-bit integers, never floats), and
//! each contract evaluated in the stage's transaction after its merge, before it commits.

use polars::prelude::{DataFrame, DataType};
use sqlx::Row;

use super::error::ExecError;
use super::postgres::{Tx, db, generated};
use super::report::{CheckResult, StageReport};
use crate::plan::{ContractKind, StagePlan, severity_word};
use crate::spec::model::TotalOf;

/// A `totals` contract's running total over the load's valid rows.
#[derive(Debug, Clone)]
pub struct Total {
    /// The contract's name.
    pub check: String,
    /// The column.
    pub column: String,
    /// Sum or count.
    pub of: TotalOf,
    /// The sum as a scaled integer (None once it no longer fits 128 bits).
    pub sum: Option<i128>,
    /// The sum's scale (the column's).
    pub scale: u32,
    /// Non-null values seen.
    pub count: u64,
}

impl Total {
    /// One running total per `totals` contract of the stage, at zero.
    pub fn for_stage(st: &StagePlan) -> Vec<Total> {
        st.contracts
            .iter()
            .filter_map(|c| match &c.kind {
                ContractKind::Totals { column, of, .. } => Some(Total { check: c.name.clone(), column: column.clone(), of: *of, sum: Some(0), scale: 0, count: 0 }),
                _ => None,
            })
            .collect()
    }

    /// Adds a batch of valid rows.
    pub fn add(totals: &mut [Total], batch: &DataFrame) -> Result<(), ExecError> {
        let polars = |e: polars::error::PolarsError| ExecError::Internal(format!("total a batch: {e}"));
        for t in totals.iter_mut() {
            let s = batch.column(&t.column).map_err(polars)?.as_materialized_series().clone();
            t.count += (s.len() - s.null_count()) as u64;
            if t.of == TotalOf::Count {
                continue;
            }
            let (part, scale): (Option<i128>, u32) = match s.dtype() {
                DataType::Decimal(_, scale) => {
                    let ca = s.decimal().map_err(polars)?;
                    (ca.physical().downcast_iter().flat_map(|a| a.iter().flatten().copied()).try_fold(0i128, |a, v| a.checked_add(v)), *scale as u32)
                }
                DataType::Int32 => (s.i32().map_err(polars)?.downcast_iter().flat_map(|a| a.iter().flatten().copied()).try_fold(0i128, |a, v| a.checked_add(i128::from(v))), 0),
                DataType::Int64 => (s.i64().map_err(polars)?.downcast_iter().flat_map(|a| a.iter().flatten().copied()).try_fold(0i128, |a, v| a.checked_add(i128::from(v))), 0),
                other => return Err(ExecError::Internal(format!("column {} has type {other}, which a total cannot sum", t.column))),
            };
            t.scale = scale;
            t.sum = match (t.sum, part) {
                (Some(a), Some(b)) => a.checked_add(b),
                _ => None,
            };
        }
        Ok(())
    }
}

/// The plan with each `totals` contract's manifest read: its value as the control total, or why
/// there is none (the check then fails). None when no contract has a manifest. A manifest that
/// cannot be fetched fails the run before anything loads, as a missing source does.
pub fn resolve_manifests(plan: &crate::plan::Plan, spec_dir: &std::path::Path, dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> Result<Option<crate::plan::Plan>, ExecError> {
    if !plan.stages.iter().any(|st| st.contracts.iter().any(|c| matches!(c.kind, ContractKind::Totals { manifest: Some(_), .. }))) {
        return Ok(None);
    }
    let mut resolved = plan.clone();
    for st in &mut resolved.stages {
        for c in &mut st.contracts {
            if let ContractKind::Totals { manifest: Some((connection, file, path)), equals, unresolved, .. } = &mut c.kind {
                let (shown, bytes) = super::source::read_object(plan, connection, file, spec_dir, dir, rt)?;
                match manifest_value(&bytes, path) {
                    Ok(v) => {
                        *equals = Some(v);
                        *unresolved = None;
                    }
                    Err(why) => *unresolved = Some(format!("the manifest {shown} {why}")),
                }
            }
        }
    }
    Ok(Some(resolved))
}

/// The number at a dotted `path` of a JSON document, digit for digit (a JSON number as written,
/// or a string holding one): never through a float.
fn manifest_value(bytes: &[u8], path: &str) -> Result<rust_decimal::Decimal, String> {
    use serde_json::value::RawValue;
    let text = std::str::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_string())?;
    let mut here: Box<RawValue> = serde_json::from_str(text).map_err(|e| format!("is not JSON: {e}"))?;
    for part in path.split('.') {
        let next = match here.get().trim_start().as_bytes().first() {
            Some(b'{') => serde_json::from_str::<std::collections::HashMap<String, Box<RawValue>>>(here.get()).ok().and_then(|mut m| m.remove(part)),
            Some(b'[') => part
                .parse::<usize>()
                .ok()
                .and_then(|i| serde_json::from_str::<Vec<Box<RawValue>>>(here.get()).ok().and_then(|mut v| (i < v.len()).then(|| v.swap_remove(i)))),
            _ => None,
        };
        here = next.ok_or_else(|| format!("has nothing at `{path}` (no `{part}`)"))?;
    }
    let raw = here.get().trim();
    let number = serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_string());
    crate::spec::model::parse_decimal(number.trim()).ok_or_else(|| format!("holds `{raw}` at `{path}`, not a decimal number"))
}

/// A `totals` check's control value: the number given, or the sum of the field `trailer` of
/// each file's trailer line; else why there is none.
fn control(report: &StageReport, equals: Option<rust_decimal::Decimal>, trailer: Option<u32>, unresolved: &Option<String>, delimiter: &str) -> Result<rust_decimal::Decimal, String> {
    if let Some(v) = equals {
        return Ok(v);
    }
    let Some(field) = trailer else { return Err(unresolved.clone().unwrap_or_else(|| "no control value".into())) };
    let mut sum = rust_decimal::Decimal::ZERO;
    if report.trailers.is_empty() {
        return Err("no file was read".into());
    }
    for (file, line) in &report.trailers {
        let line = line.as_deref().ok_or_else(|| format!("{file} ends without a trailer line"))?;
        let raw = line.split(delimiter).nth(field as usize - 1).unwrap_or_default();
        let value = crate::spec::model::parse_decimal(raw.trim().trim_matches('"')).ok_or_else(|| format!("field {field} of the trailer of {file} is `{raw}`, not a number"))?;
        sum = sum.checked_add(value).ok_or_else(|| "the trailers' values add up past 28 digits".to_string())?;
    }
    Ok(sum)
}

/// A scaled integer as decimal text.
fn decimal_text(v: i128, scale: u32) -> String {
    let digits = v.unsigned_abs().to_string();
    let sign = if v < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// `a` (scale `sa`) rescaled to `to`, None on overflow.
fn rescale(a: i128, sa: u32, to: u32) -> Option<i128> {
    10i128.checked_pow(to - sa).and_then(|f| a.checked_mul(f))
}

/// Whether |observed - expected| <= tolerance, all exact; None when they do not fit 128 bits.
fn within(observed: (i128, u32), expected: rust_decimal::Decimal, tolerance: rust_decimal::Decimal) -> Option<bool> {
    let s = observed.1.max(expected.scale()).max(tolerance.scale());
    let o = rescale(observed.0, observed.1, s)?;
    let e = rescale(expected.mantissa(), expected.scale(), s)?;
    let t = rescale(tolerance.mantissa().abs(), tolerance.scale(), s)?;
    Some(o.checked_sub(e)?.checked_abs()? <= t)
}

/// Evaluates the stage's contracts in its transaction, after the merge. `history`, for
/// `change_from_last`: whether the run records are on this connection (None: a dry run keeps
/// none).
pub async fn evaluate(tx: &mut Tx, spec: &str, st: &StagePlan, report: &StageReport, date: chrono::NaiveDate, history: Option<bool>) -> Result<Vec<CheckResult>, ExecError> {
    let day = date.format("%Y-%m-%d").to_string();
    let mut out = Vec::new();
    for c in &st.contracts {
        let result = |passed: bool, observed: Option<String>, expected: Option<String>, message: String| CheckResult {
            check: c.name.clone(),
            severity: severity_word(c.severity),
            passed,
            observed,
            expected,
            message,
            rows: Vec::new(),
        };
        let r = match &c.kind {
            ContractKind::RowCount { min, max, change_from_last } => {
                let n = report.rows_read;
                let mut problems = Vec::new();
                let mut expected = Vec::new();
                if let Some(min) = min {
                    expected.push(format!(">= {min}"));
                    if n < *min {
                        problems.push(format!("{n} rows, fewer than the {min} it needs"));
                    }
                }
                if let Some(max) = max {
                    expected.push(format!("<= {max}"));
                    if n > *max {
                        problems.push(format!("{n} rows, more than the {max} it allows"));
                    }
                }
                let mut noted = None;
                if let Some((ratio, sql)) = change_from_last {
                    if history.is_none() {
                        noted = Some("the change from the last load is not compared in a dry run, which keeps no run records".to_string());
                    } else if history == Some(false) {
                        problems.push("the run records are on another connection than this stage's target, so the last load's count cannot be read in its transaction: run it with its target first".to_string());
                    } else {
                        let last: Option<i64> = sqlx::query_scalar(generated(sql))
                            .bind(spec)
                            .bind(&st.name)
                            .bind(&st.target.qualified)
                            .bind(&day)
                            .fetch_optional(&mut **tx)
                            .await
                            .map_err(db("read the last load's row count"))?
                            .flatten();
                        match last {
                            None => noted = Some(format!("no load for a date before {day} to compare with")),
                            Some(last) => {
                                let last = last as f64;
                                let (lo, hi) = ((last * (1.0 - ratio)).max(0.0).ceil() as u64, (last * (1.0 + ratio)).floor() as u64);
                                expected.push(format!("between {lo} and {hi} (the last load read {last}, change at most {ratio})"));
                                if n < lo || n > hi {
                                    problems.push(format!("{n} rows against {last} in the last load for an earlier date: a change of more than {ratio} of it"));
                                }
                            }
                        }
                    }
                }
                let message = if problems.is_empty() {
                    noted.map_or_else(|| format!("{n} rows"), |why| format!("{n} rows; {why}"))
                } else {
                    problems.join("; ")
                };
                result(problems.is_empty(), Some(n.to_string()), Some(expected.join(", ")), message)
            }
            ContractKind::Totals { column, of, equals, tolerance, trailer, unresolved, .. } => match control(report, *equals, *trailer, unresolved, &st.csv.delimiter) {
                Err(why) => result(false, None, None, format!("the total of {column} has nothing to be compared with: {why}")),
                Ok(equals) => {
                let t = report.totals.iter().find(|t| t.check == c.name);
                let observed = t.and_then(|t| match t.of {
                    TotalOf::Count => Some((i128::from(t.count), 0)),
                    TotalOf::Sum => t.sum.map(|s| (s, t.scale)),
                });
                let equals = &equals;
                let expected = if tolerance.is_zero() { equals.to_string() } else { format!("{equals} ± {tolerance}") };
                let what = if *of == TotalOf::Count { format!("count of {column}") } else { format!("sum of {column}") };
                match observed.map(|o| (o, within(o, *equals, *tolerance))) {
                    Some((o, Some(ok))) => {
                        let shown = decimal_text(o.0, o.1);
                        let message = if ok { format!("{what} {shown}") } else { format!("{what} over the load's valid rows is {shown}, not {expected}") };
                        result(ok, Some(shown), Some(expected), message)
                    }
                    _ => result(false, None, Some(expected), format!("the {what} does not fit 38 digits")),
                }
                }
            },
            ContractKind::Freshness { column, max_age, newest } => {
                let row = sqlx::query(generated(newest)).bind(&day).fetch_one(&mut **tx).await.map_err(db("read the newest value of a freshness check"))?;
                let (value, stale): (Option<String>, bool) = (row.get(0), row.get(1));
                let expected = format!("no older than {} before {day}", max_age.1);
                match value {
                    None => result(false, None, Some(expected), format!("the table holds no value of {column}")),
                    Some(v) if stale => result(false, Some(v.clone()), Some(expected), format!("the newest {column} is {v}, older than {} before {day}", max_age.1)),
                    Some(v) => result(true, Some(v.clone()), Some(expected), format!("the newest {column} is {v}")),
                }
            }
            ContractKind::Sql { query } => {
                let rows = sqlx::query(generated(query)).fetch_all(&mut **tx).await.map_err(db("run a sql check"))?;
                let count: i64 = rows.first().map_or(0, |r| r.get(0));
                let mut r = result(
                    rows.is_empty(),
                    Some(count.to_string()),
                    Some("0 rows".into()),
                    if rows.is_empty() { "no offending row".into() } else { format!("{count} offending rows") },
                );
                r.rows = rows.iter().map(|row| row.get::<String, _>(1)).collect();
                r
            }
        };
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    #[test]
    fn totals_compare_exactly_at_any_scale() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        // 10^17 + 0.01 against 10^17: one cent apart, never lost to a float.
        assert_eq!(within((10_000_000_000_000_000_001, 2), d("100000000000000000.00"), Decimal::ZERO), Some(false));
        assert_eq!(within((10_000_000_000_000_000_001, 2), d("100000000000000000.01"), Decimal::ZERO), Some(true));
        assert_eq!(within((10_000_000_000_000_000_001, 2), d("100000000000000000"), d("0.01")), Some(true));
        assert_eq!(within((-5, 0), d("-5.000"), Decimal::ZERO), Some(true));
        assert_eq!(decimal_text(10_000_000_000_000_000_001, 2), "100000000000000000.01");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(7, 0), "7");
    }

    #[test]
    fn a_manifest_value_is_taken_digit_for_digit() {
        let doc = br#"{"trades": {"amount": 100000000000000000.01, "count": "12", "parts": [{"rows": 5}]}, "x": true}"#;
        assert_eq!(manifest_value(doc, "trades.amount").unwrap().to_string(), "100000000000000000.01");
        assert_eq!(manifest_value(doc, "trades.count").unwrap().to_string(), "12");
        assert_eq!(manifest_value(doc, "trades.parts.0.rows").unwrap().to_string(), "5");
        assert!(manifest_value(doc, "trades.missing").unwrap_err().contains("no `missing`"));
        assert!(manifest_value(doc, "x").unwrap_err().contains("not a decimal"));
        assert!(manifest_value(b"nope", "x").unwrap_err().contains("not JSON"));
    }
}
