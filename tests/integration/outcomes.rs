//! How a run ends, as a monitor and a person read it: a failing analytic after committed loads,
//! a `replace` of an empty file, an unwritable rejects file found before anything loads, exit 5
//! for refused data and 4 only for loads with rejects, `unchanged` in the JSON of a re-run, JSON
//! on errors, `-q`, and `--rejects-out -`.

use std::path::Path;

use crate::extract::generate;
use crate::run::TestDb;
use crate::util::{Output, etl};

/// Runs small_etl.yaml on `dir` into the test's schema, the engine's tables (etl_runs) there too.
fn run(db: &TestDb, dir: &Path, extra: &[&str]) -> Output {
    let url = format!("{}?options=-c%20search_path%3D{}", db.url, db.schema);
    let mut args: Vec<String> = vec![
        "run".into(),
        "specs/small_etl.yaml".into(),
        "--set".into(),
        format!("connections.db={{type: postgres, url: '{url}', schema: {}}}", db.schema),
        "--set".into(),
        format!("connections.lake={{type: local, path: '{}'}}", dir.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    etl(&refs, &[])
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", out.evidence()))
}

#[test]
fn a_failing_analytic_is_reported_after_the_loads_it_cannot_undo() {
    let data = generate(20, 40, 0.0, 31);
    let db = TestDb::new("analyticfail");
    let out = run(&db, data.path(), &["--set", "analytics.broken={sql: 'SELEC count(*) FROM asset'}"]);
    out.expect_code(1);
    assert!(out.stdout.contains("assets") && out.stdout.contains("trades"), "the stage summary prints\n{}", out.evidence());
    assert!(out.stdout.contains("broken") && out.stdout.contains("failed:"), "the analytic is reported failed\n{}", out.evidence());
    assert!(out.stdout.contains("asset_totals"), "the other analytics still print\n{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade", db.schema)), 40, "the loads stand\n{}", out.evidence());
    let recorded = db.texts(&format!("SELECT status || ' | ' || coalesce(error, '') FROM {}.etl_runs ORDER BY run_id DESC LIMIT 1", db.schema));
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].starts_with("succeeded | analytic `broken` failed"), "recorded as loaded, the analytic as failed: {recorded:?}");
    let out = run(&db, data.path(), &["--set", "analytics.broken={sql: 'SELEC 1'}", "--output", "json"]);
    out.expect_code(1);
    let report = json(&out);
    let broken = report["analytics"].as_array().unwrap().iter().find(|a| a["name"] == "broken").cloned().unwrap();
    assert!(broken["error"].as_str().is_some_and(|e| e.contains("syntax error") && !e.contains(" at line ")), "{broken}");
    // Numbers are JSON numbers, with every digit PostgreSQL printed; a description comes along.
    let totals = report["analytics"].as_array().unwrap().iter().find(|a| a["name"] == "asset_totals").cloned().unwrap();
    assert_eq!(totals["rows"][0][0], 20, "{totals}");
    assert!(totals["description"].as_str().is_some(), "{totals}");
    let raw = &out.stdout[out.stdout.find("\"asset_totals\"").unwrap()..];
    let sum = db.texts(&format!("SELECT sum(cash)::text FROM {}.asset", db.schema));
    assert!(raw.contains(&format!("{},", sum[0])), "total_cash is written as the exact number {}\n{raw}", sum[0]);
}

