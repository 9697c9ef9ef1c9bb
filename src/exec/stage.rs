//! A stage's extract and validation: its file read by DuckDB (all of it, or only the records that
//! changed since its last load), every row checked, each batch of valid rows handed to the load
//! as soon as it is checked; and its error budget.

use polars::prelude::DataFrame;

use super::error::first_line;
use super::extract::{FileInput, Reader, Streamed};
use super::incremental::Changes;
use super::progress::Progress;
use super::report::{FileReport, StageReport, Status};
use super::validate::{self, Places, Reject};
use crate::exec::error::ExecError;
use crate::plan::StagePlan;
use crate::spec::model::{LoadMode, Severity};

/// What [`check_files`] made of a stage's files.
#[derive(Debug)]
pub enum Checked {
    /// Every row read, checked, and its valid rows handed on.
    Report(Box<StageReport>),
    /// The single pass found a repeated key (or a scan of several files failed): what it handed
    /// on must be undone, and the files checked again in two passes. Why, for the progress.
    Again(String),
}

impl Checked {
    /// The report of a check that cannot end `Again` (two passes).
    pub fn report(self, stage: &StagePlan) -> Result<StageReport, ExecError> {
        match self {
            Checked::Report(r) => Ok(*r),
            Checked::Again(why) => Err(ExecError::Internal(format!("stage {}: two passes over its files ended with \"{why}\"", stage.name))),
        }
    }
}

