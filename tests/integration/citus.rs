//! Tables spread over a Citus cluster (a coordinator and two workers on loopback, started by
//! `scripts/services.sh` where `scripts/citus.sh` could build Citus): small_etl with `asset` a
//! reference table and `trade` distributed by `traded_id` loads as it does into plain
//! PostgreSQL, skips an unchanged re-run, merges an upsert, and its shards hold rows on both
//! workers. Without the cluster (`ETL_TEST_CITUS_URL` unset: no Citus source on this machine) each
//! test says so and passes.

use std::path::Path;

use crate::extract::generate;
use crate::run::TestDb;
use crate::util::Output;

/// The coordinator's URL, or None (with the reason printed) when no cluster runs.
fn cluster() -> Option<String> {
    let url = std::env::var("ETL_TEST_CITUS_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("skipped: no Citus cluster (ETL_TEST_CITUS_URL is unset: scripts/citus.sh found no Citus source, ../shared/vendor or ETL_CITUS_VENDOR)");
    }
    url
}

/// The shipped overlay (configs/citus.yaml) making small_etl's `asset` a reference table and
/// `trade` distributed by its key.
const DISTRIBUTED: [&str; 2] = ["--env", "citus"];

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()))
}

/// Each table's rows (every column, the generated `id` too) as one digest, and the sum of its
/// money columns as PostgreSQL's exact numeric text.
fn contents(db: &TestDb) -> Vec<String> {
    let mut out = Vec::new();
    for (table, money) in [("asset", "sum(cash) || '/' || sum(total_asset)"), ("trade", "sum(traded_amount) || '/' || sum(traded_price)")] {
        out.extend(db.texts(&format!(
            "SELECT '{table}: ' || count(*) || ' rows, ' || {money} || ', ' || md5(string_agg(to_jsonb(t)::text, '|' ORDER BY to_jsonb(t)::text)) FROM {}.{table} AS t",
            db.schema
        )));
    }
    out
}

/// One run on the cluster and the same on plain PostgreSQL: the same exit code, counts, rejects
/// and rows.
fn alike(citus: &TestDb, plain: &TestDb, dir: &Path, step: &str) -> (Output, Output) {
    let (ra, rb) = (dir.join("citus-rejects.csv"), dir.join("plain-rejects.csv"));
    let mut args: Vec<&str> = vec!["--output", "json", "-v"];
    args.extend(DISTRIBUTED);
    let (sa, sb) = (ra.display().to_string(), rb.display().to_string());
    let a = citus.run(dir, &[&args[..], &["--rejects-out", &sa]].concat());
    let b = plain.run(dir, &["--output", "json", "-v", "--rejects-out", &sb]);
    assert_eq!(a.code, b.code, "{step}: exit codes differ\n{}\n{}", a.evidence(), b.evidence());
    let (ja, jb) = (report(&a), report(&b));
    for (x, y) in ja["stages"].as_array().unwrap().iter().zip(jb["stages"].as_array().unwrap()) {
        for k in ["stage", "rows_read", "rows_valid", "rows_rejected", "rejects_by_rule", "status", "loaded"] {
            assert_eq!(x[k], y[k], "{step}: {k} of {} differs\n{}\n{}", x["stage"], a.evidence(), b.evidence());
        }
    }
    assert_eq!(std::fs::read_to_string(&ra).unwrap(), std::fs::read_to_string(&rb).unwrap(), "{step}: the rejects differ");
    assert_eq!(contents(citus), contents(plain), "{step}: the rows differ\n{}", a.evidence());
    (a, b)
}