/// Analytics that each run longer than the pool waits for a connection (30 s) do not starve the
/// ones after them: at most as many run at once as the pool has connections. Four analytics hold
/// every connection for 31 s; the one after them must still run (on a 100M-row table the
/// analytics after the first four failed "pool timed out while waiting for an open connection").
#[test]
fn analytics_longer_than_the_pools_wait_do_not_starve_the_ones_after_them() {
    let data = generate(20, 40, 0.0, 34);
    let db = TestDb::new("analyticslong");
    let mut args: Vec<String> = Vec::new();
    for i in 1..=4 {
        args.extend(["--set".to_string(), format!("analytics.slow{i}={{sql: 'SELECT {i} AS slept FROM pg_sleep(31)'}}")]);
    }
    args.extend(["--set".to_string(), "analytics.after={sql: 'SELECT count(*) AS trades FROM trade'}".to_string(), "--output".to_string(), "json".to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&db, data.path(), &refs);
    out.expect_code(0);
    let report = json(&out);
    let after = report["analytics"].as_array().unwrap().iter().find(|a| a["name"] == "after").cloned().unwrap();
    assert_eq!(after["rows"][0][0], 40, "{after}\n{}", out.evidence());
}

#[test]
fn replace_refuses_an_empty_file_unless_allowed_and_reports_what_it_deleted() {
    let data = generate(25, 0, 0.0, 32);
    let db = TestDb::new("replace");
    let replace = ["--stage", "assets", "--set", "stages.assets.target.mode=replace"];
    run(&db, data.path(), &replace).expect_code(0);
    // The same file again: a keyed table is replaced row by row, so nothing is deleted or
    // rewritten; a file with one account fewer deletes that one row.
    let out = run(&db, data.path(), &[&replace[..], &["--force", "--output", "json"]].concat());
    out.expect_code(0);
    assert_eq!(json(&out)["stages"][0]["loaded"]["deleted"], 0, "{}", out.evidence());
    assert_eq!(json(&out)["stages"][0]["loaded"]["unchanged"], 25, "{}", out.evidence());
    let text = std::fs::read_to_string(data.path().join("account_assets.csv")).unwrap();
    let fewer: Vec<&str> = text.lines().take(25).collect();
    std::fs::write(data.path().join("account_assets.csv"), fewer.join("\n") + "\n").unwrap();
    let out = run(&db, data.path(), &[&replace[..], &["--output", "json"]].concat());
    out.expect_code(0);
    assert_eq!(json(&out)["stages"][0]["loaded"]["deleted"], 1, "{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 24);
    // A header-only file: refused, exit 5, the table keeps its rows.
    let header = std::fs::read_to_string(data.path().join("account_assets.csv")).unwrap().lines().next().unwrap().to_string();
    std::fs::write(data.path().join("account_assets.csv"), format!("{header}\n")).unwrap();
    let out = run(&db, data.path(), &replace);
    out.expect_code(5);
    assert!(out.stdout.contains("the file has no rows") && out.stdout.contains("allow_empty: true"), "{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 24, "the table keeps its rows\n{}", out.evidence());
    let status = db.texts(&format!("SELECT status FROM {}.etl_runs ORDER BY run_id DESC LIMIT 1", db.schema));
    assert_eq!(status, ["refused"]);
    // Allowed: the table is emptied, and says how many rows went.
    let out = run(&db, data.path(), &[&replace[..], &["--set", "stages.assets.target.allow_empty=true", "--output", "json"]].concat());
    out.expect_code(0);
    assert_eq!(json(&out)["stages"][0]["loaded"]["deleted"], 24, "{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 0);
}

#[test]
fn an_unwritable_rejects_file_is_found_before_anything_loads() {
    let data = generate(10, 10, 0.1, 33);
    let db = TestDb::new("rejectsout");
    let out = run(&db, data.path(), &["--rejects-out", "/nonexistent-dir/rejects.csv"]);
    out.expect_code(1);
    assert!(out.stderr.contains("/nonexistent-dir/rejects.csv"), "{}", out.evidence());
    let tables = db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename IN ('asset', 'trade')", db.schema));
    assert_eq!(tables, 0, "nothing was loaded\n{}", out.evidence());
    // `-` is standard output: the rejects CSV there, the report on stderr.
    let out = run(&db, data.path(), &["--rejects-out", "-"]);
    out.expect_code(4);
    assert!(out.stdout.starts_with("stage,source,line,column,rule,value,message,severity\n"), "{}", out.evidence());
    assert!(out.stderr.contains("rejects by rule"), "the report went to stderr\n{}", out.evidence());
    assert!(!Path::new(&crate::util::root().join("-")).exists(), "no file named `-`");
}

#[test]
fn exit_4_means_loaded_with_rejects_5_refused_and_an_unchanged_rerun_says_so() {
    let data = generate(40, 0, 0.1, 34);
    let db = TestDb::new("exit45");
    let assets = ["--stage", "assets"];
    // Over the budget: nothing loaded, exit 5.
    let out = run(&db, data.path(), &[&assets[..], &["--set", "stages.assets.max_rejects=0"]].concat());
    out.expect_code(5);
    assert_eq!(db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'asset'", db.schema)), 0);
    // Within it: loaded with rejects, exit 4, and the JSON says it was loaded.
    let out = run(&db, data.path(), &[&assets[..], &["--output", "json"]].concat());
    out.expect_code(4);
    assert_eq!(json(&out)["unchanged"], false, "{}", out.evidence());
    // Unchanged: exits as that load did, and says it was not loaded again.
    let out = run(&db, data.path(), &[&assets[..], &["--output", "json"]].concat());
    out.expect_code(4);
    let r = json(&out);
    assert_eq!(r["unchanged"], true, "{}", out.evidence());
    assert!(r["stages"][0]["unchanged_since_run"].as_i64().is_some(), "{}", out.evidence());
}

#[test]
fn quiet_prints_nothing_and_json_output_reports_errors_as_json() {
    let data = generate(10, 10, 0.0, 35);
    let db = TestDb::new("quiet");
    let out = run(&db, data.path(), &["-q"]);
    out.expect_code(0);
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "-q prints nothing\n{}", out.evidence());
    // Without -v and without a terminal, no progress lines.
    let out = run(&db, data.path(), &["--force"]);
    out.expect_code(0);
    assert!(!out.stderr.contains("rows read"), "progress without -v\n{}", out.evidence());
    let out = run(&db, data.path(), &["--force", "-v"]);
    assert!(out.stderr.contains("rows read"), "-v shows progress\n{}", out.evidence());
    // An error under --output json: one JSON document on stdout, the message on stderr.
    let out = run(&db, data.path(), &["--output", "json", "--assets-file", "missing.csv"]);
    out.expect_code(3);
    let doc = json(&out);
    assert_eq!(doc["status"], "error");
    assert_eq!(doc["exit_code"], 3);
    assert!(doc["error"].as_str().is_some_and(|e| e.contains("missing.csv")), "{doc}");
}

/// A connection that fails says why, with the help for that cause: no such database is not a
/// wrong password.
#[test]
fn connection_errors_say_their_cause() {
    let data = generate(5, 0, 0.0, 36);
    let db = TestDb::new("conncause");
    let out = db.run(data.path(), &["--stage", "assets", "--db-name", "no_such_database_etl"]);
    out.expect_code(3);
    assert!(out.stderr.contains("createdb"), "{}", out.evidence());
    let out = db.run(data.path(), &["--stage", "assets", "--db-password", "not-the-password"]);
    out.expect_code(3);
    assert!(out.stderr.contains("refused the password") && !out.stderr.contains("createdb"), "{}", out.evidence());
    assert!(!out.stderr.contains("not-the-password"), "{}", out.evidence());
    // The server's own words are kept (the password scrubbed out of them, were it there).
    assert!(out.stderr.contains("password authentication failed for user"), "{}", out.evidence());
    // A role that may not log in, and one with no connection slot left.
    let out = db.run(data.path(), &["--stage", "assets", "--db-user", "etl_nologin", "--db-password", "etlnologin"]);
    out.expect_code(3);
    assert!(out.stderr.contains("does not let this user in") && out.stderr.contains("not permitted to log in"), "{}", out.evidence());
    let out = db.run(data.path(), &["--stage", "assets", "--db-user", "etl_noslot", "--db-password", "etlnoslot"]);
    out.expect_code(3);
    assert!(out.stderr.contains("no free connection slot"), "{}", out.evidence());
    // TLS asked of a build that has none for PostgreSQL: said plainly.
    let url = format!("connections.db={{type: postgres, url: '{}', schema: {}, sslmode: require}}", db.url, db.schema);
    let out = db.run(data.path(), &["--stage", "assets", "--set", &url]);
    out.expect_code(3);
    assert!(out.stderr.contains("built without TLS for PostgreSQL"), "{}", out.evidence());
    // Nothing listens on the port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let out = db.run(data.path(), &["--stage", "assets", "--db-port", &closed]);
    out.expect_code(3);
    assert!(out.stderr.contains("nothing listens there"), "{}", out.evidence());
    // Something listens, and hangs up at once: not said to be nothing.
    let hangs_up = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hangs_up.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || {
        for conn in hangs_up.incoming() {
            drop(conn);
        }
    });
    let out = db.run(data.path(), &["--stage", "assets", "--db-port", &port]);
    out.expect_code(3);
    assert!(!out.stderr.contains("nothing listens there"), "{}", out.evidence());
}

/// A header that lacks the spec's columns says what is likely wrong: another delimiter, or a
/// name that differs in case or spaces.
#[test]
fn a_header_mismatch_points_at_the_likely_fix() {
    let data = generate(5, 0, 0.0, 37);
    let db = TestDb::new("headerhint");
    let file = data.path().join("account_assets.csv");
    let original = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, original.replace(',', ";")).unwrap();
    let out = run(&db, data.path(), &["--stage", "assets"]);
    out.expect_code(1);
    assert!(out.stderr.contains("the header is separated by `;`") && out.stderr.contains("delimiter: \";\""), "{}", out.evidence());
    let (header, rest) = original.split_once('\n').unwrap();
    std::fs::write(&file, format!("{}\n{rest}", header.replace("cash,", "Cash ,"))).unwrap();
    let out = run(&db, data.path(), &["--stage", "assets"]);
    out.expect_code(1);
    assert!(out.stderr.contains("`cash` is written `Cash ` in the file"), "{}", out.evidence());
}

/// A wrong date `format` rejects every row: each reject names the format expected, and the
/// report says the spec, not the data, is likely wrong.
#[test]
fn a_column_failing_on_every_row_is_said_to_be_a_spec_mistake() {
    let data = generate(30, 0, 0.0, 38);
    let db = TestDb::new("wrongformat");
    let out = run(&db, data.path(), &["--stage", "assets", "--set", "stages.assets.columns.updated_at.format='%d/%m/%Y %H:%M:%S'", "--rejects-out", "-"]);
    out.expect_code(4);
    assert!(out.stdout.contains("in the format `%d/%m/%Y %H:%M:%S`"), "the reject names the format\n{}", out.evidence());
    assert!(out.stderr.contains("column updated_at: 30 of 30 rows are not a valid timestamp") && out.stderr.contains("check its `format`"), "{}", out.evidence());
    // A column of another type failing on every row is told to check its type, not a format.
    let out = run(&db, data.path(), &["--stage", "assets", "--force", "--set", "stages.assets.columns.cash.type=int32"]);
    out.expect_code(4);
    let hint = out.stdout.lines().chain(out.stderr.lines()).find(|l| l.contains("column cash: 30 of 30 rows are not a valid int32")).unwrap_or_else(|| panic!("no hint for cash\n{}", out.evidence()));
    assert!(hint.contains("check its type") && !hint.contains("format"), "{hint}\n{}", out.evidence());
    // A column failing on a few rows (5 of 30) is bad data, not a spec mistake: no hint.
    let file = data.path().join("account_assets.csv");
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| if (1..=5).contains(&i) { format!("{},not a time", l.rsplit_once(',').unwrap().0) } else { l.to_string() })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = run(&db, data.path(), &["--stage", "assets", "--force", "--output", "json", "-v"]);
    out.expect_code(4);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    assert_eq!(report["stages"][0]["rows_rejected"].as_u64(), Some(5), "{}", out.evidence());
    let hints = report["stages"][0]["hints"].as_array().map_or(0, Vec::len);
    assert_eq!(hints, 0, "5 of 30 rows failing is not a spec mistake\n{}", out.evidence());
}

/// `--source STAGE=PATH` for a local connection is a path from the current directory, as the
/// shell means it, not from the connection's folder.
#[test]
fn a_source_path_on_the_command_line_is_taken_from_the_current_directory() {
    let data = generate(8, 0, 0.0, 39);
    let db = TestDb::new("sourcecwd");
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::copy(data.path().join("account_assets.csv"), elsewhere.path().join("today.csv")).unwrap();
    // The same file, named relative to the directory etl runs in (the repository root).
    let root = crate::util::root().canonicalize().unwrap();
    let up = "../".repeat(root.components().count() - 1);
    let file = elsewhere.path().canonicalize().unwrap().join("today.csv");
    let relative = format!("{up}{}", file.display().to_string().trim_start_matches('/'));
    // The lake's folder is deeper than the repository, so the path means another file from there.
    let lake = data.path().join("a/b/c");
    std::fs::create_dir_all(&lake).unwrap();
    let out = run(&db, &lake, &["--stage", "assets", "--source", &format!("assets={relative}")]);
    out.expect_code(0);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 8, "{}", out.evidence());
}

