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
    // Forced over the same files: every valid row is found equal to the table's, none written.
    for s in report(&out)["stages"].as_array().unwrap() {
        assert_eq!(s["loaded"]["unchanged"], s["rows_valid"], "{}: every valid row unchanged\n{}", s["stage"], out.evidence());
    }
    let out = db.run(data.path(), &["--output", "json", "--set", "defaults.tolerance=0.02"]);
    assert!(stages(&out).iter().all(|s| s.1.is_none()), "a spec change loads again\n{}", out.evidence());
    // A dry run checks every row.
    let out = db.run(data.path(), &["--output", "json", "--dry-run"]);
    assert!(stages(&out).iter().all(|s| s.1.is_none()), "{}", out.evidence());

    // trade dropped: reuse is ruled out before the locks (from the catalog: its file downloads
    // while assets loads), and the load ends as a forced one does.
    db.exec(&format!("DROP TABLE {}.trade", db.schema));
    let out = db.run(data.path(), &["--output", "json", "-v"]);
    assert!(out.stderr.contains("trades: its table is not as run ") && out.stderr.contains("left it (dropped, made again or altered): loaded again"), "{}", out.evidence());
    assert!(!out.stderr.contains("assets: its table is not as run"), "asset's table is as its last load left it\n{}", out.evidence());
    assert_eq!(stages(&out)[1].1, None, "{}", out.evidence());
    let loaded = digest(&db);
    db.run(data.path(), &["--output", "json", "--force"]).expect_code(4);
    assert_eq!(digest(&db), loaded, "the load after the drop ended as a forced load does");
}

/// A table's rows, surrogate ids included: a load draws ids for new keys only, in key order,
/// however many unchanged rows it staged, so a changed-lines load and a forced one hand out the same.
fn rows_digest(db: &TestDb, table: &str) -> String {
    db.texts(&format!(
        "SELECT count(*)::text || ':' || coalesce(md5(string_agg(to_jsonb(t)::text, '|' ORDER BY to_jsonb(t)::text)), '') FROM {}.{table} AS t",
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
    same_outcome_with(incremental, full, dir, step, carried, &[])
}

/// [`same_outcome`] with `extra` arguments for both runs.
fn same_outcome_with(incremental: &TestDb, full: &TestDb, dir: &Path, step: &str, carried: &[&str], extra: &[&str]) -> Output {
    let rejects = |name: &str| dir.join(format!("{name}.csv")).display().to_string();
    let (ra, rb) = (rejects("a"), rejects("b"));
    let mut args_a = vec!["--output", "json", "-v", "--rejects-out", ra.as_str()];
    let mut args_b = vec!["--output", "json", "--force", "--rejects-out", rb.as_str()];
    args_a.extend_from_slice(extra);
    args_b.extend_from_slice(extra);
    let a = incremental.run(dir, &args_a);
    let b = full.run(dir, &args_b);
    assert_eq!(a.code, b.code, "{step}: exit codes differ\n{}\n{}", a.evidence(), b.evidence());
    for stage in carried {
        assert!(
            carried_over(&a, stage) > 0,
            "{step}: {stage} did not carry its unchanged lines over\n{}",
            a.evidence()
        );
    }
    let (ra, rb) = (report(&a), report(&b));
    // A file neither way can read: the same error, and nothing loaded by either.
    if ra["status"] == "error" || rb["status"] == "error" {
        assert_eq!(ra["error"], rb["error"], "{step}: the errors differ\n{}\n{}", a.evidence(), b.evidence());
        for table in ["asset", "trade"] {
            assert_eq!(rows_digest(incremental, table), rows_digest(full, table), "{step}: the {table} rows differ");
        }
        return a;
    }
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
    // Each rejected row of a stage that read only its changed lines keeps its fields as read,
    // carried over or read again alike. (A stage skipped whole writes no rejects of its own.)
    let kept = |db: &TestDb, r: &serde_json::Value, stage: &str| {
        db.texts(&format!(
            "SELECT coalesce(string_agg(line || ':' || rule || ':' || (record IS NOT NULL), ',' ORDER BY line, rule), '') FROM etl_rejects WHERE run_id = {} AND stage = '{stage}' AND severity = 'error'",
            r["run_id"]
        ))
    };
    for stage in carried {
        assert_eq!(kept(incremental, &ra, stage), kept(full, &rb, stage), "{step}: the rejected rows' fields kept differ\n{}", a.evidence());
    }
    for table in ["asset", "trade"] {
        assert_eq!(rows_digest(incremental, table), rows_digest(full, table), "{step}: the {table} rows differ");
    }
    // The state each stage of this run recorded (an upsert's told from the state before and
    // what its merge wrote and replaced, without a scan) is its table's as a scan finds it.
    for (db, out) in [(incremental, &a), (full, &b)] {
        let run = report(out)["run_id"].as_i64().unwrap_or(-1);
        for table in ["asset", "trade"] {
            let recorded = db.texts(&format!(
                "SELECT split_part(table_state, ':', 1) || ':' || split_part(table_state, ':', 2) || ':' || split_part(table_state, ':', 3) FROM etl_run_stages \
                 WHERE run_id = {run} AND target_table = '\"{}\".\"{table}\"' AND table_state IS NOT NULL",
                db.schema
            ));
            if recorded.is_empty() {
                continue;
            }
            let scanned = db.texts(&format!(
                "SELECT count(*)::text || ':' || coalesce(sum(hashint8extended(xmin::text::bigint, 0)), 0)::text || ':' || coalesce(max(xmin::text::bigint), 0)::text FROM {}.{table}",
                db.schema
            ));
            assert_eq!(recorded, scanned, "{step}: the state recorded for {table} is not the table's\n{}", out.evidence());
        }
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

    // Every key quoted, one with escaped quotes (`"T""Q""…"`): the record scan undoes quotes and
    // escapes as DuckDB does, so a later change still carries the other lines over.
    let quoted = |l: &[String]| -> Vec<usize> { (1..l.len()).filter(|&i| l[i].split(',').count() == 15 && l[i].split(',').nth(3).is_some_and(|t| t.starts_with("\"T"))).collect() };
    edit(dir, "trades.csv", |l| {
        for i in trade_lines(l) {
            let key = l[i].split(',').nth(3).unwrap().to_string();
            set(l, i, 3, &format!("\"{key}\""));
        }
        let t = quoted(l);
        set(l, t[40], 3, "\"T\"\"Q\"\"40\"");
    });
    let out = same_outcome(&a, &b, dir, "every key quoted, one with escaped quotes", &[]);
    // The quote inside an unquoted field (above) is still there: the record scan cannot split
    // the file, and says so.
    assert!(out.stderr.contains("trades: no line index kept (a quote inside an unquoted field)"), "{}", out.evidence());
    // The index begun for that file is not left half written in the cache (its `line-index`).
    let indexes = crate::util::cache_dir().join("line-index");
    let table = format!("\"{}\".\"trade\"", a.schema);
    let index = etl::exec::incremental::index_path(&indexes, "small_etl", "trades", &table, "x");
    let stem = index.file_name().unwrap().to_string_lossy().split('-').next().unwrap().to_string();
    assert!(std::fs::read_dir(&indexes).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with(&stem)), "no index of the stage in {}", indexes.display());
    let left: Vec<String> = std::fs::read_dir(&indexes)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!(".{stem}-")) && n.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "a partial line index was left in the cache: {left:?}");
    edit(dir, "trades.csv", |l| {
        for line in l.iter_mut() {
            *line = line.replace("say \"hi\"", "said hi");
        }
    });
    same_outcome(&a, &b, dir, "the quote inside an unquoted field taken out", &[]);
    edit(dir, "trades.csv", |l| {
        let t = quoted(l);
        set(l, t[41], 10, "changed beside quoted keys");
    });
    same_outcome(&a, &b, dir, "a value changed beside quoted keys", &["trades"]);
    // The quoted key moved to the end of every record (the spec reads columns by name): the
    // closing quote of the key the scan reads ends the record.
    edit(dir, "trades.csv", |l| {
        let mut rows = quoted(l);
        rows.insert(0, 0);
        for i in rows {
            let mut f: Vec<String> = l[i].split(',').map(str::to_string).collect();
            let key = f.remove(3);
            f.push(key);
            l[i] = f.join(",");
        }
    });
    same_outcome(&a, &b, dir, "the quoted key moved to the last column", &[]);
    edit(dir, "trades.csv", |l| {
        let t: Vec<usize> = (1..l.len()).filter(|&i| l[i].split(',').count() == 15 && l[i].rsplit(',').next().is_some_and(|k| k.starts_with("\"T"))).collect();
        set(l, t[42], 9, "changed beside a last quoted key");
    });
    same_outcome(&a, &b, dir, "a value changed beside a last quoted key", &["trades"]);
    // A warning rule (it warns of every sell): the warnings of the lines carried over count as a
    // forced load's do.
    let warn = [
        "--set",
        "stages.trades.rules=[{name: traded_amount_is_product, check: 'traded_amount = traded_price * traded_volume'}, {name: buys_only, check: 'direction = 1', severity: warn}]",
    ];
    same_outcome_with(&a, &b, dir, "a warning rule added", &[], &warn);
    edit(dir, "trades.csv", |l| {
        let t: Vec<usize> = (1..l.len()).filter(|&i| l[i].split(',').count() == 15 && l[i].rsplit(',').next().is_some_and(|k| k.starts_with("\"T"))).collect();
        set(l, t[43], 9, "changed beside warned lines");
    });
    let out = same_outcome_with(&a, &b, dir, "a value changed beside warned lines", &["trades"], &warn);
    assert!(report(&out)["stages"][1]["rows_warned"].as_u64().is_some_and(|n| n > 100), "most warnings are carried over\n{}", out.evidence());
    // The index each load keeps replaces the stage's older ones: one is left in the cache.
    let kept: Vec<String> = std::fs::read_dir(&indexes)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{stem}-")) && (n.ends_with(".lines") || n.ends_with(".keys")))
        .collect();
    assert_eq!(kept.len(), 1, "the stage's line indexes in {}: {kept:?}", indexes.display());
}

