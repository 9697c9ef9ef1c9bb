//! Rules compute as PostgreSQL's numeric does, end to end: a discounted total that SQL accepts
//! loads, a wrong one is rejected showing both sides' values, and a division by zero or an
//! overflow is a reject naming the rule.

use crate::run::TestDb;
use crate::util::etl;

const SPEC: &str = r#"
version: 1
name: orders
connections:
  files: { type: local, path: "." }
  db: { type: postgres, url: "{{ env.ETL_TEST_DATABASE_URL }}", schema: "{{ env.ETL_TEST_SCHEMA }}" }
stages:
  orders:
    source: { connection: files, key: orders.csv }
    target: { connection: db, table: orders, key: [order_id] }
    columns:
      order_id: { type: string }
      amount:   { type: "decimal(38,2)" }
      discount: { type: "decimal(20,2)" }
      total:    { type: "decimal(38,2)" }
      qty:      { type: int64 }
    rules:
      - { name: total_is_discounted, check: "total = round(amount * (1 - discount / 100), 2)" }
      - { name: unit_price_positive, check: "amount / qty > 0" }
      - { name: square_fits, check: "amount * amount >= 0" }
"#;

/// The run's rejects as etl_rejects recorded them: (line, rule, message), in line order.
fn recorded_rejects(db: &TestDb, report: &serde_json::Value) -> Vec<(u64, String, String)> {
    let run = report["run_id"].as_i64().unwrap_or_else(|| panic!("no run_id in {report}"));
    db.texts(&format!("SELECT line || '|' || rule || '|' || message FROM etl_rejects WHERE run_id = {run} ORDER BY line, rule"))
        .into_iter()
        .map(|r| {
            let mut parts = r.splitn(3, '|');
            let line = parts.next().unwrap_or("0").parse().unwrap_or(0);
            (line, parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string())
        })
        .collect()
}

#[test]
fn rule_arithmetic_is_sqls_decimal_arithmetic_and_rejects_show_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.yaml"), SPEC).unwrap();
    std::fs::write(
        dir.path().join("orders.csv"),
        "order_id,amount,discount,total,qty\n\
         a,100.00,15.50,84.50,1\n\
         b,10.00,0.50,9.95,3\n\
         c,100.00,15.50,84.55,1\n\
         d,5.00,0.00,5.00,0\n\
         e,123456789012345678901234567.89,0.00,123456789012345678901234567.89,1\n",
    )
    .unwrap();
    let db = TestDb::new("rules");
    let spec = dir.path().join("orders.yaml");
    let env = [("ETL_TEST_SCHEMA", db.schema.as_str()), ("ETL_TEST_DATABASE_URL", db.url.as_str())];
    let out = etl(&["run", spec.to_str().unwrap(), "--output", "json"], &env);
    out.expect_code(4);
    let loaded = db.texts(&format!("SELECT order_id FROM {}.orders ORDER BY order_id", db.schema));
    assert_eq!(loaded, ["a", "b"], "the rows SQL's arithmetic accepts load\n{}", out.evidence());
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    let rejects = recorded_rejects(&db, &report);
    let evidence = format!("{rejects:#?}\n{}", out.evidence());
    assert_eq!(rejects.len(), 3, "{evidence}");
    assert_eq!(rejects[0].0, 4, "{evidence}");
    assert_eq!(rejects[0].1, "total_is_discounted", "{evidence}");
    assert!(
        rejects[0].2.contains("`total` is 84.55, `round((amount * (1 - (discount / 100))), 2)` is 84.50"),
        "the reject shows both computed sides\n{evidence}"
    );
    assert_eq!((rejects[1].0, rejects[1].1.as_str()), (5, "unit_price_positive"), "{evidence}");
    assert!(rejects[1].2.contains("`(amount / qty)` cannot be computed: division by zero"), "{evidence}");
    assert_eq!((rejects[2].0, rejects[2].1.as_str()), (6, "square_fits"), "{evidence}");
    assert!(rejects[2].2.contains("needs more than 38 digits"), "{evidence}");
}

const DATED: &str = r#"
version: 1
name: dated
connections:
  files: { type: local, path: "." }
  db: { type: postgres, url: "{{ env.ETL_TEST_DATABASE_URL }}", schema: "{{ env.ETL_TEST_SCHEMA }}" }
stages:
  orders:
    source: { connection: files, key: dated.csv }
    target: { connection: db, table: dated, key: [order_id] }
    columns:
      order_id:   { type: string }
      order_date: { type: date, min: "2025-01-01" }
      shipped_at: { type: timestamp, format: "%Y-%m-%d %H:%M:%S", exclusive_max: "2026-01-01 00:00:00" }
    rules:
      - { name: ordered_this_year, check: "order_date <= date '2025-12-31'" }
      - { name: shipped_after_order, check: "shipped_at >= order_date" }
"#;

