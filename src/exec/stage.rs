//! A stage's extract and validation: its file read by DuckDB (all of it, or only the records that
//! changed since its last load), every row checked, each batch of valid rows handed to the load
//! as soon as it is checked; and its error budget.

use std::path::Path;

use polars::prelude::DataFrame;

use super::error::first_line;
use super::extract::Reader;
use super::incremental::Changes;
use super::progress::Progress;
use super::report::{StageReport, Status};
use super::validate::{self, Reject};
use crate::exec::error::ExecError;
use crate::plan::StagePlan;
use crate::spec::model::{LoadMode, Severity};

/// Extracts and validates one stage from a local file, handing each batch of valid rows to
/// `on_valid` as soon as it is checked: memory holds one batch, not the file.
///
/// With `changes` (the file split against the stage's last load), only the changed records are
/// read and checked; the unchanged ones' outcome is carried over.
pub fn check_stage(
    reader: &Reader,
    stage: &StagePlan,
    path: &Path,
    shown: &str,
    changes: Option<&Changes>,
    mut on_valid: impl FnMut(DataFrame) -> Result<(), ExecError>,
) -> Result<StageReport, ExecError> {
    let bytes = std::fs::metadata(path)
        .map_err(|e| ExecError::Source { source_name: shown.to_string(), message: e.to_string() })?
        .len();
    let (staged, csv_errors) = reader.stage(stage, changes.map_or(path, |c| c.path.as_path()), shown)?;
    let mut report = StageReport::new(&stage.name, shown, bytes);
    report.rows_read = staged + csv_errors.len() as u64;
    report.rows_rejected = csv_errors.len() as u64;
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
            severity: Severity::Error,
        });
    }
    if let Some(c) = changes {
        report.rows_read += c.same;
        report.rows_valid += c.valid;
        report.skipped_unchanged += c.valid;
        report.rows_rejected += c.rejected;
        report.rows_warned += c.warned;
        report.count_rules(&c.rejects);
        report.rejects.extend(c.rejects.iter().cloned());
    }
    reader.typed_batches(stage, stage.batch_size as usize, |batch| {
        let v = validate::validate(stage, &lines, batch)?;
        report.rows_valid += v.valid_rows;
        report.skipped_unchanged += v.unchanged;
        report.rows_rejected += v.rejected_rows;
        report.rows_warned += v.warned_rows;
        report.count_rules(&v.rejects);
        report.rejects.extend(v.rejects);
        on_valid(v.valid)
    })?;
    report.rejects.sort_by(|a, b| (a.line, &a.rule, &a.column).cmp(&(b.line, &b.rule, &b.column)));
    report.hints = spec_hints(stage, &report);
    if !report.balanced() {
        return Err(ExecError::Internal(format!(
            "stage {}: {} rows read but {} valid + {} rejected",
            stage.name, report.rows_read, report.rows_valid, report.rows_rejected
        )));
    }
    Ok(report)
}

/// A column whose type check fails on (nearly) every row points at the spec, not the data: a
/// wrong `format`, type or delimiter. Said once per such column.
fn spec_hints(stage: &StagePlan, report: &StageReport) -> Vec<String> {
    let read = report.rows_read;
    if read < 10 {
        return Vec::new();
    }
    let mut failed: std::collections::BTreeMap<&str, (u64, Option<&str>)> = std::collections::BTreeMap::new();
    for r in report.rejects.iter().filter(|r| r.rule == "type") {
        if let Some(c) = r.column.as_deref() {
            let e = failed.entry(c).or_insert((0, r.value.as_deref()));
            e.0 += 1;
        }
    }
    failed
        .into_iter()
        .filter(|(_, (n, _))| *n * 10 >= read * 9)
        .map(|(column, (n, example))| {
            let ty = stage.columns.iter().find(|c| c.name == column).map(|c| c.ty.to_string()).unwrap_or_default();
            let fix = if ty == "date" || ty == "timestamp" { "its `format`" } else { "its type" };
            let example = example.map(|e| format!(" (e.g. `{e}`)")).unwrap_or_default();
            format!(
                "column {column}: {n} of {read} rows are not a valid {ty}{example}: the spec is likely wrong here, not the data; check {fix}"
            )
        })
        .collect()
}

/// Extracts and validates a stage, handing each non-empty batch of rows to write to
/// `stage_batch` with progress shown: what both targets do before their merge.
pub fn stage_rows(
    reader: &Reader,
    st: &StagePlan,
    path: &Path,
    shown: &str,
    changes: Option<&Changes>,
    progress: &Progress,
    mut stage_batch: impl FnMut(DataFrame) -> Result<(), ExecError>,
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

/// Applies the error budget, and refuses a `replace` that would leave its table empty; true
/// when either holds (the stage then loads nothing).
pub fn over_budget(stage: &StagePlan, report: &mut StageReport) -> bool {
    report.rows_staged = report.rows_valid;
    if let Some(why) = budget_exceeded(stage, report) {
        report.status = Status::OverBudget;
        report.budget = Some(why);
        return true;
    }
    if stage.target.mode == LoadMode::Replace && !stage.target.allow_empty && report.rows_valid == 0 {
        let what = if report.rows_read == 0 { "the file has no rows".to_string() } else { format!("none of its {} rows is valid", report.rows_read) };
        report.status = Status::Refused;
        report.refused = Some(format!(
            "{what}, and `mode: replace` would empty {}: the table keeps its rows. \
             If that is meant, set the target's `allow_empty: true`",
            stage.target.qualified
        ));
        return true;
    }
    false
}

fn budget_exceeded(stage: &StagePlan, report: &StageReport) -> Option<String> {
    if let Some(max) = stage.max_rejects
        && report.rows_rejected > max
    {
        return Some(format!("{} rows rejected, more than max_rejects {max}", report.rows_rejected));
    }
    if let Some(ratio) = stage.max_reject_ratio {
        let got = report.rows_rejected as f64 / report.rows_read.max(1) as f64;
        if got > ratio {
            return Some(format!("{got:.4} of rows rejected, more than max_reject_ratio {ratio}"));
        }
    }
    None
}
