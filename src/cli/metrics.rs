//! Prometheus metrics: `etl run --metrics-file PATH` writes one run's figures in the text format
//! for node_exporter's textfile collector (to a temporary file, then renamed, so a scrape never
//! reads half of it); `etl schedule start --metrics-addr` counts every firing's across the
//! scheduler's life and serves them at `/metrics` (tiny_http, on a thread of its own). Names and
//! labels follow Prometheus' conventions: base units (`_bytes`, `_seconds`), `_total` counters,
//! one metric per quantity with its kinds as a label.

use std::sync::OnceLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

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
    let seconds = prometheus::GaugeVec::new(Opts::new("etl_stage_duration_seconds", "How long the stage took to read, check and load its rows."), &["spec", "stage"])?;
    registry.register(Box::new(seconds.clone()))?;
    for s in &report.stages {
        seconds.with_label_values(&[spec, s.stage.as_str()]).set(s.seconds);
        let stage = s.stage.as_str();
        for (outcome, n) in outcomes(s) {
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

/// A stage's rows by outcome, as the `outcome` label names them.
fn outcomes(s: &crate::exec::StageReport) -> [(&'static str, u64); 7] {
    let loaded = s.loaded.unwrap_or_default();
    [
        ("read", s.rows_read),
        ("valid", s.rows_valid),
        ("rejected", s.rows_rejected),
        ("warned", s.rows_warned),
        ("inserted", loaded.inserted),
        ("updated", loaded.updated),
        ("unchanged", loaded.unchanged),
    ]
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

/// The scheduler's metrics, counted across its firings: what `/metrics` serves.
pub struct Live {
    registry: Registry,
    runs: IntCounterVec,
    rows: IntCounterVec,
    rejects: IntCounterVec,
    bytes: IntCounterVec,
    checks_failed: IntCounterVec,
    stage_seconds: HistogramVec,
    run_seconds: HistogramVec,
    last_success: IntGaugeVec,
    files: IntGaugeVec,
    overdue: IntGaugeVec,
    running: IntGauge,
}

/// Seconds a load may take, from a small file to a large day.
const BUCKETS: [f64; 12] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

static LIVE: OnceLock<Live> = OnceLock::new();

impl Live {
    fn new() -> Result<Live, prometheus::Error> {
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> Result<T, prometheus::Error> {
            r.register(Box::new(m.clone()))?;
            Ok(m)
        }
        let counter = |name: &str, help: &str, labels: &[&str]| reg(&registry, IntCounterVec::new(Opts::new(name, help), labels)?);
        let gauge = |name: &str, help: &str, labels: &[&str]| reg(&registry, IntGaugeVec::new(Opts::new(name, help), labels)?);
        let histogram = |name: &str, help: &str, labels: &[&str]| reg(&registry, HistogramVec::new(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()), labels)?);
        Ok(Live {
            runs: counter("etl_runs_total", "Firings run, by job and how they ended (succeeded, rejected, over_budget, refused, contract_failed, failed, missing, late).", &["job", "status"])?,
            rows: counter("etl_rows_total", "Rows of the stages' loads, by outcome: read, valid, rejected, warned, inserted, updated, unchanged.", &["job", "stage", "outcome"])?,
            rejects: counter("etl_rejects_total", "Rejected rows by rule (a row failing two rules counts under both).", &["job", "stage", "rule"])?,
            bytes: counter("etl_source_read_bytes_total", "Bytes of the files the stages read.", &["job", "stage"])?,
            checks_failed: counter("etl_check_failures_total", "Contracts (checks:) that did not hold.", &["job", "stage", "check", "severity"])?,
            stage_seconds: histogram("etl_stage_duration_seconds", "How long a stage took to read, check and load its rows.", &["job", "stage"])?,
            run_seconds: histogram("etl_run_duration_seconds", "How long a firing's run took, from reading its spec to its end.", &["job"])?,
            last_success: gauge("etl_last_success_timestamp_seconds", "When a stage last loaded (succeeded or rejected rows within its budget), Unix time.", &["job", "stage"])?,
            files: gauge("etl_stage_files", "A set's files at the job's last firing: loaded, already_loaded (loaded by an earlier run), pending (read but not loaded).", &["job", "stage", "status"])?,
            overdue: gauge("etl_job_files_overdue", "1 when the job's last firing found no file of a set (its status, missing or late, a label), else 0.", &["job", "status"])?,
            running: reg(&registry, IntGauge::new("etl_firings_running", "Firings running now.")?)?,
            registry,
        })
    }

    /// The scheduler's metrics, made on first use.
    pub fn get() -> &'static Live {
        LIVE.get_or_init(|| Live::new().expect("the scheduler's metric names are valid"))
    }

    /// Whether `/metrics` is served (then firings are counted).
    pub fn serving() -> Option<&'static Live> {
        LIVE.get()
    }

    /// A firing started; the guard counts it running until dropped.
    pub fn start(&self) -> RunningGuard<'_> {
        self.running.inc();
        RunningGuard(&self.running)
    }

    /// A firing's run ended with its report.
    pub fn record(&self, job: &str, report: &RunReport, status: &str, seconds: f64) {
        self.runs.with_label_values(&[job, status]).inc();
        self.run_seconds.with_label_values(&[job]).observe(seconds);
        for st in ["missing", "late"] {
            self.overdue.with_label_values(&[job, st]).set(0);
        }
        let now = chrono::Utc::now().timestamp();
        for s in &report.stages {
            let stage = s.stage.as_str();
            for (outcome, n) in outcomes(s) {
                self.rows.with_label_values(&[job, stage, outcome]).inc_by(n);
            }
            for (rule, n) in &s.rejects_by_rule {
                self.rejects.with_label_values(&[job, stage, rule.as_str()]).inc_by(*n);
            }
            self.bytes.with_label_values(&[job, stage]).inc_by(s.bytes);
            self.stage_seconds.with_label_values(&[job, stage]).observe(s.seconds);
            for c in s.checks.iter().filter(|c| !c.passed) {
                self.checks_failed.with_label_values(&[job, stage, c.check.as_str(), c.severity]).inc();
            }
            if !s.status.loaded_nothing() {
                self.last_success.with_label_values(&[job, stage]).set(now);
            }
            if !s.files.is_empty() {
                for (label, status) in [("loaded", "loaded"), ("already_loaded", "already_loaded"), ("pending", "not_loaded")] {
                    let n = s.files.iter().filter(|f| f.status == status).count();
                    self.files.with_label_values(&[job, stage, label]).set(n as i64);
                }
            }
        }
    }

    /// A firing an error ended (`failed`, or `missing`/`late` for a set with no file).
    pub fn record_failure(&self, job: &str, status: &str, seconds: f64) {
        self.runs.with_label_values(&[job, status]).inc();
        self.run_seconds.with_label_values(&[job]).observe(seconds);
        for st in ["missing", "late"] {
            self.overdue.with_label_values(&[job, st]).set(i64::from(st == status));
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn text(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

/// A running firing, counted in `etl_firings_running` until dropped.
pub struct RunningGuard<'a>(&'a IntGauge);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves the scheduler's metrics at `http://addr/metrics` on a thread of its own, for the
/// process's life. Fails at once when the address cannot be bound.
pub fn serve(addr: std::net::SocketAddr) -> Result<(), String> {
    let server = tiny_http::Server::http(addr).map_err(|e| e.to_string())?;
    let live = Live::get();
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let path = request.url().split('?').next().unwrap_or_default().to_string();
                let response = match (request.method(), path.as_str()) {
                    (tiny_http::Method::Get | tiny_http::Method::Head, "/metrics") => match live.text() {
                        Ok(text) => tiny_http::Response::from_string(text).with_header(header("Content-Type", prometheus::TEXT_FORMAT)),
                        Err(e) => tiny_http::Response::from_string(format!("cannot encode the metrics: {e}\n")).with_status_code(500),
                    },
                    (tiny_http::Method::Get, "/") => tiny_http::Response::from_string("etl scheduler: metrics at /metrics\n"),
                    _ => tiny_http::Response::from_string("not found: the metrics are at /metrics\n").with_status_code(404),
                };
                let _ = request.respond(response);
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}
