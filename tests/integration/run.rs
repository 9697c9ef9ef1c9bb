//! `etl run` end to end against the real PostgreSQL the scripts start: generated data with
//! planted invalid rows, exactness of money, re-runs, dry runs, error budgets, exit codes, and a
//! failure in the middle of a load.

use std::collections::BTreeMap;
use std::path::Path;

use sqlx::Row;

use crate::extract::generate;
use crate::util::{Output, etl};

/// A schema of its own in the test database, dropped when the test ends.
pub struct TestDb {
    pub url: String,
    pub schema: String,
    rt: tokio::runtime::Runtime,
    pool: sqlx::PgPool,
}

impl TestDb {
    pub fn new(name: &str) -> TestDb {
        let url = std::env::var("ETL_TEST_DATABASE_URL")
            .unwrap_or_else(|_| panic!("ETL_TEST_DATABASE_URL is not set: run the tests with scripts/test.sh"));
        TestDb::at(&url, name)
    }

    /// A schema of its own in the database at `url` (the Citus coordinator's, say).
    pub fn at(url: &str, name: &str) -> TestDb {
        let url = url.to_string();
        let schema = format!("t_{name}_{}", std::process::id());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let pool = rt.block_on(sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url)).unwrap();
        let db = TestDb { url, schema, rt, pool };
        db.exec(&format!("DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}", db.schema));
        db
    }

    /// Runs SQL (several statements allowed).
    pub fn exec(&self, sql: &str) {
        self.rt
            .block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&self.pool))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs SQL (several statements allowed); the server's error, if any.
    pub fn try_exec(&self, sql: &str) -> Result<(), String> {
        self.rt.block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&self.pool)).map(|_| ()).map_err(|e| e.to_string())
    }

    /// The first column of every row, as text.
    pub fn texts(&self, sql: &str) -> Vec<String> {
        self.rt
            .block_on(sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).fetch_all(&self.pool))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| r.try_get::<String, _>(0).unwrap_or_default())
            .collect()
    }

    /// One number.
    pub fn count(&self, sql: &str) -> i64 {
        self.rt
            .block_on(sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(&self.pool))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// `--set` arguments pointing small_etl.yaml's `db` at this schema and its lake at `dir`.
    pub fn sets(&self, dir: &Path) -> Vec<String> {
        vec![
            "--set".into(),
            format!("connections.db={{type: postgres, url: '{}', schema: {}}}", self.url, self.schema),
            "--set".into(),
            format!("connections.lake={{type: local, path: '{}'}}", dir.display()),
        ]
    }

    /// Runs `etl run specs/small_etl.yaml` against this schema and `dir`, plus `extra`.
    pub fn run(&self, dir: &Path, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec!["run".into(), "specs/small_etl.yaml".into()];
        args.extend(self.sets(dir));
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        etl(&refs, &[])
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let _ = self.rt.block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&self.pool));
    }
}

/// A bucket of its own on the test S3 server, holding the files of `dir`.
#[derive(Clone)]
pub struct TestBucket {
    pub name: String,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

impl TestBucket {
    pub fn with_files(name: &str, dir: &Path, files: &[&str]) -> TestBucket {
        let endpoint = std::env::var("ETL_TEST_S3_ENDPOINT").unwrap_or_else(|_| panic!("ETL_TEST_S3_ENDPOINT is not set: run the tests with scripts/test.sh"));
        let name = format!("etl-{name}-{}", std::process::id());
        let access_key = std::env::var("ETL_TEST_S3_ACCESS_KEY").unwrap_or_default();
        let secret_key = std::env::var("ETL_TEST_S3_SECRET_KEY").unwrap_or_default();
        let s3 = s3_client_keyed(&endpoint, &access_key, &secret_key);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            s3.create_bucket().bucket(&name).send().await.unwrap();
            for f in files {
                let body = aws_sdk_s3::primitives::ByteStream::from_path(dir.join(f)).await.unwrap();
                s3.put_object().bucket(&name).key(*f).body(body).send().await.unwrap();
            }
        });
        TestBucket { name, endpoint, access_key, secret_key }
    }

    /// The seed's environment variables pointing at this bucket.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("S3_ENDPOINT", self.endpoint.trim_start_matches("http://").to_string()),
            ("S3_BUCKET", self.name.clone()),
            ("S3_ACCESS_KEY", self.access_key.clone()),
            ("S3_SECRET_KEY", self.secret_key.clone()),
        ]
    }
}

/// A client of the test S3 server with its keys.
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    s3_client_keyed(endpoint, &var("ETL_TEST_S3_ACCESS_KEY"), &var("ETL_TEST_S3_SECRET_KEY"))
}

pub fn s3_client_keyed(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let creds = Credentials::new(access_key, secret_key, None, None, "test");
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(creds)
            .force_path_style(true)
            .build(),
    )
}

impl TestDb {
    /// Runs small_etl.yaml as a seed user would: S3 through the seed's environment variables,
    /// the database through `--set` (a schema of its own).
    pub fn run_s3(&self, bucket: &TestBucket, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec![
            "run".into(),
            "specs/small_etl.yaml".into(),
            "--set".into(),
            format!("connections.db={{type: postgres, url: '{}', schema: {}}}", self.url, self.schema),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let env = bucket.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        etl(&refs, &env)
    }
}

fn expected(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap()
}

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not a JSON report: {e}\n{}", out.evidence()))
}

#[test]
fn generated_data_loads_exactly_the_valid_rows_and_a_rerun_changes_nothing() {
    let data = generate(5_000, 100_000, 0.02, 42);
    let db = TestDb::new("generated");
    let bucket = TestBucket::with_files("generated", data.path(), &["account_assets.csv", "trades.csv"]);
    let rejects_file = data.path().join("rejects.csv");
    let out = db.run_s3(&bucket, &["--output", "json", "--rejects-out", rejects_file.to_str().unwrap()]);
    out.expect_code(4);
    let r = report(&out);
    let exp = expected(data.path());
    let valid_assets = exp["account_assets.csv"]["valid"].as_i64().unwrap();
    let valid_trades = exp["trades.csv"]["valid"].as_i64().unwrap();
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), valid_assets, "{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade", db.schema)), valid_trades, "{}", out.evidence());

    // etl_rejects holds exactly the planted lines, each under the rule its reason trips.
    let run_id = r["run_id"].as_i64().unwrap();
    let planted = std::fs::read_to_string(data.path().join("invalid_rows.csv")).unwrap();
    let mut want: BTreeMap<(String, i64), String> = BTreeMap::new();
    for l in planted.lines().skip(1) {
        let f: Vec<&str> = l.splitn(5, ',').collect();
        let stage = if f[0] == "trades.csv" { "trades" } else { "assets" };
        want.insert((stage.into(), f[1].parse().unwrap()), f[2].into());
    }
    let rows = db.texts(&format!(
        "SELECT stage || ',' || line || ',' || rule FROM etl_rejects WHERE run_id = {run_id} AND severity = 'error' ORDER BY 1"
    ));
    let mut got: BTreeMap<(String, i64), Vec<String>> = BTreeMap::new();
    for row in rows {
        let f: Vec<&str> = row.split(',').collect();
        got.entry((f[0].into(), f[1].parse().unwrap())).or_default().push(f[2].into());
    }
    let rule_for = |stage: &str, reason: &str| match reason {
        "bad_enum" => "enum",
        "negative_money" if stage == "assets" => "min",
        "negative_money" => "exclusive_min",
        "formula_mismatch" if stage == "assets" => "total_asset_is_sum",
        "formula_mismatch" => "traded_amount_is_product",
        "empty_required" => "not_null",
        "bad_timestamp" => "type",
        "duplicate_key" => "duplicate_key",
        "unknown_fk" => "references",
        _ => "?",
    };
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "rejected lines differ from the planted ones");
    for ((stage, line), reason) in &want {
        let rules = &got[&(stage.clone(), *line)];
        assert!(rules.iter().any(|r| r == rule_for(stage, reason)), "{stage} line {line}: planted {reason}, rejected for {rules:?}");
    }
    let csv = std::fs::read_to_string(&rejects_file).unwrap();
    assert_eq!(csv.lines().count() - 1, db.count(&format!("SELECT count(*) FROM etl_rejects WHERE run_id = {run_id}")) as usize);
    assert_eq!(
        db.count(&format!("SELECT count(*) FROM etl_run_stages WHERE run_id = {run_id} AND balanced AND rows_read = rows_inserted + rows_updated + rows_unchanged + rows_rejected")),
        2,
        "rows read = loaded + rejected, recorded for both stages"
    );

    // The same objects again: both stages are skipped as unchanged since the first run (their
    // ETags, the spec and the tables are the same), every valid row reported unchanged; with
    // --force every row is checked again and found unchanged. No row changes.
    let before = db.texts(&format!("SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM {}.trade t", db.schema));
    let out = db.run_s3(&bucket, &["--output", "json"]);
    out.expect_code(4);
    let r = report(&out);
    assert_eq!(r["stages"][0]["unchanged_since_run"], run_id, "{}", out.evidence());
    assert_eq!(r["stages"][1]["unchanged_since_run"], run_id, "{}", out.evidence());
    let out = db.run_s3(&bucket, &["--output", "json", "--force"]);
    out.expect_code(4);
    let r = report(&out);
    assert!(r["stages"][1]["unchanged_since_run"].is_null(), "{}", out.evidence());
    assert!(r["stages"][1]["source"].as_str().unwrap().starts_with("s3://"), "{}", out.evidence());
    assert!(r["stages"][1]["etag"].is_string(), "the ETag is recorded\n{}", out.evidence());
    for (i, valid) in [(0, valid_assets), (1, valid_trades)] {
        let loaded = &r["stages"][i]["loaded"];
        assert_eq!(loaded["inserted"], 0, "{}", out.evidence());
        assert_eq!(loaded["updated"], 0, "{}", out.evidence());
        assert_eq!(loaded["unchanged"], valid, "{}", out.evidence());
    }
    let after = db.texts(&format!("SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM {}.trade t", db.schema));
    assert_eq!(before, after);
}

