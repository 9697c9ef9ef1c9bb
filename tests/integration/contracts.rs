//! Contracts (`checks:` of a stage): checked in the stage's transaction after its merge, before
//! it commits. A failed `error` check rolls the stage back (exit 5, the table as it was, the
//! result kept in `etl_checks`); a failed `warn` one is reported and the stage loads.

use std::path::Path;

use crate::run::TestDb;
use crate::util::{Output, etl};

fn spec(dir: &Path, severity: &str) -> std::path::PathBuf {
    let text = format!(
        "version: 1
name: contracts_{severity}
connections:
  files: {{ type: local, path: '{dir}' }}
  db: {{ type: postgres, url: \"{{{{ env.ETL_TEST_DATABASE_URL }}}}\", schema: \"{{{{ env.SCHEMA }}}}\" }}
stages:
  trades:
    source: {{ connection: files, key: \"trades_{{{{ run.date }}}}.csv\" }}
    target: {{ connection: db, table: trade, key: [trade_id] }}
    columns:
      trade_id: {{ type: int64 }}
      amount: {{ type: \"decimal(20,2)\", max: 200000000000000000 }}
      traded_at: {{ type: timestamp, format: \"%Y-%m-%dT%H:%M:%S\" }}
    checks:
      - name: steady_count
        severity: {severity}
        row_count: {{ min: 1, change_from_last: {{ max_ratio: 0.5 }} }}
      - name: control_total
        totals: {{ column: amount, equals: \"{{{{ env.CONTROL }}}}\" }}
      - name: fresh
        freshness: {{ column: traded_at, max_age: 1d }}
      - name: no_negative
        sql: \"SELECT trade_id, amount FROM {{{{ env.SCHEMA }}}}.trade WHERE amount < 0 ORDER BY trade_id\"
",
        dir = dir.display()
    );
    let path = dir.join(format!("contracts_{severity}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `n` trades for `date`: trade 1 holds 10^17, the others 1.00 each (trade `negative`, if any,
/// -1.00), all traded at `at`; with the control total of the valid ones.
fn write_trades(dir: &Path, date: &str, n: u64, negative: Option<u64>, at: &str) -> String {
    let mut body = String::from("trade_id,amount,traded_at\n");
    let mut cents: i128 = 0;
    for id in 1..=n {
        let amount: i128 = if id == 1 { 100_000_000_000_000_000_00 } else if Some(id) == negative { -100 } else { 100 };
        cents += amount;
        body.push_str(&format!("{id},{}.{:02},{at}\n", amount / 100, (amount % 100).abs()));
    }
    // A rejected line (amount past `max`) never counts in the total.
    body.push_str(&format!("{},300000000000000000.00,{at}\n", n + 1));
    std::fs::write(dir.join(format!("trades_{date}.csv")), body).unwrap();
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn run(db: &TestDb, spec: &Path, date: &str, control: &str, extra: &[&str]) -> Output {
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    let mut args = vec!["run", spec.to_str().unwrap(), "--date", date];
    args.extend(extra);
    etl(&args, &[("ETL_TEST_DATABASE_URL", &url), ("SCHEMA", &db.schema), ("CONTROL", control)])
}

/// The table's rows with the transaction that wrote each.
fn rows(db: &TestDb) -> Vec<String> {
    db.texts(&format!("SELECT trade_id::text || ' ' || amount::text || ' ' || xmin::text FROM {}.trade ORDER BY trade_id", db.schema))
}

/// The latest run's check results of the spec, `check passed` each.
fn recorded(db: &TestDb, spec_name: &str) -> Vec<String> {
    db.texts(&format!(
        "SELECT check_name || ' ' || passed::text || ' ' || coalesce(observed, '-') FROM etl_checks
          WHERE run_id = (SELECT max(run_id) FROM etl_runs WHERE spec_name = '{spec_name}') ORDER BY check_name"
    ))
}

#[test]
fn a_failed_contract_rolls_the_stage_back_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("contracts");
    let spec = spec(dir.path(), "error");
    let (d1, d2) = ("2025-12-18", "2025-12-19");
    let control = write_trades(dir.path(), d1, 100, None, "2025-12-18T10:00:00");
    assert_eq!(control, "100000000000000099.00");
    let out = run(&db, &spec, d1, &control, &[]);
    out.expect_code(4);
    let day1 = rows(&db);
    assert_eq!(day1.len(), 100, "{}", out.evidence());
    assert_eq!(
        recorded(&db, "contracts_error"),
        ["control_total true 100000000000000099.00", "fresh true 2025-12-18 10:00:00", "no_negative true 0", "steady_count true 101"],
        "{}",
        out.evidence()
    );

    // A tenth of yesterday's rows: refused, the table as it was, the failure recorded.
    let control = write_trades(dir.path(), d2, 10, None, "2025-12-19T10:00:00");
    let out = run(&db, &spec, d2, &control, &["-v"]);
    out.expect_code(5);
    assert!(out.stdout.contains("check steady_count FAILED: 11 rows against 101"), "{}", out.evidence());
    // `-v` names the failed check as it is found, and no check that passed.
    assert!(out.stderr.contains("check steady_count failed (error)") && !out.stderr.contains("check control_total failed"), "{}", out.evidence());
    assert_eq!(rows(&db), day1, "a failed check leaves the table as it was\n{}", out.evidence());
    assert!(recorded(&db, "contracts_error").contains(&"steady_count false 11".to_string()), "{:?}", recorded(&db, "contracts_error"));
    let status = db.texts("SELECT status FROM etl_run_stages WHERE run_id = (SELECT max(run_id) FROM etl_runs WHERE spec_name = 'contracts_error')");
    assert_eq!(status, ["contract_failed"], "{}", out.evidence());

    // A control total one cent off at 10^17: exact decimals, never floats.
    let control = write_trades(dir.path(), d2, 100, None, "2025-12-19T10:00:00");
    let out = run(&db, &spec, d2, "100000000000000099.01", &[]);
    out.expect_code(5);
    assert!(out.stdout.contains("sum of amount over the load's valid rows is 100000000000000099.00, not 100000000000000099.01"), "{}", out.evidence());
    assert_eq!(rows(&db), day1, "{}", out.evidence());

    // An offending row: the query's rows are shown and kept with the run.
    let negative = write_trades(dir.path(), d2, 100, Some(5), "2025-12-19T10:00:00");
    let out = run(&db, &spec, d2, &negative, &[]);
    out.expect_code(5);
    assert!(out.stdout.contains(r#"{"trade_id":5,"amount":-1.00}"#), "{}", out.evidence());
    let kept = db.texts("SELECT rows::text FROM etl_checks WHERE check_name = 'no_negative' AND NOT passed AND run_id = (SELECT max(run_id) FROM etl_runs WHERE spec_name = 'contracts_error')");
    assert_eq!(kept, [r#"[{"amount": -1.00, "trade_id": 5}]"#], "{}", out.evidence());
    assert_eq!(rows(&db), day1, "{}", out.evidence());

    // Stale data: the newest trade a week before the run's date.
    write_trades(dir.path(), d2, 100, None, "2025-12-10T10:00:00");
    let out = run(&db, &spec, d2, &control, &[]);
    out.expect_code(5);
    assert!(out.stdout.contains("check fresh FAILED: the newest traded_at is 2025-12-10 10:00:00, older than 1d before 2025-12-19"), "{}", out.evidence());

    // All well: loads. Loaded again by force (every row equal to the table's, none written), the
    // total still adds up every valid row.
    write_trades(dir.path(), d2, 100, None, "2025-12-19T10:00:00");
    run(&db, &spec, d2, &control, &[]).expect_code(4);
    let out = run(&db, &spec, d2, &control, &["--force"]);
    out.expect_code(4);
    assert!(out.stdout.contains("check control_total passed: sum of amount 100000000000000099.00"), "{}", out.evidence());

}

/// A stage with a `totals` check never reads only its changed lines: the total adds up every
/// valid row of the file, not the changed ones. Two of twenty lines changed, the total the same:
/// the load checks every line and the total passes, as a forced load's would.
#[test]
fn a_changed_file_with_a_totals_check_has_every_line_checked() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("totals_lines");
    let spec = dir.path().join("totals.yaml");
    std::fs::write(
        &spec,
        format!(
            "version: 1
name: totals_lines
connections:
  files: {{ type: local, path: '{}' }}
  db: {{ type: postgres, url: \"{{{{ env.ETL_TEST_DATABASE_URL }}}}\", schema: \"{{{{ env.SCHEMA }}}}\" }}
stages:
  trades:
    source: {{ connection: files, key: trades.csv }}
    target: {{ connection: db, table: trade, key: [trade_ref] }}
    columns:
      trade_ref: {{ type: string }}
      amount: {{ type: \"decimal(20,2)\" }}
    checks:
      - name: control_total
        totals: {{ column: amount, equals: \"210.00\" }}
",
            dir.path().display()
        ),
    )
    .unwrap();
    let write = |amounts: &[u32]| {
        let body: String = amounts.iter().enumerate().map(|(i, a)| format!("T{},{a}.00\n", i + 1)).collect();
        std::fs::write(dir.path().join("trades.csv"), format!("trade_ref,amount\n{body}")).unwrap();
    };
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    let run = || etl(&["run", spec.to_str().unwrap(), "-v"], &[("ETL_TEST_DATABASE_URL", &url), ("SCHEMA", &db.schema)]);
    let mut amounts: Vec<u32> = (1..=20).collect();
    write(&amounts);
    run().expect_code(0);
    amounts.swap(1, 2);
    write(&amounts);
    let out = run();
    out.expect_code(0);
    assert!(out.stdout.contains("check control_total passed: sum of amount 210.00"), "{}", out.evidence());
    assert!(out.stderr.contains("every line is checked: a `totals` check adds up every valid row"), "{}", out.evidence());
    let changed = db.texts(&format!("SELECT trade_ref || ' ' || amount::text FROM {}.trade WHERE trade_ref IN ('T2', 'T3') ORDER BY 1", db.schema));
    assert_eq!(changed, ["T2 3.00", "T3 2.00"], "{}", out.evidence());
}

#[test]
fn a_failed_warn_contract_loads_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("contractswarn");
    let spec = spec(dir.path(), "warn");
    let control = write_trades(dir.path(), "2025-12-18", 100, None, "2025-12-18T10:00:00");
    run(&db, &spec, "2025-12-18", &control, &[]).expect_code(4);
    let control = write_trades(dir.path(), "2025-12-19", 10, None, "2025-12-19T10:00:00");
    let out = run(&db, &spec, "2025-12-19", &control, &["--output", "json"]);
    out.expect_code(4);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    let check = report["stages"][0]["checks"].as_array().and_then(|c| c.iter().find(|c| c["check"] == "steady_count")).cloned();
    let check = check.unwrap_or_else(|| panic!("no steady_count check in the report\n{}", out.evidence()));
    assert_eq!((check["passed"].as_bool(), check["severity"].as_str(), check["observed"].as_str()), (Some(false), Some("warn"), Some("11")), "{}", out.evidence());
    // The ten rows loaded over yesterday's (an upsert: trades 11..100 stay).
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade WHERE traded_at = '2025-12-19 10:00:00'", db.schema)), 10, "{}", out.evidence());
}

/// A reconciliation across two stages with a `sql` check: per account, the trades' amounts add up
/// to the total the accounts' file states. The trades stage does not reference the accounts, yet
/// a change to them is a change its check must see: its file unchanged, it is checked again.
#[test]
fn a_reconciliation_across_stages_fails_naming_the_account_and_sees_the_other_tables_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("reconcile");
    let s = &db.schema;
    let head = crate::util::spec_head("reconcile", dir.path().display());
    let text = format!(
        "{head}stages:
  accounts:
    source: {{ connection: files, key: accounts.csv }}
    target: {{ connection: db, table: account, key: [account_id] }}
    columns:
      account_id: {{ type: string }}
      traded_total: {{ type: \"decimal(20,2)\" }}
  trades:
    needs: [accounts]
    source: {{ connection: files, key: trades.csv }}
    target: {{ connection: db, table: trade, key: [trade_id] }}
    columns:
      trade_id: {{ type: int64 }}
      account_id: {{ type: string }}
      amount: {{ type: \"decimal(20,2)\" }}
    checks:
      - name: trades_add_up
        sql: \"SELECT a.account_id, a.traded_total, t.total FROM {s}.account a JOIN (SELECT account_id, sum(amount) AS total FROM {s}.trade GROUP BY account_id) t USING (account_id) WHERE a.traded_total <> t.total ORDER BY 1\"
",
    );
    let spec = dir.path().join("reconcile.yaml");
    std::fs::write(&spec, text).unwrap();
    let write = |accounts: &str, trades: &str| {
        std::fs::write(dir.path().join("accounts.csv"), format!("account_id,traded_total\n{accounts}")).unwrap();
        std::fs::write(dir.path().join("trades.csv"), format!("trade_id,account_id,amount\n{trades}")).unwrap();
    };
    let trades = || db.texts(&format!("SELECT trade_id::text || ' ' || amount::text || ' ' || xmin::text FROM {s}.trade ORDER BY trade_id"));
    write("A,30.00\nB,5.00\n", "1,A,10.00\n2,A,20.00\n3,B,5.00\n");
    run(&db, &spec, "2025-12-19", "0", &[]).expect_code(0);
    let loaded = trades();

    // One trade's amount edited: the trades stage fails naming account A, its table as it was.
    write("A,30.00\nB,5.00\n", "1,A,10.00\n2,A,21.00\n3,B,5.00\n");
    let out = run(&db, &spec, "2025-12-19", "0", &[]);
    out.expect_code(5);
    assert!(out.stdout.contains(r#"{"account_id":"A","traded_total":30.00,"total":31.00}"#), "{}", out.evidence());
    assert_eq!(trades(), loaded, "{}", out.evidence());

    // The trades file as it was, the accounts' total for A changed: the trades stage is not
    // skipped as unchanged, and its check fails.
    write("A,31.00\nB,5.00\n", "1,A,10.00\n2,A,20.00\n3,B,5.00\n");
    let out = run(&db, &spec, "2025-12-19", "0", &[]);
    out.expect_code(5);
    assert!(!out.stdout.contains("stage trades unchanged since run"), "{}", out.evidence());
    assert!(out.stdout.contains(r#"{"account_id":"A","traded_total":31.00,"total":30.00}"#), "{}", out.evidence());

    // Both as they were: passes, and then both stages are skipped as unchanged.
    write("A,30.00\nB,5.00\n", "1,A,10.00\n2,A,20.00\n3,B,5.00\n");
    run(&db, &spec, "2025-12-19", "0", &[]).expect_code(0);
    let out = run(&db, &spec, "2025-12-19", "0", &[]);
    out.expect_code(0);
    assert!(out.stdout.contains("stage trades unchanged since run"), "{}", out.evidence());
}

/// A control total the sender states in a JSON manifest beside the file: read digit for digit
/// (one cent at 10^17 tells), and a manifest that changes is a change a skipped stage must see.
#[test]
fn a_manifest_total_one_cent_off_at_ten_to_the_seventeen_fails() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("manifest");
    let head = crate::util::spec_head("manifest", dir.path().display());
    let text = format!(
        "{head}stages:
  trades:
    source: {{ connection: files, key: \"trades_{{{{ run.date }}}}.csv\" }}
    target: {{ connection: db, table: trade, key: [trade_id] }}
    columns:
      trade_id: {{ type: int64 }}
      amount: {{ type: \"decimal(20,2)\", max: 200000000000000000 }}
      traded_at: {{ type: timestamp, format: \"%Y-%m-%dT%H:%M:%S\" }}
    checks:
      - name: manifest_total
        totals: {{ column: amount, manifest: {{ file: \"manifest_{{{{ run.date }}}}.json\", path: trades.amount }} }}
      - name: manifest_count
        totals: {{ column: trade_id, of: count, manifest: {{ file: \"manifest_{{{{ run.date }}}}.json\", path: trades.rows }} }}
",
    );
    let spec = dir.path().join("manifest.yaml");
    std::fs::write(&spec, text).unwrap();
    let date = "2025-12-19";
    let total = write_trades(dir.path(), date, 100, None, "2025-12-19T10:00:00");
    let manifest = |amount: &str| std::fs::write(dir.path().join(format!("manifest_{date}.json")), format!(r#"{{"trades": {{"amount": {amount}, "rows": "100"}}}}"#)).unwrap();

    manifest("100000000000000099.01");
    let out = run(&db, &spec, date, "0", &[]);
    out.expect_code(5);
    assert!(out.stdout.contains("check manifest_total FAILED: sum of amount over the load's valid rows is 100000000000000099.00, not 100000000000000099.01"), "{}", out.evidence());
    assert!(out.stdout.contains("check manifest_count passed: count of trade_id 100"), "{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'trade'", db.schema)), 0, "the table the failed stage created is gone\n{}", out.evidence());

    manifest(&total);
    let out = run(&db, &spec, date, "0", &[]);
    out.expect_code(4);
    assert!(out.stdout.contains("check manifest_total passed"), "{}", out.evidence());
    // The same file with a manifest that now disagrees: not skipped as unchanged, refused.
    manifest("100000000000000098.99");
    let out = run(&db, &spec, date, "0", &[]);
    out.expect_code(5);
    assert!(!out.stdout.contains("unchanged since run"), "{}", out.evidence());
    // A manifest without the value: the check fails saying so.
    std::fs::write(dir.path().join(format!("manifest_{date}.json")), r#"{"trades": {}}"#).unwrap();
    let out = run(&db, &spec, date, "0", &[]);
    out.expect_code(5);
    assert!(out.stdout.contains("has nothing at `trades.amount` (no `amount`)"), "{}", out.evidence());
    // No manifest at all: the run fails before anything loads, naming it (exit 3).
    std::fs::remove_file(dir.path().join(format!("manifest_{date}.json"))).unwrap();
    let out = run(&db, &spec, date, "0", &[]);
    out.expect_code(3);
    assert!(out.stderr.contains(&format!("manifest_{date}.json")), "{}", out.evidence());
}

/// An analytic's `expect`: every result row must meet each condition; one that does not fails
/// the analytic (exit 1) showing the rows, after the loads, which stand.
#[test]
fn an_analytic_whose_expectation_fails_exits_1_showing_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("expect");
    let s = &db.schema;
    let head = crate::util::spec_head("expect", dir.path().display());
    let text = format!(
        "{head}stages:
  accounts:
    source: {{ connection: files, key: accounts.csv }}
    target: {{ connection: db, table: account, key: [account_id] }}
    columns:
      account_id: {{ type: string }}
      cash: {{ type: \"decimal(20,2)\" }}
analytics:
  cash_by_account:
    sql: SELECT account_id, cash FROM account ORDER BY account_id
    expect: [\"cash >= 0\", \"account_id <> ''\"]
",
    );
    let spec = dir.path().join("expect.yaml");
    std::fs::write(&spec, text).unwrap();
    std::fs::write(dir.path().join("accounts.csv"), "account_id,cash\nA,1.00\nB,2.00\n").unwrap();
    let out = run(&db, &spec, "2025-12-19", "0", &[]);
    out.expect_code(0);
    assert!(out.stdout.contains("expects cash >= 0: met"), "{}", out.evidence());

    std::fs::write(dir.path().join("accounts.csv"), "account_id,cash\nA,1.00\nB,-2.00\n").unwrap();
    let out = run(&db, &spec, "2025-12-19", "0", &["--output", "json"]);
    out.expect_code(1);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    let failed = &report["analytics"][0]["expectations"][0];
    assert_eq!((failed["passed"].as_bool(), failed["rows"][0].as_str()), (Some(false), Some(r#"{"account_id":"B","cash":-2.00}"#)), "{}", out.evidence());
    assert_eq!(db.texts(&format!("SELECT cash::text FROM {s}.account WHERE account_id = 'B'")), ["-2.00"], "the load stands\n{}", out.evidence());
    let error = db.texts("SELECT error FROM etl_runs WHERE run_id = (SELECT max(run_id) FROM etl_runs WHERE spec_name = 'expect')");
    assert!(error[0].contains("analytic `cash_by_account` expects cash >= 0: 1 rows do not meet it"), "{error:?}");
}

/// A control total in the sender's trailer line: the line is set aside (not a row, not a reject),
/// its field read digit for digit; a set's files' trailers add up.
#[test]
fn a_trailer_line_is_set_aside_and_its_total_checked() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("trailer");
    let head = crate::util::spec_head("trailer", dir.path().display());
    let text = format!(
        "{head}stages:
  trades:
    source: {{ connection: files, files: \"trades_*.csv\", trailer: TRL }}
    target: {{ connection: db, table: trade, key: [trade_id] }}
    columns:
      trade_id: {{ type: int64 }}
      amount: {{ type: \"decimal(20,2)\" }}
    checks:
      - {{ name: sender_rows, totals: {{ column: trade_id, of: count, trailer: 2 }} }}
      - {{ name: sender_total, totals: {{ column: amount, trailer: 3 }} }}
",
    );
    let spec = dir.path().join("trailer.yaml");
    std::fs::write(&spec, text).unwrap();
    std::fs::write(dir.path().join("trades_1.csv"), "trade_id,amount\n1,100000000000000000.00\n2,1.50\nTRL,2,100000000000000001.50\n").unwrap();
    std::fs::write(dir.path().join("trades_2.csv"), "trade_id,amount\r\n3,2.25\r\nTRL,1,2.25\r\n").unwrap();
    let out = run(&db, &spec, "2025-12-19", "0", &["--output", "json"]);
    out.expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    assert_eq!((report["stages"][0]["rows_read"].as_u64(), report["stages"][0]["rows_rejected"].as_u64()), (Some(3), Some(0)), "the trailers are no rows\n{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade", db.schema)), 3);

    // A later file whose trailer states one cent more than its rows hold: refused.
    std::fs::write(dir.path().join("trades_3.csv"), "trade_id,amount\n4,1.00\nTRL,1,1.01\n").unwrap();
    let out = run(&db, &spec, "2025-12-19", "0", &[]);
    out.expect_code(5);
    assert!(out.stdout.contains("check sender_total FAILED: sum of amount over the load's valid rows is 1.00, not 1.01"), "{}", out.evidence());
    // A file without its trailer: the check says so.
    std::fs::write(dir.path().join("trades_3.csv"), "trade_id,amount\n4,1.00\n").unwrap();
    let out = run(&db, &spec, "2025-12-19", "0", &[]);
    out.expect_code(5);
    assert!(out.stdout.contains("trades_3.csv ends without a trailer line"), "{}", out.evidence());
}

/// The same on a DuckDB target: the failing rows shown as DuckDB writes a row.
#[test]
fn an_analytic_expectation_holds_on_a_duckdb_target_too() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "version: 1
name: expect_duck
connections:
  files: {{ type: local, path: '{dir}' }}
  lake: {{ type: duckdb, path: '{dir}/lake.duckdb' }}
stages:
  accounts:
    source: {{ connection: files, key: accounts.csv }}
    target: {{ connection: lake, table: account, key: [account_id] }}
    columns:
      account_id: {{ type: string }}
      cash: {{ type: \"decimal(20,2)\" }}
analytics:
  cash_by_account:
    sql: SELECT account_id, cash FROM account ORDER BY account_id
    expect: [\"cash >= 0\"]
",
        dir = dir.path().display()
    );
    let spec = dir.path().join("expect_duck.yaml");
    std::fs::write(&spec, text).unwrap();
    std::fs::write(dir.path().join("accounts.csv"), "account_id,cash\nA,1.00\nB,-2.00\n").unwrap();
    let out = etl(&["run", spec.to_str().unwrap()], &[]);
    out.expect_code(1);
    assert!(out.stdout.contains("expects cash >= 0: FAILED: 1 rows do not meet it") && out.stdout.contains("B") && out.stdout.contains("-2.00"), "{}", out.evidence());
}
