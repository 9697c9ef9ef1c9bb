//! `etl run --metrics-file`: the run's figures in Prometheus' text format, read back with a
//! text-format parser; a run an error ended writes its status too.

use crate::run::TestDb;
use crate::util::etl;

fn scrape(path: &std::path::Path) -> prometheus_parse::Scrape {
    let text = std::fs::read_to_string(path).unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(|s| match s.value {
        prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) => v,
        _ => f64::NAN,
    })
}

#[test]
fn a_runs_metrics_file_holds_its_counts_in_prometheus_text_format() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("metrics");
    let text = format!(
        "version: 1
name: metrics_test
connections:
  files: {{ type: local, path: '{dir}' }}
  db: {{ type: postgres, url: \"{{{{ env.ETL_TEST_DATABASE_URL }}}}\", schema: \"{{{{ env.SCHEMA }}}}\" }}
stages:
  accounts:
    source: {{ connection: files, key: accounts.csv }}
    target: {{ connection: db, table: account, key: [account_id] }}
    columns:
      account_id: {{ type: string }}
      cash: {{ type: \"decimal(20,2)\", min: 0 }}
    checks:
      - {{ name: some_rows, row_count: {{ min: 1 }} }}
",
        dir = dir.path().display()
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
