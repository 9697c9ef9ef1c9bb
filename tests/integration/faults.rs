//! Faults survived, each asserting the database afterwards: a run killed with SIGKILL in the
//! middle of a stage's COPY, and a run whose database session is cut mid-load (what a server
//! restart does to it), leave the tables exactly as they were and the run never `succeeded`; the
//! next run completes and removes the killed one's temporary directory; a set committed file by
//! file keeps the files before the kill. An S3 object replaced between the run's HEAD and its GET is an error
//! (exit 3), never read as a mix of versions; so are wrong S3 credentials (on the S3 server
//! that checks them) and a download the network cuts short, with nothing loaded.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::extract::generate;
use crate::run::TestDb;
use crate::util::root;

/// `--set`s pointing small_etl.yaml at `dir` and at the test's schema, the engine's own tables
/// (etl_runs) included: the schema is first on the session's search path.
fn sets(db: &TestDb, dir: &Path) -> Vec<String> {
    let url = format!("{}?options=-c%20search_path%3D{}", db.url, db.schema);
    vec![
        "--set".into(),
        format!("connections.db={{type: postgres, url: '{url}', schema: {}}}", db.schema),
        "--set".into(),
        format!("connections.lake={{type: local, path: '{}'}}", dir.display()),
    ]
}

/// Runs small_etl.yaml on `dir` into the test's schema to the end.
fn run(db: &TestDb, dir: &Path) -> crate::util::Output {
    let mut args: Vec<String> = vec!["run".into(), "specs/small_etl.yaml".into()];
    args.extend(sets(db, dir));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    crate::util::etl(&refs, &[])
}

/// A running `etl run -v` whose stderr lines are collected as they come.
pub(crate) struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Starts small_etl.yaml on `dir` and returns once a line of its stderr contains `marker`
    /// (the stage is then in the middle of its COPY).
    fn until(db: &TestDb, dir: &Path, marker: &str) -> Running {
        let mut args: Vec<String> = vec!["run".into(), "specs/small_etl.yaml".into(), "-v".into()];
        args.extend(sets(db, dir));
        Running::start(&args, &[], marker)
    }

    /// Starts `etl ARGS` with more environment variables, returning once a line of its stderr
    /// contains `marker`.
    pub(crate) fn start(args: &[String], env: &[(&str, &str)], marker: &str) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_etl"))
            .env("ETL_CACHE_DIR", crate::util::cache_dir())
            .envs(env.iter().copied())
            .args(args)
            .current_dir(root())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let running = Running { child, lines };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !running.lines.lock().unwrap().iter().any(|l| l.contains(marker)) {
            assert!(Instant::now() < deadline, "`{marker}` never appeared on stderr:\n{}", running.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        running
    }

    /// Waits for the end; the exit code (None: killed by a signal).
    pub(crate) fn wait(&mut self) -> Option<i32> {
        let status = self.child.wait().unwrap();
        // Let the reader take the last lines.
        std::thread::sleep(Duration::from_millis(200));
        status.code()
    }

    pub(crate) fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A digest of a table's rows (or `absent`).
fn digest(db: &TestDb, table: &str) -> String {
    let exists = db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = '{table}'", db.schema));
    if exists == 0 {
        return "absent".into();
    }
    db.texts(&format!(
        "SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {}.{table} AS t",
        db.schema
    ))
    .remove(0)
}

#[test]
fn a_run_killed_mid_copy_leaves_the_tables_as_they_were_and_the_next_run_completes() {
    let first = generate(500, 2_000, 0.0, 31);
    let second = generate(4_000, 200_000, 0.0, 32);
    let db = TestDb::new("killed");
    run(&db, first.path()).expect_code(0);
    let before = (digest(&db, "asset"), digest(&db, "trade"));
    // The runs' temporary directories in one of the test's own.
    let tmp = tempfile::tempdir().unwrap();
    let tmp_env = [("TMPDIR", tmp.path().to_str().unwrap())];
    let mut args: Vec<String> = vec!["run".into(), "specs/small_etl.yaml".into(), "-v".into()];
    args.extend(sets(&db, second.path()));
    let mut running = Running::start(&args, &tmp_env, "trades: staged");
    running.child.kill().unwrap();
    assert_eq!(running.wait(), None, "the run ended on its own before the kill:\n{}", running.log());
    // The killed run could not remove its directory (the spool of its files in it).
    let run_dirs = || -> Vec<String> {
        std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("etl-run-")).collect()
    };
    assert_eq!(run_dirs().len(), 1, "the killed run's temporary directory\n{}", running.log());
    // The killed run's session dies with it and the server rolls its stage back. The assets stage
    // had committed before trades began; the trade table is untouched.
    let after = (digest(&db, "asset"), digest(&db, "trade"));
    assert_eq!(after.1, before.1, "the trade table changed under a killed run\n{}", running.log());
    assert_ne!(after.0, before.0, "the assets stage had committed\n{}", running.log());
    let statuses = db.texts(&format!("SELECT status FROM {}.etl_runs ORDER BY run_id", db.schema));
    assert_eq!(statuses, ["succeeded", "running"], "the killed run is never `succeeded`");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = crate::util::etl(&refs, &tmp_env);
    out.expect_code(0);
    // The next run removed the killed one's directory (its lock went with its process), saying
    // so, and its own as it ended.
    assert!(out.stderr.contains("removed 1 temporary directory ("), "{}", out.evidence());
    assert_eq!(run_dirs(), Vec::<String>::new(), "{}", out.evidence());
    // The next run finds the killed one's process gone and records it as abandoned, saying so.
    let statuses = db.texts(&format!("SELECT status FROM {}.etl_runs ORDER BY run_id", db.schema));
    assert_eq!(statuses, ["succeeded", "abandoned", "succeeded"], "{}", out.evidence());
    let killed = db.texts(&format!("SELECT run_id::text FROM {}.etl_runs WHERE status = 'abandoned'", db.schema)).remove(0);
    assert!(out.stderr.contains(&format!("run {killed} was left running")), "{}", out.evidence());
    // Both files' trades, their ids overlapping (ids count per day).
    let ids: std::collections::BTreeSet<String> = [first.path(), second.path()]
        .iter()
        .flat_map(|d| std::fs::read_to_string(d.join("trades.csv")).unwrap().lines().skip(1).map(|l| l.split(',').nth(3).unwrap().to_string()).collect::<Vec<_>>())
        .collect();
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade", db.schema)), ids.len() as i64, "{}", out.evidence());
}

