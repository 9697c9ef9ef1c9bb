//! File sets (`source.files`): a business date's files, plain and compressed, each loaded once
//! (the ledger `etl_files`); re-runs, a late file and a restated one; missing sets, waiting for
//! one; values taken from the path. On the real S3 server and PostgreSQL the scripts start.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::extract::generate;
use crate::run::{TestBucket, TestDb, s3_client};
use crate::util::{Output, etl};

const DAYS: [&str; 3] = ["2025-12-22", "2025-12-23", "2025-12-24"];

fn packed(name: &str, bytes: &[u8]) -> Vec<u8> {
    if name.ends_with(".gz") {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    } else if name.ends_with(".zst") {
        zstd::encode_all(bytes, 3).unwrap()
    } else {
        bytes.to_vec()
    }
}

/// One day's layout: its assets file and its trades in 5 parts, each part's compression its
/// own. Returns (key -> bytes as stored) and the planted invalid lines as (key, line) -> reason.
struct Day {
    files: BTreeMap<String, Vec<u8>>,
    planted: BTreeMap<(String, u64), String>,
    valid_assets: u64,
    valid_trades: u64,
}

fn day(i: usize) -> Day {
    let date = DAYS[i];
    let data = generate(150, 1_000, 0.03, 70 + i as u64);
    let exp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data.path().join("expected.json")).unwrap()).unwrap();
    let planted_text = std::fs::read_to_string(data.path().join("invalid_rows.csv")).unwrap();
    let mut by_file: BTreeMap<(String, u64), String> = BTreeMap::new();
    for l in planted_text.lines().skip(1) {
        let f: Vec<&str> = l.splitn(5, ',').collect();
        by_file.insert((f[0].to_string(), f[1].parse().unwrap()), f[2].to_string());
    }
    let mut files = BTreeMap::new();
    let mut planted = BTreeMap::new();
    let ext = ["", ".gz", ".zst"][i];
    let assets_key = format!("assets/{date}.csv{ext}");
    files.insert(assets_key.clone(), packed(&assets_key, &std::fs::read(data.path().join("account_assets.csv")).unwrap()));
    for ((file, line), reason) in &by_file {
        if file == "account_assets.csv" {
            planted.insert((assets_key.clone(), *line), reason.clone());
        }
    }
    // The trades split into 5 parts, each with the header; a trade's line in its part.
    let text = std::fs::read_to_string(data.path().join("trades.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let per = rows.len().div_ceil(5);
    for (p, chunk) in rows.chunks(per).enumerate() {
        let ext = ["", ".gz", ".zst", ".gz", ""][(p + i) % 5];
        let key = format!("trades/{date}/part-{:04}.csv{ext}", p + 1);
        let body = format!("{header}\n{}\n", chunk.join("\n"));
        files.insert(key.clone(), packed(&key, body.as_bytes()));
        for (j, _) in chunk.iter().enumerate() {
            let original = (p * per + j + 2) as u64;
            if let Some(reason) = by_file.get(&("trades.csv".to_string(), original)) {
                planted.insert((key.clone(), j as u64 + 2), reason.clone());
            }
        }
    }
    Day {
        files,
        planted,
        valid_assets: exp["account_assets.csv"]["valid"].as_u64().unwrap(),
        valid_trades: exp["trades.csv"]["valid"].as_u64().unwrap(),
    }
}

fn put(bucket: &TestBucket, key: &str, bytes: &[u8]) {
    let s3 = s3_client(&bucket.endpoint);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(s3.put_object().bucket(&bucket.name).key(key).body(aws_sdk_s3::primitives::ByteStream::from(bytes.to_vec())).send()).unwrap();
}

fn run_daily(db: &TestDb, bucket: &TestBucket, date: &str) -> (Output, serde_json::Value) {
    let sets = format!("connections.db={{type: postgres, url: '{}', schema: {}}}", db.url, db.schema);
    let env = bucket.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = etl(&["run", "specs/daily.yaml", "--date", date, "--set", &sets, "--output", "json"], &env);
    let report = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not a JSON report: {e}\n{}", out.evidence()));
    (out, report)
}

/// `(file status, rows read, valid, rejected)` of each file of each stage by its key in the
/// bucket, checking that every file read balances.
fn files_of(report: &serde_json::Value, bucket: &TestBucket, out: &Output) -> BTreeMap<String, (String, u64, u64, u64)> {
    let mut all = BTreeMap::new();
    for st in report["stages"].as_array().unwrap() {
        for f in st["files"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let n = |k: &str| f[k].as_u64().unwrap();
            let (read, valid, rejected) = (n("rows_read"), n("rows_valid"), n("rows_rejected"));
            assert_eq!(read, valid + rejected, "read = loaded + rejected for {f}\n{}", out.evidence());
            let name = f["file"].as_str().unwrap();
            let key = name.strip_prefix(&format!("s3://{}/", bucket.name)).unwrap_or(name);
            all.insert(key.to_string(), (f["status"].as_str().unwrap().to_string(), read, valid, rejected));
        }
    }
    all
}

/// A valid line of a day's file (not planted), split into fields, with the header.
fn valid_line(d: &Day, key: &str) -> (usize, Vec<String>, Vec<String>) {
    let text = String::from_utf8(d.files[key].clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (i, line) = lines.iter().enumerate().skip(1).find(|(n, l)| !d.planted.contains_key(&(key.to_string(), *n as u64 + 1)) && !l.contains('"')).unwrap();
    (i, lines[0].split(',').map(str::to_string).collect(), line.split(',').map(str::to_string).collect())
}

#[test]
fn three_days_of_file_sets_load_each_file_exactly_once() {
    let days: Vec<Day> = (0..3).map(day).collect();
    let empty = tempfile::tempdir().unwrap();
    let bucket = TestBucket::with_files("daily", empty.path(), &[]);
    for d in &days {
        for (k, v) in &d.files {
            put(&bucket, k, v);
        }
    }
    let db = TestDb::new("daily");
    for (i, d) in days.iter().enumerate() {
        let (out, report) = run_daily(&db, &bucket, DAYS[i]);
        out.expect_code(4);
        let stage = |name: &str| report["stages"].as_array().unwrap().iter().find(|s| s["stage"] == name).cloned().unwrap();
        assert_eq!(stage("assets")["rows_valid"].as_u64(), Some(d.valid_assets), "day {}\n{}", DAYS[i], out.evidence());
        assert_eq!(stage("trades")["rows_valid"].as_u64(), Some(d.valid_trades), "day {}\n{}", DAYS[i], out.evidence());
        let files = files_of(&report, &bucket, &out);
        assert_eq!(files.len(), 6, "one assets file and 5 trade parts\n{}", out.evidence());
        assert!(files.values().all(|f| f.0 == "loaded"), "{files:?}\n{}", out.evidence());
        // Every invalid row is a reject naming its file and its line in that file.
        let run_id = report["run_id"].as_i64().unwrap();
        let got: BTreeSet<(String, u64)> = db
            .texts(&format!("SELECT DISTINCT source || '|' || line FROM etl_rejects WHERE run_id = {run_id} AND severity = 'error'"))
            .iter()
            .map(|l| {
                let (file, line) = l.rsplit_once('|').unwrap();
                let key = file.split_once(&format!("{}/", bucket.name)).map(|(_, k)| k.to_string()).unwrap_or_else(|| file.to_string());
                (key, line.parse().unwrap())
            })
            .collect();
        let want: BTreeSet<(String, u64)> = d.planted.keys().cloned().collect();
        assert_eq!(got, want, "day {}: the rejects are the planted lines, each in its own file\n{}", DAYS[i], out.evidence());
        // The ledger: one row per file, with the SHA-256 of the bytes stored.
        let ledger = db.texts(&format!("SELECT file_key || '|' || digest || '|' || rows_read FROM etl_files WHERE run_id = {run_id} ORDER BY file_key"));
        let expected: Vec<String> = d
            .files
            .iter()
            .map(|(k, v)| {
                let read = files[k].1;
                format!("{k}|{}|{read}", Sha256::digest(v).iter().map(|b| format!("{b:02x}")).collect::<String>())
            })
            .collect();
        assert_eq!(ledger, expected, "the ledger of {}\n{}", DAYS[i], out.evidence());
    }

    // Re-running a day loads nothing: every file is reported as loaded already.
    let (out, report) = run_daily(&db, &bucket, DAYS[0]);
    out.expect_code(0);
    let files = files_of(&report, &bucket, &out);
    assert_eq!(files.len(), 6, "{}", out.evidence());
    assert!(files.values().all(|f| f.0 == "already_loaded" && f.1 == 0), "{files:?}\n{}", out.evidence());
    let runs = db.count(&format!("SELECT count(*) FROM etl_files WHERE stage = 'trades' AND origin LIKE '%/{}'", bucket.name));
    assert_eq!(runs, 15, "the ledger did not grow\n{}", out.evidence());

    // A late sixth part for the first day: only it is read.
    let (_, header, mut row) = valid_line(&days[0], "trades/2025-12-22/part-0001.csv");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    row[col("traded_id")] = "LATE000001".into();
    let good = row.join(",");
    row[col("traded_id")] = "LATE000002".into();
    row[col("traded_amount")] = "1.00".into();
    let late = format!("{}\n{good}\n{}\n", header.join(","), row.join(","));
    put(&bucket, "trades/2025-12-22/part-0006.csv.gz", &packed("x.gz", late.as_bytes()));
    let (out, report) = run_daily(&db, &bucket, DAYS[0]);
    out.expect_code(4);
    let files = files_of(&report, &bucket, &out);
    assert_eq!(
        files.get("trades/2025-12-22/part-0006.csv.gz").map(|f| (f.0.as_str(), f.1, f.2, f.3)),
        Some(("loaded", 2, 1, 1)),
        "{files:?}\n{}",
        out.evidence()
    );
    assert_eq!(files.values().filter(|f| f.0 == "already_loaded").count(), 6, "{files:?}\n{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade WHERE traded_id LIKE 'LATE%'", db.schema)), 1, "{}", out.evidence());

    // A restated part (same key, new content) is read again and its change applied.
    let key = "trades/2025-12-23/part-0005.csv";
    let (line_no, header, mut row) = valid_line(&days[1], key);
    let traded_id = row[header.iter().position(|h| h == "traded_id").unwrap()].clone();
    row[header.iter().position(|h| h == "order_remark").unwrap()] = "restated".into();
    let text = String::from_utf8(days[1].files[key].clone()).unwrap();
    let mut changed: Vec<String> = text.lines().map(str::to_string).collect();
    changed[line_no] = row.join(",");
    put(&bucket, key, format!("{}\n", changed.join("\n")).as_bytes());
    let (out, report) = run_daily(&db, &bucket, DAYS[1]);
    let files = files_of(&report, &bucket, &out);
    let part = &files[key];
    assert_eq!(part.0, "loaded", "{files:?}\n{}", out.evidence());
    assert!(part.1 > 100, "the restated file is read whole\n{}", out.evidence());
    assert_eq!(files.values().filter(|f| f.0 == "loaded").count(), 1, "only the restated file\n{files:?}\n{}", out.evidence());
    assert_eq!(
        db.texts(&format!("SELECT order_remark FROM {}.trade WHERE traded_id = '{traded_id}'", db.schema)),
        ["restated"],
        "{}",
        out.evidence()
    );

    // `--force` reads every file of the set again.
    let sets = format!("connections.db={{type: postgres, url: '{}', schema: {}}}", db.url, db.schema);
    let env = bucket.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = etl(&["run", "specs/daily.yaml", "--date", DAYS[2], "--set", &sets, "--force", "--output", "json"], &env);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let files = files_of(&report, &bucket, &out);
    assert!(files.values().all(|f| f.0 == "loaded"), "{files:?}\n{}", out.evidence());
}

