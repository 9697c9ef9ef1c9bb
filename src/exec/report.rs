//! What a run did: a report per stage (rows read, valid, rejected, loaded, its rejects, whether
//! it was reused) and for the run, with the status of each and the exit code they mean. The CLI
//! renders them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::reuse::fingerprint::Fingerprint;
use super::validate::Reject;
use crate::exit;
use crate::spec::model::Severity;

/// How a stage or a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Still loading (a run killed mid-way stays so in the records).
    Running,
    /// Every row loaded.
    Succeeded,
    /// Loaded, some rows rejected.
    Rejected,
    /// More rows rejected than the error budget allows: nothing of the stage loaded.
    OverBudget,
    /// The data was refused whole (an empty file for a `replace` target): nothing of the stage
    /// loaded.
    Refused,
    /// An error ended it.
    Failed,
    /// A contract (`checks:`) of severity `error` failed: the stage rolled back, its table as it
    /// was; exit 5.
    ContractFailed,
    /// Its process ended without finishing it (found by a later run).
    Abandoned,
    /// A file set it needed had no file (and it did not wait for one): exit 3.
    Missing,
    /// A file set it needed still had no file when its `wait` ended: exit 3.
    Late,
}

impl Status {
    /// The word recorded in `etl_runs` and `etl_run_stages` and shown in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Rejected => "rejected",
            Status::OverBudget => "over_budget",
            Status::Refused => "refused",
            Status::Failed => "failed",
            Status::ContractFailed => "contract_failed",
            Status::Abandoned => "abandoned",
            Status::Missing => "missing",
            Status::Late => "late",
        }
    }

    /// Whether the stage's data was refused and nothing of it loaded (over its error budget, or
    /// refused whole): the run's later stages do not run, and the exit code is 5.
    pub fn loaded_nothing(self) -> bool {
        matches!(self, Status::OverBudget | Status::Refused | Status::ContractFailed)
    }

    /// How bad an end it is, for a stage whose files end each their own way: the stage's is
    /// the worst (as `RECORD_STAGE` ranks them).
    fn rank(self) -> u8 {
        match self {
            Status::Running => 0,
            Status::Succeeded => 1,
            Status::Rejected => 2,
            Status::Missing => 3,
            Status::Late => 4,
            Status::OverBudget => 5,
            Status::Refused => 6,
            Status::ContractFailed => 7,
            Status::Abandoned => 8,
            Status::Failed => 9,
        }
    }

    /// The status a recorded word stands for.
    pub fn from_word(word: &str) -> Option<Status> {
        [Status::Running, Status::Succeeded, Status::Rejected, Status::OverBudget, Status::Refused, Status::ContractFailed, Status::Failed, Status::Abandoned, Status::Missing, Status::Late].into_iter().find(|s| s.as_str() == word)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a load did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Merged {
    /// New rows.
    pub inserted: u64,
    /// Changed rows.
    pub updated: u64,
    /// Rows equal to what the table held.
    pub unchanged: u64,
    /// Rows deleted: every row the table held (`mode: replace`), the rows of the dates loaded
    /// (`mode: snapshot`), the rows whose key the file lacks (`delete_missing: hard`).
    pub deleted: u64,
    /// Rows whose key the file lacks, flagged `_deleted_at` (`delete_missing: soft`).
    pub flagged: u64,
    /// Flagged rows whose key returned, their flag cleared.
    pub restored: u64,
    /// Rows of other tables deleted with the keys they referenced (`on_delete: cascade`).
    pub cascaded: u64,
    /// `mode: history`: keys given a version from the load's date.
    pub opened: u64,
    /// `mode: history`: keys whose version on the load's date was closed there.
    pub closed: u64,
    /// An upsert: the sum of the hash of the `xmin` each updated row had before (for the
    /// table's state after the merge; not reported).
    #[serde(skip)]
    pub replaced_xmins: Option<i128>,
}

/// What happened to one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// Stage name.
    pub stage: String,
    /// The table it loads into (quoted, qualified), as the run records keep it.
    #[serde(skip)]
    pub target: String,
    /// The source as the user knows it (`s3://bucket/key` or a path).
    pub source: String,
    /// Size of the source in bytes.
    pub bytes: u64,
    /// The object's ETag (S3), if any.
    pub etag: Option<String>,
    /// Data rows in the file (malformed lines included).
    pub rows_read: u64,
    /// Rows that passed every check.
    pub rows_valid: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
    /// Valid rows flagged by `warn` rules.
    pub rows_warned: u64,
    /// What the load did (None: not loaded, e.g. a dry run or over budget).
    pub loaded: Option<Merged>,
    /// Valid rows the load would write (a dry run) or wrote.
    pub rows_staged: u64,
    /// Valid rows equal to the target's current rows, found in the extract and not written.
    #[serde(skip)]
    pub skipped_unchanged: u64,
    /// How it ended.
    pub status: Status,
    /// Why the stage went over its error budget.
    pub budget: Option<String>,
    /// Why the stage's data was refused whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Whether the stage's record was written already, in the stage's own transaction.
    #[serde(skip)]
    pub recorded: bool,
    /// What the rejects suggest about the spec (a column that fails its type on nearly every
    /// row).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
    /// Rejected rows by rule (a row failing two rules counts under both).
    pub rejects_by_rule: BTreeMap<String, u64>,
    /// Every reject, in line order.
    #[serde(skip)]
    pub rejects: Vec<Reject>,
    /// The stage was skipped: its source, spec and tables are as the load of this run left
    /// them, so its outcome (counts, rejects) is that load's.
    pub unchanged_since_run: Option<i64>,
    /// What the load depended on, recorded for the next run to compare.
    #[serde(skip)]
    pub fingerprint: Option<Fingerprint>,
    /// A set's files: each one read, and each one left out as already loaded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileReport>,
    /// The stage's contracts (`checks:`), each with what it found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// Per `totals` contract, the total of the load's valid rows (counted as they are staged).
    #[serde(skip)]
    pub totals: Vec<crate::exec::contracts::Total>,
    /// A replay (`etl rejects replay`): the run whose rejects it replayed, and the rows it loaded
    /// (their file and line in that run), whose rejects are marked replayed with its record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<i64>,
    /// See `replay_of`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replayed: Vec<(String, i64)>,
    /// The record numbers of the rows rejected (see `plan::extract::RECORD`).
    #[serde(skip)]
    pub rejected_records: Vec<u64>,
    /// With `source.trailer`: each file read and its trailer line (None: it had none).
    #[serde(skip)]
    pub trailers: Vec<(String, Option<String>)>,
    /// How long the stage took to read, check and load (its files were fetched before).
    pub seconds: f64,
    /// When its work began (recorded as its `started_at`).
    #[serde(skip)]
    pub started: chrono::DateTime<chrono::Utc>,
}

