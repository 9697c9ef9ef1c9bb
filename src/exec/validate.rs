//! Row validation: evaluates a stage's compiled Polars checks on a batch, splits it into the
//! rows to load and the rejects (each with its line, column, rule, value and message).

use polars::prelude::*;
use serde::Serialize;

use crate::exec::error::ExecError;
use crate::plan::StagePlan;
use crate::plan::extract::{RECORD, UNCHANGED, duplicate_column, uncast_column};
use crate::spec::model::Severity;

/// One reason one input row was not loaded (or, for `warn` rules, was flagged).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reject {
    /// Line in the source file (the header is line 1).
    pub line: u64,
    /// The column the check is about, when it is about one.
    pub column: Option<String>,
    /// The check: a facet (`not_null`, `type`, `enum`, ...), `duplicate_key`, `references`,
    /// `csv` for a malformed line, or a rule's name.
    pub rule: String,
    /// The offending value as text.
    pub value: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Whether the row was rejected (error) or only flagged (warn).
    pub severity: Severity,
}

/// What validation made of one batch.
pub struct Validated {
    /// The rows to write: those that pass every error check and differ from the target's current
    /// row with their key; only the spec's columns (plus the record number).
    pub valid: DataFrame,
    /// Rows that pass every error check (written or not).
    pub valid_rows: u64,
    /// Valid rows equal to the target's current row with their key: not written again.
    pub unchanged: u64,
    /// Every failed check of every row.
    pub rejects: Vec<Reject>,
    /// Rows rejected.
    pub rejected_rows: u64,
    /// Rows flagged by warn rules (and still loaded).
    pub warned_rows: u64,
}

/// Maps the record numbers of staged rows to lines of the file: the header and the malformed
/// lines DuckDB's reader set aside come before some records and shift them.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    header: u64,
    malformed: Vec<u64>,
    /// For a file of some of another file's records: the other file's line of each data line.
    original: Option<Vec<u64>>,
}

impl Lines {
    /// For a stage's file whose malformed lines are `malformed`.
    pub fn new(stage: &StagePlan, mut malformed: Vec<u64>) -> Lines {
        malformed.sort_unstable();
        Lines { header: u64::from(stage.csv.header), malformed, original: None }
    }

    /// For a file holding some records of another, `original` giving the other file's line of
    /// each of its data lines: lines are reported as the other file's.
    pub fn mapped(stage: &StagePlan, malformed: Vec<u64>, original: Vec<u64>) -> Lines {
        Lines { original: Some(original), ..Lines::new(stage, malformed) }
    }

    /// The line of the `record`-th staged row.
    pub fn line(&self, record: u64) -> u64 {
        let mut line = record + self.header;
        for &bad in &self.malformed {
            if bad <= line {
                line += 1;
            } else {
                break;
            }
        }
        self.original(line)
    }

    /// The line a line of the file read stands for.
    pub fn original(&self, line: u64) -> u64 {
        match &self.original {
            Some(lines) if line > self.header => lines.get((line - self.header - 1) as usize).copied().unwrap_or(line),
            _ => line,
        }
    }
}

fn text(v: AnyValue<'_>) -> Option<String> {
    match v {
        AnyValue::Null => None,
        AnyValue::String(s) => Some(s.to_string()),
        AnyValue::StringOwned(s) => Some(s.to_string()),
        other => Some(other.to_string()),
    }
}