/// A spec over local day folders, its trades' date taken from the path.
fn dated_spec(dir: &Path, source_extra: &str) -> std::path::PathBuf {
    let head = crate::util::spec_head("dated", dir.display());
    let spec = format!(
        "{head}stages:
  prices:
    source: {{ connection: files, files: \"prices/{{day}}/{{{{ run.date }}}}*.csv\"{source_extra} }}
    target: {{ connection: db, table: price, key: [day, code] }}
    columns:
      day: {{ type: date, from_path: day }}
      code: {{ type: string }}
      price: {{ type: \"decimal(10,2)\", min: 0 }}
",
    );
    let path = dir.join("dated.yaml");
    std::fs::write(&path, spec).unwrap();
    path
}

fn run_dated(db: &TestDb, spec: &Path, date: &str) -> Output {
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    etl(&["run", spec.to_str().unwrap(), "--date", date], &[("ETL_TEST_DATABASE_URL", &url), ("SCHEMA", &db.schema)])
}

#[test]
fn a_column_takes_its_value_from_the_path_and_a_missing_set_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (day, rows) in [("2025-12-22", "A,1.50\nB,2.00\n"), ("2025-12-23", "A,1.75\nB,-1\n")] {
        std::fs::create_dir_all(dir.path().join("prices").join(day)).unwrap();
        std::fs::write(dir.path().join(format!("prices/{day}/2026-01-05-close.csv")), format!("code,price\n{rows}")).unwrap();
    }
    let db = TestDb::new("dated");
    let spec = dated_spec(dir.path(), "");
    let out = run_dated(&db, &spec, "2026-01-05");
    out.expect_code(4);
    assert_eq!(
        db.texts(&format!("SELECT day::text || ' ' || code || ' ' || price::text FROM {}.price ORDER BY 1", db.schema)),
        ["2025-12-22 A 1.50", "2025-12-22 B 2.00", "2025-12-23 A 1.75"],
        "{}",
        out.evidence()
    );
    let rejects = db.texts("SELECT source || ':' || line || ':' || rule FROM etl_rejects WHERE stage = 'prices' AND source LIKE '%2025-12-23%' ORDER BY run_id DESC LIMIT 1");
    assert!(rejects[0].ends_with("prices/2025-12-23/2026-01-05-close.csv:3:min"), "{rejects:?}\n{}", out.evidence());

    // No file for the date: exit 3, naming the pattern and the date.
    let out = run_dated(&db, &spec, "2026-01-06");
    out.expect_code(3);
    assert!(out.stderr.contains("no file matches prices/{day}/2026-01-06*.csv for 2026-01-06"), "{}", out.evidence());
    // `on_missing: skip`: the run goes on.
    let spec = dated_spec(dir.path(), ", on_missing: skip");
    run_dated(&db, &spec, "2026-01-06").expect_code(0);
    // A wait whose time has passed today: missing at once.
    let spec = dated_spec(dir.path(), ", wait: { until: \"00:00\" }");
    let started = std::time::Instant::now();
    let out = run_dated(&db, &spec, "2026-01-06");
    out.expect_code(3);
    assert!(started.elapsed().as_secs() < 20 && out.stderr.contains("looked 1 time"), "{}", out.evidence());
    let last_run = || db.texts("SELECT status FROM etl_runs WHERE spec_name = 'dated' ORDER BY run_id DESC LIMIT 1").remove(0);
    assert_eq!(last_run(), "missing", "a set with no file and no wait left is recorded `missing`\n{}", out.evidence());
    // A wait that ends with no file: `late`, after looking more than once.
    let until = (chrono::Utc::now() + chrono::Duration::seconds(3)).format("%H:%M:%S").to_string();
    if until.as_str() > "00:01:00" {
        let spec = dated_spec(dir.path(), &format!(", wait: {{ until: \"{until}\", poll: 1s }}"));
        let out = run_dated(&db, &spec, "2026-01-08");
        out.expect_code(3);
        assert!(!out.stderr.contains("looked 1 time"), "it looked again while it waited\n{}", out.evidence());
        assert_eq!(last_run(), "late", "{}", out.evidence());
    }
    // A wait until a little later: a file that arrives meanwhile is loaded.
    let until = (chrono::Utc::now() + chrono::Duration::seconds(40)).format("%H:%M:%S").to_string();
    if until.as_str() > "00:01:00" {
        let spec = dated_spec(dir.path(), &format!(", wait: {{ until: \"{until}\", poll: 1s }}"));
        let late = dir.path().join("prices/2025-12-24");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(3));
            std::fs::create_dir_all(&late).unwrap();
            std::fs::write(late.join("2026-01-07.csv.tmp"), "code,price\nC,3.00\n").unwrap();
            std::fs::rename(late.join("2026-01-07.csv.tmp"), late.join("2026-01-07.csv")).unwrap();
        });
        let out = run_dated(&db, &spec, "2026-01-07");
        writer.join().unwrap();
        out.expect_code(0);
        assert_eq!(db.count(&format!("SELECT count(*) FROM {}.price WHERE day = '2025-12-24' AND code = 'C'", db.schema)), 1, "{}", out.evidence());
    }
}