/// The connection's `statement_timeout` reaches the server: a statement that runs longer is
/// cancelled (here an analytic, so the loads before it stand). The timeout is seconds, not
/// milliseconds: on a loaded machine (a mutation run beside a build) the loads' own statements
/// took longer than 300 ms and the test failed for that, not for the timeout.
#[test]
fn statement_timeout_cancels_a_statement_that_runs_longer() {
    let data = generate(5, 5, 0.0, 40);
    let db = TestDb::new("stmttimeout");
    let url = format!("{}?options=-c%20search_path%3D{}", db.url, db.schema);
    let out = run(
        &db,
        data.path(),
        &[
            "--set",
            &format!("connections.db={{type: postgres, url: '{url}', schema: {}, statement_timeout: 3s}}", db.schema),
            "--set",
            "analytics.slow={sql: 'SELECT pg_sleep(30) AS slept'}",
        ],
    );
    out.expect_code(1);
    assert!(out.stdout.contains("statement timeout"), "{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade", db.schema)), 5, "{}", out.evidence());
}

/// A stage's record goes in with its rows: when the record cannot be written, the rows are not
/// committed either (no data without its ledger row).
#[test]
fn a_stage_that_cannot_record_itself_commits_nothing() {
    let data = generate(20, 60, 0.0, 44);
    let db = TestDb::new("ledger");
    run(&db, data.path(), &[]).expect_code(0);
    // The record of the trades stage will fail.
    db.exec(&format!(
        "CREATE FUNCTION {0}.refuse_trades() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           IF NEW.stage = 'trades' THEN RAISE EXCEPTION 'the ledger refuses trades'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON {0}.etl_run_stages FOR EACH ROW EXECUTE FUNCTION {0}.refuse_trades()",
        db.schema
    ));
    // A changed trade, so the stage loads.
    let file = data.path().join("trades.csv");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut fields: Vec<String> = lines[1].split(',').map(str::to_string).collect();
    fields[10] = "changed".into();
    lines[1] = fields.join(",");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = run(&db, data.path(), &[]);
    assert_ne!(out.code, 0, "{}", out.evidence());
    assert!(out.stderr.contains("the ledger refuses trades"), "{}", out.evidence());
    let changed = db.count(&format!("SELECT count(*) FROM {}.trade WHERE order_remark = 'changed'", db.schema));
    assert_eq!(changed, 0, "the trades stage committed rows without its record\n{}", out.evidence());
}

