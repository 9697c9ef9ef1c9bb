//! `etl plan` shows every statement a run sends. Runs of small_etl.yaml as the role `etl_traced`,
//! whose every statement PostgreSQL writes to its log (scripts/services.sh sets it up), go
//! through each path a PostgreSQL stage can take: a dry run, a first load into new tables, a
//! re-run that reuses both stages, a changed file read line by line, and a forced load into
//! tables with rows. Every statement the server saw must be in the plan's text, except the
//! driver's own transaction control and the migrator's (the plan names the migrations).

use std::path::Path;

use crate::extract::generate;
use crate::run::TestDb;
use crate::unchanged::change_one_trade;
use crate::util::{Output, etl, root};

/// Statements that are the driver's or the migrator's, not the Plan's.
fn driver_or_migrator(sql: &str, migrations: &str) -> bool {
    matches!(sql, "BEGIN" | "COMMIT" | "ROLLBACK")
        || sql.contains("_sqlx_migrations")
        || sql == "SELECT current_database()"
        || sql.starts_with("SELECT pg_advisory_lock(") && !sql.contains("hashtextextended")
        || sql.starts_with("SELECT pg_advisory_unlock(")
        || sql.contains("pg_catalog.pg_type")
        || migrations.contains(sql)
}

/// The tests here read one server log of one traced role: they run one at a time, so each sees
/// only its own statements.
pub static TRACED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Collapses every run of whitespace to one space.
pub fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The statements logged since byte `from` of the server's log: the text after `statement: `
/// or `execute NAME: `, with the lines that continue it. A log whose lines name the session's
/// application (`[PID/APP]`, the Citus coordinator's) gives only the statements of etl's own
/// sessions (`etl`), not those Citus sends to the coordinator's own placements.
fn logged(log: &Path, from: u64) -> Vec<String> {
    let bytes = std::fs::read(log).unwrap_or_else(|e| panic!("cannot read the server's log {}: {e}", log.display()));
    let text = String::from_utf8_lossy(&bytes[from as usize..]).into_owned();
    let entry = regex::Regex::new(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)? \S+ \[\d+(?:/([^\]]*))?\] (\S+):  (.*)$").unwrap();
    let statement = regex::Regex::new(r"^(statement|execute [^:]+): (.*)$").unwrap();
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        if let Some(c) = entry.captures(line) {
            open = false;
            let etls = c.get(2).is_none_or(|app| app.as_str() == "etl");
            if &c[3] == "LOG"
                && etls
                && let Some(s) = statement.captures(&c[4])
            {
                out.push(s[2].to_string());
                open = true;
            }
        } else if open && let Some(last) = out.last_mut() {
            last.push('\n');
            last.push_str(line);
        }
    }
    out.iter().map(|s| squash(s).trim_end_matches(';').to_string()).collect()
}

