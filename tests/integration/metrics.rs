//! Prometheus metrics, read back with a text-format parser: `etl run --metrics-file` writes a
//! run's figures (a run an error ended writes its status too); `etl schedule start
//! --metrics-addr` serves its firings' counts at /metrics, scraped during and after a firing.

use crate::run::TestDb;
use crate::util::etl;

fn scrape(path: &std::path::Path) -> prometheus_parse::Scrape {
    parse(&std::fs::read_to_string(path).unwrap())
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The scheduler's /metrics, with its content type; None while nothing listens.
fn get(url: &str) -> Option<(String, String)> {
    let mut response = ureq::get(url).call().ok()?;
    let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    Some((kind, response.body_mut().read_to_string().ok()?))
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(|s| match s.value {
        prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) => v,
        prometheus_parse::Value::Histogram(ref h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
        _ => f64::NAN,
    })
}

#[test]
fn a_runs_metrics_file_holds_its_counts_in_prometheus_text_format() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("metrics");
    let head = crate::util::spec_head("metrics_test", dir.path().display());
    let text = format!(
        "{head}stages:
  accounts:
    source: {{ connection: files, key: accounts.csv }}
    target: {{ connection: db, table: account, key: [account_id] }}
    columns:
      account_id: {{ type: string }}
      cash: {{ type: \"decimal(20,2)\", min: 0 }}
    checks:
      - {{ name: some_rows, row_count: {{ min: 1 }} }}
",
    );
    let spec = dir.path().join("metrics.yaml");
    std::fs::write(&spec, text).unwrap();
    std::fs::write(dir.path().join("accounts.csv"), "account_id,cash\nA,1.00\nB,-1.00\nC,2.00\n").unwrap();
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    let env = [("ETL_TEST_DATABASE_URL", url.as_str()), ("SCHEMA", db.schema.as_str())];
    let file = dir.path().join("etl.prom");
    let out = etl(&["run", spec.to_str().unwrap(), "--date", "2025-12-19", "--metrics-file", file.to_str().unwrap()], &env);
    out.expect_code(4);
    let s = scrape(&file);
    let stage = [("spec", "metrics_test"), ("stage", "accounts")];
    for (outcome, n) in [("read", 3.0), ("valid", 2.0), ("rejected", 1.0), ("inserted", 2.0)] {
        assert_eq!(value(&s, "etl_stage_rows", &[stage[0], stage[1], ("outcome", outcome)]), Some(n), "{outcome}\n{}", out.evidence());
    }
    assert_eq!(value(&s, "etl_stage_rejects", &[stage[0], stage[1], ("rule", "min")]), Some(1.0));
    assert_eq!(value(&s, "etl_stage_source_bytes", &stage), Some(std::fs::metadata(dir.path().join("accounts.csv")).unwrap().len() as f64));
    assert_eq!(value(&s, "etl_run_info", &[("spec", "metrics_test"), ("status", "rejected"), ("date", "2025-12-19")]), Some(1.0));
    assert_eq!(value(&s, "etl_check_passed", &[stage[0], stage[1], ("check", "some_rows")]), Some(1.0));
    assert!(value(&s, "etl_run_last_success_timestamp_seconds", &[("spec", "metrics_test")]).is_some_and(|t| t > 1.7e9));
    // Prometheus' conventions: snake case under one prefix; a help text for every metric.
    let names = regex::Regex::new("^etl_[a-z]+(_[a-z]+)*$").unwrap();
    for sample in &s.samples {
        assert!(names.is_match(&sample.metric), "{}", sample.metric);
        assert!(s.docs.contains_key(&sample.metric), "{} has no HELP", sample.metric);
    }
    assert!(!dir.path().join(".etl.prom.tmp").exists(), "written whole, then renamed");

    // A run an error ends (its file is gone): the file says so, and no success time.
    std::fs::remove_file(dir.path().join("accounts.csv")).unwrap();
    let out = etl(&["run", spec.to_str().unwrap(), "--date", "2025-12-19", "--metrics-file", file.to_str().unwrap()], &env);
    out.expect_code(3);
    let s = scrape(&file);
    assert_eq!(value(&s, "etl_run_info", &[("spec", "metrics_test"), ("status", "failed")]), Some(1.0), "{}", out.evidence());
    assert_eq!(value(&s, "etl_run_last_success_timestamp_seconds", &[("spec", "metrics_test")]), None);
}

#[test]
fn a_schedulers_metrics_endpoint_counts_its_firings_during_and_after_them() {
    use crate::schedule::{Scheduler, free_port, hold_load_lock, spec_file, wait_for};
    use std::time::Duration;
    let data = crate::extract::generate(40, 0, 0.0, 33);
    let db = TestDb::new("live_metrics");
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_file(&db, data.path(), dir.path(), "*/2 * * * * *");
    // The test holds the table's load lock, so the first firing waits inside its run.
    let key = hold_load_lock(&db);
    let addr = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{addr}/metrics");
    let s = Scheduler::start_with(&spec, dir.path().join("scheduler.log"), &["--metrics-addr", &addr]);
    let now = |name: &str, labels: &[(&str, &str)]| get(&url).and_then(|(_, text)| value(&parse(&text), name, labels));
    wait_for("a firing running, on /metrics", Duration::from_secs(60), || now("etl_firings_running", &[]).is_some_and(|n| n >= 1.0), || s.log());
    // Held for a while: the firing's duration shows its wait.
    std::thread::sleep(Duration::from_millis(1500));
    let (kind, text) = get(&url).unwrap();
    assert!(kind.starts_with("text/plain") && kind.contains("version=0.0.4"), "{kind}");
    let during = parse(&text);
    assert_eq!(value(&during, "etl_runs_total", &[("job", "often"), ("status", "succeeded")]), None, "a run counted before it ended:\n{text}");
    db.exec(&format!("SELECT pg_advisory_unlock({key})"));
    let job = ("job", "often");
    wait_for("a succeeded firing, on /metrics", Duration::from_secs(60), || now("etl_runs_total", &[job, ("status", "succeeded")]).is_some_and(|n| n >= 1.0), || s.log());
    // The first firing inserted the 40 rows; each later one read them again, unchanged.
    let (_, text) = get(&url).unwrap();
    let after = parse(&text);
    let runs = value(&after, "etl_runs_total", &[job, ("status", "succeeded")]).unwrap();
    let stage = ("stage", "assets");
    assert_eq!(value(&after, "etl_rows_total", &[job, stage, ("outcome", "inserted")]), Some(40.0), "{text}\n{}", s.log());
    assert_eq!(value(&after, "etl_rows_total", &[job, stage, ("outcome", "read")]), Some(40.0 * runs), "{text}");
    assert_eq!(value(&after, "etl_rows_total", &[job, stage, ("outcome", "rejected")]), Some(0.0), "{text}");
    let bytes = std::fs::metadata(data.path().join("account_assets.csv")).unwrap().len() as f64;
    assert_eq!(value(&after, "etl_source_read_bytes_total", &[job, stage]), Some(bytes * runs), "{text}");
    assert_eq!(value(&after, "etl_stage_duration_seconds", &[job, stage]), Some(runs), "one observation per firing:\n{text}");
    assert_eq!(value(&after, "etl_run_duration_seconds", &[job]), Some(runs), "{text}");
    assert!(value(&after, "etl_last_success_timestamp_seconds", &[job, stage]).is_some_and(|t| t > 1.7e9), "{text}");
    // The first firing waited for the lock for seconds: its duration is in a bucket above 1 s.
    let slow = after.samples.iter().find(|x| x.metric == "etl_run_duration_seconds").map(|x| match &x.value {
        prometheus_parse::Value::Histogram(h) => h.iter().filter(|b| b.less_than == 1.0).map(|b| b.count).sum::<f64>(),
        _ => f64::NAN,
    });
    assert!(slow.is_some_and(|n| n < runs), "the waiting firing's duration is under 1 s:\n{text}");
    let names = regex::Regex::new("^etl_[a-z]+(_[a-z]+)*$").unwrap();
    for sample in &after.samples {
        assert!(names.is_match(&sample.metric), "{}", sample.metric);
        let family = sample.metric.strip_suffix("_sum").or_else(|| sample.metric.strip_suffix("_count")).unwrap_or(&sample.metric);
        assert!(after.docs.contains_key(family), "{} has no HELP", sample.metric);
    }
    assert!(ureq::get(&format!("http://{addr}/nothing")).call().is_err(), "only /metrics is served");
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains(&format!("metrics at http://{addr}/metrics")), "{log}");
}

#[test]
fn a_metrics_address_in_use_is_refused_before_the_scheduler_starts() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let db = TestDb::new("metrics_busy");
    let dir = tempfile::tempdir().unwrap();
    let spec = crate::schedule::spec_file(&db, dir.path(), dir.path(), "0 0 2 * * *");
    let out = etl(&["schedule", "start", "--spec", spec.to_str().unwrap(), "--metrics-addr", &addr], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains(&format!("--metrics-addr {addr}")) && out.stderr.contains("e.g. 127.0.0.1:9187"), "{}", out.evidence());
}
