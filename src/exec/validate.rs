//! Row validation: evaluates a stage's compiled Polars checks on a batch, splits it into the
//! rows to load and the rejects (each with its line, column, rule, value and message).

use polars::prelude::*;
use serde::Serialize;

use crate::exec::layout::{Bytes, Layout};
use crate::exec::error::ExecError;
use crate::plan::{Check, StagePlan, Test};
use crate::spec::expr::{self, Dec, Value, Verdict};
use crate::plan::extract::{RECORD, UNCHANGED, duplicate_column, held_column, uncast_column};
use crate::spec::model::Severity;

/// One reason one input row was not loaded (or, for `warn` rules, was flagged).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reject {
    /// The file of a stage's set the row is in (None: the stage's one source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
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
    /// A rejected row's fields as read (each file column's text by its CSV header, a JSON
    /// object), kept with the reject so it can be loaded again once it passes.
    #[serde(skip)]
    pub record: Option<String>,
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
    /// With `totals` contracts: the columns they total, of every valid row (written or not).
    pub totaled: Option<DataFrame>,
    /// Every failed check of every row.
    pub rejects: Vec<Reject>,
    /// Rows rejected.
    pub rejected_rows: u64,
    /// The record numbers of the rows rejected (see `RECORD`).
    pub rejected_records: Vec<u64>,
    /// Rows flagged by warn rules (and still loaded).
    pub warned_rows: u64,
}

/// Maps the record numbers of staged rows to lines of the file: the header and the malformed
/// lines DuckDB's reader set aside come before some records and shift them, and in a file with
/// blank lines or quoted line ends, DuckDB's lines are not the file's (its [`Layout`], scanned
/// the first time a line is named).
#[derive(Debug, Clone, Default)]
pub struct Lines {
    header: u64,
    malformed: Vec<u64>,
    /// For a file of some of another file's records: the other file's line of each data line.
    original: Option<Vec<u64>>,
    /// The file read, when its lines may not be DuckDB's.
    layout: Option<std::sync::Arc<Scanned>>,
}

/// A file and its layout, scanned once when first needed.
#[derive(Debug)]
struct Scanned {
    path: std::path::PathBuf,
    bytes: Bytes,
    layout: std::sync::OnceLock<Option<Layout>>,
}

impl Scanned {
    /// The layout; None where the file is plain (or could not be read again: DuckDB's lines
    /// are then named).
    fn get(&self) -> Option<&Layout> {
        self.layout.get_or_init(|| Layout::scan(&self.path, self.bytes).ok().filter(|l| !l.is_plain())).as_ref()
    }
}

impl Lines {
    /// For a stage's file at `path` whose malformed lines are `malformed` (DuckDB's lines).
    pub fn new(stage: &StagePlan, path: &std::path::Path, mut malformed: Vec<u64>) -> Lines {
        malformed.sort_unstable();
        let layout = Bytes::of(&stage.csv).map(|bytes| std::sync::Arc::new(Scanned { path: path.to_path_buf(), bytes, layout: Default::default() }));
        Lines { header: u64::from(stage.csv.header), malformed, original: None, layout }
    }

    /// For a file holding some records of another, `original` giving the other file's line of
    /// each of its data lines: lines are reported as the other file's. (Such a file is split
    /// from one whose lines are DuckDB's: the split gives up on a blank line or a quoted line
    /// end.)
    pub fn mapped(stage: &StagePlan, mut malformed: Vec<u64>, original: Vec<u64>) -> Lines {
        malformed.sort_unstable();
        Lines { header: u64::from(stage.csv.header), malformed, original: Some(original), layout: None }
    }

    /// The line of the `record`-th staged row.
    pub fn line(&self, record: u64) -> u64 {
        match self.layout.as_ref().and_then(|s| s.get()) {
            Some(layout) => layout.physical(layout.nth_kept(record + self.header, &self.malformed)),
            None => {
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
        }
    }

    /// The line of the file a line DuckDB read (a malformed one) stands for.
    pub fn original(&self, line: u64) -> u64 {
        match (&self.original, self.layout.as_ref().and_then(|s| s.get())) {
            (Some(lines), _) if line > self.header => lines.get((line - self.header - 1) as usize).copied().unwrap_or(line),
            (_, Some(layout)) => layout.physical(line),
            _ => line,
        }
    }
}

/// Where each staged record came from: one file's [`Lines`], or for a set, each file's, its
/// records after those of the files before it.
#[derive(Debug, Clone, Default)]
pub struct Places {
    files: Vec<Placed>,
}

#[derive(Debug, Clone)]
struct Placed {
    /// Records staged from the files before it.
    before: u64,
    lines: Lines,
    /// The file as shown (None: the stage's one source).
    name: Option<String>,
}

impl Places {
    /// A stage's one source.
    pub fn one(lines: Lines) -> Places {
        Places { files: vec![Placed { before: 0, lines, name: None }] }
    }

