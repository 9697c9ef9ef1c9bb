//! `etl schedule` against the real PostgreSQL: jobs persist across processes, pause and resume
//! persist, a seconds-level job fires and loads end to end, two schedulers run each firing once,
//! and an invalid edited spec fails only its own firing. Each test keeps its jobs and runs in a
//! schema of its own (search_path in the URL), so parallel schedulers never see each other's jobs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::extract::generate;
use crate::run::TestDb;
use crate::util::{etl, root};

/// A spec file loading the generated assets into the test's schema on `cron`.
pub fn spec_file(db: &TestDb, data: &Path, dir: &Path, cron: &str) -> PathBuf {
    spec_with(db, data, dir, "sched", &format!("  often: {{ cron: \"{cron}\", stages: all }}\n"))
}

/// A spec file named `name` loading the generated assets into the test's schema, with these
/// `schedules:` entries.
fn spec_with(db: &TestDb, data: &Path, dir: &Path, name: &str, schedules: &str) -> PathBuf {
    let url = format!("{}?options=-c%20search_path%3D{}", db.url, db.schema);
    let text = format!(
        "version: 1\nname: {name}\nconnections:\n  files: {{ type: local, path: '{}' }}\n  db: {{ type: postgres, url: '{url}', schema: {} }}\nstages:\n  assets:\n    source: {{ connection: files, key: account_assets.csv }}\n    target: {{ connection: db, table: asset, key: [account_id] }}\n    columns:\n      account_id: {{ type: string }}\n      cash: {{ type: \"decimal(20,2)\" }}\nschedules:\n{schedules}",
        data.display(),
        db.schema
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `etl schedule start`, killed if the test ends early.
pub struct Scheduler {
    child: Child,
    log: PathBuf,
}

impl Scheduler {
    pub fn start(spec: &Path, log: PathBuf) -> Scheduler {
        Scheduler::start_with(spec, log, &[])
    }

    /// `etl schedule start --spec SPEC` with more arguments.
    pub fn start_with(spec: &Path, log: PathBuf, more: &[&str]) -> Scheduler {
        Scheduler::start_env(spec, log, more, &[])
    }

    /// [`Scheduler::start_with`] with more environment variables.
    pub fn start_env(spec: &Path, log: PathBuf, more: &[&str], env: &[(&str, &str)]) -> Scheduler {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_etl"))
            .envs(env.iter().copied())
            .env("ETL_CACHE_DIR", crate::util::cache_dir())
            .args(["schedule", "start", "--spec", spec.to_str().unwrap()])
            .args(more)
            .current_dir(root())
            .env("ETL_SCHEDULE_SYNC_SECS", "1")
            .env("NO_COLOR", "1")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Scheduler { child, log }
    }

    /// SIGTERM, then the exit code.
    pub fn stop(mut self) -> (i32, String) {
        self.terminate();
        let code = self.exit_code(Duration::from_secs(30));
        (code, self.log())
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
    }

    /// Waits for the scheduler to exit, at most `timeout`.
    fn exit_code(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the scheduler did not stop after SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", log());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Takes the advisory lock a stage loading the test's `asset` table waits for; returns the SQL
/// of its key, for `pg_advisory_unlock`.
pub fn hold_load_lock(db: &TestDb) -> String {
    let key = format!("hashtextextended('{}', 0)", format!("etl:\"{}\".\"asset\"", db.schema).replace('\'', "''"));
    db.exec(&format!("SELECT pg_advisory_lock({key})"));
    key
}

fn store_args(spec: &Path) -> Vec<String> {
    vec!["--spec".into(), spec.to_str().unwrap().into()]
}

fn sched(args: &[&str], spec: &Path) -> crate::util::Output {
    let mut a: Vec<String> = vec!["schedule".into()];
    a.extend(args.iter().map(|s| s.to_string()));
    a.extend(store_args(spec));
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    etl(&refs, &[])
}

#[test]
fn jobs_persist_and_pause_and_resume_persist() {
    let data = generate(10, 0, 0.0, 21);
    let db = TestDb::new("jobs");
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_file(&db, data.path(), dir.path(), "0 0 3 * * *");
    let out = sched(&["add", "--job-id", "daily_etl", "--etl-command", "run", "--interval", "day", "--at", "02:00"], &spec);
    out.expect_code(0);
    assert!(out.stdout.contains("every day at 02:00"), "{}", out.evidence());
    sched(&["add", "--job-id", "hourly_assets", "--etl-command", "assets", "--interval", "hour"], &spec).expect_code(0);
    // Each command is a new process: the jobs live in the database.
    let out = sched(&["list"], &spec);
    out.expect_code(0);
    let line = out.stdout.lines().find(|l| l.starts_with("daily_etl")).unwrap_or_else(|| panic!("{}", out.evidence()));
    assert!(line.contains("every day at 02:00") && line.contains("all") && line.contains("yes") && line.contains(" 02:00:00"), "{line}");
    let shown = std::fs::canonicalize(&spec).unwrap().display().to_string();
    assert!(line.contains(&shown), "the list shows each job's spec\n{line}");
    let line = out.stdout.lines().find(|l| l.starts_with("hourly_assets")).unwrap();
    assert!(line.contains("assets") && line.contains(":00:00"), "{line}");
    // A job added paused says so, and names no next run.
    let out = sched(&["add", "--job-id", "later", "--interval", "day", "--paused"], &spec);
    out.expect_code(0);
    assert!(out.stdout.contains("paused") && !out.stdout.contains("next run"), "{}", out.evidence());
    sched(&["remove", "--job-id", "later"], &spec).expect_code(0);
    // The spec may be given as every other command takes it: positionally.
    let out = etl(&["schedule", "list", spec.to_str().unwrap()], &[]);
    out.expect_code(0);
    assert!(out.stdout.contains("daily_etl"), "{}", out.evidence());
    // And as JSON, one object per job.
    let out = sched(&["list", "--output", "json"], &spec);
    out.expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    let job = doc["jobs"].as_array().unwrap().iter().find(|j| j["id"] == "daily_etl").cloned().unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(job["spec"], shown.as_str(), "{job}");
    assert_eq!(job["enabled"], true, "{job}");
    assert!(job["next_run"].as_str().is_some_and(|t| t.contains("T02:00:00")), "{job}");
    // A job naming a stage the spec lacks is refused, naming the spec's stages.
    let out = sched(&["add", "--job-id", "nope", "--etl-command", "trades", "--stages", "nosuch", "--interval", "hour"], &spec);
    out.expect_code(2);
    assert!(out.stderr.contains("no stage `nosuch`"), "{}", out.evidence());
    sched(&["pause", "--job-id", "daily_etl"], &spec).expect_code(0);
    let out = sched(&["list"], &spec);
    assert!(out.stdout.lines().any(|l| l.starts_with("daily_etl") && l.contains("paused")), "{}", out.evidence());
    sched(&["resume", "--job-id", "daily_etl"], &spec).expect_code(0);
    let out = sched(&["list"], &spec);
    assert!(out.stdout.lines().any(|l| l.starts_with("daily_etl") && l.contains(" yes ")), "{}", out.evidence());
    sched(&["remove", "--job-id", "hourly_assets"], &spec).expect_code(0);
    let out = sched(&["list"], &spec);
    assert!(!out.stdout.contains("hourly_assets"), "{}", out.evidence());
    for action in ["pause", "resume", "remove"] {
        let out = sched(&[action, "--job-id", "no_such_job"], &spec);
        out.expect_code(2);
        assert!(out.stderr.contains("no job `no_such_job`"), "{}", out.evidence());
    }
    let out = sched(&["add", "--job-id", "bad", "--interval", "hour", "--at", "02:00"], &spec);
    out.expect_code(2);
}

#[test]
fn a_seconds_job_fires_and_loads_and_pause_stops_it() {
    let data = generate(50, 0, 0.0, 22);
    let db = TestDb::new("fires");
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_file(&db, data.path(), dir.path(), "*/2 * * * * *");
    let s = Scheduler::start(&spec, dir.path().join("log"));
    let runs = format!("SELECT count(*) FROM {}.etl_runs WHERE job_id = 'often' AND status = 'succeeded'", db.schema);
    let tables = format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename IN ('etl_runs', 'asset')", db.schema);
    wait_for("a scheduled run", Duration::from_secs(30), || db.count(&tables) == 2 && db.count(&runs) >= 1, || s.log());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 50);
    // Paused, it stops firing (the scheduler re-reads the jobs every second).
    sched(&["pause", "--job-id", "often"], &spec).expect_code(0);
    std::thread::sleep(Duration::from_secs(3));
    let paused_at = db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings", db.schema));
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings", db.schema)), paused_at, "a paused job fired\n{}", s.log());
    sched(&["resume", "--job-id", "often"], &spec).expect_code(0);
    wait_for("a firing after resume", Duration::from_secs(20), || db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings", db.schema)) > paused_at, || s.log());
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("job often: succeeded"), "{log}");
    assert!(log.contains("scheduler stopped"), "{log}");
}

#[test]
fn two_schedulers_run_each_firing_once() {
    let data = generate(20, 0, 0.0, 23);
    let db = TestDb::new("replicas");
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_file(&db, data.path(), dir.path(), "*/2 * * * * *");
    // Register the jobs once, so both replicas start from the same table.
    sched(&["list"], &spec).expect_code(0);
    let a = Scheduler::start(&spec, dir.path().join("a.log"));
    let b = Scheduler::start(&spec, dir.path().join("b.log"));
    let firings = format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE status IN ('succeeded', 'rejected')", db.schema);
    let tables = format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'etl_schedule_firings'", db.schema);
    wait_for("three firings", Duration::from_secs(40), || db.count(&tables) == 1 && db.count(&firings) >= 3, || format!("{}\n{}", a.log(), b.log()));
    let (ca, la) = a.stop();
    let (cb, lb) = b.stop();
    assert_eq!((ca, cb), (0, 0), "{la}\n{lb}");
    let runs = db.count(&format!("SELECT count(*) FROM {}.etl_runs WHERE job_id = 'often'", db.schema));
    let fired = db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE status <> 'skipped'", db.schema));
    assert_eq!(runs, fired, "N firings make N runs, not 2N\n{la}\n{lb}");
    // Both replicas competed for every tick (each registered the job), and each tick was run by
    // one of them only: the ticks their logs say they fired are all different, one per firing.
    assert!(la.contains("job often: scheduled") && lb.contains("job often: scheduled"), "both replicas registered the job\n{la}\n{lb}");
    let mut ticks: Vec<&str> = la.lines().chain(lb.lines()).filter_map(|l| l.split_once("job often: firing for ").map(|(_, t)| t)).collect();
    let logged = ticks.len();
    ticks.sort_unstable();
    ticks.dedup();
    assert_eq!(ticks.len(), logged, "a tick was fired by both replicas\n{la}\n{lb}");
    assert_eq!(logged as i64, fired, "every firing is in one replica's log\n{la}\n{lb}");
    assert!(la.contains("scheduler stopped") && lb.contains("scheduler stopped"), "{la}\n{lb}");
    assert!(!la.contains("skipped") && !lb.contains("skipped"), "a firing found its own job's lock taken\n{la}\n{lb}");
}

#[test]
fn a_scheduler_woken_late_fires_the_tick_it_slept_for_and_not_the_ones_it_missed() {
    let data = generate(20, 0, 0.0, 25);
    let db = TestDb::new("late");
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_file(&db, data.path(), dir.path(), "* * * * * *");
    let s = Scheduler::start(&spec, dir.path().join("log"));
    let firings = format!("SELECT count(*) FROM {}.etl_schedule_firings", db.schema);
    let tables = format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'etl_schedule_firings'", db.schema);
    wait_for("a first firing", Duration::from_secs(30), || db.count(&tables) == 1 && db.count(&firings) >= 1, || s.log());
    // Stopped for 6 s, as a suspended machine or an overloaded one would leave it: five ticks
    // pass while its timer sleeps.
    let pid = s.child.id().to_string();
    let stopped = db.texts("SELECT now()::text").remove(0);
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    std::thread::sleep(Duration::from_secs(6));
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    let resumed = db.texts("SELECT now()::text").remove(0);
    std::thread::sleep(Duration::from_secs(3));
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
    // The tick it slept for (within a second of the stop) is fired on waking; the ones after it,
    // up to the resume, are not fired in a burst.
    let missed = db.count(&format!(
        "SELECT count(*) FROM {}.etl_schedule_firings WHERE fire_at > '{stopped}'::timestamptz + interval '1.5 seconds' AND fire_at < '{resumed}'::timestamptz - interval '0.5 seconds'",
        db.schema
    ));
    assert_eq!(missed, 0, "ticks passed while the scheduler was stopped were fired on waking\n{log}");
    // The late wake is logged, and only it (a timer on time never says so).
    let late = log.matches("the ticks since are not fired").count();
    assert!((1..=2).contains(&late), "the late wake is logged, once ({late} times)\n{log}");
    // And it goes on firing after waking.
    let after = db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE fire_at > '{resumed}'::timestamptz", db.schema));
    assert!(after >= 1, "no firing after the scheduler woke\n{log}");
}

#[test]
fn a_schedule_with_workers_distribute_queues_its_files_for_the_workers() {
    let db = TestDb::new("sched_distribute");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("prices")).unwrap();
    for f in 0..3 {
        std::fs::write(dir.path().join(format!("prices/p{f}.csv")), format!("code,price\nF{f}A,1.00\nF{f}B,2.50\n")).unwrap();
    }
    let url = format!("{}?options=-c%20search_path%3D{}", db.url, db.schema);
    let spec = dir.path().join("distributed.yaml");
    std::fs::write(
        &spec,
        format!(
            "version: 1\nname: distributed\nconnections:\n  files: {{ type: local, path: '{}' }}\n  db: {{ type: postgres, url: '{url}', schema: {} }}\nstages:\n  prices:\n    source: {{ connection: files, files: \"prices/*.csv\", atomicity: file }}\n    target: {{ connection: db, table: price, key: [code] }}\n    columns:\n      code: {{ type: string }}\n      price: {{ type: \"decimal(10,2)\" }}\nschedules:\n  often: {{ cron: \"*/2 * * * * *\", workers: distribute }}\n",
            dir.path().display(),
            db.schema
        ),
    )
    .unwrap();
    let s = Scheduler::start(&spec, dir.path().join("log"));
    let firings = format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'etl_queue'", db.schema);
    wait_for("a firing's files queued and done", Duration::from_secs(40), || db.count(&firings) == 1 && db.count(&format!("SELECT count(*) FROM {}.etl_queue WHERE state = 'done'", db.schema)) >= 3, || s.log());
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
    // The firing's run queued the set's three files and loaded them itself (no worker ran).
    let first = db.texts(&format!("SELECT string_agg(file_key || ' ' || state || ' ' || worker, ', ' ORDER BY file_key) FROM {0}.etl_queue WHERE run_id = (SELECT min(run_id) FROM {0}.etl_queue)", db.schema));
    let run = db.texts(&format!("SELECT min(run_id)::text FROM {}.etl_queue", db.schema)).remove(0);
    assert_eq!(first, [format!("prices/p0.csv done run {run}, prices/p1.csv done run {run}, prices/p2.csv done run {run}")], "{log}");
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.price", db.schema)), 6, "{log}");
}

#[test]
fn an_invalid_spec_fails_its_firing_and_the_scheduler_goes_on() {
    let data = generate(20, 0, 0.0, 24);
    let db = TestDb::new("invalid");
    let dir = tempfile::tempdir().unwrap();
    // Retries are for exit 3 (a service out of reach): an invalid spec is not tried again.
    let spec = spec_with(&db, data.path(), dir.path(), "sched", "  often: { cron: \"*/2 * * * * *\", stages: all, retries: 2, retry_delay: 1s }\n");
    let good = std::fs::read_to_string(&spec).unwrap();
    let s = Scheduler::start(&spec, dir.path().join("log"));
    let count = |status: &str| {
        let t = db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'etl_schedule_firings'", db.schema));
        if t == 0 { 0 } else { db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE status = '{status}'", db.schema)) }
    };
    wait_for("a first success", Duration::from_secs(30), || count("succeeded") >= 1, || s.log());
    std::fs::write(&spec, good.replace("type: string", "type: strng")).unwrap();
    wait_for("a failed firing", Duration::from_secs(20), || count("failed") >= 1, || s.log());
    let error = db.texts(&format!("SELECT error FROM {}.etl_schedule_firings WHERE status = 'failed' LIMIT 1", db.schema));
    assert!(error[0].contains("unknown column type `strng`"), "{error:?}");
    let attempts = db.texts(&format!("SELECT DISTINCT attempts::text FROM {}.etl_schedule_firings WHERE status = 'failed'", db.schema));
    assert_eq!(attempts, ["1"], "a failure other than exit 3 is tried once\n{}", s.log());
    let before = count("succeeded");
    std::fs::write(&spec, &good).unwrap();
    wait_for("a success after the fix", Duration::from_secs(20), || count("succeeded") > before, || s.log());
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("the spec is invalid") && log.contains("did you mean `string`?"), "the diagnostic is logged\n{log}");
}

#[test]
fn a_killed_scheduler_restarts_with_its_jobs_and_skips_the_firings_it_missed() {
    let data = generate(20, 0, 0.0, 25);
    let db = TestDb::new("restart");
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_file(&db, data.path(), dir.path(), "*/2 * * * * *");
    sched(&["add", "--job-id", "nightly", "--etl-command", "assets", "--interval", "day", "--at", "03:00"], &spec).expect_code(0);
    sched(&["pause", "--job-id", "nightly"], &spec).expect_code(0);
    let firings = |status: &str| {
        db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE status = '{status}'", db.schema))
    };
    let mut first = Scheduler::start(&spec, dir.path().join("a.log"));
    wait_for("a first firing", Duration::from_secs(30), || firings("succeeded") >= 1, || first.log());
    // SIGKILL: no graceful shutdown, no chance to write anything.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let killed_at = db.texts("SELECT (now() + interval '1 second')::text").remove(0);
    std::thread::sleep(Duration::from_secs(6));
    let restarted_at = db.texts("SELECT now()::text").remove(0);
    let second = Scheduler::start(&spec, dir.path().join("b.log"));
    let after = format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE status = 'succeeded' AND fire_at > '{restarted_at}'", db.schema);
    wait_for("a firing after the restart", Duration::from_secs(30), || db.count(&after) >= 1, || second.log());
    // The policy: a firing that fell while no scheduler ran is skipped, not run late.
    let missed = db.count(&format!(
        "SELECT count(*) FROM {}.etl_schedule_firings WHERE fire_at > '{killed_at}' AND fire_at < '{restarted_at}'",
        db.schema
    ));
    assert_eq!(missed, 0, "a missed firing was run on restart\n{}", second.log());
    // The jobs and their state survived the kill.
    let out = sched(&["list"], &spec);
    assert!(out.stdout.lines().any(|l| l.starts_with("nightly") && l.contains("paused")), "{}", out.evidence());
    assert!(out.stdout.lines().any(|l| l.starts_with("often") && l.contains("succeeded")), "{}", out.evidence());
    let (code, log) = second.stop();
    assert_eq!(code, 0, "{log}");
}

/// A job firing every 2 seconds into a new schema whose `asset` load lock the test holds, so
/// its first firing waits inside its run: the generated data, the database, the scheduler's
/// directory, the spec, and the lock's key (for `pg_advisory_unlock`).
struct HeldJob {
    _data: tempfile::TempDir,
    db: TestDb,
    dir: tempfile::TempDir,
    spec: PathBuf,
    key: String,
}

fn held_job(name: &str, seed: u64) -> HeldJob {
    let data = generate(10, 0, 0.0, seed);
    let db = TestDb::new(name);
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_file(&db, data.path(), dir.path(), "*/2 * * * * *");
    sched(&["list"], &spec).expect_code(0);
    let key = hold_load_lock(&db);
    HeldJob { _data: data, db, dir, spec, key }
}

#[test]
fn a_firing_while_the_last_one_runs_is_recorded_skipped() {
    let HeldJob { _data, db, dir, spec, key } = held_job("overlap", 27);
    let scheduler = Scheduler::start(&spec, dir.path().join("scheduler.log"));
    let firings = |status: &str| db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE status = '{status}'", db.schema));
    wait_for("a firing skipped while the first one waits", Duration::from_secs(60), || firings("skipped") > 0, || scheduler.log());
    assert_eq!(firings("succeeded"), 0, "a firing ran while the first one held the job\n{}", scheduler.log());
    db.exec(&format!("SELECT pg_advisory_unlock({key})"));
    wait_for("the first firing to finish", Duration::from_secs(60), || firings("succeeded") > 0, || scheduler.log());
    let (code, log) = scheduler.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("skipped the firing at") && log.contains("the previous one is still running"), "{log}");
    let skipped = db.texts(&format!("SELECT error FROM {}.etl_schedule_firings WHERE status = 'skipped'", db.schema));
    assert!(skipped.iter().all(|e| e == "the previous firing was still running"), "{skipped:?}");
    // A skipped firing starts no run: every run belongs to a firing that ran.
    let runs = db.count(&format!("SELECT count(*) FROM {}.etl_runs WHERE job_id = 'often'", db.schema));
    let ran = db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE status IN ('succeeded', 'rejected', 'failed') OR status IS NULL", db.schema));
    assert_eq!(runs, ran, "{log}");
}

#[test]
fn a_stopping_scheduler_waits_for_its_running_load_to_commit() {
    let HeldJob { _data, db, dir, spec, key } = held_job("grace", 31);
    let mut scheduler = Scheduler::start(&spec, dir.path().join("scheduler.log"));
    let firings = |status: &str| db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE status {status}", db.schema));
    wait_for("a firing waiting inside its run", Duration::from_secs(60), || firings("= 'running'") > 0, || scheduler.log());
    scheduler.terminate();
    wait_for("the scheduler to stop taking firings", Duration::from_secs(20), || scheduler.log().contains("waiting for running loads"), || scheduler.log());
    std::thread::sleep(Duration::from_secs(2));
    assert!(scheduler.child.try_wait().unwrap().is_none(), "the scheduler exited with a load still running\n{}", scheduler.log());
    db.exec(&format!("SELECT pg_advisory_unlock({key})"));
    let code = scheduler.exit_code(Duration::from_secs(60));
    let log = scheduler.log();
    assert_eq!(code, 0, "{log}");
    assert_eq!(firings("= 'succeeded'"), 1, "the waiting load committed before the scheduler exited\n{log}");
    assert_eq!(firings("= 'running'"), 0, "no firing is left running\n{log}");
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 10, "{log}");
    assert!(log.contains("scheduler stopped"), "{log}");
    assert!(!log.contains("past the grace period"), "no load outlived the grace period\n{log}");
}