/// A unique column beside the key: a changed line that takes the value an unchanged line holds
/// makes that line a repeat too, so it is checked again with the changed one (never carried over
/// as it was), and each load ends as checking every line does.
#[test]
fn a_changed_line_taking_an_unchanged_lines_unique_value_checks_both_again() {
    let data = generate(100, 1_000, 0.0, 63);
    let dir = data.path();
    // Every remark its own.
    edit(dir, "trades.csv", |l| {
        for (n, i) in trade_lines(l).into_iter().enumerate() {
            set(l, i, 10, &format!("R{n:05}"));
        }
    });
    let unique = ["--set", "stages.trades.columns.order_remark.unique=true"];
    let (a, b) = (TestDb::new("uniq_a"), TestDb::new("uniq_b"));
    let out = same_outcome_with(&a, &b, dir, "first load", &[], &unique);
    assert_eq!(report(&out)["stages"][1]["rows_rejected"], 0, "{}", out.evidence());
    let remark = |l: &[String], i: usize| l[i].split(',').nth(10).unwrap().to_string();
    let mut lines = (0, 0);
    edit(dir, "trades.csv", |l| {
        let t = trade_lines(l);
        lines = (t[5], t[9]);
        let taken = remark(l, t[9]);
        set(l, t[5], 10, &taken);
    });
    let out = same_outcome_with(&a, &b, dir, "a changed line takes an unchanged line's remark", &["trades"], &unique);
    assert_eq!(report(&out)["stages"][1]["rows_rejected"], 2, "both lines holding the remark are rejected\n{}", out.evidence());
    edit(dir, "trades.csv", |l| set(l, lines.0, 10, "R99999"));
    let out = same_outcome_with(&a, &b, dir, "the remark given back", &["trades"], &unique);
    assert_eq!(report(&out)["stages"][1]["rows_rejected"], 0, "{}", out.evidence());
}

/// The same with the unique value empty, not NULL (`null_values` without `""`), in the record's
/// last field: the scan reads an empty last field as a value like any other, so the changed line
/// taking it makes the unchanged one a repeat too.
#[test]
fn an_empty_unique_value_in_the_last_field_taken_by_a_changed_line_checks_both_again() {
    let data = generate(100, 1_000, 0.0, 64);
    let dir = data.path();
    // The remark moved to the end of each line, every remark its own, one of them empty.
    edit(dir, "trades.csv", |l| {
        for line in l.iter_mut() {
            let mut f: Vec<String> = line.split(',').map(str::to_string).collect();
            if f.len() == 15 {
                let remark = f.remove(10);
                f.push(remark);
                *line = f.join(",");
            }
        }
        for (n, i) in trade_lines(l).into_iter().enumerate() {
            set(l, i, 14, &format!("R{n:05}"));
        }
        let t = trade_lines(l);
        set(l, t[9], 14, "");
    });
    let unique = ["--set", "stages.trades.columns.order_remark.unique=true", "--set", "defaults.csv.null_values=[\"NULL\"]"];
    let (a, b) = (TestDb::new("uniq_empty_a"), TestDb::new("uniq_empty_b"));
    let out = same_outcome_with(&a, &b, dir, "first load", &[], &unique);
    assert_eq!(report(&out)["stages"][1]["rows_rejected"], 0, "{}", out.evidence());
    let empty = b.count(&format!("SELECT count(*) FROM {}.trade WHERE order_remark = ''", b.schema));
    assert_eq!(empty, 1, "the empty remark is a value here, not NULL\n{}", out.evidence());
    edit(dir, "trades.csv", |l| {
        let t = trade_lines(l);
        set(l, t[5], 14, "");
    });
    let out = same_outcome_with(&a, &b, dir, "a changed line takes the unchanged line's empty remark", &["trades"], &unique);
    assert_eq!(report(&out)["stages"][1]["rows_rejected"], 2, "both lines holding the empty remark are rejected\n{}", out.evidence());
}

