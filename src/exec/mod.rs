//! The executor: the only layer that touches files, S3, DuckDB and databases. It runs a compiled
//! `Plan` and nothing else (every connection, table name and SQL statement is the Plan's), stage
//! by stage, and returns a report of every row's fate. Its rooms, one pipeline word each:
//! `source` (where the rows come from), `extract` (DuckDB reads the CSV), `validate` (Polars
//! checks each row), `stage` (both, and the error budget), `reuse` (an unchanged stage skipped),
//! `incremental` (only changed lines read; the line index), `postgres` and `duck` (the targets:
//! tables, COPY, merge, run records), `analytics`, `admin` (clean, migrate), `report`.

pub mod admin;
pub mod analytics;
pub mod context;
pub mod contracts;
pub mod csv;
pub mod duck;
pub mod error;
pub mod extract;
pub mod guess;
pub mod incremental;
pub mod layout;
pub mod ledger;
pub mod notify;
pub mod postgres;
pub mod progress;
pub mod queue;
pub mod report;
pub mod reuse;
pub mod source;
pub mod stage;
pub mod validate;

use std::collections::HashMap;
use std::path::Path;

use indexmap::IndexMap;

pub use context::{RunOptions, StageContext, Target, duckdb_memory};
pub use error::ExecError;
pub use report::{AnalyticResult, FileReport, Merged, RunReport, StageReport, Status};
pub use stage::{Checked, check_stage, check_stage_once};

use crate::plan::{ConnectionPlan, Plan, StagePlan, duck as duck_sql};
use extract::Reader;
use progress::Progress;
use source::Source;

/// How many files of a set are downloaded, and decoded, at a time.
const FETCH_PARALLEL: usize = 4;

/// The run's records: kept on the first target, unless a dry run keeps none.
struct Records<'t, 'r> {
    on: &'t Target<'r>,
    run_id: Option<i64>,
}

impl Records<'_, '_> {
    fn stage(&self, report: &StageReport) -> Result<(), ExecError> {
        let Some(id) = self.run_id else { return Ok(()) };
        match self.on {
            Target::Pg(pg) => pg.block(postgres::records::record_stage(pg.pool(), id, report)),
            Target::Duck(d) => d.record_stage(id, report),
        }
    }

    fn finish(&self, status: Status, error: Option<&str>) -> Result<(), ExecError> {
        let Some(id) = self.run_id else { return Ok(()) };
        match self.on {
            Target::Pg(pg) => pg.block(postgres::records::finish_run(pg.pool(), id, status, error)),
            Target::Duck(d) => d.finish_run(id, status, error),
        }
    }

    /// Tells the webhooks of the run's end, and records (and logs) those that failed.
    fn notify(&self, plan: &Plan, opts: &RunOptions, end: &str, report: Option<&RunReport>, error: Option<&str>) {
        let failed = tell(plan, opts, end, report, error);
        if let (false, Some(id)) = (failed.is_empty(), self.run_id) {
            let text = failed.join("; ");
            let _ = match self.on {
                Target::Pg(pg) => pg.block(postgres::records::notify_failed(pg.pool(), id, &text)),
                Target::Duck(d) => d.notify_failed(id, &text),
            };
        }
    }
}

/// Tells the plan's webhooks of a run's end (none for a dry run); logs and returns the failures.
fn tell(plan: &Plan, opts: &RunOptions, end: &str, report: Option<&RunReport>, error: Option<&str>) -> Vec<String> {
    if opts.dry_run || plan.notify.is_empty() {
        return Vec::new();
    }
    let date = opts.date.format("%Y-%m-%d").to_string();
    let body = match report {
        Some(r) => serde_json::to_value(r).unwrap_or_default(),
        None => serde_json::json!({ "spec": plan.name, "date": date, "status": end, "error": error }),
    };
    let summary = notify::summary(report, &plan.name, &date, end, error);
    let failed = notify::send(&plan.notify, end, body, &summary);
    for f in &failed {
        eprintln!("etl: {f}");
    }
    failed
}

/// Runs the selected stages of a plan: extract, validate, load; then the analytics.
pub fn run(plan: &Plan, opts: &RunOptions) -> Result<RunReport, ExecError> {
    let mut told = false;
    let result = run_recorded(plan, opts, &mut told);
    // An error before the run was recorded: the webhooks are told all the same.
    if let (Err(e), false) = (&result, told) {
        tell(plan, opts, e.run_status().as_str(), None, Some(&e.to_string()));
    }
    result
}

