//! The work queue of a distributed run (`etl run --distribute`, `etl worker`): the files of a set
//! that commits file by file (`atomicity: file`) are queued in `etl_queue` on the stage's target;
//! the run and any number of workers claim them one at a time with a lease they renew while they
//! load, and a file's row turns `done` in that file's own transaction (with its rows and its
//! ledger row). A worker that dies loses its lease and the file is claimed again; its first
//! transaction rolled back with its connection, so nothing loads twice. A stage with a key commits
//! its files in the set's order (`ordered`, `wait_turn`), so workers end as the run alone. The run waits for every
//! file of a stage before the stages after it, then reports the files as the queue ended them,
//! each with the worker that loaded it.

use std::time::Duration;

use chrono::NaiveDate;
use sqlx::{PgPool, Row};

use super::context::{RunOptions, StageContext, Target};
use super::error::ExecError;
use super::extract::Reader;
use super::postgres::{self, Pg, db};
use super::progress::Progress;
use super::report::{FileReport, Merged, StageReport, Status};
use super::source::Source;
use crate::plan::{ConnectionPlan, Plan, StagePlan, records};
use crate::spec::model::Atomicity;

/// A file a worker claimed.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Its row in `etl_queue`.
    pub id: i64,
    /// The distributed run it belongs to (whose records the load adds to).
    pub run_id: i64,
    /// Its stage.
    pub stage: String,
    /// The run's business date.
    pub date: NaiveDate,
    /// The file's key in its connection.
    pub file_key: String,
    /// How many times it has been claimed, this one included.
    pub attempts: i32,
    /// Who claimed it.
    pub worker: String,
    /// How long the claim holds without being renewed.
    pub lease: Duration,
}

/// A file claimed this many times without an end (its worker died each time) is given up.
pub const MAX_ATTEMPTS: i32 = 3;

/// Whether a stage's files go through the queue in a distributed run.
pub fn distributed(st: &StagePlan) -> bool {
    st.source.set.as_ref().is_some_and(|s| s.atomicity == Atomicity::File)
}

/// Whether the order of a stage's files decides what its table holds: with a key or a unique
/// column, a later file's row replaces an earlier file's of the same key (upsert) or is refused
/// beside it (append), so the files commit in the set's order, as `etl run` alone commits them.
pub fn ordered(st: &StagePlan) -> bool {
    !st.target.key.is_empty() || st.columns.iter().any(|c| c.unique)
}

/// Whether a claimed file may load now.
#[derive(Debug, PartialEq)]
enum Turn {
    /// Every file queued before it has ended.
    Go,
    /// An earlier file waits for a worker: the claim was handed back.
    HandedBack,
}

