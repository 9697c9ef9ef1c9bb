//! `etl backfill`: one run per business date from `--from` to `--to`, oldest first, each as `etl
//! run --date D` would make it (its own record in etl_runs with its date); dates a finished run
//! already loaded are skipped (read from the run records), so a stopped backfill resumes.

use super::args::{BackfillArgs, Output};
use super::error::CliError;
use super::prepare::prepare;
use super::render::{print, table};
use crate::exec::RunReport;
use crate::{exec, exit};

/// What became of one date.
struct DateOutcome {
    date: chrono::NaiveDate,
    /// `loaded_before`, a run's status, `failed` (or `missing`, `late`), or `not_run` (after a
    /// stop).
    status: String,
    exit_code: Option<u8>,
    error: Option<String>,
    report: Option<RunReport>,
}

/// Runs a backfill; the exit code is the first failed date's, else 4 when a date rejected rows.
pub fn run(mut args: BackfillArgs, color: bool) -> Result<u8, CliError> {
    if let Some(d) = args.run.spec.date {
        return Err(CliError::flag(format!("--date {d}"), "a backfill runs every date from --from to --to", "drop --date; for one date, `etl run --date D`"));
    }
    if args.from > args.to {
        return Err(CliError::flag(format!("--from {} --to {}", args.from, args.to), "--from is after --to", "give the earlier date to --from"));
    }
    if args.run.rejects_out.is_some() {
        return Err(CliError::flag(
            "--rejects-out",
            "a backfill is one run per date, and each keeps its rejects in etl_rejects",
            "read them there by run, or run `etl run --date D --rejects-out FILE` for one date",
        ));
    }
    let dates: Vec<chrono::NaiveDate> = args.from.iter_days().take_while(|d| *d <= args.to).collect();
    let quiet = args.run.quiet;
    let say = |line: String| {
        if !quiet {
            eprintln!("backfill: {line}");
        }
    };
    // What is already loaded, read once from the records target: a resumed backfill skips it.
    let done = {
        args.run.spec.date = Some(args.from);
        let p = prepare(&args.run)?;
        if p.opts.dry_run { Default::default() } else { exec::admin::dates_done(&p.plan, &p.opts, args.from, args.to)? }
    };
    let mut outcomes: Vec<DateOutcome> = Vec::new();
    let mut stopped = false;
    for (i, date) in dates.iter().copied().enumerate() {
        let left = dates.len() - i - 1;
        if stopped {
            outcomes.push(DateOutcome { date, status: "not_run".into(), exit_code: None, error: None, report: None });
            continue;
        }
        if done.contains(&date) {
            say(format!("{date} ({} of {}): loaded by an earlier run, skipped; {left} left", i + 1, dates.len()));
            outcomes.push(DateOutcome { date, status: "loaded_before".into(), exit_code: Some(exit::OK), error: None, report: None });
            continue;
        }
        say(format!("{date} ({} of {}): running", i + 1, dates.len()));
        args.run.spec.date = Some(date);
        let outcome = prepare(&args.run).and_then(|p| Ok(exec::run(&p.plan, &p.opts)?));
        let o = match outcome {
            Ok(report) => {
                let code = report.exit_code();
                let run = report.run_id.map_or(String::new(), |r| format!(" (run {r})"));
                say(format!("{date}: {}{run}; {left} left", report.status));
                DateOutcome { date, status: report.status.to_string(), exit_code: Some(code), error: report.analytics_failed(), report: Some(report) }
            }
            Err(e) => {
                if !quiet {
                    eprint!("{}", e.render(color));
                }
                let status = match &e {
                    CliError::Exec(x) => x.run_status().as_str(),
                    _ => "failed",
                };
                say(format!("{date}: {status} (exit {}); {left} left", e.exit_code()));
                DateOutcome { date, status: status.into(), exit_code: Some(e.exit_code()), error: Some(e.to_string()), report: None }
            }
        };
        let failed = !matches!(o.exit_code, Some(exit::OK | exit::REJECTED));
        outcomes.push(o);
        if failed && !args.keep_going {
            if left > 0 {
                say(format!("stopped at {date}: {left} date(s) not run (--keep-going goes on; running the backfill again resumes here)"));
            }
            stopped = true;
        }
    }
    let code = exit_code(&outcomes);
    if !quiet {
        match args.run.output {
            Output::Text => print(&text(&outcomes)),
            Output::Json => print(&json(&outcomes, code)),
        }
    }
    Ok(code)
}

/// The first failed date's code; else 4 when a date rejected rows; else 0.
fn exit_code(outcomes: &[DateOutcome]) -> u8 {
    let codes: Vec<u8> = outcomes.iter().filter_map(|o| o.exit_code).collect();
    codes.iter().copied().find(|c| !matches!(*c, exit::OK | exit::REJECTED)).unwrap_or(if codes.contains(&exit::REJECTED) { exit::REJECTED } else { exit::OK })
}

fn text(outcomes: &[DateOutcome]) -> String {
    let header = ["date", "status", "run", "read", "rejected", "exit"].map(String::from);
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            let (run, read, rejected) = o.report.as_ref().map_or(("-".into(), "-".into(), "-".into()), |r| {
                (r.run_id.map_or("-".into(), |i| i.to_string()), r.stages.iter().map(|s| s.rows_read).sum::<u64>().to_string(), r.stages.iter().map(|s| s.rows_rejected).sum::<u64>().to_string())
            });
            vec![o.date.to_string(), o.status.clone(), run, read, rejected, o.exit_code.map_or("-".into(), |c| c.to_string())]
        })
        .collect();
    let count = |s: &str| outcomes.iter().filter(|o| o.status == s).count();
    let ran = outcomes.iter().filter(|o| o.report.is_some() || o.status == "failed").count();
    let mut out = format!(
        "backfill {} to {}: {} date(s): {ran} run, {} loaded before, {} failed, {} not run\n",
        outcomes.first().map(|o| o.date.to_string()).unwrap_or_default(),
        outcomes.last().map(|o| o.date.to_string()).unwrap_or_default(),
        outcomes.len(),
        count("loaded_before"),
        outcomes.iter().filter(|o| !matches!(o.exit_code, None | Some(exit::OK | exit::REJECTED))).count(),
        count("not_run"),
    );
    table(&mut out, &header, &rows);
    for o in outcomes {
        if let Some(e) = &o.error {
            out.push_str(&format!("{}: {e}\n", o.date));
        }
    }
    out
}

fn json(outcomes: &[DateOutcome], code: u8) -> String {
    let dates: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| serde_json::json!({ "date": o.date.to_string(), "status": o.status, "exit_code": o.exit_code, "error": o.error, "run": o.report }))
        .collect();
    let doc = serde_json::json!({ "exit_code": code, "dates": dates });
    format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default())
}