#[test]
fn every_statement_a_run_sends_is_in_its_plan() {
    let Some(log) = std::env::var_os("ETL_TEST_PG_LOG").map(std::path::PathBuf::from) else {
        panic!("ETL_TEST_PG_LOG is not set: run the tests with scripts/test.sh");
    };
    let _one_at_a_time = TRACED.lock().unwrap_or_else(|e| e.into_inner());
    let data = generate(200, 1_500, 0.02, 71);
    let (_db, sets) = traced("traced", data.path());
    let command = |verb: &str, extra: &[&str]| -> Output {
        let mut args = vec![verb, "specs/small_etl.yaml"];
        args.extend(sets.iter().map(String::as_str));
        args.extend(extra);
        etl(&args, &[])
    };
    let plan = command("plan", &[]);
    plan.expect_code(0);
    let planned = squash(&plan.stdout);
    let migrations = migrations();
    // Each path: a dry run, the first load, a reuse, one changed line, a forced load.
    // Each path, and what its stderr says to show it was taken.
    let runs: [(&str, Vec<&str>, &str); 5] = [
        ("a dry run into new tables", vec!["--dry-run", "-v"], "the table is empty: COPY straight into it"),
        ("the first load", vec!["-v"], "keys, indexes and foreign keys built"),
        ("a re-run that reuses both stages", vec!["-v"], "unchanged since run"),
        ("a changed file, read line by line", vec!["-v"], "only the changed lines are read"),
        ("a forced load into tables with rows", vec!["--force", "-v"], "merged into the table"),
    ];
    let mut seen = 0;
    for (what, extra, path) in runs {
        if what.starts_with("a changed file") {
            change_one_trade(data.path());
        }
        let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let out = command("run", &extra);
        out.expect_code(4);
        assert!(out.stderr.contains(path), "{what}: the run did not take its path (`{path}`)\n{}", out.evidence());
        if what.starts_with("a forced load") {
            assert!(!out.stderr.contains("COPY straight"), "{what}: tables with rows are merged into\n{}", out.evidence());
        }
        let sent = assert_planned_but(&log, from, &planned, &migrations, what, &plan.stdout, &out, |_| false);
        // Each table the run's transaction created takes its rows by `COPY … FREEZE` (written
        // as already visible; again if a repeated key sends its files through the two passes);
        // a dry run, rolled back, never freezes.
        let mut frozen: Vec<&str> = sent
            .iter()
            .filter(|s| s.starts_with("COPY ") && s.contains("FREEZE"))
            .filter_map(|s| s["COPY ".len()..].split(' ').next().and_then(|t| t.rsplit('.').next()))
            .collect();
        frozen.dedup();
        let expected: &[&str] = if what == "the first load" { &["\"asset\"", "\"trade\""] } else { &[] };
        assert_eq!(frozen, expected, "{what}: the tables given COPY … FREEZE (those it created)\n{}", out.evidence());
        seen += sent.len();
    }
    assert!(seen > 100, "too few statements logged ({seen}) for five runs");
}

