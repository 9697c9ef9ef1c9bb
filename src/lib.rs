//! etl: a declarative, YAML-spec batch ETL engine. `run` dispatches a parsed command line to
//! the spec layer (`spec`), the compiler (`plan`) and, later, the executor.

pub mod cli;
pub mod exec;
pub mod plan;
pub mod spec;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cli::{Cli, Color, Command, SpecArgs};

/// Exit codes: a contract, tested.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A general error.
    pub const ERROR: u8 = 1;
    /// Bad arguments or an invalid spec.
    pub const USAGE: u8 = 2;
    /// Cannot connect to S3 or the database.
    pub const CONNECT: u8 = 3;
    /// The run finished but rows were rejected.
    pub const REJECTED: u8 = 4;
}

/// The spec used when none is given: `$ETL_SPEC`, then specs/small_etl.yaml.
pub fn default_spec_path() -> PathBuf {
    std::env::var_os("ETL_SPEC").map_or_else(|| PathBuf::from("specs/small_etl.yaml"), PathBuf::from)
}

fn load_options(args: &SpecArgs) -> spec::LoadOptions {
    spec::LoadOptions {
        env_name: args.env.clone(),
        config_dir: args.config_dir.clone(),
        sets: args.sets.clone(),
        ..spec::LoadOptions::with_process_env()
    }
}

fn use_color(choice: Color) -> bool {
    match choice {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal(),
    }
}

/// Writes to stdout; a closed pipe (`etl plan | head`) is not an error.
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn load(path: &Path, args: &SpecArgs, color: bool) -> Result<spec::LoadedSpec, ExitCode> {
    spec::load(path, &load_options(args)).map_err(|e| {
        eprint!("{}", e.render(color));
        ExitCode::from(exit::USAGE)
    })
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let color = use_color(cli.color);
    match cli.command {
        Command::Schema { markdown } => {
            if markdown {
                print(&spec::reference::markdown(&spec::schema::schema()));
            } else {
                print(&spec::schema::schema_text());
            }
            ExitCode::from(exit::OK)
        }
        Command::ValidateSpec { specs, spec } => {
            let mut failed = 0;
            for path in &specs {
                match load(path, &spec, color) {
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
                    Err(_) => failed += 1,
                }
            }
            if failed > 0 {
                if specs.len() > 1 {
                    eprintln!("{failed} of {} specs are invalid", specs.len());
                }
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::from(exit::OK)
            }
        }
        Command::Plan { spec_path, stage, spec } => {
            let path = spec_path.unwrap_or_else(default_spec_path);
            let loaded = match load(&path, &spec, color) {
                Ok(l) => l,
                Err(code) => return code,
            };
            if let Some(s) = &stage {
                if !loaded.spec.stages.contains_key(s) {
                    let names: Vec<&str> = loaded.spec.stages.keys().map(String::as_str).collect();
                    let hint = spec::diag::suggest(s, names.iter().copied()).unwrap_or_default();
                    eprintln!("error: spec {} has no stage `{s}` (stages: {}) {hint}", path.display(), names.join(", "));
                    return ExitCode::from(exit::USAGE);
                }
            }
            let plan = plan::compile(&loaded.spec);
            print(&plan::render::render(&plan, stage.as_deref()));
            ExitCode::from(exit::OK)
        }
    }
}