/// A load still running when the grace period ends: the scheduler exits anyway, says how many
/// loads it left, and their transactions roll back (nothing of them is in the table).
#[test]
fn a_load_outliving_the_grace_period_is_named_and_rolled_back() {
    let HeldJob { _data, db, dir, spec, key } = held_job("graceover", 37);
    let mut scheduler = Scheduler::start_env(&spec, dir.path().join("scheduler.log"), &[], &[("ETL_SHUTDOWN_GRACE_SECS", "2")]);
    let firings = |status: &str| db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE status {status}", db.schema));
    wait_for("a firing waiting inside its run", Duration::from_secs(60), || firings("= 'running'") > 0, || scheduler.log());
    scheduler.terminate();
    let code = scheduler.exit_code(Duration::from_secs(30));
    let log = scheduler.log();
    db.exec(&format!("SELECT pg_advisory_unlock({key})"));
    assert!(log.contains("1 load(s) still running past the grace period"), "exit {code}\n{log}");
    assert!(log.contains("scheduler stopped"), "{log}");
    // The load created its table in its transaction: rolled back, there is none.
    let table = db.texts(&format!("SELECT coalesce(to_regclass('{}.asset')::text, 'none')", db.schema));
    assert_eq!(table, ["none"], "the unfinished load rolled back\n{log}");
}