fn write(dir: &Path, assets: &str, trades: &str) {
    std::fs::write(dir.join("account_assets.csv"), assets).unwrap();
    std::fs::write(dir.join("trades.csv"), trades).unwrap();
}

const ASSETS_HEADER: &str = "id,account_id,account_type,cash,frozen_cash,market_value,total_asset,updated_at\n";
const TRADES_HEADER: &str = "id,account_id,account_type,traded_id,stock_code,traded_time,traded_price,traded_volume,traded_amount,strategy_name,order_remark,direction,offset_flag,created_at,updated_at\n";

#[test]
fn money_is_exact_to_the_cent_from_csv_to_numeric() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &format!("{ASSETS_HEADER}1,10000000001,2,123456789012345678.91,0.00,0.00,123456789012345678.91,2025-12-22T14:30:00.123456\n2,10000000002,1,0.10,0.20,0.00,0.30,2025-12-22T14:30:00\n"),
        &format!("{TRADES_HEADER}1,10000000001,2,T20251222000001,000123,2025-12-22T09:30:00,10.01,300,3003.00,趋势跟踪,,0,48,2025-12-22T09:30:00,2025-12-22T09:30:00\n"),
    );
    let db = TestDb::new("money");
    let out = db.run(dir.path(), &[]);
    out.expect_code(0);
    let cash = db.texts(&format!("SELECT cash::text FROM {}.asset ORDER BY account_id", db.schema));
    assert_eq!(cash, ["123456789012345678.91", "0.10"], "{}", out.evidence());
    let total = db.texts(&format!("SELECT total_asset::text FROM {}.asset WHERE account_id = '10000000002'", db.schema));
    assert_eq!(total, ["0.30"], "0.1 + 0.2 is exactly 0.3 in decimal");
    let stock = db.texts(&format!("SELECT stock_code || '|' || coalesce(order_remark, 'NULL') || '|' || updated_at::text FROM {}.trade", db.schema));
    assert_eq!(stock, ["000123|NULL|2025-12-22 09:30:00"], "leading zeros kept, empty remark is NULL");
    let ts = db.texts(&format!("SELECT updated_at::text FROM {}.asset WHERE account_id = '10000000001'", db.schema));
    assert_eq!(ts, ["2025-12-22 14:30:00.123456"]);
}

/// A one-stage spec over `csv` (its first column `id`, the key) into table `t` of the test's
/// schema, with `columns` (YAML lines); loaded into PostgreSQL, then the same into a DuckDB
/// file, each checked to reject exactly `expected` (`LINE COLUMN MESSAGE`, from
/// `--rejects-out`) and keep `valid` rows. Returns the database and a run of the spec there.
fn values_rejected_in_both_targets(name: &str, csv: &str, columns: &str, valid: u64, expected: &[&str]) -> (TestDb, impl Fn() -> Output) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), csv).unwrap();
    let head = crate::util::spec_head(name, dir.path().display());
    let spec = dir.path().join("spec.yaml");
    let stage = "stages:\n  t:\n    source: { connection: files, key: t.csv }\n    target: { connection: db, table: t, key: [id] }\n    columns:\n      id: { type: int64 }\n";
    std::fs::write(&spec, format!("{head}{stage}{columns}")).unwrap();
    let db = TestDb::new(name);
    let env = vec![("ETL_TEST_DATABASE_URL".to_string(), std::env::var("ETL_TEST_DATABASE_URL").unwrap()), ("SCHEMA".to_string(), db.schema.clone())];
    let rejects_out = dir.path().join("rejects.csv");
    let run = move |extra: &[&str]| -> Output {
        let mut args = vec!["run", spec.to_str().unwrap(), "--output", "json", "--rejects-out", rejects_out.to_str().unwrap()];
        args.extend(extra);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = etl(&args, &env);
        let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
        let rejected = expected.len() as u64;
        assert_eq!((report["stages"][0]["rows_valid"].as_u64(), report["stages"][0]["rows_rejected"].as_u64()), (Some(valid), Some(rejected)), "{}", out.evidence());
        // Each field quoted but an empty value (a NULL), none holding `","`.
        let written: Vec<String> = std::fs::read_to_string(&rejects_out)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let l = l.replace(",,", ",\"\",");
                let f: Vec<&str> = l.trim_matches('"').split("\",\"").collect();
                format!("{} {} {}", f[2], f[3], f[6])
            })
            .collect();
        assert_eq!(written, expected, "{}", out.evidence());
        out
    };
    let code = if expected.is_empty() { 0 } else { 4 };
    run(&[]).expect_code(code);
    let duck = format!("connections.db={{type: duckdb, path: '{}'}}", dir.path().join("t.duckdb").display());
    run(&["--set", &duck]).expect_code(code);
    (db, move || {
        let _dir = &dir;
        run(&[])
    })
}

/// A decimal's text with a nonzero digit past its column's places is rejected, never rounded,
/// whatever its form: more places than the parse at the column's widest scale holds (24 places
/// for a `decimal(20,2)`, whose widest is 20), an exponent (`1e-30`), or one extra place in a
/// `decimal(38,2)` (whose widest scale is its own); into PostgreSQL and into DuckDB alike. And a
/// table value with such places (a column widened by hand) is never taken for the file's equal:
/// the row is written, as a forced load writes it.
#[test]
fn a_decimal_with_places_past_its_column_is_rejected_never_rounded() {
    let (db, run) = values_rejected_in_both_targets(
        "places",
        "id,wide,narrow\n1,1.000000000000000000000001,1.00\n2,1e-30,1.00\n3,1.00,1.005\n4,1.5e1,1.500\n5,0000000000000000000000001.50,2.25\n",
        "      wide: { type: \"decimal(20,2)\" }\n      narrow: { type: \"decimal(38,2)\" }\n",
        2,
        &[
            "2 wide `1.000000000000000000000001` has more than 2 decimal places (decimal(20,2))",
            "3 wide `1e-30` has more than 2 decimal places (decimal(20,2))",
            "4 narrow `1.005` has more than 2 decimal places (decimal(38,2))",
        ],
    );
    let rows = db.texts(&format!("SELECT id || ' ' || wide || ' ' || narrow FROM {}.t ORDER BY id", db.schema));
    assert_eq!(rows, ["4 15.00 1.50", "5 1.50 2.25"]);
    // A value of the table with 30 places (its column widened by hand) against the file's 1.50:
    // not equal, so the row is written again, as a forced load writes it.
    db.exec(&format!("ALTER TABLE {s}.t ALTER COLUMN wide TYPE numeric; UPDATE {s}.t SET wide = 1.500000000000000000000000000001 WHERE id = 5", s = db.schema));
    let out = run();
    out.expect_code(4);
    let wide = db.texts(&format!("SELECT (wide = 1.50)::text FROM {}.t WHERE id = 5", db.schema));
    assert_eq!(wide, ["true"], "the table's 1.500000000000000000000000000001 was taken for the file's 1.50\n{}", out.evidence());
}

/// An integer column's value with a fraction (`1.5`, `15e-1`) is rejected, never rounded (DuckDB's
/// cast rounds it); `1.0` and `1e2` are whole and load. A double past its range (`1e309`,
/// `1e-400`) is rejected as PostgreSQL's own input would, never made infinite or zero; `inf`
/// and `NaN` spelled out load. Into PostgreSQL and DuckDB alike; and a table value with a
/// fraction (a column widened by hand) is never taken for the file's rounded equal.
#[test]
fn a_whole_number_column_rejects_a_fraction_and_a_double_its_range() {
    let (db, run) = values_rejected_in_both_targets(
        "wholes",
        "id,whole,real\n1,1.5,1\n2,15e-1,1\n3,1.0,1e309\n4,1e2,1e-400\n5,3,inf\n6,7,NaN\n",
        "      whole: { type: int32 }\n      real: { type: float64 }\n",
        2,
        &[
            "2 whole `1.5` has a fraction (int32 holds whole numbers)",
            "3 whole `15e-1` has a fraction (int32 holds whole numbers)",
            "4 real `1e309` is out of range for float64",
            "5 real `1e-400` is out of range for float64",
        ],
    );
    let rows = db.texts(&format!("SELECT id || ' ' || whole || ' ' || real FROM {}.t ORDER BY id", db.schema));
    assert_eq!(rows, ["5 3 Infinity", "6 7 NaN"]);
    // The table's 2.5 (its column widened by hand) against the file's 3: not equal, so the row
    // is written again, as a forced load writes it.
    db.exec(&format!("ALTER TABLE {s}.t ALTER COLUMN whole TYPE numeric; UPDATE {s}.t SET whole = 2.5 WHERE id = 5", s = db.schema));
    let out = run();
    out.expect_code(4);
    let whole = db.texts(&format!("SELECT whole::text FROM {}.t WHERE id = 5", db.schema));
    assert_eq!(whole, ["3"], "the table's 2.5 was taken for the file's 3\n{}", out.evidence());
}