/// Rewrites a file of `dir` through `edit` with each line ended by `end` (the last one too when
/// `final_end`), whatever line ends it had.
fn rewrite(dir: &Path, file: &str, end: &str, final_end: bool, edit: impl FnOnce(&mut Vec<String>)) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap().replace("\r\n", "\n").replace('\r', "\n");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    edit(&mut lines);
    let mut out = lines.join(end);
    if final_end {
        out.push_str(end);
    }
    std::fs::write(&path, out).unwrap();
}

#[test]
fn crlf_cr_only_and_mixed_line_ends_load_as_a_forced_load_does() {
    let data = generate(60, 500, 0.03, 63);
    let dir = data.path();
    let (a, b) = (TestDb::new("ends_a"), TestDb::new("ends_b"));
    let new_trade = |l: &mut Vec<String>, n: usize| {
        let t = trade_lines(l);
        let mut copy: Vec<String> = l[t[n]].split(',').map(str::to_string).collect();
        copy[3] = format!("TEND{n:04}");
        l.push(copy.join(","));
    };
    // CRLF with no line end after the last line (as Excel writes it).
    rewrite(dir, "trades.csv", "\r\n", false, |_| {});
    same_outcome(&a, &b, dir, "a CRLF file without a final line end", &[]);
    rewrite(dir, "trades.csv", "\r\n", false, |l| new_trade(l, 1));
    same_outcome(&a, &b, dir, "a CRLF file without a final line end gains a line", &["trades"]);
    rewrite(dir, "trades.csv", "\r\n", false, |l| {
        let last = l.len() - 1;
        set(l, last, 10, "last line changed");
    });
    same_outcome(&a, &b, dir, "its last line changes", &["trades"]);
    rewrite(dir, "trades.csv", "\r\n", true, |l| new_trade(l, 2));
    same_outcome(&a, &b, dir, "a CRLF file with a final line end gains a line", &["trades"]);
    // Old Excel's "CSV (Macintosh)": CR alone ends each line. The scan cannot split it as
    // DuckDB does, so every line is checked.
    rewrite(dir, "trades.csv", "\r", true, |l| new_trade(l, 3));
    let out = same_outcome(&a, &b, dir, "CR-only line ends", &[]);
    assert!(out.stderr.contains("trades: every line is checked: "), "{}", out.evidence());
    // Both CRLF and LF in one file: every line is checked, and both ways end alike.
    // (The CR-only load kept no line index: this one checks every line again.)
    rewrite(dir, "trades.csv", "\n", true, |_| {});
    same_outcome(&a, &b, dir, "back to LF", &[]);
    let path = dir.join("trades.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mixed: String = text.lines().enumerate().map(|(i, l)| if i % 2 == 0 { format!("{l}\r\n") } else { format!("{l}\n") }).collect();
    std::fs::write(&path, mixed).unwrap();
    let out = same_outcome(&a, &b, dir, "CRLF and LF mixed", &[]);
    if report(&out)["status"] != "error" {
        assert!(out.stderr.contains("every line is checked: the file's lines end in both CRLF and LF"), "{}", out.evidence());
    }
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

/// Deletes the rejects etl_rejects holds for `db`'s tables (`one_of`: one row of that stage's),
/// as an operator clearing rejects they have dealt with would.
fn delete_rejects(db: &TestDb, one_of: Option<&str>) {
    let of_db = format!(
        "SELECT r.ctid FROM etl_rejects r JOIN etl_run_stages s ON s.run_id = r.run_id AND s.stage = r.stage WHERE s.target_table LIKE '\"{}\".%'{}",
        db.schema,
        one_of.map_or(String::new(), |st| format!(" AND r.stage = '{st}'"))
    );
    let limit = if one_of.is_some() { " LIMIT 1" } else { "" };
    db.exec(&format!("DELETE FROM etl_rejects WHERE ctid IN ({of_db}{limit})"));
}

#[test]
fn rejects_deleted_by_an_operator_make_the_next_run_check_every_line() {
    let data = generate(100, 800, 0.03, 64);
    let dir = data.path();
    let (a, b) = (TestDb::new("rejgone_a"), TestDb::new("rejgone_b"));
    same_outcome(&a, &b, dir, "first load", &[]);
    // Every reject deleted: an unchanged stage is not skipped (its rejects cannot be reported
    // again), it is loaded and its rejects recorded anew.
    delete_rejects(&a, None);
    let out = same_outcome(&a, &b, dir, "nothing changed, the rejects deleted", &[]);
    assert!(out.stderr.contains("every line is checked: etl_rejects no longer holds the rejects run"), "{}", out.evidence());
    assert!(!out.stderr.contains("unchanged since run"), "{}", out.evidence());
    // Now intact again: the next run skips.
    let out = same_outcome(&a, &b, dir, "nothing changed", &[]);
    assert!(out.stderr.contains("unchanged since run"), "{}", out.evidence());
    // One reject deleted, and a trade appended: the changed-lines path steps aside too.
    delete_rejects(&a, Some("trades"));
    edit(dir, "trades.csv", |l| {
        let t = trade_lines(l);
        let mut copy: Vec<String> = l[t[2]].split(',').map(str::to_string).collect();
        copy[3] = "TGONE0001".into();
        l.push(copy.join(","));
    });
    let out = same_outcome(&a, &b, dir, "a trade appended, one reject deleted", &[]);
    assert!(out.stderr.contains("trades: every line is checked: etl_rejects no longer holds the rejects run"), "{}", out.evidence());
    // With the rejects intact, changed lines are read alone again.
    edit(dir, "trades.csv", |l| {
        let t = trade_lines(l);
        set(l, t[5], 10, "changed again");
    });
    same_outcome(&a, &b, dir, "a value changed", &["trades"]);
}

#[test]
fn a_dropped_index_or_foreign_key_is_put_back_and_the_next_run_skips_the_stage() {
    let data = generate(50, 300, 0.0, 65);
    let db = TestDb::new("repairskip");
    db.run(data.path(), &[]).expect_code(0);
    let table = format!("{}.trade", db.schema);
    let catalog = || {
        let mut defs = db.texts(&format!("SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = '{table}'::regclass"));
        defs.extend(db.texts(&format!("SELECT indexdef FROM pg_indexes WHERE schemaname = '{}' AND tablename = 'trade'", db.schema)));
        defs.sort();
        defs
    };
    let before = catalog();
    let fk = db.texts(&format!("SELECT conname::text FROM pg_constraint WHERE contype = 'f' AND conrelid = '{table}'::regclass LIMIT 1"));
    let index = db.texts(&format!("SELECT indexname::text FROM pg_indexes WHERE schemaname = '{}' AND tablename = 'trade' AND indexdef NOT LIKE '%UNIQUE%' LIMIT 1", db.schema));
    assert!(!fk.is_empty() && !index.is_empty(), "trade has a foreign key and a plain index: {before:?}");
    db.exec(&format!("ALTER TABLE {table} DROP CONSTRAINT {}; DROP INDEX {}.{}", fk[0], db.schema, index[0]));
    // The table's definition is part of its state: the stage is checked again (no row changes)
    // and its foreign key and index are put back, committed with the load.
    let out = db.run(data.path(), &["-v"]);
    out.expect_code(0);
    assert!(!out.stderr.contains("trades: unchanged since run"), "a table missing its foreign key was taken as unchanged\n{}", out.evidence());
    assert_eq!(catalog(), before, "the foreign key and index are back\n{}", out.evidence());
    // As the load left it: the next run skips the stage, and the repairs stay.
    let out = db.run(data.path(), &["-v"]);
    out.expect_code(0);
    assert!(out.stderr.contains("trades: unchanged since run"), "{}", out.evidence());
    assert_eq!(catalog(), before, "{}", out.evidence());
}

/// A column dropped and added again with a default writes no new row version (every value is
/// the default, read from the catalog): the table's definition in its state tells, and the next
/// run loads the file's values again.
#[test]
fn a_column_dropped_and_added_again_is_not_taken_for_unchanged() {
    let data = generate(40, 0, 0.0, 66);
    let db = TestDb::new("readdcol");
    db.run(data.path(), &[]).expect_code(0);
    let sum = || db.texts(&format!("SELECT sum(cash)::text FROM {}.asset", db.schema)).remove(0);
    let before = sum();
    assert_ne!(before, "0.00");
    db.exec(&format!("ALTER TABLE {0}.asset DROP COLUMN cash; ALTER TABLE {0}.asset ADD COLUMN cash numeric(20,2) NOT NULL DEFAULT 0", db.schema));
    assert_eq!(sum(), "0.00");
    let out = db.run(data.path(), &["-v"]);
    out.expect_code(0);
    assert!(!out.stderr.contains("assets: unchanged since run"), "the emptied column was taken as unchanged\n{}", out.evidence());
    assert_eq!(sum(), before, "{}", out.evidence());
}

/// A small deterministic random source (SplitMix64): the series is replayed from its seed.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// How a file's lines end, as the random series writes it.
#[derive(Debug, Clone, Copy)]
enum Ends {
    Lf,
    Crlf,
    Cr,
    /// CRLF and LF in turn.
    Mixed,
}

/// A CSV file as the random series edits it: its lines (the header first) and how it is written.
struct Model {
    lines: Vec<String>,
    /// The first file's data lines.
    spare: Vec<String>,
    ends: Ends,
    final_end: bool,
    bom: bool,
    /// Written gzip-compressed, as `<name>.gz`.
    gzip: bool,
}

impl Model {
    fn read(path: &Path) -> Model {
        let lines: Vec<String> = std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect();
        Model { spare: lines[1..].iter().take(10).cloned().collect(), lines, ends: Ends::Lf, final_end: true, bom: false, gzip: false }
    }

    fn write(&self, path: &Path) {
        let mut out: Vec<u8> = if self.bom { vec![0xef, 0xbb, 0xbf] } else { Vec::new() };
        for (i, line) in self.lines.iter().enumerate() {
            out.extend_from_slice(line.as_bytes());
            if i + 1 < self.lines.len() || self.final_end {
                out.extend_from_slice(match (self.ends, i % 2) {
                    (Ends::Lf, _) | (Ends::Mixed, 1) => b"\n",
                    (Ends::Crlf, _) | (Ends::Mixed, _) => b"\r\n",
                    (Ends::Cr, _) => b"\r",
                });
            }
        }
        if self.gzip {
            use std::io::Write;
            let gz = path.with_extension("csv.gz");
            let mut e = flate2::write::GzEncoder::new(std::fs::File::create(gz).unwrap(), flate2::Compression::default());
            e.write_all(&out).unwrap();
            e.finish().unwrap();
        }
        std::fs::write(path, out).unwrap();
    }

    /// A random data line (the file has at least one).
    fn pick(&self, dice: &mut Dice) -> usize {
        1 + dice.below(self.lines.len() - 1)
    }
}

/// Sets field `i` of a CSV line written without quotes around commas (a field that holds one is
/// quoted).
fn set_field(line: &mut String, i: usize, value: &str) {
    let mut f: Vec<String> = split_fields(line);
    if i < f.len() {
        f[i] = if value.contains(',') { format!("\"{}\"", value.replace('"', "\"\"")) } else { value.to_string() };
    }
    *line = f.join(",");
}

/// The fields of a line, quotes kept (a quoted field may hold commas).
fn split_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                out.last_mut().unwrap().push(c);
            }
            ',' if !quoted => out.push(String::new()),
            _ => out.last_mut().unwrap().push(c),
        }
    }
    out
}

