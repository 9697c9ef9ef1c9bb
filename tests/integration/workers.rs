//! Distributed runs: `etl run --distribute` queues a day's files (a set committed file by file)
//! and loads them beside `etl worker` processes; each file loads exactly once (its rows, its
//! ledger row, its queue row), the totals are exact to the cent, and a worker killed with SIGKILL
//! in the middle of a file loses its claim when its lease runs out, another loading the file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::TestDb;
use crate::util::{Output, etl, root};

/// `files` files of `rows` rows each under `dir/prices` (codes unique across files; the file
/// `bad` with two negative prices); returns the valid rows' count and price sum in cents.
fn day_of_files(dir: &Path, files: usize, rows: usize, bad: Option<usize>) -> (i64, i64) {
    std::fs::create_dir_all(dir.join("prices")).unwrap();
    let (mut count, mut cents) = (0i64, 0i64);
    for f in 0..files {
        let mut text = String::from("code,price\n");
        for r in 0..rows {
            let c = ((f * 7919 + r * 104_729) % 100_000) as i64;
            if Some(f) == bad && r < 2 {
                text.push_str(&format!("F{f}R{r},-{}.{:02}\n", c / 100, c % 100));
                continue;
            }
            text.push_str(&format!("F{f}R{r},{}.{:02}\n", c / 100, c % 100));
            count += 1;
            cents += c;
        }
        std::fs::write(dir.join(format!("prices/p{f:02}.csv")), text).unwrap();
    }
    (count, cents)
}

fn spec(dir: &Path) -> PathBuf {
    spec_with(dir, "")
}