/// A date or timestamp outside what both targets hold is rejected naming why, never loaded as
/// another value nor failing the whole COPY: `infinity` and `-infinity` (DuckDB reads both: its
/// infinity arrived in PostgreSQL as a date in 294247, and with a format both were 1900), years
/// before PostgreSQL's first (4714 BC) or past the last the DuckDB target can be written in
/// (262142 AD; DuckDB's own reach further), and a timestamp's text with a nonzero digit past
/// the microsecond (DuckDB drops it). The first and last dates and timestamps that load do, and
/// 1900-01-01 (what DuckDB made of `infinity` read with a format) written as a date does.
/// Into PostgreSQL and DuckDB alike.
#[test]
fn a_date_or_timestamp_out_of_range_is_rejected_never_changed() {
    let (db, _run) = values_rejected_in_both_targets(
        "temporal",
        "id,d,ts,tf\n\
         1,infinity,2024-01-01 00:00:00,2024-01-01T00:00:00\n\
         2,2024-01-01,-infinity,2024-01-01T00:00:00\n\
         3,-5000-01-01,2024-01-01 00:00:00,2024-01-01T00:00:00\n\
         4,262143-01-01,2024-01-01 00:00:00,2024-01-01T00:00:00\n\
         5,2024-01-01,-4714-01-01 00:00:00,2024-01-01T00:00:00\n\
         6,2024-01-01,2024-12-31 23:59:59.1234567,2024-01-01T00:00:00\n\
         7,2024-01-01,2024-01-01 00:00:00,infinity\n\
         8,-4713-11-24,2024-12-31 23:59:59.1234560,2024-01-01T00:00:00.5\n\
         9,262142-12-31,-4713-11-24 00:00:00,9999-12-31T23:59:59.999999\n\
         10,2024-01-01,262143-01-01 00:00:00,2024-01-01T00:00:00\n\
         11,1900-01-01,1900-01-01 00:00:00,1900-01-01T00:00:00\n",
        "      d: { type: date }\n      ts: { type: timestamp }\n      tf: { type: timestamp, format: \"%Y-%m-%dT%H:%M:%S%.f\" }\n",
        3,
        &[
            "2 d `infinity` is not a finite date (leave the field empty for no date)",
            "3 ts `-infinity` is not a finite timestamp (leave the field empty for no timestamp)",
            "4 d `-5000-01-01` is out of range for date (the years 4714 BC to 262142 AD load)",
            "5 d `262143-01-01` is out of range for date (the years 4714 BC to 262142 AD load)",
            "6 ts `-4714-01-01 00:00:00` is out of range for timestamp (the years 4714 BC to 262142 AD load)",
            "7 ts `2024-12-31 23:59:59.1234567` has more than 6 digits of a second (a timestamp keeps microseconds)",
            "8 tf `infinity` is not a finite timestamp (leave the field empty for no timestamp)",
            "11 ts `262143-01-01 00:00:00` is out of range for timestamp (the years 4714 BC to 262142 AD load)",
        ],
    );
    let rows = db.texts(&format!("SELECT id || ' ' || d || ' ' || ts || ' ' || tf FROM {}.t ORDER BY id", db.schema));
    assert_eq!(
        rows,
        [
            "8 4714-11-24 BC 2024-12-31 23:59:59.123456 2024-01-01 00:00:00.5",
            "9 262142-12-31 4714-11-24 00:00:00 BC 9999-12-31 23:59:59.999999",
            "11 1900-01-01 1900-01-01 00:00:00 1900-01-01 00:00:00"
        ]
    );
}

/// A table row holding a text longer than DuckDB reads in one line by default (2 MB: written by
/// another, or near 2 MB with its quotes doubled in the CSV the table is exported as) is
/// compared with the file's row like any other, never a failed run: the file's value is
/// written back, as a forced load writes it.
#[test]
fn a_table_row_with_a_text_past_duckdbs_line_limit_is_compared_not_refused() {
    let (db, run) = values_rejected_in_both_targets(
        "longtext",
        "id,note\n1,short\n2,x\n",
        "      note: { type: string }\n",
        2,
        &[],
    );
    db.exec(&format!("UPDATE {}.t SET note = repeat('\"', 1500000) WHERE id = 1", db.schema));
    let out = run();
    out.expect_code(0);
    let notes = db.texts(&format!("SELECT id || ' ' || note FROM {}.t ORDER BY id", db.schema));
    assert_eq!(notes, ["1 short", "2 x"], "{}", out.evidence());
}

/// A computed product of two decimals of at most 18 digits each, longer than 18 digits, is
/// computed exactly (DuckDB multiplies such decimals in 64 bits, and the product overflowing
/// them failed the whole read), into PostgreSQL and DuckDB alike.
#[test]
fn a_computed_product_longer_than_eighteen_digits_is_exact() {
    let (db, _run) = values_rejected_in_both_targets(
        "product",
        "id,a,b\n1,9999999999999999.99,99999999999999.9999\n2,1.50,2.0001\n",
        "      a: { type: \"decimal(18,2)\" }\n      b: { type: \"decimal(18,4)\" }\n      p: { type: \"decimal(38,6)\", expr: \"a * b * 1\" }\n",
        2,
        &[],
    );
    let rows = db.texts(&format!("SELECT id || ' ' || p FROM {}.t ORDER BY id", db.schema));
    assert_eq!(rows, ["1 999999999999999998000000000000.000001", "2 3.000150"]);
}

/// Writes `texts` as a CSV file, each in every one of `columns` (`(name, type)`) beside an
/// `id`, and loads it into a schema of its own (the target `key: [id]` or `mode: append`):
/// the directory, the spec, the database, the rejects file and the run.
fn load_texts(name: &str, texts: &[String], columns: &[(&str, &str)], target: &str) -> (tempfile::TempDir, std::path::PathBuf, TestDb, std::path::PathBuf, Output) {
    let dir = tempfile::tempdir().unwrap();
    let header: Vec<&str> = std::iter::once("id").chain(columns.iter().map(|(c, _)| *c)).collect();
    let mut csv = header.join(",") + "\n";
    for (n, t) in texts.iter().enumerate() {
        csv.push_str(&format!("{}{}\n", n + 1, format!(",\"{t}\"").repeat(columns.len())));
    }
    std::fs::write(dir.path().join("t.csv"), csv).unwrap();
    let spec = dir.path().join("spec.yaml");
    let types: String = columns.iter().map(|(c, t)| format!("      {c}: {{ type: {t} }}\n")).collect();
    let stage = format!("stages:\n  t:\n    source: {{ connection: files, key: t.csv }}\n    target: {{ connection: db, table: t, {target} }}\n    columns:\n      id: {{ type: int64 }}\n{types}");
    std::fs::write(&spec, format!("{}{stage}", crate::util::spec_head(name, dir.path().display()))).unwrap();
    let db = TestDb::new(name);
    let rejects = dir.path().join("rejects.csv");
    let out = etl(&["run", spec.to_str().unwrap(), "--rejects-out", rejects.to_str().unwrap()], &[("ETL_TEST_DATABASE_URL", &db.url), ("SCHEMA", &db.schema)]);
    assert!([0, 4].contains(&out.code), "{}", out.evidence());
    (dir, spec, db, rejects, out)
}

