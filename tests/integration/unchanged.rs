//! A stage whose source, spec and tables are as its last load left them is skipped: its counts
//! and rejects are that load's, and nothing is written. Any change loads it again: its file, its
//! table (written by someone else), a table it references, the spec; and `--force`.

use std::path::Path;

use crate::extract::generate;
use crate::run::TestDb;
use crate::util::Output;

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not a JSON report: {e}\n{}", out.evidence()))
}

/// Each stage's `unchanged_since_run` (None: loaded) and what its load did.
fn stages(out: &Output) -> Vec<(String, Option<i64>, i64, i64)> {
    report(out)["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["unchanged_since_run"].as_i64(),
                s["loaded"]["inserted"].as_i64().unwrap_or(-1),
                s["loaded"]["updated"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

fn digest(db: &TestDb) -> Vec<String> {
    ["asset", "trade"]
        .iter()
        .map(|t| db.texts(&format!("SELECT count(*)::text || ':' || md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {}.{t} AS t", db.schema)).remove(0))
        .collect()
}

/// Changes the order remark of the first valid trade line: still valid, one row different.
fn change_one_trade(dir: &Path) -> String {
    let invalid = std::fs::read_to_string(dir.join("invalid_rows.csv")).unwrap();
    let bad: std::collections::BTreeSet<String> =
        invalid.lines().skip(1).filter(|l| l.starts_with("trades.csv,")).map(|l| l.split(',').nth(1).unwrap().to_string()).collect();
    let text = std::fs::read_to_string(dir.join("trades.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = (1..lines.len()).find(|&i| !bad.contains(&(i + 1).to_string()) && lines[i].split(',').count() == 15).unwrap();
    let mut f: Vec<String> = lines[n].split(',').map(str::to_string).collect();
    f[10] = "remark changed by the test".into();
    lines[n] = f.join(",");
    std::fs::write(dir.join("trades.csv"), lines.join("\n") + "\n").unwrap();
    f[3].clone()
}

#[test]
fn an_unchanged_stage_is_skipped_and_any_change_loads_it_again() {
    let data = generate(300, 3_000, 0.02, 61);
    let db = TestDb::new("unchanged");
    let rejects = |name: &str| data.path().join(name).display().to_string();
    let first = db.run(data.path(), &["--output", "json", "--rejects-out", &rejects("first.csv")]);
    first.expect_code(4);
    let run1 = report(&first)["run_id"].as_i64().unwrap();
    let before = digest(&db);

    // The same files again: both stages skipped, reporting the first run's outcome.
    let second = db.run(data.path(), &["--output", "json", "--rejects-out", &rejects("second.csv")]);
    second.expect_code(4);
    let (r1, r2) = (report(&first), report(&second));
    assert_eq!(stages(&second).iter().map(|s| s.1).collect::<Vec<_>>(), [Some(run1), Some(run1)], "{}", second.evidence());
    for (a, b) in r1["stages"].as_array().unwrap().iter().zip(r2["stages"].as_array().unwrap()) {
        for k in ["rows_read", "rows_valid", "rows_rejected", "rows_warned", "rejects_by_rule", "status"] {
            assert_eq!(a[k], b[k], "{k} of {} differs from the load it reuses\n{}", a["stage"], second.evidence());
        }
    }
    assert_eq!(
        std::fs::read_to_string(rejects("first.csv")).unwrap(),
        std::fs::read_to_string(rejects("second.csv")).unwrap(),
        "the skipped run reports the same rejects"
    );
    let run2 = r2["run_id"].as_i64().unwrap();
    let in_table = |run: i64| db.count(&format!("SELECT count(*) FROM etl_rejects WHERE run_id = {run}"));
    assert!(in_table(run1) > 0 && in_table(run1) == in_table(run2), "etl_rejects holds the skipped run's rejects too");
    assert_eq!(digest(&db), before, "a skipped run wrote to the tables");
    let text = db.run(data.path(), &[]);
    assert!(text.stdout.contains(&format!("stage trades unchanged since run {run1}")), "{}", text.evidence());

    // Someone else changes a row of asset: assets loads again (restoring it) and so does trades,
    // which references asset.
    db.exec(&format!("UPDATE {0}.asset SET cash = cash + 1 WHERE account_id = (SELECT min(account_id) FROM {0}.asset)", db.schema));
    let out = db.run(data.path(), &["--output", "json"]);
    assert_eq!(stages(&out), [("assets".into(), None, 0, 1), ("trades".into(), None, 0, 0)], "{}", out.evidence());
    assert_eq!(digest(&db), before, "the row was restored");
    let out = db.run(data.path(), &["--output", "json"]);
    assert!(stages(&out).iter().all(|s| s.1.is_some()), "unchanged again: skipped\n{}", out.evidence());

    // One trade changes in the file: assets is skipped, trades loads the one change.
    let traded_id = change_one_trade(data.path());
    let out = db.run(data.path(), &["--output", "json"]);
    let got = stages(&out);
    assert!(got[0].1.is_some() && got[1] == ("trades".into(), None, 0, 1), "{got:?}\n{}", out.evidence());
    assert_eq!(
        db.texts(&format!("SELECT order_remark FROM {}.trade WHERE traded_id = '{traded_id}'", db.schema)),
        ["remark changed by the test"]
    );

    // --force loads every stage; so does a change to the spec.
    let out = db.run(data.path(), &["--output", "json", "--force"]);
    assert!(stages(&out).iter().all(|s| s.1.is_none() && s.3 == 0), "{}", out.evidence());
    let out = db.run(data.path(), &["--output", "json", "--set", "defaults.tolerance=0.02"]);
    assert!(stages(&out).iter().all(|s| s.1.is_none()), "a spec change loads again\n{}", out.evidence());
    // A dry run checks every row.
    let out = db.run(data.path(), &["--output", "json", "--dry-run"]);
    assert!(stages(&out).iter().all(|s| s.1.is_none()), "{}", out.evidence());
}
