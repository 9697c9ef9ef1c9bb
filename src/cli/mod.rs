//! The command line: clap definitions (`args`), the one `prepare` step from flags to a Plan and
//! its options (shared with the scheduler), dispatch to the spec layer, the compiler and the
//! executor, and rendering: reports on stdout (`render`), every error once, on stderr, with its
//! exit code (`error`). `etl schedule` lives in `schedule`.

pub mod args;
pub mod error;
pub mod prepare;
pub mod render;
pub mod schedule;

use std::io::IsTerminal;
use std::process::ExitCode;

pub use args::{Cli, Color, Command};
use error::CliError;
use prepare::{default_spec_path, load, prepare, unknown_stage};
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
    match dispatch(cli.command, color) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprint!("{}", e.render(color));
            ExitCode::from(e.exit_code())
        }
    }
}

fn dispatch(command: Command, color: bool) -> Result<u8, CliError> {
    match command {
        Command::Run(args) => run_spec(args, None),
        Command::Assets(args) => run_spec(args, Some("assets")),
        Command::Trades(args) => run_spec(args, Some("trades")),
        Command::Clean(args) => clean(&args),
        Command::Migrate(args) => {
            let p = prepare(&args.as_run_args())?;
            let label = exec::admin::migrate(&p.plan)?;
            print(&format!("migrations applied to {label}\n"));
            Ok(exit::OK)
        }
        Command::Schedule { action } => schedule::run(action).map(|()| exit::OK),
        Command::Schema { markdown } => {
            if markdown {
                print(&spec::reference::markdown(&spec::schema::schema()));
            } else {
                print(&spec::schema::schema_text());
            }
            Ok(exit::OK)
        }
        Command::ValidateSpec { specs, spec } => Ok(validate(&specs, &spec, color)),
        Command::Plan { spec_path, stage, spec } => {
            let path = spec_path.unwrap_or_else(default_spec_path);
            let loaded = load(&path, &spec)?;
            if let Some(s) = &stage
                && !loaded.spec.stages.contains_key(s)
            {
                return Err(unknown_stage(&path, &loaded.spec, s));
            }
            print(&plan::render::render(&plan::compile(&loaded.spec), stage.as_deref()));
            Ok(exit::OK)
        }
    }
}

/// `etl validate-spec`: every spec checked, each one's problems shown; exit 2 when any fails.
fn validate(specs: &[std::path::PathBuf], args: &args::SpecArgs, color: bool) -> u8 {
    let mut failed = 0;
    for path in specs {
        match load(path, args) {
            Ok(l) => {
                let s = &l.spec;
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
                eprint!("{}", e.render(color));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        if specs.len() > 1 {
            eprintln!("{failed} of {} specs are invalid", specs.len());
        }
        exit::USAGE
    } else {
        exit::OK
    }
}

fn run_spec(mut args: args::RunArgs, alias: Option<&str>) -> Result<u8, CliError> {
    if let Some(stage) = alias {
        args.stages.push(stage.to_string());
    }
    let p = prepare(&args)?;
    let report = exec::run(&p.plan, &p.opts)?;
    if let Some(file) = &args.rejects_out {
        std::fs::write(file, render::rejects_csv(&report))
            .map_err(|e| CliError::System { what: format!("write {}", file.display()), message: e.to_string() })?;
    }
    match args.output {
        args::Output::Text => print(&render::text(&report)),
        args::Output::Json => print(&render::json(&report)),
    }
    Ok(report.exit_code())
}

fn clean(args: &args::CleanArgs) -> Result<u8, CliError> {
    let p = prepare(&args.as_run_args())?;
    let tables: Vec<String> = p.plan.select(p.opts.stages.as_deref()).iter().map(|s| s.target.table.clone()).collect();
    if !args.yes && std::io::stdin().is_terminal() {
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