#[test]
fn file_set_mistakes_are_spec_errors_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "version: 1
name: bad_sets
connections:
  files: { type: local, path: '.' }
  db: { type: duckdb, path: x.duckdb }
stages:
  a:
    source: { connection: files, key: a.csv, files: 'a/*.csv' }
    target: { connection: db, table: a, mode: replace, key: [x] }
    columns: { x: { type: int32 } }
  b:
    source: { connection: files, files: 'b/{day/*.csv', select: new }
    target: { connection: db, table: b, mode: replace }
    columns: { x: { type: int32 } }
  c:
    source: { connection: files, key: c.csv, on_missing: skip }
    target: { connection: db, table: c, key: [x] }
    columns: { x: { type: int32 }, d: { type: date, from_path: day } }
  e:
    source: { connection: files, files: 'e/{dy}/*.csv', wait: { until: '25:00', poll: 0s } }
    target: { connection: db, table: e, key: [x] }
    columns: { x: { type: int32 }, d: { type: date, from_path: day } }
";
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, spec).unwrap();
    let out = etl(&["validate-spec", path.to_str().unwrap()], &[]);
    out.expect_code(2);
    for says in [
        "stage `a` names both a `key` and `files`",
        "the `files` pattern of stage `b`: the `{` at character 3 is never closed",
        "stage `b` would replace its table with only the files it has not loaded yet",
        "`on_missing` is for a set of files, and stage `c` reads one `key`",
        "column `d` takes `day` from the path, and stage `c` reads one `key`",
        "the `files` pattern of stage `e` does not capture",
        "`25:00` is not a time of day",
        "`0s` is not a duration",
    ] {
        assert!(out.stderr.contains(says), "missing: {says}\n{}", out.evidence());
    }
}