/// [`run`], telling the webhooks of its end once it is recorded (`told`).
fn run_recorded(plan: &Plan, opts: &RunOptions, told: &mut bool) -> Result<RunReport, ExecError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| ExecError::Internal(e.to_string()))?;
    // The control totals the senders' manifests state, read before anything else.
    let resolved = contracts::resolve_manifests(plan, &opts.spec_dir(), &opts.temp_dir, &rt)?;
    let plan = resolved.as_ref().unwrap_or(plan);
    let stages = plan.select(opts.stages.as_deref());
    let reader = Reader::open(&opts.temp_dir, &opts.duckdb_memory)?;
    let analytics = !opts.dry_run && opts.stages.is_none();
    let targets = open_targets(plan, &stages, analytics, &reader, &opts.spec_dir())?;
    let _contexts: Vec<_> = targets.values().filter_map(|t| if let Target::Pg(pg) = t { Some(pg.enter()) } else { None }).collect();
    let engine = targets.values().next().ok_or_else(|| ExecError::Internal("no stage selected".into()))?;
    let path = opts.spec_path.display().to_string();
    let mut held: Option<sqlx::PgConnection> = None;
    let mut abandoned_runs = Vec::new();
    let run_id = if opts.dry_run {
        None
    } else {
        Some(match engine {
            Target::Pg(pg) => {
                pg.migrate()?;
                // A connection of the run's own, closed when the run ends: it holds the lock that
                // tells the next run this one is alive.
                let mut conn = pg.block(pg.pool().acquire()).map_err(|e| ExecError::database("open the run's connection", e))?.detach();
                let (id, abandoned) = pg.block(postgres::records::begin_run_held(&mut conn, &plan.name, &opts.spec_hash, &path, opts.job_id.as_deref(), opts.date))?;
                for other in &abandoned {
                    Progress::new(opts.quiet, true).step("run", &format!("run {other} was left running by a process that ended: recorded as abandoned"));
                }
                held = Some(conn);
                abandoned_runs = abandoned;
                id
            }
            Target::Duck(d) => {
                d.migrate()?;
                d.begin_run(&plan.name, &opts.spec_hash, &path, opts.job_id.as_deref(), opts.date)?
            }
        })
    };
    // The file ledger is kept on each target a set loads into, beside its rows.
    if !opts.dry_run {
        for (name, t) in targets.iter().skip(1) {
            if stages.iter().any(|s| s.source.set.is_some() && &s.target.connection == name) {
                match t {
                    Target::Pg(pg) => pg.migrate()?,
                    Target::Duck(d) => d.migrate()?,
                }
            }
        }
    }
    let records = Records { on: engine, run_id };
    let progress = Progress::new(opts.quiet, opts.verbose);
    let records_on = targets.keys().next().map(String::as_str).unwrap_or_default();
    let cx = StageContext { plan, opts, reader: &reader, rt: &rt, progress: &progress, records: run_id.map(|id| (id, records_on)), claim: None };
    let reports = match run_stages(&cx, &stages, &targets, &records) {
        Ok(reports) => reports,
        Err(e) => {
            let _ = records.finish(e.run_status(), Some(&e.to_string()));
            records.notify(plan, opts, e.run_status().as_str(), None, Some(&e.to_string()));
            *told = true;
            return Err(e);
        }
    };
    // The loads are committed: a failing analytic is reported with them, never in their place.
    let recorded = match (engine, run_id) {
        (Target::Pg(_), Some(run_id)) => Some(analytics::Recorded { connection: records_on, run_id, reuse: !opts.force }),
        _ => None,
    };
    // The state each stage left its table in (or found it in, unchanged): what the analytics
    // reading those tables compare, without reading them again.
    let loaded: Vec<(String, String)> = reports
        .iter()
        .filter(|r| stages.iter().any(|s| s.name == r.stage && s.target.connection == records_on))
        .filter_map(|r| r.fingerprint.as_ref().map(|f| (r.target.clone(), f.table_state.clone())))
        .collect();
    let analytics = if analytics { analytics::run_all(plan, &targets, recorded.as_ref(), &loaded) } else { Vec::new() };
    let status = RunReport::status_of(&reports);
    let unchanged = RunReport::all_unchanged(&reports);
    let report = RunReport {
        run_id,
        spec: plan.name.clone(),
        date: opts.date.format("%Y-%m-%d").to_string(),
        spec_hash: opts.spec_hash.clone(),
        dry_run: opts.dry_run,
        status,
        stages: reports,
        analytics,
        unchanged,
        abandoned_runs,
    };
    records.finish(status, report.analytics_failed().as_deref())?;
    // A failed analytic ends the run as `failed` for its webhooks (the loads stand; exit 1).
    let end = if report.analytics_failed().is_some() { Status::Failed } else { status };
    records.notify(plan, opts, end.as_str(), Some(&report), report.analytics_failed().as_deref());
    *told = true;
    // The run's lock goes with its connection.
    if let (Some(conn), Target::Pg(pg)) = (held, engine) {
        use sqlx::Connection;
        let _ = pg.block(conn.close());
    }
    Ok(report)
}