/// What a stage's contract found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// The check's name.
    pub check: String,
    /// `error` or `warn`.
    pub severity: &'static str,
    /// Whether it held.
    pub passed: bool,
    /// What the load or table showed (a count, a total, the newest value).
    pub observed: Option<String>,
    /// What the check wants.
    pub expected: Option<String>,
    /// One line saying it.
    pub message: String,
    /// A `sql` check's offending rows (up to 20), each as JSON.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<String>,
}

/// One file of a stage's set.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// The file as the user knows it (`s3://bucket/key` or a path).
    pub file: String,
    /// What became of it: `loaded`, `already_loaded` (its content was loaded before: not read),
    /// or `not_loaded` (read, but the stage loaded nothing: a dry run, over budget, refused).
    pub status: &'static str,
    /// Its size in bytes.
    pub bytes: u64,
    /// The SHA-256 of its stored bytes, when copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Data rows read (malformed lines included); 0 when not read.
    pub rows_read: u64,
    /// Rows that passed every check.
    pub rows_valid: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
    /// For a file already loaded: the run that loaded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_by: Option<i64>,
    /// In a distributed run (`etl run --distribute`): the worker that loaded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl FileReport {
    /// A file read, with `staged` rows staged (the stage completes the counts).
    pub fn read(file: &str, staged: u64) -> FileReport {
        FileReport { file: file.to_string(), status: "not_loaded", bytes: 0, sha256: None, rows_read: staged, rows_valid: 0, rows_rejected: 0, loaded_by: None, worker: None }
    }

    /// A file whose content run `by` loaded already.
    pub fn already(file: &str, bytes: u64, sha256: Option<String>, by: i64) -> FileReport {
        FileReport { file: file.to_string(), status: "already_loaded", bytes, sha256, rows_read: 0, rows_valid: 0, rows_rejected: 0, loaded_by: Some(by), worker: None }
    }
}