/// Validates one batch.
pub fn validate(stage: &StagePlan, lines: &Lines, batch: DataFrame) -> Result<Validated, ExecError> {
    let flags: Vec<Expr> = stage.checks.iter().enumerate().map(|(i, c)| c.violation.clone().alias(format!("__v{i}"))).collect();
    let flagged = batch.lazy().with_columns(flags).collect().map_err(ExecError::polars("evaluate the row checks"))?;
    let records = flagged.column(RECORD).map_err(ExecError::polars("read record numbers"))?.cast(&DataType::UInt64).map_err(ExecError::polars("read record numbers"))?;
    let records = records.u64().map_err(ExecError::polars("read record numbers"))?.clone();

    let height = flagged.height();
    let mut error_mask = BooleanChunked::full("__error".into(), false, height);
    let mut warn_mask = BooleanChunked::full("__warn".into(), false, height);
    let mut rejects = Vec::new();
    for (i, check) in stage.checks.iter().enumerate() {
        let col = flagged.column(&format!("__v{i}")).map_err(ExecError::polars("read a check"))?;
        let hits = col.bool().map_err(ExecError::polars("read a check"))?;
        if hits.sum().unwrap_or(0) == 0 {
            continue;
        }
        match check.severity {
            Severity::Error => error_mask = &error_mask | hits,
            Severity::Warn => warn_mask = &warn_mask | hits,
        }
        for (row, hit) in hits.iter().enumerate() {
            if hit != Some(true) {
                continue;
            }
            let record = records.get(row).unwrap_or(0);
            let value_of = |name: &str| flagged.column(name).ok().and_then(|c| c.get(row).ok()).and_then(text);
            let (value, message) = match check.rule.as_str() {
                "type" => {
                    let column = check.column.as_deref().unwrap_or("");
                    let raw = value_of(&uncast_column(column));
                    let shown = raw.clone().unwrap_or_default();
                    (raw, cast_message(stage, column, &shown))
                }
                "duplicate_key" | "unique" => {
                    let what = if check.rule == "unique" { check.column.clone().unwrap_or_default() } else { "key".to_string() };
                    let first = flagged
                        .column(&duplicate_column(&what))
                        .ok()
                        .and_then(|c| c.get(row).ok())
                        .and_then(|v| v.extract::<u64>());
                    let values: Vec<String> = check.reads.iter().map(|c| value_of(c).unwrap_or_default()).collect();
                    let first_line = first.map(|f| lines.line(f)).unwrap_or(0);
                    (Some(values.join(",")), format!("{}; the first is on line {first_line}", check.message))
                }
                _ if check.column.is_some() => (value_of(check.column.as_deref().unwrap_or("")), check.message.clone()),
                _ => {
                    let values: Vec<String> =
                        check.reads.iter().map(|c| format!("{c}={}", value_of(c).unwrap_or_else(|| "null".into()))).collect();
                    (Some(values.join(", ")), check.message.clone())
                }
            };
            rejects.push(Reject {
                line: lines.line(record),
                column: check.column.clone(),
                rule: check.rule.clone(),
                value,
                message,
                severity: check.severity,
            });
        }
    }
    rejects.sort_by_key(|r| r.line);
    let rejected_rows = error_mask.sum().unwrap_or(0) as u64;
    let warned_rows = (&warn_mask & &!&error_mask).sum().unwrap_or(0) as u64;
    let mut keep: Vec<&str> = vec![RECORD];
    keep.extend(stage.columns.iter().map(|c| c.name.as_str()));
    let unchanged = flagged
        .column(UNCHANGED)
        .map_err(ExecError::polars("read the unchanged flags"))?
        .bool()
        .map_err(ExecError::polars("read the unchanged flags"))?
        .fill_null_with_values(false)
        .map_err(ExecError::polars("read the unchanged flags"))?;
    let valid_mask = !&error_mask;
    let write_mask = &valid_mask & &!&unchanged;
    let valid_rows = valid_mask.sum().unwrap_or(0) as u64;
    let written = write_mask.sum().unwrap_or(0) as u64;
    let valid = flagged
        .filter(&write_mask)
        .map_err(ExecError::polars("keep the valid rows"))?
        .select(keep)
        .map_err(ExecError::polars("keep the spec's columns"))?;
    Ok(Validated { valid, valid_rows, unchanged: valid_rows - written, rejects, rejected_rows, warned_rows })
}

/// Why a value did not cast, as precisely as can be told.
fn cast_message(stage: &StagePlan, column: &str, raw: &str) -> String {
    let ty = stage.columns.iter().find(|c| c.name == column).map(|c| c.ty);
    if let Some(crate::spec::model::ColumnType::Decimal { precision, scale }) = ty {
        if let Some(d) = crate::spec::model::parse_decimal(raw) {
            let d = d.normalize();
            if d.scale() > u32::from(scale) {
                return format!("`{raw}` has more than {scale} decimal places (decimal({precision},{scale}))");
            }
            return format!("`{raw}` is out of range for decimal({precision},{scale})");
        }
        return format!("`{raw}` is not a number");
    }
    format!("`{raw}` is not a valid {}", type_of(stage, column))
}

fn type_of(stage: &StagePlan, column: &str) -> String {
    stage.columns.iter().find(|c| c.name == column).map(|c| c.ty.to_string()).unwrap_or_default()
}