/// The files of a stage's set its target's ledger holds as loaded (none with `select: all`,
/// `--force`, or in a dry run's view: every file is then read).
fn loaded_files(cx: &StageContext<'_>, st: &StagePlan, target: &Target<'_>, files: &[Source]) -> Result<Vec<ledger::Entry>, ExecError> {
    let Some(set) = &st.source.set else { return Ok(Vec::new()) };
    let Some(first) = files.first() else { return Ok(Vec::new()) };
    if set.select == crate::spec::model::Select::All || cx.opts.force {
        return Ok(Vec::new());
    }
    match target {
        Target::Pg(pg) => pg.block(postgres::records::ledger_loaded(pg.pool(), &cx.plan.name, st, &first.origin)),
        Target::Duck(d) => d.ledger_loaded(&cx.plan.name, st, &first.origin),
    }
}

/// A stage's files to bring into the spool before it loads.
enum Download {
    /// Its one source.
    One(Source),
    /// A set's files; those `wanted` (not loaded before) are fetched.
    Set { files: Vec<Source>, wanted: Vec<bool>, fetched: progress::Meter },
}

impl Download {
    /// Downloads (and decodes) the files: S3 objects pinned to the ETags read when they were
    /// located. Returns them, ready to read.
    fn fetch(self, temp_dir: &Path, rt: &tokio::runtime::Runtime) -> Result<Vec<Source>, ExecError> {
        match self {
            Download::One(mut src) => {
                let fetched = src.path(temp_dir, rt);
                // The scan following the download learns it ended, whatever happened.
                src.tee = None;
                fetched?;
                src.meter.finish();
                Ok(vec![src])
            }
            Download::Set { mut files, wanted, fetched } => {
                let mut want: Vec<&mut Source> = files.iter_mut().zip(&wanted).filter(|(_, w)| **w).map(|(f, _)| f).collect();
                Source::fetch_all(&mut want, temp_dir, rt, FETCH_PARALLEL, &fetched)?;
                fetched.finish();
                for f in &want {
                    f.meter.finish();
                }
                Ok(files)
            }
        }
    }
}

/// Opens every target the selected stages (and, when they run, the analytics) load into, in
/// that order: the first keeps the run's records.
pub(crate) fn open_targets<'r>(plan: &Plan, stages: &[&StagePlan], analytics: bool, reader: &'r Reader, spec_dir: &Path) -> Result<IndexMap<String, Target<'r>>, ExecError> {
    let mut targets = IndexMap::new();
    let mut names: Vec<&str> = stages.iter().map(|s| s.target.connection.as_str()).collect();
    if analytics {
        names.extend(plan.analytics.iter().map(|a| a.connection.as_str()));
    }
    for name in names {
        if targets.contains_key(name) {
            continue;
        }
        let target = match plan.connections.get(name) {
            Some(ConnectionPlan::Postgres(c)) => Target::Pg(postgres::Pg::connect(name, c)?),
            Some(ConnectionPlan::Duckdb { file }) => Target::Duck(duck::Duck::open(reader, &spec_dir.join(file))?),
            _ => return Err(ExecError::Internal(format!("connection {name} is not a target"))),
        };
        targets.insert(name.to_string(), target);
    }
    Ok(targets)
}

/// A set's files loaded one by one (`atomicity: file`), in name order, each in a transaction of
/// its own with its ledger row and its part of the stage's record: a file that ends without
/// loading (over its budget, refused) is rolled back alone and the next one still loads; an
/// error ends the stage with the files before it loaded. The report adds the files' up.
fn load_one_by_one(cx: &StageContext<'_>, pg: &postgres::Pg, st: &StagePlan, files: Vec<Source>, dry: &mut postgres::load::DryRun, records: &Records<'_, '_>) -> Result<StageReport, ExecError> {
    let mut total: Option<StageReport> = None;
    let count = files.len();
    for (i, f) in files.into_iter().enumerate() {
        let shown = f.shown.clone();
        let mut one = vec![f];
        let report = postgres::load::load_stage(cx, pg, st, &mut one, None, dry).map_err(|e| postgres::load::with_lock_holders(pg, st, e))?;
        // Rolled back, it was not recorded with its rows: its part of the record goes in now.
        if !report.recorded {
            records.stage(&report)?;
        }
        cx.progress.step(&st.name, &format!("file {} of {count}, {shown}: {}", i + 1, report.status));
        total = Some(match total {
            None => report,
            Some(t) => t.and(report),
        });
    }
    let mut report = total.ok_or_else(|| ExecError::Internal(format!("stage {} has no file to load", st.name)))?;
    report.recorded = true;
    Ok(report)
}

