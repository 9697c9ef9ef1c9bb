//! Scheduled runs: jobs kept in PostgreSQL (`etl_schedules`), a spec's own `schedules:`
//! registered by id, and `etl schedule start`, which fires them with tokio-cron-scheduler. Each
//! firing re-reads its spec and runs it exactly as `etl run` would. A firing is claimed by
//! inserting its (job, tick) row, so any number of schedulers run it once; a job's advisory lock,
//! held for the run, keeps it from overlapping itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::exec::ExecError;
use crate::plan;

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDef {
    /// Its id.
    pub job_id: String,
    /// The spec it runs (absolute path).
    pub spec_path: String,
    /// Stages (None: all).
    pub stages: Option<Vec<String>>,
    /// Six-field cron expression (seconds first).
    pub cron: String,
    /// The trigger as a person wrote it.
    pub trigger: String,
    /// IANA time zone.
    pub timezone: String,
    /// Whether it fires.
    pub enabled: bool,
}

/// A job with its history, for `etl schedule list`.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// The job.
    pub def: JobDef,
    /// When it last fired.
    pub last_run_at: Option<DateTime<Utc>>,
    /// How that ended.
    pub last_status: Option<String>,
}

use crate::exec::postgres::db;

/// Saves a job (replacing one with the same id; pause state is kept unless `enabled` says
/// otherwise for a new job).
pub async fn upsert(pool: &PgPool, j: &JobDef, origin: &str, spec_hash: Option<&str>) -> Result<(), ExecError> {
    sqlx::query(
        "INSERT INTO etl_schedules (job_id, spec_path, spec_hash, stages, cron, trigger, timezone, enabled, origin)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (job_id) DO UPDATE SET spec_path = EXCLUDED.spec_path, spec_hash = EXCLUDED.spec_hash,
           stages = EXCLUDED.stages, cron = EXCLUDED.cron, trigger = EXCLUDED.trigger, timezone = EXCLUDED.timezone,
           origin = EXCLUDED.origin, updated_at = now()",
    )
    .bind(&j.job_id)
    .bind(&j.spec_path)
    .bind(spec_hash)
    .bind(&j.stages)
    .bind(&j.cron)
    .bind(&j.trigger)
    .bind(&j.timezone)
    .bind(j.enabled)
    .bind(origin)
    .execute(pool)
    .await
    .map_err(db("save the job"))?;
    Ok(())
}

/// Every job, by id.
pub async fn list(pool: &PgPool) -> Result<Vec<JobRow>, ExecError> {
    let rows = sqlx::query(
        "SELECT job_id, spec_path, stages, cron, trigger, timezone, enabled, last_run_at, last_status FROM etl_schedules ORDER BY job_id",
    )
    .fetch_all(pool)
    .await
    .map_err(db("read the jobs"))?;
    Ok(rows
        .iter()
        .map(|r| JobRow {
            def: JobDef {
                job_id: r.get(0),
                spec_path: r.get(1),
                stages: r.get(2),
                cron: r.get(3),
                trigger: r.get(4),
                timezone: r.get(5),
                enabled: r.get(6),
            },
            last_run_at: r.get(7),
            last_status: r.get(8),
        })
        .collect())
}

/// Pauses or resumes a job; false when there is no such job.
pub async fn set_enabled(pool: &PgPool, job_id: &str, enabled: bool) -> Result<bool, ExecError> {
    let r = sqlx::query("UPDATE etl_schedules SET enabled = $2, updated_at = now() WHERE job_id = $1")
        .bind(job_id)
        .bind(enabled)
        .execute(pool)
        .await
        .map_err(db("change the job"))?;
    Ok(r.rows_affected() == 1)
}

/// Removes a job; false when there is no such job.
pub async fn remove(pool: &PgPool, job_id: &str) -> Result<bool, ExecError> {
    let r = sqlx::query("DELETE FROM etl_schedules WHERE job_id = $1").bind(job_id).execute(pool).await.map_err(db("remove the job"))?;
    Ok(r.rows_affected() == 1)
}