/// One random edit of the files or of the tables (applied to both databases alike, except
/// rejects deleted, which only the changed-lines database reads); what it did, for the record.
fn random_edit(dice: &mut Dice, n: usize, trades: &mut Model, assets: &mut Model, a: &TestDb, b: &TestDb) -> String {
    let both = |sql: &str| {
        a.exec(&sql.replace("{s}", &a.schema));
        b.exec(&sql.replace("{s}", &b.schema));
    };
    // Enough lines to edit: the first file's come back when removals used them up.
    if trades.lines.len() < 6 {
        let spare = trades.spare.clone();
        trades.lines.extend(spare);
    }
    match dice.below(15) {
        0 | 1 => {
            let i = trades.pick(dice);
            let value = if dice.below(3) == 0 { format!("remark, {n}") } else { format!("remark {n}") };
            set_field(&mut trades.lines[i], 10, &value);
            format!("line {} remark set to {value:?}", i + 1)
        }
        2 => {
            let i = trades.pick(dice);
            set_field(&mut trades.lines[i], 11, "7");
            format!("line {} direction made invalid", i + 1)
        }
        3 => {
            let k = 1 + dice.below(4);
            for j in 0..k {
                let i = trades.pick(dice);
                let mut copy = trades.lines[i].clone();
                set_field(&mut copy, 3, &format!("TRND{n:04}{j}"));
                let at = 1 + dice.below(trades.lines.len());
                trades.lines.insert(at.min(trades.lines.len()), copy);
            }
            format!("{k} new trades")
        }
        4 => {
            let k = 1 + dice.below(3);
            for _ in 0..k {
                let i = trades.pick(dice);
                trades.lines.remove(i);
            }
            format!("{k} lines removed")
        }
        5 => {
            let (i, j) = (trades.pick(dice), trades.pick(dice));
            let (lo, hi) = (i.min(j), i.max(j));
            if dice.below(2) == 0 {
                trades.lines.swap(lo, hi);
                format!("lines {} and {} swapped", lo + 1, hi + 1)
            } else {
                trades.lines[lo..=hi].reverse();
                format!("lines {}..={} reversed", lo + 1, hi + 1)
            }
        }
        6 => {
            let i = trades.pick(dice);
            let copy = trades.lines[i].clone();
            let at = 1 + dice.below(trades.lines.len());
            trades.lines.insert(at.min(trades.lines.len()), copy);
            format!("line {} repeated at {}", i + 1, at + 1)
        }
        7 => {
            let (i, j) = (trades.pick(dice), trades.pick(dice));
            let key = split_fields(&trades.lines[j]).get(3).cloned().unwrap_or_default();
            set_field(&mut trades.lines[i], 3, &key);
            format!("line {} given the key of line {}", i + 1, j + 1)
        }
        8 => {
            trades.ends = [Ends::Lf, Ends::Crlf, Ends::Cr, Ends::Mixed][dice.below(4)];
            trades.final_end = dice.below(3) != 0;
            format!("line ends {:?}, final line end {}", trades.ends, trades.final_end)
        }
        9 if dice.below(2) == 0 => {
            trades.gzip = !trades.gzip;
            format!("trades {}", if trades.gzip { "gzip-compressed" } else { "plain again" })
        }
        9 => {
            trades.bom = !trades.bom;
            format!("byte order mark {}", if trades.bom { "added" } else { "removed" })
        }
        10 => {
            let all = dice.below(2) == 0;
            delete_rejects(a, if all { None } else { Some("trades") });
            format!("an operator deleted {} rejects", if all { "all" } else { "one of the trades'" })
        }
        11 => {
            both("ALTER TABLE {s}.trade DROP COLUMN order_remark; ALTER TABLE {s}.trade ADD COLUMN order_remark VARCHAR(100)");
            "trade.order_remark dropped and added again".into()
        }
        12 => {
            let m = 2 + dice.below(5);
            both(&format!("UPDATE {{s}}.trade SET order_remark = 'by ops' WHERE id % {m} = 0"));
            format!("UPDATE of every {m}th trade's remark")
        }
        13 => {
            let i = assets.pick(dice);
            let stamp = split_fields(&assets.lines[i]).last().cloned().unwrap_or_default();
            let changed = if stamp.ends_with('0') { format!("{}1", &stamp[..stamp.len() - 1]) } else { format!("{}0", &stamp[..stamp.len().saturating_sub(1)]) };
            let last = split_fields(&assets.lines[i]).len() - 1;
            set_field(&mut assets.lines[i], last, &changed);
            format!("account on line {} changed", i + 1)
        }
        _ => {
            if let Some(i) = trades.lines.iter().position(|x| x == "1,2,3") {
                trades.lines.remove(i);
                "the ragged line removed".into()
            } else {
                let at = trades.pick(dice);
                trades.lines.insert(at, "1,2,3".into());
                format!("a ragged line at {}", at + 1)
            }
        }
    }
}