/// Extracts and validates one stage from its files (one, or a set's in name order), handing
/// each batch of valid rows to `on_valid` as soon as it is checked: memory holds one batch, not
/// the files.
///
/// With `single` (and the stage's plan has one), the files are read once
/// ([`Reader::single_pass`]): each row's line is placed once the malformed lines are known, after
/// the stream. Else in two passes, the census first.
///
/// With `changes` (a stage's one file split against its last load), only the changed records
/// are read and checked; the unchanged ones' outcome is carried over.
pub fn check_files(
    reader: &Reader,
    stage: &StagePlan,
    files: &[FileInput<'_>],
    shown: &str,
    changes: Option<&Changes>,
    single: bool,
    mut on_valid: impl FnMut(DataFrame) -> Result<(), ExecError>,
) -> Result<Checked, ExecError> {
    let mut bytes = 0;
    for f in files {
        bytes += std::fs::metadata(f.path).map_err(|e| ExecError::Source { source_name: f.shown.to_string(), message: e.to_string() })?.len();
    }
    let changed;
    let read: &[FileInput<'_>] = match (changes, files) {
        (Some(c), [one]) => {
            changed = [FileInput { path: &c.path, ..*one }];
            &changed
        }
        _ => files,
    };
    let mut report = StageReport::new(stage, shown, bytes);
    let mut rejected_records = Vec::new();
    let places = if single && stage.extract.single.is_some() {
        // Each reject's `line` holds its record number until the lines are known.
        let numbered = Places::default();
        let mut streamed = Vec::new();
        let outcome = reader.single_pass(stage, read, stage.batch_size as usize, |batch| {
            let (valid, mut rejects) = tally(&mut report, &mut rejected_records, validate::validate(stage, &numbered, batch)?)?;
            streamed.append(&mut rejects);
            on_valid(valid)
        })?;
        let staged = match outcome {
            Streamed::Read(staged) => staged,
            Streamed::Again(why) => return Ok(Checked::Again(why)),
        };
        let places = place_files(stage, files, changes, staged, &mut report);
        for r in &mut streamed {
            let (file, line) = places.place(r.line);
            (r.file, r.line) = (file.map(str::to_string), line);
        }
        report.rejects.append(&mut streamed);
        places
    } else {
        let staged = reader.stage(stage, read)?;
        let places = place_files(stage, files, changes, staged, &mut report);
        reader.typed_batches(stage, stage.batch_size as usize, |batch| {
            let (valid, mut rejects) = tally(&mut report, &mut rejected_records, validate::validate(stage, &places, batch)?)?;
            report.rejects.append(&mut rejects);
            on_valid(valid)
        })?;
        places
    };
    if let Some(c) = changes {
        report.rows_read += c.same;
        report.rows_valid += c.valid;
        report.skipped_unchanged += c.valid;
        report.rows_rejected += c.rejected;
        report.rows_warned += c.warned;
        report.count_rules(&c.rejects);
        report.rejects.extend(c.rejects.iter().cloned());
    }
    // Each rejected row's fields as read, with its rejects.
    report.rejected_records = rejected_records.clone();
    if !rejected_records.is_empty() && stage.reject_record_bytes > 0 {
        let mut fields: std::collections::HashMap<(Option<&str>, u64), String> = std::collections::HashMap::new();
        for (record, json) in reader.rejected_fields(stage, &rejected_records)? {
            // A row holding a NUL byte keeps no record: PostgreSQL's jsonb holds none, and a
            // record written otherwise would replay another value.
            if json.len() <= stage.reject_record_bytes && !json.contains("\\u0000") {
                fields.insert(places.place(record), json);
            }
        }
        for r in report.rejects.iter_mut().filter(|r| r.severity == Severity::Error && r.record.is_none()) {
            r.record = fields.get(&(r.file.as_deref(), r.line)).cloned();
        }
    }
    // In file order, then line order (a rejected row is one line of one file).
    let order = |r: &Reject| r.file.as_deref().and_then(|f| files.iter().position(|x| x.shown == f)).unwrap_or(0);
    report.rejects.sort_by(|a, b| (order(a), a.line, &a.rule, &a.column).cmp(&(order(b), b.line, &b.rule, &b.column)));
    if stage.source.set.is_some() {
        count_files(&mut report, files);
    }
    report.hints = spec_hints(stage, &report);
    if !report.balanced() {
        return Err(ExecError::Internal(format!(
            "stage {}: {} rows read but {} valid + {} rejected",
            stage.name, report.rows_read, report.rows_valid, report.rows_rejected
        )));
    }
    Ok(Checked::Report(Box::new(report)))
}

/// Adds a validated batch's counts to the report and its rejected records to `rejected`; the
/// rows to write, and the batch's rejects.
fn tally(report: &mut StageReport, rejected: &mut Vec<u64>, v: validate::Validated) -> Result<(DataFrame, Vec<Reject>), ExecError> {
    rejected.extend(v.rejected_records);
    report.rows_valid += v.valid_rows;
    report.skipped_unchanged += v.unchanged;
    report.rows_rejected += v.rejected_rows;
    report.rows_warned += v.warned_rows;
    report.count_rules(&v.rejects);
    if let Some(rows) = &v.totaled {
        super::contracts::Total::add(&mut report.totals, rows)?;
    }
    Ok((v.valid, v.rejects))
}

/// Where each staged record is, from each file's record count and malformed lines (`staged`);
/// the malformed lines are rejects of the report, and each file's records read are counted.
fn place_files(stage: &StagePlan, files: &[FileInput<'_>], changes: Option<&Changes>, staged: Vec<(u64, Vec<super::extract::CsvError>)>, report: &mut StageReport) -> Places {
    let set = stage.source.set.is_some();
    let mut places = Places::default();
    let mut before = 0;
    for (f, (rows, csv_errors)) in files.iter().zip(staged) {
        report.rows_read += rows + csv_errors.len() as u64;
        report.rows_rejected += csv_errors.len() as u64;
        let malformed = csv_errors.iter().map(|e| e.line).collect();
        let lines = match changes {
            None => validate::Lines::new(stage, f.path, malformed),
            Some(c) => validate::Lines::mapped(stage, malformed, c.lines.clone()),
        };
        for e in csv_errors {
            *report.rejects_by_rule.entry("csv".into()).or_default() += 1;
            report.rejects.push(Reject {
                file: set.then(|| f.shown.to_string()),
                line: lines.original(e.line),
                column: e.column,
                rule: "csv".into(),
                value: e.text.map(|t| t.trim_matches(['\r', '\n']).to_string()),
                message: format!("{}: {}", e.kind.to_lowercase(), first_line(&e.message)),
                severity: Severity::Error,
                record: None,
            });
        }
        if set {
            places.push(before, lines, f.shown);
            report.files.push(FileReport::read(f.shown, rows));
        } else {
            places = Places::one(lines);
        }
        before += rows;
    }
    places
}

/// [`check_files`] of a stage's one file, in two passes.
pub fn check_stage(
    reader: &Reader,
    stage: &StagePlan,
    path: &std::path::Path,
    shown: &str,
    changes: Option<&Changes>,
    on_valid: impl FnMut(DataFrame) -> Result<(), ExecError>,
) -> Result<StageReport, ExecError> {
    check_files(reader, stage, &[FileInput { path, shown, captures: &[] }], shown, changes, false, on_valid)?.report(stage)
}

/// [`check_files`] of a stage's one file in the single pass a load into PostgreSQL makes (the
/// stage's plan must have one: `ExtractSql::single`).
pub fn check_stage_once(
    reader: &Reader,
    stage: &StagePlan,
    path: &std::path::Path,
    shown: &str,
    on_valid: impl FnMut(DataFrame) -> Result<(), ExecError>,
) -> Result<Checked, ExecError> {
    if stage.extract.single.is_none() {
        return Err(ExecError::Internal(format!("stage {}: its plan reads in two passes only", stage.name)));
    }
    check_files(reader, stage, &[FileInput { path, shown, captures: &[] }], shown, None, true, on_valid)
}

/// Each file's rows read, valid and rejected (its rejected rows: the lines an error check
/// rejected), which must add up to the stage's.
fn count_files(report: &mut StageReport, files: &[FileInput<'_>]) {
    let mut rejected: std::collections::BTreeSet<(usize, u64)> = std::collections::BTreeSet::new();
    for r in report.rejects.iter().filter(|r| r.severity == Severity::Error) {
        if let Some(i) = r.file.as_deref().and_then(|f| files.iter().position(|x| x.shown == f)) {
            rejected.insert((i, r.line));
        }
    }
    let staged: Vec<u64> = report.files.iter().map(|f| f.rows_read).collect();
    let malformed: Vec<u64> = files
        .iter()
        .map(|f| report.rejects.iter().filter(|r| r.rule == "csv" && r.file.as_deref() == Some(f.shown)).count() as u64)
        .collect();
    for (i, f) in report.files.iter_mut().enumerate() {
        f.rows_read = staged[i] + malformed[i];
        f.rows_rejected = rejected.iter().filter(|(j, _)| *j == i).count() as u64;
        f.rows_valid = f.rows_read - f.rows_rejected.min(f.rows_read);
    }
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
    files: &[FileInput<'_>],
    shown: &str,
    changes: Option<&Changes>,
    single: bool,
    progress: &Progress,
    mut stage_batch: impl FnMut(DataFrame) -> Result<(), ExecError>,
) -> Result<Checked, ExecError> {
    let mut staged = 0u64;
    let mut first = true;
    let report = check_files(reader, st, files, shown, changes, single, |batch| {
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
    });
    progress.staged(&st.name);
    report
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
    let empties = match stage.target.mode {
        LoadMode::Replace => Some(("replace", String::new())),
        LoadMode::Snapshot => Some(("snapshot", " of the date it loads".to_string())),
        LoadMode::History if stage.target.history.as_ref().is_some_and(|h| h.close) => Some(("history", " of its current versions".to_string())),
        _ => None,
    };
    if let Some((mode, what_part)) = empties.filter(|_| !stage.target.allow_empty && report.rows_valid == 0) {
        let what = if report.rows_read == 0 { "the file has no rows".to_string() } else { format!("none of its {} rows is valid", report.rows_read) };
        report.status = Status::Refused;
        report.refused = Some(format!(
            "{what}, and `mode: {mode}` would empty {}{what_part}: the table keeps its rows. \
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
