//! `etl schedule start`: the runner. Jobs are re-read from the store every few seconds and each
//! gets a timer that sleeps until its next tick; each firing is claimed by inserting its (job, tick) row
//! (so any number of schedulers run it once), holds the job's advisory lock for its run (so it
//! never overlaps itself), and runs its spec as `etl run` would (`StartOptions::run_job`). A
//! firing that ends with exit 3 is tried again as its job's `retries` say; a job registered with
//! `catchup` first makes up the firings missed while no scheduler ran, oldest first.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::store::{JobDef, list, missed_since};
use super::trigger::{missed, next_run};
use crate::exec::ExecError;
use crate::exit;

/// How a firing ended: its status (`succeeded` or `rejected`), its run's id, a line per stage.
pub struct JobOutcome {
    /// `succeeded`, or `rejected` when rows were rejected.
    pub status: String,
    /// The run in `etl_runs`.
    pub run_id: Option<i64>,
    /// What each stage did.
    pub summary: String,
}

/// Why a firing's run failed: the diagnostic to log and record, and the exit code `etl run` would
/// have ended with (3 is retried).
#[derive(Debug)]
pub struct JobError {
    /// The diagnostic.
    pub message: String,
    /// `etl run`'s exit code for it.
    pub exit_code: u8,
    /// The firing's status: `failed`, or `missing`/`late` for a file set with no file.
    pub status: &'static str,
}

/// How a firing runs its job's spec: as `etl run` would (the command line passes its own
/// `prepare` and run, `cli::schedule::run_job`), for the firing's time (its business date is
/// that time's date in the job's time zone). On a thread of its own.
pub type RunJob = fn(&JobDef, DateTime<Utc>) -> Result<JobOutcome, JobError>;

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
    /// Set when the scheduler stops: a firing waiting to retry gives up.
    stopping: std::sync::atomic::AtomicBool,
    stop: tokio::sync::Notify,
}