/// The day's spec, its target given `more` (e.g. a Citus `distribution`).
fn spec_with(dir: &Path, more: &str) -> PathBuf {
    let head = crate::util::spec_head("workers", dir.display());
    let path = dir.join("workers.yaml");
    std::fs::write(
        &path,
        format!(
            "{head}stages:
  prices:
    source: {{ connection: files, files: \"prices/*.csv\", atomicity: file }}
    target: {{ connection: db, table: price, key: [code]{more} }}
    columns:
      code: {{ type: string }}
      price: {{ type: \"decimal(12,2)\", min: 0 }}
"
        ),
    )
    .unwrap();
    path
}

/// The environment putting a spec's target and the run records in the test's schema.
pub fn env_of(db: &TestDb) -> Vec<(String, String)> {
    vec![("ETL_TEST_DATABASE_URL".into(), format!("{}?options=-c%20search_path%3D{}", db.url, db.schema)), ("SCHEMA".into(), db.schema.clone())]
}

/// A running `etl worker`, killed if the test ends early.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(spec: &Path, db: &TestDb, id: &str, lease: &str, dir: &Path) -> Worker {
        let log = dir.join(format!("{id}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_etl"))
            .args(["worker", spec.to_str().unwrap(), "--id", id, "--lease", lease, "--poll", "100ms", "--exit-when-idle", "8s"])
            .envs(env_of(db))
            .env("ETL_CACHE_DIR", crate::util::cache_dir())
            .env("NO_COLOR", "1")
            .current_dir(root())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Worker { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for it to exit (idle), at most a minute; its exit code.
    fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(Instant::now() < deadline, "the worker did not exit once idle:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn distribute(spec: &Path, db: &TestDb, lease: &str) -> Output {
    let env = env_of(db);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    etl(&["run", spec.to_str().unwrap(), "--distribute", "--lease", lease, "--output", "json", "-v"], &env)
}

/// `distribute` in a thread of its own, for a test that acts while the run goes on.
fn distribute_in_background(spec: &Path, db: &TestDb, lease: &str) -> std::thread::JoinHandle<Output> {
    let (spec, env, lease) = (spec.to_path_buf(), env_of(db), lease.to_string());
    std::thread::spawn(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        etl(&["run", spec.to_str().unwrap(), "--distribute", "--lease", &lease, "--output", "json", "-v"], &env)
    })
}

/// The advisory lock every load of the test's `price` table takes first (as an SQL expression).
fn price_lock(db: &TestDb) -> String {
    format!("hashtextextended('{}', 0)", format!("etl:\"{}\".\"price\"", db.schema).replace('\'', "''"))
}

/// Each file once in the ledger and done in the queue, and the table's count and sum.
fn settled(db: &TestDb, files: usize, rows: (i64, i64), evidence: &str) {
    let ledger = db.texts(&format!("SELECT count(*)::text || ' ' || count(DISTINCT file_key)::text FROM {}.etl_files", db.schema));
    assert_eq!(ledger, [format!("{files} {files}")], "each file once in the ledger\n{evidence}");
    let queue = db.texts(&format!("SELECT state || ' ' || count(*) FROM {}.etl_queue GROUP BY state", db.schema));
    assert_eq!(queue, [format!("done {files}")], "every queued file done\n{evidence}");
    let table = db.texts(&format!("SELECT count(*)::text || ' ' || (sum(price) * 100)::bigint::text FROM {}.price", db.schema));
    assert_eq!(table, [format!("{} {}", rows.0, rows.1)], "the rows and their sum to the cent\n{evidence}");
}

#[test]
fn workers_and_the_run_share_a_day_of_files_each_loaded_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("workers");
    let rows = day_of_files(dir.path(), 20, 5_000, Some(7));
    let spec = spec(dir.path());
    // Named for the test's schema: its heartbeats are told apart from other tests' in pg_stat_activity.
    let mut workers: Vec<Worker> = (1..=3).map(|i| Worker::start(&spec, &db, &format!("{}w{i}", db.schema), "10s", dir.path())).collect();
    let out = distribute(&spec, &db, "10s");
    let logs = || workers.iter().map(Worker::log).collect::<Vec<_>>().join("\n");
    // Two rows rejected, the rest loaded: exit 4.
    assert_eq!(out.code, 4, "{}\n{}", out.evidence(), logs());
    let evidence = format!("{}\n{}", out.evidence(), logs());
    settled(&db, 20, rows, &evidence);
    // Each file claimed once: its row turned `done` with its load, in the same transaction.
    let claims = db.texts(&format!("SELECT string_agg(DISTINCT attempts::text, ',') FROM {}.etl_queue", db.schema));
    assert_eq!(claims, ["1"], "{evidence}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{evidence}"));
    let stage = &report["stages"][0];
    assert_eq!((stage["rows_read"].as_i64(), stage["rows_rejected"].as_i64(), stage["loaded"]["inserted"].as_i64()), (Some(100_000), Some(2), Some(rows.0)), "{evidence}");
    assert_eq!(stage["rejects_by_rule"]["min"].as_i64(), Some(2), "{evidence}");
    let rejects = db.texts(&format!("SELECT source || ':' || line || ':' || rule FROM {}.etl_rejects ORDER BY line", db.schema));
    assert_eq!(rejects.len(), 2, "{rejects:?}\n{evidence}");
    assert!(rejects[0].ends_with("prices/p07.csv:2:min") && rejects[1].ends_with("prices/p07.csv:3:min"), "each reject names its file and line: {rejects:?}\n{evidence}");
    // Per file: who loaded it; the work was shared.
    let files = stage["files"].as_array().unwrap();
    assert_eq!(files.len(), 20, "{evidence}");
    // Each file under its own name, in the set's order.
    let names: Vec<&str> = files.iter().map(|f| f["file"].as_str().unwrap_or("")).collect();
    assert!((0..20).all(|i| names[i].ends_with(&format!("prices/p{i:02}.csv"))), "{names:?}\n{evidence}");
    let loaders: std::collections::BTreeSet<&str> = files.iter().map(|f| f["worker"].as_str().unwrap_or("")).collect();
    assert!(loaders.len() >= 2, "one loader took every file: {loaders:?}\n{evidence}");
    assert!(files.iter().all(|f| f["status"] == "loaded"), "{evidence}");
    // Each file's own counts: p07's two rejects are its own, not valid rows.
    let counts: Vec<String> = files.iter().map(|f| format!("{}/{}/{}", f["rows_read"], f["rows_valid"], f["rows_rejected"])).collect();
    let expected: Vec<String> = (0..20).map(|i| if i == 7 { "5000/4998/2".to_string() } else { "5000/5000/0".to_string() }).collect();
    assert_eq!(counts, expected, "read/valid/rejected per file\n{evidence}");
    let recorded = db.texts(&format!("SELECT status || ' ' || rows_read || ' ' || rows_inserted || ' ' || rows_rejected FROM {}.etl_run_stages", db.schema));
    assert_eq!(recorded, [format!("rejected 100000 {} 2", rows.0)], "the stage's one record adds up its files\n{evidence}");
    // Each claim's heartbeat ends with it: the idle workers (alive 8 s more) hold none.
    let beats = format!("SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('etl heartbeat {0}w1', 'etl heartbeat {0}w2', 'etl heartbeat {0}w3')", db.schema);
    let deadline = Instant::now() + Duration::from_secs(4);
    while db.count(&beats) > 0 {
        assert!(Instant::now() < deadline, "an ended claim's heartbeat still holds its connection\n{evidence}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for w in &mut workers {
        assert_eq!(w.wait(), Some(0), "{}", w.log());
    }
    // Again: every file is loaded already; nothing loads twice.
    let out = distribute(&spec, &db, "10s");
    out.expect_code(0);
    let ledger = db.count(&format!("SELECT count(*) FROM {}.etl_files", db.schema));
    assert_eq!(ledger, 20, "{}", out.evidence());
}

/// What [`kill_a_worker_mid_file`] saw: the killed worker's file, its log, and the evidence of
/// all three loaders.
struct Killed {
    claimed: String,
    doomed_log: String,
    evidence: String,
}

/// A distributing run of `spec` beside a worker `steady` (the two on leases of `lease`) and a
/// worker `doomed` (1 s), killed with SIGKILL 200 ms after it claims its first file; waits for
/// the run (which must exit 0) and for `steady` to exit idle.
fn kill_a_worker_mid_file(spec: &Path, db: &TestDb, lease: &str, dir: &Path) -> Killed {
    let mut doomed = Worker::start(spec, db, "doomed", "1s", dir);
    let mut steady = Worker::start(spec, db, "steady", lease, dir);
    let running = distribute_in_background(spec, db, lease);
    let deadline = Instant::now() + Duration::from_secs(60);
    let claimed = loop {
        let tables = db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'etl_queue'", db.schema));
        if tables == 1 {
            let mine = db.texts(&format!("SELECT file_key FROM {}.etl_queue WHERE worker = 'doomed' AND state = 'running'", db.schema));
            if let Some(k) = mine.first() {
                break k.clone();
            }
        }
        assert!(Instant::now() < deadline, "the worker never claimed a file:\n{}", doomed.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(200));
    doomed.child.kill().unwrap();
    let _ = doomed.child.wait();
    let out = running.join().unwrap();
    assert_eq!(steady.wait(), Some(0), "{}", steady.log());
    let evidence = format!("{}\n{}\n{}", out.evidence(), doomed.log(), steady.log());
    assert_eq!(out.code, 0, "{evidence}");
    Killed { claimed, doomed_log: doomed.log(), evidence }
}

#[test]
fn a_worker_killed_in_the_middle_of_a_file_loses_its_claim_and_another_loads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("workerkilled");
    let rows = day_of_files(dir.path(), 6, 60_000, None);
    let spec = spec(dir.path());
    // Leases shorter than a file's load and its wait for the files before it: the loads that live keep
    // theirs by renewing them (2 s, renewed every 2/3 s: room for a busy machine's scheduling).
    let Killed { claimed, doomed_log, evidence } = kill_a_worker_mid_file(&spec, &db, "2s", dir.path());
    assert!(!doomed_log.contains(&format!("{claimed}: succeeded")), "the worker finished its file before the kill\n{evidence}");
    settled(&db, 6, rows, &evidence);
    let taken = db.texts(&format!("SELECT worker || ' ' || attempts FROM {}.etl_queue WHERE file_key = '{claimed}'", db.schema));
    assert_eq!(taken.len(), 1, "{evidence}");
    assert!(!taken[0].starts_with("doomed ") && taken[0].ends_with(" 2"), "the killed worker's file was claimed again and loaded by another: {taken:?}\n{evidence}");
    let others = db.texts(&format!("SELECT coalesce(string_agg(DISTINCT attempts::text, ','), '') FROM {}.etl_queue WHERE file_key <> '{claimed}'", db.schema));
    assert_eq!(others, ["1"], "a live load lost its claim (its lease was not renewed)\n{evidence}");
}

/// A load that waits longer than its lease (here on its table's lock, which the test holds for
/// three leases) keeps its claim: its heartbeat renews it, so no other worker takes the file.
#[test]
fn a_load_waiting_past_its_lease_keeps_its_claim_by_renewing_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("workerrenew");
    let rows = day_of_files(dir.path(), 3, 1_000, None);
    let spec = spec(dir.path());
    // The lock every load of `price` takes first.
    let key = price_lock(&db);
    db.exec(&format!("SELECT pg_advisory_lock({key})"));
    let mut idle = Worker::start(&spec, &db, "idle", "2s", dir.path());
    let running = distribute_in_background(&spec, &db, "2s");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tables = db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'etl_queue'", db.schema));
        if tables == 1 && db.count(&format!("SELECT count(*) FROM {}.etl_queue WHERE state = 'running'", db.schema)) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no file was claimed:\n{}", idle.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(6));
    db.exec(&format!("SELECT pg_advisory_unlock({key})"));
    let out = running.join().unwrap();
    assert_eq!(idle.wait(), Some(0), "{}", idle.log());
    let evidence = format!("{}\n{}", out.evidence(), idle.log());
    assert_eq!(out.code, 0, "{evidence}");
    settled(&db, 3, rows, &evidence);
    let claims = db.texts(&format!("SELECT string_agg(file_key || ' ' || attempts, ', ' ORDER BY file_key) FROM {}.etl_queue", db.schema));
    assert!(!claims[0].contains(" 2"), "a load waiting on the lock lost its claim (its lease was not renewed): {claims:?}\n{evidence}");
}

/// A worker holding a later file while an earlier one waits for a worker hands its claim back
/// and takes the earlier file: no loader sleeps waiting for a file nobody loads. The run claims
/// p00 and waits on its table's lock (the test holds it); the test holds p01's queue row, so
/// the worker's claim skips it and takes p02; once p01's row is let go it waits, unclaimed, and
/// the worker must come for it while p00 is still loading (a worker that slept on p02 instead
/// would wait for ever: the run is busy with p00, and nobody else is there). Holding p01 while
/// p00 loads, it waits with its claim.
#[test]
fn a_worker_holding_a_later_file_hands_it_back_for_an_earlier_one_that_waits() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("workerhandback");
    let rows = day_of_files(dir.path(), 3, 1_000, None);
    let spec = spec(dir.path());
    let key = price_lock(&db);
    let queue = format!("{}.etl_queue", db.schema);
    db.exec(&format!("SELECT pg_advisory_lock({key})"));
    let running = distribute_in_background(&spec, &db, "2s");
    wait_until(&db, &format!("SELECT count(*) FROM {queue} WHERE file_key = 'prices/p00.csv' AND state = 'running'"), "the run's claim of p00", String::new);
    // The test's session holds p01's row (the claim's FOR UPDATE SKIP LOCKED passes it by).
    db.exec(&format!("BEGIN; SELECT 1 FROM {queue} WHERE file_key = 'prices/p01.csv' FOR UPDATE"));
    let mut worker = Worker::start(&spec, &db, "w1", "2s", dir.path());
    let claimed_p02 = Instant::now() + Duration::from_secs(60);
    while !worker.log().contains("claimed prices/p02.csv") {
        assert!(Instant::now() < claimed_p02, "the worker never claimed p02:\n{}", worker.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Time for the worker to look at the files before p02 (p01 queued and unclaimed).
    std::thread::sleep(Duration::from_secs(1));
    db.exec("COMMIT");
    let p01 = format!("SELECT count(*) FROM {queue} WHERE file_key = 'prices/p01.csv' AND worker = 'w1' AND state = 'running'");
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.count(&p01) == 0 {
        if Instant::now() > deadline {
            db.exec(&format!("SELECT pg_advisory_unlock({key})"));
            let queued = db.texts(&format!("SELECT file_key || ' ' || state || ' ' || coalesce(worker, '-') FROM {queue} ORDER BY id"));
            panic!("the worker never took p01, which waited for a worker while it held p02: {queued:?}\n{}", worker.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(worker.log().contains("prices/p02.csv: handed back"), "{}", worker.log());
    // p00 still loads (the lock): the worker, at its turn's look, holds p01 and waits.
    std::thread::sleep(Duration::from_secs(2));
    db.exec(&format!("SELECT pg_advisory_unlock({key})"));
    let out = running.join().unwrap();
    assert_eq!(worker.wait(), Some(0), "{}", worker.log());
    let evidence = format!("{}\n{}", out.evidence(), worker.log());
    assert_eq!(out.code, 0, "{evidence}");
    settled(&db, 3, rows, &evidence);
    let loaders = db.texts(&format!("SELECT file_key || ' ' || worker FROM {queue} ORDER BY file_key"));
    assert_eq!(loaders[1], "prices/p01.csv w1", "{loaders:?}\n{evidence}");
    // Holding p01 while p00 loaded (claimed, not waiting for a worker), it kept its claim and
    // waited: a loader hands a claim back only for a file nobody holds (not over and over,
    // fetching its file again each time).
    assert!(!worker.log().contains("prices/p01.csv: handed back"), "{evidence}");
}

/// `files` files of `rows` rows under `dir/prices`, each file after the first restating the
/// first code of the file before it with a price of its own; returns each restated code with the
/// price of the last file that gives it (what a run alone, loading the files in order, keeps).
fn restated_day(dir: &Path, files: usize, rows: usize) -> Vec<String> {
    std::fs::create_dir_all(dir.join("prices")).unwrap();
    let mut last = Vec::new();
    for f in 0..files {
        let mut text = String::from("code,price\n");
        for r in 0..rows {
            text.push_str(&format!("F{f}R{r},{}.{:02}\n", r % 1000, r % 100));
        }
        if f > 0 {
            text.push_str(&format!("F{}R0,{f}000.{f:02}\n", f - 1));
            last.push(format!("F{}R0={f}000.{f:02}", f - 1));
        }
        std::fs::write(dir.join(format!("prices/p{f:02}.csv")), text).unwrap();
    }
    last
}

/// The table's rows, digested, and the prices of `codes`.
fn table_of(db: &TestDb, codes: &[String]) -> (Vec<String>, Vec<String>) {
    let digest = db.texts(&format!("SELECT count(*) || ' ' || md5(string_agg(code || '=' || price, ',' ORDER BY code)) FROM {}.price", db.schema));
    let list: Vec<String> = codes.iter().map(|c| format!("'{}'", c.split('=').next().unwrap())).collect();
    let prices = db.texts(&format!("SELECT code || '=' || price FROM {}.price WHERE code IN ({}) ORDER BY code", db.schema, list.join(", ")));
    (digest, prices)
}

/// A key restated by a later file of the set ends with the later file's row, as in a run alone,
/// even when the worker loading the earlier file dies and the file is loaded again after the
/// later one was claimed: a stage with a key commits its files in the set's order.
#[test]
fn a_key_restated_by_a_later_file_keeps_the_later_row_when_the_earlier_files_worker_dies() {
    restated_under_a_killed_worker(None, 60_000, "");
}

/// The same on a Citus cluster, the table distributed: a worker killed mid-file, its file
/// loaded again by another, the table as the run alone leaves it.
#[test]
fn a_worker_killed_mid_file_on_citus_loses_its_claim_and_the_table_ends_as_the_run_alone_leaves_it() {
    let Some(url) = std::env::var("ETL_TEST_CITUS_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("skipped: no Citus cluster (ETL_TEST_CITUS_URL is unset: scripts/citus.sh found no Citus source, ../shared/vendor or ETL_CITUS_VENDOR)");
        return;
    };
    restated_under_a_killed_worker(Some(&url), 20_000, ", distribution: { column: code, shard_count: 4 }");
}

/// Six files of `rows` rows, each restating a key of the file before it, loaded by a run alone
/// and then by a distributing run beside two workers, one killed 200 ms into its first file: the
/// killed worker's file is claimed again, and both tables are alike.
fn restated_under_a_killed_worker(url: Option<&str>, rows: usize, more: &str) {
    let dir = tempfile::tempdir().unwrap();
    let restated = restated_day(dir.path(), 6, rows);
    let spec = spec_with(dir.path(), more);
    let db_named = |name: &str| match url {
        Some(u) => TestDb::at(u, name),
        None => TestDb::new(name),
    };
    let alone = db_named("workerorderalone");
    let env = env_of(&alone);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    etl(&["run", spec.to_str().unwrap()], &env).expect_code(0);
    let expected = table_of(&alone, &restated);
    assert_eq!(expected.1, restated, "a run alone keeps each restated code's later row");

    let db = db_named("workerorder");
    let Killed { claimed, evidence, .. } = kill_a_worker_mid_file(&spec, &db, "3s", dir.path());
    assert!(!claimed.ends_with("p05.csv"), "the killed worker's file must have a later file restating it\n{evidence}");
    let again = db.texts(&format!("SELECT attempts::text FROM {}.etl_queue WHERE file_key = '{claimed}'", db.schema));
    assert_eq!(again, ["2"], "the killed worker's file was claimed again\n{evidence}");
    assert_eq!(table_of(&db, &restated), expected, "the table differs from the run alone's\n{evidence}");
}

/// The same on a Citus cluster: the table distributed by its key, three workers and the run share
/// the files, each loaded once, the totals exact, the rows on both workers' shards.
#[test]
fn workers_share_a_day_of_files_into_a_citus_table() {
    let Some(url) = std::env::var("ETL_TEST_CITUS_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("skipped: no Citus cluster (ETL_TEST_CITUS_URL is unset: scripts/citus.sh found no Citus source, ../shared/vendor or ETL_CITUS_VENDOR)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::at(&url, "citus_workers");
    let rows = day_of_files(dir.path(), 20, 1_500, Some(4));
    let spec = spec_with(dir.path(), ", distribution: { column: code }");
    let mut workers: Vec<Worker> = (1..=3).map(|i| Worker::start(&spec, &db, &format!("c{i}"), "10s", dir.path())).collect();
    let out = distribute(&spec, &db, "10s");
    let logs = || workers.iter().map(Worker::log).collect::<Vec<_>>().join("\n");
    let evidence = format!("{}\n{}", out.evidence(), logs());
    assert_eq!(out.code, 4, "{evidence}");
    settled(&db, 20, rows, &evidence);
    let claims = db.texts(&format!("SELECT string_agg(DISTINCT attempts::text, ',') FROM {}.etl_queue", db.schema));
    assert_eq!(claims, ["1"], "{evidence}");
    let spread = db.texts(&format!(
        "SELECT count(DISTINCT nodeport)::text FROM pg_dist_shard_placement p JOIN pg_dist_shard s USING (shardid) WHERE s.logicalrelid = '{}.price'::regclass",
        db.schema
    ));
    assert_eq!(spread, ["2"], "the table's shards are on both workers\n{evidence}");
    for w in &mut workers {
        assert_eq!(w.wait(), Some(0), "{}", w.log());
    }
}

/// Polls `sql` (a count) until it is above zero, at most a minute.
fn wait_until(db: &TestDb, sql: &str, what: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'etl_queue'", db.schema)) == 1 && db.count(sql) > 0) {
        assert!(Instant::now() < deadline, "{what} never happened:\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A file whose loader died on it `MAX_ATTEMPTS` (3) times is given up on its next claim, by a
/// worker or by the run, not claimed for ever: its queue row `failed`, naming the count, nothing
/// of it loaded, the run's report naming it (exit 1, the file's word `failed`), and the files around it
/// loaded; one that died twice is loaded by its third claim, the run's or a worker's. A later
/// run queues it again and loads it. The three deaths are set on the file's queue row while the
/// run waits on the table's lock (what three killed workers leave: `running`, its lease over,
/// three attempts).
#[test]
fn a_file_its_loaders_died_on_three_times_is_given_up_and_a_later_run_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("workergiveup");
    let rows = day_of_files(dir.path(), 3, 1_000, None);
    let spec = spec(dir.path());
    let key = price_lock(&db);
    let queue = format!("{}.etl_queue", db.schema);
    let died = |file: &str, times: u32| {
        db.exec(&format!(
            "UPDATE {queue} SET state = 'running', worker = 'dead', attempts = {times}, lease_until = clock_timestamp() - interval '1 second' WHERE file_key = 'prices/{file}' AND state IN ('queued', 'running')"
        ))
    };
    let died_thrice = |file: &str| died(file, 3);
    let start_run = || distribute_in_background(&spec, &db, "2s");
    let given_up = |file: &str| db.texts(&format!("SELECT state || ' ' || attempts || ' ' || worker || ': ' || coalesce(error, '') FROM {queue} WHERE file_key = 'prices/{file}' ORDER BY id DESC LIMIT 1"));

    // The run: p00 claimed by the run, which waits on the lock; p01 given up by the run itself.
    db.exec(&format!("SELECT pg_advisory_lock({key})"));
    let running = start_run();
    wait_until(&db, &format!("SELECT count(*) FROM {queue} WHERE file_key = 'prices/p00.csv' AND state = 'running'"), "the run's claim of p00", String::new);
    died_thrice("p01.csv");
    // Two deaths are within the budget: its third claim loads it.
    died("p02.csv", 2);
    db.exec(&format!("SELECT pg_advisory_unlock({key})"));
    let out = running.join().unwrap();
    let evidence = out.evidence();
    assert_eq!(out.code, 1, "a file given up fails the run\n{evidence}");
    assert!(evidence.contains("p01.csv: claimed 3 times and never finished"), "the run names the file given up and why\n{evidence}");
    let row = given_up("p01.csv");
    assert!(row[0].starts_with("failed 4 run ") && row[0].contains("claimed 3 times and never finished"), "{row:?}\n{evidence}");
    let loaded = db.texts(&format!("SELECT string_agg(file_key, ',' ORDER BY file_key) FROM {}.etl_files", db.schema));
    assert_eq!(loaded, ["prices/p00.csv,prices/p02.csv"], "the file given up is not loaded, the others are\n{evidence}");
    let recorded = db.texts(&format!(
        "SELECT r.status || ' / ' || s.status || ' ' || s.rows_read || ': ' || coalesce(s.error, '') FROM {0}.etl_runs r JOIN {0}.etl_run_stages s USING (run_id)",
        db.schema
    ));
    assert_eq!(recorded.len(), 1, "{recorded:?}\n{evidence}");
    assert!(recorded[0].starts_with("failed / failed 2000: 1 file(s) failed: prices/p01.csv: claimed 3 times"), "the run and its stage recorded failed, with the file: {recorded:?}\n{evidence}");
    // The run's report gives each file its word: the one given up `failed`, not `not_loaded`.
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{evidence}"));
    let words: Vec<String> = report["stages"][0]["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files in the report\n{evidence}"))
        .iter()
        .map(|f| format!("{} {}", f["file"].as_str().unwrap_or_default().rsplit('/').next().unwrap(), f["status"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(words, ["p00.csv loaded", "p01.csv failed", "p02.csv loaded"], "{evidence}");

    // A worker: the next run queues the set again and claims p00 (loaded already), waiting on
    // the lock; its p01 dies thrice; a worker claims it first and gives it up.
    db.exec(&format!("SELECT pg_advisory_lock({key})"));
    let running = start_run();
    let latest = format!("run_id = (SELECT max(run_id) FROM {queue})");
    wait_until(&db, &format!("SELECT count(*) FROM {queue} WHERE {latest} AND file_key = 'prices/p00.csv' AND state = 'running'"), "the second run's claim of p00", String::new);
    died_thrice("p01.csv");
    // p02 twice: the worker's third claim of it is within the budget, and loads it.
    died("p02.csv", 2);
    let mut worker = Worker::start(&spec, &db, "w1", "2s", dir.path());
    wait_until(&db, &format!("SELECT count(*) FROM {queue} WHERE {latest} AND file_key = 'prices/p01.csv' AND state = 'failed'"), "the worker giving p01 up", || worker.log());
    wait_until(&db, &format!("SELECT count(*) FROM {queue} WHERE {latest} AND file_key = 'prices/p02.csv' AND worker = 'w1' AND attempts = 3"), "the worker's claim of p02", || worker.log());
    db.exec(&format!("SELECT pg_advisory_unlock({key})"));
    let out = running.join().unwrap();
    assert_eq!(worker.wait(), Some(0), "{}", worker.log());
    let evidence = format!("{}\n{}", out.evidence(), worker.log());
    assert_eq!(out.code, 1, "{evidence}");
    assert!(out.evidence().contains("p01.csv: claimed 3 times and never finished"), "{evidence}");
    let row = given_up("p01.csv");
    assert!(row[0].starts_with("failed 4 w1: ") && row[0].contains("claimed 3 times and never finished"), "the worker gave it up: {row:?}\n{evidence}");
    let row = given_up("p02.csv");
    assert!(row[0].starts_with("done 3 w1"), "a worker's third claim of a file is not given up: {row:?}\n{evidence}");
    assert!(!evidence.contains("p02.csv: claimed"), "{evidence}");

    // The file itself is sound: a run left alone loads it, and the table is whole.
    let out = distribute(&spec, &db, "2s");
    assert_eq!(out.code, 0, "{}", out.evidence());
    let ledger = db.texts(&format!("SELECT count(*)::text || ' ' || count(DISTINCT file_key)::text FROM {}.etl_files", db.schema));
    assert_eq!(ledger, ["3 3"], "each file once in the ledger\n{}", out.evidence());
    let table = db.texts(&format!("SELECT count(*)::text || ' ' || (sum(price) * 100)::bigint::text FROM {}.price", db.schema));
    assert_eq!(table, [format!("{} {}", rows.0, rows.1)], "the rows and their sum to the cent\n{}", out.evidence());
}