/// Waits until every file queued before the claimed one (in its run and stage) has ended, so
/// the files commit in the set's order. While one of them waits for a worker (queued, or its
/// worker's lease ran out), the claim is handed back, and the worker's next claim is that file:
/// no worker waits for a file that nobody loads.
fn wait_turn(pg: &Pg, claim: &Claim) -> Result<Turn, ExecError> {
    loop {
        let turn = sqlx::query(records::QUEUE_TURN).bind(claim.run_id).bind(&claim.stage).bind(claim.id);
        let row = pg.block(turn.fetch_one(pg.pool())).map_err(db("look at the files queued before the claimed one"))?;
        let (open, unclaimed): (i64, i64) = (row.get(0), row.get(1));
        if open == 0 {
            return Ok(Turn::Go);
        }
        if unclaimed > 0 {
            let back = sqlx::query(records::QUEUE_HAND_BACK).bind(claim.id).bind(&claim.worker);
            pg.block(back.execute(pg.pool())).map_err(db("hand a claim back"))?;
            return Ok(Turn::HandedBack);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Claims the oldest waiting file of `spec` (of `run`, or of any run).
async fn claim_on(pool: &PgPool, spec: &str, worker: &str, lease: Duration, run: Option<i64>) -> Result<Option<Claim>, ExecError> {
    let row = sqlx::query(records::QUEUE_CLAIM)
        .bind(spec)
        .bind(worker)
        .bind(lease.as_secs_f64())
        .bind(run)
        .fetch_optional(pool)
        .await
        .map_err(db("claim a file of the work queue"))?;
    Ok(row.map(|r| Claim {
        id: r.get(0),
        run_id: r.get(1),
        stage: r.get(2),
        date: r.get::<String, _>(3).parse().unwrap_or_default(),
        file_key: r.get(4),
        attempts: r.get(5),
        worker: worker.to_string(),
        lease,
    }))
}

/// The claimed file's row `done`, with its load's outcome; in the file's own transaction when
/// it committed rows. False when the claim was lost (its lease ran out and another worker took
/// the file): the transaction must then roll back.
pub async fn done_in<'c, E: sqlx::PgExecutor<'c>>(on: E, claim: &Claim, report: &StageReport) -> Result<bool, ExecError> {
    let m = report.loaded.unwrap_or_default();
    let r = sqlx::query(records::QUEUE_DONE)
        .bind(claim.id)
        .bind(&claim.worker)
        .bind(report.status.as_str())
        .bind(report.rows_read as i64)
        .bind(m.inserted as i64)
        .bind(m.updated as i64)
        .bind(m.unchanged as i64)
        .bind(report.rows_rejected as i64)
        .execute(on)
        .await
        .map_err(db("mark the claimed file done"))?;
    Ok(r.rows_affected() == 1)
}

async fn failed(pool: &PgPool, claim: &Claim, why: &str) -> Result<(), ExecError> {
    sqlx::query(records::QUEUE_FAILED).bind(claim.id).bind(&claim.worker).bind(why).execute(pool).await.map_err(db("mark the claimed file failed"))?;
    Ok(())
}

/// Renews a claim's lease every third of it, from a thread of its own, until dropped: started
/// as soon as the file is claimed, so the time a worker takes to get ready counts for nothing.
pub struct Heartbeat {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(pool: PgPool, claim: &Claim) -> Heartbeat {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (id, worker, lease) = (claim.id, claim.worker.clone(), claim.lease);
        // A connection of its own, on a runtime of its own: the run's pool belongs to the run's
        // runtime, which is busy (or idle) on the load's thread. Named for its worker in
        // `pg_stat_activity`, and closed when the claim ends.
        let options = (*pool.connect_options()).clone().application_name(&format!("etl heartbeat {worker}"));
        let thread = std::thread::spawn(move || {
            use sqlx::Connection;
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            let mut conn: Option<sqlx::PgConnection> = None;
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(lease / 3) {
                rt.block_on(async {
                    if conn.is_none() {
                        conn = sqlx::PgConnection::connect_with(&options).await.ok();
                    }
                    if let Some(c) = conn.as_mut() {
                        let renew = sqlx::query(records::QUEUE_RENEW).bind(id).bind(&worker).bind(lease.as_secs_f64()).execute(c);
                        if renew.await.is_err() {
                            conn = None;
                        }
                    }
                });
            }
            if let Some(c) = conn {
                let _ = rt.block_on(c.close());
            }
        });
        Heartbeat { stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Loads one claimed file, its lease renewed meanwhile: committed, its row turns `done` in its
/// transaction; ended without a commit (over its budget, loaded before), its part of the
/// stage's record and its row's end are written after; failed, its row says why.
fn load_claimed(cx: &StageContext<'_>, pg: &Pg, st: &StagePlan, file: Source, claim: &Claim) -> Result<StageReport, ExecError> {
    let claimed = StageContext { plan: cx.plan, opts: cx.opts, reader: cx.reader, rt: cx.rt, progress: cx.progress, records: cx.records, claim: Some(claim) };
    let mut dry = postgres::load::DryRun::new();
    let loaded = postgres::load::load_stage(&claimed, pg, st, &mut vec![file], None, &mut dry);
    match loaded {
        Ok(report) => {
            if !report.recorded {
                pg.block(postgres::records::record_stage(pg.pool(), claim.run_id, &report))?;
                pg.block(done_in(pg.pool(), claim, &report))?;
            }
            Ok(report)
        }
        Err(e) => {
            let _ = pg.block(failed(pg.pool(), claim, &e.to_string()));
            Err(e)
        }
    }
}

/// The PostgreSQL targets whose stages' files may be queued, by connection name.
pub struct Queue {
    targets: Vec<Pg>,
    spec: String,
}

impl Queue {
    /// Connects to the targets of the plan's stages that commit file by file.
    pub fn open(plan: &Plan) -> Result<Queue, ExecError> {
        let mut names: Vec<&str> = plan.stages.iter().filter(|s| distributed(s)).map(|s| s.target.connection.as_str()).collect();
        names.dedup();
        let mut targets = Vec::new();
        for name in names {
            if let Some(ConnectionPlan::Postgres(c)) = plan.connections.get(name) {
                let pg = Pg::connect(name, c)?;
                pg.migrate()?;
                targets.push(pg);
            }
        }
        if targets.is_empty() {
            return Err(ExecError::Internal(format!(
                "spec {} has no stage whose files a worker could load: give a set's source `atomicity: file` (on a PostgreSQL target)",
                plan.name
            )));
        }
        Ok(Queue { targets, spec: plan.name.clone() })
    }

    /// Claims the oldest waiting file of the spec on any of its targets; its lease is renewed
    /// until the returned heartbeat is dropped.
    pub fn claim(&self, worker: &str, lease: Duration) -> Result<Option<(Claim, Heartbeat)>, ExecError> {
        for pg in &self.targets {
            if let Some(c) = pg.block(claim_on(pg.pool(), &self.spec, worker, lease, None))? {
                if c.attempts > MAX_ATTEMPTS {
                    pg.block(failed(pg.pool(), &c, &format!("claimed {} times and never finished (each worker died on it): given up", c.attempts - 1)))?;
                    continue;
                }
                let beat = Heartbeat::start(pg.pool().clone(), &c);
                return Ok(Some((c, beat)));
            }
        }
        Ok(None)
    }
}

/// A worker's one claimed file, with the plan compiled for the claim's business date: located
/// in its set, fetched, loaded when its turn comes (`ordered`); None when the claim was handed
/// back for an earlier file.
pub fn work(plan: &Plan, opts: &RunOptions, claim: &Claim) -> Result<Option<StageReport>, ExecError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| ExecError::Internal(e.to_string()))?;
    let reader = Reader::open(&opts.temp_dir, &opts.duckdb_memory)?;
    let stages = plan.select(Some(std::slice::from_ref(&claim.stage)));
    let st = *stages.first().ok_or_else(|| ExecError::Internal(format!("spec {} has no stage {}", plan.name, claim.stage)))?;
    let targets = super::open_targets(plan, &stages, false, &reader, &opts.spec_dir())?;
    let Some(Target::Pg(pg)) = targets.get(&st.target.connection) else {
        return Err(ExecError::Internal(format!("stage {} does not load into PostgreSQL", st.name)));
    };
    let _context = pg.enter();
    let progress = Progress::new(opts.quiet, opts.verbose);
    let set = st.source.set.as_ref().ok_or_else(|| ExecError::Internal(format!("stage {} reads no set", st.name)))?;
    let found = Source::locate_set(plan, st, set, claim.date, &opts.spec_dir(), &opts.temp_dir, &rt, &progress).and_then(|files| {
        files.into_iter().find(|f| f.key == claim.file_key).ok_or_else(|| ExecError::Source {
            source_name: claim.file_key.clone(),
            message: format!("no longer in the set {} for {}", set.pattern.text(), claim.date),
        })
    });
    let mut file = match found {
        Ok(f) => f,
        Err(e) => {
            let _ = pg.block(failed(pg.pool(), claim, &e.to_string()));
            return Err(e);
        }
    };
    if let Err(e) = file.path(&opts.temp_dir, &rt) {
        let _ = pg.block(failed(pg.pool(), claim, &e.to_string()));
        return Err(e);
    }
    if ordered(st) && wait_turn(pg, claim)? == Turn::HandedBack {
        return Ok(None);
    }
    let cx = StageContext { plan, opts, reader: &reader, rt: &rt, progress: &progress, records: Some((claim.run_id, st.target.connection.as_str())), claim: None };
    load_claimed(&cx, pg, st, file, claim).map(Some)
}

/// In a distributed run: the stage's files queued, loaded by the run itself beside any workers,
/// and waited for; the report is the queue's (each file with its worker) and the rejects the
/// loads recorded.
pub fn distribute(cx: &StageContext<'_>, pg: &Pg, st: &StagePlan, files: Vec<Source>) -> Result<StageReport, ExecError> {
    let Some((run_id, on)) = cx.records else {
        return Err(ExecError::Internal(format!("stage {}: a distributed run needs its run records", st.name)));
    };
    if on != st.target.connection {
        return Err(ExecError::Internal(format!(
            "stage {} loads into `{}`, but the run's records are on `{on}`: a distributed stage's files are queued beside the run's records (load it with its own `etl run --distribute --stage {}`)",
            st.name, st.target.connection, st.name
        )));
    }
    let date = cx.opts.date.format("%Y-%m-%d").to_string();
    let shown: Vec<(String, String)> = files.iter().map(|f| (f.key.clone(), f.shown.clone())).collect();
    for f in &files {
        let queued = sqlx::query(records::QUEUE_FILE).bind(run_id).bind(&cx.plan.name).bind(&st.name).bind(&date).bind(&f.key);
        pg.block(queued.execute(pg.pool())).map_err(db("queue a file"))?;
    }
    cx.progress.step(&st.name, &format!("{} file(s) queued for the workers (etl worker) and this run", files.len()));
    let mut mine: Vec<Option<Source>> = files.into_iter().map(Some).collect();
    let worker = format!("run {run_id}");
    loop {
        if let Some(c) = pg.block(claim_on(pg.pool(), &cx.plan.name, &worker, cx.opts.lease, Some(run_id)))? {
            let _beat = Heartbeat::start(pg.pool().clone(), &c);
            if c.attempts <= MAX_ATTEMPTS && ordered(st) && wait_turn(pg, &c)? == Turn::HandedBack {
                continue;
            }
            let file = shown.iter().position(|(k, _)| *k == c.file_key).and_then(|i| mine[i].take());
            match file {
                Some(f) if c.attempts <= MAX_ATTEMPTS => {
                    let report = load_claimed(cx, pg, st, f, &c)?;
                    cx.progress.step(&st.name, &format!("{}: {} (by this run)", c.file_key, report.status));
                }
                Some(_) => pg.block(failed(pg.pool(), &c, &format!("claimed {} times and never finished (each worker died on it): given up", c.attempts - 1)))?,
                // This run loaded it once already and lost that claim: its copy is spent.
                None => pg.block(failed(pg.pool(), &c, "this run's own claim on it ran out while it loaded it: given up"))?,
            }
            continue;
        }
        let row = pg.block(sqlx::query(records::QUEUE_LEFT).bind(run_id).bind(&st.name).fetch_one(pg.pool())).map_err(db("look at the work queue"))?;
        let left: i64 = row.get(0);
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The stage as the queue ended it.
    let rows = pg.block(sqlx::query(records::QUEUE_ENDS).bind(run_id).bind(&st.name).fetch_all(pg.pool())).map_err(db("read the work queue"))?;
    let set_shown = shown.first().map(|(k, s)| s.strip_suffix(k.as_str()).map_or_else(|| s.clone(), |base| format!("{base}{}", st.source.key))).unwrap_or_default();
    let mut report = StageReport::new(st, &set_shown, 0);
    report.status = Status::Succeeded;
    let mut failures = Vec::new();
    for r in rows {
        let key: String = r.get(0);
        let state: String = r.get(1);
        let status = Status::from_word(&r.get::<String, _>(2)).unwrap_or(Status::Failed);
        let worker: String = r.get(3);
        let (read, inserted, updated, unchanged, rejected): (i64, i64, i64, i64, i64) = (r.get(4), r.get(5), r.get(6), r.get(7), r.get(8));
        let file = shown.iter().find(|(k, _)| *k == key).map_or(key.clone(), |(_, s)| s.clone());
        let mut one = StageReport::new(st, &set_shown, 0);
        one.status = if state == "failed" { Status::Failed } else { status };
        one.rows_read = read as u64;
        one.rows_rejected = rejected as u64;
        one.rows_valid = (read - rejected).max(0) as u64;
        let loads = state == "done" && !one.status.loaded_nothing();
        if loads {
            one.loaded = Some(Merged { inserted: inserted as u64, updated: updated as u64, unchanged: unchanged as u64, ..Merged::default() });
        }
        let word = match () {
            _ if state == "failed" => "failed",
            _ if loads && read > 0 => "loaded",
            _ if loads => "already_loaded",
            _ => "not_loaded",
        };
        one.files.push(FileReport { worker: Some(worker), status: word, rows_valid: one.rows_valid, rows_rejected: one.rows_rejected, ..FileReport::read(&file, read as u64) });
        if state == "failed" {
            failures.push(format!("{key}: {}", r.get::<String, _>(9)));
        }
        report = report.and(one);
    }
    let rejects = pg.block(postgres::records::rejects_of(pg.pool(), run_id, &st.name))?;
    report.rejects_by_rule.clear();
    report.count_rules(&rejects);
    report.rejects = rejects;
    if !failures.is_empty() {
        let why = format!("{} file(s) failed: {}", failures.len(), failures.join("; "));
        // The stage's record (which each loaded file added to) says so too.
        let mut failed = StageReport::new(st, &set_shown, 0);
        failed.status = Status::Failed;
        failed.refused = Some(why.clone());
        pg.block(postgres::records::record_stage(pg.pool(), run_id, &failed))?;
        report.status = Status::Failed;
        report.refused = Some(why);
    }
    report.recorded = true;
    Ok(report)
}