/// A random series of edits (the trades file now and then gzip-compressed; `ETL_DIFF_STEPS` of them, 200 unless set; `ETL_DIFF_SEED` picks
/// the series), each loaded both ways: every step must end alike (rows with their ids, counts,
/// tallies, rejects). A failure names the seed and every edit up to it.
#[test]
fn a_random_series_of_edits_ends_alike_loaded_by_changed_lines_or_forced() {
    let steps: usize = std::env::var("ETL_DIFF_STEPS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let seed: u64 = std::env::var("ETL_DIFF_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20261203);
    let data = generate(40, 300, 0.03, 65);
    let dir = data.path();
    let (a, b) = (TestDb::new("random_a"), TestDb::new("random_b"));
    let mut trades = Model::read(&dir.join("trades.csv"));
    let mut assets = Model::read(&dir.join("account_assets.csv"));
    let mut dice = Dice(seed);
    let mut done: Vec<String> = vec!["first load".into()];
    let at = |done: &[String]| format!("ETL_DIFF_SEED={seed}, step {}: {}", done.len(), done.join("; "));
    same_outcome(&a, &b, dir, &at(&done), &[]);
    // Steps where the changed-lines path was taken (not every line checked): the series must
    // exercise it, not only the fallback.
    let mut carried = 0;
    for n in 1..=steps {
        let what = random_edit(&mut dice, n, &mut trades, &mut assets, &a, &b);
        done.push(what);
        trades.write(&dir.join("trades.csv"));
        assets.write(&dir.join("account_assets.csv"));
        let key = if trades.gzip { "stages.trades.source.key=trades.csv.gz" } else { "stages.trades.source.key=trades.csv" };
        let out = same_outcome_with(&a, &b, dir, &at(&done), &[], &["--set", key]);
        if carried_over(&out, "trades") > 0 {
            carried += 1;
        }
    }
    // A fifth: series differ in how many of their edits leave the path open (ETL_DIFF_SEED=11,
    // 300 steps: 63); a path never taken is 0.
    assert!(carried * 5 >= steps, "only {carried} of {steps} steps read the changed lines alone: {}", at(&done));
}