/// Runs the scheduler until SIGINT or SIGTERM.
pub async fn start(pool: PgPool, opts: StartOptions) -> Result<(), ExecError> {
    let shared = Arc::new(Shared {
        pool: pool.clone(),
        owner: format!("{}:{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()), std::process::id()),
        running: AtomicUsize::new(0),
        run_job: opts.run_job,
        stopping: std::sync::atomic::AtomicBool::new(false),
        stop: tokio::sync::Notify::new(),
    });
    let mut registered: Vec<(JobDef, tokio::task::JoinHandle<()>)> = Vec::new();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ExecError::Internal(format!("listen for SIGTERM: {e}")))?;
    log(&format!("scheduler {} started", shared.owner));
    loop {
        match list(&pool).await {
            Ok(rows) => sync(&mut registered, rows.into_iter().map(|r| r.def).filter(|d| d.enabled).collect(), &shared).await,
            Err(e) => log(&format!("cannot read the jobs (will retry): {e}")),
        }
        tokio::select! {
            _ = tokio::time::sleep(opts.sync_every) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    log("stopping: no new firings; waiting for running loads");
    shared.stopping.store(true, Ordering::SeqCst);
    shared.stop.notify_waiters();
    for (_, timer) in registered.drain(..) {
        timer.abort();
    }
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

/// Starts a timer for each wanted job not yet timed and stops the timers of jobs no longer
/// wanted (removed, paused or changed: a changed job gets a new timer).
async fn sync(registered: &mut Vec<(JobDef, tokio::task::JoinHandle<()>)>, wanted: Vec<JobDef>, shared: &Arc<Shared>) {
    let mut keep = Vec::new();
    for (def, timer) in registered.drain(..) {
        if wanted.contains(&def) {
            keep.push((def, timer));
        } else {
            timer.abort();
            log(&format!("job {}: unregistered", def.job_id));
        }
    }
    *registered = keep;
    for def in wanted {
        if registered.iter().any(|(d, _)| *d == def) {
            continue;
        }
        if def.timezone.parse::<chrono_tz::Tz>().is_err() {
            log(&format!("job {}: unknown time zone {}; not scheduled", def.job_id, def.timezone));
            continue;
        }
        let Some(next) = next_run(&def, Utc::now()) else {
            log(&format!("job {}: cannot schedule `{}`: no next time", def.job_id, def.cron));
            continue;
        };
        log(&format!("job {}: scheduled ({}), next run {}", def.job_id, def.trigger, next.format("%Y-%m-%dT%H:%M:%SZ")));
        if def.catchup != crate::spec::model::Catchup::Skip {
            tokio::spawn(catch_up(def.clone(), shared.clone()));
        }
        let timer = tokio::spawn(timer(def.clone(), shared.clone()));
        registered.push((def, timer));
    }
}

/// Makes up the firings a job missed while no scheduler ran, oldest first, one after another,
/// each claimed as any firing is (so two starting schedulers make each up once).
async fn catch_up(def: JobDef, s: Arc<Shared>) {
    let since = match missed_since(&s.pool, &def.job_id).await {
        Ok(Some(t)) => t,
        Ok(None) => return,
        Err(e) => return log(&format!("job {}: cannot read its last firing, so no missed firing is made up: {e}", def.job_id)),
    };
    let (ticks, more) = missed(&def, since, Utc::now());
    if ticks.is_empty() {
        return;
    }
    let older = if more { " (older missed firings are left out: catchup/max_catchup)" } else { "" };
    log(&format!("job {}: making up {} firing(s) missed since {}{older}", def.job_id, ticks.len(), since.format("%Y-%m-%dT%H:%M:%SZ")));
    for at in ticks {
        if s.stopping.load(Ordering::SeqCst) {
            return;
        }
        fire_at(&def, at, true, &s).await;
    }
}

/// A job's timer: sleeps until each of its ticks and fires it named by that tick, so every
/// scheduler claims the same (job, tick) row however early or late it wakes. Each firing runs on
/// a task of its own: a long load never delays the next tick (which then finds the job's lock
/// taken and is skipped).
async fn timer(def: JobDef, s: Arc<Shared>) {
    use chrono::Timelike;
    let mut after = Utc::now();
    while let Some(at) = next_run(&def, after) {
        let at = at.with_nanosecond(0).unwrap_or(at);
        // Slept on the monotonic clock; woken before the tick on the wall clock (it was set
        // back), sleep again.
        loop {
            let left = at - Utc::now();
            match left.to_std() {
                Ok(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
                _ => break,
            }
        }
        if s.stopping.load(Ordering::SeqCst) {
            return;
        }
        let (d, s2) = (def.clone(), s.clone());
        tokio::spawn(async move { fire_at(&d, at, false, &s2).await });
        // Woken so late that later ticks have passed too (the process was stopped or the
        // machine suspended): those are not fired in a burst; the timer goes on from now.
        let now = Utc::now();
        if next_run(&def, at).is_some_and(|t| t <= now) {
            log(&format!("job {}: woke {} after the tick {}; the ticks since are not fired", def.job_id, humantime::format_duration(Duration::from_secs((now - at).num_seconds().max(0) as u64)), at.format("%Y-%m-%dT%H:%M:%SZ")));
        }
        after = now.max(at);
    }
}

/// One firing: claim it, take the job's lock, run the spec as `etl run` would (again, after a
/// wait that doubles, while it ends with exit 3 and retries are left), record the end.
async fn fire_at(def: &JobDef, at: DateTime<Utc>, made_up: bool, s: &Arc<Shared>) {
    // Running from before its claim until its end is recorded: a stopping scheduler waits for
    // it, and a firing that would start once it stops is never claimed (so never left `running`).
    s.running.fetch_add(1, Ordering::SeqCst);
    let _running = Running(s);
    if s.stopping.load(Ordering::SeqCst) {
        return;
    }
    let tz = def.timezone.parse::<chrono_tz::Tz>().unwrap_or(chrono_tz::UTC);
    let date = at.with_timezone(&tz).date_naive();
    let claimed = sqlx::query("INSERT INTO etl_schedule_firings (job_id, fire_at, owner, business_date, made_up) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
        .bind(&def.job_id)
        .bind(at)
        .bind(&s.owner)
        .bind(date)
        .bind(made_up)
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
        Err(e) => return finish(s, def, at, "failed", None, Some(&e.to_string())).await,
    };
    // Keyed by the store's schema too: two job stores in one database never block each other. A
    // firing on time that finds the job running is skipped; one being made up waits its turn.
    let locked: bool = if made_up {
        sqlx::query("SELECT pg_advisory_lock(hashtextextended(current_schema() || ':etl-job:' || $1, 0))").bind(&def.job_id).execute(&mut *conn).await.is_ok()
    } else {
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended(current_schema() || ':etl-job:' || $1, 0))")
            .bind(&def.job_id)
            .fetch_one(&mut *conn)
            .await
            .unwrap_or(false)
    };
    if !locked {
        log(&format!("job {}: skipped the firing at {at}: the previous one is still running", def.job_id));
        return finish(s, def, at, "skipped", None, Some("the previous firing was still running")).await;
    }
    let what = if made_up { "making up the firing" } else { "firing" };
    log(&format!("job {}: {what} for {} (business date {date}, {})", def.job_id, at.format("%Y-%m-%dT%H:%M:%SZ"), def.spec_path));
    let mut attempt: u32 = 1;
    let outcome = loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let d = def.clone();
        let run_job = s.run_job;
        // exec::run drives its own runtimes: give it a thread of its own.
        std::thread::spawn(move || {
            let _ = tx.send(run_job(&d, at));
        });
        let outcome = rx.await.unwrap_or_else(|_| Err(JobError { message: "the run's thread panicked".into(), exit_code: exit::ERROR, status: "failed" }));
        match &outcome {
            Err(e) if e.exit_code == exit::CONNECT && attempt <= def.retries => {
                let wait = retry_wait(def.retry_delay, attempt);
                let first_line = e.message.lines().next().unwrap_or_default();
                log(&format!("job {}: attempt {attempt} of {} failed (exit 3): {first_line}; trying again in {}", def.job_id, def.retries + 1, humantime::format_duration(wait)));
                let note = format!("attempt {attempt} failed: {first_line}; retrying");
                let _ = sqlx::query("UPDATE etl_schedule_firings SET attempts = $3, error = $4 WHERE job_id = $1 AND fire_at = $2")
                    .bind(&def.job_id)
                    .bind(at)
                    .bind((attempt + 1) as i32)
                    .bind(&note)
                    .execute(&s.pool)
                    .await;
                if !s.stopping.load(Ordering::SeqCst) {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = s.stop.notified() => {}
                    }
                }
                if s.stopping.load(Ordering::SeqCst) {
                    break Err(JobError { message: format!("{}\n(the scheduler stopped before attempt {})", e.message, attempt + 1), exit_code: e.exit_code, status: e.status });
                }
                attempt += 1;
            }
            _ => break outcome,
        }
    };
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtextextended(current_schema() || ':etl-job:' || $1, 0))").bind(&def.job_id).execute(&mut *conn).await;
    drop(conn);
    let tries = if attempt > 1 { format!(" after {attempt} attempts") } else { String::new() };
    match outcome {
        Ok(JobOutcome { status, run_id, summary }) => {
            log(&format!("job {}: {status}{tries} (run {}) {summary}", def.job_id, run_id.map_or("-".into(), |i| i.to_string())));
            finish(s, def, at, &status, run_id, None).await;
        }
        Err(e) => {
            log(&format!("job {}: {}{tries} (exit {}): {}", def.job_id, e.status, e.exit_code, e.message));
            finish(s, def, at, e.status, None, Some(&e.message)).await;
        }
    }
}

/// A firing counted in `Shared::running` until it is dropped.
struct Running<'a>(&'a Shared);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The wait before retry `attempt` (1 for the first): the delay, doubled for each retry before,
/// at most an hour.
fn retry_wait(delay: Duration, attempt: u32) -> Duration {
    delay.saturating_mul(1u32 << (attempt - 1).min(16)).min(Duration::from_secs(3600)).max(delay.min(Duration::from_secs(3600)))
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
