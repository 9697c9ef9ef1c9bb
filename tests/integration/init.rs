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