#[test]
fn a_set_loads_into_a_duckdb_target_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a-1.csv"), "x,y\n1,one\n2,two\n").unwrap();
    std::fs::write(dir.path().join("in/a-2.csv"), "x,y\n3,three\n1,uno\n").unwrap();
    let spec = "version: 1
name: duck_sets
connections:
  files: { type: local, path: in }
  db: { type: duckdb, path: out.duckdb }
stages:
  a:
    source: { connection: files, files: 'a-*.csv' }
    target: { connection: db, table: a, key: [x] }
    columns: { x: { type: int32 }, y: { type: string } }
";
    let path = dir.path().join("duck.yaml");
    std::fs::write(&path, spec).unwrap();
    let out = etl(&["run", path.to_str().unwrap(), "--output", "json"], &[]);
    // Key 1 is in both files: the second is a duplicate of the first, in the first file.
    out.expect_code(4);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["stages"][0]["rows_valid"], 3, "{}", out.evidence());
    let out = etl(&["run", path.to_str().unwrap(), "--output", "json"], &[]);
    out.expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let statuses: Vec<&str> = report["stages"][0]["files"].as_array().unwrap().iter().map(|f| f["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["already_loaded", "already_loaded"], "{}", out.evidence());
}

/// A set is read in as few scans as its headers allow: files sharing a header in one, a file
/// whose header orders the columns otherwise in one of its own, and one with a column named
/// `filename` (the name a scan of several files adds) alone. Each line still ends in its place:
/// its file's captures, and a malformed or invalid line a reject naming its file and line.
#[test]
fn a_set_read_in_few_scans_keeps_each_line_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/b-1.csv"), "x,y\n1,one\n2,two,extra\n3,three\n").unwrap();
    std::fs::write(dir.path().join("in/b-2.csv"), "x,y\n4,four\n5\n6,six\n").unwrap();
    std::fs::write(dir.path().join("in/b-3.csv"), "y,x\nseven,7\neight,oops\n").unwrap();
    std::fs::write(dir.path().join("in/b-4.csv"), "x,y,filename\n9,nine,f\n").unwrap();
    std::fs::write(dir.path().join("in/b-5.csv"), "x,y\n10,ten\n").unwrap();
    let spec = "version: 1
name: scans
connections:
  files: { type: local, path: in }
  db: { type: duckdb, path: out.duckdb }
stages:
  b:
    source: { connection: files, files: 'b-{n}.csv' }
    target: { connection: db, table: b, key: [x] }
    columns: { x: { type: int32 }, y: { type: string }, n: { type: int32, from_path: n } }
analytics:
  rows: { connection: db, sql: \"SELECT string_agg(x || ':' || y || ':' || n, ' ' ORDER BY x) FROM b\" }
";
    let path = dir.path().join("scans.yaml");
    std::fs::write(&path, spec).unwrap();
    let rejects = dir.path().join("rejects.csv");
    let out = etl(&["run", path.to_str().unwrap(), "--output", "json", "--rejects-out", rejects.to_str().unwrap()], &[]);
    out.expect_code(4);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let files: Vec<String> = report["stages"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} {}/{}/{}", f["file"].as_str().unwrap_or_default().rsplit('/').next().unwrap(), f["rows_read"], f["rows_valid"], f["rows_rejected"]))
        .collect();
    assert_eq!(files, ["b-1.csv 3/2/1", "b-2.csv 3/2/1", "b-3.csv 2/1/1", "b-4.csv 1/1/0", "b-5.csv 1/1/0"], "{}", out.evidence());
    assert_eq!(
        report["analytics"][0]["rows"][0][0],
        "1:one:1 3:three:1 4:four:2 6:six:2 7:seven:3 9:nine:4 10:ten:5",
        "each row with its own file's capture\n{}",
        out.evidence()
    );
    let text = std::fs::read_to_string(&rejects).unwrap().replace(&format!("{}/", dir.path().display()), "");
    let got: Vec<String> = text.lines().skip(1).map(|l| l.split(',').take(5).collect::<Vec<_>>().join(",")).collect();
    assert_eq!(
        got,
        [r#""b","in/b-1.csv","3",,"csv""#, r#""b","in/b-2.csv","3","y","csv""#, r#""b","in/b-3.csv","3","x","type""#],
        "{text}\n{}",
        out.evidence()
    );
}

/// `atomicity: file`: each file of a set commits on its own. A file over the error budget is
/// rolled back alone (the one-transaction stage loads nothing), the files around it load, the
/// stage's record adds up what committed; once the file is fixed, the next run loads only it.
#[test]
fn a_set_committed_file_by_file_keeps_the_files_that_load_when_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("prices")).unwrap();
    for (name, rows) in [("a", "A,1.00\nB,2.00\n"), ("b", "C,3.00\nD,-1\n"), ("c", "E,5.00\n")] {
        std::fs::write(dir.path().join(format!("prices/{name}.csv")), format!("code,price\n{rows}")).unwrap();
    }
    let spec = |atomicity: &str| {
        let path = dir.path().join(format!("{atomicity}.yaml"));
        let head = crate::util::spec_head(&format!("by_{atomicity}"), dir.path().display());
        std::fs::write(
            &path,
            format!(
                "{head}stages:
  prices:
    source: {{ connection: files, files: \"prices/*.csv\", atomicity: {atomicity} }}
    target: {{ connection: db, table: price, key: [code] }}
    max_rejects: 0
    columns:
      code: {{ type: string }}
      price: {{ type: \"decimal(10,2)\", min: 0 }}
"
            ),
        )
        .unwrap();
        path
    };
    let run = |db: &TestDb, spec: &Path| {
        let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
        etl(&["run", spec.to_str().unwrap(), "--output", "json", "-v"], &[("ETL_TEST_DATABASE_URL", &url), ("SCHEMA", &db.schema)])
    };
    let prices = |db: &TestDb| db.texts(&format!("SELECT code || ' ' || price::text FROM {}.price ORDER BY 1", db.schema));
    // The stage's one transaction: the file over budget refuses the whole set.
    let (whole, by_file) = (TestDb::new("atomic_stage"), TestDb::new("atomic_file"));
    let out = run(&whole, &spec("stage"));
    out.expect_code(5);
    // (Its table was created in that transaction: it is gone with it.)
    assert_eq!(whole.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'price'", whole.schema)), 0, "{}", out.evidence());
    // File by file: a and c load, b is rolled back alone.
    let file_spec = spec("file");
    let out = run(&by_file, &file_spec);
    out.expect_code(5);
    assert_eq!(prices(&by_file), ["A 1.00", "B 2.00", "E 5.00"], "{}", out.evidence());
    let ledger = |db: &TestDb| db.texts(&format!("SELECT file_key || ' ' || rows_loaded FROM etl_files WHERE spec_name = 'by_file' AND target_table LIKE '%{}%' ORDER BY run_id, file_key", db.schema));
    assert_eq!(ledger(&by_file), ["prices/a.csv 2", "prices/c.csv 1"], "{}", out.evidence());
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    let stage = &report["stages"][0];
    assert_eq!((stage["rows_read"].as_u64(), stage["rows_rejected"].as_u64(), stage["status"].as_str()), (Some(5), Some(1), Some("over_budget")), "{}", out.evidence());
    assert_eq!(stage["loaded"]["inserted"].as_u64(), Some(3), "{}", out.evidence());
    let run_id = by_file.texts("SELECT max(run_id)::text FROM etl_runs WHERE spec_name = 'by_file'").remove(0);
    let recorded = by_file.texts(&format!("SELECT status || ' ' || rows_read || ' ' || rows_inserted || ' ' || rows_rejected FROM etl_run_stages WHERE run_id = {run_id}"));
    assert_eq!(recorded, ["over_budget 5 3 1"], "the stage's one record adds up its files\n{}", out.evidence());
    let rejects = by_file.texts(&format!("SELECT source || ':' || line || ':' || rule FROM etl_rejects WHERE run_id = {run_id}"));
    assert!(rejects.len() == 1 && rejects[0].ends_with("prices/b.csv:3:min"), "{rejects:?}\n{}", out.evidence());
    // The same through the work queue (`--distribute`, the run its only loader): the file over
    // its budget is reported not loaded, the others loaded.
    let queued = TestDb::new("atomic_queued");
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    let out = etl(&["run", file_spec.to_str().unwrap(), "--distribute", "--output", "json", "-v"], &[("ETL_TEST_DATABASE_URL", &url), ("SCHEMA", &queued.schema)]);
    out.expect_code(5);
    assert_eq!(prices(&queued), ["A 1.00", "B 2.00", "E 5.00"], "{}", out.evidence());
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    let files: Vec<String> = report["stages"][0]["files"].as_array().unwrap().iter().map(|f| format!("{} {}", f["file"].as_str().unwrap_or("").rsplit('/').next().unwrap_or(""), f["status"].as_str().unwrap_or(""))).collect();
    assert_eq!(files, ["a.csv loaded", "b.csv not_loaded", "c.csv loaded"], "{}", out.evidence());
    // b fixed: the next run loads b alone.
    std::fs::write(dir.path().join("prices/b.csv"), "code,price\nC,3.00\nD,4.00\n").unwrap();
    let out = run(&by_file, &file_spec);
    out.expect_code(0);
    assert_eq!(prices(&by_file), ["A 1.00", "B 2.00", "C 3.00", "D 4.00", "E 5.00"], "{}", out.evidence());
    assert_eq!(ledger(&by_file), ["prices/a.csv 2", "prices/c.csv 1", "prices/b.csv 2"], "{}", out.evidence());
    // Through the queue likewise: b loaded, a and c reported already loaded (read, none).
    let out = etl(&["run", file_spec.to_str().unwrap(), "--distribute", "--output", "json", "-v"], &[("ETL_TEST_DATABASE_URL", &url), ("SCHEMA", &queued.schema)]);
    out.expect_code(0);
    assert_eq!(prices(&queued), ["A 1.00", "B 2.00", "C 3.00", "D 4.00", "E 5.00"], "{}", out.evidence());
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    let files: Vec<String> = report["stages"][0]["files"].as_array().unwrap().iter().map(|f| format!("{} {} {}", f["file"].as_str().unwrap_or("").rsplit('/').next().unwrap_or(""), f["status"].as_str().unwrap_or(""), f["rows_read"])).collect();
    assert_eq!(files, ["a.csv already_loaded 0", "b.csv loaded 2", "c.csv already_loaded 0"], "{}", out.evidence());
    // Nothing new: nothing loads.
    let out = run(&by_file, &file_spec);
    out.expect_code(0);
    assert_eq!(ledger(&by_file).len(), 3, "{}", out.evidence());
    // a restated: its changed row updated, its other row left as it was (the merge compares
    // them: a file loaded on its own does not read the whole table first).
    std::fs::write(dir.path().join("prices/a.csv"), "code,price\nA,1.10\nB,2.00\n").unwrap();
    let before_b = by_file.texts(&format!("SELECT xmin::text FROM {}.price WHERE code = 'B'", by_file.schema));
    let out = run(&by_file, &file_spec);
    out.expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    let loaded = &report["stages"][0]["loaded"];
    assert_eq!((loaded["inserted"].as_u64(), loaded["updated"].as_u64(), loaded["unchanged"].as_u64()), (Some(0), Some(1), Some(1)), "{}", out.evidence());
    assert_eq!(prices(&by_file), ["A 1.10", "B 2.00", "C 3.00", "D 4.00", "E 5.00"], "{}", out.evidence());
    assert_eq!(by_file.texts(&format!("SELECT xmin::text FROM {}.price WHERE code = 'B'", by_file.schema)), before_b, "the unchanged row was written again\n{}", out.evidence());
}
