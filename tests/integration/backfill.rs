//! `etl backfill` over a date-partitioned layout `etl-datagen --days` wrote (assets/DATE.csv and
//! trades/DATE/part-N.csv, plain, gzip and zstd), read by specs/daily.yaml from the real S3
//! server into the real PostgreSQL: one run per date, stopping at a missing date or going on with
//! --keep-going, resumed after a stop and after a kill, each date loaded once, every file's rows
//! as the generator counted them.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::{TestBucket, TestDb, s3_client};
use crate::util::{Output, etl, root};

const DATES: [&str; 3] = ["2025-12-20", "2025-12-21", "2025-12-22"];

/// The layout: 3 dates from 2025-12-20, each with 120 accounts and 900 trades in 4 parts, files
/// gzip and zstd in turn; and the generator's expected.json.
fn layout() -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_etl-datagen"))
        .args(["--out", dir.path().to_str().unwrap(), "--assets", "120", "--trades", "900", "--invalid-rate", "0.03", "--seed", "90"])
        .args(["--days", "3", "--start", DATES[0], "--files-per-day", "4", "--gzip", "--zstd"])
        .output()
        .unwrap();
    assert!(out.status.success(), "etl-datagen failed: {}", String::from_utf8_lossy(&out.stderr));
    let expected = serde_json::from_str(&std::fs::read_to_string(dir.path().join("expected.json")).unwrap()).unwrap();
    (dir, expected)
}

/// The files of a date in the layout, by key.
fn files_of(dir: &Path, date: &str) -> Vec<String> {
    let mut keys = vec![];
    for sub in ["assets", &format!("trades/{date}")] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            if sub != "assets" || name.starts_with(date) {
                keys.push(format!("{sub}/{name}"));
            }
        }
    }
    keys.sort();
    keys
}

fn upload(bucket: &TestBucket, dir: &Path, date: &str) {
    let s3 = s3_client(&bucket.endpoint);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for key in files_of(dir, date) {
        let body = std::fs::read(dir.join(&key)).unwrap();
        rt.block_on(s3.put_object().bucket(&bucket.name).key(&key).body(aws_sdk_s3::primitives::ByteStream::from(body)).send()).unwrap();
    }
}