/// Random number texts (signs, leading zeros, points, exponents, spaces, a stray character)
/// loaded into a `decimal(12,2)`, an `int32` and a `float64` column: a row loads exactly when
/// PostgreSQL's own input reads its text as a value each column holds without rounding (`numeric`
/// with at most two places; a whole number in int32's range; a `float8`), and then holds that
/// value; every other row is rejected, naming each column that could not hold it.
#[test]
fn random_number_texts_load_as_postgresql_reads_them_or_are_rejected() {
    let mut seed: u64 = std::env::var("ETL_NUMBERS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let digits = |n: u64, next: &mut dyn FnMut(u64) -> u64| (0..n).map(|_| char::from(b'0' + next(10) as u8)).collect::<String>();
    let mut texts = Vec::new();
    for _ in 0..600 {
        let mut t = String::new();
        if next(10) == 0 {
            t.push(' ');
        }
        t.push_str(["", "", "-", "+"][next(4) as usize]);
        let whole = [0, 1, 1, 2, 3, 5, 9, 10, 11, 14][next(10) as usize];
        t.push_str(&digits(whole, &mut next));
        if next(2) == 0 {
            t.push('.');
            let places = [0, 1, 2, 2, 3, 6][next(6) as usize];
            t.push_str(&digits(places, &mut next));
        }
        if next(6) == 0 {
            t.push(if next(2) == 0 { 'e' } else { 'E' });
            t.push_str(["", "-", "+"][next(3) as usize]);
            t.push_str(&digits(1 + next(2), &mut next));
        }
        if next(10) == 0 {
            t.push(' ');
        }
        if next(25) == 0 && !t.is_empty() {
            let at = next(t.len() as u64) as usize;
            t.replace_range(at..at + 1, ["x", ",", "."][next(3) as usize]);
        }
        if t.trim().is_empty() {
            t = "0".into();
        }
        texts.push(t);
    }
    // And the texts such a series once found etl wrong on (a zero with a long negative
    // exponent was rejected; an exponent read past the decimal's digits failed the run; a
    // mantissa with more whole digits than the decimal was rejected).
    texts.extend(["0e-47", "+0.E-19", "-0.000e5", "54807453841e-1", "-24764962146E-1 ", "9.30754075e10", "1e-30", "15e-1", ".5", "5.", "-0"].map(String::from));
    let columns = [("d", "\"decimal(12,2)\""), ("i", "int32"), ("f", "float64")];
    let (dir, spec, db, rejects, out) = load_texts("numbers", &texts, &columns, "key: [id]");
    // What PostgreSQL's numeric input makes of each text, and what each column would hold.
    let sch = &db.schema;
    db.exec(&format!(
        "CREATE FUNCTION {sch}.parsed(t text) RETURNS numeric LANGUAGE plpgsql AS $f$ BEGIN RETURN t::numeric; EXCEPTION WHEN others THEN RETURN NULL; END $f$;
         CREATE FUNCTION {sch}.parsed_f(t text) RETURNS float8 LANGUAGE plpgsql AS $f$ BEGIN RETURN t::float8; EXCEPTION WHEN others THEN RETURN NULL; END $f$;
         CREATE TABLE {sch}.texts (id bigint, v text)"
    ));
    let values: Vec<String> = texts.iter().enumerate().map(|(n, t)| format!("({}, '{t}')", n + 1)).collect();
    db.exec(&format!("INSERT INTO {sch}.texts VALUES {}", values.join(", ")));
    let want = db.texts(&format!(
        "SELECT id || ' ' || coalesce(d, '-') || ' ' || coalesce(i, '-') || ' ' || coalesce(f, '-') FROM (
           SELECT id,
             CASE WHEN n IS NOT NULL AND n <> 'NaN' AND scale(trim_scale(n)) <= 2 AND abs(n) < 1e10 THEN round(n, 2)::text END AS d,
             CASE WHEN n IS NOT NULL AND n <> 'NaN' AND scale(trim_scale(n)) = 0 AND n BETWEEN -2147483648 AND 2147483647 THEN n::int4::text END AS i,
             x::text AS f
           FROM (SELECT id, {sch}.parsed(v) AS n, {sch}.parsed_f(v) AS x FROM {sch}.texts) AS p) AS w ORDER BY id"
    ));
    let loaded: std::collections::HashMap<String, String> =
        db.texts(&format!("SELECT id || ' ' || d || ' ' || i || ' ' || f FROM {sch}.t")).into_iter().map(|r| (r.split(' ').next().unwrap().to_string(), r)).collect();
    let rejected: Vec<String> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.trim_matches('"').split("\",\"").collect();
            format!("{} {}", f[2], f[3])
        })
        .collect();
    let mut wrong = Vec::new();
    for w in &want {
        let parts: Vec<&str> = w.split(' ').collect();
        let (id, d, i, mut f) = (parts[0], parts[1], parts[2], parts[3]);
        let line = id.parse::<u64>().unwrap() + 1;
        let text = &texts[id.parse::<usize>().unwrap() - 1];
        // PostgreSQL's float8 reads a C hexadecimal float (`0x704.98`, through strtod): etl
        // refuses one, as a number a CSV means is written in decimal.
        if text.trim().trim_start_matches(['+', '-']).to_ascii_lowercase().starts_with("0x") {
            f = "-";
        }
        let mut expected_rejects: Vec<String> = [("d", d), ("i", i), ("f", f)].iter().filter(|(_, v)| *v == "-").map(|(c, _)| format!("{line} {c}")).collect();
        let mut got_rejects: Vec<String> = rejected.iter().filter(|r| r.split(' ').next() == Some(&line.to_string())).cloned().collect();
        expected_rejects.sort();
        got_rejects.sort();
        match loaded.get(id) {
            Some(row) if expected_rejects.is_empty() && row == w => {}
            None if !expected_rejects.is_empty() && got_rejects == expected_rejects => {}
            got => wrong.push(format!("{text:?}: PostgreSQL reads {w:?}; etl loaded {got:?}, rejected {got_rejects:?}")),
        }
    }
    assert!(wrong.is_empty(), "{} of {} texts differ:\n{}\n{}", wrong.len(), texts.len(), wrong.join("\n"), out.evidence());
    // The same file into a DuckDB target: the same rows, the same values (a double's bits).
    let duck = format!("connections.db={{type: duckdb, path: '{}'}}", dir.path().join("t.duckdb").display());
    let out = etl(&["run", spec.to_str().unwrap(), "--set", &duck], &[("ETL_TEST_DATABASE_URL", &db.url), ("SCHEMA", &db.schema)]);
    assert!([0, 4].contains(&out.code), "{}", out.evidence());
    let file = duckdb::Connection::open(dir.path().join("t.duckdb")).unwrap();
    let in_duckdb: std::collections::HashMap<String, (String, String, f64)> = file
        .prepare("SELECT id, d::VARCHAR, i::VARCHAR, f FROM t")
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, i64>(0)?.to_string(), (r.get(1)?, r.get(2)?, r.get(3)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut differ = Vec::new();
    for (id, row) in &loaded {
        let p: Vec<&str> = row.split(' ').collect();
        match in_duckdb.get(id) {
            Some((d, i, f)) if d == p[1] && i == p[2] && f.to_bits() == p[3].parse::<f64>().unwrap().to_bits() => {}
            got => differ.push(format!("{:?}: PostgreSQL holds {row:?}, DuckDB {got:?}", texts[id.parse::<usize>().unwrap() - 1])),
        }
    }
    assert!(differ.is_empty() && in_duckdb.len() == loaded.len(), "{} rows in DuckDB, {} in PostgreSQL:\n{}\n{}", in_duckdb.len(), loaded.len(), differ.join("\n"), out.evidence());
}