/// The last run's status and whether it has an end.
fn last_run(db: &TestDb) -> (String, bool) {
    let row = db.texts(&format!("SELECT status || ':' || (finished_at IS NOT NULL)::text FROM {}.etl_runs ORDER BY run_id DESC LIMIT 1", db.schema)).remove(0);
    let (status, ended) = row.split_once(':').unwrap();
    (status.to_string(), ended == "true")
}

/// Waits until a session of the run is executing a statement on the test's schema that starts
/// with `start`.
fn wait_for_statement(db: &TestDb, start: &str, running: &Running) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found = db.count(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'etl' AND state = 'active' AND query LIKE '{}%' AND query LIKE '%\"{}\".\"trade\"%'",
            start.replace('\'', "''"),
            db.schema
        ));
        if found > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "no session ran `{start}`:\n{}", running.log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_run_killed_during_a_direct_copy_or_the_merge_leaves_the_table_as_it_was() {
    let small = generate(500, 2_000, 0.0, 38);
    let big = generate(4_000, 200_000, 0.0, 39);
    let db = TestDb::new("killedphases");
    let kill = |running: &mut Running, what: &str| {
        running.child.kill().unwrap();
        assert_eq!(running.wait(), None, "{what}: the run ended on its own before the kill:\n{}", running.log());
    };
    // A direct COPY into the table the stage created: the table goes with the transaction.
    let mut running = Running::until(&db, big.path(), "trades: staged");
    wait_for_statement(&db, "COPY ", &running);
    kill(&mut running, "a new table");
    assert_eq!(digest(&db, "trade"), "absent", "a killed run's new table is visible\n{}", running.log());
    assert_eq!(last_run(&db), ("running".to_string(), false), "the killed run has no end and never succeeded");
    // A direct COPY into an existing, empty table: it stays empty.
    run(&db, small.path()).expect_code(0);
    let mut args = vec!["clean".to_string(), "specs/small_etl.yaml".into(), "--yes".into()];
    args.extend(sets(&db, small.path()));
    crate::util::etl(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]).expect_code(0);
    let empty = digest(&db, "trade");
    assert_eq!(empty, "0:", "clean empties the table");
    let mut running = Running::until(&db, big.path(), "trades: lookups loaded; the table is empty: COPY straight into it");
    wait_for_statement(&db, "COPY ", &running);
    kill(&mut running, "an empty table");
    assert_eq!(digest(&db, "trade"), empty, "a killed direct COPY left rows\n{}", running.log());
    assert_eq!(last_run(&db), ("running".to_string(), false));
    // The merge of the staged rows into a table with rows.
    run(&db, small.path()).expect_code(0);
    let before = digest(&db, "trade");
    let mut running = Running::until(&db, big.path(), "trades: staged");
    wait_for_statement(&db, "WITH old AS", &running);
    kill(&mut running, "the merge");
    assert_eq!(digest(&db, "trade"), before, "a killed merge changed the table\n{}", running.log());
    assert_eq!(last_run(&db), ("running".to_string(), false));
    // And the next run completes.
    run(&db, big.path()).expect_code(0);
    assert!(db.count(&format!("SELECT count(*) FROM {}.trade", db.schema)) >= 200_000);
}

