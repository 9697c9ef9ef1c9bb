//! The business date: `run.date` in templates, set by `--date` or today in the spec's time zone,
//! formatted and shifted by filters, so one spec reads each day's file.

use crate::extract::generate;
use crate::run::TestDb;
use crate::util::etl;

#[test]
fn run_date_names_the_days_file() {
    let data = generate(12, 0, 0.0, 41);
    let db = TestDb::new("rundate");
    // The day's file, and the day before's (which must not be read).
    std::fs::rename(data.path().join("account_assets.csv"), data.path().join("assets-20251219.csv")).unwrap();
    std::fs::write(data.path().join("assets-20251218.csv"), "not,the,file\n").unwrap();
    let key = "stages.assets.source.key='assets-{{ run.date | strftime(\"%Y%m%d\") }}.csv'";
    let mut args: Vec<String> = vec!["run".into(), "specs/small_etl.yaml".into(), "--stage".into(), "assets".into()];
    args.extend(db.sets(data.path()));
    args.extend(["--set".into(), key.into(), "--date".into(), "2025-12-19".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = etl(&refs, &[]);
    out.expect_code(0);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 12, "{}", out.evidence());
    // The run is recorded with its business date, and says it.
    assert!(out.stdout.contains("for 2025-12-19: succeeded"), "{}", out.evidence());
    let run_id: i64 = out.stdout.split(" run ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{}", out.evidence()));
    let date = db.texts(&format!("SELECT business_date::text FROM etl_runs WHERE run_id = {run_id}"));
    assert_eq!(date, ["2025-12-19"], "{}", out.evidence());
    // The plan of the next business day names Monday's file (2025-12-19 is a Friday).
    let monday = "stages.assets.source.key='assets-{{ run.date | next_business_day | strftime(\"%Y%m%d\") }}.csv'";
    let out = etl(&["plan", "specs/small_etl.yaml", "--stage", "assets", "--date", "2025-12-19", "--set", monday], &[]);
    out.expect_code(0);
    assert!(out.stdout.contains("assets-20251222.csv"), "{}", out.evidence());
    // A date that is not one is a usage error naming the flag.
    let out = etl(&["plan", "specs/small_etl.yaml", "--date", "2025-13-01"], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("--date"), "{}", out.evidence());
}

/// Without `--date`, `run.date` is today in the spec's `timezone`: Pacific/Kiritimati (UTC+14)
/// and Etc/GMT+12 (UTC-12) are 26 hours apart, so they never share a date.
#[test]
fn run_date_defaults_to_today_in_the_specs_time_zone() {
    let show = |tz: &str| {
        let out = etl(
            &["plan", "specs/small_etl.yaml", "--stage", "assets", "--set", &format!("timezone={tz}"), "--set", "stages.assets.source.key='{{ run.date }}.csv'"],
            &[],
        );
        out.expect_code(0);
        out.stdout.lines().find(|l| l.starts_with("source:")).unwrap_or_else(|| panic!("{}", out.evidence())).to_string()
    };
    let (east, west) = (show("Pacific/Kiritimati"), show("Etc/GMT+12"));
    assert_ne!(east, west, "the two zones' todays differ");
    let out = etl(&["validate-spec", "specs/small_etl.yaml", "--set", "timezone=Mars/Olympus"], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("not an IANA time zone"), "{}", out.evidence());
}