impl Merged {
    /// Both merges' counts added up.
    fn and(self, o: Merged) -> Merged {
        Merged {
            inserted: self.inserted + o.inserted,
            updated: self.updated + o.updated,
            unchanged: self.unchanged + o.unchanged,
            deleted: self.deleted + o.deleted,
            flagged: self.flagged + o.flagged,
            restored: self.restored + o.restored,
            cascaded: self.cascaded + o.cascaded,
            opened: self.opened + o.opened,
            closed: self.closed + o.closed,
            replaced_xmins: None,
        }
    }
}

impl StageReport {
    /// The report of a stage whose files committed one by one (`atomicity: file`): this one's
    /// and the next file's added up; its status the worse of the two, its rejects, files and
    /// notes both's. A file rolled back (over its budget, refused) counts its rows read and
    /// rejected but loaded nothing.
    pub fn and(mut self, o: StageReport) -> StageReport {
        self.bytes += o.bytes;
        self.etag = None;
        self.rows_read += o.rows_read;
        self.rows_valid += o.rows_valid;
        self.rows_rejected += o.rows_rejected;
        self.rows_warned += o.rows_warned;
        self.rows_staged += o.rows_staged;
        self.skipped_unchanged += o.skipped_unchanged;
        self.loaded = match (self.loaded, o.loaded) {
            (Some(a), Some(b)) => Some(a.and(b)),
            (a, b) => a.or(b),
        };
        if o.status.rank() > self.status.rank() {
            self.status = o.status;
        }
        let join = |a: Option<String>, b: Option<String>| match (a, b) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        self.budget = join(self.budget.take(), o.budget);
        self.refused = join(self.refused.take(), o.refused);
        self.recorded &= o.recorded;
        for h in o.hints {
            if !self.hints.contains(&h) {
                self.hints.push(h);
            }
        }
        for (rule, n) in o.rejects_by_rule {
            *self.rejects_by_rule.entry(rule).or_default() += n;
        }
        self.rejects.extend(o.rejects);
        self.unchanged_since_run = None;
        self.fingerprint = None;
        self.files.extend(o.files);
        self.checks.extend(o.checks);
        self.totals.extend(o.totals);
        self.replayed.extend(o.replayed);
        self.rejected_records.extend(o.rejected_records);
        self.trailers.extend(o.trailers);
        self
    }

    /// A report of a stage read from `source`, nothing counted yet.
    pub fn new(stage: &crate::plan::StagePlan, source: &str, bytes: u64) -> StageReport {
        StageReport {
            stage: stage.name.clone(),
            target: stage.target.qualified.clone(),
            source: source.to_string(),
            bytes,
            etag: None,
            rows_read: 0,
            rows_valid: 0,
            rows_rejected: 0,
            rows_warned: 0,
            loaded: None,
            rows_staged: 0,
            skipped_unchanged: 0,
            status: Status::Running,
            budget: None,
            refused: None,
            hints: Vec::new(),
            recorded: false,
            rejects_by_rule: BTreeMap::new(),
            rejects: Vec::new(),
            unchanged_since_run: None,
            fingerprint: None,
            files: Vec::new(),
            checks: Vec::new(),
            totals: crate::exec::contracts::Total::for_stage(stage),
            replay_of: None,
            replayed: Vec::new(),
            rejected_records: Vec::new(),
            trailers: Vec::new(),
            seconds: 0.0,
            started: chrono::Utc::now(),
        }
    }

    /// rows read = valid + rejected: checked for every stage.
    pub fn balanced(&self) -> bool {
        self.rows_read == self.rows_valid + self.rows_rejected
    }

