//! Secrets never shown: every command, on success and on failure, runs with a PostgreSQL
//! password and an S3 secret key that are easy to find (the role `etl_secret`, created by
//! scripts/services.sh), and neither appears in any stdout or stderr, nor in any row of the
//! engine's tables.

use crate::extract::generate;
use crate::run::{TestBucket, TestDb};
use crate::util::{Output, etl};

const PG_SECRET: &str = "Xyzzy-5150-PgSecret";
const WRONG_SECRET: &str = "Xyzzy-Wrong-Password";
const S3_SECRET: &str = "Xyzzy-S3-SecretKey";

/// A command's arguments, the environment it overrides and its expected exit code.
type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, i32);

#[test]
fn no_password_or_secret_key_appears_in_any_output_or_record() {
    let data = generate(20, 40, 0.1, 14);
    let db = TestDb::new("secrets");
    db.exec(&format!("GRANT ALL ON SCHEMA {} TO etl_secret", db.schema));
    let bucket = TestBucket::with_files("secrets", data.path(), &["account_assets.csv", "trades.csv"]);
    let url = |password: &str, port: u16| {
        format!("postgres://etl_secret:{password}@127.0.0.1:{port}/etl_test?options=-c%20search_path%3D{}", db.schema)
    };
    let port: u16 = std::env::var("ETL_PG_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(15432);
    let good = url(PG_SECRET, port);
    let mut env: Vec<(&str, String)> = bucket.env().into_iter().filter(|(k, _)| *k != "S3_SECRET_KEY").collect();
    env.push(("S3_SECRET_KEY", S3_SECRET.to_string()));
    env.push(("DATABASE_URL", good.clone()));
    let lake = format!("connections.lake={{type: local, path: '{}'}}", data.path().display());
    let schema = format!("connections.db.schema={}", db.schema);
    let local = ["--set", lake.as_str(), "--set", schema.as_str()];
    let in_s3 = ["--set", schema.as_str()];
    let spec = "specs/small_etl.yaml";
    let wrong_url = url(WRONG_SECRET, port);
    let closed_port = url(PG_SECRET, 1);
    let cases: Vec<Case> = vec![
        (vec!["validate-spec", spec], vec![], 0),
        (vec!["plan", spec], vec![], 0),
        (vec!["migrate", spec], vec![], 0),
        ([&["run", spec, "--output", "json"][..], &local].concat(), vec![], 4),
        ([&["run", spec, "-v"][..], &local].concat(), vec![], 4),
        ([&["run", spec, "--dry-run", "-v"][..], &local].concat(), vec![], 4),
        ([&["run", spec, "--output", "json"][..], &in_s3].concat(), vec![], 4),
        ([&["run", spec, "--s3-bucket", "no-such-bucket"][..], &in_s3].concat(), vec![], 3),
        ([&["run", spec][..], &local].concat(), vec![("DATABASE_URL", wrong_url.as_str())], 3),
        ([&["run", spec][..], &local].concat(), vec![("DATABASE_URL", closed_port.as_str())], 3),
        ([&["run", spec, "--output", "json"][..], &local].concat(), vec![("DATABASE_URL", wrong_url.as_str())], 3),
        (vec!["schedule", "add", "--job-id", "j", "--interval", "day", "--at", "03:00", "--spec", spec], vec![], 0),
        (vec!["schedule", "list", "--spec", spec], vec![], 0),
        (vec!["schedule", "list", "--spec", spec], vec![("DATABASE_URL", wrong_url.as_str())], 3),
        (vec!["schedule", "remove", "--job-id", "j", "--spec", spec], vec![], 0),
        ([&["clean", spec, "--yes"][..], &local].concat(), vec![], 0),
    ];
    let mut outputs: Vec<Output> = Vec::new();
    for (args, over, code) in &cases {
        let mut e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).filter(|(k, _)| !over.iter().any(|(o, _)| o == k)).collect();
        e.extend(over.iter().copied());
        let out = etl(args, &e);
        assert_eq!(out.code, *code, "unexpected exit code\n{}", out.evidence());
        outputs.push(out);
    }
    for out in &outputs {
        for secret in [PG_SECRET, WRONG_SECRET, S3_SECRET] {
            assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret), "`{secret}` leaked\n{}", out.evidence());
        }
    }
    for table in ["etl_runs", "etl_run_stages", "etl_rejects", "etl_schedules", "etl_schedule_firings"] {
        let leaked = db.count(&format!(
            "SELECT count(*) FROM {}.{table} AS t WHERE t::text LIKE '%Xyzzy%'",
            db.schema
        ));
        assert_eq!(leaked, 0, "a secret is stored in {table}");
    }
    let runs = db.count(&format!("SELECT count(*) FROM {}.etl_runs", db.schema));
    assert!(runs >= 4, "the runs were recorded in the test's schema: {runs}");
}
