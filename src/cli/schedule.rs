//! `etl schedule`: what each action does against the job store (the PostgreSQL target of a
//! spec): add, list, pause, resume, remove, and start the scheduler, whose firings run their
//! spec through the same `prepare` step as `etl run` (`run_job`).

use std::path::{Path, PathBuf};

use super::args::{CatchupArg, DbArgs, EtlCommand, Interval, RunArgs, ScheduleCmd, SpecArgs, StoreArgs};
use super::error::CliError;
use super::prepare::{default_spec_path, prepare, unknown_stage};
use super::render::{print, table};
use crate::exec::postgres::{self, Pg};
use crate::exec::ExecError;
use crate::plan::ConnectionPlan;
use crate::spec::model::{Catchup, Every, PostgresConnection};
use crate::{exec, schedule};
use schedule::{JobDef, JobError, JobOutcome};

/// The job store: the first PostgreSQL connection of the store spec, migrated.
struct Store {
    prepared: super::prepare::Prepared,
    pg: Pg,
    conn: PostgresConnection,
}

fn job_store(store: &StoreArgs) -> Result<Store, CliError> {
    let path = store.spec_file().unwrap_or_else(default_spec_path);
    let prepared = prepare(&RunArgs::database_only(Some(path.clone()), Vec::new(), store.db.clone(), store.spec_args.clone()))?;
    let found = prepared.plan.connections.iter().find_map(|(n, c)| match c {
        ConnectionPlan::Postgres(pg) => Some((n.clone(), pg.clone())),
        _ => None,
    });
    let Some((name, conn)) = found else { return Err(CliError::NoJobStore { spec: path.display().to_string() }) };
    let pg = Pg::connect(&name, &conn)?;
    {
        let _ctx = pg.enter();
        pg.migrate()?;
    }
    Ok(Store { prepared, pg, conn })
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf()))
}