/// Random date and timestamp texts (ISO-like, with wrong or missing parts, a `T` or a space,
/// fractions of 1 to 9 digits, offsets, 24:00, spaces, a stray character) loaded into a `date`
/// and a `timestamp` column read without a format: whatever etl loads is what PostgreSQL's own
/// input reads the text as, and whatever PostgreSQL refuses, etl rejects. (etl may refuse more:
/// years past 262142, a nonzero digit past the microsecond, forms other than ISO's. And it reads
/// ISO's signed years, `-2000-01-28` as 2001 BC, which PostgreSQL's input does not: tested in
/// `a_date_or_timestamp_out_of_range_is_rejected_never_changed`, left out here.)
#[test]
fn random_date_texts_load_as_postgresql_reads_them_or_are_rejected() {
    let mut seed: u64 = std::env::var("ETL_DATES_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut texts = Vec::new();
    for _ in 0..600 {
        let year = [1, 1970, 2024, 2024, 2000, 9999, 10000, 262142, 262143, 294276, 5874897, 99][next(12) as usize];
        let mut t = format!(
            "{:0w$}-{:02}-{:02}",
            year,
            [1, 2, 6, 12, 1, 2, 6, 12, 0, 13][next(10) as usize],
            [1, 15, 28, 29, 30, 31, 1, 15, 0, 32][next(10) as usize],
            w = [4, 4, 4, 5][next(4) as usize]
        );
        if next(4) != 0 {
            t.push(if next(2) == 0 { 'T' } else { ' ' });
            t.push_str(&format!("{:02}:{:02}", [0, 9, 23, 24, 25][next(5) as usize], [0, 30, 59, 60][next(4) as usize]));
            if next(4) != 0 {
                t.push_str(&format!(":{:02}", [0, 1, 59, 60][next(4) as usize]));
                if next(2) == 0 {
                    let places = 1 + next(9) as usize;
                    let digits: String = (0..places).map(|_| char::from(b'0' + next(10) as u8)).collect();
                    t.push_str(&format!(".{digits}"));
                }
            }
            if next(5) == 0 {
                t.push_str(["Z", "+08", "+08:00", "-0530", " UTC"][next(5) as usize]);
            }
        }
        if next(10) == 0 {
            t.push(' ');
        }
        if next(20) == 0 {
            let at = next(t.len() as u64) as usize;
            t.replace_range(at..at + 1, ["x", "/", "."][next(3) as usize]);
        }
        texts.push(t);
    }
    let columns = [("d", "date"), ("ts", "timestamp")];
    let (dir, spec, db, _rejects, out) = load_texts("datetexts", &texts, &columns, "mode: append");
    let sch = &db.schema;
    db.exec(&format!(
        "CREATE FUNCTION {sch}.as_date(t text) RETURNS text LANGUAGE plpgsql AS $f$ BEGIN RETURN t::date::text; EXCEPTION WHEN others THEN RETURN NULL; END $f$;
         CREATE FUNCTION {sch}.as_ts(t text) RETURNS text LANGUAGE plpgsql AS $f$ BEGIN RETURN t::timestamp::text; EXCEPTION WHEN others THEN RETURN NULL; END $f$;
         CREATE TABLE {sch}.texts (id bigint, v text)"
    ));
    let values: Vec<String> = texts.iter().enumerate().map(|(n, t)| format!("({}, '{t}')", n + 1)).collect();
    db.exec(&format!("INSERT INTO {sch}.texts VALUES {}", values.join(", ")));
    let want: std::collections::HashMap<String, (Option<String>, Option<String>)> = db
        .texts(&format!("SELECT id || '|' || coalesce({sch}.as_date(v), '-') || '|' || coalesce({sch}.as_ts(v), '-') FROM {sch}.texts"))
        .into_iter()
        .map(|r| {
            let p: Vec<&str> = r.split('|').collect();
            let some = |s: &str| (s != "-").then(|| s.to_string());
            (p[0].to_string(), (some(p[1]), some(p[2])))
        })
        .collect();
    let loaded = db.texts(&format!("SELECT id || '|' || d::text || '|' || ts::text FROM {sch}.t"));
    let mut wrong = Vec::new();
    let mut agreed = 0;
    for row in &loaded {
        let p: Vec<&str> = row.split('|').collect();
        let text = &texts[p[0].parse::<usize>().unwrap() - 1];
        match &want[p[0]] {
            (Some(d), Some(ts)) if d == p[1] && ts == p[2] => agreed += 1,
            w => wrong.push(format!("{text:?}: etl loaded {} {}, PostgreSQL reads {w:?}", p[1], p[2])),
        }
    }
    assert!(wrong.is_empty(), "{} of {} loaded texts differ:\n{}\n{}", wrong.len(), loaded.len(), wrong.join("\n"), out.evidence());
    assert!(agreed > 50, "only {agreed} texts loaded: the series tests little\n{}", out.evidence());
    // The same file into a DuckDB target: the same rows, the same values.
    let duck = format!("connections.db={{type: duckdb, path: '{}'}}", dir.path().join("t.duckdb").display());
    let out = etl(&["run", spec.to_str().unwrap(), "--set", &duck], &[("ETL_TEST_DATABASE_URL", &db.url), ("SCHEMA", &db.schema)]);
    assert!([0, 4].contains(&out.code), "{}", out.evidence());
    let file = duckdb::Connection::open(dir.path().join("t.duckdb")).unwrap();
    let mut in_duckdb: Vec<String> =
        file.prepare("SELECT id || '|' || d::VARCHAR || '|' || ts::VARCHAR FROM t").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    let mut in_postgres = loaded.clone();
    in_duckdb.sort();
    in_postgres.sort();
    assert_eq!(in_duckdb, in_postgres, "{}", out.evidence());
}

/// With the default `null_values` (`[""]`), a quoted empty field is NULL as an empty one is (as
/// the seed's pandas read them), in a text column and a number column alike; a required text
/// column refuses it. Into PostgreSQL and DuckDB alike.
#[test]
fn a_quoted_empty_field_is_null_as_an_empty_one_is() {
    let (db, _run) = values_rejected_in_both_targets(
        "quotedempty",
        "id,s,n,t\n1,\"\",\"\",\"x\"\n2,,,x\n3,\"a\",\"1\",\"\"\n",
        "      s: { type: string, nullable: true }\n      n: { type: int32, nullable: true }\n      t: { type: string }\n",
        2,
        &["4 t t is required"],
    );
    let rows = db.texts(&format!("SELECT id || ' ' || coalesce('[' || s || ']', 'null') || ' ' || coalesce(n::text, 'null') || ' ' || t FROM {}.t ORDER BY id", db.schema));
    assert_eq!(rows, ["1 null null x", "2 null null x"]);
}

/// A boolean loads as PostgreSQL's input reads it, spaces around it too; what etl refuses that
/// PostgreSQL reads (`on`, `off`, a prefix such as `tr`) is rejected, never read otherwise.
#[test]
fn a_boolean_loads_as_postgresql_reads_it_or_is_rejected() {
    let texts = ["t", "f", "true", "FALSE", "tRuE", "y", "N", "yes", "no", "1", "0", " true", "false ", " yes ", "on", "off", "tr", "2", "-1", "1.0", "01", "nope"];
    let csv: String = std::iter::once("id,b".to_string()).chain(texts.iter().enumerate().map(|(n, t)| format!("{},\"{t}\"", n + 1))).collect::<Vec<_>>().join("\n");
    let refused = ["on", "off", "tr", "2", "-1", "1.0", "01", "nope"];
    let expected: Vec<String> =
        texts.iter().enumerate().filter(|(_, t)| refused.contains(t)).map(|(n, t)| format!("{} b `{t}` is not a valid bool", n + 2)).collect();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    let csv = csv + "\n";
    let (db, _run) = values_rejected_in_both_targets("booleans", &csv, "      b: { type: bool }\n", (texts.len() - refused.len()) as u64, &expected);
    let loaded = db.texts(&format!("SELECT id || ' ' || b::text FROM {}.t ORDER BY id", db.schema));
    let want: Vec<String> = texts
        .iter()
        .enumerate()
        .filter(|(_, t)| !refused.contains(t))
        .map(|(n, t)| format!("{} {}", n + 1, db.texts(&format!("SELECT '{t}'::bool::text")).remove(0)))
        .collect();
    assert_eq!(loaded, want);
}

#[test]
fn dry_run_writes_nothing_and_reports_what_would_load() {
    let data = generate(200, 1_000, 0.0, 3);
    let db = TestDb::new("dryrun");
    let out = db.run(data.path(), &["--dry-run", "--output", "json"]);
    out.expect_code(0);
    let r = report(&out);
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["stages"][0]["loaded"]["inserted"], 200, "{}", out.evidence());
    assert_eq!(r["stages"][1]["loaded"]["inserted"], 1000, "trades see the assets the dry run would load\n{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}'", db.schema)), 0, "no table was created");
    let stages_table = db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'etl_run_stages'");
    if stages_table > 0 {
        let n = db.count(&format!("SELECT count(*) FROM etl_run_stages WHERE source LIKE '{}%'", data.path().display()));
        assert_eq!(n, 0, "no run was recorded");
    }
    // Nor a line index in the cache: what a dry run read is no load a later one compares with.
    let cache = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec!["run".into(), "specs/small_etl.yaml".into(), "--dry-run".into()];
    args.extend(db.sets(data.path()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = etl(&refs, &[("ETL_CACHE_DIR", cache.path().to_str().unwrap())]);
    out.expect_code(0);
    let written: Vec<String> = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!written.iter().any(|f| f.ends_with(".lines")), "a dry run wrote line indexes: {written:?}\n{}", out.evidence());
}

#[test]
fn an_error_budget_loads_nothing_and_exits_5() {
    let data = generate(300, 0, 0.05, 9);
    let db = TestDb::new("budget");
    let out = db.run(data.path(), &["--stage", "assets", "--set", "stages.assets.max_rejects=3"]);
    out.expect_code(5);
    assert!(out.stdout.contains("over its error budget"), "{}", out.evidence());
    // The stage's transaction rolled back whole: not even the table it created remains.
    let tables = db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'asset'", db.schema));
    assert_eq!(tables, 0, "{}", out.evidence());
    // A ratio: the same rejects are over 1% of the rows read and within half of them.
    let out = db.run(data.path(), &["--stage", "assets", "--set", "stages.assets.max_reject_ratio=0.01"]);
    out.expect_code(5);
    assert!(out.stdout.contains("of rows rejected, more than max_reject_ratio 0.01"), "{}", out.evidence());
    let out = db.run(data.path(), &["--stage", "assets", "--set", "stages.assets.max_reject_ratio=0.5", "--output", "json"]);
    out.expect_code(4);
    assert!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)) > 0, "{}", out.evidence());
    // A budget is "more than": exactly as many rejects as `max_rejects`, or exactly the ratio
    // `max_reject_ratio` (written as the shortest decimal of rejected / read), is within it
    // (`--force`: the same files would otherwise be reused, never checked against the budget).
    let st = &report(&out)["stages"][0];
    let (read, rejected) = (st["rows_read"].as_u64().unwrap(), st["rows_rejected"].as_u64().unwrap());
    assert!(rejected > 3 && read > rejected, "{}", out.evidence());
    let exactly = [format!("stages.assets.max_rejects={rejected}"), format!("stages.assets.max_reject_ratio={}", rejected as f64 / read as f64)];
    for set in &exactly {
        let out = db.run(data.path(), &["--stage", "assets", "--force", "--set", set]);
        out.expect_code(4);
        assert!(!out.stdout.contains("over its error budget"), "{set}: at the budget is within it\n{}", out.evidence());
    }
}

#[test]
fn exit_codes_are_a_contract() {
    let data = generate(50, 100, 0.0, 4);
    let db = TestDb::new("exits");
    db.run(data.path(), &[]).expect_code(0);
    // Unreachable database: exit 3, and the message names the server, not the password.
    let out = etl(
        &["run", "specs/small_etl.yaml", "--set", &format!("connections.lake={{type: local, path: '{}'}}", data.path().display()), "--db-port", "1", "--db-password", "Hunter2-Secret"],
        &[],
    );
    out.expect_code(3);
    assert!(out.stderr.contains("cannot connect to PostgreSQL at localhost:1"), "{}", out.evidence());
    assert!(!out.stderr.contains("Hunter2-Secret") && !out.stdout.contains("Hunter2-Secret"), "{}", out.evidence());
    // A bad spec or argument: exit 2.
    db.run(data.path(), &["--stage", "nope"]).expect_code(2);
    db.run(data.path(), &["--set", "defaults.batch_size=0"]).expect_code(2);
    // A missing source file: exit 3, naming the file.
    let out = db.run(data.path(), &["--assets-file", "missing.csv"]);
    out.expect_code(3);
    assert!(out.stderr.contains("missing.csv"), "{}", out.evidence());
}

#[test]
fn a_table_that_does_not_match_the_spec_is_an_error_before_any_data_moves() {
    let data = generate(20, 0, 0.0, 5);
    let db = TestDb::new("mismatch");
    db.exec(&format!("CREATE TABLE {}.asset (account_id varchar(20) PRIMARY KEY, account_type text, cash numeric(20,2))", db.schema));
    let out = db.run(data.path(), &["--stage", "assets"]);
    out.expect_code(1);
    assert!(out.stderr.contains("does not match the spec"), "{}", out.evidence());
    assert!(out.stderr.contains("column `frozen_cash` is missing"), "{}", out.evidence());
    assert!(out.stderr.contains("column `account_type` is text"), "{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 0);

    // Types that hold the spec's or not, each column on its own: a varchar shorter than
    // `max_length` (shown with its length), a numeric with too few digits before the point for
    // decimal(20,2) though as many in all (18,2) or with too few after it (20,1); one with more of
    // both (22,4), an unbounded numeric and an integer column are fine.
    db.exec(&format!(
        "DROP TABLE {0}.asset; CREATE TABLE {0}.asset (account_id varchar(5) PRIMARY KEY, account_type integer, cash numeric(18,2), \
         frozen_cash numeric(20,1), market_value numeric(22,4), total_asset numeric, updated_at timestamp)",
        db.schema
    ));
    let out = db.run(data.path(), &["--stage", "assets"]);
    out.expect_code(1);
    for said in ["column `account_id` is character varying(5)", "column `cash` is numeric(18,2)", "column `frozen_cash` is numeric(20,1)"] {
        assert!(out.stderr.contains(said), "`{said}` not said\n{}", out.evidence());
    }
    for fine in ["`account_type`", "`market_value`", "`total_asset`", "`updated_at`"] {
        assert!(!out.stderr.contains(fine), "{fine} holds the spec's type, but was named\n{}", out.evidence());
    }
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 0);
}

