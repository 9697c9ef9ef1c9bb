//! Keeping each business date's rows (`mode: snapshot`): dates side by side, a restated date
//! rewriting exactly its own rows in the stage's transaction, the other dates' rows untouched.
//! And keys that vanish from a complete file (`delete_missing`): deleted or flagged, never more
//! than `max_delete_ratio` of the table at once.

use std::path::Path;

use crate::run::TestDb;
use crate::util::{Output, etl};

const DAYS: [&str; 5] = ["2025-12-15", "2025-12-16", "2025-12-17", "2025-12-18", "2025-12-19"];

fn snapshot_spec(dir: &Path) -> std::path::PathBuf {
    let spec = format!(
        "version: 1
name: snapshots
connections:
  files: {{ type: local, path: '{dir}' }}
  db: {{ type: postgres, url: \"{{{{ env.ETL_TEST_DATABASE_URL }}}}\", schema: \"{{{{ env.SCHEMA }}}}\" }}
stages:
  assets:
    source: {{ connection: files, key: \"assets/{{{{ run.date }}}}.csv\" }}
    target: {{ connection: db, table: asset_daily, key: [account_id], mode: snapshot, as_of: business_date }}
    columns:
      account_id: {{ type: string }}
      cash: {{ type: \"decimal(20,2)\", min: 0 }}
      business_date: {{ type: date, value: \"{{{{ run.date }}}}\" }}
",
        dir = dir.display()
    );
    let path = dir.join("snapshots.yaml");
    std::fs::write(&path, spec).unwrap();
    path
}

fn load(db: &TestDb, spec: &Path, date: &str) -> Output {
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    etl(&["run", spec.to_str().unwrap(), "--date", date], &[("ETL_TEST_DATABASE_URL", &url), ("SCHEMA", &db.schema)])
}

/// Each date's rows, with the transaction that wrote each (`xmin`), in order.
fn rows_of(db: &TestDb, date: &str) -> Vec<String> {
    db.texts(&format!(
        "SELECT account_id || ' ' || cash::text || ' ' || xmin::text FROM {}.asset_daily WHERE business_date = '{date}' ORDER BY account_id",
        db.schema
    ))
}

fn write_day(dir: &Path, date: &str, rows: &[(&str, &str)]) {
    let body: String = rows.iter().map(|(a, c)| format!("{a},{c}\n")).collect();
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("assets").join(format!("{date}.csv")), format!("account_id,cash\n{body}")).unwrap();
}

#[test]
fn a_snapshot_keeps_each_date_and_a_restated_date_rewrites_only_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("snapshots");
    let spec = snapshot_spec(dir.path());
    // Five days: values change, an account appears on day 3, one vanishes on day 4.
    for (i, day) in DAYS.iter().enumerate() {
        let mut rows = vec![("A", format!("{}.00", 100 + i)), ("B", format!("{}.50", 200 + i))];
        if i >= 2 {
            rows.push(("C", "7.00".into()));
        }
        if i >= 3 {
            rows.retain(|(a, _)| *a != "B");
        }
        let rows: Vec<(&str, &str)> = rows.iter().map(|(a, c)| (*a, c.as_str())).collect();
        write_day(dir.path(), day, &rows);
        load(&db, &spec, day).expect_code(0);
    }
    let per_day = db.texts(&format!(
        "SELECT business_date::text || ' ' || string_agg(account_id || '=' || cash::text, ',' ORDER BY account_id) FROM {}.asset_daily GROUP BY business_date ORDER BY business_date",
        db.schema
    ));
    assert_eq!(
        per_day,
        [
            "2025-12-15 A=100.00,B=200.50",
            "2025-12-16 A=101.00,B=201.50",
            "2025-12-17 A=102.00,B=202.50,C=7.00",
            "2025-12-18 A=103.00,C=7.00",
            "2025-12-19 A=104.00,C=7.00",
        ],
        "each date's rows side by side"
    );
    let before: Vec<Vec<String>> = DAYS.iter().map(|d| rows_of(&db, d)).collect();

    // Day 3 restated: A changes, B vanishes, D appears. Only day 3's rows change.
    write_day(dir.path(), DAYS[2], &[("A", "102.25"), ("C", "7.00"), ("D", "1.00")]);
    let out = load(&db, &spec, DAYS[2]);
    out.expect_code(0);
    let restated = db.texts(&format!(
        "SELECT account_id || '=' || cash::text FROM {}.asset_daily WHERE business_date = '{}' ORDER BY 1",
        db.schema, DAYS[2]
    ));
    assert_eq!(restated, ["A=102.25", "C=7.00", "D=1.00"], "{}", out.evidence());
    for (i, day) in DAYS.iter().enumerate().filter(|(i, _)| *i != 2) {
        assert_eq!(rows_of(&db, day), before[i], "{day}'s rows are untouched (same values, same xmin)\n{}", out.evidence());
    }

    // The same file again: the stage is skipped, nothing written.
    let after: Vec<Vec<String>> = DAYS.iter().map(|d| rows_of(&db, d)).collect();
    let out = load(&db, &spec, DAYS[2]);
    out.expect_code(0);
    assert!(out.stdout.contains("unchanged"), "an unchanged restatement is skipped\n{}", out.evidence());
    assert_eq!(DAYS.iter().map(|d| rows_of(&db, d)).collect::<Vec<_>>(), after, "{}", out.evidence());

    // A restated day with no rows would empty its date: refused, the date keeps its rows.
    write_day(dir.path(), DAYS[4], &[]);
    let out = load(&db, &spec, DAYS[4]);
    out.expect_code(5);
    assert!(out.stderr.contains("would empty") || out.stdout.contains("would empty"), "{}", out.evidence());
    assert_eq!(rows_of(&db, DAYS[4]), after[4], "{}", out.evidence());

    // The key is unique per date, not across dates: the created table says so.
    let key = db.texts(&format!(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = '{}.asset_daily'::regclass AND contype = 'p'",
        db.schema
    ));
    assert_eq!(key, ["PRIMARY KEY (business_date, account_id)"]);
}

fn deleting_spec(dir: &Path, how: &str) -> std::path::PathBuf {
    let spec = format!(
        "version: 1
name: deleting_{how}
connections:
  files: {{ type: local, path: '{dir}' }}
  db: {{ type: postgres, url: \"{{{{ env.ETL_TEST_DATABASE_URL }}}}\", schema: \"{{{{ env.SCHEMA }}}}\" }}
stages:
  assets:
    source: {{ connection: files, key: assets_{how}.csv }}
    target: {{ connection: db, table: asset_{how}, key: [account_id], delete_missing: {how} }}
    columns:
      account_id: {{ type: string }}
      cash: {{ type: \"decimal(20,2)\", min: 0 }}
  trades:
    needs: [assets]
    source: {{ connection: files, key: trades_{how}.csv }}
    target: {{ connection: db, table: trade_{how}, key: [trade_id] }}
    columns:
      trade_id: {{ type: int64 }}
      account_id: {{ type: string, references: assets.account_id }}
",
        dir = dir.display()
    );
    let path = dir.join(format!("deleting_{how}.yaml"));
    std::fs::write(&path, spec).unwrap();
    path
}

fn accounts(db: &TestDb, table: &str, extra: &str) -> Vec<String> {
    db.texts(&format!("SELECT account_id || ' ' || cash::text || ' ' || xmin::text{extra} FROM {}.{table} ORDER BY account_id", db.schema))
}

#[test]
fn keys_a_complete_file_lacks_are_deleted_but_never_more_than_the_ratio_allows() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("deleting");
    let spec = deleting_spec(dir.path(), "hard");
    let write = |rows: &str| std::fs::write(dir.path().join("assets_hard.csv"), format!("account_id,cash\n{rows}")).unwrap();
    std::fs::write(dir.path().join("trades_hard.csv"), "trade_id,account_id\n1,A\n").unwrap();
    write("A,1.00\nB,2.00\nC,3.00\nD,4.00\n");
    load(&db, &spec, DAYS[0]).expect_code(0);
    let first = accounts(&db, "asset_hard", "");

    // D vanishes, B changes: D's row is deleted, A's and C's are not touched.
    write("A,1.00\nB,2.50\nC,3.00\n");
    let out = load(&db, &spec, DAYS[1]);
    out.expect_code(0);
    let now = accounts(&db, "asset_hard", "");
    assert_eq!(now.len(), 3, "{now:?}\n{}", out.evidence());
    assert_eq!((now[0].as_str(), now[2].as_str()), (first[0].as_str(), first[2].as_str()), "A and C untouched\n{}", out.evidence());
    assert!(now[1].starts_with("B 2.50 "), "{now:?}");
    assert!(out.stdout.contains("stage assets deleted 1 rows"), "{}", out.evidence());

    // A file with two of the three keys gone, or none left: refused, nothing changes.
    for rows in ["A,1.00\n", ""] {
        write(rows);
        let out = load(&db, &spec, DAYS[2]);
        out.expect_code(5);
        assert!(out.stderr.contains("max_delete_ratio") || out.stdout.contains("max_delete_ratio"), "{}", out.evidence());
        assert_eq!(accounts(&db, "asset_hard", ""), now, "a refused load changes nothing\n{}", out.evidence());
    }

    // A key on a rejected line is present: its row stays.
    write("A,1.00\nB,2.50\nC,-3.00\n");
    let out = load(&db, &spec, DAYS[3]);
    out.expect_code(4);
    assert_eq!(accounts(&db, "asset_hard", ""), now, "C's row is kept, its new line rejected\n{}", out.evidence());

    // A row another table references is not deleted: the stage fails, naming the reference,
    // and the table keeps its rows.
    write("B,2.50\nC,3.00\n");
    let out = load(&db, &spec, DAYS[3]);
    assert_ne!(out.code, 0, "{}", out.evidence());
    assert!(out.stderr.contains("trade_hard"), "the error names the referencing table\n{}", out.evidence());
    assert_eq!(accounts(&db, "asset_hard", ""), now, "{}", out.evidence());
}

#[test]
fn a_soft_delete_flags_vanished_keys_with_the_date_and_clears_them_when_they_return() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("softdel");
    let spec = deleting_spec(dir.path(), "soft");
    let write = |rows: &str| std::fs::write(dir.path().join("assets_soft.csv"), format!("account_id,cash\n{rows}")).unwrap();
    std::fs::write(dir.path().join("trades_soft.csv"), "trade_id,account_id\n1,A\n").unwrap();
    write("A,1.00\nB,2.00\nC,3.00\n");
    load(&db, &spec, DAYS[0]).expect_code(0);
    let flags = || db.texts(&format!("SELECT account_id || ' ' || coalesce(_deleted_at::text, '-') FROM {}.asset_soft ORDER BY 1", db.schema));
    assert_eq!(flags(), ["A -", "B -", "C -"]);
    write("A,1.00\nB,2.00\n");
    let out = load(&db, &spec, DAYS[1]);
    out.expect_code(0);
    assert_eq!(flags(), ["A -", "B -", format!("C {}", DAYS[1]).as_str()], "{}", out.evidence());
    assert!(out.stdout.contains("flagged 1 rows deleted"), "{}", out.evidence());
    write("A,1.00\nB,2.00\nC,3.00\n");
    let out = load(&db, &spec, DAYS[2]);
    out.expect_code(0);
    assert_eq!(flags(), ["A -", "B -", "C -"], "C returned: its flag is cleared\n{}", out.evidence());
    assert!(out.stdout.contains("cleared 1 whose key returned"), "{}", out.evidence());
}

#[test]
fn a_replace_keeps_the_rows_other_tables_reference_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("replacing");
    let text = std::fs::read_to_string(deleting_spec(dir.path(), "hard")).unwrap().replace("delete_missing: hard", "mode: replace");
    let spec = dir.path().join("replacing.yaml");
    std::fs::write(&spec, text).unwrap();
    let write = |rows: &str| std::fs::write(dir.path().join("assets_hard.csv"), format!("account_id,cash\n{rows}")).unwrap();
    std::fs::write(dir.path().join("trades_hard.csv"), "trade_id,account_id\n1,A\n2,C\n").unwrap();
    write("A,1.00\nB,2.00\nC,3.00\n");
    load(&db, &spec, DAYS[0]).expect_code(0);
    // B gone, A changed, D new: the referenced rows stay in place (an emptied table would
    // break the trades' foreign key), C not even rewritten.
    let before = accounts(&db, "asset_hard", "");
    write("A,1.50\nC,3.00\nD,4.00\n");
    let out = load(&db, &spec, DAYS[1]);
    out.expect_code(0);
    let now = accounts(&db, "asset_hard", "");
    assert_eq!(now.iter().map(|r| r.split(' ').take(2).collect::<Vec<_>>().join(" ")).collect::<Vec<_>>(), ["A 1.50", "C 3.00", "D 4.00"], "{}", out.evidence());
    assert_eq!(now[1], before[2], "C's row is untouched\n{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade_hard", db.schema)), 2, "{}", out.evidence());
    // A referenced key gone: the stage fails naming the referencing table; nothing changes.
    write("C,3.00\nD,4.00\n");
    let out = load(&db, &spec, DAYS[2]);
    assert_ne!(out.code, 0, "{}", out.evidence());
    assert!(out.stderr.contains("trade_hard"), "{}", out.evidence());
    assert_eq!(accounts(&db, "asset_hard", ""), now, "{}", out.evidence());
}
