//! The command line's implementation: a parsed command dispatched to the spec layer, the
//! compiler and the executor, with diagnostics rendered and exit codes chosen.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::{self, Cli, Color, Command, SpecArgs};
use crate::{exec, exit, plan, schedule, spec};

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
        duckdb_memory: exec::duckdb_memory(),
        job_id: None,
        quiet: args.output == cli::Output::Json && !args.verbose,
        verbose: args.verbose,
        force: args.force,
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

/// The job store: the first PostgreSQL target of the store spec, migrated.
fn job_store(store: &cli::StoreArgs, color: bool) -> Result<(spec::LoadedSpec, exec::postgres::Pg, spec::model::PostgresConnection), ExitCode> {
    let path = store.spec.clone().unwrap_or_else(default_spec_path);
    let mut loaded = load(&path, &store.spec_args, color)?;
    let args = cli::RunArgs::database_only(Some(path.clone()), Vec::new(), store.db.clone(), store.spec_args.clone());
    apply_run_flags(&mut loaded.spec, &args).map_err(|m| {
        eprintln!("error: {m}");
        ExitCode::from(exit::USAGE)
    })?;
    let found = loaded.spec.connections.iter().find_map(|(n, c)| match c {
        spec::model::Connection::Postgres(pg) => Some((n.clone(), pg.clone())),
        _ => None,
    });
    let Some((name, conn)) = found else {
        eprintln!("error: spec {} has no PostgreSQL connection to keep the jobs in", path.display());
        return Err(ExitCode::from(exit::USAGE));
    };
    let pg = exec::postgres::Pg::connect(&name, &conn).map_err(|e| render_exec_error(&e, color))?;
    {
        let _ctx = pg.enter();
        pg.migrate().map_err(|e| render_exec_error(&e, color))?;
    }
    Ok((loaded, pg, conn))
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf()))
}