#[test]
fn a_stage_locks_its_table_against_other_writers_until_it_commits() {
    let small = generate(500, 2_000, 0.0, 40);
    let big = generate(4_000, 200_000, 0.0, 41);
    let db = TestDb::new("writers");
    run(&db, small.path()).expect_code(0);
    let mut running = Running::until(&db, big.path(), "trades: lookups loaded");
    // While the stage loads, its session holds the table in SHARE ROW EXCLUSIVE mode...
    let held = db.count(&format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
          WHERE c.relnamespace = '{}'::regnamespace AND c.relname = 'trade' AND l.mode = 'ShareRowExclusiveLock' AND l.granted AND l.pid <> pg_backend_pid()",
        db.schema
    ));
    assert_eq!(held, 1, "the loading stage does not hold its table against writers\n{}", running.log());
    // ...so another writer waits for it rather than changing rows under the load.
    let writer = db.try_exec(&format!("SET lock_timeout = '200ms'; UPDATE {}.trade SET order_remark = order_remark WHERE false", db.schema));
    let _ = db.try_exec("RESET lock_timeout");
    assert!(writer.as_ref().is_err_and(|e| e.contains("lock timeout")), "a writer went through during the load: {writer:?}\n{}", running.log());
    assert_eq!(running.wait(), Some(0), "{}", running.log());
    // Once the stage has committed, writers go through.
    db.try_exec(&format!("SET lock_timeout = '2s'; UPDATE {}.trade SET order_remark = order_remark WHERE false; RESET lock_timeout", db.schema)).unwrap();
}

#[test]
fn a_lock_wait_past_lock_timeout_exits_3_naming_the_session_that_holds_the_table() {
    let data = generate(50, 200, 0.0, 42);
    let db = TestDb::new("locktimeout");
    // This test's session holds the assets stage's lock, as a long load or a stuck writer would.
    let pid = db.texts("SELECT pg_backend_pid()::text").remove(0);
    let key = format!("etl:\"{}\".\"asset\"", db.schema);
    db.exec(&format!("SELECT pg_advisory_lock(hashtextextended('{}', 0))", key.replace('\'', "''")));
    let mut args = db.sets(data.path());
    args.extend(["--set".to_string(), "defaults.lock_timeout=1s".to_string()]);
    let mut all = vec!["run".to_string(), "specs/small_etl.yaml".to_string()];
    all.extend(args);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let out = crate::util::etl(&refs, &[]);
    out.expect_code(3);
    assert!(started.elapsed().as_secs() < 30, "the wait was not bounded\n{}", out.evidence());
    assert!(out.stderr.contains("within the stage's lock_timeout") && out.stderr.contains(&format!("held by {pid} (")), "names the holder\n{}", out.evidence());
    assert!(out.stderr.contains("pg_advisory_lock"), "shows the holder's query\n{}", out.evidence());
    db.exec(&format!("SELECT pg_advisory_unlock(hashtextextended('{}', 0))", key.replace('\'', "''")));
    let tables = db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}'", db.schema));
    assert_eq!(tables, 0, "nothing was created or loaded\n{}", out.evidence());
    // The plan shows the setting and the query that names the holders.
    let mut plan = all.clone();
    plan[0] = "plan".into();
    let refs: Vec<&str> = plan.iter().map(String::as_str).collect();
    let out = crate::util::etl(&refs, &[]);
    out.expect_code(0);
    assert!(out.stdout.contains("SET LOCAL lock_timeout = '1s';") && out.stdout.contains("FROM pg_locks l JOIN pg_stat_activity a"), "{}", out.stdout);
    // A span that is not one is a spec error naming its place.
    let mut bad = all.clone();
    *bad.last_mut().unwrap() = "stages.trades.lock_timeout='1 second; DROP TABLE x'".into();
    let refs: Vec<&str> = bad.iter().map(String::as_str).collect();
    let out = crate::util::etl(&refs, &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("is not a PostgreSQL time span"), "{}", out.evidence());
}