/// Dates and timestamps can be bounded: date and timestamp literals in rules, `min`/`max` on
/// date and timestamp columns.
#[test]
fn dates_are_bounded_by_literals_and_facets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dated.yaml"), DATED).unwrap();
    std::fs::write(
        dir.path().join("dated.csv"),
        "order_id,order_date,shipped_at\n\
         a,2025-03-19,2025-03-20 10:00:00\n\
         b,2024-12-31,2025-01-02 10:00:00\n\
         c,2026-01-05,2025-12-31 23:00:00\n\
         d,2025-06-01,2026-01-01 00:00:00\n\
         e,2025-06-01,2025-05-31 12:00:00\n",
    )
    .unwrap();
    let db = TestDb::new("dated");
    let spec = dir.path().join("dated.yaml");
    let env = [("ETL_TEST_SCHEMA", db.schema.as_str()), ("ETL_TEST_DATABASE_URL", db.url.as_str())];
    let out = etl(&["run", spec.to_str().unwrap(), "--output", "json"], &env);
    out.expect_code(4);
    let loaded = db.texts(&format!("SELECT order_id FROM {}.dated ORDER BY order_id", db.schema));
    assert_eq!(loaded, ["a"], "{}", out.evidence());
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    let got: Vec<(u64, String)> = recorded_rejects(&db, &report).into_iter().map(|(line, rule, _)| (line, rule)).collect();
    let want: Vec<(u64, String)> = [(3, "min"), (4, "ordered_this_year"), (4, "shipped_after_order"), (5, "exclusive_max"), (6, "shipped_after_order")]
        .iter()
        .map(|(l, r)| (*l, r.to_string()))
        .collect();
    assert_eq!(got, want, "{}", out.evidence());
    // A text compared with a date says how to write the date.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, DATED.replace("date '2025-12-31'", "'2025-12-31'")).unwrap();
    let out = etl(&["validate-spec", bad.to_str().unwrap()], &[("ETL_TEST_SCHEMA", "x")]);
    out.expect_code(2);
    assert!(out.stderr.contains("write the date as a date literal: date '2025-12-31'"), "{}", out.evidence());
}

const USERS: &str = r#"
version: 1
name: users
connections:
  files: { type: local, path: "." }
  db: { type: postgres, url: "{{ env.ETL_TEST_DATABASE_URL }}", schema: "{{ env.ETL_TEST_SCHEMA }}" }
  duck: { type: duckdb, path: "{{ env.ETL_TEST_DUCKDB }}" }
stages:
  users:
    source: { connection: files, key: users.csv }
    target: { connection: "{{ env.ETL_TEST_TARGET }}", table: users, key: [user_id], mode: upsert, surrogate_key: id }
    columns:
      user_id: { type: string }
      email:   { type: string, unique: true }
"#;

#[test]
fn a_unique_value_another_row_of_the_table_holds_is_a_reject_naming_that_rows_key() {
    for target in ["db", "duck"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users.yaml"), USERS).unwrap();
        let db = TestDb::new(&format!("held_{target}"));
        let spec = dir.path().join("users.yaml");
        let duck = dir.path().join("users.duckdb");
        let env = [
            ("ETL_TEST_SCHEMA", db.schema.as_str()),
            ("ETL_TEST_DATABASE_URL", db.url.as_str()),
            ("ETL_TEST_DUCKDB", duck.to_str().unwrap()),
            ("ETL_TEST_TARGET", target),
        ];
        let run = |csv: &str, extra: &[&str]| {
            std::fs::write(dir.path().join("users.csv"), csv).unwrap();
            let mut args = vec!["run", spec.to_str().unwrap(), "--output", "json"];
            args.extend_from_slice(extra);
            etl(&args, &env)
        };
        let rejects_out = dir.path().join("rejects.csv");
        let out = run("user_id,email\nu1,a@x\nu2,b@x\n", &[]);
        out.expect_code(0);
        // u1 is not in today's file but still holds a@x in the table: u3 cannot take it. The
        // stage does not fail: the row is a reject naming the holder, the others load.
        for force in [&[][..], &["--force"][..]] {
            let mut extra = vec!["--rejects-out", rejects_out.to_str().unwrap()];
            extra.extend_from_slice(force);
            let out = run("user_id,email\nu2,b@x\nu3,a@x\nu4,c@x\n", &extra);
            out.expect_code(4);
            let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
            assert_eq!(report["stages"][0]["rejects_by_rule"], serde_json::json!({"unique_in_table": 1}), "{target} {force:?}\n{}", out.evidence());
            let rejects = std::fs::read_to_string(&rejects_out).unwrap();
            let line: Vec<&str> = rejects.lines().filter(|l| l.contains("unique_in_table")).collect();
            assert_eq!(line.len(), 1, "{target}: {rejects}\n{}", out.evidence());
            assert!(line[0].contains(r#","3","email","unique_in_table","a@x","#) && line[0].contains("email is held by another row of users, key u1"), "{target}: {rejects}\n{}", out.evidence());
            assert_eq!(report["stages"][0]["rows_valid"], 2, "{target}\n{}", out.evidence());
        }
        // u1 gives a@x up: u3 may take it, in a later load (PostgreSQL checks a unique column
        // row by row, so within one load the old holder still holds it).
        let out = run("user_id,email\nu1,z@x\nu2,b@x\nu3,a@x\nu4,c@x\n", &[]);
        out.expect_code(4);
        let out = run("user_id,email\nu1,z@x\nu2,b@x\nu3,a@x\nu4,c@x\n", &[]);
        out.expect_code(0);
        if target == "db" {
            let held = db.texts(&format!("SELECT user_id || '=' || email FROM {}.users ORDER BY user_id", db.schema));
            assert_eq!(held, ["u1=z@x", "u2=b@x", "u3=a@x", "u4=c@x"], "{}", out.evidence());
        }
    }
}