#[test]
fn a_failure_in_the_middle_of_a_load_leaves_the_table_as_it_was() {
    let data = generate(100, 2_000, 0.0, 6);
    let db = TestDb::new("midload");
    db.run(data.path(), &[]).expect_code(0);
    let before = db.texts(&format!("SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM {}.trade t", db.schema));
    // Regenerate with other values, and make the database fail on one row mid-merge.
    let data2 = generate(100, 2_000, 0.0, 7);
    let victim = std::fs::read_to_string(data2.path().join("trades.csv")).unwrap().lines().nth(1500).unwrap().split(',').nth(3).unwrap().to_string();
    db.exec(&format!(
        "CREATE FUNCTION {s}.boom() RETURNS trigger AS $$ BEGIN IF NEW.traded_id = '{victim}' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON {s}.trade FOR EACH ROW EXECUTE FUNCTION {s}.boom();",
        s = db.schema
    ));
    let failed_runs = "SELECT count(*) FROM etl_runs WHERE status = 'failed' AND error LIKE '%injected failure%'";
    let failed_before = db.count(failed_runs);
    let out = db.run(data2.path(), &["--stage", "trades"]);
    out.expect_code(1);
    assert!(out.stderr.contains("injected failure"), "{}", out.evidence());
    let after = db.texts(&format!("SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM {}.trade t", db.schema));
    assert_eq!(before, after, "the trade table is exactly as before the failed run");
    assert_eq!(db.count(failed_runs), failed_before + 1, "the failed run is recorded as failed, with its error");
}

#[test]
fn s3_failures_are_one_line_errors_naming_the_object_and_exit_3() {
    let data = generate(10, 10, 0.0, 8);
    let db = TestDb::new("s3errors");
    let bucket = TestBucket::with_files("s3errors", data.path(), &["account_assets.csv"]);
    // A missing object.
    let out = db.run_s3(&bucket, &["--trades-file", "nope.csv"]);
    out.expect_code(3);
    assert!(out.stderr.contains(&format!("s3://{}/nope.csv", bucket.name)) && out.stderr.contains("no such object"), "{}", out.evidence());
    // A wrong bucket.
    let out = db.run_s3(&bucket, &["--s3-bucket", "no-such-bucket-etl", "--stage", "assets"]);
    out.expect_code(3);
    assert!(out.stderr.contains("s3://no-such-bucket-etl/account_assets.csv"), "{}", out.evidence());
    // An endpoint nobody listens on.
    let out = db.run_s3(&bucket, &["--s3-endpoint", "127.0.0.1:1", "--stage", "assets"]);
    out.expect_code(3);
    assert!(out.stderr.contains("http://127.0.0.1:1") && out.stderr.contains("cannot reach the endpoint"), "{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}'", db.schema)), 0, "nothing was loaded");
}

/// The quick start needs no server: local files into an embedded DuckDB file.
#[test]
fn quickstart_runs_with_no_services_and_prints_the_analytics() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("qs.duckdb");
    let env = [("ETL_QUICKSTART_DB", db.to_str().unwrap())];
    let out = etl(&["run", "examples/quickstart.yaml"], &env);
    out.expect_code(0);
    assert!(out.stdout.contains("quickstart run 1 for ") && out.stdout.contains(": succeeded"), "{}", out.evidence());
    assert!(out.stdout.contains("assets_by_type") && out.stdout.contains("trades_by_strategy"), "{}", out.evidence());
    let out = etl(&["run", "examples/quickstart.yaml", "--output", "json"], &env);
    out.expect_code(0);
    let r = report(&out);
    assert_eq!(r["stages"][0]["loaded"]["unchanged"], 100, "{}", out.evidence());
    assert_eq!(r["stages"][1]["loaded"]["unchanged"], 300, "{}", out.evidence());
    assert_eq!(r["analytics"][0]["columns"][0], "account_type");
    let out = etl(&["clean", "examples/quickstart.yaml", "--yes"], &env);
    out.expect_code(0);
    assert!(out.stdout.contains("emptied trade"), "{}", out.evidence());
    let out = etl(&["run", "examples/quickstart.yaml", "--output", "json"], &env);
    assert_eq!(report(&out)["stages"][0]["loaded"]["inserted"], 100, "{}", out.evidence());
}

/// A DuckDB target loads a file of many batches, exactly: the batches are spooled while the typed
/// rows stream and COPYed once after (DuckDB refuses a statement on a connection whose result is
/// open, and COPYing each batch as it came failed every load of more than one batch: the quick
/// start's 300 trades fit one), a row near DuckDB's 2 MB line limit among them; a forced load of
/// the same file then finds every row unchanged, and a changed file updates what changed.
#[test]
fn a_duckdb_target_loads_a_file_of_many_batches() {
    let dir = tempfile::tempdir().unwrap();
    // A text of 1.8 MB with quotes, commas and line ends in it.
    let long = "q\"a,\n".repeat(300_000);
    let file = |changed: bool| {
        let mut csv = String::from("id,note,amount\n");
        for i in 1..=100u32 {
            let note = if i == 20 { long.clone() } else if changed && i == 3 { "changed".into() } else { format!("n{i}") };
            csv.push_str(&format!("{i},\"{}\",{i}.{:02}\n", note.replace('"', "\"\""), i % 100));
        }
        std::fs::write(dir.path().join("t.csv"), csv).unwrap();
    };
    file(false);
    let spec = dir.path().join("spec.yaml");
    let stage = "stages:\n  t:\n    source: { connection: files, key: t.csv }\n    target: { connection: db, table: t, key: [id], mode: upsert }\n    columns:\n      id: { type: int64 }\n      note: { type: string }\n      amount: { type: \"decimal(12,2)\" }\n";
    std::fs::write(&spec, format!("{}{stage}", crate::util::spec_head("manybatches", dir.path().display()))).unwrap();
    let target = dir.path().join("t.duckdb");
    let duck = format!("connections.db={{type: duckdb, path: '{}'}}", target.display());
    let run = |more: &[&str]| {
        let mut args = vec!["run", spec.to_str().unwrap(), "--output", "json", "--set", &duck, "--set", "defaults.batch_size=7"];
        args.extend_from_slice(more);
        let out = etl(&args, &[("ETL_TEST_DATABASE_URL", "postgres://unused"), ("SCHEMA", "unused")]);
        out.expect_code(0);
        let loaded = &report(&out)["stages"][0]["loaded"];
        let counts = format!("{} inserted, {} updated, {} unchanged", loaded["inserted"], loaded["updated"], loaded["unchanged"]);
        (out, counts)
    };
    let rows = || {
        let db = duckdb::Connection::open(&target).unwrap();
        let rows: Vec<(i64, String, String)> =
            db.prepare("SELECT id, note, amount::VARCHAR FROM t ORDER BY id").unwrap().query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
        rows
    };
    let (out, counts) = run(&[]);
    assert_eq!(counts, "100 inserted, 0 updated, 0 unchanged", "{}", out.evidence());
    let got = rows();
    assert_eq!(got.len(), 100, "{}", out.evidence());
    assert!(got[19].1 == long, "the long text came back {} bytes long, not {}\n{}", got[19].1.len(), long.len(), out.evidence());
    assert_eq!((got[2].1.as_str(), got[2].2.as_str(), got[99].2.as_str()), ("n3", "3.03", "100.00"), "{}", out.evidence());
    let (out, counts) = run(&["--force"]);
    assert_eq!(counts, "0 inserted, 0 updated, 100 unchanged", "{}", out.evidence());
    file(true);
    let (out, counts) = run(&[]);
    assert_eq!(counts, "0 inserted, 1 updated, 99 unchanged", "{}", out.evidence());
    let got = rows();
    assert_eq!((got.len(), got[2].1.as_str()), (100, "changed"), "{}", out.evidence());
    assert!(got[19].1 == long, "{}", out.evidence());
}