fn backfill_args(db: &TestDb, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["backfill", "specs/daily.yaml", "--from", DATES[0], "--to", DATES[2], "--set"].map(String::from).to_vec();
    // The run records too in the test's schema (first on the search path).
    args.push(format!("connections.db={{type: postgres, url: '{}?options=-c%20search_path%3D{}', schema: {}}}", db.url, db.schema, db.schema));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn backfill(db: &TestDb, bucket: &TestBucket, extra: &[&str]) -> Output {
    let args = backfill_args(db, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = bucket.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    etl(&refs, &env)
}

/// Each date's finished runs in etl_runs: (date, status) in run order.
fn runs(db: &TestDb) -> Vec<String> {
    db.texts(&format!("SELECT business_date::text || ' ' || status FROM {}.etl_runs ORDER BY run_id", db.schema))
}

/// The ledger as (key -> (times loaded, rows loaded, rows rejected)).
fn ledger(db: &TestDb) -> BTreeMap<String, (i64, i64, i64)> {
    let rows = db.texts(&format!(
        "SELECT file_key || '|' || count(*) || '|' || sum(rows_loaded) || '|' || sum(rows_rejected) FROM {}.etl_files GROUP BY file_key ORDER BY file_key",
        db.schema
    ));
    rows.iter()
        .map(|r| {
            let f: Vec<&str> = r.split('|').collect();
            (f[0].to_string(), (f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .collect()
}

/// Every file of every date is in the ledger once, with the generator's valid and invalid counts.
fn assert_each_file_loaded_once(db: &TestDb, dir: &Path, expected: &serde_json::Value, evidence: &str) {
    let got = ledger(db);
    let mut want = BTreeMap::new();
    for date in DATES {
        for key in files_of(dir, date) {
            let f = &expected["dates"][date]["files"][&key];
            assert!(f.is_object(), "expected.json has no file {key}: {expected}");
            want.insert(key, (1, f["valid"].as_i64().unwrap(), f["invalid"].as_i64().unwrap()));
        }
    }
    assert_eq!(got, want, "each file loaded once with the generator's counts (times, loaded, rejected)\n{evidence}");
}

#[test]
fn a_backfill_stops_at_a_missing_date_goes_on_with_keep_going_and_resumes_loading_each_date_once() {
    let (dir, expected) = layout();
    let db = TestDb::new("backfill");
    let bucket = TestBucket::with_files("backfill", dir.path(), &[]);
    // The generator's layout: per date an assets file and 4 trade parts, compressed in turn.
    assert_eq!(files_of(dir.path(), DATES[0]).len(), 5);
    assert!(files_of(dir.path(), DATES[0]).iter().any(|k| k.ends_with(".gz")) && files_of(dir.path(), DATES[0]).iter().any(|k| k.ends_with(".zst")));
    upload(&bucket, dir.path(), DATES[0]);
    upload(&bucket, dir.path(), DATES[2]);

    // The 21st has no file: the backfill stops there (exit 3), and the 22nd is not run.
    let out = backfill(&db, &bucket, &[]);
    out.expect_code(3);
    assert!(out.stderr.contains(&format!("no file matches assets/{}.csv* for {}", DATES[1], DATES[1])), "names the pattern and the date\n{}", out.evidence());
    assert!(out.stderr.contains(&format!("stopped at {}: 1 date(s) not run", DATES[1])), "{}", out.evidence());
    let line = |out: &Output, date: &str| out.stdout.lines().find(|l| l.starts_with(date)).map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>()).unwrap_or_else(|| panic!("no line for {date}\n{}", out.evidence()));
    assert_eq!(line(&out, DATES[0])[1], "rejected", "{}", out.evidence());
    assert_eq!(line(&out, DATES[1])[1], "missing", "{}", out.evidence());
    assert_eq!(line(&out, DATES[2])[1], "not_run", "{}", out.evidence());
    assert_eq!(runs(&db), [format!("{} rejected", DATES[0]), format!("{} missing", DATES[1])], "one run per date run\n{}", out.evidence());

    // --keep-going: the 20th is done (skipped), the 21st fails again, the 22nd loads; exit 3.
    let out = backfill(&db, &bucket, &["--keep-going"]);
    out.expect_code(3);
    assert!(out.stderr.contains(&format!("{} (1 of 3): loaded by an earlier run, skipped", DATES[0])), "{}", out.evidence());
    assert_eq!(line(&out, DATES[0])[1], "loaded_before", "{}", out.evidence());
    assert_eq!(line(&out, DATES[1])[1], "missing", "{}", out.evidence());
    assert_eq!(line(&out, DATES[2])[1], "rejected", "{}", out.evidence());

    // The 21st arrives: the backfill runs it alone; every date is then loaded once; exit 4 (its
    // rejects).
    upload(&bucket, dir.path(), DATES[1]);
    let out = backfill(&db, &bucket, &[]);
    out.expect_code(4);
    assert_eq!([&line(&out, DATES[0])[1], &line(&out, DATES[1])[1], &line(&out, DATES[2])[1]], ["loaded_before", "rejected", "loaded_before"], "{}", out.evidence());
    let done = db.texts(&format!("SELECT business_date::text || ' ' || count(*) FROM {}.etl_runs WHERE status IN ('succeeded', 'rejected') GROUP BY business_date ORDER BY business_date", db.schema));
    assert_eq!(done, DATES.map(|d| format!("{d} 1")), "one finished run per date\n{:?}", runs(&db));
    assert_each_file_loaded_once(&db, dir.path(), &expected, &out.evidence());
    // The trades of each date are in the table (trade ids carry their date), as many as the
    // generator made valid.
    for date in DATES {
        let n = db.count(&format!("SELECT count(*) FROM {}.trade WHERE traded_id LIKE 'T{}%'", db.schema, date.replace('-', "")));
        assert_eq!(n, expected["dates"][date]["trades"]["valid"].as_i64().unwrap(), "trades of {date}\n{}", out.evidence());
    }
    // Once all is loaded, a backfill runs nothing and exits 0.
    let out = backfill(&db, &bucket, &["--output", "json"]);
    out.expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    let statuses: Vec<&str> = doc["dates"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["loaded_before"; 3], "{}", out.evidence());
    assert_eq!(runs(&db).len(), 5, "no run was started for a loaded date: {:?}", runs(&db));
}

#[test]
fn a_backfill_killed_after_its_second_date_resumes_at_the_third() {
    let (dir, expected) = layout();
    let db = TestDb::new("backfillkill");
    let bucket = TestBucket::with_files("backfillkill", dir.path(), &[]);
    upload(&bucket, dir.path(), DATES[0]);
    upload(&bucket, dir.path(), DATES[1]);
    // The third date's files have not arrived: its run waits for them (for up to 5 minutes),
    // and is killed while it waits.
    let now = chrono::Utc::now();
    let until = (now + chrono::Duration::minutes(5)).format("%H:%M:%S").to_string();
    let until = if until > now.format("%H:%M:%S").to_string() { until } else { "23:59:59".to_string() };
    let wait_set = format!("stages.assets.source.wait={{until: '{until}', poll: 1s}}");
    let wait = ["--set", wait_set.as_str()];
    let args = backfill_args(&db, &wait);
    let log = dir.path().join("backfill.log");
    let child = Command::new(env!("CARGO_BIN_EXE_etl"))
        .args(&args)
        .envs(bucket.env())
        .env("ETL_CACHE_DIR", crate::util::cache_dir())
        .env("NO_COLOR", "1")
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("backfill.err")).unwrap())
        .spawn()
        .unwrap();
    // Killed however the test ends: a backfill left waiting would hold its run's lock all day.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(child);
    let logs = || format!("{}\n{}", std::fs::read_to_string(&log).unwrap_or_default(), std::fs::read_to_string(dir.path().join("backfill.err")).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(120);
    // The column `runs` reads, not just the table: the records' migrations are applied one by
    // one, and the table exists before the one that adds the business date.
    let table = format!(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = '{}' AND table_name = 'etl_runs' AND column_name = 'business_date'",
        db.schema
    );
    loop {
        let r = if db.count(&table) == 1 { runs(&db) } else { vec![] };
        if r.len() == 3 && r[2] == format!("{} running", DATES[2]) {
            break;
        }
        assert!(child.0.try_wait().unwrap().is_none(), "the backfill ended before the kill\n{r:?}\n{}", logs());
        assert!(Instant::now() < deadline, "the third date never started\n{r:?}\n{}", logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert_eq!(runs(&db), [format!("{} rejected", DATES[0]), format!("{} rejected", DATES[1]), format!("{} running", DATES[2])], "{}", logs());

    upload(&bucket, dir.path(), DATES[2]);
    let out = backfill(&db, &bucket, &wait);
    out.expect_code(4);
    for (i, date) in DATES[..2].iter().enumerate() {
        assert!(out.stderr.contains(&format!("{date} ({} of 3): loaded by an earlier run, skipped", i + 1)), "{}", out.evidence());
    }
    assert!(out.stderr.contains(&format!("{} (3 of 3): running", DATES[2])), "{}", out.evidence());
    // The killed run is recorded abandoned by the resumed one; each date has one finished run.
    assert_eq!(
        runs(&db),
        [format!("{} rejected", DATES[0]), format!("{} rejected", DATES[1]), format!("{} abandoned", DATES[2]), format!("{} rejected", DATES[2])],
        "{}",
        out.evidence()
    );
    assert_each_file_loaded_once(&db, dir.path(), &expected, &out.evidence());
}

#[test]
fn backfill_flags_that_do_not_fit_are_refused() {
    let out = etl(&["backfill", "specs/daily.yaml", "--from", "2025-12-22", "--to", "2025-12-20"], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("--from is after --to"), "{}", out.evidence());
    let out = etl(&["backfill", "specs/daily.yaml", "--from", "2025-12-20", "--to", "2025-12-22", "--date", "2025-12-21"], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("a backfill runs every date from --from to --to"), "{}", out.evidence());
    let out = etl(&["backfill", "specs/daily.yaml", "--from", "2025-12-20", "--to", "2025-12-22", "--rejects-out", "r.csv"], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("each keeps its rejects in etl_rejects"), "{}", out.evidence());
}
