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
pub fn change_one_trade(dir: &Path) -> String {
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
    assert!(in_table(run1) > 0, "the load's rejects are kept");
    assert_eq!(in_table(run2), 0, "a skipped run keeps no second copy of the rejects: they stay under the run it reuses");
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

    // asset changes again, and only trades runs: the state of the tables it references is part
    // of what its last load depended on, so it is loaded again, not skipped.
    db.exec(&format!("UPDATE {0}.asset SET cash = cash + 1 WHERE account_id = (SELECT min(account_id) FROM {0}.asset)", db.schema));
    let out = db.run(data.path(), &["--output", "json", "--stage", "trades"]);
    assert_eq!(stages(&out), [("trades".into(), None, 0, 0)], "a referenced table changed: trades loads again\n{}", out.evidence());
    let out = db.run(data.path(), &["--output", "json"]);
    assert_eq!(stages(&out)[0], ("assets".into(), None, 0, 1), "assets restores its row\n{}", out.evidence());
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

/// A table's rows without the surrogate id (which counts insertions in their order).
fn rows_digest(db: &TestDb, table: &str) -> String {
    db.texts(&format!(
        "SELECT count(*)::text || ':' || coalesce(md5(string_agg((to_jsonb(t) - 'id')::text, '|' ORDER BY (to_jsonb(t) - 'id')::text)), '') FROM {}.{table} AS t",
        db.schema
    ))
    .remove(0)
}

/// How many lines a `-v` run of `stage` carried over unchanged from its last load (0 when it
/// compared nothing).
pub fn carried_over(out: &Output, stage: &str) -> u64 {
    let prefix = format!("{stage}: compared with the file of run ");
    out.stderr
        .lines()
        .filter_map(|l| l.split_once(&prefix).map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(": ").and_then(|(_, r)| r.split_once(" lines unchanged, ")).map(|(n, _)| n.trim().parse::<u64>().unwrap_or(0)))
        .max()
        .unwrap_or(0)
}

/// Runs one step on `incremental` (lines unchanged since the last load carried over) and on
/// `full` (`--force`: every line checked) and asserts they end alike: the same rows, counts,
/// rule tallies and rejects at the same lines.
fn same_outcome(incremental: &TestDb, full: &TestDb, dir: &Path, step: &str, carried: &[&str]) -> Output {
    let rejects = |name: &str| dir.join(format!("{name}.csv")).display().to_string();
    let a = incremental.run(dir, &["--output", "json", "-v", "--rejects-out", &rejects("a")]);
    let b = full.run(dir, &["--output", "json", "--force", "--rejects-out", &rejects("b")]);
    assert_eq!(a.code, b.code, "{step}: exit codes differ\n{}\n{}", a.evidence(), b.evidence());
    for stage in carried {
        assert!(
            carried_over(&a, stage) > 0,
            "{step}: {stage} did not carry its unchanged lines over\n{}",
            a.evidence()
        );
    }
    let (ra, rb) = (report(&a), report(&b));
    for (sa, sb) in ra["stages"].as_array().unwrap().iter().zip(rb["stages"].as_array().unwrap()) {
        for k in ["stage", "rows_read", "rows_valid", "rows_rejected", "rows_warned", "rejects_by_rule", "status", "loaded"] {
            assert_eq!(sa[k], sb[k], "{step}: {k} of {} differs\n{}\n{}", sa["stage"], a.evidence(), b.evidence());
        }
    }
    let sorted = |name: &str| {
        let text = std::fs::read_to_string(rejects(name)).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted("a"), sorted("b"), "{step}: the rejects differ");
    for table in ["asset", "trade"] {
        assert_eq!(rows_digest(incremental, table), rows_digest(full, table), "{step}: the {table} rows differ");
    }
    a
}

/// Rewrites a file of `dir` through `edit` (its lines, the header first).
fn edit(dir: &Path, file: &str, edit: impl FnOnce(&mut Vec<String>)) {
    let path = dir.join(file);
    let mut lines: Vec<String> = std::fs::read_to_string(&path).unwrap().lines().map(str::to_string).collect();
    edit(&mut lines);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

/// Sets field `i` of line `n`.
fn set(lines: &mut [String], n: usize, i: usize, value: &str) {
    let mut f: Vec<String> = lines[n].split(',').map(str::to_string).collect();
    f[i] = value.to_string();
    lines[n] = f.join(",");
}

/// Indexes of well-formed data lines (15 fields, an id-like traded_id).
fn trade_lines(lines: &[String]) -> Vec<usize> {
    (1..lines.len()).filter(|&i| lines[i].split(',').count() == 15 && lines[i].split(',').nth(3).is_some_and(|t| t.starts_with('T'))).collect()
}

#[test]
fn loading_only_the_changed_lines_ends_exactly_as_checking_every_line() {
    let data = generate(200, 2_000, 0.03, 62);
    let dir = data.path();
    let (a, b) = (TestDb::new("incr_a"), TestDb::new("incr_b"));
    same_outcome(&a, &b, dir, "first load", &[]);
    same_outcome(&a, &b, dir, "nothing changed", &[]);

    edit(dir, "trades.csv", |l| {
        let t = trade_lines(l);
        set(l, t[3], 10, "changed remark");
        set(l, t[7], 8, "1.00"); // traded_amount no longer price × volume: now rejected
    });
    same_outcome(&a, &b, dir, "two values changed", &["trades"]);

    edit(dir, "trades.csv", |l| {
        let t = trade_lines(l);
        for (n, i) in t[10..15].iter().enumerate() {
            let mut copy: Vec<String> = l[*i].split(',').map(str::to_string).collect();
            copy[3] = format!("TNEW{n:04}");
            l.push(copy.join(","));
        }
        l.remove(t[20]);
        l.remove(t[21] - 1);
    });
    same_outcome(&a, &b, dir, "lines added and removed", &["trades"]);

    let (repeated, holder) = edit_dup(dir);
    same_outcome(&a, &b, dir, "a line repeated and a key reused", &["trades"]);

    // The first of each repeat goes: the unchanged lines that lost to them are loaded now.
    edit(dir, "trades.csv", |l| {
        let first = l.iter().position(|x| x == &repeated).unwrap();
        l.remove(first);
        l.retain(|x| x != &holder);
    });
    same_outcome(&a, &b, dir, "the first of each repeat removed", &["trades"]);

    edit(dir, "trades.csv", |l| {
        let header = l.remove(0);
        l.reverse();
        l.insert(0, header);
        l.insert(1, "1,2,3".into()); // a ragged line: every later line moves
    });
    same_outcome(&a, &b, dir, "the lines reversed under a ragged line", &["trades"]);

    edit(dir, "trades.csv", |l| {
        let t = trade_lines(l);
        set(l, t[30], 11, "7"); // not a direction
    });
    same_outcome(&a, &b, dir, "a value made invalid", &["trades"]);

    // A quote inside an unquoted field: DuckDB may split such a file otherwise than the record
    // scan, so every line is checked (found by the csv_extract fuzz target).
    edit(dir, "trades.csv", |l| {
        let t = trade_lines(l);
        set(l, t[33], 10, "say \"hi\"");
    });
    let out = same_outcome(&a, &b, dir, "a quote inside an unquoted field", &[]);
    assert!(out.stderr.contains("trades: every line is checked: a quote inside an unquoted field"), "{}", out.evidence());

    // An account changes: assets carries its other lines over; trades references asset, so
    // every trade line is checked again.
    edit(dir, "account_assets.csv", |l| {
        let stamp = l[5].rsplit(',').next().unwrap().to_string();
        let changed = if stamp.ends_with("00") { format!("{}01", &stamp[..stamp.len() - 2]) } else { format!("{}00", &stamp[..stamp.len() - 2]) };
        set(l, 5, 7, &changed);
    });
    same_outcome(&a, &b, dir, "an account changed", &["assets"]);
}

/// Repeats a data line as it is (the copy comes first), and gives a later line the key of an
/// earlier one: returns the repeated line and the earlier line whose key was taken.
fn edit_dup(dir: &Path) -> (String, String) {
    let mut out = (String::new(), String::new());
    edit(dir, "trades.csv", |l| {
        let t = trade_lines(l);
        let key = l[t[50]].split(',').nth(3).unwrap().to_string();
        set(l, t[60], 3, &key);
        out = (l[t[40]].clone(), l[t[50]].clone());
        l.insert(5, out.0.clone());
    });
    out
}

#[test]
fn a_cache_that_cannot_be_written_never_fails_a_load() {
    let data = generate(50, 500, 0.0, 63);
    let db = TestDb::new("nocache");
    let run = |dir: &Path| {
        let mut args: Vec<String> = vec!["run".into(), "specs/small_etl.yaml".into(), "-v".into()];
        args.extend(db.sets(dir));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::util::etl(&refs, &[("ETL_CACHE_DIR", "/dev/null/etl-cache")])
    };
    let out = run(data.path());
    out.expect_code(0);
    assert!(out.stderr.contains("no line index kept"), "{}", out.evidence());
    let traded_id = change_one_trade(data.path());
    let out = run(data.path());
    out.expect_code(0);
    assert_eq!(
        db.texts(&format!("SELECT order_remark FROM {}.trade WHERE traded_id = '{traded_id}'", db.schema)),
        ["remark changed by the test"],
        "{}",
        out.evidence()
    );
}
