//! `etl schedule start`: the runner. Jobs are re-read from the store every few seconds and
//! registered with tokio-cron-scheduler; each firing is claimed by inserting its (job, tick) row
//! (so any number of schedulers run it once), holds the job's advisory lock for its run (so it
//! never overlaps itself), and runs its spec as `etl run` would (`StartOptions::run_job`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_cron_scheduler::{Job, JobScheduler};

use super::store::{JobDef, list};
use super::trigger::{next_run, tick};
use crate::exec::ExecError;

/// How a firing ended: its status (`succeeded` or `rejected`), its run's id, a line per stage.
pub struct JobOutcome {
    /// `succeeded`, or `rejected` when rows were rejected.
    pub status: String,
    /// The run in `etl_runs`.
    pub run_id: Option<i64>,
    /// What each stage did.
    pub summary: String,
}

/// How a firing runs its job's spec: as `etl run` would (the command line passes its own
/// `prepare` and run, `cli::schedule::run_job`), for the firing's time (its business date is
/// that time's date in the job's time zone). On a thread of its own; an error is the
/// diagnostic to log.
pub type RunJob = fn(&JobDef, DateTime<Utc>) -> Result<JobOutcome, String>;

/// How a scheduler runs.
pub struct StartOptions {
    /// Seconds between re-reads of the job table.
    pub sync_every: Duration,
    /// How long a running load may finish after SIGINT/SIGTERM.
    pub grace: Duration,
    /// Runs a job.
    pub run_job: RunJob,
}

fn log(msg: &str) {
    println!("{} {msg}", Utc::now().format("%Y-%m-%dT%H:%M:%SZ"));
}

struct Shared {
    pool: PgPool,
    owner: String,
    running: AtomicUsize,
    run_job: RunJob,
}

/// Runs the scheduler until SIGINT or SIGTERM.
pub async fn start(pool: PgPool, opts: StartOptions) -> Result<(), ExecError> {
    let shared = Arc::new(Shared {
        pool: pool.clone(),
        owner: format!("{}:{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()), std::process::id()),
        running: AtomicUsize::new(0),
        run_job: opts.run_job,
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
    let run_job = s.run_job;
    // exec::run drives its own runtimes: give it a thread of its own.
    std::thread::spawn(move || {
        let _ = tx.send(run_job(&d, at));
    });
    let outcome = rx.await.unwrap_or_else(|_| Err("the run's thread panicked".into()));
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtextextended(current_schema() || ':etl-job:' || $1, 0))").bind(&def.job_id).execute(&mut *conn).await;
    drop(conn);
    s.running.fetch_sub(1, Ordering::SeqCst);
    match outcome {
        Ok(JobOutcome { status, run_id, summary }) => {
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
