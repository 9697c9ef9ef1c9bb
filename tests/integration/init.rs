//! `etl init`: a spec written from a sample of a CSV file validates and, run as written, loads
//! every row of the generator's files exactly (a code with leading zeros kept as written).

use crate::run::TestDb;
use crate::util::etl;

#[test]
fn a_spec_written_from_a_sample_loads_the_generators_files_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let generated = std::process::Command::new(env!("CARGO_BIN_EXE_etl-datagen"))
        .args(["--out", data.to_str().unwrap(), "--assets", "200", "--trades", "1000", "--invalid-rate", "0", "--seed", "11"])
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let db = TestDb::new("init");
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    for (file, table, rows) in [("account_assets.csv", "account_assets", 200), ("trades.csv", "trades", 1000)] {
        let spec = data.join(format!("{table}.yaml"));
        let out = etl(&["init", "--from", data.join(file).to_str().unwrap(), "--out", spec.to_str().unwrap()], &[]);
        out.expect_code(0);
        assert!(out.stderr.contains(&format!("from {rows} sampled rows")) && out.stdout.contains(&format!("plan for {table}")), "{}", out.evidence());
        let text = std::fs::read_to_string(&spec).unwrap();
        assert!(text.contains("key: [id]") && text.contains("path: \".\""), "{text}");
        etl(&["validate-spec", spec.to_str().unwrap()], &[]).expect_code(0);
        // Again: refused, the spec is there; with --force, written over.
        etl(&["init", "--from", data.join(file).to_str().unwrap(), "--out", spec.to_str().unwrap()], &[]).expect_code(2);
        let set = format!("connections.db={{type: postgres, url: '{url}', schema: {}}}", db.schema);
        let out = etl(&["run", spec.to_str().unwrap(), "--set", &set], &[("DATABASE_URL", &url)]);
        out.expect_code(0);
        assert_eq!(db.count(&format!("SELECT count(*) FROM {}.{table}", db.schema)), rows, "{}", out.evidence());
    }
    let spec = std::fs::read_to_string(data.join("trades.yaml")).unwrap();
    assert!(spec.contains("stock_code: { type: string }") && spec.contains("traded_time: { type: timestamp, format: \"%Y-%m-%dT%H:%M:%S\" }"), "{spec}");
    assert!(spec.contains("traded_amount: { type: \"decimal("), "{spec}");
    // Every value loaded as the file holds it: codes with leading zeros, money to the cent.
    let csv = std::fs::read_to_string(data.join("trades.csv")).unwrap();
    let expected: Vec<String> = csv.lines().skip(1).map(|l| {
        let f: Vec<&str> = l.split(',').collect();
        format!("{} {} {}", f[0], f[4], f[8])
    }).collect();
    let loaded = db.texts(&format!("SELECT id::text || ' ' || stock_code || ' ' || traded_amount::text FROM {}.trades ORDER BY id", db.schema));
    assert_eq!(loaded, expected);
    assert!(loaded.iter().any(|l| l.split(' ').nth(1).is_some_and(|c| c.starts_with('0'))), "the sample has a code with a leading zero");
}

#[test]
fn a_spec_written_from_the_start_of_an_s3_object_loads_all_of_it_exactly() {
    let data = crate::extract::generate(100, 20_000, 0.0, 12);
    let bucket = crate::run::TestBucket::with_files("init", data.path(), &["trades.csv"]);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("trades.yaml");
    let creds = [
        ("AWS_ACCESS_KEY_ID", bucket.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", bucket.secret_key.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", bucket.endpoint.as_str()),
    ];
    let from = format!("s3://{}/trades.csv", bucket.name);
    // The first MiB only: the object is larger, so the sample ends at its last whole line there.
    let out = etl(&["init", "--from", &from, "--sample-mib", "1", "--key", "id", "--out", spec.to_str().unwrap()], &creds);
    out.expect_code(0);
    let size = std::fs::metadata(data.path().join("trades.csv")).unwrap().len();
    assert!(size > 1 << 20, "the object is not larger than the sample ({size} bytes)");
    let sampled: u64 = regex::Regex::new(r"from (\d+) sampled rows of s3://").unwrap().captures(&out.stderr).map(|c| c[1].parse().unwrap()).unwrap_or_else(|| panic!("{}", out.evidence()));
    assert!(sampled > 1000 && sampled < 20_000, "{}", out.evidence());
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(text.contains(&format!("files: {{ type: s3, bucket: \"{}\", endpoint: \"{}\" }}", bucket.name, bucket.endpoint)), "{text}");
    assert!(text.contains("key: \"trades.csv\"") && text.contains("(its first 1024.0 KiB of "), "{text}");
    if !bucket.secret_key.is_empty() {
        assert!(!text.contains(&bucket.secret_key) && !out.stdout.contains(&bucket.secret_key) && !out.stderr.contains(&bucket.secret_key), "a secret was written");
    }
    etl(&["validate-spec", spec.to_str().unwrap()], &[]).expect_code(0);
    // Run as written (credentials from the environment): every row of the whole object loads,
    // codes with their leading zeros, amounts to the cent.
    let db = TestDb::new("init_s3");
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    let set = format!("connections.db={{type: postgres, url: '{url}', schema: {}}}", db.schema);
    let mut env = creds.to_vec();
    env.push(("DATABASE_URL", url.as_str()));
    let out = etl(&["run", spec.to_str().unwrap(), "--set", &set], &env);
    out.expect_code(0);
    let csv = std::fs::read_to_string(data.path().join("trades.csv")).unwrap();
    let expected: Vec<String> = csv.lines().skip(1).map(|l| {
        let f: Vec<&str> = l.split(',').collect();
        format!("{} {} {}", f[0], f[4], f[8])
    }).collect();
    let loaded = db.texts(&format!("SELECT id::text || ' ' || stock_code || ' ' || traded_amount::text FROM {}.trades ORDER BY id", db.schema));
    assert_eq!(loaded.len(), 20_000, "{}", out.evidence());
    assert_eq!(loaded, expected);
    // An s3:// without a key is refused with the form to use.
    let out = etl(&["init", "--from", &format!("s3://{}", bucket.name)], &creds);
    out.expect_code(2);
    assert!(out.stderr.contains("s3://BUCKET/KEY"), "{}", out.evidence());
}
