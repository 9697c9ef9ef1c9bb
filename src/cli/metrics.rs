//! `etl run --metrics-file PATH`: the run's figures in Prometheus' text format, for
//! node_exporter's textfile collector (written to a temporary file, then renamed, so a scrape
//! never reads half of it). Names and labels follow Prometheus' conventions: base units
//! (`_bytes`, `_seconds`), one metric per quantity with its kinds as a label.

use prometheus::{IntGaugeVec, Opts, Registry, TextEncoder};

use crate::exec::RunReport;

/// The run's metrics as text.
pub fn text(report: &RunReport) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let spec = report.spec.as_str();
    let info = gauge("etl_run_info", "The run: its id, business date and how it ended (always 1).", &["spec", "run_id", "date", "status"])?;
    let run_id = report.run_id.map(|i| i.to_string()).unwrap_or_default();
    info.with_label_values(&[spec, run_id.as_str(), report.date.as_str(), report.status.as_str()]).set(1);
    let finished = gauge("etl_run_finished_timestamp_seconds", "When the run ended (Unix time).", &["spec"])?;
    let now = chrono::Utc::now().timestamp();
    finished.with_label_values(&[spec]).set(now);
    if matches!(report.status, crate::exec::Status::Succeeded | crate::exec::Status::Rejected) && report.analytics_failed().is_none() {
        gauge("etl_run_last_success_timestamp_seconds", "When the run ended, when it loaded its stages (Unix time).", &["spec"])?.with_label_values(&[spec]).set(now);
    }
    let rows = gauge("etl_stage_rows", "Rows of a stage's load, by outcome: read, valid, rejected, warned, inserted, updated, unchanged.", &["spec", "stage", "outcome"])?;
    let bytes = gauge("etl_stage_source_bytes", "The size of the files a stage read.", &["spec", "stage"])?;
    let rejects = gauge("etl_stage_rejects", "Rejects of a stage's load by rule (a row failing two rules counts under both).", &["spec", "stage", "rule"])?;
    let status = gauge("etl_stage_status", "How a stage ended (always 1, its status a label).", &["spec", "stage", "status"])?;
    let unchanged = gauge("etl_stage_skipped_unchanged", "1 when the stage was not loaded again: its source, spec and tables were as its last load left them.", &["spec", "stage"])?;
    let checks = gauge("etl_check_passed", "A stage's contract: 1 passed, 0 failed.", &["spec", "stage", "check", "severity"])?;
    for s in &report.stages {
        let stage = s.stage.as_str();
        let loaded = s.loaded.unwrap_or_default();
        for (outcome, n) in [
            ("read", s.rows_read),
            ("valid", s.rows_valid),
            ("rejected", s.rows_rejected),
            ("warned", s.rows_warned),
            ("inserted", loaded.inserted),
            ("updated", loaded.updated),
            ("unchanged", loaded.unchanged),
        ] {
            rows.with_label_values(&[spec, stage, outcome]).set(n as i64);
        }
        bytes.with_label_values(&[spec, stage]).set(s.bytes as i64);
        for (rule, n) in &s.rejects_by_rule {
            rejects.with_label_values(&[spec, stage, rule.as_str()]).set(*n as i64);
        }
        status.with_label_values(&[spec, stage, s.status.as_str()]).set(1);
        unchanged.with_label_values(&[spec, stage]).set(i64::from(s.unchanged_since_run.is_some()));
        for c in &s.checks {
            checks.with_label_values(&[spec, stage, c.check.as_str(), c.severity]).set(i64::from(c.passed));
        }
    }
    TextEncoder::new().encode_to_string(&registry.gather())
}

/// The metrics of a run an error ended: its info (status `failed`, `missing` or `late`) and end.
pub fn failure_text(spec: &str, date: &str, status: &str) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    let info = IntGaugeVec::new(Opts::new("etl_run_info", "The run: its id, business date and how it ended (always 1)."), &["spec", "run_id", "date", "status"])?;
    registry.register(Box::new(info.clone()))?;
    info.with_label_values(&[spec, "", date, status]).set(1);
    let finished = IntGaugeVec::new(Opts::new("etl_run_finished_timestamp_seconds", "When the run ended (Unix time)."), &["spec"])?;
    registry.register(Box::new(finished.clone()))?;
    finished.with_label_values(&[spec]).set(chrono::Utc::now().timestamp());
    TextEncoder::new().encode_to_string(&registry.gather())
}

/// Writes the metrics to `path` at once: to a file beside it, then renamed over it.
pub fn write(text: Result<String, prometheus::Error>, path: &std::path::Path) -> Result<(), String> {
    let text = text.map_err(|e| e.to_string())?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("metrics.prom");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}