#[test]
fn a_session_cut_mid_load_exits_3_and_leaves_no_partial_stage() {
    let data = generate(4_000, 200_000, 0.0, 33);
    let db = TestDb::new("cut");
    let mut running = Running::until(&db, data.path(), "trades: staged");
    // What a server restart does to a session: the server terminates it.
    let killed = db.count(&format!(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'etl' AND pid <> pg_backend_pid() AND query LIKE '%{}%') AS t",
        db.schema
    ));
    assert!(killed >= 1, "no session of the run was found");
    let code = running.wait();
    let log = running.log();
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("lost the connection to PostgreSQL"), "{log}");
    assert_eq!(digest(&db, "trade"), "absent", "a partial trades stage is visible\n{log}");
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 4_000);
    let statuses = db.texts(&format!("SELECT status FROM {}.etl_runs ORDER BY run_id", db.schema));
    assert!(statuses.len() == 1 && statuses[0] != "succeeded", "{statuses:?}");
    let rerun = run(&db, data.path());
    rerun.expect_code(0);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade", db.schema)), 200_000, "{}", rerun.evidence());
}

#[test]
fn an_object_replaced_after_its_head_is_never_read() {
    let data = generate(10, 0, 0.0, 34);
    let bucket = crate::run::TestBucket::with_files("replaced", data.path(), &["account_assets.csv"]);
    let conn: etl::spec::model::S3Connection = serde_json::from_value(serde_json::json!({
        "endpoint": bucket.endpoint,
        "bucket": bucket.name,
        "access_key_id": std::env::var("ETL_TEST_S3_ACCESS_KEY").unwrap_or_default(),
        "secret_access_key": std::env::var("ETL_TEST_S3_SECRET_KEY").unwrap_or_default(),
    }))
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let s3 = etl::exec::source::s3::S3::connect(&conn).await;
        let seen = s3.etag("account_assets.csv").await.unwrap();
        // Replaced between the run's HEAD and its GET.
        crate::run::s3_client(&bucket.endpoint)
            .put_object()
            .bucket(&bucket.name)
            .key("account_assets.csv")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"id,account_id\n1,X\n"))
            .send()
            .await
            .unwrap();
        let err = s3.fetch_pinned("account_assets.csv", tmp.path(), seen, &Default::default(), None).await.expect_err("a replaced object was read");
        assert!(err.to_string().contains("changed while it was being read"), "{err}");
        assert_eq!(err.exit_code(), 3);
        // A new run reads the new version whole.
        let fresh = s3.fetch("account_assets.csv", tmp.path()).await.unwrap();
        assert_eq!(std::fs::read_to_string(&fresh.path).unwrap(), "id,account_id\n1,X\n");
    });
}

