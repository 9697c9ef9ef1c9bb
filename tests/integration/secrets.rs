//! Secrets never shown: every command, on success and on failure, runs with a PostgreSQL
//! password and an S3 secret key that are easy to find (the role `etl_secret`, created by
//! scripts/services.sh), and neither appears in any stdout or stderr, nor in any row of the
//! engine's tables.

use std::path::Path;
use std::time::Duration;

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
    // Searched while they hold rows (firings are searched by the test below, which runs a
    // scheduler).
    for table in ["etl_runs", "etl_run_stages", "etl_rejects", "etl_schedules", "asset", "trade"] {
        let rows = db.count(&format!("SELECT count(*) FROM {}.{table}", db.schema));
        assert!(rows > 0, "{table} holds no row to search");
        let leaked = db.count(&format!(
            "SELECT count(*) FROM {}.{table} AS t WHERE t::text LIKE '%Xyzzy%'",
            db.schema
        ));
        assert_eq!(leaked, 0, "a secret is stored in {table}");
    }
    let runs = db.count(&format!("SELECT count(*) FROM {}.etl_runs", db.schema));
    assert!(runs >= 4, "the runs were recorded in the test's schema: {runs}");
    // And the commands that change them, once they have been searched.
    let after: Vec<Case> = vec![
        (vec!["schedule", "remove", "--job-id", "j", "--spec", spec], vec![], 0),
        ([&["clean", spec, "--yes"][..], &local].concat(), vec![], 0),
    ];
    for (args, over, code) in &after {
        let mut e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).filter(|(k, _)| !over.iter().any(|(o, _)| o == k)).collect();
        e.extend(over.iter().copied());
        let out = etl(args, &e);
        assert_eq!(out.code, *code, "unexpected exit code\n{}", out.evidence());
        for secret in [PG_SECRET, WRONG_SECRET, S3_SECRET] {
            assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret), "`{secret}` leaked\n{}", out.evidence());
        }
    }
}