/// A schema of its own that the traced role may use, and the `--set`s pointing a spec's `db` at it
/// as that role and its `lake` at `dir`.
fn traced(name: &str, dir: &Path) -> (TestDb, [String; 4]) {
    let db = TestDb::new(name);
    db.exec(&format!("GRANT ALL ON SCHEMA {} TO etl_traced", db.schema));
    let port: u16 = std::env::var("ETL_PG_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(15432);
    let url = format!("postgres://etl_traced:etltraced@127.0.0.1:{port}/etl_test?options=-c%20search_path%3D{}", db.schema);
    let sets = [
        "--set".to_string(),
        format!("connections.db={{type: postgres, url: '{url}', schema: {}}}", db.schema),
        "--set".to_string(),
        format!("connections.lake={{type: local, path: '{}'}}", dir.display()),
    ];
    (db, sets)
}

/// The engine's migrations, squashed: their statements are the migrator's, not the Plan's.
pub fn migrations() -> String {
    let mut migrations = String::new();
    let mut files: Vec<_> = std::fs::read_dir(root().join("migrations")).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    for f in files {
        migrations.push_str(&squash(&std::fs::read_to_string(f).unwrap()));
        migrations.push(' ');
    }
    migrations
}

/// Fails on any statement logged since `from` that the plan does not show; returns how many
/// were logged.
pub fn assert_planned(log: &Path, from: u64, planned: &str, migrations: &str, what: &str, plan: &str, out: &Output) -> usize {
    assert_planned_but(log, from, planned, migrations, what, plan, out, |_| false).len()
}

/// [`assert_planned`], leaving out the statements `others` says are not the run's own (those a
/// server sends itself); returns the statements logged but those.
#[allow(clippy::too_many_arguments)]
pub fn assert_planned_but(log: &Path, from: u64, planned: &str, migrations: &str, what: &str, plan: &str, out: &Output, others: impl Fn(&str) -> bool) -> Vec<String> {
    let statements: Vec<String> = logged(log, from).into_iter().filter(|s| !others(s)).collect();
    assert!(!statements.is_empty(), "{what}: the server logged no statement of etl_traced in {}\n{}", log.display(), out.evidence());
    let missing: Vec<&String> = statements.iter().filter(|s| !driver_or_migrator(s, migrations) && !planned.contains(s.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} statement(s) sent that `etl plan` does not show:\n{}\n\n--- etl plan ---\n{plan}\n{}",
        missing.len(),
        missing.iter().map(|s| format!("  {s}")).collect::<Vec<_>>().join("\n"),
        out.evidence()
    );
    statements
}

/// The same for a file set (specs/daily.yaml over `etl-datagen --days` files in a folder): the
/// ledger read before the downloads and under the lock, the per-file reads, the ledger rows, a
/// re-run that loads nothing, and a late file.
#[test]
fn every_statement_a_file_set_run_sends_is_in_its_plan() {
    let Some(log) = std::env::var_os("ETL_TEST_PG_LOG").map(std::path::PathBuf::from) else {
        panic!("ETL_TEST_PG_LOG is not set: run the tests with scripts/test.sh");
    };
    let _one_at_a_time = TRACED.lock().unwrap_or_else(|e| e.into_inner());
    let data = tempfile::tempdir().unwrap();
    let generated = std::process::Command::new(env!("CARGO_BIN_EXE_etl-datagen"))
        .args(["--out", data.path().to_str().unwrap(), "--assets", "100", "--trades", "600", "--seed", "72", "--days", "1", "--files-per-day", "3", "--gzip"])
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let (_db, sets) = traced("tracedset", data.path());
    let command = |verb: &str, extra: &[&str]| -> Output {
        let mut args = vec![verb, "specs/daily.yaml", "--date", "2025-12-22"];
        args.extend(sets.iter().map(String::as_str));
        args.extend(extra);
        etl(&args, &[])
    };
    let plan = command("plan", &[]);
    plan.expect_code(0);
    let planned = squash(&plan.stdout);
    let migrations = migrations();
    let late = data.path().join("trades/2025-12-22/part-0009.csv.gz");
    let mut seen = 0;
    for (what, path) in [("the first load", "3 file(s): 3 loaded, 0 loaded before"), ("a re-run of the same files", "3 file(s): 0 loaded, 3 loaded before"), ("a late file", "4 file(s): 1 loaded, 3 loaded before")] {
        if what == "a late file" {
            std::fs::copy(data.path().join("trades/2025-12-22/part-0001.csv.gz"), &late).unwrap();
        }
        let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let out = command("run", &["-v"]);
        assert!(out.code == 4 || out.code == 0, "{what}\n{}", out.evidence());
        assert!(out.stderr.contains(path), "{what}: the run did not take its path (`{path}`)\n{}", out.evidence());
        if what.starts_with("a forced load") {
            assert!(!out.stderr.contains("COPY straight"), "{what}: tables with rows are merged into\n{}", out.evidence());
        }
        seen += assert_planned(&log, from, &planned, &migrations, what, &plan.stdout, &out);
    }
    assert!(seen > 30, "too few statements logged ({seen}) for three runs");
}

/// The same for a snapshot (a date's rows replaced), a soft delete (the file's keys copied in,
/// vanished keys flagged, returned ones cleared), a history (versions rewritten), the three
/// `on_delete`s and a stage's contracts, over local files: a first load, then loads with a key
/// gone and back.
#[test]
fn every_statement_of_a_snapshot_and_a_soft_delete_is_in_its_plan() {
    let Some(log) = std::env::var_os("ETL_TEST_PG_LOG").map(std::path::PathBuf::from) else {
        panic!("ETL_TEST_PG_LOG is not set: run the tests with scripts/test.sh");
    };
    let _one_at_a_time = TRACED.lock().unwrap_or_else(|e| e.into_inner());
    let data = tempfile::tempdir().unwrap();
    let spec = data.path().join("kept.yaml");
    std::fs::write(
        &spec,
        "version: 1
name: kept
connections:
  lake: { type: local, path: . }
  db: { type: postgres, host: localhost, database: none }
stages:
  daily:
    source: { connection: lake, key: daily.csv }
    target: { connection: db, table: balance_daily, key: [account_id], mode: snapshot, as_of: business_date }
    columns:
      account_id: { type: string }
      cash: { type: \"decimal(20,2)\" }
      business_date: { type: date, value: \"{{ run.date }}\" }
  current:
    source: { connection: lake, key: daily.csv }
    target: { connection: db, table: balance, key: [account_id], delete_missing: soft, max_delete_ratio: 0.9 }
    columns:
      account_id: { type: string }
      cash: { type: \"decimal(20,2)\" }
  versions:
    source: { connection: lake, key: daily.csv }
    target: { connection: db, table: balance_history, key: [account_id], mode: history, as_of: business_date, delete_missing: close, max_delete_ratio: 0.9 }
    columns:
      account_id: { type: string }
      cash: { type: \"decimal(20,2)\" }
      business_date: { type: date, value: \"{{ run.date }}\" }
  cascading:
    source: { connection: lake, key: daily.csv }
    target: { connection: db, table: account_cascade, key: [account_id], delete_missing: hard, max_delete_ratio: 0.9, on_delete: cascade }
    columns:
      account_id: { type: string }
      cash: { type: \"decimal(20,2)\" }
    checks:
      - { name: counted, row_count: { min: 1, change_from_last: { max_ratio: 1 } } }
      - { name: no_negative_cash, sql: \"SELECT account_id FROM account_cascade WHERE cash < 0\" }
  flagging:
    source: { connection: lake, key: daily.csv }
    target: { connection: db, table: account_soft, key: [account_id], delete_missing: hard, max_delete_ratio: 0.9, on_delete: soft }
    columns:
      account_id: { type: string }
      cash: { type: \"decimal(20,2)\" }
  restricting:
    source: { connection: lake, key: daily.csv }
    target: { connection: db, table: account_restrict, key: [account_id], delete_missing: hard, max_delete_ratio: 0.9 }
    columns:
      account_id: { type: string }
      cash: { type: \"decimal(20,2)\" }
  orders:
    needs: [cascading, flagging, restricting]
    source: { connection: lake, key: orders.csv }
    target: { connection: db, table: orders, key: [order_id] }
    columns:
      order_id: { type: int64 }
      cascade_account: { type: string, references: cascading.account_id }
      soft_account: { type: string, references: flagging.account_id }
      restrict_account: { type: string, references: restricting.account_id }
",
    )
    .unwrap();
    // Order 2 references C, which goes and comes back: deleted with it (cascade), its line then
    // rejected, then loaded again. Order 3 references B through the soft stage: when B goes,
    // that stage keeps it flagged. No order references a key the restricting stage loses.
    std::fs::write(data.path().join("orders.csv"), "order_id,cascade_account,soft_account,restrict_account\n1,A,A,A\n2,C,C,A\n3,A,B,A\n").unwrap();
    let (_db, sets) = traced("tracedkept", data.path());
    let command = |verb: &str, extra: &[&str]| -> Output {
        let mut args = vec![verb, spec.to_str().unwrap(), "--date", "2025-12-22"];
        args.extend(sets.iter().map(String::as_str));
        args.extend(extra);
        etl(&args, &[])
    };
    let plan = command("plan", &[]);
    plan.expect_code(0);
    let planned = squash(&plan.stdout);
    let migrations = migrations();
    let mut seen = 0;
    for (what, rows, path) in [
        ("the first load", "A,1.00\nB,2.00\nC,3.00\n", "keys, indexes and foreign keys built"),
        ("a key gone", "A,1.50\nB,2.00\n", "merged into the table"),
        ("the key back", "A,1.50\nB,2.00\nC,3.00\n", "merged into the table"),
        ("a referenced key gone", "A,1.50\nC,3.00\n", "merged into the table"),
    ] {
        std::fs::write(data.path().join("daily.csv"), format!("account_id,cash\n{rows}")).unwrap();
        let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let out = command("run", &["-v"]);
        // C gone: order 2's line is rejected (4).
        assert!(matches!(out.code, 0 | 4), "{what}\n{}", out.evidence());
        assert!(out.stderr.contains(path), "{what}: the run did not take its path (`{path}`)\n{}", out.evidence());
        if what.starts_with("a forced load") {
            assert!(!out.stderr.contains("COPY straight"), "{what}: tables with rows are merged into\n{}", out.evidence());
        }
        // The history reads only its changed lines after the first load (a restated date): the
        // statements of that path are checked too.
        if what != "the first load" {
            assert!(crate::unchanged::carried_over(&out, "versions") > 0, "{what}: the history read every line\n{}", out.evidence());
        }
        seen += assert_planned(&log, from, &planned, &migrations, what, &plan.stdout, &out);
    }
    assert!(seen > 30, "too few statements logged ({seen}) for three runs");
}
