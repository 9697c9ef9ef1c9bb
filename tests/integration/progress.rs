//! Progress on a terminal: under a real pseudo-terminal (util-linux `script`), `etl run` draws
//! indicatif bars (each stage's rows validated and copied with their rate, the bytes downloaded
//! with rate and ETA) above which each step is a line; off a terminal it draws none, and with
//! `--quiet` none either.

use std::process::Command;

use crate::extract::generate;
use crate::run::{TestBucket, TestDb};
use crate::util::{cache_dir, etl, root};

/// Runs `etl ARGS` under a pseudo-terminal, with `env`; what the terminal showed.
fn on_a_terminal(args: &[String], env: &[(&str, String)]) -> String {
    let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
    let line = std::iter::once(quote(env!("CARGO_BIN_EXE_etl"))).chain(args.iter().map(|a| quote(a))).collect::<Vec<_>>().join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["-qefc", &line, "/dev/null"]).current_dir(root()).env_clear();
    for var in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.env("TERM", "xterm-256color").env("COLUMNS", "140").env("LINES", "40").env("ETL_CACHE_DIR", cache_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("util-linux `script` runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn args(db: &TestDb, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["run".into(), "specs/small_etl.yaml".into(), "--set".into()];
    a.push(format!("connections.db={{type: postgres, url: '{}', schema: {}}}", db.url, db.schema));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn a_run_on_a_terminal_draws_bars_and_none_off_a_terminal_or_when_quiet() {
    let data = generate(2_000, 60_000, 0.0, 71);
    let bucket = TestBucket::with_files("progress", data.path(), &["account_assets.csv", "trades.csv"]);
    let env = bucket.env();
    let db = TestDb::new("progress");
    let shown = on_a_terminal(&args(&db, &[]), &env);
    let evidence = || format!("--- the terminal showed ---\n{shown}");
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.trade", db.schema)), 60_000, "{}", evidence());
    // Drawn and redrawn in place, each stage's final count with its rate, each download with its
    // size, rate and ETA, and the steps as lines above the bars.
    assert!(shown.contains("\x1b["), "no terminal control sequence: no bar was drawn\n{}", evidence());
    let plain = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").unwrap().replace_all(&shown, "").replace('\r', "\n");
    let rows = regex::Regex::new(r"✓ trades: 60,000 valid rows validated and copied · [0-9,]+/s · \d+[a-z]+").unwrap();
    assert!(rows.is_match(&plain), "no finished rows bar for trades\n{}", evidence());
    let size = std::fs::metadata(data.path().join("trades.csv")).unwrap().len();
    let download = regex::Regex::new(r"trades: download \[=+\] ([0-9.]+ [KMGT]?i?B)/([0-9.]+ [KMGT]?i?B) · [0-9.]+ [KMGT]?i?B/s · ETA \d+[a-z]+").unwrap();
    let found = download.captures_iter(&plain).last().unwrap_or_else(|| panic!("no download bar for trades ({size} bytes)\n{}", evidence()));
    assert_eq!(&found[1], &found[2], "the download bar did not end full\n{}", evidence());
    assert!(plain.contains("] trades: 60000 rows read, 0 rejected;"), "no step line\n{}", evidence());

    // Off a terminal: no bar, no control sequence; with -v, each step as a timestamped line.
    let again = TestDb::new("progress_pipe");
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refs = args(&again, &["-v"]);
    let out = etl(&refs.iter().map(String::as_str).collect::<Vec<_>>(), &env_ref);
    out.expect_code(0);
    assert!(!out.stderr.contains("validated and copied") && !out.stderr.contains('\x1b') && !out.stderr.contains("download ["), "{}", out.evidence());
    assert!(regex::Regex::new(r"(?m)^\[ *[0-9.]+s\] trades: 60000 rows read, 0 rejected;").unwrap().is_match(&out.stderr), "no step line off a terminal with -v\n{}", out.evidence());

    // Quiet on a terminal: the report, and no bar.
    let quiet = TestDb::new("progress_quiet");
    let shown = on_a_terminal(&args(&quiet, &["--quiet"]), &env);
    assert_eq!(quiet.count(&format!("SELECT count(*) FROM {}.trade", quiet.schema)), 60_000, "{shown}");
    assert!(!shown.contains("validated and copied") && !shown.contains("download ["), "--quiet drew bars:\n{shown}");
}