#[test]
fn clean_empties_the_target_tables_and_the_seed_aliases_run_one_stage() {
    let data = generate(30, 60, 0.0, 12);
    let db = TestDb::new("clean");
    let mut args: Vec<String> = vec!["assets".into(), "specs/small_etl.yaml".into()];
    args.extend(db.sets(data.path()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    etl(&refs, &[]).expect_code(0);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 30);
    assert_eq!(db.count(&format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = 'trade'", db.schema)), 0, "`etl assets` ran the assets stage only");
    // A stage whose table was never created is left out of `clean`; the others are emptied.
    let mut clean: Vec<String> = vec!["clean".into(), "specs/small_etl.yaml".into(), "--yes".into()];
    clean.extend(db.sets(data.path()));
    let out = etl(&clean.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    out.expect_code(0);
    assert!(out.stdout.contains("asset") && !out.stdout.contains("trade"), "only the table that exists is named\n{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 0, "{}", out.evidence());
    etl(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]).expect_code(0);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 30);
    args[0] = "trades".into();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    etl(&refs, &[]).expect_code(0);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade", db.schema)), 60);
    args[0] = "clean".into();
    // With no terminal to ask (the tests' stdin is not one), clean refuses without --yes.
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = etl(&refs, &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("add --yes"), "{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 30, "nothing emptied\n{}", out.evidence());
    args.push("--yes".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = etl(&refs, &[]);
    out.expect_code(0);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 0, "{}", out.evidence());
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade", db.schema)), 0, "{}", out.evidence());
}

/// The seed's users may give DATABASE_URL instead of the DB_* variables.
#[test]
fn database_url_works_in_place_of_the_seed_variables() {
    let data = generate(10, 20, 0.0, 13);
    let db = TestDb::new("dburl");
    let out = etl(
        &[
            "run",
            "specs/small_etl.yaml",
            "--set",
            &format!("connections.lake={{type: local, path: '{}'}}", data.path().display()),
            "--set",
            &format!("connections.db.schema={}", db.schema),
        ],
        &[("DATABASE_URL", db.url.as_str())],
    );
    out.expect_code(0);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade", db.schema)), 20, "{}", out.evidence());
    assert!(!out.stdout.contains("etlpass") && !out.stderr.contains("etlpass"), "{}", out.evidence());
}

/// A BOM, CRLF, an extra column, a ragged line, a rounding decimal, text in a number, a zoned
/// timestamp: each bad value is a reject with its exact line and reason, never an abort.
#[test]
fn awkward_csv_gives_exact_rejects_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("awkward.duckdb");
    let rejects = dir.path().join("rejects.csv");
    let out = etl(
        &["run", "tests/fixtures/csv/spec.yaml", "--rejects-out", rejects.to_str().unwrap()],
        &[("ETL_TEST_DUCKDB", db.to_str().unwrap())],
    );
    out.expect_code(4);
    crate::util::golden("tests/golden/run/awkward_rejects.csv", &std::fs::read_to_string(&rejects).unwrap(), &out.evidence());
    assert!(out.stdout.contains("assets     4      1         3"), "{}", out.evidence());
}

/// The password (here the test database's real one, so runs succeed) never appears in any
/// output of any command, in success or failure, nor in the recorded runs.
#[test]
fn two_runs_at_once_serialize() {
    let data = generate(500, 5_000, 0.0, 15);
    let db = TestDb::new("concurrent");
    let spawn = || {
        let mut args: Vec<String> = vec!["run".into(), "specs/small_etl.yaml".into(), "--output".into(), "json".into()];
        args.extend(db.sets(data.path()));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_etl"));
        cmd.env("ETL_CACHE_DIR", crate::util::cache_dir());
        cmd.args(&args).current_dir(crate::util::root()).env("NO_COLOR", "1");
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success(), "{}\n{}", String::from_utf8_lossy(&a.stderr), String::from_utf8_lossy(&b.stderr));
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 500);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade", db.schema)), 5_000);
    let loaded = |o: &std::process::Output, stage: usize, what: &str| -> i64 {
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        r["stages"][stage]["loaded"][what].as_i64().unwrap()
    };
    // Between them every row was inserted once and found unchanged once: no row was lost or doubled.
    for (stage, rows) in [(0, 500), (1, 5_000)] {
        assert_eq!(loaded(&a, stage, "inserted") + loaded(&b, stage, "inserted"), rows);
        assert_eq!(loaded(&a, stage, "unchanged") + loaded(&b, stage, "unchanged"), rows);
    }
}

#[test]
fn a_missing_csv_column_is_an_error_listing_the_header_found() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "id,account_id,account_type,cash\n1,10000000001,2,1.00\n", TRADES_HEADER);
    let db = TestDb::new("header");
    let out = db.run(dir.path(), &["--stage", "assets"]);
    out.expect_code(1);
    assert!(out.stderr.contains("has no column frozen_cash, market_value, total_asset, updated_at"), "{}", out.evidence());
    assert!(out.stderr.contains("its header is: id, account_id, account_type, cash"), "{}", out.evidence());
}

/// Without a header the file's columns are the spec's, in order; lines count from 1.
#[test]
fn a_file_without_a_header_maps_columns_by_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.csv"), "10000000001,2,1.00\n10000000002,x,2.00\n").unwrap();
    std::fs::write(
        dir.path().join("s.yaml"),
        "version: 1\nname: nh\nconnections:\n  f: { type: local, path: . }\n  d: { type: duckdb, path: nh.duckdb }\nstages:\n  a:\n    source: { connection: f, key: a.csv, csv: { header: false } }\n    target: { connection: d, table: a, key: [id] }\n    columns:\n      id: { type: string }\n      kind: { type: int32 }\n      cash: { type: \"decimal(10,2)\" }\n",
    )
    .unwrap();
    let rejects = dir.path().join("r.csv");
    let spec = dir.path().join("s.yaml");
    let out = etl(&["run", spec.to_str().unwrap(), "--rejects-out", rejects.to_str().unwrap()], &[]);
    out.expect_code(4);
    let csv = std::fs::read_to_string(&rejects).unwrap();
    assert!(csv.contains(",\"2\",\"kind\",\"type\",\"x\","), "{csv}\n{}", out.evidence());
}

/// The keys, unique columns, indexes and foreign keys of a schema's tables, as the catalog
/// prints them, the schema's name replaced by `<schema>`.
fn catalog(db: &TestDb) -> String {
    let constraints = db.texts(&format!(
        "SELECT conrelid::regclass::text || ' ' || conname || ': ' || pg_get_constraintdef(oid) FROM pg_constraint
          WHERE connamespace = '{0}'::regnamespace AND contype IN ('p', 'u', 'f') ORDER BY 1",
        db.schema
    ));
    let indexes = db.texts(&format!("SELECT indexname || ': ' || indexdef FROM pg_indexes WHERE schemaname = '{}' AND tablename IN ('asset', 'trade') ORDER BY 1", db.schema));
    format!("-- constraints\n{}\n-- indexes\n{}\n", constraints.join("\n"), indexes.join("\n")).replace(&db.schema, "<schema>")
}

#[test]
fn a_created_table_gets_its_key_unique_columns_indexes_and_foreign_keys() {
    let data = generate(50, 200, 0.0, 17);
    let db = TestDb::new("catalog");
    db.run(data.path(), &[]).expect_code(0);
    let created = catalog(&db);
    crate::util::golden("tests/golden/run/created_tables.txt", &created, &created);
    assert!(created.contains("FOREIGN KEY (account_id) REFERENCES <schema>.asset(account_id)"), "{created}");
    // An index and the foreign key dropped by someone are put back by the next load.
    db.exec(&format!("ALTER TABLE {0}.trade DROP CONSTRAINT trade_account_id_fkey; DROP INDEX {0}.asset_account_type_idx", db.schema));
    db.run(data.path(), &["--force"]).expect_code(0);
    assert_eq!(catalog(&db), created, "a dropped index or foreign key was not put back");
}

/// A server that answers, asked with no credentials at all: said as missing credentials, not as
/// an unreachable server.
#[test]
fn missing_s3_credentials_are_said_as_such() {
    let data = generate(5, 0, 0.0, 22);
    let bucket = TestBucket::with_files("nocreds", data.path(), &["account_assets.csv"]);
    let db = TestDb::new("nocreds");
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().display().to_string();
    let lake = format!("connections.lake={{type: s3, endpoint: '{}', bucket: {}}}", bucket.endpoint, bucket.name);
    let db_set = format!("connections.db={{type: postgres, url: '{}', schema: {}}}", db.url, db.schema);
    let out = etl(
        &["run", "specs/small_etl.yaml", "--stage", "assets", "--set", &lake, "--set", &db_set],
        &[
            ("HOME", &home_path),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", &format!("{home_path}/none")),
            ("AWS_SHARED_CREDENTIALS_FILE", &format!("{home_path}/none")),
        ],
    );
    out.expect_code(3);
    assert!(out.stderr.contains("no S3 credentials were found"), "{}", out.evidence());
    assert!(!out.stderr.contains("cannot reach"), "the server answers: not an unreachable endpoint\n{}", out.evidence());
}