    /// Adds the next file of a set, after `before` records of the files before it.
    pub fn push(&mut self, before: u64, lines: Lines, name: &str) {
        self.files.push(Placed { before, lines, name: Some(name.to_string()) });
    }

    /// The file (None: the stage's one source) and line of the `record`-th staged row.
    pub fn place(&self, record: u64) -> (Option<&str>, u64) {
        let i = self.files.partition_point(|p| p.before < record).saturating_sub(1);
        match self.files.get(i) {
            Some(p) => (p.name.as_deref(), p.lines.line(record - p.before)),
            None => (None, record),
        }
    }
}

fn text(v: AnyValue<'_>) -> Option<String> {
    match v {
        AnyValue::Null => None,
        AnyValue::String(s) => Some(shown(s)),
        AnyValue::StringOwned(s) => Some(shown(&s)),
        other => Some(other.to_string()),
    }
}

/// A value as a reject shows and keeps it: a NUL byte written `\0` (no PostgreSQL text, nor
/// the rejects' table, holds one).
pub fn shown(s: &str) -> String {
    s.replace('\0', "\\0")
}

/// Validates one batch.
pub fn validate(stage: &StagePlan, places: &Places, batch: DataFrame) -> Result<Validated, ExecError> {
    let flags: Vec<Expr> = stage
        .checks
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match &c.test {
            Test::Frame(violation) => Some(violation.clone().alias(format!("__v{i}"))),
            Test::Rule { .. } => None,
        })
        .collect();
    let flagged = batch.lazy().with_columns(flags).collect().map_err(ExecError::polars("evaluate the row checks"))?;
    let records = flagged.column(RECORD).map_err(ExecError::polars("read record numbers"))?.cast(&DataType::UInt64).map_err(ExecError::polars("read record numbers"))?;
    let records = records.u64().map_err(ExecError::polars("read record numbers"))?.clone();

    let height = flagged.height();
    let mut error_mask = vec![false; height];
    let mut warn_mask = vec![false; height];
    let mut rejects = Vec::new();
    for (i, check) in stage.checks.iter().enumerate() {
        let value_of = |row: usize, name: &str| flagged.column(name).ok().and_then(|c| c.get(row).ok()).and_then(text);
        // (row, message) of each row that fails the check.
        let hits: Vec<(usize, Option<String>)> = match &check.test {
            Test::Frame(_) => {
                let col = flagged.column(&format!("__v{i}")).map_err(ExecError::polars("read a check"))?;
                let hits = col.bool().map_err(ExecError::polars("read a check"))?;
                hits.iter().enumerate().filter(|(_, h)| *h == Some(true)).map(|(row, _)| (row, None)).collect()
            }
            Test::Rule { expr, tolerance } => rule_failures(&flagged, check, expr, *tolerance)?,
        };
        for (row, computed) in hits {
            match check.severity {
                Severity::Error => error_mask[row] = true,
                Severity::Warn => warn_mask[row] = true,
            }
            let record = records.get(row).unwrap_or(0);
            let (value, message) = match check.rule.as_str() {
                _ if computed.is_some() => {
                    let values: Vec<String> =
                        check.reads.iter().map(|c| format!("{c}={}", value_of(row, c).unwrap_or_else(|| "null".into()))).collect();
                    (Some(values.join(", ")), computed.unwrap_or_default())
                }
                "type" if type_of(stage, check.column.as_deref().unwrap_or("")) == "string" => {
                    let raw = value_of(row, check.column.as_deref().unwrap_or(""));
                    let message = format!("`{}` holds a NUL byte (written \\0 here), which PostgreSQL text cannot hold", raw.clone().unwrap_or_default());
                    (raw, message)
                }
                "type" => {
                    let column = check.column.as_deref().unwrap_or("");
                    let raw = value_of(row, &uncast_column(column));
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
                    let values: Vec<String> = check.reads.iter().map(|c| value_of(row, c).unwrap_or_default()).collect();
                    let (first_file, first_line) = first.map(|f| places.place(f)).unwrap_or((None, 0));
                    let of = match first_file {
                        Some(f) if Some(f) != places.place(record).0 => format!(" of {f}"),
                        _ => String::new(),
                    };
                    (Some(values.join(",")), format!("{}; the first is on line {first_line}{of}", check.message))
                }
                "unique_in_table" => {
                    let column = check.column.as_deref().unwrap_or("");
                    let by = value_of(row, &held_column(column)).unwrap_or_default();
                    let message = if by.is_empty() { check.message.clone() } else { format!("{}, key {by}", check.message) };
                    (value_of(row, column), message)
                }
                _ => (value_of(row, check.column.as_deref().unwrap_or("")), check.message.clone()),
            };
            let (file, line) = places.place(record);
            rejects.push(Reject {
                file: file.map(str::to_string),
                line,
                column: check.column.clone(),
                rule: check.rule.clone(),
                value,
                message,
                severity: check.severity,
                record: None,
            });
        }
    }
    let error_mask = BooleanChunked::from_slice("__error".into(), &error_mask);
    let warn_mask = BooleanChunked::from_slice("__warn".into(), &warn_mask);
    rejects.sort_by(|a, b| (a.line, &a.rule, &a.column).cmp(&(b.line, &b.rule, &b.column)));
    // (A set's rejects are put in file order by the stage.)
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
    let totaled = match totaled_columns(stage) {
        columns if columns.is_empty() => None,
        columns => Some(
            flagged
                .select(columns)
                .map_err(ExecError::polars("keep the totaled columns"))?
                .filter(&valid_mask)
                .map_err(ExecError::polars("keep the valid rows"))?,
        ),
    };
    let valid = flagged
        .filter(&write_mask)
        .map_err(ExecError::polars("keep the valid rows"))?
        .select(keep)
        .map_err(ExecError::polars("keep the spec's columns"))?;
    let rejected_records = error_mask.iter().zip(records.iter()).filter(|(e, _)| *e == Some(true)).filter_map(|(_, r)| r).collect();
    Ok(Validated { valid, valid_rows, unchanged: valid_rows - written, totaled, rejects, rejected_rows, rejected_records, warned_rows })
}

