//! The bad-input corpus: every CSV under tests/fixtures/bad (and two generated ones too big to
//! keep: a 1 MB field, a 10 MB spec) is run into PostgreSQL, and its whole outcome — exit code,
//! counts, each reject, the error, what the table holds — must equal its golden file in
//! tests/golden/bad. Whatever the case: never a panic, rows read = loaded + rejected, and an
//! error leaves no table behind.

use std::path::Path;

use crate::run::TestDb;
use crate::util::{Output, etl, files, golden};

/// Runs the corpus spec on `case` (a file in `dir`) into a schema of its own.
fn load(case: &str, dir: Option<&Path>) -> (Output, TestDb, String) {
    let name: String = case.trim_end_matches(".csv").chars().filter(char::is_ascii_alphanumeric).collect();
    let db = TestDb::new(&format!("bad_{name}"));
    let tmp = tempfile::tempdir().unwrap();
    let rejects = tmp.path().join("rejects.csv");
    let mut args = vec!["run".to_string(), "tests/fixtures/bad/spec.yaml".into(), "--output".into(), "json".into()];
    args.extend(["--rejects-out".into(), rejects.display().to_string()]);
    if let Some(d) = dir {
        args.extend(["--set".into(), format!("connections.here={{type: local, path: '{}'}}", d.display())]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = etl(&refs, &[("ETL_TEST_DATABASE_URL", &db.url), ("ETL_TEST_SCHEMA", &db.schema), ("ETL_TEST_CASE", case)]);
    let rejects = std::fs::read_to_string(&rejects).unwrap_or_default();
    (out, db, rejects)
}

/// The outcome as text: what the golden file holds.
fn outcome(out: &Output, db: &TestDb, rejects: &str) -> String {
    assert!(!out.stderr.contains("panicked") && out.code != 101, "a panic\n{}", out.evidence());
    assert!([0, 1, 4].contains(&out.code), "unexpected exit code\n{}", out.evidence());
    let table = db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'asset'", db.schema));
    let mut text = format!("exit code: {}\n", out.code);
    if out.code == 1 {
        assert_eq!(table, 0, "an error left a table behind\n{}", out.evidence());
        // The diagnostic without the schema's per-process name.
        text.push_str("--- error ---\n");
        text.push_str(&out.stderr.lines().filter(|l| !l.starts_with('[')).collect::<Vec<_>>().join("\n").replace(&db.schema, "<schema>"));
        text.push('\n');
        return text;
    }
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    let st = &report["stages"][0];
    let (read, valid, rejected) = (st["rows_read"].as_u64().unwrap(), st["rows_valid"].as_u64().unwrap(), st["rows_rejected"].as_u64().unwrap());
    assert_eq!(read, valid + rejected, "unbalanced\n{}", out.evidence());
    let loaded = db.count(&format!("SELECT count(*) FROM {}.asset", db.schema));
    assert_eq!(loaded as u64, valid, "the table holds other than the valid rows\n{}", out.evidence());
    text.push_str(&format!("rows read {read}, valid {valid}, rejected {rejected}\n--- rejects ---\n"));
    for line in rejects.lines().skip(1) {
        // Drop the stage and source columns: the same for every row.
        let rest = line.splitn(3, ',').nth(2).unwrap_or("");
        text.push_str(rest);
        text.push('\n');
    }
    text.push_str("--- table ---\n");
    let rows = db.texts(&format!(
        "SELECT concat_ws(' | ', account_id, cash::text, updated_at::text, left(coalesce(note, '<null>'), 60)) FROM {}.asset ORDER BY account_id",
        db.schema
    ));
    for r in rows {
        text.push_str(&r);
        text.push('\n');
    }
    text
}

#[test]
fn every_case_of_the_bad_input_corpus_ends_as_its_golden_file_says() {
    let dir = crate::util::root().join("tests/fixtures/bad");
    let cases = files(&dir, "csv");
    assert!(cases.len() >= 15, "the corpus is missing: {cases:?}");
    for path in cases {
        let case = path.file_name().unwrap().to_str().unwrap().to_string();
        let (out, db, rejects) = load(&case, None);
        let text = outcome(&out, &db, &rejects);
        golden(&format!("tests/golden/bad/{}.txt", case.trim_end_matches(".csv")), &text, &out.evidence());
    }
}

#[test]
fn a_one_megabyte_field_loads_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let big = "x".repeat(1 << 20);
    std::fs::write(tmp.path().join("big.csv"), format!("account_id,cash,updated_at,note\nA1,1.00,2025-01-01T10:00:00,{big}\nA2,2.00,2025-01-01T10:00:00,small\n")).unwrap();
    let (out, db, rejects) = load("big.csv", Some(tmp.path()));
    out.expect_code(0);
    outcome(&out, &db, &rejects);
    let len = db.count(&format!("SELECT length(note)::bigint FROM {}.asset WHERE account_id = 'A1'", db.schema));
    assert_eq!(len, 1 << 20, "{}", out.evidence());
}

#[test]
fn a_ten_megabyte_spec_and_a_binary_file_get_answers_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    // A valid spec carrying 10 MB of comments and a 1 MB description.
    let base = std::fs::read_to_string(crate::util::root().join("examples/quickstart.yaml")).unwrap();
    let mut text = String::with_capacity(11 << 20);
    text.push_str(&format!("# {}\n", "c".repeat(1000)).repeat(10 * 1024));
    text.push_str(&base.replacen("\ndescription: ", &format!("\ndescription: {} ", "d".repeat(1 << 20)), 1));
    let spec = tmp.path().join("big.yaml");
    std::fs::write(&spec, &text).unwrap();
    let out = etl(&["validate-spec", spec.to_str().unwrap()], &[]);
    out.expect_code(0);
    // Not YAML at all: bytes that are not even UTF-8.
    let binary = tmp.path().join("binary.yaml");
    std::fs::write(&binary, [0u8, 159, 146, 150, 255, 254, 10, 0, 1, 2]).unwrap();
    let out = etl(&["validate-spec", binary.to_str().unwrap()], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("binary.yaml") && !out.stderr.contains("panicked"), "{}", out.evidence());
}

/// A row holding a NUL byte is rejected with its line and column (PostgreSQL's text holds none),
/// and keeps no record of its fields: a record written with the NUL shown otherwise would replay
/// another value.
#[test]
fn a_row_holding_a_nul_byte_keeps_no_record_to_replay() {
    let (out, db, _) = load("nul_byte.csv", None);
    out.expect_code(4);
    let kept = db.texts(
        "SELECT line || ' ' || rule || ' ' || (record IS NOT NULL)::text FROM etl_rejects \
         WHERE run_id = (SELECT max(run_id) FROM etl_rejects WHERE source LIKE '%nul_byte.csv') ORDER BY line",
    );
    assert_eq!(kept, ["2 type false", "4 csv false", "5 type false"], "{}", out.evidence());
}