#[test]
fn small_etl_spread_over_citus_loads_as_plain_postgresql_does() {
    let Some(url) = cluster() else { return };
    let data = generate(300, 4_000, 0.03, 17);
    let dir = data.path();
    let (citus, plain) = (TestDb::at(&url, "citus"), TestDb::new("citus_plain"));

    let (first, _) = alike(&citus, &plain, dir, "first load");
    assert_eq!(report(&first)["status"], "rejected", "the planted invalid rows are rejected\n{}", first.evidence());
    // The tables are what the spec says: `asset` a reference table, `trade` hash-distributed by
    // traded_id, its rows on both workers.
    let kind = |table: &str| {
        citus.texts(&format!(
            "SELECT partmethod::text || ':' || coalesce(column_to_column_name(logicalrelid, partkey), '') FROM pg_dist_partition WHERE logicalrelid = '{}.{table}'::regclass",
            citus.schema
        ))
    };
    assert_eq!(kind("asset"), ["n:"], "asset is not a reference table");
    assert_eq!(kind("trade"), ["h:traded_id"], "trade is not distributed by traded_id");
    let per_worker = citus.texts(&format!(
        "SELECT p.nodeport || '=' || sum(r.result::bigint) FROM run_command_on_shards('{}.trade', 'SELECT count(*) FROM %s') AS r \
         JOIN pg_dist_shard_placement AS p USING (shardid) GROUP BY p.nodeport ORDER BY p.nodeport",
        citus.schema
    ));
    assert_eq!(per_worker.len(), 2, "trade's shards are not on two workers: {per_worker:?}");
    assert!(per_worker.iter().all(|w| !w.ends_with("=0")), "a worker holds no trade: {per_worker:?}");

    // Unchanged: both stages skipped.
    let (again, _) = alike(&citus, &plain, dir, "nothing changed");
    for s in report(&again)["stages"].as_array().unwrap() {
        assert!(s["unchanged_since_run"].is_i64(), "stage {} was loaded again\n{}", s["stage"], again.evidence());
    }

    // An upsert: three remarks changed and a trade added; only those lines are read.
    let path = dir.join("trades.csv");
    let mut lines: Vec<String> = std::fs::read_to_string(&path).unwrap().lines().map(str::to_string).collect();
    let good: Vec<usize> = (1..lines.len()).filter(|&i| lines[i].split(',').count() == 15 && lines[i].split(',').nth(3).is_some_and(|t| t.starts_with('T'))).collect();
    for &i in &good[..3] {
        let mut f: Vec<String> = lines[i].split(',').map(str::to_string).collect();
        f[10] = "changed on citus".into();
        lines[i] = f.join(",");
    }
    let mut added: Vec<String> = lines[good[3]].split(',').map(str::to_string).collect();
    added[3] = "TCITUS0001".into();
    lines.push(added.join(","));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (merged, _) = alike(&citus, &plain, dir, "three trades changed, one added");
    let trades = &report(&merged)["stages"][1];
    assert_eq!((trades["loaded"]["updated"].as_i64(), trades["loaded"]["inserted"].as_i64()), (Some(3), Some(1)), "{}", merged.evidence());
    assert!(merged.stderr.contains("trades: compared with the file of run"), "the unchanged lines were not carried over\n{}", merged.evidence());

    // Contracts run on the Citus table inside the stage's transaction: one that finds the
    // changed trades fails the stage, which rolls back there as on plain PostgreSQL.
    let contract = |db: &TestDb| {
        format!(
            "stages.trades.checks=[{{name: rows_read, row_count: {{min: 1}}}}, {{name: no_changed_remark, sql: \"SELECT traded_id FROM {}.trade WHERE order_remark = 'changed on citus' ORDER BY traded_id\"}}]",
            db.schema
        )
    };
    let before = contents(&citus);
    let mut args: Vec<String> = ["--output", "json"].map(String::from).to_vec();
    args.extend(DISTRIBUTED.map(String::from));
    args.extend(["--set".to_string(), contract(&citus)]);
    let a = citus.run(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let b = plain.run(dir, &["--output", "json", "--set", &contract(&plain)]);
    assert_eq!((a.code, b.code), (5, 5), "the failed contract fails the run\n{}\n{}", a.evidence(), b.evidence());
    let failed = |o: &Output| -> Vec<String> {
        let checks = report(o)["stages"][1]["checks"].as_array().cloned().unwrap_or_default();
        assert_eq!(checks.len(), 2, "both contracts ran\n{}", o.evidence());
        checks.iter().filter(|x| x["passed"] == false).map(|x| x["check"].as_str().unwrap_or_default().to_string()).collect()
    };
    assert_eq!(failed(&a), ["no_changed_remark"], "{}", a.evidence());
    assert_eq!(failed(&b), ["no_changed_remark"], "{}", b.evidence());
    assert_eq!(contents(&citus), before, "the failed stage changed the Citus table");
    assert_eq!(contents(&citus), contents(&plain));

    // The plan shows the Citus statements.
    let mut args = vec!["plan", "specs/small_etl.yaml"];
    args.extend(DISTRIBUTED);
    let plan = crate::util::etl(&args, &[]);
    plan.expect_code(0);
    for s in [
        "SELECT create_reference_table('\"public\".\"asset\"')",
        "SELECT create_distributed_table('\"public\".\"trade\"', 'traded_id')",
        "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'",
    ] {
        assert!(plan.stdout.contains(s), "the plan lacks {s}\n{}", plan.evidence());
    }
}

/// A replace that empties its table, a snapshot (each business date's rows replaced) and an
/// append (placed with the snapshot's shards), each spread over the cluster, end every step as
/// the same stages on plain PostgreSQL.
#[test]
fn replace_snapshot_and_append_stages_on_citus_end_as_on_postgresql() {
    let Some(url) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let stages = "stages:
  replaced:
    source: { connection: files, key: r.csv }
    target: { connection: db, table: replaced, mode: replace, allow_empty: true DIST }
    columns: { id: { type: string }, v: { type: int32 } }
  snap:
    source: { connection: files, key: r.csv }
    target: { connection: db, table: snap, key: [id], mode: snapshot, as_of: day DIST }
    columns: { id: { type: string }, v: { type: int32 }, day: { type: date, value: \"{{ run.date }}\" } }
  appended:
    needs: [snap]
    source: { connection: files, key: r.csv }
    target: { connection: db, table: appended, mode: append DIST_WITH_SNAP }
    columns: { id: { type: string }, v: { type: int32 } }
";
    let head = crate::util::spec_head("modes", dir.path().display());
    let spread = dir.path().join("citus.yaml");
    std::fs::write(
        &spread,
        format!("{head}{}", stages.replace(" DIST_WITH_SNAP", ", distribution: { column: id, colocate_with: snap }").replace(" DIST", ", distribution: { column: id }")),
    )
    .unwrap();
    let plain_spec = dir.path().join("plain.yaml");
    std::fs::write(&plain_spec, format!("{head}{}", stages.replace(" DIST_WITH_SNAP", "").replace(" DIST", ""))).unwrap();
    let (citus, plain) = (TestDb::at(&url, "citus_modes"), TestDb::new("citus_modes_plain"));
    let rows = |db: &TestDb| -> Vec<String> {
        ["replaced", "snap", "appended"]
            .iter()
            .flat_map(|t| db.texts(&format!("SELECT '{t}: ' || coalesce(string_agg(to_jsonb(x)::text, ' ' ORDER BY to_jsonb(x)::text), '') FROM {}.{t} AS x", db.schema)))
            .collect()
    };
    for (step, (date, csv)) in [("2025-12-01", "id,v\na,1\nb,2\nc,3\n"), ("2025-12-02", "id,v\na,1\nb,20\nd,4\n"), ("2025-12-02", "id,v\na,5\n"), ("2025-12-02", "id,v\na,5\n")]
        .into_iter()
        .enumerate()
    {
        std::fs::write(dir.path().join("r.csv"), csv).unwrap();
        let a = crate::util::etl(
            &["run", spread.to_str().unwrap(), "--date", date],
            &[("ETL_TEST_DATABASE_URL", url.as_str()), ("SCHEMA", citus.schema.as_str())],
        );
        let b = crate::util::etl(&["run", plain_spec.to_str().unwrap(), "--date", date], &[("ETL_TEST_DATABASE_URL", plain.url.as_str()), ("SCHEMA", plain.schema.as_str())]);
        assert_eq!((a.code, b.code), (0, 0), "step {step}\n{}\n{}", a.evidence(), b.evidence());
        assert_eq!(rows(&citus), rows(&plain), "step {step}: the tables differ\n{}", a.evidence());
    }
    let spread_tables = citus.texts(&format!("SELECT count(*)::text FROM pg_dist_partition WHERE logicalrelid::text LIKE '{}.%' AND partmethod = 'h'", citus.schema));
    assert_eq!(spread_tables, ["3"], "the three tables are not distributed");
    let groups = citus.texts(&format!(
        "SELECT string_agg(logicalrelid::text || '=' || colocationid, ' ' ORDER BY logicalrelid::text) FROM pg_dist_partition WHERE logicalrelid::text IN ('{0}.snap', '{0}.appended')",
        citus.schema
    ));
    let ids: Vec<&str> = groups[0].split(' ').map(|g| g.rsplit('=').next().unwrap()).collect();
    assert!(ids.len() == 2 && ids[0] == ids[1], "appended is not colocated with snap: {groups:?}");
    assert_eq!(rows(&citus)[1], "snap: {\"v\": 1, \"id\": \"a\", \"day\": \"2025-12-01\"} {\"v\": 2, \"id\": \"b\", \"day\": \"2025-12-01\"} {\"v\": 3, \"id\": \"c\", \"day\": \"2025-12-01\"} {\"v\": 5, \"id\": \"a\", \"day\": \"2025-12-02\"}");
}

/// `etl plan` shows every statement a run on the cluster sends (the coordinator logs each of
/// the role `etl_traced`'s): a first load that creates and spreads the tables, a re-run that
/// reuses both stages, a changed file read line by line and merged the Citus way, and a forced
/// load.
#[test]
fn every_statement_a_citus_run_sends_is_in_its_plan() {
    use crate::statements::{TRACED, assert_planned_but, migrations, squash};
    let Some(url) = cluster() else { return };
    let log = std::path::PathBuf::from(std::env::var("ETL_TEST_CITUS_LOG").expect("ETL_TEST_CITUS_LOG is set with ETL_TEST_CITUS_URL"));
    let _one_at_a_time = TRACED.lock().unwrap_or_else(|e| e.into_inner());
    let data = generate(200, 1_500, 0.02, 73);
    let db = TestDb::at(&url, "citus_traced");
    db.exec(&format!("GRANT ALL ON SCHEMA {} TO etl_traced", db.schema));
    let port = url.rsplit_once(':').and_then(|(_, rest)| rest.split('/').next()).unwrap_or("15440").to_string();
    let traced = format!("postgres://etl_traced:etltraced@127.0.0.1:{port}/etl_test?options=-c%20search_path%3D{}", db.schema);
    let mut sets: Vec<String> = vec![
        "--set".into(),
        format!("connections.db={{type: postgres, url: '{traced}', schema: {}}}", db.schema),
        "--set".into(),
        format!("connections.lake={{type: local, path: '{}'}}", data.path().display()),
    ];
    sets.extend(DISTRIBUTED.map(String::from));
    let command = |verb: &str, extra: &[&str]| -> Output {
        let mut args = vec![verb, "specs/small_etl.yaml"];
        args.extend(sets.iter().map(String::as_str));
        args.extend(extra);
        crate::util::etl(&args, &[])
    };
    let plan = command("plan", &[]);
    plan.expect_code(0);
    let planned = squash(&plan.stdout);
    let migrations = migrations();
    let mut seen = 0;
    for (what, extra, path) in [
        ("the first load", vec!["-v"], "keys, indexes and foreign keys built"),
        ("a re-run that reuses both stages", vec!["-v"], "unchanged since run"),
        ("a changed file, read line by line", vec!["-v"], "only the changed lines are read"),
        ("a forced load into tables with rows", vec!["--force", "-v"], "merged into the table"),
    ] {
        if what.starts_with("a changed file") {
            crate::unchanged::change_one_trade(data.path());
        }
        let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let out = command("run", &extra);
        out.expect_code(4);
        assert!(out.stderr.contains(path), "{what}: the run did not take its path (`{path}`)\n{}", out.evidence());
        let statements = assert_planned_but(&log, from, &planned, &migrations, what, &plan.stdout, &out, citus_own);
        seen += statements.len();
        if what == "the first load" {
            for needle in ["SELECT create_distributed_table(", "SELECT create_reference_table(", "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"] {
                assert!(statements.iter().any(|s| s.contains(needle)), "{what}: etl's session did not send `{needle}` (or the log lost it)\n{}", out.evidence());
            }
        }
        if what.starts_with("a changed file") {
            assert!(statements.iter().any(|s| s.starts_with("WITH s AS MATERIALIZED (")), "{what}: no Citus upsert sent\n{}", out.evidence());
        }
    }
    assert!(seen > 80, "too few statements logged ({seen}) for four runs");
}

/// A statement Citus itself runs in etl's session on the coordinator's own placements (the
/// reference table's copy there): on a shard (`asset_103532`), deparsed by Citus
/// (`OPERATOR(pg_catalog.||)`), over the results of a subplan (`read_intermediate_result`), or
/// the shard's DDL. etl sent the statement these serve, which the plan shows.
fn citus_own(sql: &str) -> bool {
    let shard = regex::Regex::new(r"\.\w+_\d{6,}\b").unwrap();
    shard.is_match(sql)
        || sql.contains("OPERATOR(pg_catalog.")
        || sql.contains("read_intermediate_result(")
        || (sql.starts_with("ALTER TABLE ") && sql.contains(" OWNER TO "))
        || (sql.starts_with("CREATE TABLE ") && sql.ends_with(" USING heap"))
}

/// The keys a file lacks deleted on a Citus table as on plain PostgreSQL, with each `on_delete`
/// for the rows of a colocated table that reference them (`restrict` refuses the load, `cascade`
/// deletes them too, `soft` flags the referenced row), a soft delete and a keyed replace.
#[test]
fn deletes_of_the_keys_a_file_lacks_on_citus_end_as_on_postgresql() {
    let Some(url) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let head = crate::util::spec_head("deletes", dir.path().display());
    let spec = |on_delete: &str, spread: bool| {
        let dist = |d: &str| if spread { format!(", distribution: {{ {d} }}") } else { String::new() };
        format!(
            "{head}stages:
  accounts:
    source: {{ connection: files, key: acc.csv }}
    target: {{ connection: db, table: account, key: [account_no], delete_missing: hard, max_delete_ratio: 1, on_delete: {on_delete}{} }}
    columns: {{ account_no: {{ type: int64 }}, name: {{ type: string }} }}
  positions:
    needs: [accounts]
    source: {{ connection: files, key: pos.csv }}
    target: {{ connection: db, table: position, key: [account_no, stock]{} }}
    columns: {{ account_no: {{ type: int64, references: accounts.account_no }}, stock: {{ type: string }} }}
  flagged:
    source: {{ connection: files, key: acc.csv }}
    target: {{ connection: db, table: flagged, key: [account_no], delete_missing: soft, max_delete_ratio: 1{} }}
    columns: {{ account_no: {{ type: int64 }}, name: {{ type: string }} }}
  replaced:
    source: {{ connection: files, key: acc.csv }}
    target: {{ connection: db, table: replaced, key: [account_no], mode: replace{} }}
    columns: {{ account_no: {{ type: int64 }}, name: {{ type: string }} }}
",
            dist("column: account_no"),
            dist("column: account_no, colocate_with: accounts"),
            dist("column: account_no"),
            dist("column: account_no"),
        )
    };
    for on_delete in ["restrict", "cascade", "soft"] {
        let (citus, plain) = (TestDb::at(&url, &format!("citus_del_{on_delete}")), TestDb::new(&format!("citus_del_plain_{on_delete}")));
        let (a_spec, b_spec) = (dir.path().join(format!("{on_delete}-citus.yaml")), dir.path().join(format!("{on_delete}-plain.yaml")));
        std::fs::write(&a_spec, spec(on_delete, true)).unwrap();
        std::fs::write(&b_spec, spec(on_delete, false)).unwrap();
        let rows = |db: &TestDb| -> Vec<String> {
            ["account", "position", "flagged", "replaced"]
                .iter()
                .flat_map(|t| db.texts(&format!("SELECT '{t}: ' || coalesce(string_agg(to_jsonb(x)::text, ' ' ORDER BY to_jsonb(x)::text), '') FROM {}.{t} AS x", db.schema)))
                .collect()
        };
        // Accounts 2 and 3 go, then 3 comes back; 2 is held by a position.
        for (step, accounts) in ["account_no,name\n1,a\n2,b\n3,c\n", "account_no,name\n1,a\n", "account_no,name\n1,a\n3,c\n"].into_iter().enumerate() {
            std::fs::write(dir.path().join("acc.csv"), accounts).unwrap();
            std::fs::write(dir.path().join("pos.csv"), "account_no,stock\n1,X\n2,Y\n").unwrap();
            let a = crate::util::etl(&["run", a_spec.to_str().unwrap(), "--output", "json"], &[("ETL_TEST_DATABASE_URL", url.as_str()), ("SCHEMA", citus.schema.as_str())]);
            let b = crate::util::etl(&["run", b_spec.to_str().unwrap(), "--output", "json"], &[("ETL_TEST_DATABASE_URL", plain.url.as_str()), ("SCHEMA", plain.schema.as_str())]);
            assert_eq!(a.code, b.code, "{on_delete}, step {step}: exit codes differ\n{}\n{}", a.evidence(), b.evidence());
            // `restrict` refuses every load that would delete account 2, which a position holds;
            // after `cascade` deleted it, the file's position of account 2 is a reject (exit 4).
            let expected = match (on_delete, step) {
                (_, 0) | ("soft", _) => 0,
                ("restrict", _) => 5,
                _ => 4,
            };
            assert_eq!(a.code, expected, "{on_delete}, step {step}\n{}", a.evidence());
            assert_eq!(rows(&citus), rows(&plain), "{on_delete}, step {step}: the tables differ\n{}", a.evidence());
        }
    }
}

/// A history (balances by business date, keys a file lacks closed) as a distributed table and
/// as a reference table: dates loaded in order, one late, one restated, each run compared with
/// the same on plain PostgreSQL (the versions, and what each run reports). Its merge takes the
/// changed keys' versions out by key and start (a `ctid` is a place in one shard or replica).
#[test]
fn a_history_on_citus_ends_as_on_postgresql() {
    let Some(url) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let head = crate::util::spec_head("history", dir.path().display());
    let spec = |spread: bool| {
        let dist = |d: &str| if spread { format!(", distribution: {d}") } else { String::new() };
        let columns = "    columns:
      account_id: { type: string, max_length: 4 }
      cash: { type: \"decimal(20,2)\", min: 0 }
      account_type: { type: int32 }
      business_date: { type: date, value: \"{{ run.date }}\" }
";
        format!(
            "{head}stages:
  spread:
    source: {{ connection: files, key: \"assets/{{{{ run.date }}}}.csv\" }}
    target: {{ connection: db, table: spread_history, key: [account_id], mode: history, as_of: business_date, delete_missing: close, max_delete_ratio: 0.9{} }}
{columns}  copied:
    source: {{ connection: files, key: \"assets/{{{{ run.date }}}}.csv\" }}
    target: {{ connection: db, table: copied_history, key: [account_id], mode: history, as_of: business_date, delete_missing: close, max_delete_ratio: 0.9{} }}
{columns}",
            dist("{ column: account_id }"),
            dist("reference"),
        )
    };
    let (a_spec, b_spec) = (dir.path().join("citus.yaml"), dir.path().join("plain.yaml"));
    std::fs::write(&a_spec, spec(true)).unwrap();
    std::fs::write(&b_spec, spec(false)).unwrap();
    let (citus, plain) = (TestDb::at(&url, "citus_history"), TestDb::new("citus_history_plain"));
    let versions = |db: &TestDb| -> Vec<String> {
        ["spread_history", "copied_history"]
            .iter()
            .flat_map(|t| {
                db.texts(&format!(
                    "SELECT '{t}: ' || coalesce(string_agg(account_id || ' ' || cash::text || ' ' || account_type || ' ' || valid_from::text || ' ' || coalesce(valid_to::text, '-'), ', ' ORDER BY account_id, valid_from), '') FROM {}.{t}",
                    db.schema
                ))
            })
            .collect()
    };
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    // Lines the Citus runs carried over from the last file instead of reading them again.
    let mut carried = 0;
    // In order, then a late date, then a restated one; the last run repeats the restated date's
    // file (unchanged: skipped).
    for (step, (day, restated)) in [(0, false), (2, false), (3, false), (4, false), (1, false), (2, true), (2, true)].into_iter().enumerate() {
        let date = crate::history::DAYS[day];
        let body: String = crate::history::history_day(day, restated).iter().map(|(a, c, t)| format!("{a},{c},{t}\n")).collect();
        std::fs::write(dir.path().join("assets").join(format!("{date}.csv")), format!("account_id,cash,account_type\n{body}")).unwrap();
        let a = crate::util::etl(&["run", a_spec.to_str().unwrap(), "--date", date, "--output", "json", "-v"], &[("ETL_TEST_DATABASE_URL", url.as_str()), ("SCHEMA", citus.schema.as_str())]);
        carried += a.stderr.lines().filter_map(|l| l.split_once(": ").and_then(|(_, r)| r.split_once(" lines unchanged, ")).and_then(|(n, _)| n.rsplit(' ').next()?.parse::<u64>().ok())).sum::<u64>();
        let b = crate::util::etl(&["run", b_spec.to_str().unwrap(), "--date", date, "--output", "json"], &[("ETL_TEST_DATABASE_URL", plain.url.as_str()), ("SCHEMA", plain.schema.as_str())]);
        assert_eq!((a.code, b.code), (0, 0), "step {step} ({date})\n{}\n{}", a.evidence(), b.evidence());
        let (ja, jb) = (report(&a), report(&b));
        for (x, y) in ja["stages"].as_array().unwrap().iter().zip(jb["stages"].as_array().unwrap()) {
            for k in ["stage", "rows_read", "rows_valid", "rows_rejected", "status", "loaded"] {
                assert_eq!(x[k], y[k], "step {step} ({date}): {k} of {} differs\n{}\n{}", x["stage"], a.evidence(), b.evidence());
            }
        }
        assert_eq!(versions(&citus), versions(&plain), "step {step} ({date}): the versions differ\n{}", a.evidence());
    }
    assert!(carried > 0, "no Citus run read only the changed lines of its file");
    let kinds = citus.texts(&format!(
        "SELECT string_agg(logicalrelid::text || '=' || partmethod::text, ' ' ORDER BY logicalrelid::text) FROM pg_dist_partition WHERE logicalrelid::text LIKE '{}.%'",
        citus.schema
    ));
    assert_eq!(kinds, [format!("{0}.copied_history=n {0}.spread_history=h", citus.schema)], "one table distributed, one a reference table");
}
