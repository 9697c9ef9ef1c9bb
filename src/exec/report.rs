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
    /// An error ended it.
    Failed,
}

impl Status {
    /// The word recorded in `etl_runs` and `etl_run_stages` and shown in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Rejected => "rejected",
            Status::OverBudget => "over_budget",
            Status::Failed => "failed",
        }
    }

    /// The status a recorded word stands for.
    pub fn from_word(word: &str) -> Option<Status> {
        [Status::Running, Status::Succeeded, Status::Rejected, Status::OverBudget, Status::Failed].into_iter().find(|s| s.as_str() == word)
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
}

/// What happened to one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// Stage name.
    pub stage: String,
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
}

impl StageReport {
    /// A report of a stage read from `source`, nothing counted yet.
    pub fn new(stage: &str, source: &str, bytes: u64) -> StageReport {
        StageReport {
            stage: stage.to_string(),
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
            rejects_by_rule: BTreeMap::new(),
            rejects: Vec::new(),
            unchanged_since_run: None,
            fingerprint: None,
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

/// One analytics query's result, every value as the database printed it.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyticResult {
    /// Query name.
    pub name: String,
    /// Column names in order.
    pub columns: Vec<String>,
    /// Rows of values (None: NULL).
    pub rows: Vec<Vec<Option<String>>>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's id in etl_runs (None for a dry run).
    pub run_id: Option<i64>,
    /// Spec name.
    pub spec: String,
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
}

impl RunReport {
    /// The run's status from its stages': over budget, else rejected, else succeeded.
    pub fn status_of(stages: &[StageReport]) -> Status {
        if stages.iter().any(|s| s.status == Status::OverBudget) {
            Status::OverBudget
        } else if stages.iter().any(|s| s.rows_rejected > 0) {
            Status::Rejected
        } else {
            Status::Succeeded
        }
    }

    /// Exit code: 4 when any row was rejected or a stage went over its error budget, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.stages.iter().any(|s| s.rows_rejected > 0 || s.status == Status::OverBudget) { exit::REJECTED } else { exit::OK }
    }
}