/// Runs one `etl schedule` action.
pub fn run(action: ScheduleCmd) -> Result<(), CliError> {
    use ScheduleCmd as S;
    let store = match &action {
        S::Start { store, .. } | S::Add { store, .. } | S::List { store, .. } | S::Remove { store, .. } | S::Pause { store, .. } | S::Resume { store, .. } => store.clone(),
    };
    let Store { prepared, pg, conn } = job_store(&store)?;
    let loaded = &prepared.loaded;
    let _ctx = pg.enter();
    // What remove, pause and resume print: the job's new state, or that it does not exist.
    let changed = |found: bool, id: &str, verb: &str| {
        if found {
            print(&format!("job {id} {verb}\n"));
            Ok(())
        } else {
            Err(CliError::UnknownJob { id: id.to_string() })
        }
    };
    match action {
        S::Add { job_id, etl_command, interval, at, cron, stages, timezone, paused, catchup, max_catchup, retries, retry_delay, .. } => {
            let retry_delay = crate::spec::check::parse_duration(&retry_delay)
                .ok_or_else(|| CliError::flag(format!("--retry-delay {retry_delay}"), "not a duration", "e.g. 30s, 5m"))?;
            let every = interval.map(|i| match i {
                Interval::Day => Every::Day,
                Interval::Hour => Every::Hour,
                Interval::Minute => Every::Minute,
            });
            let (cron, words) = schedule::trigger(cron.as_deref(), every, at.as_deref())
                .map_err(|m| CliError::flag("the trigger", m, "e.g. --interval day --at 02:00, or --cron \"*/15 * * * *\""))?;
            if timezone.parse::<chrono_tz::Tz>().is_err() {
                return Err(CliError::flag(format!("--timezone {timezone}"), "not an IANA time zone", "e.g. UTC, Asia/Shanghai"));
            }
            let stages = if !stages.is_empty() {
                Some(stages)
            } else {
                match etl_command {
                    EtlCommand::Run => None,
                    EtlCommand::Assets => Some(vec!["assets".to_string()]),
                    EtlCommand::Trades => Some(vec!["trades".to_string()]),
                }
            };
            if let Some(s) = stages.iter().flatten().find(|s| !loaded.spec.stages.contains_key(*s)) {
                return Err(unknown_stage(&loaded.path, &loaded.spec, s));
            }
            let def = schedule::JobDef {
                job_id: job_id.clone(),
                spec_path: absolute(&loaded.path).display().to_string(),
                stages,
                cron,
                trigger: words,
                timezone,
                enabled: !paused,
                catchup: match catchup {
                    CatchupArg::Skip => Catchup::Skip,
                    CatchupArg::Latest => Catchup::Latest,
                    CatchupArg::All => Catchup::All,
                },
                max_catchup,
                retries,
                retry_delay,
            };
            pg.block(schedule::upsert(pg.pool(), &def, "cli", Some(&loaded.hash)))?;
            if paused {
                print(&format!("job {job_id} added, paused: {} ({}); `etl schedule resume --job-id {job_id}` makes it fire\n", def.trigger, def.cron));
            } else {
                let next = schedule::next_run(&def, chrono::Utc::now()).map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default();
                print(&format!("job {job_id} added: {} ({}), next run {next}\n", def.trigger, def.cron));
            }
            Ok(())
        }
        S::List { output, .. } => {
            let rows = pg.block(schedule::list(pg.pool()))?;
            match output {
                super::args::Output::Text => print(&job_table(&rows)),
                super::args::Output::Json => print(&job_json(&rows)),
            }
            Ok(())
        }
        S::Remove { job_id, .. } => changed(pg.block(schedule::remove(pg.pool(), &job_id))?, &job_id, "removed"),
        S::Pause { job_id, .. } => changed(pg.block(schedule::set_enabled(pg.pool(), &job_id, false))?, &job_id, "paused"),
        S::Resume { job_id, .. } => changed(pg.block(schedule::set_enabled(pg.pool(), &job_id, true))?, &job_id, "resumed"),
        S::Start { store, metrics_addr } => {
            if let Some(addr) = metrics_addr {
                super::metrics::serve(addr).map_err(|m| CliError::flag(format!("--metrics-addr {addr}"), format!("cannot serve the metrics there: {m}"), "give a free address and port, e.g. 127.0.0.1:9187"))?;
                print(&format!("metrics at http://{addr}/metrics\n"));
            }
            let mut registered = 0;
            if store.spec_file().is_some() {
                let path = absolute(&loaded.path);
                for def in schedule::spec_jobs(&prepared.plan, &path) {
                    pg.block(schedule::upsert(pg.pool(), &def, "spec", Some(&loaded.hash)))?;
                    registered += 1;
                }
            }
            if registered > 0 {
                print(&format!("registered {registered} schedule(s) of spec {}\n", loaded.spec.name));
            }
            let secs = |var: &str, default: u64| std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
            let opts = schedule::StartOptions {
                sync_every: std::time::Duration::from_secs(secs("ETL_SCHEDULE_SYNC_SECS", 5)),
                grace: std::time::Duration::from_secs(secs("ETL_SHUTDOWN_GRACE_SECS", 300)),
                run_job,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| CliError::System { what: "start the scheduler's runtime".into(), message: e.to_string() })?;
            // The scheduler's pool belongs to the scheduler's runtime: a pool's connections
            // cannot be driven from another runtime.
            let options = postgres::connect_options(&conn).map_err(|m| CliError::flag("the job store's connection", m, "check the spec's postgres connection (or --db-*)"))?;
            let label = pg.label.clone();
            rt.block_on(async move {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(8)
                    .connect_with(options)
                    .await
                    .map_err(|e| ExecError::Connect { what: format!("PostgreSQL at {label}"), help: postgres::connect_help(&e), message: postgres::scrub(&crate::exec::error::server_message(&e), &conn) })?;
                schedule::start(pool, opts).await
            })?;
            Ok(())
        }
    }
}

/// The job list as JSON: one object per job, times in RFC 3339 (UTC).
fn job_json(rows: &[schedule::JobRow]) -> String {
    let now = chrono::Utc::now();
    let jobs: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let d = &r.def;
            serde_json::json!({
                "id": d.job_id,
                "spec": d.spec_path,
                "trigger": d.trigger,
                "cron": d.cron,
                "timezone": d.timezone,
                "stages": d.stages,
                "enabled": d.enabled,
                "catchup": d.catchup.as_str(),
                "max_catchup": d.max_catchup,
                "retries": d.retries,
                "retry_delay_secs": d.retry_delay.as_secs(),
                "next_run": if d.enabled { schedule::next_run(d, now).map(|t| t.to_rfc3339()) } else { None },
                "last_run": r.last_run_at.map(|t| t.to_rfc3339()),
                "last_status": r.last_status,
            })
        })
        .collect();
    format!("{}\n", serde_json::to_string_pretty(&serde_json::json!({ "jobs": jobs })).unwrap_or_default())
}