    /// Counts rejected rows by rule: each (line, rule) once, error severity only.
    pub fn count_rules(&mut self, rejects: &[Reject]) {
        let mut seen = BTreeSet::new();
        for r in rejects {
            if r.severity == Severity::Error && seen.insert((r.line, r.rule.clone())) {
                *self.rejects_by_rule.entry(r.rule.clone()).or_default() += 1;
            }
        }
    }

    /// The status of a stage that loaded: rejected when any row was.
    pub fn loaded_status(&self) -> Status {
        if self.rows_rejected > 0 { Status::Rejected } else { Status::Succeeded }
    }
}

/// One analytics query's result, every value as the database printed it. In JSON, a numeric
/// column's values are JSON numbers, written with every digit the database printed.
#[derive(Debug, Clone, Default)]
pub struct AnalyticResult {
    /// Query name.
    pub name: String,
    /// What it shows, from the spec.
    pub description: Option<String>,
    /// Column names in order.
    pub columns: Vec<String>,
    /// Rows of values (None: NULL).
    pub rows: Vec<Vec<Option<String>>>,
    /// Why the query failed, when it did (the load it reads stays committed).
    pub error: Option<String>,
    /// Per column: whether it holds numbers.
    pub numeric: Vec<bool>,
    /// Each `expect` condition: whether every row met it, and the rows that did not.
    pub expectations: Vec<CheckResult>,
    /// Not queried: its tables were as this run found them, so this is that run's result.
    pub reused_from: Option<i64>,
}

impl AnalyticResult {
    /// The result as `etl_analytics` keeps it: columns, which are numeric, rows, expectations.
    pub fn stored(&self) -> serde_json::Value {
        serde_json::json!({
            "columns": self.columns,
            "numeric": self.numeric,
            "rows": self.rows,
            "expectations": self.expectations.iter().map(|e| serde_json::json!({
                "check": e.check, "passed": e.passed, "observed": e.observed, "expected": e.expected, "message": e.message, "rows": e.rows,
            })).collect::<Vec<_>>(),
        })
    }

    /// A result `etl_analytics` kept (see [`AnalyticResult::stored`]), reported for `run`.
    pub fn from_stored(name: &str, stored: &serde_json::Value, run: i64) -> Option<AnalyticResult> {
        let texts = |v: &serde_json::Value| -> Option<Vec<String>> { v.as_array()?.iter().map(|x| x.as_str().map(str::to_string)).collect() };
        let cells = |v: &serde_json::Value| -> Option<Vec<Option<String>>> { v.as_array()?.iter().map(|x| if x.is_null() { Some(None) } else { x.as_str().map(|s| Some(s.to_string())) }).collect() };
        let expectations = stored["expectations"]
            .as_array()?
            .iter()
            .map(|e| {
                Some(CheckResult {
                    check: e["check"].as_str()?.to_string(),
                    severity: "error",
                    passed: e["passed"].as_bool()?,
                    observed: e["observed"].as_str().map(str::to_string),
                    expected: e["expected"].as_str().map(str::to_string),
                    message: e["message"].as_str()?.to_string(),
                    rows: texts(&e["rows"])?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(AnalyticResult {
            name: name.to_string(),
            description: None,
            columns: texts(&stored["columns"])?,
            rows: stored["rows"].as_array()?.iter().map(cells).collect::<Option<Vec<_>>>()?,
            error: None,
            numeric: stored["numeric"].as_array()?.iter().map(serde_json::Value::as_bool).collect::<Option<Vec<_>>>()?,
            expectations,
            reused_from: Some(run),
        })
    }

    /// Whether it failed: its query, or one of its expectations.
    pub fn failed(&self) -> bool {
        self.error.is_some() || self.expectations.iter().any(|e| !e.passed)
    }
}

impl Serialize for AnalyticResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut m = s.serialize_struct("AnalyticResult", 5)?;
        m.serialize_field("name", &self.name)?;
        if let Some(d) = &self.description {
            m.serialize_field("description", d)?;
        }
        m.serialize_field("columns", &self.columns)?;
        let rows: Vec<Vec<Cell<'_>>> = self
            .rows
            .iter()
            .map(|r| r.iter().enumerate().map(|(i, v)| Cell(v.as_deref(), self.numeric.get(i).copied().unwrap_or(false))).collect())
            .collect();
        m.serialize_field("rows", &rows)?;
        if let Some(e) = &self.error {
            m.serialize_field("error", e)?;
        }
        if !self.expectations.is_empty() {
            m.serialize_field("expectations", &self.expectations)?;
        }
        if let Some(run) = self.reused_from {
            m.serialize_field("unchanged_since_run", &run)?;
        }
        m.end()
    }
}

/// A value of an analytic: a JSON number when its column is numeric and it reads as one (every
/// digit kept), else text; null for NULL.
struct Cell<'a>(Option<&'a str>, bool);

impl Serialize for Cell<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cell(None, _) => s.serialize_none(),
            Cell(Some(v), true) if v.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
                match serde_json::value::RawValue::from_string((*v).to_string()) {
                    Ok(raw) => raw.serialize(s),
                    Err(_) => s.serialize_str(v),
                }
            }
            Cell(Some(v), _) => s.serialize_str(v),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's id in etl_runs (None for a dry run).
    pub run_id: Option<i64>,
    /// Spec name.
    pub spec: String,
    /// The business date (`run.date`).
    pub date: String,
    /// SHA-256 of the spec file.
    pub spec_hash: String,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// `succeeded`, `rejected` or `over_budget`.
    pub status: Status,
    /// Per stage, in run order.
    pub stages: Vec<StageReport>,
    /// Analytics results.
    pub analytics: Vec<AnalyticResult>,
    /// Every stage was unchanged since its last load: nothing was loaded again, and the exit
    /// code and rejects are those loads'.
    pub unchanged: bool,
    /// Runs of the spec left `running` by a process that ended, recorded as `abandoned` by this
    /// run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub abandoned_runs: Vec<i64>,
}