/// The columns the stage's `totals` contracts add up, each once.
fn totaled_columns(stage: &StagePlan) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for c in &stage.contracts {
        if let crate::plan::ContractKind::Totals { column, .. } = &c.kind
            && !out.contains(&column.as_str())
        {
            out.push(column);
        }
    }
    out
}

/// The rows of a batch that fail a rule, each with its reject message: the rule's message and
/// the values of the comparison that failed, or why the rule could not be computed.
fn rule_failures(
    frame: &DataFrame,
    check: &Check,
    rule: &crate::spec::expr::Expr,
    tolerance: Option<Dec>,
) -> Result<Vec<(usize, Option<String>)>, ExecError> {
    let columns: Vec<Vec<Value<'_>>> = check.reads.iter().map(|c| values(frame, c)).collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for row in 0..frame.height() {
        let value_of = |name: &str| {
            check.reads.iter().position(|c| c == name).and_then(|i| columns[i].get(row).cloned()).unwrap_or(Value::Null)
        };
        match expr::check(rule, tolerance, &value_of) {
            Verdict::Pass => {}
            Verdict::Fail { sides } => {
                let message = match sides {
                    Some(sides) => format!("{}; {sides}", check.message),
                    None => check.message.clone(),
                };
                out.push((row, Some(message)));
            }
            Verdict::Error(e) => out.push((row, Some(format!("rule {} could not be computed: {e}", check.rule)))),
        }
    }
    Ok(out)
}

