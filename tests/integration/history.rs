//! Keeping each business date's rows (`mode: snapshot`): dates side by side, a restated date
//! rewriting exactly its own rows in the stage's transaction, the other dates' rows untouched.
//! And keys that vanish from a complete file (`delete_missing`): deleted or flagged, never more
//! than `max_delete_ratio` of the table at once.

use std::path::Path;

use crate::run::TestDb;
use crate::util::{Output, etl};

pub const DAYS: [&str; 5] = ["2025-12-15", "2025-12-16", "2025-12-17", "2025-12-18", "2025-12-19"];

fn snapshot_spec(dir: &Path) -> std::path::PathBuf {
    let head = crate::util::spec_head("snapshots", dir.display());
    let spec = format!(
        "{head}stages:
  assets:
    source: {{ connection: files, key: \"assets/{{{{ run.date }}}}.csv\" }}
    target: {{ connection: db, table: asset_daily, key: [account_id], mode: snapshot, as_of: business_date }}
    columns:
      account_id: {{ type: string }}
      cash: {{ type: \"decimal(20,2)\", min: 0 }}
      business_date: {{ type: date, value: \"{{{{ run.date }}}}\" }}
",
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
    // The report counts the rows the restated date held (A, B, C), deleted before its new rows.
    assert!(out.stdout.contains("stage assets deleted 3 rows"), "the restated date's 3 rows are reported deleted\n{}", out.evidence());
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

    // A row another table references is not deleted (`on_delete: restrict`, the default): the
    // load is refused naming the referencing rows, and the table keeps its rows.
    write("B,2.50\nC,3.00\n");
    let out = load(&db, &spec, DAYS[3]);
    out.expect_code(5);
    let told = format!("{}{}", out.stdout, out.stderr);
    assert!(told.contains("trade_hard") && told.contains(r#"{"trade_id":1,"account_id":"A"}"#), "the refusal names the referencing row\n{}", out.evidence());
    assert!(told.contains("on_delete: cascade"), "the refusal says how to go on\n{}", out.evidence());
    assert_eq!(accounts(&db, "asset_hard", ""), now, "{}", out.evidence());

    // Exactly the ratio (2 of 4 rows, the default 0.5) is allowed: only more is refused.
    write("A,1.00\nB,2.50\nC,3.00\nD,4.00\n");
    load(&db, &spec, DAYS[4]).expect_code(0);
    write("A,1.00\nB,2.50\n");
    let out = load(&db, &spec, DAYS[4]);
    out.expect_code(0);
    assert!(out.stdout.contains("stage assets deleted 2 rows"), "deleting exactly max_delete_ratio of the rows is allowed\n{}", out.evidence());
    assert_eq!(accounts(&db, "asset_hard", "").len(), 2, "{}", out.evidence());
}

/// assets <- trades <- fills, each a complete file: assets deletes the accounts its file lacks
/// with `on_delete` as given (and no ratio); trades deletes its own vanished trades.
fn chain_spec(dir: &Path, on_delete: &str) -> std::path::PathBuf {
    let spec = format!(
        "version: 1
name: chain_{on_delete}
connections:
  files: {{ type: local, path: '{dir}' }}
  db: {{ type: postgres, url: \"{{{{ env.ETL_TEST_DATABASE_URL }}}}\", schema: \"{{{{ env.SCHEMA }}}}\" }}
stages:
  assets:
    source: {{ connection: files, key: assets.csv }}
    target: {{ connection: db, table: asset_c, key: [account_id], delete_missing: hard, max_delete_ratio: 1, on_delete: {on_delete} }}
    columns:
      account_id: {{ type: string }}
      cash: {{ type: \"decimal(20,2)\" }}
  trades:
    needs: [assets]
    source: {{ connection: files, key: trades.csv }}
    target: {{ connection: db, table: trade_c, key: [trade_id], delete_missing: hard, max_delete_ratio: 1 }}
    columns:
      trade_id: {{ type: int64 }}
      account_id: {{ type: string, references: assets.account_id }}
  fills:
    needs: [trades]
    source: {{ connection: files, key: fills.csv }}
    target: {{ connection: db, table: fill_c, key: [fill_id] }}
    columns:
      fill_id: {{ type: int64 }}
      trade_id: {{ type: int64, references: trades.trade_id }}
",
        dir = dir.display()
    );
    let path = dir.join(format!("chain_{on_delete}.yaml"));
    std::fs::write(&path, spec).unwrap();
    path
}

fn write_chain(dir: &Path, assets: &str, trades: &str, fills: &str) {
    std::fs::write(dir.join("assets.csv"), format!("account_id,cash\n{assets}")).unwrap();
    std::fs::write(dir.join("trades.csv"), format!("trade_id,account_id\n{trades}")).unwrap();
    std::fs::write(dir.join("fills.csv"), format!("fill_id,trade_id\n{fills}")).unwrap();
}

#[test]
fn a_cascade_deletes_the_rows_referencing_a_vanished_key_through_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("cascade");
    let spec = chain_spec(dir.path(), "cascade");
    let rows = |table: &str, cols: &str| db.texts(&format!("SELECT {cols} || ' ' || xmin::text FROM {}.{table} ORDER BY 1", db.schema));
    write_chain(dir.path(), "A,1.00\nB,2.00\nC,3.00\n", "1,A\n2,B\n3,C\n", "10,1\n11,2\n12,2\n13,3\n");
    load(&db, &spec, DAYS[0]).expect_code(0);
    let (trades, fills) = (rows("trade_c", "trade_id::text"), rows("fill_c", "fill_id::text"));

    // B vanishes from the accounts; the other files stay as they were. Its trade 2 and that
    // trade's fills 11 and 12 go with it, before it; every other row is untouched. The next
    // stages then reject their lines that reference what is gone.
    write_chain(dir.path(), "A,1.00\nC,3.00\n", "1,A\n2,B\n3,C\n", "10,1\n11,2\n12,2\n13,3\n");
    let out = load(&db, &spec, DAYS[1]);
    out.expect_code(4);
    assert!(out.stdout.contains("stage assets deleted 1 rows"), "{}", out.evidence());
    assert!(out.stdout.contains("stage assets deleted 3 rows of other tables that referenced the deleted keys"), "{}", out.evidence());
    assert_eq!(db.texts(&format!("SELECT account_id FROM {}.asset_c ORDER BY 1", db.schema)), ["A", "C"], "{}", out.evidence());
    assert_eq!(rows("trade_c", "trade_id::text"), [trades[0].clone(), trades[2].clone()], "trades 1 and 3 untouched\n{}", out.evidence());
    assert_eq!(rows("fill_c", "fill_id::text"), [fills[0].clone(), fills[3].clone()], "fills 10 and 13 untouched\n{}", out.evidence());
    let rejected = db.texts("SELECT stage || ' ' || line::text || ' ' || rule FROM etl_rejects WHERE run_id = (SELECT max(run_id) FROM etl_runs WHERE spec_name = 'chain_cascade') ORDER BY 1");
    assert_eq!(rejected.iter().map(|r| r.split(' ').take(2).collect::<Vec<_>>().join(" ")).collect::<Vec<_>>(), ["fills 3", "fills 4", "trades 3"], "{rejected:?}\n{}", out.evidence());

    // The same files again end as a forced load does: nothing more is deleted.
    let again = load(&db, &spec, DAYS[1]);
    again.expect_code(4);
    let kept = (db.count(&format!("SELECT count(*) FROM {}.trade_c", db.schema)), db.count(&format!("SELECT count(*) FROM {}.fill_c", db.schema)));
    assert_eq!(kept, (2, 2), "{}", again.evidence());
    assert!(!again.stdout.contains("referenced the deleted keys"), "{}", again.evidence());
}

#[test]
fn a_soft_on_delete_flags_a_referenced_vanished_key_and_deletes_it_once_nothing_references_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("softref");
    let spec = chain_spec(dir.path(), "soft");
    let accounts = || db.texts(&format!("SELECT account_id || ' ' || coalesce(_deleted_at::text, '-') FROM {}.asset_c ORDER BY 1", db.schema));
    write_chain(dir.path(), "A,1.00\nB,2.00\nC,3.00\n", "1,A\n2,B\n", "10,1\n");
    load(&db, &spec, DAYS[0]).expect_code(0);
    assert_eq!(accounts(), ["A -", "B -", "C -"]);

    // B and C vanish: B, which trade 2 references, is flagged with the date; C is deleted.
    write_chain(dir.path(), "A,1.00\n", "1,A\n2,B\n", "10,1\n");
    let out = load(&db, &spec, DAYS[1]);
    out.expect_code(0);
    assert_eq!(accounts(), ["A -", format!("B {}", DAYS[1]).as_str()], "{}", out.evidence());
    assert!(out.stdout.contains("stage assets deleted 1 rows") && out.stdout.contains("stage assets flagged 1 rows deleted"), "{}", out.evidence());

    // B returns: its flag is cleared.
    write_chain(dir.path(), "A,1.00\nB,2.00\n", "1,A\n2,B\n", "10,1\n");
    let out = load(&db, &spec, DAYS[2]);
    out.expect_code(0);
    assert_eq!(accounts(), ["A -", "B -"], "{}", out.evidence());
    assert!(out.stdout.contains("cleared 1 whose key returned"), "{}", out.evidence());

    // B vanishes with its trade: assets loads first, while trade 2 still references B (flagged);
    // then trades deletes trade 2.
    write_chain(dir.path(), "A,1.00\n", "1,A\n", "10,1\n");
    let out = load(&db, &spec, DAYS[3]);
    out.expect_code(0);
    assert_eq!(accounts(), ["A -", format!("B {}", DAYS[3]).as_str()], "{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade_c", db.schema)), 1, "{}", out.evidence());

    // The same files again: nothing references B now, so B is deleted, as a forced load would.
    // (The accounts' outcome depends on the trades table, which changed after their load: the
    // stage is not skipped.)
    let out = load(&db, &spec, DAYS[3]);
    out.expect_code(0);
    assert_eq!(accounts(), ["A -"], "{}", out.evidence());
    assert!(out.stdout.contains("stage assets deleted 1 rows"), "{}", out.evidence());
    // And again: now unchanged.
    let out = load(&db, &spec, DAYS[3]);
    out.expect_code(0);
    assert!(out.stdout.contains("unchanged since run") || out.stderr.contains("unchanged since run"), "{}", out.evidence());
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
    // A referenced key gone: the load is refused naming the referencing row; nothing changes.
    write("C,3.00\nD,4.00\n");
    let out = load(&db, &spec, DAYS[2]);
    out.expect_code(5);
    assert!(format!("{}{}", out.stdout, out.stderr).contains(r#"{"trade_id":1,"account_id":"A"}"#), "{}", out.evidence());
    assert_eq!(accounts(&db, "asset_hard", ""), now, "{}", out.evidence());
}

/// The days' files of the history series: (account, cash, account type) per day.
pub fn history_day(day: usize, restated: bool) -> Vec<(&'static str, &'static str, i32)> {
    match (day, restated) {
        (0, _) => vec![("A", "1.00", 1), ("B", "2.00", 1), ("C", "3.00", 1)],
        (1, _) => vec![("A", "1.00", 1), ("B", "2.50", 1), ("C", "3.00", 1), ("D", "4.00", 1)],
        (2, false) => vec![("A", "1.00", 1), ("B", "2.50", 1), ("D", "4.00", 1)],
        (2, true) => vec![("A", "1.05", 1), ("B", "2.50", 1), ("C", "3.00", 1), ("D", "4.00", 1), ("E", "5.00", 3)],
        (3, _) => vec![("A", "1.10", 1), ("B", "2.50", 2), ("C", "3.00", 1), ("D", "4.00", 1)],
        _ => vec![("A", "1.10", 1), ("B", "2.50", 2), ("C", "3.00", 1)],
    }
}

/// The versions loading `files` (date, rows) in date order gives, computed here independently:
/// a key's version opens on a date its values differ from its open version's (or it has none),
/// and closes on a date it changes or its complete file lacks it.
fn expected_versions(files: &std::collections::BTreeMap<&str, Vec<(&str, &str, i32)>>) -> Vec<String> {
    let mut open: std::collections::BTreeMap<&str, ((&str, i32), &str)> = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for (date, rows) in files {
        for (key, (value, from)) in open.clone() {
            match rows.iter().find(|r| r.0 == key) {
                Some(r) if (r.1, r.2) == value => {}
                _ => {
                    out.push(format!("{key} {} {} {from} {date}", value.0, value.1));
                    open.remove(key);
                }
            }
        }
        for r in rows {
            open.entry(r.0).or_insert(((r.1, r.2), date));
        }
    }
    out.extend(open.iter().map(|(key, (value, from))| format!("{key} {} {} {from} -", value.0, value.1)));
    out.sort();
    out
}

/// The history spec of the tests below: account balances by business date from the day's file
/// in `dir`, keys a file lacks closed (at most 0.9 of them at once).
fn history_spec(dir: &Path) -> std::path::PathBuf {
    history_spec_keyed(dir, "asset_history", "[account_id]", "int32")
}

/// [`history_spec`] into `table`, keyed by `key`, its `account_type` of type `account_type`.
fn history_spec_keyed(dir: &Path, table: &str, key: &str, account_type: &str) -> std::path::PathBuf {
    let spec = dir.join(format!("{table}.yaml"));
    let head = crate::util::spec_head(table, dir.display());
    std::fs::write(
        &spec,
        format!(
            "{head}stages:
  assets:
    source: {{ connection: files, key: \"assets/{{{{ run.date }}}}.csv\" }}
    target: {{ connection: db, table: {table}, key: {key}, mode: history, as_of: business_date, delete_missing: close, max_delete_ratio: 0.9 }}
    columns:
      account_id: {{ type: string, max_length: 4 }}
      cash: {{ type: \"decimal(20,2)\", min: 0 }}
      account_type: {{ type: {account_type} }}
      business_date: {{ type: date, value: \"{{{{ run.date }}}}\" }}
",
        ),
    )
    .unwrap();
    spec
}

#[test]
fn a_history_equals_loading_every_date_in_order_after_restated_and_late_dates() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("history");
    let spec = history_spec(dir.path());
    let versions = || {
        db.texts(&format!(
            "SELECT account_id || ' ' || cash::text || ' ' || account_type || ' ' || valid_from::text || ' ' || coalesce(valid_to::text, '-') FROM {}.asset_history ORDER BY 1",
            db.schema
        ))
    };
    let mut loaded: std::collections::BTreeMap<&str, Vec<(&str, &str, i32)>> = std::collections::BTreeMap::new();
    let load_day = |day: usize, restated: bool, loaded: &mut std::collections::BTreeMap<&str, Vec<(&str, &str, i32)>>| {
        let rows = history_day(day, restated);
        let body: String = rows.iter().map(|(a, c, t)| format!("{a},{c},{t}\n")).collect();
        std::fs::create_dir_all(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets").join(format!("{}.csv", DAYS[day])), format!("account_id,cash,account_type\n{body}")).unwrap();
        let out = load(&db, &spec, DAYS[day]);
        out.expect_code(0);
        loaded.insert(DAYS[day], rows);
        out
    };
    // Days 1, 3, 4, 5 in order (day 2 is late); after each, the table is the reference.
    let mut b_before_day5 = Vec::new();
    for day in [0, 2, 3, 4] {
        if day == 4 {
            b_before_day5 = db.texts(&format!("SELECT valid_from::text || ' ' || xmin::text FROM {}.asset_history WHERE account_id = 'B' ORDER BY 1", db.schema));
        }
        let out = load_day(day, false, &mut loaded);
        assert_eq!(versions(), expected_versions(&loaded), "after {}\n{}", DAYS[day], out.evidence());
        if day == 4 {
            // Day 5: D vanishes, nothing else changes.
            assert!(out.stdout.contains("opened a version for 0 keys and closed the version of 1 on its date"), "{}", out.evidence());
        }
    }
    // B did not change on day 5: its versions are not rewritten.
    let b_after = db.texts(&format!("SELECT valid_from::text || ' ' || xmin::text FROM {}.asset_history WHERE account_id = 'B' ORDER BY 1", db.schema));
    assert_eq!(b_after, b_before_day5, "an unchanged key keeps its versions as they were");
    // Day 3 restated, then day 2 late: still what loading every date in order gives.
    let out = load_day(2, true, &mut loaded);
    assert_eq!(versions(), expected_versions(&loaded), "after day 3 restated\n{}", out.evidence());
    let out = load_day(1, false, &mut loaded);
    assert_eq!(versions(), expected_versions(&loaded), "after day 2 arrived late\n{}", out.evidence());
    // The current versions' view.
    let current = db.texts(&format!("SELECT account_id || ' ' || cash::text FROM {}.asset_history_current ORDER BY 1", db.schema));
    assert_eq!(current, ["A 1.10", "B 2.50", "C 3.00"]);
    // As of a date: the versions valid then.
    let as_of = db.texts(&format!(
        "SELECT account_id || ' ' || cash::text FROM {}.asset_history WHERE date '{}' >= valid_from AND (valid_to IS NULL OR date '{}' < valid_to) ORDER BY 1",
        db.schema, DAYS[2], DAYS[2]
    ));
    assert_eq!(as_of, ["A 1.05", "B 2.50", "C 3.00", "D 4.00", "E 5.00"]);

    // The table dropped and day 1 loaded again: its versions are open-ended, not closed at the
    // dates recorded for the dropped table.
    db.exec(&format!("DROP TABLE {}.asset_history CASCADE", db.schema));
    let mut again = std::collections::BTreeMap::new();
    let out = load_day(0, false, &mut again);
    assert_eq!(versions(), expected_versions(&again), "after the table was dropped and day 1 loaded again\n{}", out.evidence());
    assert!(versions().iter().all(|v| v.ends_with(" -")), "{:?}", versions());
}

/// specs/small_etl_history.yaml over the seed's data: two business dates, the second with one
/// account gone; the first date's balances still answer an as-of query.
#[test]
fn small_etl_history_keeps_yesterdays_balances() {
    let data = crate::extract::generate(200, 600, 0.0, 73);
    let db = TestDb::new("small_history");
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    let sets = [
        "--set".to_string(),
        format!("connections.db={{type: postgres, url: '{url}', schema: {}}}", db.schema),
        "--set".to_string(),
        format!("connections.lake={{type: local, path: '{}'}}", data.path().display()),
    ];
    let run = |date: &str| {
        let mut args = vec!["run", "specs/small_etl_history.yaml", "--date", date];
        args.extend(sets.iter().map(String::as_str));
        etl(&args, &[])
    };
    run(DAYS[0]).expect_code(0);
    let assets = db.count(&format!("SELECT count(*) FROM {}.asset_history", db.schema));
    assert_eq!(assets, 200);
    // The next day: the last account is gone (its trades too).
    let text = std::fs::read_to_string(data.path().join("account_assets.csv")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    // (The seed's files start with an `id` column; the account is the second.)
    let gone = lines.pop().unwrap().split(',').nth(1).unwrap().to_string();
    std::fs::write(data.path().join("account_assets.csv"), lines.join("\n") + "\n").unwrap();
    let trades = std::fs::read_to_string(data.path().join("trades.csv")).unwrap();
    let kept: Vec<&str> = trades.lines().filter(|l| l.split(',').nth(1) != Some(gone.as_str())).collect();
    std::fs::write(data.path().join("trades.csv"), kept.join("\n") + "\n").unwrap();
    let out = run(DAYS[1]);
    out.expect_code(0);
    let current = db.count(&format!("SELECT count(*) FROM {}.asset_history_current", db.schema));
    assert_eq!(current, 199, "{}", out.evidence());
    let closed = db.texts(&format!("SELECT valid_to::text FROM {}.asset_history WHERE account_id = '{gone}'", db.schema));
    assert_eq!(closed, [DAYS[1]], "the account's version closes on the day it vanished\n{}", out.evidence());
    let yesterday = db.count(&format!(
        "SELECT count(*) FROM {}.asset_history WHERE date '{}' >= valid_from AND (valid_to IS NULL OR date '{}' < valid_to)",
        db.schema, DAYS[0], DAYS[0]
    ));
    assert_eq!(yesterday, 200, "yesterday's balances are kept");
    assert!(db.count(&format!("SELECT count(*) FROM {}.trade_daily", db.schema)) > 0);
}

/// A small deterministic random source (SplitMix64): the series is replayed from its seed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// A history that reads only its changed lines still refuses a truncated file: the keys that
/// vanished since the last date's file are counted against every current version, and more
/// than `max_delete_ratio` (0.9) closed is refused, exit 5, the table unchanged; the complete
/// file then loads.
#[test]
fn a_history_reading_only_its_changed_lines_refuses_a_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("history_truncated");
    let spec = history_spec(dir.path());
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    let write = |date: &str, keys: std::ops::Range<usize>| {
        let body: String = keys.map(|k| format!("A{k:02},{k}.00,1\n")).collect();
        std::fs::write(dir.path().join("assets").join(format!("{date}.csv")), format!("account_id,cash,account_type\n{body}")).unwrap();
    };
    let versions = || db.texts(&format!("SELECT account_id || ' ' || valid_from::text || ' ' || coalesce(valid_to::text, '-') FROM {}.asset_history ORDER BY 1", db.schema));
    write(DAYS[0], 0..20);
    load(&db, &spec, DAYS[0]).expect_code(0);
    // The next date: one key gone (closed), the other lines unchanged (carried over).
    write(DAYS[1], 0..19);
    let out = load(&db, &spec, DAYS[1]);
    out.expect_code(0);
    assert!(out.stdout.contains("closed the version of 1 on its date"), "{}", out.evidence());
    let before = versions();
    // Then a file of one line: 18 of the 19 current versions would close.
    write(DAYS[2], 0..1);
    let out = load(&db, &spec, DAYS[2]);
    out.expect_code(5);
    let told = format!("{}{}", out.stdout, out.stderr);
    assert!(told.contains("18 of the 19 rows") && told.contains("max_delete_ratio"), "{}", out.evidence());
    assert_eq!(versions(), before, "a refused load changes nothing\n{}", out.evidence());
    write(DAYS[2], 0..19);
    load(&db, &spec, DAYS[2]).expect_code(0);
    assert_eq!(versions(), before, "the complete file changes nothing");
}

/// A history loaded a random series of business dates, mostly in order, some restated or late,
/// with values changed, keys dropped, returning, repeated and invalid, lines reordered, and the
/// same file for a new date: after each load, the table, counts and rejects equal those of a
/// forced load of the same series (every line checked), while the loads in date order read
/// only their changed lines (compared with the last file's line index, its keys among them).
#[test]
fn a_history_reading_only_its_changed_lines_ends_as_checking_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let (incremental, full) = (TestDb::new("history_lines"), TestDb::new("history_full"));
    let spec = history_spec(dir.path());
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    let run = |db: &TestDb, date: &str, extra: &[&str]| {
        let mut args = vec!["run", spec.to_str().unwrap(), "--date", date, "--output", "json"];
        args.extend_from_slice(extra);
        etl(&args, &[("ETL_TEST_DATABASE_URL", &url), ("SCHEMA", &db.schema)])
    };
    let digest = |db: &TestDb| {
        db.texts(&format!(
            "SELECT count(*)::text || ':' || coalesce(md5(string_agg(to_jsonb(t)::text, '|' ORDER BY to_jsonb(t)::text)), '') FROM {}.asset_history AS t",
            db.schema
        ))
        .remove(0)
    };
    let versions = |db: &TestDb| {
        db.texts(&format!(
            "SELECT account_id || ' ' || cash::text || ' ' || account_type || ' ' || valid_from::text || ' ' || coalesce(valid_to::text, '-') FROM {}.asset_history ORDER BY 1",
            db.schema
        ))
    };
    let seed: u64 = std::env::var("ETL_HISTORY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261205);
    let steps: usize = std::env::var("ETL_HISTORY_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(24);
    let mut dice = Dice(seed);
    let date_of = |n: usize| (chrono::NaiveDate::from_ymd_opt(2025, 12, 1).unwrap() + chrono::Duration::days(n as i64)).format("%Y-%m-%d").to_string();
    let mut lines: Vec<String> = (0..12).map(|k| format!("K{k:02},{}.00,1", k + 1)).collect();
    let (mut newest, mut carried_steps) = (0usize, 0usize);
    for step in 0..steps {
        // The date: mostly the next one; sometimes the newest again, or a past one.
        let day = match dice.below(8) {
            _ if step == 0 => 0,
            0 => newest,
            1 => dice.below(newest + 1),
            _ => newest + 1,
        };
        newest = newest.max(day);
        // The file: the last one edited (or, one step in eight, the same file again).
        let edits = if dice.below(8) == 0 { 0 } else { 1 + dice.below(3) };
        let mut what = Vec::new();
        for _ in 0..edits {
            let at = dice.below(lines.len().max(1));
            match dice.below(7) {
                0 if lines.len() > 3 => {
                    what.push(format!("drop {}", lines[at]));
                    lines.remove(at);
                }
                1 => {
                    let key = format!("K{:02}", dice.below(20));
                    what.push(format!("add {key}"));
                    lines.insert(at, format!("{key},{}.{:02},{}", dice.below(50), dice.below(100), 1 + dice.below(2)));
                }
                2 => {
                    what.push(format!("invalid at {at}"));
                    let key = lines[at].split(',').next().unwrap().to_string();
                    lines[at] = format!("{key},{},1", ["-1.00", "abc", "1.001"][dice.below(3)]);
                }
                3 if lines.len() > 1 => {
                    let other = dice.below(lines.len());
                    what.push(format!("swap {at} {other}"));
                    lines.swap(at, other);
                }
                _ => {
                    let key = lines[at].split(',').next().unwrap().to_string();
                    what.push(format!("change {key}"));
                    lines[at] = format!("{key},{}.{:02},{}", dice.below(50), dice.below(100), 1 + dice.below(2));
                }
            }
        }
        let date = date_of(day);
        std::fs::create_dir_all(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets").join(format!("{date}.csv")), format!("account_id,cash,account_type\n{}\n", lines.join("\n"))).unwrap();
        let label = format!("step {step} (seed {seed}): {date}, {what:?}");
        let a = run(&incremental, &date, &["-v"]);
        let b = run(&full, &date, &["--force"]);
        // Versions are computed in the staging table, even for the first load into an empty table.
        assert!(!a.stderr.contains("COPY straight"), "{label}\n{}", a.evidence());
        assert_eq!(a.code, b.code, "{label}: exit codes differ\n{}\n{}", a.evidence(), b.evidence());
        let (ra, rb): (serde_json::Value, serde_json::Value) = (serde_json::from_str(&a.stdout).unwrap(), serde_json::from_str(&b.stdout).unwrap());
        let (sa, sb) = (&ra["stages"][0], &rb["stages"][0]);
        for k in ["rows_read", "rows_valid", "rows_rejected", "rejects_by_rule", "status", "loaded"] {
            assert_eq!(sa[k], sb[k], "{label}: {k} differs\n{}\n{}", a.evidence(), b.evidence());
        }
        assert_eq!(versions(&incremental), versions(&full), "{label}: the versions differ\n{}", a.evidence());
        assert_eq!(digest(&incremental), digest(&full), "{label}: the rows differ");
        // The state recorded with the load (told from the state before and what the merge moved,
        // without a scan) is the table's state as a scan finds it.
        if a.code == 0 || a.code == 4 {
            let recorded = incremental.texts(&format!(
                "SELECT split_part(table_state, ':', 1) || ':' || split_part(table_state, ':', 2) || ':' || split_part(table_state, ':', 3) FROM etl_run_stages \
                 WHERE target_table = '\"{}\".\"asset_history\"' AND table_state IS NOT NULL ORDER BY finished_at DESC LIMIT 1",
                incremental.schema
            ));
            let scanned = incremental.texts(&format!(
                "SELECT count(*)::text || ':' || coalesce(sum(hashint8extended(xmin::text::bigint, 0)), 0)::text || ':' || coalesce(max(xmin::text::bigint), 0)::text FROM {}.asset_history",
                incremental.schema
            ));
            assert_eq!(recorded, scanned, "{label}: the recorded state is not the table's\n{}", a.evidence());
        }
        if crate::unchanged::carried_over(&a, "assets") > 0 {
            carried_steps += 1;
        }
    }
    // Most loads were of the next date, and read only their changed lines.
    assert!(carried_steps * 3 >= steps, "only {carried_steps} of {steps} loads carried lines over");
}


/// Loads each date's file of `spec` (its stage `assets`, the file `assets/DATE.csv` under `dir`)
/// into `incremental`, by its changed lines where it can, and into `full`, every line
/// (`--force`); after each, the exit codes and `table`'s rows must be the same, and every date
/// after the first must have carried lines over.
fn changed_lines_as_forced(spec: &Path, dir: &Path, table: &str, header: &str, days: &[(&str, Vec<String>)], incremental: &TestDb, full: &TestDb) {
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    let run = |db: &TestDb, date: &str, extra: &str| etl(&["run", spec.to_str().unwrap(), "--date", date, "--output", "json", extra], &[("ETL_TEST_DATABASE_URL", &url), ("SCHEMA", &db.schema)]);
    let rows = |db: &TestDb| db.texts(&format!("SELECT t::text FROM {}.{table} AS t ORDER BY 1", db.schema));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    for (n, (date, lines)) in days.iter().enumerate() {
        std::fs::write(dir.join("assets").join(format!("{date}.csv")), format!("{header}\n{}\n", lines.join("\n"))).unwrap();
        let (a, b) = (run(incremental, date, "-v"), run(full, date, "--force"));
        assert_eq!(a.code, b.code, "{date}: exit codes differ\n{}\n{}", a.evidence(), b.evidence());
        assert_eq!(rows(incremental), rows(full), "{date}: the versions differ\n{}\n{}", a.evidence(), b.evidence());
        assert!(n == 0 || crate::unchanged::carried_over(&a, "assets") > 0, "{date} did not read only its changed lines\n{}", a.evidence());
    }
}

/// The last file held a key on two lines, one valid and one rejected. The next date's file drops
/// the rejected line and keeps the valid one as it was: read by its changed lines, the valid
/// line is carried over, so its key has not vanished and its version stays current, as a load
/// checking every line leaves it.
#[test]
fn a_dropped_line_whose_key_an_unchanged_line_holds_closes_no_version() {
    let dir = tempfile::tempdir().unwrap();
    let (incremental, full) = (TestDb::new("history_kept"), TestDb::new("history_kept_full"));
    let spec = history_spec(dir.path());
    let mut lines: Vec<String> = (0..12).map(|k| format!("K{k:02},{}.00,1", k + 1)).collect();
    let next: Vec<String> = lines.clone();
    lines.insert(6, "K05,abc,1".to_string());
    let days = [("2025-12-01", lines), ("2025-12-02", next)];
    changed_lines_as_forced(&spec, dir.path(), "asset_history", "account_id,cash,account_type", &days, &incremental, &full);
    let current = incremental.count(&format!("SELECT count(*) FROM {}.asset_history WHERE account_id = 'K05' AND valid_to IS NULL", incremental.schema));
    assert_eq!(current, 1, "K05's version is current");
}

/// A history keyed by two columns, read by its changed lines, closes the version of a key that
/// vanished: its key's two fields go to the server as one record of two (the last file's keys
/// are kept in the line index as CSV), as a load checking every line closes it.
#[test]
fn a_vanished_key_of_two_columns_is_closed_by_a_load_of_the_changed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (incremental, full) = (TestDb::new("history_pair"), TestDb::new("history_pair_full"));
    let spec = history_spec_keyed(dir.path(), "pair_history", "[account_id, account_type]", "string");
    let lines: Vec<String> = (0..12).map(|k| format!("K{k:02},{},{}.00", ["cash", "margin"][k % 2], k + 1)).collect();
    let next: Vec<String> = [&lines[..3], &lines[4..]].concat();
    let days = [("2025-12-01", lines), ("2025-12-02", next)];
    changed_lines_as_forced(&spec, dir.path(), "pair_history", "account_id,account_type,cash", &days, &incremental, &full);
    let closed = incremental.count(&format!("SELECT count(*) FROM {}.pair_history WHERE account_id = 'K03' AND valid_to = '2025-12-02'", incremental.schema));
    assert_eq!(closed, 1, "K03's version is closed at the date its key vanished");
}