/// A postgres connection that names no host takes libpq's conventions, as psql does: the PG*
/// variables, `DATABASE_URL`, `~/.pgpass`, and the `--db-*` flags; and the offline commands
/// check a spec whose secret's variable is unset.
#[test]
fn connections_follow_libpq_conventions_and_offline_commands_need_no_secret() {
    let data = generate(5, 0, 0.0, 23);
    let db = TestDb::new("libpq");
    let url = db.url.clone();
    // postgres://etl:etlpass@127.0.0.1:PORT/etl_test
    let rest = url.trim_start_matches("postgres://");
    let (auth, hostpart) = rest.split_once('@').unwrap();
    let (user, password) = auth.split_once(':').unwrap();
    let (hostport, database) = hostpart.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let lake = format!("connections.lake={{type: local, path: '{}'}}", data.path().display());
    let bare = format!("connections.db={{type: postgres, schema: {}}}", db.schema);
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["run", "specs/small_etl.yaml", "--stage", "assets", "--set", &lake, "--set", &bare];
        args.extend_from_slice(extra);
        etl(&args, env)
    };
    let count = || db.count(&format!("SELECT count(*) FROM {}.asset", db.schema));
    // PG* variables.
    let out = run(&[], &[("PGHOST", host), ("PGPORT", port), ("PGUSER", user), ("PGPASSWORD", password), ("PGDATABASE", database)]);
    out.expect_code(0);
    assert_eq!(count(), 5, "{}", out.evidence());
    // DATABASE_URL.
    db.exec(&format!("DROP TABLE {}.asset", db.schema));
    run(&[], &[("DATABASE_URL", &url)]).expect_code(0);
    assert_eq!(count(), 5);
    // ~/.pgpass for the password, the flags for the rest.
    db.exec(&format!("DROP TABLE {}.asset", db.schema));
    let home = tempfile::tempdir().unwrap();
    let pgpass = home.path().join(".pgpass");
    std::fs::write(&pgpass, format!("# etl's test server\n{host}:{port}:{database}:{user}:{password}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let home_path = home.path().display().to_string();
    // (A DATABASE_URL is not read when the connection names a host.)
    let elsewhere = "postgres://nobody:nothing@127.0.0.1:1/nowhere";
    let out = run(&["--db-host", host, "--db-port", port, "--db-user", user, "--db-name", database], &[("HOME", &home_path), ("DATABASE_URL", elsewhere)]);
    out.expect_code(0);
    assert_eq!(count(), 5, "{}", out.evidence());
    // A password in the URL is the one used: a ~/.pgpass line for the same server (a wrong
    // password here) is read only when nothing else gives one, as libpq does.
    db.exec(&format!("DROP TABLE {}.asset", db.schema));
    std::fs::write(&pgpass, format!("{host}:{port}:{database}:{user}:not-the-password\n")).unwrap();
    let out = run(&[], &[("HOME", &home_path), ("DATABASE_URL", &url)]);
    out.expect_code(0);
    assert_eq!(count(), 5, "{}", out.evidence());
    // So does PGPASSWORD.
    db.exec(&format!("DROP TABLE {}.asset", db.schema));
    let out = run(&[], &[("HOME", &home_path), ("PGHOST", host), ("PGPORT", port), ("PGUSER", user), ("PGPASSWORD", password), ("PGDATABASE", database)]);
    out.expect_code(0);
    assert_eq!(count(), 5, "{}", out.evidence());
    // A URL with no password takes it from ~/.pgpass.
    db.exec(&format!("DROP TABLE {}.asset", db.schema));
    std::fs::write(&pgpass, format!("{host}:{port}:{database}:{user}:{password}\n")).unwrap();
    let bare_url = format!("postgres://{user}@{host}:{port}/{database}");
    let out = run(&[], &[("HOME", &home_path), ("DATABASE_URL", &bare_url)]);
    out.expect_code(0);
    assert_eq!(count(), 5, "{}", out.evidence());
    // validate-spec and plan with the password's variable unset: the spec is checked all the same.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("s.yaml");
    let text = std::fs::read_to_string(crate::util::root().join("specs/small_etl.yaml")).unwrap();
    std::fs::write(&spec, text.replace("password: \"{{ env.DB_PASSWORD | default('' if env.DATABASE_URL is defined else 'etlpass') }}\"", "password: \"{{ env.PRODUCTION_DB_PASSWORD }}\"")).unwrap();
    assert!(std::fs::read_to_string(&spec).unwrap().contains("PRODUCTION_DB_PASSWORD"), "the spec's password line changed; update this test");
    let spec = spec.display().to_string();
    etl(&["validate-spec", &spec], &[]).expect_code(0);
    etl(&["plan", &spec], &[]).expect_code(0);
    let out = etl(&["run", &spec, "--set", &lake, "--dry-run"], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("PRODUCTION_DB_PASSWORD is not set"), "a run still needs it\n{}", out.evidence());
}

/// The shipped `trades_by_strategy` analytic's table, its strategy names in Chinese: every column
/// starts and ends at one display column on every line (a CJK character takes two), and the
/// whole table is as its golden file holds it.
#[test]
fn the_trades_by_strategy_table_aligns_its_chinese_names_by_display_width() {
    use unicode_width::UnicodeWidthChar;
    let data = generate(100, 2_000, 0.0, 64);
    let db = TestDb::new("cjk");
    let out = db.run(data.path(), &[]);
    out.expect_code(0);
    let start = out.stdout.find("\ntrades_by_strategy\n").unwrap_or_else(|| panic!("no trades_by_strategy table\n{}", out.evidence()));
    let section: Vec<&str> = out.stdout[start + 1..].lines().take_while(|l| !l.is_empty()).collect();
    assert!(section.iter().any(|l| l.contains("均值回归")), "{}", out.evidence());
    // The lines after the name and description: the header, the rule, the rows.
    let table = &section[2..];
    let cells = |line: &str| -> Vec<char> {
        // One entry per display column: a wide character, then a placeholder for its second.
        let mut v = Vec::new();
        for c in line.chars() {
            v.push(c);
            v.extend(std::iter::repeat_n('\u{0}', c.width().unwrap_or(1).saturating_sub(1)));
        }
        v
    };
    let rule = cells(table[1]);
    let gaps: Vec<usize> = rule.iter().enumerate().filter(|(_, c)| **c == ' ').map(|(i, _)| i).collect();
    for line in table.iter().filter(|l| !l.starts_with('-')) {
        let row = cells(line);
        assert!(row.len() <= rule.len(), "{line:?} is wider than its rule\n{}", section.join("\n"));
        for g in &gaps {
            assert_eq!(row.get(*g).copied().unwrap_or(' '), ' ', "{line:?} crosses a column border at display column {g}\n{}", section.join("\n"));
        }
    }
    crate::util::golden("tests/golden/run/trades_by_strategy.txt", &format!("{}\n", section.join("\n")), &out.evidence());
}

/// An existing table is checked column by column against the spec's types: a type that holds the
/// spec's is taken (a wider varchar, bigint for int32, a wider numeric, timestamp for a date),
/// one that does not is named with its own type, and nothing loads; a soft delete set on a table
/// loaded before gets its `_deleted_at` column added.
#[test]
fn each_column_type_is_checked_against_an_existing_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("coltypes");
    let spec = dir.path().join("things.yaml");
    std::fs::write(
        &spec,
        format!(
            "{}stages:
  things:
    source: {{ connection: files, key: things.csv }}
    target: {{ connection: db, table: thing, key: [name] }}
    columns:
      name: {{ type: string, max_length: 5 }}
      small: {{ type: int32 }}
      big: {{ type: int64 }}
      amount: {{ type: \"decimal(20,2)\" }}
      ratio: {{ type: float64 }}
      flag: {{ type: bool }}
      day: {{ type: date }}
      at: {{ type: timestamp }}
",
            crate::util::spec_head("things", dir.path().display())
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("things.csv"), "name,small,big,amount,ratio,flag,day,at\nab,1,2,3.50,0.5,true,2025-12-22,2025-12-22 10:00:00\n").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", spec.to_str().unwrap()];
        args.extend(extra);
        etl(&args, &[("ETL_TEST_DATABASE_URL", db.url.as_str()), ("SCHEMA", db.schema.as_str())])
    };
    let table = |columns: &str| db.exec(&format!("DROP TABLE IF EXISTS {0}.thing; CREATE TABLE {0}.thing ({columns})", db.schema));

    table("name varchar(3) PRIMARY KEY, small text, big integer, amount text, ratio real, flag integer, day text, at date");
    let out = run(&[]);
    out.expect_code(1);
    for said in [
        "column `name` is character varying(3)",
        "column `small` is text",
        "column `big` is integer",
        "column `amount` is text",
        "column `ratio` is real",
        "column `flag` is integer",
        "column `day` is text",
        "column `at` is date",
    ] {
        assert!(out.stderr.contains(said), "`{said}` not said\n{}", out.evidence());
    }
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.thing", db.schema)), 0);

    table("name varchar(10) PRIMARY KEY, small bigint, big numeric, amount numeric(22,4), ratio double precision, flag boolean, day timestamp, at timestamp");
    let out = run(&[]);
    out.expect_code(0);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.thing", db.schema)), 1, "{}", out.evidence());

    // Each column wider than the spec's alone among exact ones, then two of them: still loaded
    // through the staging table (a binary COPY straight into the table would send an int4 to a
    // bigint column, an int8 to a numeric, a date to a timestamp), whatever the count of exact
    // columns around them.
    for (small, big, day) in [("bigint", "bigint", "date"), ("integer", "numeric", "date"), ("integer", "bigint", "timestamp"), ("bigint", "bigint", "timestamp")] {
        table(&format!("name varchar(10) PRIMARY KEY, small {small}, big {big}, amount numeric(20,2), ratio double precision, flag boolean, day {day}, at timestamp"));
        let out = run(&[]);
        out.expect_code(0);
        let loaded = db.texts(&format!("SELECT concat_ws(' ', name, small, big, amount, ratio, flag, day::date, at) FROM {}.thing", db.schema));
        assert_eq!(loaded, ["ab 1 2 3.50 0.5 t 2025-12-22 2025-12-22 10:00:00"], "small {small}, big {big}, day {day}\n{}", out.evidence());
    }

    // `delete_missing: soft` set now: the table gets the column, and the key the file lacks is
    // flagged rather than deleted.
    std::fs::write(dir.path().join("things.csv"), "name,small,big,amount,ratio,flag,day,at\ncd,1,2,3.50,0.5,true,2025-12-22,2025-12-22 10:00:00\n").unwrap();
    let out = run(&["--set", "stages.things.target.delete_missing=soft", "--set", "stages.things.target.max_delete_ratio=1"]);
    out.expect_code(0);
    let flagged = db.texts(&format!("SELECT name || ':' || (_deleted_at IS NOT NULL)::text FROM {}.thing ORDER BY name", db.schema));
    assert_eq!(flagged, ["ab:true", "cd:false"], "{}", out.evidence());
}
