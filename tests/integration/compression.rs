//! Compressed sources: gzip and zstd files (by extension, or `csv.compression`) load exactly as
//! the plain file does, from a local folder and from the S3 server, with the same rejects on
//! the same lines of the decompressed text.

use std::io::Write;
use std::path::Path;

use crate::extract::generate;
use crate::run::{TestBucket, TestDb};

fn gzip(from: &Path, to: &Path) {
    let mut e = flate2::write::GzEncoder::new(std::fs::File::create(to).unwrap(), flate2::Compression::default());
    e.write_all(&std::fs::read(from).unwrap()).unwrap();
    e.finish().unwrap();
}

fn zstd(from: &Path, to: &Path) {
    let bytes = zstd::encode_all(std::fs::read(from).unwrap().as_slice(), 3).unwrap();
    std::fs::write(to, bytes).unwrap();
}

/// The rejects CSV without its `source` column (which names the file).
fn rejects(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut fields: Vec<&str> = l.split("\",\"").collect();
            if fields.len() > 2 {
                fields.remove(1);
            }
            fields.join("|")
        })
        .collect()
}

#[test]
fn gzip_and_zstd_files_load_as_the_plain_file_does() {
    let data = generate(200, 1_500, 0.03, 51);
    gzip(&data.path().join("account_assets.csv"), &data.path().join("account_assets.csv.gz"));
    zstd(&data.path().join("trades.csv"), &data.path().join("trades.csv.zst"));
    let out_dir = tempfile::tempdir().unwrap();
    let plain = TestDb::new("plain");
    let packed = TestDb::new("packed");
    let r1 = out_dir.path().join("plain.csv");
    let r2 = out_dir.path().join("packed.csv");
    plain.run(data.path(), &["--rejects-out", r1.to_str().unwrap()]).expect_code(4);
    // (A local path on the command line is taken from the current directory: give it whole.)
    let file = |name: &str| data.path().join(name).display().to_string();
    let out = packed.run(data.path(), &["--assets-file", &file("account_assets.csv.gz"), "--trades-file", &file("trades.csv.zst"), "--rejects-out", r2.to_str().unwrap()]);
    out.expect_code(4);
    for table in ["asset", "trade"] {
        // Every column but the surrogate id (a sequence's numbers, not the data).
        let digest = |db: &TestDb| {
            db.texts(&format!(
                "SELECT count(*)::text || ':' || md5(string_agg((to_jsonb(t) - 'id')::text, '|' ORDER BY (to_jsonb(t) - 'id')::text)) FROM {}.{table} t",
                db.schema
            ))
        };
        assert_eq!(digest(&plain), digest(&packed), "{table} differs\n{}", out.evidence());
    }
    assert_eq!(rejects(&r1), rejects(&r2), "the same rejects on the same lines");
    assert!(rejects(&r1).len() > 10, "the data has rejects to compare");
    // A compressed file without the extension: `csv.compression` says what it is.
    std::fs::rename(data.path().join("trades.csv.zst"), data.path().join("trades.bin")).unwrap();
    let named = TestDb::new("named");
    let out = named.run(data.path(), &["--trades-file", &file("trades.bin"), "--set", "stages.trades.source.csv={compression: zstd}"]);
    out.expect_code(4);
    assert_eq!(
        named.count(&format!("SELECT count(*) FROM {}.trade", named.schema)),
        plain.count(&format!("SELECT count(*) FROM {}.trade", plain.schema)),
        "{}",
        out.evidence()
    );
}

#[test]
fn a_gzip_object_on_s3_loads_and_a_rerun_skips_it() {
    let data = generate(60, 0, 0.0, 52);
    gzip(&data.path().join("account_assets.csv"), &data.path().join("account_assets.csv.gz"));
    let bucket = TestBucket::with_files("gzipped", data.path(), &["account_assets.csv.gz"]);
    let db = TestDb::new("gzipped");
    let out = db.run_s3(&bucket, &["--stage", "assets", "--assets-file", "account_assets.csv.gz"]);
    out.expect_code(0);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 60, "{}", out.evidence());
    let out = db.run_s3(&bucket, &["--stage", "assets", "--assets-file", "account_assets.csv.gz", "--output", "json"]);
    out.expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    assert!(report["stages"][0]["unchanged_since_run"].as_i64().is_some(), "{}", out.evidence());
}
