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

/// Applies the CLI's connection and source flags to a loaded spec: they override everything.
fn apply_run_flags(spec: &mut spec::Spec, args: &cli::RunArgs) -> Result<(), String> {
    use spec::model::{Connection, Secret};
    for conn in spec.connections.values_mut() {
        match conn {
            Connection::Postgres(pg) => {
                if let Some(h) = &args.db.db_host {
                    pg.host = Some(h.clone());
                }
                if let Some(p) = args.db.db_port {
                    pg.port = Some(p);
                }
                if let Some(d) = &args.db.db_name {
                    pg.database = Some(d.clone());
                }
                if let Some(u) = &args.db.db_user {
                    pg.user = Some(u.clone());
                }
                if let Some(p) = &args.db.db_password {
                    pg.password = Some(Secret(p.clone()));
                }
            }
            Connection::S3(s3) => {
                if let Some(e) = &args.s3_endpoint {
                    s3.endpoint = Some(e.clone());
                }
                if let Some(b) = &args.s3_bucket {
                    s3.bucket = b.clone();
                }
            }
            Connection::Local(_) | Connection::Duckdb(_) => {}
        }
    }
    let mut sources: Vec<(String, String)> = Vec::new();
    if let Some(k) = &args.assets_file {
        sources.push(("assets".into(), k.clone()));
    }
    if let Some(k) = &args.trades_file {
        sources.push(("trades".into(), k.clone()));
    }
    for s in &args.sources {
        let (stage, key) = s.split_once('=').ok_or_else(|| format!("--source {s}: write STAGE=KEY"))?;
        sources.push((stage.to_string(), key.to_string()));
    }
    for (stage, key) in sources {
        let names: Vec<&str> = spec.stages.keys().map(String::as_str).collect();
        let hint = spec::diag::suggest(&stage, names.iter().copied()).unwrap_or_default();
        let names = names.join(", ");
        let st = spec.stages.get_mut(&stage).ok_or_else(|| format!("no stage `{stage}` to read from {key} (stages: {names}) {hint}"))?;
        st.source.key = key;
    }
    if let Some(b) = args.batch_size {
        if b == 0 {
            return Err("--batch-size must be at least 1".into());
        }
        spec.defaults.batch_size = Some(b);
        for st in spec.stages.values_mut() {
            st.batch_size = Some(b);
        }
    }
    Ok(())
}

/// A loaded spec with the CLI's flags applied, compiled, with a temporary directory.
struct Prepared {
    loaded: spec::LoadedSpec,
    plan: plan::Plan,
    opts: exec::RunOptions,
    _temp: tempfile::TempDir,
}

fn prepare(args: &cli::RunArgs, color: bool) -> Result<Prepared, ExitCode> {
    let path = args.spec_path.clone().unwrap_or_else(default_spec_path);
    let mut loaded = load(&path, &args.spec, color)?;
    if let Err(msg) = apply_run_flags(&mut loaded.spec, args) {
        eprintln!("error: {msg}");
        return Err(ExitCode::from(exit::USAGE));
    }
    for s in &args.stages {
        if !loaded.spec.stages.contains_key(s) {
            let names: Vec<&str> = loaded.spec.stages.keys().map(String::as_str).collect();
            let hint = spec::diag::suggest(s, names.iter().copied()).unwrap_or_default();
            eprintln!("error: spec {} has no stage `{s}` (stages: {}) {hint}", path.display(), names.join(", "));
            return Err(ExitCode::from(exit::USAGE));
        }
    }
    let plan = plan::compile(&loaded.spec);
    let temp = tempfile::Builder::new().prefix("etl-run-").tempdir().map_err(|e| {
        eprintln!("error: cannot create a temporary directory: {e}");
        ExitCode::from(exit::ERROR)
    })?;
    let opts = exec::RunOptions {
        stages: (!args.stages.is_empty()).then(|| args.stages.clone()),
        dry_run: args.dry_run,
        spec_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        temp_dir: temp.path().to_path_buf(),
        duckdb_memory: std::env::var("ETL_DUCKDB_MEMORY").unwrap_or_else(|_| "1GB".into()),
        job_id: None,
        quiet: args.output == cli::Output::Json && !args.verbose,
        verbose: args.verbose,
    };
    Ok(Prepared { loaded, plan, opts, _temp: temp })
}