/// An analytic whose tables are as an earlier run found them reports that run's result instead
/// of querying (said in the report); a change to one of its tables, or `--force`, queries it
/// again; one that calls a function whose value may change (now()) queries on every run.
#[test]
fn an_analytic_whose_tables_are_unchanged_reports_the_earlier_result_and_any_change_queries_again() {
    let data = generate(300, 3_000, 0.0, 91);
    let db = TestDb::new("analytics_reuse");
    let clock = "analytics.clock={sql: \"SELECT count(*) AS trades, now() AS at FROM trade\"}";
    let run = |extra: &[&str]| {
        let mut args = vec!["--output", "json", "--set", clock];
        args.extend_from_slice(extra);
        let out = db.run(data.path(), &args);
        out.expect_code(0);
        let r = report(&out);
        let analytics: Vec<(String, Option<i64>, String)> = r["analytics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["name"].as_str().unwrap().to_string(), a["unchanged_since_run"].as_i64(), a["rows"].to_string()))
            .collect();
        (r["run_id"].as_i64().unwrap(), analytics, out)
    };
    let (first, queried, out) = run(&[]);
    assert!(queried.len() > 2 && queried.iter().all(|(_, reused, _)| reused.is_none()), "{}", out.evidence());
    let recorded = db.count(&format!("SELECT count(*) FROM etl_analytics WHERE run_id = {first} AND reused_from IS NULL"));
    assert_eq!(recorded as usize, queried.len() - 1, "every analytic but the clock is recorded with its digest\n{}", out.evidence());

    // Nothing changed: each result is the first run's, not queried again; the clock is queried.
    let (second, again, out) = run(&[]);
    for ((name, reused, rows), (_, _, first_rows)) in again.iter().zip(&queried) {
        if name == "clock" {
            assert_eq!(*reused, None, "the clock was not queried\n{}", out.evidence());
        } else {
            assert_eq!(*reused, Some(first), "{name} was queried again\n{}", out.evidence());
            assert_eq!(rows, first_rows, "{name}'s reported result is not the first run's");
        }
    }
    assert_eq!(db.count(&format!("SELECT count(*) FROM etl_analytics WHERE run_id = {second} AND reused_from = {first}")) as usize, queried.len() - 1);
    let text = db.run(data.path(), &["--set", clock]);
    assert!(text.stdout.contains(&format!("(not queried: its tables are as run {first} found them")), "{}", text.evidence());

    // A row of trade changed behind etl's back: the stage loads the file again and every analytic
    // reading trade is queried again.
    db.exec(&format!("UPDATE {}.trade SET traded_volume = traded_volume + 1 WHERE id = (SELECT min(id) FROM {}.trade)", db.schema, db.schema));
    let (_, after, out) = run(&[]);
    let reads_trade = |name: &str| name != "clock" && !name.contains("asset");
    for (name, reused, _) in &after {
        if reads_trade(name) {
            assert_eq!(*reused, None, "{name} reported an earlier result though trade changed\n{}", out.evidence());
        }
    }
    // --force queries every one.
    let (_, forced, out) = run(&["--force"]);
    assert!(forced.iter().all(|(_, reused, _)| reused.is_none()), "{}", out.evidence());
}

/// A file read from S3 is compared with the last one's line index as it downloads (the scan
/// follows the download's chunks): a changed trades file, a line gone, one repeated, one
/// changed, ends as a forced load of it (rows, counts, rejects), its unchanged lines carried over.
#[test]
fn a_file_from_s3_is_compared_as_it_downloads_and_ends_as_a_forced_load() {
    // More than the first bytes the header is read from (`HEADER_BYTES`): the scan reads the
    // rest from the download's chunks as they arrive.
    let data = generate(300, 40_000, 0.02, 7);
    let size = std::fs::metadata(data.path().join("trades.csv")).unwrap().len();
    assert!(size > etl::exec::extract::HEADER_BYTES + (1 << 20), "trades.csv has only {size} bytes");
    let (a, b) = (TestDb::new("s3lines"), TestDb::new("s3forced"));
    let files = ["account_assets.csv", "trades.csv"];
    let bucket = crate::run::TestBucket::with_files("s3lines", data.path(), &files);
    for db in [&a, &b] {
        let out = db.run_s3(&bucket, &[]);
        assert!(matches!(out.code, 0 | 4), "{}", out.evidence());
    }
    // The next trades file: line 10 gone, line 20 repeated at the end, line 30's volume and
    // amount doubled.
    let text = std::fs::read_to_string(data.path().join("trades.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut f: Vec<String> = lines[30].split(',').map(str::to_string).collect();
    if let (Ok(v), Ok(amount)) = (f[7].parse::<i64>(), f[8].parse::<f64>()) {
        f[7] = (v * 2).to_string();
        f[8] = format!("{:.2}", amount * 2.0);
    }
    lines[30] = f.join(",");
    let repeated = lines[20].clone();
    lines.push(repeated);
    lines.remove(10);
    let s3 = crate::run::s3_client_keyed(&bucket.endpoint, &bucket.access_key, &bucket.secret_key);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let put = |lines: &[String]| {
        std::fs::write(data.path().join("trades.csv"), lines.join("\n") + "\n").unwrap();
        rt.block_on(async {
            let body = aws_sdk_s3::primitives::ByteStream::from_path(data.path().join("trades.csv")).await.unwrap();
            s3.put_object().bucket(&bucket.name).key("trades.csv").body(body).send().await.unwrap();
        });
    };
    let compare = || {
        let incremental = a.run_s3(&bucket, &["--output", "json", "-v"]);
        let forced = b.run_s3(&bucket, &["--output", "json", "--force"]);
        assert_eq!(incremental.code, forced.code, "{}\n{}", incremental.evidence(), forced.evidence());
        assert!(carried_over(&incremental, "trades") > 39_000, "{}", incremental.evidence());
        assert!(incremental.stderr.contains("as it downloaded"), "the comparison did not use the scan made during the download\n{}", incremental.evidence());
        let (ra, rb) = (report(&incremental), report(&forced));
        let (sa, sb) = (&ra["stages"][1], &rb["stages"][1]);
        for k in ["stage", "rows_read", "rows_valid", "rows_rejected", "rejects_by_rule", "status", "loaded"] {
            assert_eq!(sa[k], sb[k], "{k} differs\n{}\n{}", incremental.evidence(), forced.evidence());
        }
        for table in ["asset", "trade"] {
            assert_eq!(rows_digest(&a, table), rows_digest(&b, table), "the {table} rows differ");
        }
    };
    put(&lines);
    compare();
    // The line index written as that file downloaded is the one kept: the next file (one more
    // remark changed) is compared with it, again as it downloads.
    let columns = lines[0].split(',').count();
    let remark = lines[0].split(',').position(|c| c == "order_remark").unwrap();
    let n = (40..lines.len()).find(|&i| lines[i].split(',').count() == columns).unwrap();
    let mut f: Vec<String> = lines[n].split(',').map(str::to_string).collect();
    f[remark] = "restated".into();
    lines[n] = f.join(",");
    put(&lines);
    compare();
}

/// A run looks for a reusable load at its start (and scans its S3 file against that load's line
/// index as it downloads); the check under the stage's locks decides. When another run loads the
/// stage in between (here while this run waits on the assets stage's lock), the load this run
/// found is no longer the table's: every line is checked, the scan made against it unused, and
/// the table ends as a forced load of this run's file leaves it.
#[test]
fn a_load_committed_by_another_run_while_this_one_waits_has_every_line_checked() {
    let data = generate(200, 5_000, 0.0, 65);
    let text = std::fs::read_to_string(data.path().join("trades.csv")).unwrap();
    // A trades file with line `n`'s remark changed.
    let remark = text.lines().next().unwrap().split(',').position(|c| c == "order_remark").unwrap();
    let edited = |n: usize| -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut f: Vec<String> = lines[n].split(',').map(str::to_string).collect();
        f[remark] = format!("edited {n}");
        lines[n] = f.join(",");
        lines.join("\n") + "\n"
    };
    let files = ["account_assets.csv", "trades.csv"];
    let ours = crate::run::TestBucket::with_files("waitours", data.path(), &files);
    let db = TestDb::new("waitcompared");
    let first = db.run_s3(&ours, &[]);
    assert!(matches!(first.code, 0 | 4), "{}", first.evidence());
    // This run's file: line 30 changed. The other run's: line 40 changed.
    let put = |bucket: &crate::run::TestBucket, body: String| {
        let s3 = crate::run::s3_client_keyed(&bucket.endpoint, &bucket.access_key, &bucket.secret_key);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(s3.put_object().bucket(&bucket.name).key("trades.csv").body(body.into_bytes().into()).send()).unwrap();
    };
    put(&ours, edited(30));
    let theirs = crate::run::TestBucket::with_files("waittheirs", data.path(), &files);
    put(&theirs, edited(40));
    // This test's session holds the assets stage's lock: the run finds trades' last load, starts
    // its download and scan, and waits.
    let key = format!("etl:\"{}\".\"asset\"", db.schema).replace('\'', "''");
    db.exec(&format!("SELECT pg_advisory_lock(hashtextextended('{key}', 0))"));
    let args: Vec<String> = ["run", "specs/small_etl.yaml", "-v", "--set"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("connections.db={{type: postgres, url: '{}', schema: {}}}", db.url, db.schema)])
        .collect();
    let env = ours.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut waiting = crate::faults::Running::start(&args, &env, "trades: source");
    let waits = format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1
           AND ((classid::bigint << 32) | objid::bigint) = hashtextextended('{key}', 0)"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while db.count(&waits) == 0 {
        assert!(std::time::Instant::now() < deadline, "the run never waited on the assets stage's lock\n{}", waiting.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Its trades file has downloaded by now (a few hundred kB on loopback).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let other = db.run_s3(&theirs, &["--stage", "trades", "-v"]);
    assert_eq!(other.code, first.code, "the other run\n{}", other.evidence());
    assert!(carried_over(&other, "trades") > 4_000, "the other run\n{}", other.evidence());
    db.exec(&format!("SELECT pg_advisory_unlock(hashtextextended('{key}', 0))"));
    assert_eq!(waiting.wait(), Some(first.code), "{}", waiting.log());
    // Its check under the locks finds the table as the other run's load left it, not as the load
    // it found at its start did: it checks every line (exact; comparing with the other run's
    // file instead would only be faster).
    let log = waiting.log();
    // "small_etl run N for DATE: ..."
    let first_run = first.stdout.split_whitespace().nth(2).unwrap_or_default();
    assert!(log.contains(&format!("trades: every line is checked: the table is not as run {first_run}'s load left it")), "{log}\n{}", first.evidence());
    assert!(!log.contains("trades: compared with the file of run"), "the load compared lines with a load that is not the table's last\n{log}");
    let after = rows_digest(&db, "trade");
    let forced = db.run_s3(&ours, &["--force"]);
    assert_eq!(forced.code, first.code, "{}", forced.evidence());
    assert_eq!(rows_digest(&db, "trade"), after, "the load differs from a forced load of its file\n{log}\n{}", other.evidence());
}

/// An `append` stage adds its file's rows on every run: the same file loaded again is never
/// taken for an unchanged load (there is nothing to compare an appended table with).
#[test]
fn an_append_stage_loads_its_file_again_on_every_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("events.csv"), "id,amount\n1,1.50\n2,2.50\n").unwrap();
    let spec = dir.path().join("append.yaml");
    let head = crate::util::spec_head("append_again", dir.path().display());
    std::fs::write(
        &spec,
        format!(
            "{head}stages:\n  events:\n    source: {{ connection: files, key: events.csv }}\n    target: {{ connection: db, table: event, mode: append }}\n    columns:\n      id: {{ type: int64 }}\n      amount: {{ type: \"decimal(10,2)\" }}\n"
        ),
    )
    .unwrap();
    let db = TestDb::new("append_again");
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    for n in 1..=2 {
        let out = crate::util::etl(&["run", spec.to_str().unwrap(), "-v"], &[("ETL_TEST_DATABASE_URL", &url), ("SCHEMA", &db.schema)]);
        assert_eq!(out.code, 0, "run {n}\n{}", out.evidence());
        assert!(!out.stderr.contains("unchanged since run"), "run {n}: an append taken for unchanged\n{}", out.evidence());
        let rows = db.texts(&format!("SELECT count(*)::text || ' ' || sum(amount)::text FROM {}.event", db.schema));
        assert_eq!(rows, [format!("{} {}.00", 2 * n, 4 * n)], "run {n}: the table holds each run's rows\n{}", out.evidence());
    }
}