/// The job list: id, spec, trigger, stages, enabled, next run, last run, last status.
fn job_table(rows: &[schedule::JobRow]) -> String {
    let now = chrono::Utc::now();
    let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
    let header = ["id", "spec", "trigger", "stages", "enabled", "next run (UTC)", "last run (UTC)", "last status"].map(String::from);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let d = &r.def;
            let next = if d.enabled { fmt(schedule::next_run(d, now)) } else { "-".into() };
            let tz = if d.timezone == "UTC" { String::new() } else { format!(" {}", d.timezone) };
            vec![
                d.job_id.clone(),
                d.spec_path.clone(),
                format!("{}{tz}", d.trigger),
                d.stages.as_ref().map_or("all".into(), |s| s.join(",")),
                if d.enabled { "yes".into() } else { "paused".into() },
                next,
                fmt(r.last_run_at),
                r.last_status.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut out = String::new();
    table(&mut out, &header, &cells);
    if rows.is_empty() {
        out.push_str("(no jobs)\n");
    }
    out
}

/// Runs a job's spec as `etl run` would: the file read afresh, its diagnostics in the error, with
/// the exit code `etl run` would end with.
fn run_job(def: &JobDef, at: chrono::DateTime<chrono::Utc>) -> Result<JobOutcome, JobError> {
    let live = super::metrics::Live::serving();
    let _running = live.map(|l| l.start());
    let started = std::time::Instant::now();
    let (result, report) = run_job_once(def, at);
    if let Some(live) = live {
        let seconds = started.elapsed().as_secs_f64();
        let status = match &result {
            Ok(outcome) => outcome.status.as_str(),
            Err(e) => e.status,
        };
        match &report {
            Some(report) => live.record(&def.job_id, report, status, seconds),
            None => live.record_failure(&def.job_id, status, seconds),
        }
    }
    result
}

/// [`run_job`] without its metrics: the outcome, and the run's report when it ran to its end.
fn run_job_once(def: &JobDef, at: chrono::DateTime<chrono::Utc>) -> (Result<JobOutcome, JobError>, Option<exec::RunReport>) {
    match run_spec(def, at) {
        Ok(report) => {
            let summary: Vec<String> = report.stages.iter().map(|s| format!("{}: {} read, {} rejected", s.stage, s.rows_read, s.rows_rejected)).collect();
            // A firing ends as its run: succeeded, rejected, over_budget or refused; failed when
            // an analytic failed after the loads (they stand; the error says which).
            let outcome = match report.analytics_failed() {
                Some(failed) => Err(JobError { message: failed, exit_code: crate::exit::ERROR, status: "failed" }),
                None => Ok(JobOutcome { status: report.status.as_str().into(), run_id: report.run_id, summary: summary.join("; ") }),
            };
            (outcome, Some(report))
        }
        Err(e) => (Err(e), None),
    }
}

/// Reads the job's spec afresh and runs it.
fn run_spec(def: &JobDef, at: chrono::DateTime<chrono::Utc>) -> Result<exec::RunReport, JobError> {
    // The firing's business date: its time's date in the job's time zone.
    let tz = def.timezone.parse::<chrono_tz::Tz>().unwrap_or(chrono_tz::UTC);
    let spec = SpecArgs { date: Some(at.with_timezone(&tz).date_naive()), ..SpecArgs::default() };
    let args = RunArgs::database_only(Some(PathBuf::from(&def.spec_path)), def.stages.clone().unwrap_or_default(), DbArgs::default(), spec);
    let mut prepared = prepare(&args).map_err(|e| JobError {
        exit_code: e.exit_code(),
        status: "failed",
        message: match e {
            CliError::Spec(e) => format!("the spec is invalid:\n{}", e.render(false)),
            e => e.to_string(),
        },
    })?;
    prepared.opts.job_id = Some(def.job_id.clone());
    prepared.opts.quiet = true;
    // A schedule of the spec with webhooks of its own tells them instead of the spec's.
    if let Some(hooks) = prepared.plan.schedules.iter().find(|s| s.name == def.job_id).and_then(|s| s.notify.clone()) {
        prepared.plan.notify = hooks;
    }
    // `workers: distribute`: as `etl run --distribute`.
    if prepared.plan.schedules.iter().any(|s| s.name == def.job_id && s.distribute) {
        prepared.opts.distribute = true;
    }
    exec::run(&prepared.plan, &prepared.opts).map_err(|e| JobError { message: e.to_string(), exit_code: e.exit_code(), status: e.run_status().as_str() })
}