/// Secrets written into the spec itself: a literal password in the spec file, in an `--env`
/// overlay and in `--set`, each next to a mistake, never appear in a diagnostic (whose snippet
/// quotes the lines around the mistake); and a valid spec with a literal password loads, plans,
/// writes rejects and runs scheduled firings without showing it anywhere, in any output, log or
/// row of the engine's tables (each holding rows when it is searched).
#[test]
fn a_secret_written_in_the_spec_an_overlay_or_a_set_is_never_shown() {
    const OVERLAY_SECRET: &str = "Xyzzy-Overlay-Literal-2";
    const SET_SECRET: &str = "Xyzzy-Set-Literal-3";
    const NUMBER_SECRET: &str = "987654321012";
    // A secret a template takes from `vars`, and one kept under an `x-*` key (where anchors for
    // connections live) that no connection uses: each shown nowhere, next to a mistake.
    const VARS_SECRET: &str = "Xyzzy-Vars-Literal-4";
    const ANCHOR_SECRET: &str = "Xyzzy-Anchor-Literal-5";
    // A secret too short to be looked for in a problem's words is still masked where it is
    // written: in the spec, and in a `--set`.
    const SHORT_SECRET: &str = "Qz~";
    // A webhook's URL is a secret too: the spec's `notify` and a schedule's own.
    const HOOK_SECRET: &str = "Xyzzy-Hook-Literal-6";
    const SCHEDULE_HOOK_SECRET: &str = "Xyzzy-Schedule-Hook-Literal-7";
    // And one a template takes from `vars`: masked where the variable is written.
    const VARS_HOOK_SECRET: &str = "Xyzzy-Vars-Hook-Literal-8";
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("account_assets.csv"), "account_id,cash\nA1,10.00\nA2,-5.00\nA3,not money\nA4,7.25\n").unwrap();
    let db = TestDb::new("spec_secrets");
    db.exec(&format!("GRANT ALL ON SCHEMA {} TO etl_secret", db.schema));
    let port: u16 = std::env::var("ETL_PG_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(15432);
    let dir = tempfile::tempdir().unwrap();
    let spec = |db_line: &str, after: &str| {
        format!(
            "version: 1\nname: secrets\nconnections:\n  lake: {{ type: local, path: '{data}' }}\n{db_line}\n{after}stages:\n  assets:\n    source: {{ connection: lake, key: account_assets.csv }}\n    target: {{ connection: db, table: asset, key: [account_id] }}\n    columns:\n      account_id: {{ type: string, max_length: 20 }}\n      cash: {{ type: \"decimal(20,2)\", min: 0 }}\nschedules:\n  often: {{ cron: \"*/2 * * * * *\", stages: all }}\n",
            data = data.path().display()
        )
    };
    let db_line = |password: &str, extra: &str| {
        format!(
            "  db: {{ type: postgres, url: 'postgres://etl_secret@127.0.0.1:{port}/etl_test?options=-c%20search_path%3D{s}', password: {password}, schema: {s}{extra} }}",
            s = db.schema
        )
    };
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let good = write("good.yaml", &spec(&db_line(&format!("\"{PG_SECRET}\""), ""), ""));
    let typo = write("typo.yaml", &spec(&db_line(&format!("\"{PG_SECRET}\""), ", prot: 1"), ""));
    let broken = write("broken.yaml", &spec(&db_line(&format!("\"{PG_SECRET}\""), ""), "  bad: [\n"));
    let number = write("number.yaml", &spec(&db_line(NUMBER_SECRET, ""), ""));
    let templated = write("templated.yaml", &spec(&db_line("\"{{ env.PG_PW }}\"", ", prot: 1"), ""));
    let from_vars = write("vars.yaml", &spec(&db_line("\"{{ vars.pw }}\"", ""), &format!("vars:\n  pw: \"{VARS_SECRET}\"\nbogus_top: 1\n")));
    let short = write("short.yaml", &spec(&db_line(&format!("\"{SHORT_SECRET}\""), ", prot: 1"), ""));
    let set_short = format!("connections.lake.password={SHORT_SECRET}");
    let anchored = write("anchor.yaml", &spec(&db_line(&format!("\"{PG_SECRET}\""), ""), &format!("x-unused:\n  password: \"{ANCHOR_SECRET}\"\nbogus_top: 1\n")));
    // Each URL on the line of a mistake (`retires`), a snippet quoting it.
    let hook = |secret: &str| format!("{{ url: \"http://127.0.0.1:9/hooks/{secret}\", on: [failed], retires: 1 }}");
    let hooked = write(
        "hooks.yaml",
        &spec(&db_line(&format!("\"{PG_SECRET}\""), ""), &format!("notify:\n  - {}\n", hook(HOOK_SECRET)))
            .replace("stages: all }", &format!("stages: all, notify: [{}] }}", hook(SCHEDULE_HOOK_SECRET))),
    );
    let hooked_by_vars = write(
        "hooks-vars.yaml",
        &spec(&db_line(&format!("\"{PG_SECRET}\""), ""), &format!("vars:\n  hook: \"http://127.0.0.1:9/hooks/{VARS_HOOK_SECRET}\"\nbogus_top: 1\nnotify:\n  - {{ url: \"{{{{ vars.hook }}}}\" }}\n")),
    );
    let configs = tempfile::tempdir().unwrap();
    std::fs::write(configs.path().join("leaky.yaml"), format!("connections:\n  db:\n    password: \"{OVERLAY_SECRET}\"\n    prot: 2\n")).unwrap();
    let config_dir = configs.path().display().to_string();
    let set_password = format!("connections.db.password={SET_SECRET}");
    let set_whole = format!("connections.db={{type: postgres, password: \"{SET_SECRET}\", prot: 1}}");
    let set_colon = format!("connections.db.password:{SET_SECRET}");
    // A mapping given whole: its fields are not placed one by one, and a short secret among them
    // is not looked for as a word either; it is masked in the `--set`'s own text.
    let set_whole_short = format!("connections.db={{type: postgres, password: \"{SHORT_SECRET}\", prot: 1}}");
    let rejects = dir.path().join("rejects.csv").display().to_string();
    let cases: Vec<Case> = vec![
        (vec!["validate-spec", &typo], vec![], 2),
        (vec!["plan", &typo], vec![], 2),
        (vec!["run", &typo], vec![], 2),
        (vec!["schedule", "list", "--spec", &typo], vec![], 2),
        (vec!["validate-spec", &broken], vec![], 2),
        (vec!["run", &broken], vec![], 2),
        (vec!["validate-spec", &number], vec![], 2),
        (vec!["validate-spec", &templated], vec![("PG_PW", PG_SECRET)], 2),
        (vec!["validate-spec", &from_vars], vec![], 2),
        (vec!["plan", &from_vars], vec![], 2),
        (vec!["validate-spec", &anchored], vec![], 2),
        (vec!["validate-spec", &short], vec![], 2),
        (vec!["validate-spec", &hooked], vec![], 2),
        (vec!["plan", &hooked], vec![], 2),
        (vec!["validate-spec", &hooked_by_vars], vec![], 2),
        (vec!["validate-spec", &good, "--set", &set_short], vec![], 2),
        (vec!["validate-spec", &good, "--env", "leaky", "--config-dir", &config_dir], vec![], 2),
        (vec!["run", &good, "--env", "leaky", "--config-dir", &config_dir], vec![], 2),
        (vec!["validate-spec", &good, "--set", &set_password, "--set", "connections.db.port=notaport"], vec![], 2),
        (vec!["plan", &good, "--set", &set_whole], vec![], 2),
        (vec!["validate-spec", &good, "--set", &set_colon], vec![], 2),
        (vec!["validate-spec", &good, "--set", &set_whole_short], vec![], 2),
        (vec!["plan", &good], vec![], 0),
        (vec!["run", &good, "--rejects-out", &rejects, "-v"], vec![], 4),
        (vec!["run", &good, "--output", "json"], vec![], 4),
        (vec!["schedule", "add", "--job-id", "kept", "--interval", "day", "--at", "03:00", "--spec", &good], vec![], 0),
    ];
    let secrets = [PG_SECRET, OVERLAY_SECRET, SET_SECRET, NUMBER_SECRET, VARS_SECRET, ANCHOR_SECRET, SHORT_SECRET, HOOK_SECRET, SCHEDULE_HOOK_SECRET, VARS_HOOK_SECRET];
    for (args, env, code) in &cases {
        let out = etl(args, env);
        assert_eq!(out.code, *code, "unexpected exit code\n{}", out.evidence());
        for secret in secrets {
            assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret), "`{secret}` leaked\n{}", out.evidence());
        }
        // Masking a secret hides it alone: the line after the variable it came from is shown.
        if args.contains(&from_vars.as_str()) || args.contains(&hooked_by_vars.as_str()) {
            assert!(out.stderr.contains("bogus_top: 1"), "more than the secret was masked\n{}", out.evidence());
        }
        // Both webhooks' mistakes are reported, each line quoted with its URL masked.
        if args.contains(&hooked.as_str()) {
            for place in ["in `notify[0]`", "in `schedules.often.notify[0]`"] {
                assert!(out.stderr.contains(place), "the mistake {place} not reported\n{}", out.evidence());
            }
            assert_eq!(out.stderr.matches(", on: [failed], retires: 1 }").count(), 2, "both lines quoted\n{}", out.evidence());
        }
        if *code == 2 && args[0] != "schedule" {
            // The diagnostic still places the mistake: a snippet of the lines around it.
            assert!(out.stderr.contains('│'), "no source snippet to check\n{}", out.evidence());
        }
    }
    let written = std::fs::read_to_string(&rejects).unwrap();
    assert!(written.lines().count() > 1 && !secrets.iter().any(|s| written.contains(s)), "{written}");
    // The scheduler registers the spec's job and fires it; its log and its rows hide the secret.
    let log = dir.path().join("scheduler.log");
    let scheduler = crate::schedule::Scheduler::start(Path::new(&good), log);
    let firings = || db.count(&format!("SELECT count(*) FROM {}.etl_schedule_firings WHERE status IS NOT NULL", db.schema));
    crate::schedule::wait_for("a finished firing", Duration::from_secs(60), || firings() > 0, || scheduler.log());
    let (code, log) = scheduler.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!secrets.iter().any(|s| log.contains(s)), "a secret is in the scheduler's log:\n{log}");
    for table in ["etl_runs", "etl_run_stages", "etl_rejects", "etl_schedules", "etl_schedule_firings", "asset"] {
        let rows = db.count(&format!("SELECT count(*) FROM {}.{table}", db.schema));
        assert!(rows > 0, "{table} holds no row to search");
        let leaked = db.count(&format!("SELECT count(*) FROM {}.{table} AS t WHERE t::text LIKE '%Xyzzy%' OR t::text LIKE '%{NUMBER_SECRET}%'", db.schema));
        assert_eq!(leaked, 0, "a secret is stored in {table}");
    }
}

/// Only secrets are masked: a `url` or `password` that is not a connection's or a webhook's (a
/// variable's, a column's name) is shown as written, next to its mistake.
#[test]
fn values_that_are_not_secrets_are_shown() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("shown.yaml");
    std::fs::write(
        &spec,
        "version: 1\nname: shown\nvars:\n  site: { url: \"http://not-a-secret.example/docs\", notify: [{ url: \"http://not-a-secret.example/hook\" }] }\nbogus_top: 1\nconnections:\n  lake: { type: local, path: data }\n  db: { type: duckdb, file: out.duckdb }\nstages:\n  users:\n    source: { connection: lake, key: users.csv }\n    target: { connection: db, table: users, key: [name] }\n    columns:\n      name: { type: string }\n      password: { type: strng }\n",
    )
    .unwrap();
    let out = etl(&["validate-spec", spec.to_str().unwrap()], &[]);
    out.expect_code(2);
    // (a variable's `notify` list is not a webhook's: only the spec's and a schedule's are)
    for shown in ["http://not-a-secret.example/docs", "http://not-a-secret.example/hook", "password: { type: strng }"] {
        assert!(out.stderr.contains(shown), "`{shown}` is not a secret, and is shown\n{}", out.evidence());
    }
}