/// A run still in progress is never taken for an abandoned one: its process holds its lock.
#[test]
fn a_live_run_is_not_marked_abandoned_by_another() {
    let data = generate(30, 200_000, 0.0, 45);
    let db = TestDb::new("liverun");
    let url = format!("{}?options=-c%20search_path%3D{}", db.url, db.schema);
    let sets = [
        "--set".to_string(),
        format!("connections.db={{type: postgres, url: '{url}', schema: {}}}", db.schema),
        "--set".to_string(),
        format!("connections.lake={{type: local, path: '{}'}}", data.path().display()),
    ];
    let mut long: Vec<String> = vec!["run".into(), "specs/small_etl.yaml".into()];
    long.extend(sets.iter().cloned());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_etl"))
        .args(&long)
        .current_dir(crate::util::root())
        .env("ETL_CACHE_DIR", crate::util::cache_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the long run has recorded itself, then start another run of the same spec.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let exists = |db: &TestDb| db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'etl_runs'", db.schema)) > 0;
    while !(exists(&db) && db.count(&format!("SELECT count(*) FROM {}.etl_runs WHERE status = 'running'", db.schema)) > 0) {
        assert!(std::time::Instant::now() < deadline, "the first run never recorded itself");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // It looks for runs left running as it starts, while the first is under way (it may then
    // wait for the assets stage's lock).
    let mut other: Vec<String> = vec!["run".into(), "specs/small_etl.yaml".into(), "--stage".into(), "assets".into(), "-v".into()];
    other.extend(sets.iter().cloned());
    let refs: Vec<&str> = other.iter().map(String::as_str).collect();
    let out = etl(&refs, &[]);
    out.expect_code(0);
    assert!(!out.stderr.contains("abandoned"), "{}", out.evidence());
    let status = child.wait().unwrap();
    assert!(status.success(), "the long run failed");
    let statuses = db.texts(&format!("SELECT status FROM {}.etl_runs ORDER BY run_id", db.schema));
    assert!(!statuses.iter().any(|s| s == "abandoned"), "{statuses:?}");
}

/// An unread column named twice is renamed out of the way without taking the name of a column
/// the stage reads, before or after it in the header: `extra` three times beside `extra_2`,
/// `extra_1` and a later `extra_3`, the stage reading `extra_1` and `extra_3` (the repeats
/// become `extra_4` and `extra_5`, names the header does not hold; a rejected record keeps the
/// fields the stage reads).
#[test]
fn a_repeated_unread_column_never_takes_a_read_column_s_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.csv"), "id,extra,extra_2,extra,extra_1,extra,extra_3\n1,a,b,c,kept,e,7\n2,a,b,c,x,e,seven\n").unwrap();
    let head = crate::util::spec_head("renamed", dir.path().display());
    let spec = dir.path().join("renamed.yaml");
    std::fs::write(
        &spec,
        format!(
            "{head}stages:\n  x:\n    source: {{ connection: files, key: x.csv }}\n    target: {{ connection: db, table: x, key: [id] }}\n    columns:\n      id: {{ type: int64 }}\n      extra_1: {{ type: string }}\n      extra_3: {{ type: int32 }}\n"
        ),
    )
    .unwrap();
    let db = TestDb::new("renamed");
    // The run's records in the test's schema too.
    let env = crate::workers::env_of(&db);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = etl(&["run", spec.to_str().unwrap()], &env);
    out.expect_code(4);
    assert_eq!(db.texts(&format!("SELECT extra_1 || ' ' || extra_3 FROM {}.x", db.schema)), ["kept 7"], "{}", out.evidence());
    let record = db.texts(&format!("SELECT record::text FROM {}.etl_rejects", db.schema));
    assert_eq!(
        record,
        [r#"{"id": "2", "extra_1": "x", "extra_3": "seven"}"#],
        "{}",
        out.evidence()
    );
}