fn parse_cron(six: &str) -> Option<croner::Cron> {
    croner::parser::CronParser::builder().seconds(croner::parser::Seconds::Required).dom_and_dow(true).build().parse(six).ok()
}

/// The next time a job fires after `after`, in UTC.
pub fn next_run(j: &JobDef, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let tz: chrono_tz::Tz = j.timezone.parse().ok()?;
    let cron = parse_cron(&j.cron)?;
    cron.find_next_occurrence(&after.with_timezone(&tz), false).ok().map(|t| t.with_timezone(&Utc))
}

/// The tick a firing at `now` belongs to: the latest occurrence not after `now` (plus a little
/// slack). Every scheduler computes the same tick, which is what makes the claim work.
pub fn tick(j: &JobDef, now: DateTime<Utc>) -> DateTime<Utc> {
    let Some((tz, cron)) = j.timezone.parse::<chrono_tz::Tz>().ok().zip(parse_cron(&j.cron)) else {
        return now;
    };
    use chrono::Timelike;
    let probe = (now + chrono::Duration::milliseconds(1500)).with_timezone(&tz);
    let probe = probe.with_nanosecond(0).unwrap_or(probe);
    cron.find_previous_occurrence(&probe, true)
        .map(|t| t.with_timezone(&Utc))
        .map(|t| t.with_nanosecond(0).unwrap_or(t))
        .unwrap_or(now)
}

/// A trigger from the CLI's or a spec's words: a cron expression, or every day/hour/minute.
pub fn trigger(cron: Option<&str>, every: Option<crate::spec::model::Every>, at: Option<&str>) -> Result<(String, String), String> {
    match (cron, every) {
        (Some(c), None) => Ok((plan::cron_expression(c).map_err(|e| format!("`{c}` is not a cron expression: {e}"))?, format!("cron {c}"))),
        (None, Some(e)) => {
            if at.is_some() && e != crate::spec::model::Every::Day {
                return Err("--at applies to --interval day only".into());
            }
            if let Some(a) = at
                && plan::parse_at(a).is_none()
            {
                return Err(format!("--at {a}: write the time of day as HH:MM"));
            }
            let words = match e {
                crate::spec::model::Every::Day => format!("every day at {}", at.unwrap_or("00:00")),
                crate::spec::model::Every::Hour => "every hour".into(),
                crate::spec::model::Every::Minute => "every minute".into(),
            };
            Ok((plan::every_cron(e, at), words))
        }
        (Some(_), Some(_)) => Err("give --cron or --interval, not both".into()),
        (None, None) => Err("give --interval day|hour|minute (with --at HH:MM for day) or --cron EXPR".into()),
    }
}

/// The jobs a spec declares under `schedules:`.
pub fn spec_jobs(spec: &crate::spec::Spec, spec_path: &Path) -> Vec<JobDef> {
    let compiled = plan::compile(spec);
    compiled
        .schedules
        .iter()
        .map(|s| {
            let src = &spec.schedules[&s.name];
            let words = match (&src.cron, src.every) {
                (Some(c), _) => format!("cron {c}"),
                (None, Some(e)) => trigger(None, Some(e), src.at.as_deref()).map(|t| t.1).unwrap_or_default(),
                _ => String::new(),
            };
            JobDef {
                job_id: s.name.clone(),
                spec_path: spec_path.display().to_string(),
                stages: s.stages.clone(),
                cron: s.cron.clone(),
                trigger: words,
                timezone: s.timezone.clone(),
                enabled: s.enabled,
            }
        })
        .collect()
}

/// How a scheduler runs.
pub struct StartOptions {
    /// Seconds between re-reads of the job table.
    pub sync_every: Duration,
    /// How long a running load may finish after SIGINT/SIGTERM.
    pub grace: Duration,
    /// DuckDB's memory limit for runs.
    pub duckdb_memory: String,
}

fn log(msg: &str) {
    println!("{} {msg}", Utc::now().format("%Y-%m-%dT%H:%M:%SZ"));
}

struct Shared {
    pool: PgPool,
    owner: String,
    running: AtomicUsize,
    duckdb_memory: String,
}