/// A forced load into a table whose current rows are more than an eighth of DuckDB's memory
/// limit leaves them to the merge to compare, and ends as one that compared them in DuckDB: the
/// same rows (surrogate ids included) and counts. Compared in DuckDB whatever their size, they
/// failed such a load out of memory (DuckDB holds a join's hash table in memory whenever it fits
/// what is free, and the CSV reader then found no room for its buffers): 300 000 trades forced
/// into as many at the default 128MB, 100 000 here under 40MB.
#[test]
fn a_forced_load_into_a_table_past_duckdbs_memory_share_is_compared_in_the_merge() {
    let data = generate(1_000, 100_000, 0.0, 17);
    let (merged, compared) = (TestDb::new("current_merged"), TestDb::new("current_compared"));
    let run = |db: &TestDb, memory: &str, extra: &[&str]| {
        let mut args: Vec<String> = vec!["run".into(), "specs/small_etl.yaml".into(), "--output".into(), "json".into(), "-v".into()];
        args.extend(db.sets(data.path()));
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::util::etl(&refs, &[("ETL_DUCKDB_MEMORY", memory)])
    };
    run(&merged, "40MB", &[]).expect_code(0);
    run(&compared, "512MB", &[]).expect_code(0);
    // A remark changed on every hundredth trade.
    edit(data.path(), "trades.csv", |lines| {
        for n in (100..lines.len()).step_by(100) {
            set(lines, n, 10, "remark changed by the test");
        }
    });
    let a = run(&merged, "40MB", &["--force"]);
    a.expect_code(0);
    let b = run(&compared, "512MB", &["--force"]);
    b.expect_code(0);
    let larger = "trades: lookups loaded; the table's rows are larger than an eighth of DuckDB's memory limit (ETL_DUCKDB_MEMORY): the merge compares them";
    assert!(a.stderr.contains(larger), "under 40MB the 100 000 trades' rows are compared in the merge\n{}", a.evidence());
    assert!(!b.stderr.contains(larger) && b.stderr.contains("trades: lookups loaded"), "under 512MB they are compared in DuckDB\n{}", b.evidence());
    let counts = |out: &Output| {
        report(out)["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("{}: {} inserted, {} updated, {} unchanged", s["stage"], s["loaded"]["inserted"], s["loaded"]["updated"], s["loaded"]["unchanged"]))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&a), counts(&b), "{}\n{}", a.evidence(), b.evidence());
    assert_eq!(counts(&a)[1], "\"trades\": 0 inserted, 1000 updated, 99000 unchanged", "{}", a.evidence());
    for table in ["asset", "trade"] {
        assert_eq!(rows_digest(&merged, table), rows_digest(&compared, table), "the {table} rows differ\n{}\n{}", a.evidence(), b.evidence());
    }
}

/// A spec upserting `dir`'s t.csv on `id` (an int64) and `columns` into table t of a schema of
/// its own: the database, and a `-v` JSON run with extra arguments under DuckDB's `memory` limit.
fn upsert_of_t<'a>(dir: &'a Path, name: &str, columns: &str, memory: &'a str) -> (TestDb, impl Fn(&[&str]) -> Output + 'a) {
    let spec = dir.join("spec.yaml");
    let stage = format!("stages:\n  t:\n    source: {{ connection: files, key: t.csv }}\n    target: {{ connection: db, table: t, key: [id], mode: upsert }}\n    columns:\n      id: {{ type: int64 }}\n{columns}");
    std::fs::write(&spec, format!("{}{stage}", crate::util::spec_head(name, dir.display()))).unwrap();
    let db = TestDb::new(name);
    let (url, schema) = (db.url.clone(), db.schema.clone());
    let run = move |extra: &[&str]| {
        let mut args = vec!["run", spec.to_str().unwrap(), "--output", "json", "-v"];
        args.extend_from_slice(extra);
        crate::util::etl(&args, &[("ETL_TEST_DATABASE_URL", &url), ("SCHEMA", &schema), ("ETL_DUCKDB_MEMORY", memory)])
    };
    (db, run)
}

/// A table whose size on disk is small but whose export is not (long texts PostgreSQL
/// compresses) is exported, found past the share, and left to the merge all the same: the
/// export's own bytes decide last.
#[test]
fn a_table_small_on_disk_but_large_exported_is_compared_in_the_merge() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,note\n");
    for i in 0..400 {
        csv.push_str(&format!("{i},{}{i}\n", "x".repeat(50_000)));
    }
    std::fs::write(dir.path().join("t.csv"), csv).unwrap();
    let (db, run) = upsert_of_t(dir.path(), "compressed", "      note: { type: string }\n", "64MB");
    run(&[]).expect_code(0);
    let on_disk = db.count(&format!("SELECT pg_table_size('{}.t')", db.schema));
    assert!(on_disk < 64_000_000 / 8, "the table takes {on_disk} bytes on disk: not less than the share, so never exported");
    let out = run(&["--force"]);
    out.expect_code(0);
    assert!(out.stderr.contains("t: lookups loaded; the table's rows are larger than an eighth"), "20 MB exported, past 8 MB\n{}", out.evidence());
    let loaded = &report(&out)["stages"][0]["loaded"];
    assert_eq!((loaded["inserted"].as_i64(), loaded["updated"].as_i64(), loaded["unchanged"].as_i64()), (Some(0), Some(0), Some(400)), "{}", out.evidence());
}