/// The S3 server that checks credentials (scripts/services.sh), `account_assets.csv` of `dir`
/// put there under `key` with the right keys.
fn auth_bucket(dir: &Path, key: &str) -> crate::run::TestBucket {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run the tests with scripts/test.sh"));
    let bucket = crate::run::TestBucket {
        name: var("ETL_TEST_S3_AUTH_BUCKET"),
        endpoint: var("ETL_TEST_S3_AUTH_ENDPOINT"),
        access_key: var("ETL_TEST_S3_AUTH_ACCESS_KEY"),
        secret_key: var("ETL_TEST_S3_AUTH_SECRET_KEY"),
    };
    let s3 = crate::run::s3_client_keyed(&bucket.endpoint, &bucket.access_key, &bucket.secret_key);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let body = aws_sdk_s3::primitives::ByteStream::from_path(dir.join("account_assets.csv")).await.unwrap();
        s3.put_object().bucket(&bucket.name).key(key).body(body).send().await.unwrap();
    });
    bucket
}

fn tables_in(db: &TestDb) -> i64 {
    db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename IN ('asset', 'trade')", db.schema))
}

#[test]
fn wrong_s3_credentials_are_refused_with_exit_3_and_nothing_loaded() {
    let data = generate(50, 0, 0.0, 35);
    let key = format!("auth-{}/account_assets.csv", std::process::id());
    let right = auth_bucket(data.path(), &key);
    let db = TestDb::new("s3auth");
    let args = ["--stage", "assets", "--assets-file", key.as_str()];
    let wrong_secret = crate::run::TestBucket { secret_key: "Wrong-Secret-Of-The-Test".into(), ..right.clone() };
    let unknown_key = crate::run::TestBucket { access_key: "AKIAETLNOSUCHKEY0000".into(), ..right.clone() };
    for (what, bucket) in [("a wrong secret", &wrong_secret), ("an unknown access key", &unknown_key)] {
        let out = db.run_s3(bucket, &args);
        out.expect_code(3);
        assert!(
            out.stderr.contains(&format!("s3://{}/{key}", bucket.name)) && out.stderr.contains("check the access key and secret"),
            "{what}: the error names the object and the fix\n{}",
            out.evidence()
        );
        assert!(!out.stderr.contains(&bucket.secret_key) && !out.stdout.contains(&bucket.secret_key), "{what}: the secret is shown\n{}", out.evidence());
        assert_eq!(tables_in(&db), 0, "{what}: something was loaded\n{}", out.evidence());
    }
    // The same run with the right keys loads: the refusals above were the credentials'.
    let out = db.run_s3(&right, &args);
    out.expect_code(0);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 50, "{}", out.evidence());
}