/// A spec with three jobs on one tick (every 5 s), differing only in `catchup`.
fn catchup_spec(db: &TestDb, data: &Path, dir: &Path) -> PathBuf {
    let jobs = "  all_missed: { cron: \"*/5 * * * * *\", catchup: all, max_catchup: 50 }\n  latest_missed: { cron: \"*/5 * * * * *\", catchup: latest }\n  none_missed: { cron: \"*/5 * * * * *\" }\n";
    spec_with(db, data, dir, "catchup", jobs)
}

#[test]
fn firings_missed_while_no_scheduler_ran_are_made_up_on_start_as_catchup_says() {
    let data = generate(20, 0, 0.0, 28);
    let db = TestDb::new("catchup");
    let dir = tempfile::tempdir().unwrap();
    let spec = catchup_spec(&db, data.path(), dir.path());
    let q = |sql: &str| db.texts(&sql.replace("$S", &db.schema));
    let fired = |job: &str| {
        let t = db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'etl_schedule_firings'", db.schema));
        if t == 0 { 0 } else { db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE job_id = '{job}' AND status = 'succeeded'", db.schema)) }
    };
    let first = Scheduler::start(&spec, dir.path().join("a.log"));
    wait_for("a firing of each job", Duration::from_secs(60), || ["all_missed", "latest_missed", "none_missed"].iter().all(|j| fired(j) >= 1), || first.log());
    let (code, log_a) = first.stop();
    assert_eq!(code, 0, "{log_a}");
    let stopped_at = q("SELECT now()::text").remove(0);
    // At least two ticks of each job fall while no scheduler runs.
    std::thread::sleep(Duration::from_secs(12));
    let restarted_at = q("SELECT now()::text").remove(0);
    let second = Scheduler::start(&spec, dir.path().join("b.log"));
    let made_up = |job: &str| db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE job_id = '{job}' AND made_up AND status = 'succeeded'", db.schema));
    wait_for("the missed firings made up", Duration::from_secs(90), || made_up("all_missed") >= 2 && made_up("latest_missed") >= 1, || second.log());
    let on_time_after = |job: &str| {
        db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE job_id = '{job}' AND NOT made_up AND fire_at > '{restarted_at}' AND status IN ('succeeded', 'skipped')", db.schema))
    };
    wait_for("a firing on time after the restart", Duration::from_secs(60), || on_time_after("all_missed") >= 1, || second.log());
    let (code, log_b) = second.stop();
    assert_eq!(code, 0, "{log_b}");
    let evidence = format!("first scheduler:\n{log_a}\nsecond scheduler:\n{log_b}");

    // catchup: all: every tick from the first firing to the last has its firing, 5 s apart (the
    // missed ones made up), each made-up one with its own business date and a run of its own.
    let ticks = q("SELECT extract(epoch FROM fire_at)::bigint::text FROM $S.etl_schedule_firings WHERE job_id = 'all_missed' ORDER BY fire_at");
    let ticks: Vec<i64> = ticks.iter().map(|t| t.parse().unwrap()).collect();
    assert!(ticks.windows(2).all(|w| w[1] - w[0] == 5), "a tick of all_missed has no firing: {ticks:?}\n{evidence}");
    // Every tick that fell while no scheduler ran was made up (none ran on time).
    let on_time = q(&format!("SELECT count(*)::text FROM $S.etl_schedule_firings WHERE job_id = 'all_missed' AND NOT made_up AND fire_at > '{stopped_at}' AND fire_at <= '{restarted_at}'"));
    assert_eq!(on_time, ["0"], "{evidence}");
    let made_up_all = made_up("all_missed");
    assert!(made_up_all >= 2, "{evidence}");
    let dates = q("SELECT count(*)::text FROM $S.etl_schedule_firings f JOIN $S.etl_runs r ON r.run_id = f.run_id WHERE f.job_id = 'all_missed' AND f.made_up AND f.business_date = (f.fire_at AT TIME ZONE 'UTC')::date AND r.business_date = f.business_date AND r.job_id = 'all_missed'");
    assert_eq!(dates[0].parse::<i64>().unwrap(), made_up_all, "each made-up firing ran for its own date\n{evidence}");
    // Oldest first: they started in the order of their ticks.
    let by_start = q("SELECT fire_at::text FROM $S.etl_schedule_firings WHERE job_id = 'all_missed' AND made_up ORDER BY started_at");
    let by_tick = q("SELECT fire_at::text FROM $S.etl_schedule_firings WHERE job_id = 'all_missed' AND made_up ORDER BY fire_at");
    assert_eq!(by_start, by_tick, "made up oldest first\n{evidence}");
    assert!(log_b.contains("job all_missed: making up") && log_b.contains("job all_missed: making up the firing for"), "{evidence}");

    // catchup: latest: only the last missed tick; the ones before it stay missed.
    // (Only those after the first scheduler stopped: one started on a tick makes that tick up.)
    let latest = q(&format!("SELECT fire_at::text FROM $S.etl_schedule_firings WHERE job_id = 'latest_missed' AND made_up AND fire_at > '{stopped_at}'"));
    assert_eq!(latest.len(), 1, "{evidence}");
    let before = q(&format!("SELECT count(*)::text FROM $S.etl_schedule_firings WHERE job_id = 'latest_missed' AND fire_at > '{stopped_at}' AND fire_at < '{}'", latest[0]));
    assert_eq!(before, ["0"], "the ticks missed before the latest stay missed
{evidence}");
    let span = q(&format!("SELECT extract(epoch FROM '{}'::timestamptz - '{stopped_at}'::timestamptz)::text", latest[0]));
    assert!(span[0].parse::<f64>().unwrap() >= 5.0, "a tick before the latest was missed: {span:?}
{evidence}");

    // catchup: skip (the default): no missed tick is run.
    let gap = q(&format!("SELECT count(*)::text FROM $S.etl_schedule_firings WHERE job_id = 'none_missed' AND (made_up OR (fire_at > '{stopped_at}' AND fire_at <= '{restarted_at}'))"));
    assert_eq!(gap, ["0"], "{evidence}");
}

/// A free port on loopback, for a server a test starts later.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_firing_that_cannot_reach_s3_is_retried_with_backoff_and_loads_when_the_server_is_up() {
    let data = generate(30, 0, 0.0, 29);
    let db = TestDb::new("retries");
    let dir = tempfile::tempdir().unwrap();
    // An S3 server of the test's own, not started yet: the first attempts cannot connect.
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let url = format!("{}?options=-c%20search_path%3D{}", db.url, db.schema);
    let text = format!(
        "version: 1\nname: retries\nconnections:\n  lake: {{ type: s3, endpoint: '{endpoint}', bucket: retried, region: us-east-1, access_key_id: minioadmin, secret_access_key: minioadmin123 }}\n  db: {{ type: postgres, url: '{url}', schema: {} }}\nstages:\n  assets:\n    source: {{ connection: lake, key: account_assets.csv }}\n    target: {{ connection: db, table: asset, key: [account_id] }}\n    columns:\n      account_id: {{ type: string }}\n      cash: {{ type: \"decimal(20,2)\" }}\nschedules:\n  nightly: {{ cron: \"*/2 * * * * *\", retries: 6, retry_delay: 4s }}\n",
        db.schema
    );
    let spec = dir.path().join("retries.yaml");
    std::fs::write(&spec, text).unwrap();
    let s = Scheduler::start(&spec, dir.path().join("log"));
    wait_for("a first attempt that cannot connect", Duration::from_secs(60), || s.log().contains("attempt 1 of 7 failed (exit 3)"), || s.log());
    let first_failed = Instant::now();
    wait_for("a second attempt", Duration::from_secs(30), || s.log().contains("attempt 2 of 7 failed (exit 3)"), || s.log());
    // The second attempt came after the 4 s wait, not at once (the log is polled every 250 ms:
    // 3 s leaves room for that, and an attempt without the wait fails within about 0.5 s).
    let between = first_failed.elapsed();
    assert!(between >= Duration::from_secs(3), "the second attempt failed {between:?} after the first: it did not wait\n{}", s.log());
    // The server comes up, with the file.
    let mut server = Command::new("python3")
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m moto.server (scripts/install-deps.sh installs it)");
    let s3 = crate::run::s3_client_keyed(&endpoint, "minioadmin", "minioadmin123");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.block_on(s3.create_bucket().bucket("retried").send()).is_err() {
        assert!(Instant::now() < deadline, "the test's S3 server did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let body = std::fs::read(data.path().join("account_assets.csv")).unwrap();
    rt.block_on(s3.put_object().bucket("retried").key("account_assets.csv").body(aws_sdk_s3::primitives::ByteStream::from(body)).send()).unwrap();
    let retried = format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE status = 'succeeded' AND attempts > 2", db.schema);
    wait_for("the retried firing to load", Duration::from_secs(90), || db.count(&retried) >= 1, || s.log());
    // And a later firing that loads at its first attempt (its log line names no attempts).
    let at_once = format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE status = 'succeeded' AND attempts = 1", db.schema);
    wait_for("a firing that loads at its first attempt", Duration::from_secs(30), || db.count(&at_once) >= 1, || s.log());
    let (code, log) = s.stop();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code, 0, "{log}");
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 30, "{log}");
    // The first firing held its job through its retries: the ticks meanwhile were skipped, and
    // its waits doubled (4s, 8s, ...).
    let first = db.texts(&format!("SELECT attempts::text || ' ' || status FROM {}.etl_schedule_firings ORDER BY fire_at LIMIT 1", db.schema));
    assert!(first[0].ends_with(" succeeded") && first[0] != "1 succeeded", "{first:?}\n{log}");
    assert!(db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE status = 'skipped'", db.schema)) >= 1, "{log}");
    assert!(log.contains("trying again in 4s") && log.contains("trying again in 8s"), "{log}");
    // The retried firing's success says how many attempts it took; a first-attempt one says none.
    let n = first[0].split(' ').next().unwrap();
    assert!(log.lines().any(|l| l.contains(&format!("job nightly: succeeded after {n} attempts"))), "{log}");
    assert!(!log.contains("after 1 attempts"), "{log}");
    // Only exit 3 is retried: no firing's run failed for another reason.
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE status = 'failed'", db.schema)), 0, "{log}");
}