fn schedule_cmd(action: cli::ScheduleCmd, color: bool) -> ExitCode {
    use cli::ScheduleCmd as S;
    let store = match &action {
        S::Start { store } | S::Add { store, .. } | S::List { store } | S::Remove { store, .. } | S::Pause { store, .. } | S::Resume { store, .. } => store.clone(),
    };
    let (loaded, pg, conn) = match job_store(&store, color) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let _ctx = pg.enter();
    // What remove, pause and resume print: the job's new state, or that it does not exist.
    let changed = |found: bool, id: &str, verb: &str| {
        if found {
            print(&format!("job {id} {verb}\n"));
            ExitCode::from(exit::OK)
        } else {
            eprintln!("error: no job `{id}`; `etl schedule list` shows the jobs");
            ExitCode::from(exit::USAGE)
        }
    };
    let result: Result<ExitCode, exec::ExecError> = match action {
        S::Add { job_id, etl_command, interval, at, cron, stages, timezone, paused, .. } => {
            let every = interval.map(|i| match i {
                cli::Interval::Day => spec::model::Every::Day,
                cli::Interval::Hour => spec::model::Every::Hour,
                cli::Interval::Minute => spec::model::Every::Minute,
            });
            let (cron, words) = match schedule::trigger(cron.as_deref(), every, at.as_deref()) {
                Ok(t) => t,
                Err(m) => {
                    eprintln!("error: {m}");
                    return ExitCode::from(exit::USAGE);
                }
            };
            if timezone.parse::<chrono_tz::Tz>().is_err() {
                eprintln!("error: `{timezone}` is not an IANA time zone (e.g. UTC, Asia/Shanghai)");
                return ExitCode::from(exit::USAGE);
            }
            let stages = if !stages.is_empty() {
                Some(stages)
            } else {
                match etl_command {
                    cli::EtlCommand::Run => None,
                    cli::EtlCommand::Assets => Some(vec!["assets".to_string()]),
                    cli::EtlCommand::Trades => Some(vec!["trades".to_string()]),
                }
            };
            for s in stages.iter().flatten() {
                if !loaded.spec.stages.contains_key(s) {
                    eprintln!("error: spec {} has no stage `{s}`", loaded.path.display());
                    return ExitCode::from(exit::USAGE);
                }
            }
            let def = schedule::JobDef {
                job_id: job_id.clone(),
                spec_path: absolute(&loaded.path).display().to_string(),
                stages,
                cron,
                trigger: words,
                timezone,
                enabled: !paused,
            };
            pg.block(schedule::upsert(pg.pool(), &def, "cli", Some(&loaded.hash))).map(|()| {
                let next = schedule::next_run(&def, chrono::Utc::now()).map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default();
                print(&format!("job {job_id} added: {} ({}), next run {next}\n", def.trigger, def.cron));
                ExitCode::from(exit::OK)
            })
        }
        S::List { .. } => pg.block(schedule::list(pg.pool())).map(|rows| {
            print(&schedule_table(&rows));
            ExitCode::from(exit::OK)
        }),
        S::Remove { job_id, .. } => pg.block(schedule::remove(pg.pool(), &job_id)).map(|found| changed(found, &job_id, "removed")),
        S::Pause { job_id, .. } => pg.block(schedule::set_enabled(pg.pool(), &job_id, false)).map(|found| changed(found, &job_id, "paused")),
        S::Resume { job_id, .. } => pg.block(schedule::set_enabled(pg.pool(), &job_id, true)).map(|found| changed(found, &job_id, "resumed")),
        S::Start { store } => {
            let registered = if store.spec.is_some() {
                let path = absolute(&loaded.path);
                let mut n = 0;
                for def in schedule::spec_jobs(&loaded.spec, &path) {
                    if let Err(e) = pg.block(schedule::upsert(pg.pool(), &def, "spec", Some(&loaded.hash))) {
                        return render_exec_error(&e, color);
                    }
                    n += 1;
                }
                n
            } else {
                0
            };
            if registered > 0 {
                print(&format!("registered {registered} schedule(s) of spec {}\n", loaded.spec.name));
            }
            let secs = |var: &str, default: u64| std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
            let opts = schedule::StartOptions {
                sync_every: std::time::Duration::from_secs(secs("ETL_SCHEDULE_SYNC_SECS", 5)),
                grace: std::time::Duration::from_secs(secs("ETL_SHUTDOWN_GRACE_SECS", 300)),
                duckdb_memory: exec::duckdb_memory(),
            };
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the scheduler's runtime: {e}");
                    return ExitCode::from(exit::ERROR);
                }
            };
            // The scheduler's pool belongs to the scheduler's runtime: a pool's connections
            // cannot be driven from another runtime.
            let options = match exec::postgres::connect_options(&conn) {
                Ok(o) => o,
                Err(m) => {
                    eprintln!("error: {m}");
                    return ExitCode::from(exit::USAGE);
                }
            };
            rt.block_on(async move {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(8)
                    .connect_with(options)
                    .await
                    .map_err(|e| exec::ExecError::Connect { what: format!("PostgreSQL at {}", pg.label), message: exec::postgres::scrub(&e.to_string(), &conn) })?;
                schedule::start(pool, opts).await
            })
            .map(|()| ExitCode::from(exit::OK))
        }
    };
    result.unwrap_or_else(|e| render_exec_error(&e, color))
}

fn schedule_table(rows: &[schedule::JobRow]) -> String {
    let now = chrono::Utc::now();
    let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
    let mut table: Vec<[String; 7]> = vec![["id", "trigger", "stages", "enabled", "next run (UTC)", "last run (UTC)", "last status"].map(String::from)];
    for r in rows {
        let d = &r.def;
        let next = if d.enabled { fmt(schedule::next_run(d, now)) } else { "-".into() };
        let tz = if d.timezone == "UTC" { String::new() } else { format!(" {}", d.timezone) };
        table.push([
            d.job_id.clone(),
            format!("{}{tz}", d.trigger),
            d.stages.as_ref().map_or("all".into(), |s| s.join(",")),
            if d.enabled { "yes".into() } else { "paused".into() },
            next,
            fmt(r.last_run_at),
            r.last_status.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..7).map(|i| table.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (n, r) in table.iter().enumerate() {
        let cells: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if n == 0 {
            out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
            out.push('\n');
        }
    }
    if rows.is_empty() {
        out.push_str("(no jobs)\n");
    }
    out
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
        Command::Schedule { action } => schedule_cmd(action, color),
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