/// A load into a table whose `unique` column's values (exported with their keys, for the
/// extract to find a row taking another row's value) are more than an eighth of DuckDB's memory
/// limit loads, forced and with a row changed: the extract's joins are then held to a quarter
/// of the limit, so that a hash table spills rather than take the memory the CSV reader needs
/// (1M such values failed every load into their table at the default 128MB).
#[test]
fn a_table_whose_unique_values_pass_duckdbs_memory_share_loads() {
    let dir = tempfile::tempdir().unwrap();
    let write = |changed: usize| {
        let mut csv = String::from("id,code,note\n");
        for i in 0..250_000usize {
            let note = if i == changed { "changed".to_string() } else { format!("note {i} xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx") };
            csv.push_str(&format!("{i},C{:012}-{i},{note}\n", i * 7919 % 1_000_000_000_000));
        }
        std::fs::write(dir.path().join("t.csv"), csv).unwrap();
    };
    write(usize::MAX);
    let (db, upsert) = upsert_of_t(dir.path(), "held", "      code: { type: string, unique: true }\n      note: { type: string }\n", "40MB");
    let run = |extra: &[&str]| {
        let out = upsert(extra);
        out.expect_code(0);
        let loaded = &report(&out)["stages"][0]["loaded"];
        let counts = format!("{} inserted, {} updated, {} unchanged", loaded["inserted"], loaded["updated"], loaded["unchanged"]);
        (out, counts)
    };
    let (out, counts) = run(&[]);
    assert_eq!(counts, "250000 inserted, 0 updated, 0 unchanged", "{}", out.evidence());
    let (out, counts) = run(&["--force"]);
    assert_eq!(counts, "0 inserted, 0 updated, 250000 unchanged", "{}", out.evidence());
    write(7);
    let (out, counts) = run(&["--force"]);
    assert_eq!(counts, "0 inserted, 1 updated, 249999 unchanged", "{}", out.evidence());
    assert_eq!(db.texts(&format!("SELECT note FROM {}.t WHERE id = 7", db.schema)), ["changed"], "{}", out.evidence());
}