/// Runs the scheduler until SIGINT or SIGTERM.
pub async fn start(pool: PgPool, opts: StartOptions) -> Result<(), ExecError> {
    let shared = Arc::new(Shared {
        pool: pool.clone(),
        owner: format!("{}:{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()), std::process::id()),
        running: AtomicUsize::new(0),
        duckdb_memory: opts.duckdb_memory.clone(),
    });
    let mut sched = JobScheduler::new().await.map_err(|e| ExecError::Internal(format!("start the scheduler: {e}")))?;
    sched.start().await.map_err(|e| ExecError::Internal(format!("start the scheduler: {e}")))?;
    let mut registered: Vec<(JobDef, uuid::Uuid)> = Vec::new();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ExecError::Internal(format!("listen for SIGTERM: {e}")))?;
    log(&format!("scheduler {} started", shared.owner));
    loop {
        match list(&pool).await {
            Ok(rows) => sync(&sched, &mut registered, rows.into_iter().map(|r| r.def).filter(|d| d.enabled).collect(), &shared).await,
            Err(e) => log(&format!("cannot read the jobs (will retry): {e}")),
        }
        tokio::select! {
            _ = tokio::time::sleep(opts.sync_every) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    log("stopping: no new firings; waiting for running loads");
    for (_, id) in registered.drain(..) {
        let _ = sched.remove(&id).await;
    }
    let _ = sched.shutdown().await;
    let deadline = tokio::time::Instant::now() + opts.grace;
    while shared.running.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = shared.running.load(Ordering::SeqCst);
    if left > 0 {
        log(&format!("{left} load(s) still running past the grace period: exiting; their transactions roll back"));
    }
    log("scheduler stopped");
    Ok(())
}

async fn sync(sched: &JobScheduler, registered: &mut Vec<(JobDef, uuid::Uuid)>, wanted: Vec<JobDef>, shared: &Arc<Shared>) {
    let mut keep = Vec::new();
    for (def, id) in registered.drain(..) {
        if wanted.contains(&def) {
            keep.push((def, id));
        } else {
            let _ = sched.remove(&id).await;
            log(&format!("job {}: unregistered", def.job_id));
        }
    }
    *registered = keep;
    for def in wanted {
        if registered.iter().any(|(d, _)| *d == def) {
            continue;
        }
        let tz: chrono_tz::Tz = match def.timezone.parse() {
            Ok(tz) => tz,
            Err(_) => {
                log(&format!("job {}: unknown time zone {}; not scheduled", def.job_id, def.timezone));
                continue;
            }
        };
        let d = def.clone();
        let s = shared.clone();
        let job = Job::new_async_tz(def.cron.as_str(), tz, move |_, _| {
            let d = d.clone();
            let s = s.clone();
            Box::pin(async move { fire(d, s).await })
        });
        match job {
            Ok(job) => match sched.add(job).await {
                Ok(id) => {
                    let next = next_run(&def, Utc::now()).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default();
                    log(&format!("job {}: scheduled ({}), next run {next}", def.job_id, def.trigger));
                    registered.push((def, id));
                }
                Err(e) => log(&format!("job {}: cannot schedule: {e}", def.job_id)),
            },
            Err(e) => log(&format!("job {}: cannot schedule `{}`: {e}", def.job_id, def.cron)),
        }
    }
}

/// One firing: claim it, take the job's lock, run the spec as `etl run` would, record the end.
async fn fire(def: JobDef, s: Arc<Shared>) {
    let at = tick(&def, Utc::now());
    let claimed = sqlx::query("INSERT INTO etl_schedule_firings (job_id, fire_at, owner) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(&def.job_id)
        .bind(at)
        .bind(&s.owner)
        .execute(&s.pool)
        .await;
    match claimed {
        Ok(r) if r.rows_affected() == 1 => {}
        Ok(_) => return, // another scheduler has this firing
        Err(e) => {
            log(&format!("job {}: cannot claim the firing at {at}: {e}", def.job_id));
            return;
        }
    }
    // The job's lock, on a connection of its own, held for the whole run: no overlap, and a
    // killed scheduler's lock goes with its connection.
    let mut conn = match s.pool.acquire().await {
        Ok(c) => c,
        Err(e) => return finish(&s, &def, at, "failed", None, Some(&e.to_string())).await,
    };
    // Keyed by the store's schema too: two job stores in one database never block each other.
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended(current_schema() || ':etl-job:' || $1, 0))")
        .bind(&def.job_id)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or(false);
    if !locked {
        log(&format!("job {}: skipped the firing at {at}: the previous one is still running", def.job_id));
        return finish(&s, &def, at, "skipped", None, Some("the previous firing was still running")).await;
    }
    s.running.fetch_add(1, Ordering::SeqCst);
    log(&format!("job {}: firing for {} ({})", def.job_id, at.format("%Y-%m-%dT%H:%M:%SZ"), def.spec_path));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let d = def.clone();
    let memory = s.duckdb_memory.clone();
    // exec::run drives its own runtimes: give it a thread of its own.
    std::thread::spawn(move || {
        let _ = tx.send(run_job(&d, &memory));
    });
    let outcome = rx.await.unwrap_or_else(|_| Err("the run's thread panicked".into()));
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtextextended(current_schema() || ':etl-job:' || $1, 0))").bind(&def.job_id).execute(&mut *conn).await;
    drop(conn);
    s.running.fetch_sub(1, Ordering::SeqCst);
    match outcome {
        Ok((status, run_id, summary)) => {
            log(&format!("job {}: {status} (run {}) {summary}", def.job_id, run_id.map_or("-".into(), |i| i.to_string())));
            finish(&s, &def, at, &status, run_id, None).await;
        }
        Err(e) => {
            log(&format!("job {}: failed: {e}", def.job_id));
            finish(&s, &def, at, "failed", None, Some(&e)).await;
        }
    }
}

async fn finish(s: &Shared, def: &JobDef, at: DateTime<Utc>, status: &str, run_id: Option<i64>, error: Option<&str>) {
    let _ = sqlx::query("UPDATE etl_schedule_firings SET finished_at = now(), status = $3, run_id = $4, error = $5 WHERE job_id = $1 AND fire_at = $2")
        .bind(&def.job_id)
        .bind(at)
        .bind(status)
        .bind(run_id)
        .bind(error)
        .execute(&s.pool)
        .await;
    let _ = sqlx::query("UPDATE etl_schedules SET last_run_at = $2, last_status = $3, last_run_id = $4 WHERE job_id = $1")
        .bind(&def.job_id)
        .bind(at)
        .bind(status)
        .bind(run_id)
        .execute(&s.pool)
        .await;
}

/// Runs a job's spec as `etl run` would: the file read afresh, its diagnostics in the error.
fn run_job(def: &JobDef, duckdb_memory: &str) -> Result<(String, Option<i64>, String), String> {
    let path = PathBuf::from(&def.spec_path);
    let loaded = crate::spec::load(&path, &crate::spec::LoadOptions::with_process_env()).map_err(|e| format!("the spec is invalid:\n{}", e.render(false)))?;
    let compiled = plan::compile(&loaded.spec);
    let temp = tempfile::Builder::new().prefix("etl-job-").tempdir().map_err(|e| e.to_string())?;
    let opts = crate::exec::RunOptions {
        stages: def.stages.clone(),
        dry_run: false,
        spec_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        temp_dir: temp.path().to_path_buf(),
        duckdb_memory: duckdb_memory.to_string(),
        job_id: Some(def.job_id.clone()),
        quiet: true,
        verbose: false,
        force: false,
    };
    let report = crate::exec::run(&loaded, &compiled, &opts).map_err(|e| e.to_string())?;
    let summary: Vec<String> = report.stages.iter().map(|s| format!("{}: {} read, {} rejected", s.stage, s.rows_read, s.rows_rejected)).collect();
    let status = if report.status == "succeeded" { "succeeded" } else { "rejected" };
    Ok((status.to_string(), report.run_id, summary.join("; ")))
}