/// Locates every source, finds the loads that may be reused, then runs each stage in order,
/// recording each; a stage over its error budget ends the run's stages.
fn run_stages(cx: &StageContext<'_>, stages: &[&StagePlan], targets: &IndexMap<String, Target<'_>>, records: &Records<'_, '_>) -> Result<Vec<StageReport>, ExecError> {
    let (opts, progress) = (cx.opts, cx.progress);
    // Every source is located before any stage loads: a missing or unreadable object fails the
    // run with nothing loaded.
    let mut sources: HashMap<String, Source> = HashMap::new();
    let mut sets: HashMap<String, Vec<Source>> = HashMap::new();
    for st in stages {
        if let Some(set) = &st.source.set {
            let files = Source::locate_set(cx.plan, st, set, opts.date, &opts.spec_dir(), &opts.temp_dir, cx.rt, progress)?;
            let bytes: u64 = files.iter().map(|f| f.bytes).sum();
            let what = if files.is_empty() { "none (on_missing: skip)".to_string() } else { format!("{} ({})", files.len(), progress::bytes(bytes)) };
            progress.step(&st.name, &format!("files {}: {what}", set.pattern.text()));
            sets.insert(st.name.clone(), files);
            continue;
        }
        let src = Source::locate(cx.plan, st, &opts.spec_dir(), &opts.temp_dir, cx.rt)?;
        progress.step(&st.name, &format!("source {} ({})", src.shown, progress::bytes(src.bytes)));
        sources.insert(st.name.clone(), src);
    }
    // A stage that looks unchanged since its last load is downloaded only if the check under its
    // locks finds otherwise; every other source is downloaded in the background, in stage order,
    // while the stages before it load: a set's files but those the ledger holds as loaded. A
    // stage waits for its own files only.
    let reusable = reuse::reusable_loads(cx.plan, stages, targets, opts, &sources, progress)?;
    let mut downloads: Vec<(String, Download)> = Vec::new();
    for st in stages {
        if let Some(mut files) = sets.remove(&st.name) {
            let entries = loaded_files(cx, st, &targets[&st.target.connection], &files)?;
            let wanted: Vec<bool> = files.iter().map(|f| ledger::loaded_by(&entries, f).is_none()).collect();
            let fetched = progress.files(&st.name, wanted.iter().filter(|w| **w).count() as u64);
            let size: u64 = files.iter().zip(&wanted).filter(|(f, w)| **w && f.to_download()).map(|(f, _)| f.bytes).sum();
            if size > 0 {
                let meter = progress.download(&st.name, size);
                for (f, _) in files.iter_mut().zip(&wanted).filter(|(_, w)| **w) {
                    f.meter = meter.clone();
                }
            }
            downloads.push((st.name.clone(), Download::Set { files, wanted, fetched }));
            continue;
        }
        if reusable.get(&st.name).is_none_or(|r| r.index.is_some())
            && let Some(mut src) = sources.remove(&st.name)
        {
            if src.to_download() {
                src.meter = progress.download(&st.name, src.bytes);
            }
            // A stage that may read only its changed lines: its file is scanned as it downloads.
            if let Some(r) = reusable.get(&st.name)
                && let Some(last_index) = r.index.clone()
                && src.to_download()
                && src.compression == crate::spec::model::Compression::None
                && st.source.trailer.is_none()
                && let Some(dir) = incremental::cache_dir()
                && let Some(source) = &src.fingerprint
            {
                let next_index = incremental::index_path(&dir, &cx.plan.name, &st.name, &st.target.qualified, source);
                let (tee, following) = incremental::follow((*st).clone(), src.shown.clone(), Some(next_index), last_index);
                src.tee = Some(tee);
                if let Ok(mut slot) = r.following.lock() {
                    *slot = Some(following);
                }
            }
            downloads.push((st.name.clone(), Download::One(src)));
        }
    }
    // A dry run keeps one transaction per target for the whole run (so later stages see what
    // earlier ones would have loaded) and rolls it back at the end.
    let mut dry = postgres::load::DryRun::new();
    let mut duck_dry_open: Vec<&str> = Vec::new();
    let mut reports = Vec::new();
    let (temp_dir, rt) = (opts.temp_dir.as_path(), cx.rt);
    let waiting: Vec<String> = downloads.iter().map(|(name, _)| name.clone()).collect();
    let (done, downloaded) = std::sync::mpsc::channel::<(String, Result<Vec<Source>, ExecError>)>();
    let result = std::thread::scope(|scope| {
        scope.spawn(move || {
            for (name, download) in downloads {
                // The stages stopped: what is left is not needed.
                if done.send((name, download.fetch(temp_dir, rt))).is_err() {
                    break;
                }
            }
        });
        (|| -> Result<(), ExecError> {
        for st in stages {
            if waiting.contains(&st.name) {
                loop {
                    let (name, fetched) = downloaded.recv().map_err(|_| ExecError::Internal("the downloads stopped".into()))?;
                    let set = stages.iter().any(|s| s.name == name && s.source.set.is_some());
                    match fetched? {
                        files if set => {
                            sets.insert(name.clone(), files);
                        }
                        mut files => {
                            if let Some(f) = files.pop() {
                                sources.insert(name.clone(), f);
                            }
                        }
                    }
                    if name == st.name {
                        break;
                    }
                }
            }
            let mut files = match (sets.remove(&st.name), sources.remove(&st.name)) {
                (Some(files), _) => files,
                (None, Some(src)) => vec![src],
                (None, None) => return Err(ExecError::Internal(format!("stage {} has no source", st.name))),
            };
            let started = std::time::Instant::now();
            let mut report = match &targets[&st.target.connection] {
                // A set with no file (`on_missing: skip`) loads nothing.
                _ if files.is_empty() => {
                    progress.step(&st.name, "no file: skipped (on_missing: skip)");
                    postgres::load::nothing_new(st, Vec::new())
                }
                Target::Pg(pg) if queue::distributed(st) && opts.distribute && !opts.dry_run => queue::distribute(cx, pg, st, files)?,
                Target::Pg(pg) if queue::distributed(st) => load_one_by_one(cx, pg, st, files, &mut dry, records)?,
                Target::Pg(pg) => postgres::load::load_stage(cx, pg, st, &mut files, reusable.get(&st.name), &mut dry).map_err(|e| postgres::load::with_lock_holders(pg, st, e))?,
                Target::Duck(d) => {
                    if opts.dry_run && !duck_dry_open.contains(&st.target.connection.as_str()) {
                        d.execute(duck_sql::BEGIN, "begin a transaction")?;
                        duck_dry_open.push(&st.target.connection);
                    }
                    duck::load_stage(cx, d, st, &mut files)?
                }
            };
            report.seconds = started.elapsed().as_secs_f64();
            if !report.files.is_empty() {
                let loaded = report.files.iter().filter(|f| f.status == "loaded").count();
                let already = report.files.iter().filter(|f| f.status == "already_loaded").count();
                progress.step(&st.name, &format!("{} file(s): {loaded} loaded, {already} loaded before", report.files.len()));
            }
            if let Some(run) = report.unchanged_since_run {
                progress.step(&st.name, &format!("unchanged since run {run} (same source, spec and tables): not loaded again"));
            } else {
                let loaded = report.loaded.map_or("nothing loaded".to_string(), |m| format!("{} inserted, {} updated, {} unchanged", m.inserted, m.updated, m.unchanged));
                progress.step(&st.name, &format!("{} rows read, {} rejected; {loaded}", report.rows_read, report.rows_rejected));
            }
            // A PostgreSQL stage that committed rows recorded itself in its own transaction.
            if !report.recorded {
                records.stage(&report)?;
            }
            // A stage refused whole, or one whose file was given up: the stages after it would
            // read a table short of rows.
            let stop = report.status.loaded_nothing() || report.status == Status::Failed;
            reports.push(report);
            if stop {
                break;
            }
        }
        Ok(())
        })()
    });
    for (conn, tx) in dry {
        if let Target::Pg(pg) = &targets[&conn] {
            let _ = pg.block(tx.rollback());
        }
    }
    for conn in duck_dry_open {
        if let Target::Duck(d) = &targets[conn] {
            let _ = d.execute(duck_sql::ROLLBACK, "roll back the dry run");
        }
    }
    result.map(|()| reports)
}