/// A TCP relay to `endpoint` that closes each connection once `limit` bytes of the server's
/// replies went through: a download the network cuts short. Returns the relay's endpoint.
fn cutting_relay(endpoint: &str, limit: usize) -> String {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let upstream = endpoint.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let Ok(server) = TcpStream::connect(&upstream) else { return };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
            });
            std::thread::spawn(move || {
                let (mut server, mut client) = (server, client);
                let mut left = limit;
                let mut buf = [0u8; 8192];
                while left > 0 {
                    let n = match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(left),
                    };
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_download_cut_short_is_an_error_and_nothing_is_loaded() {
    let data = generate(3_000, 0, 0.0, 36);
    let size = std::fs::metadata(data.path().join("account_assets.csv")).unwrap().len();
    assert!(size > 200_000, "the file is too small to be cut: {size} bytes");
    let bucket = crate::run::TestBucket::with_files("cut", data.path(), &["account_assets.csv"]);
    let cut = crate::run::TestBucket { endpoint: cutting_relay(&bucket.endpoint, 64 * 1024), ..bucket };
    let db = TestDb::new("cutdownload");
    let out = db.run_s3(&cut, &["--stage", "assets"]);
    out.expect_code(3);
    assert!(
        out.stderr.contains(&format!("s3://{}/account_assets.csv", cut.name))
            && out.stderr.contains("the download broke off"),
        "{}",
        out.evidence()
    );
    assert_eq!(tables_in(&db), 0, "something was loaded from a half-read object\n{}", out.evidence());
}

/// A TCP relay to `endpoint` that, when a second request for the object (a HEAD or a GET) goes
/// through, first replaces that object on the server with `body`: an object replaced right
/// after a run's HEAD saw it. Returns the relay's endpoint.
fn replacing_relay(endpoint: &str, bucket: &str, key: &str, body: Vec<u8>) -> String {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    let upstream = endpoint.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let path = format!(" /{bucket}/{key}");
    let replaced = std::sync::Arc::new(AtomicBool::new(false));
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (endpoint, bucket, key) = (endpoint.to_string(), bucket.to_string(), key.to_string());
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let Ok(server) = TcpStream::connect(&upstream) else { return };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (path, replaced, requests) = (path.clone(), replaced.clone(), requests.clone());
            let (endpoint, bucket, key, body) = (endpoint.clone(), bucket.clone(), key.clone(), body.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    let n = match c_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    // A request line names the object, then a space or its query (`?x-id=GetObject`).
                    let asks: usize = ["HEAD", "GET"]
                        .iter()
                        .flat_map(|m| [" ", "?"].map(|end| format!("{m}{path}{end}")))
                        .map(|line| text.matches(&line).count())
                        .sum();
                    let seen = requests.fetch_add(asks, Ordering::SeqCst) + asks;
                    if !replaced.load(Ordering::SeqCst) && seen >= 2 {
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                        rt.block_on(
                            crate::run::s3_client(&endpoint)
                                .put_object()
                                .bucket(&bucket)
                                .key(&key)
                                .body(aws_sdk_s3::primitives::ByteStream::from(body.clone()))
                                .send(),
                        )
                        .unwrap();
                        replaced.store(true, Ordering::SeqCst);
                    }
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let (mut server, mut client) = (server, client);
                let _ = std::io::copy(&mut server, &mut client);
                let _ = client.shutdown(Shutdown::Both);
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn etl_run_refuses_an_object_replaced_between_its_head_and_its_get() {
    let data = generate(40, 0, 0.0, 37);
    let bucket = crate::run::TestBucket::with_files("replacedrun", data.path(), &["account_assets.csv"]);
    // The replacement is a valid file too: read unpinned, it would load without a word.
    let original = std::fs::read_to_string(data.path().join("account_assets.csv")).unwrap();
    let newer: String = original.lines().take(11).map(|l| format!("{l}\n")).collect();
    let relay = replacing_relay(&bucket.endpoint, &bucket.name, "account_assets.csv", newer.into_bytes());
    let relayed = crate::run::TestBucket { endpoint: relay, ..bucket };
    let db = TestDb::new("replacedrun");
    let out = db.run_s3(&relayed, &["--stage", "assets"]);
    out.expect_code(3);
    assert!(
        out.stderr.contains(&format!("s3://{}/account_assets.csv", relayed.name)) && out.stderr.contains("changed while it was being read"),
        "{}",
        out.evidence()
    );
    assert_eq!(tables_in(&db), 0, "a replaced object was loaded\n{}", out.evidence());
    // The next run reads the new version whole.
    let out = db.run_s3(&relayed, &["--stage", "assets"]);
    out.expect_code(0);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 10, "{}", out.evidence());
}

/// A port that accepts connections and never answers (a hung server, a firewall that swallows
/// packets, a port that speaks another protocol and waits): the run gives up after the
/// connection's `connect_timeout` with exit 3 naming the host and port, and never hangs.
#[test]
fn a_database_that_never_answers_is_given_up_after_connect_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    // Accept and hold every connection, saying nothing.
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    std::thread::spawn(move || {
        for s in silent.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    let data = generate(5, 0, 0.0, 21);
    let started = Instant::now();
    let out = crate::util::etl(
        &[
            "run",
            "specs/small_etl.yaml",
            "--set",
            &format!("connections.lake={{type: local, path: '{}'}}", data.path().display()),
            "--db-host",
            "127.0.0.1",
            "--db-port",
            &port,
            "--set",
            "connections.db.connect_timeout=2",
        ],
        &[],
    );
    let took = started.elapsed();
    out.expect_code(3);
    assert!(out.stderr.contains(&format!("127.0.0.1:{port}")), "names the host and port\n{}", out.evidence());
    assert!(out.stderr.contains("no answer within 2 s"), "{}", out.evidence());
    assert!(took < Duration::from_secs(20), "gave up after {took:?}, not about 2 s\n{}", out.evidence());
    assert!(!held.lock().unwrap().is_empty(), "the run did dial the silent port");
}

/// A local file the producer replaces while the run is under way: the run loads the version it
/// hashed when it began (it reads its own copy), and the next run sees the new content and
/// loads it, never taking it as unchanged.
#[test]
fn a_local_file_replaced_during_a_run_is_loaded_as_the_version_hashed() {
    let data = generate(50, 400, 0.0, 42);
    let db = TestDb::new("swapped");
    let trades = data.path().join("trades.csv");
    let original = std::fs::read_to_string(&trades).unwrap();
    let shorter: String = original.lines().take(101).map(|l| format!("{l}\n")).collect();
    let mut running = Running::until(&db, data.path(), "trades: source ");
    std::fs::write(trades.with_extension("new"), &shorter).unwrap();
    std::fs::rename(trades.with_extension("new"), &trades).unwrap();
    assert_eq!(running.wait(), Some(0), "{}", running.log());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade", db.schema)), 400, "the version hashed at the start loads\n{}", running.log());
    let mut args: Vec<String> = vec!["run".into(), "specs/small_etl.yaml".into(), "--output".into(), "json".into()];
    args.extend(sets(&db, data.path()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = crate::util::etl(&refs, &[]);
    out.expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    let trades = &report["stages"][1];
    assert!(trades["unchanged_since_run"].is_null(), "the new content is not taken as unchanged\n{}", out.evidence());
    assert_eq!(trades["rows_read"], 100, "{}", out.evidence());
}

/// Two stages whose S3 keys share their last part (`a/day.csv`, `t/day.csv`) each read their own
/// object: loudly different files (assets and trades), and silently alike ones (two stages of
/// the same shape, where the wrong rows would load without a word).
#[test]
fn stages_whose_keys_share_a_basename_read_their_own_objects() {
    let data = generate(30, 90, 0.0, 43);
    let staged = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(staged.path().join("a")).unwrap();
    std::fs::create_dir_all(staged.path().join("t")).unwrap();
    std::fs::copy(data.path().join("account_assets.csv"), staged.path().join("a/day.csv")).unwrap();
    std::fs::copy(data.path().join("trades.csv"), staged.path().join("t/day.csv")).unwrap();
    let bucket = crate::run::TestBucket::with_files("basename", staged.path(), &["a/day.csv", "t/day.csv"]);
    let db = TestDb::new("basename");
    let out = db.run_s3(&bucket, &["--assets-file", "a/day.csv", "--trades-file", "t/day.csv"]);
    out.expect_code(0);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 30, "{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade", db.schema)), 90, "{}", out.evidence());
    // The silent case: the same stage twice over, eu/x.csv and us/x.csv, into two tables.
    let assets = std::fs::read_to_string(data.path().join("account_assets.csv")).unwrap();
    let (header, rows) = assets.split_once('\n').unwrap();
    let rows: Vec<&str> = rows.lines().collect();
    std::fs::create_dir_all(staged.path().join("eu")).unwrap();
    std::fs::create_dir_all(staged.path().join("us")).unwrap();
    std::fs::write(staged.path().join("eu/x.csv"), format!("{header}\n{}\n", rows[..10].join("\n"))).unwrap();
    std::fs::write(staged.path().join("us/x.csv"), format!("{header}\n{}\n", rows[10..25].join("\n"))).unwrap();
    let alike = crate::run::TestBucket::with_files("alike", staged.path(), &["eu/x.csv", "us/x.csv"]);
    let stage = |name: &str| {
        format!("stages.{name}={{source: {{connection: lake, key: {name}/x.csv}}, target: {{connection: db, table: asset_{name}, key: [account_id]}}, columns: {{account_id: {{type: string}}, cash: {{type: 'decimal(20,2)'}}}}}}")
    };
    let out = db.run_s3(&alike, &["--stage", "eu", "--stage", "us", "--set", &stage("eu"), "--set", &stage("us")]);
    out.expect_code(0);
    let ids = |table: &str| db.texts(&format!("SELECT account_id FROM {}.{table} ORDER BY 1", db.schema));
    let expected = |from: usize, to: usize| {
        let mut ids: Vec<String> = rows[from..to].iter().map(|r| r.split(',').nth(1).unwrap().to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids("asset_eu"), expected(0, 10), "the eu stage loaded eu/x.csv\n{}", out.evidence());
    assert_eq!(ids("asset_us"), expected(10, 25), "the us stage loaded us/x.csv\n{}", out.evidence());
}

/// `atomicity: file`: a run killed with SIGKILL while it loads the third file of a set leaves the
/// first two loaded with their ledger rows and the stage's record of them, and nothing of the
/// third; the next run loads the third alone and the table ends as one uninterrupted run leaves it.
#[test]
fn a_run_killed_in_the_middle_of_a_set_committed_file_by_file_keeps_the_files_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("killedfiles");
    std::fs::create_dir_all(dir.path().join("prices")).unwrap();
    std::fs::write(dir.path().join("prices/a.csv"), "code,price\nA,1.00\nB,2.00\n").unwrap();
    std::fs::write(dir.path().join("prices/b.csv"), "code,price\nC,3.00\n").unwrap();
    // The third file large enough to be killed in the middle of.
    let mut big = String::from("code,price\n");
    for i in 0..300_000 {
        big.push_str(&format!("Z{i},{}.{:02}\n", i % 1000, i % 100));
    }
    std::fs::write(dir.path().join("prices/c.csv"), big).unwrap();
    let head = crate::util::spec_head("killed_files", dir.path().display());
    let spec = dir.path().join("prices.yaml");
    std::fs::write(
        &spec,
        format!(
            "{head}stages:
  prices:
    source: {{ connection: files, files: \"prices/*.csv\", atomicity: file }}
    target: {{ connection: db, table: price, key: [code] }}
    columns:
      code: {{ type: string }}
      price: {{ type: \"decimal(10,2)\" }}
"
        ),
    )
    .unwrap();
    let url = format!("{}?options=-c%20search_path%3D{}", db.url, db.schema);
    let env = [("ETL_TEST_DATABASE_URL", url.as_str()), ("SCHEMA", db.schema.as_str())];
    let args: Vec<String> = ["run", spec.to_str().unwrap(), "-v"].iter().map(|a| a.to_string()).collect();
    let mut running = Running::start(&args, &env, "file 2 of 3");
    running.child.kill().unwrap();
    assert_eq!(running.wait(), None, "the run ended on its own before the kill:\n{}", running.log());
    let rows = |db: &TestDb| db.texts(&format!("SELECT count(*)::text || ' ' || coalesce(sum(price), 0)::text FROM {}.price", db.schema)).remove(0);
    assert_eq!(rows(&db), "3 6.00", "the first two files' rows, none of the third\n{}", running.log());
    let ledger = || db.texts(&format!("SELECT file_key FROM {}.etl_files ORDER BY run_id, file_key", db.schema));
    assert_eq!(ledger(), ["prices/a.csv", "prices/b.csv"], "{}", running.log());
    let recorded = db.texts(&format!("SELECT s.status || ' ' || s.rows_read || ' ' || r.status FROM {0}.etl_run_stages s JOIN {0}.etl_runs r USING (run_id)", db.schema));
    assert_eq!(recorded, ["succeeded 3 running"], "the stage's record holds the files committed; the run never ended\n{}", running.log());
    // The next run loads the third file only.
    let out = crate::util::etl(&args.iter().map(String::as_str).collect::<Vec<_>>(), &env);
    out.expect_code(0);
    assert_eq!(ledger(), ["prices/a.csv", "prices/b.csv", "prices/c.csv"], "{}", out.evidence());
    let read = db.texts(&format!("SELECT rows_read::text FROM {}.etl_run_stages WHERE run_id = (SELECT max(run_id) FROM {0}.etl_runs)", db.schema));
    assert_eq!(read, ["300000"], "only the third file is read again\n{}", out.evidence());
    // As one run without a kill leaves it.
    let whole = TestDb::new("killedfiles_whole");
    let whole_url = format!("{}?options=-c%20search_path%3D{}", whole.url, whole.schema);
    crate::util::etl(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[("ETL_TEST_DATABASE_URL", whole_url.as_str()), ("SCHEMA", whole.schema.as_str())]).expect_code(0);
    assert_eq!(digest(&db, "price"), digest(&whole, "price"), "{}", out.evidence());
}