fn render_exec_error(e: &exec::ExecError, color: bool) -> ExitCode {
    let mut out = String::new();
    let theme = if color { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
    let _ = miette::GraphicalReportHandler::new_themed(theme).render_report(&mut out, e);
    eprint!("{out}");
    ExitCode::from(e.exit_code())
}

fn clean_spec(args: &cli::CleanArgs, color: bool) -> ExitCode {
    let p = match prepare(&args.as_run_args(), color) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let tables: Vec<String> = plan::select(&p.plan, p.opts.stages.as_deref()).iter().map(|s| s.target.table.clone()).collect();
    if !args.yes && std::io::stdin().is_terminal() {
        eprint!("Empty table(s) {} of spec {}? [y/N] ", tables.join(", "), p.loaded.spec.name);
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing emptied");
            return ExitCode::from(exit::OK);
        }
    }
    match exec::clean(&p.loaded.spec, &p.plan, &p.opts) {
        Ok(done) if done.is_empty() => {
            print("nothing to empty: the tables do not exist yet\n");
            ExitCode::from(exit::OK)
        }
        Ok(done) => {
            print(&format!("emptied {}\n", done.join(", ")));
            ExitCode::from(exit::OK)
        }
        Err(e) => render_exec_error(&e, color),
    }
}

fn migrate_spec(args: &cli::CleanArgs, color: bool) -> ExitCode {
    let p = match prepare(&args.as_run_args(), color) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match exec::migrate(&p.loaded.spec, &p.plan) {
        Ok(label) => {
            print(&format!("migrations applied to {label}\n"));
            ExitCode::from(exit::OK)
        }
        Err(e) => render_exec_error(&e, color),
    }
}

fn run_spec(mut args: cli::RunArgs, alias: Option<&str>, color: bool) -> ExitCode {
    if let Some(stage) = alias {
        args.stages.push(stage.to_string());
    }
    let p = match prepare(&args, color) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (loaded, plan, opts) = (&p.loaded, &p.plan, &p.opts);
    match exec::run(loaded, plan, opts) {
        Ok(report) => {
            if let Some(file) = &args.rejects_out
                && let Err(e) = std::fs::write(file, exec::report::rejects_csv(&report)) {
                    eprintln!("error: cannot write {}: {e}", file.display());
                    return ExitCode::from(exit::ERROR);
                }
            match args.output {
                cli::Output::Text => print(&exec::report::text(&report)),
                cli::Output::Json => print(&exec::report::json(&report)),
            }
            ExitCode::from(report.exit_code())
        }
        Err(e) => render_exec_error(&e, color),
    }
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let color = use_color(cli.color);
    match cli.command {
        Command::Run(args) => run_spec(args, None, color),
        Command::Assets(args) => run_spec(args, Some("assets"), color),
        Command::Trades(args) => run_spec(args, Some("trades"), color),
        Command::Clean(args) => clean_spec(&args, color),
        Command::Migrate(args) => migrate_spec(&args, color),
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
            if let Some(s) = &stage
                && !loaded.spec.stages.contains_key(s) {
                    let names: Vec<&str> = loaded.spec.stages.keys().map(String::as_str).collect();
                    let hint = spec::diag::suggest(s, names.iter().copied()).unwrap_or_default();
                    eprintln!("error: spec {} has no stage `{s}` (stages: {}) {hint}", path.display(), names.join(", "));
                    return ExitCode::from(exit::USAGE);
                }
            let plan = plan::compile(&loaded.spec);
            print(&plan::render::render(&plan, stage.as_deref()));
            ExitCode::from(exit::OK)
        }
    }
}