/// A column of a batch as rule values.
fn values<'a>(frame: &'a DataFrame, name: &str) -> Result<Vec<Value<'a>>, ExecError> {
    let what = "read a column for a rule";
    let s = frame.column(name).map_err(ExecError::polars(what))?.as_materialized_series();
    Ok(match s.dtype() {
        DataType::Decimal(_, _) => {
            let ca = s.decimal().map_err(ExecError::polars(what))?;
            let scale = ca.scale() as u32;
            ca.physical()
                .iter()
                .map(|m| match m {
                    None => Ok(Value::Null),
                    Some(m) => Dec::new(m, scale).map(Value::Num).map_err(|e| ExecError::Internal(format!("{name}: {e}"))),
                })
                .collect::<Result<_, _>>()?
        }
        DataType::String => s.str().map_err(ExecError::polars(what))?.iter().map(|v| v.map_or(Value::Null, |t| Value::Text(t.into()))).collect(),
        DataType::Boolean => s.bool().map_err(ExecError::polars(what))?.iter().map(|v| v.map_or(Value::Null, Value::Bool)).collect(),
        DataType::Float32 | DataType::Float64 => {
            let f = s.cast(&DataType::Float64).map_err(ExecError::polars(what))?;
            f.f64().map_err(ExecError::polars(what))?.iter().map(|v| v.map_or(Value::Null, Value::Float)).collect()
        }
        DataType::Date => {
            let d = s.date().map_err(ExecError::polars(what))?;
            d.physical().iter().map(|v| v.map_or(Value::Null, Value::Date)).collect()
        }
        DataType::Datetime(_, _) => {
            let t = s.cast(&DataType::Datetime(TimeUnit::Microseconds, None)).map_err(ExecError::polars(what))?;
            let t = t.datetime().map_err(ExecError::polars(what))?;
            t.physical().iter().map(|v| v.map_or(Value::Null, Value::Timestamp)).collect()
        }
        dt if dt.is_integer() => {
            let i = s.cast(&DataType::Int64).map_err(ExecError::polars(what))?;
            i.i64().map_err(ExecError::polars(what))?.iter().map(|v| v.map_or(Value::Null, |v| Value::Num(Dec::int(v)))).collect()
        }
        DataType::Null => vec![Value::Null; s.len()],
        other => return Err(ExecError::Internal(format!("a rule reads `{name}`, a {other} column, which rules cannot read"))),
    })
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
        // Too many digits for an exact parse here (more than 28): counted in the text.
        return match crate::spec::model::decimal_places(raw) {
            Some(places) if places > i64::from(scale) => format!("`{raw}` has more than {scale} decimal places (decimal({precision},{scale}))"),
            Some(_) => format!("`{raw}` is out of range for decimal({precision},{scale})"),
            None => format!("`{raw}` is not a number"),
        };
    }
    if let Some(c) = stage.columns.iter().find(|c| c.name == column && c.ty.is_temporal()) {
        if let Some(why) = temporal_problem(c.ty, c.formats.is_empty(), raw) {
            return why;
        }
        let formats = if c.formats.is_empty() {
            match c.ty {
                crate::spec::model::ColumnType::Date => "YYYY-MM-DD".to_string(),
                _ => "YYYY-MM-DD HH:MM:SS[.ffffff]".to_string(),
            }
        } else {
            c.formats.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(" or ")
        };
        return format!("`{raw}` is not a {} in the format {formats}", c.ty);
    }
    use crate::spec::model::ColumnType;
    let places = crate::spec::model::decimal_places(raw);
    match (ty, places) {
        (Some(t @ (ColumnType::Int32 | ColumnType::Int64)), Some(p)) if p > 0 => format!("`{raw}` has a fraction ({t} holds whole numbers)"),
        (Some(t @ (ColumnType::Int32 | ColumnType::Int64 | ColumnType::Float64)), Some(_)) => format!("`{raw}` is out of range for {t}"),
        _ => format!("`{raw}` is not a valid {}", type_of(stage, column)),
    }
}

/// Why a date or timestamp text that reads as one did not cast, when it did: infinite, outside
/// the years PostgreSQL holds, or (a timestamp in DuckDB's own text) finer than a microsecond.
fn temporal_problem(ty: crate::spec::model::ColumnType, own_text: bool, raw: &str) -> Option<String> {
    use crate::spec::model::ColumnType;
    let t = raw.trim().to_ascii_lowercase();
    if t.trim_start_matches(['+', '-']).starts_with("inf") {
        return Some(format!("`{raw}` is not a finite {ty} (leave the field empty for no {ty})"));
    }
    use crate::plan::extract::{EARLIEST_YEAR, LAST_YEAR};
    let (negative, rest) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.as_str()),
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if let Ok(year) = digits.parse::<i64>() {
        let bc = t.ends_with(" bc") || t.contains("(bc)");
        let year = if negative { -year } else if bc { 1 - year } else { year };
        if !(EARLIEST_YEAR..=LAST_YEAR).contains(&year) {
            return Some(format!("`{raw}` is out of range for {ty} (the years {} BC to {LAST_YEAR} AD load)", 1 - EARLIEST_YEAR));
        }
    }
    if ty == ColumnType::Timestamp
        && own_text
        && let Some(point) = t.find('.')
    {
        let fraction: String = t[point + 1..].chars().take_while(char::is_ascii_digit).collect();
        if fraction.trim_end_matches('0').len() > 6 {
            return Some(format!("`{raw}` has more than 6 digits of a second (a timestamp keeps microseconds)"));
        }
    }
    None
}

fn type_of(stage: &StagePlan, column: &str) -> String {
    stage.columns.iter().find(|c| c.name == column).map(|c| c.ty.to_string()).unwrap_or_default()
}
