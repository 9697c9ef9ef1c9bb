//! The command line: clap definitions (`args`), the one `prepare` step from flags to a Plan and
//! its options (shared with the scheduler), dispatch to the spec layer, the compiler and the
//! executor, and rendering: reports on stdout (`render`), every error once, on stderr, with its
//! exit code (`error`). `etl schedule` lives in `schedule`, `etl backfill` in `backfill`, `etl report` in `report`;
//! each run's temporary directory in `scratch`.

pub mod args;
pub mod backfill;
pub mod error;
pub mod init;
pub mod metrics;
pub mod prepare;
pub mod rejects;
pub mod render;
pub mod report;
pub mod schedule;
pub mod scratch;
pub mod worker;

use std::io::IsTerminal;
use std::process::ExitCode;

pub use args::{Cli, Color, Command};
use error::CliError;
use prepare::{load_offline, prepare, prepare_offline};
use render::print;

use crate::{exec, exit, plan, spec};

fn use_color(choice: Color) -> bool {
    match choice {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal(),
    }
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let color = use_color(cli.color);
    let json = cli.command.json_output();
    match dispatch(cli.command, color) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprint!("{}", e.render(color));
            // `--output json` always prints one document: a machine reading stdout learns why.
            if json {
                let doc = serde_json::json!({ "status": "error", "exit_code": e.exit_code(), "error": e.to_string(), "details": e.render(false) });
                print(&format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default()));
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn dispatch(command: Command, color: bool) -> Result<u8, CliError> {
    match command {
        Command::Run(args) => run_spec(args, None),
        Command::Assets(args) => run_spec(args, Some("assets")),
        Command::Trades(args) => run_spec(args, Some("trades")),
        Command::Backfill(args) => backfill::run(args, color),
        Command::Worker(args) => worker::run(args),
        Command::Clean(args) => clean(&args),
        Command::Migrate(args) => {
            let p = prepare(&args.as_run_args())?;
            let label = exec::admin::migrate(&p.plan)?;
            print(&format!("migrations applied to {label}\n"));
            Ok(exit::OK)
        }
        Command::Schedule { action } => schedule::run(action).map(|()| exit::OK),
        Command::Rejects { action } => rejects::run(action),
        Command::Report(args) => report::run(args),
        Command::Init(args) => init::run(args),
        Command::Schema { markdown } => {
            if markdown {
                print(&spec::reference::markdown(&spec::schema::schema()));
            } else {
                print(&spec::schema::schema_text());
            }
            Ok(exit::OK)
        }
        Command::ValidateSpec { specs, spec, output } => Ok(validate(&specs, &spec, output, color)),
        Command::Plan(args) => {
            let p = prepare_offline(&args)?;
            match args.output {
                args::Output::Text => print(&plan::render::render(&p.plan, &args.stages)),
                args::Output::Json => {
                    print(&format!("{}\n", serde_json::to_string_pretty(&plan::render::render_json(&p.plan, &args.stages)).unwrap_or_default()))
                }
            }
            Ok(exit::OK)
        }
    }
}

/// `etl validate-spec`: every spec checked, each one's problems shown; exit 2 when any fails.
fn validate(specs: &[std::path::PathBuf], args: &args::SpecArgs, output: args::Output, color: bool) -> u8 {
    let mut failed = 0;
    let mut docs = Vec::new();
    for path in specs {
        match load_offline(path, args) {
            Ok(l) => {
                let s = &l.spec;
                if output == args::Output::Json {
                    docs.push(serde_json::json!({
                        "spec": path.display().to_string(), "valid": true, "name": s.name,
                        "stages": s.stages.len(), "analytics": s.analytics.len(), "schedules": s.schedules.len(), "problems": [],
                    }));
                    continue;
                }
                print(&format!(
                    "ok: {} ({}: {} stage(s), {} analytics, {} schedule(s))\n",
                    path.display(),
                    s.name,
                    s.stages.len(),
                    s.analytics.len(),
                    s.schedules.len()
                ));
            }
            Err(e) => {
                failed += 1;
                if output == args::Output::Json {
                    let problems = match &e {
                        CliError::Spec(se) => se.problems_json(),
                        other => vec![serde_json::json!({ "message": other.to_string() })],
                    };
                    docs.push(serde_json::json!({ "spec": path.display().to_string(), "valid": false, "problems": problems }));
                } else {
                    eprint!("{}", e.render(color));
                }
            }
        }
    }
    if output == args::Output::Json {
        print(&format!("{}\n", serde_json::to_string_pretty(&serde_json::json!({ "specs": docs })).unwrap_or_default()));
    } else if failed > 0 && specs.len() > 1 {
        eprintln!("{failed} of {} specs are invalid", specs.len());
    }
    if failed > 0 { exit::USAGE } else { exit::OK }
}

fn run_spec(mut args: args::RunArgs, alias: Option<&str>) -> Result<u8, CliError> {
    if let Some(stage) = alias {
        args.stages.push(stage.to_string());
    }
    let p = prepare(&args)?;
    // The rejects file is opened before anything loads: a path that cannot be written is found
    // before a commit, not after. `-` is standard output, and the report goes to standard error.
    let write_err = |file: &std::path::Path, e: std::io::Error| CliError::System { what: format!("write {}", file.display()), message: e.to_string() };
    let rejects_out = match args.rejects_out.as_deref() {
        Some(f) if f == std::path::Path::new("-") => Some(None),
        Some(f) => Some(Some((f, std::fs::File::create(f).map_err(|e| write_err(f, e))?))),
        None => None,
    };
    let metrics_failed = |file: &std::path::Path, e: String| CliError::System { what: format!("write the metrics to {}", file.display()), message: e };
    let report = match exec::run(&p.plan, &p.opts) {
        Ok(report) => report,
        Err(e) => {
            if let Some(file) = &args.metrics_file {
                let date = p.opts.date.format("%Y-%m-%d").to_string();
                if let Err(m) = metrics::write(metrics::failure_text(&p.plan.name, &date, e.run_status().as_str()), file) {
                    eprint!("{}", metrics_failed(file, m).render(false));
                }
            }
            return Err(e.into());
        }
    };
    if let Some(file) = &args.metrics_file {
        metrics::write(metrics::text(&report), file).map_err(|e| metrics_failed(file, e))?;
    }
    let shown = match args.output {
        args::Output::Text => render::text(&report),
        args::Output::Json => render::json(&report),
    };
    let shown = if args.quiet { String::new() } else { shown };
    match rejects_out {
        Some(Some((f, mut file))) => {
            use std::io::Write;
            file.write_all(&render::rejects_csv(&report)).map_err(|e| write_err(f, e))?;
            print(&shown);
        }
        Some(None) => {
            {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                out.write_all(&render::rejects_csv(&report)).and_then(|()| out.flush()).map_err(|e| write_err(std::path::Path::new("-"), e))?;
            }
            eprint!("{shown}");
        }
        None => print(&shown),
    }
    Ok(report.exit_code())
}

fn clean(args: &args::CleanArgs) -> Result<u8, CliError> {
    let p = prepare(&args.as_run_args())?;
    let tables: Vec<String> = p.plan.select(p.opts.stages.as_deref()).iter().map(|s| s.target.table.clone()).collect();
    if !args.yes && !std::io::stdin().is_terminal() {
        // Nobody to ask (cron, CI, a pipe): destroying data needs it said, as terraform's
        // -auto-approve.
        return Err(CliError::flag(
            "etl clean",
            format!("would empty table(s) {} of spec {}, and there is no terminal to ask", tables.join(", "), p.plan.name),
            "add --yes to empty them without asking",
        ));
    }
    if !args.yes {
        eprint!("Empty table(s) {} of spec {}? [y/N] ", tables.join(", "), p.plan.name);
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing emptied");
            return Ok(exit::OK);
        }
    }
    let done = exec::admin::clean(&p.plan, &p.opts)?;
    if done.is_empty() {
        print("nothing to empty: the tables do not exist yet\n");
    } else {
        print(&format!("emptied {}\n", done.join(", ")));
    }
    Ok(exit::OK)
}