impl RunReport {
    /// The run's status from its stages': over budget, else refused, else rejected, else
    /// succeeded.
    pub fn status_of(stages: &[StageReport]) -> Status {
        // A distributed stage with a file given up (the other failures end the run with an error).
        if stages.iter().any(|s| s.status == Status::Failed) {
            Status::Failed
        } else if stages.iter().any(|s| s.status == Status::OverBudget) {
            Status::OverBudget
        } else if stages.iter().any(|s| s.status == Status::ContractFailed) {
            Status::ContractFailed
        } else if stages.iter().any(|s| s.status == Status::Refused) {
            Status::Refused
        } else if stages.iter().any(|s| s.rows_rejected > 0) {
            Status::Rejected
        } else {
            Status::Succeeded
        }
    }

    /// Exit code: 1 when an analytic failed (its stages' loads stand) or a distributed stage gave a
    /// file up (the other files' loads stand); else 5 when a stage's
    /// data was refused and nothing of it loaded (over its error budget, refused whole); else 4
    /// when rows were rejected and the rest loaded (a stage unchanged since such a load exits so
    /// again; `unchanged` in the JSON tells); else 0.
    pub fn exit_code(&self) -> u8 {
        if self.analytics.iter().any(AnalyticResult::failed) || self.stages.iter().any(|s| s.status == Status::Failed) {
            exit::ERROR
        } else if self.stages.iter().any(|s| s.status.loaded_nothing()) {
            exit::REFUSED
        } else if self.stages.iter().any(|s| s.rows_rejected > 0) {
            exit::REJECTED
        } else {
            exit::OK
        }
    }

    /// Whether every stage was unchanged since its last load (nothing was loaded again).
    pub fn all_unchanged(stages: &[StageReport]) -> bool {
        !stages.is_empty() && stages.iter().all(|s| s.unchanged_since_run.is_some())
    }

    /// The analytics that failed, as one line for the run's record.
    pub fn analytics_failed(&self) -> Option<String> {
        let mut failed: Vec<String> =
            self.analytics.iter().filter_map(|a| a.error.as_ref().map(|e| format!("analytic `{}` failed: {e}", a.name))).collect();
        for a in &self.analytics {
            failed.extend(a.expectations.iter().filter(|e| !e.passed).map(|e| format!("analytic `{}` expects {}: {}", a.name, e.check, e.message)));
        }
        (!failed.is_empty()).then(|| failed.join("; "))
    }
}
