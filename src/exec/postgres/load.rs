//! Loading one stage into PostgreSQL in one transaction (the run's shared one in a dry run, under
//! a savepoint). The table is locked against other writers; the extract joins the referenced key
//! sets and the table's current rows, exported from the same transaction. Rows go in one binary
//! COPY: straight into a table that is new (created with its columns and an identity's key
//! only, its other keys, indexes and foreign keys built after the load) or empty, else into a
//! staging table merged into the table. Every statement is the stage's Plan's.

use std::path::Path;

use indexmap::IndexMap;
use sqlx::Row;

use super::copy::{copy_stream, export_csv};
use super::records::current_xid;
use super::table::{add_constraints, ensure_table, finish_table};
use super::{Pg, Tx, db, execute, execute_bound, generated, value};
use crate::exec::extract::FileInput;
use crate::exec::ledger;
use crate::exec::report::{FileReport, Merged, StageReport};
use crate::exec::reuse::{Reuse, fingerprint, recorded_rejects, stage_context, unchanged_stage};
use crate::exec::source::Source;
use crate::exec::stage::{Checked, over_budget, stage_rows};
use crate::exec::context::StageContext;
use crate::exec::error::ExecError;
use crate::exec::incremental;
use crate::plan::StagePlan;
use crate::plan::MergeStep;
use crate::plan::{MissingSql, PgStatements};
use crate::spec::model::{LoadMode, Select};

/// The transactions a dry run keeps open, one per target, rolled back at its end.
pub type DryRun = IndexMap<String, Tx>;

/// Loads one stage (see the module's description).
pub fn load_stage(
    cx: &StageContext<'_>,
    pg: &Pg,
    st: &StagePlan,
    files: &mut Vec<Source>,
    reuse: Option<&Reuse>,
    dry: &mut DryRun,
) -> Result<StageReport, ExecError> {
    let (opts, progress) = (cx.opts, cx.progress);
    let sql = st.target.postgres().ok_or_else(|| ExecError::Internal(format!("stage {} has no PostgreSQL statements", st.name)))?;
    // The stage's own transaction: committed after the merge, rolled back on drop.
    let mut own_tx: Option<Tx> = None;
    let tx: &mut Tx = if opts.dry_run {
        if !dry.contains_key(&st.target.connection) {
            dry.insert(st.target.connection.clone(), pg.begin()?);
        }
        dry.get_mut(&st.target.connection).ok_or_else(|| ExecError::Internal("the dry run's transaction is gone".into()))?
    } else {
        own_tx.insert(pg.begin()?)
    };
    let t = &st.target;
    let run = |tx: &mut Tx, sql: &str, what: &'static str| pg.block(execute(tx, sql, what));
    if opts.dry_run {
        run(tx, &sql.savepoint, "open the stage's savepoint")?;
    }
    for s in &sql.settings {
        run(tx, s, "set the stage's transaction up")?;
    }
    pg.block(execute_bound(tx, &sql.advisory_lock, "lock the target table"))?;
    // The table's definition as it is, before the check below may put back what someone
    // dropped: a table so repaired is loaded again, never taken as the last load left it.
    let definition = if reuse.is_some() { pg.block(super::state(tx, &sql.exists, &sql.definition))? } else { None };
    let ensured = pg.block(ensure_table(tx, st, sql))?;
    let created = ensured.created;
    if !created {
        run(tx, &sql.lock, "lock the target table")?;
    }
    if created && let Some(forget) = &t.sql.forget_dates {
        run(tx, forget, "forget the business dates of a dropped table of that name")?;
    }
    // Checked again now that the table and the tables it references are locked: the whole
    // stage, or its unchanged lines, may be reused.
    let mut reuse_lines: Option<(&Reuse, &Path, Vec<crate::exec::validate::Reject>)> = None;
    // The table's state read under the lock (the reuse check's), before anything is written.
    let mut state_before: Option<String> = None;
    let set = st.source.set.is_some();
    if let Some(reuse) = reuse
        && !created
        && !set
        && let [src] = files.as_slice()
    {
        let (context, lines) = stage_context(pg, tx, st, sql, true, opts.date)?.unzip();
        let state = pg.block(super::state(tx, &sql.exists, &sql.state))?;
        state_before.clone_from(&state);
        let f = &reuse.last.fingerprint;
        let untouched = definition.as_deref().is_some_and(|d| f.table_state.rsplit(':').next() == Some(d));
        let as_left = untouched && state.as_ref() == Some(&f.table_state);
        let same = context.as_ref() == Some(&f.context);
        // A history load of another date: its lines are compared with the last load's file when
        // only the date tells the two stages apart, that load was of the newest date loaded, and
        // this one is of that date or later (so the versions covering it are those that load
        // left current).
        let later = !same && as_left && lines.flatten().is_some_and(|l| f.lines.as_ref() == Some(&l)) && newest_load(pg, tx, st, sql, f)?;
        if as_left && (same || later) {
            // The last load's outcomes are carried over only with its rejects as it recorded them.
            match recorded_rejects(pg, st, &reuse.last)? {
                // A row rejected because another row held its unique value may load now: that
                // load may have changed the holder.
                Ok(rejects) if same && src.is(&f.source) && rejects.iter().any(|r| r.rule == "unique_in_table") => {
                    progress.detail(&st.name, "every line is checked: the last load rejected a value another row held, which it may have freed");
                }
                Ok(rejects) if same && src.is(&f.source) => {
                    let report = unchanged_stage(st, src, &reuse.last, rejects);
                    // What `ensure_table` put back (an index or foreign key someone dropped)
                    // stays: the skipped stage's transaction commits it.
                    if let Some(tx) = own_tx.take() {
                        pg.block(tx.commit()).map_err(db("commit the table's repairs"))?;
                    }
                    return Ok(report);
                }
                // A control total adds up every valid row: only the changed ones would be read.
                Ok(_) if st.contracts_total_rows() => {
                    progress.detail(&st.name, "every line is checked: a `totals` check adds up every valid row of the file");
                }
                Ok(rejects) => {
                    if let Some(index) = &reuse.index {
                        reuse_lines = Some((reuse, index, rejects));
                    }
                }
                Err(why) => progress.detail(&st.name, &format!("every line is checked: {why}")),
            }
        } else if !as_left {
            progress.detail(&st.name, &format!("every line is checked: the table is not as run {}'s load left it", reuse.last.loaded_by));
        } else {
            progress.detail(&st.name, &format!("every line is checked: the stage's spec or a table it references differs from run {}'s load", reuse.last.loaded_by));
        }
    }
    // A set: the files whose content is in the ledger are left out, looked up again now that
    // the table is locked (a run that committed meanwhile may have loaded some).
    let mut already = Vec::new();
    if set {
        already = leave_out_loaded(cx, pg, tx, st, files)?;
        if files.is_empty() {
            progress.detail(&st.name, "every file of the set is loaded already");
            return Ok(nothing_new(st, already));
        }
    }
    let paths: Vec<std::path::PathBuf> = files.iter_mut().map(|f| f.path(&opts.temp_dir, cx.rt)).collect::<Result<_, _>>()?;
    // The senders' trailer lines, set aside before anything reads the files.
    let trailers: Vec<(String, Option<String>)> = match &st.source.trailer {
        Some(prefix) => files.iter().zip(&paths).map(|(f, p)| Ok((f.shown.clone(), crate::exec::source::strip_trailer(p, prefix)?))).collect::<Result<_, ExecError>>()?,
        None => Vec::new(),
    };
    let inputs: Vec<FileInput<'_>> = files.iter().zip(&paths).map(|(f, p)| FileInput { path: p, shown: &f.shown, captures: &f.captures }).collect();
    let shown_set = shown_of(cx, st, files);
    let (path, shown, etag) = (paths[0].as_path(), shown_set.as_str(), if set { None } else { files[0].etag.clone() });
    let source_fingerprint = if set { None } else { files[0].fingerprint.clone() };
    let mut empty = created || pg.block(value::<bool>(tx, &sql.is_empty, "look into the target table"))?;
    let mut deleted = 0;
    if !empty && let Some(delete) = &sql.delete_all {
        deleted = pg.block(super::affected(tx, delete, "empty the target table"))?;
        empty = true;
    }
    // Where this file's line index goes, for the next load to find its unchanged records.
    let next_index = match &source_fingerprint {
        Some(source) if !opts.dry_run && (t.mode == LoadMode::Upsert || t.mode == LoadMode::History && st.undated.is_some()) => {
            incremental::cache_dir().map(|dir| incremental::index_path(&dir, &cx.plan.name, &st.name, &t.qualified, source))
        }
        _ => None,
    };
    let columns = if set {
        Vec::new()
    } else if st.csv.header {
        crate::exec::extract::file_columns(st, path, shown)?
    } else {
        st.columns.iter().filter(|c| c.reads_file()).map(|c| c.header.clone()).collect()
    };
    // The scan made while the file downloaded (its thread ended with the download): used only
    // for the same bytes, read with the same header columns, and only by the comparison below.
    let followed = reuse.and_then(|r| r.following.lock().ok().and_then(|mut f| f.take())).and_then(|h| h.join().ok());
    let file_len = std::fs::metadata(path).map(|m| m.len()).ok();
    let mut prescanned = match followed {
        Some(Ok(Ok((p, cols)))) if cols == columns && Some(p.bytes) == file_len => Some(p.for_index(next_index.as_deref())),
        _ => None,
    };
    let mut changes = match reuse_lines {
        None => None,
        Some((reuse, index, previous)) => {
            match incremental::changes(st, path, &columns, index, &previous, &opts.temp_dir, next_index.as_deref(), prescanned.take())? {
                Ok(c) => {
                    let during = if c.as_downloaded { " as it downloaded" } else { "" };
                    let order = if c.reordered { " (its lines out of the last file's order, so that file's whole line index was read)" } else { "" };
                    progress.detail(&st.name, &format!("compared with the file of run {}{during}{order}: {} lines unchanged, {} to check", reuse.last.loaded_by, c.same, c.lines.len()));
                    Some(c)
                }
                Err(why) => {
                    progress.detail(&st.name, &format!("every line is checked: {why}"));
                    None
                }
            }
        }
    };
    // Unused, its index (under the same temporary name the index written below takes) goes now.
    drop(prescanned);
    // Only the changed records reach the comparison with the table's rows, in the merge; so do
    // a set's files loaded one by one (each is a small part of a table that grows with every
    // file: exporting the whole table for each would cost the square of the set).
    let one_by_one = st.source.set.as_ref().is_some_and(|s| s.atomicity == crate::spec::model::Atomicity::File);
    let current = lookups(cx, pg, tx, sql, empty || changes.is_some() || one_by_one, created)?;
    // The referenced tables are locked: their states hold until the stage commits.
    // (`on_delete: soft` reads the tables referencing this one: they are locked too.)
    let context = if opts.dry_run || t.mode == LoadMode::Append { None } else { stage_context(pg, tx, st, sql, t.soft_on_delete(), opts.date)? };
    // A history load always goes through the staging table: its versions are computed there; so
    // does a load into a table whose columns' types only hold the spec's (cast as they are written).
    let direct = ensured.exact && ((empty && t.mode != LoadMode::History) || t.mode == LoadMode::Append);
    let how = if changes.is_some() {
        "; only the changed lines are read"
    } else if current == Current::TooLarge {
        "; the table's rows are larger than an eighth of DuckDB's memory limit (ETL_DUCKDB_MEMORY): the merge compares them"
    } else if direct && empty {
        "; the table is empty: COPY straight into it"
    } else {
        ""
    };
    progress.detail(&st.name, &format!("lookups loaded{how}"));
    let copy_sql = if direct {
        // FREEZE writes the rows of a table created in this (sub)transaction as already visible.
        if created && !opts.dry_run { &t.sql.copy_frozen } else { &t.sql.copy_direct }
    } else {
        run(tx, &t.sql.create_staging, "create the staging table")?;
        &t.sql.copy
    };
    // One pass over the files where what it copied can be emptied again (a key found repeated
    // after it, which the two passes place, costs that pass): the staging table, or a table
    // this transaction created (its key and unique constraints come after the load). Not an
    // existing table: its constraints would fail the COPY on the first repeat.
    let uncopy = if !direct {
        Some(&t.sql.uncopy_staged)
    } else if created {
        Some(&t.sql.uncopy_created)
    } else {
        None
    };
    let checked = copy_stream(pg, tx, st, copy_sql, |hand| stage_rows(cx.reader, st, &inputs, shown, changes.as_ref(), uncopy.is_some(), progress, hand))?;
    let mut report = match (checked, uncopy) {
        (Checked::Report(report), Some(_)) if st.extract.single.is_some() => {
            progress.detail(&st.name, "read in one pass: no key repeats");
            *report
        }
        (Checked::Report(report), _) => *report,
        (Checked::Again(why), Some(uncopy)) => {
            progress.detail(&st.name, &format!("read once, then {why}: what was copied is emptied, and the files are read again in two passes"));
            run(tx, uncopy, "empty what the single pass copied")?;
            copy_stream(pg, tx, st, copy_sql, |hand| stage_rows(cx.reader, st, &inputs, shown, changes.as_ref(), false, progress, hand))?.report(st)?
        }
        (again, None) => again.report(st)?,
    };
    fill_files(&mut report, files, already);
    report.trailers = trailers;
    progress.detail(&st.name, &format!("{} rows validated, {} written by COPY", report.rows_read, report.rows_valid - report.skipped_unchanged));
    report.etag = etag;
    if over_budget(st, &mut report) {
        if opts.dry_run {
            // Keep the shared transaction as it was before this stage.
            run(tx, &sql.rollback_to_savepoint, "roll back the stage")?;
        }
        return Ok(report);
    }
    // `delete_missing`: the file's keys, and how many of the table's rows lack one.
    let lines_only = changes.is_some() && t.mode == LoadMode::History;
    let missing = match &sql.missing {
        Some(m) => Some(copy_keys(cx, pg, tx, st, m, changes.as_ref().filter(|_| lines_only).map(|c| c.vanished.as_slice()))?),
        None => None,
    };
    if let Some((lacking, rows)) = missing
        && rows > 0
        && lacking as f64 / rows as f64 > t.max_delete_ratio
    {
        report.status = crate::exec::report::Status::Refused;
        report.refused = Some(format!(
            "{lacking} of the {rows} rows of {} have a key the file lacks: deleting them is more than `max_delete_ratio` {} allows, so nothing is loaded and the table keeps its rows. \
             A truncated file? If the deletes are meant, raise the target's `max_delete_ratio`",
            t.qualified, t.max_delete_ratio
        ));
        if opts.dry_run {
            run(tx, &sql.rollback_to_savepoint, "roll back the stage")?;
        }
        return Ok(report);
    }
    // `on_delete: restrict`: rows of other tables that reference a row about to be deleted
    // refuse the load before anything is merged.
    if missing.is_some()
        && let Some(m) = &sql.missing
        && let Some(why) = pg.block(referencing_rows(tx, t, m))?
    {
        report.status = crate::exec::report::Status::Refused;
        report.refused = Some(why);
        if opts.dry_run {
            run(tx, &sql.rollback_to_savepoint, "roll back the stage")?;
        }
        return Ok(report);
    }
    let written = report.rows_valid - report.skipped_unchanged;
    // The file's line index (unless the comparison wrote it) is written while the database
    // merges, or builds the new table's keys, indexes and foreign keys.
    let index = if changes.is_none() { next_index.filter(|_| context.is_some()) } else { None };
    let (loaded, indexed) = std::thread::scope(|scope| {
        let load = scope.spawn(|| -> Result<Merged, ExecError> {
            let steps = if lines_only { &st.target.sql.history_lines } else { &st.target.sql.merge };
            let mut merged = if direct { Merged { inserted: written, ..Default::default() } } else { pg.block(merge(tx, steps, written))? };
            if let Some(m) = sql.missing.as_ref().filter(|m| !m.apply.is_empty()) {
                let date = opts.date.format("%Y-%m-%d").to_string();
                pg.block(remove_missing(tx, m, &date, &mut merged))?;
            }
            if created {
                pg.block(add_constraints(tx, st))?;
                pg.block(finish_table(tx, st, sql))?;
            }
            Ok(merged)
        });
        let indexed = index.as_deref().map(|p| incremental::index_file(st, path, &columns, p));
        (load.join(), indexed)
    });
    let mut merged = loaded.map_err(|_| ExecError::Internal("the load's thread panicked".into()))??;
    progress.detail(&st.name, if created { "keys, indexes and foreign keys built" } else if direct { "copied" } else { "merged into the table" });
    let pending = match indexed {
        Some(Ok(Ok(pending))) => Some(pending),
        Some(Ok(Err(why))) => {
            progress.detail(&st.name, &format!("no line index kept ({why}): the next load checks every line"));
            None
        }
        Some(Err(e)) => {
            progress.detail(&st.name, &format!("no line index kept ({e}): the next load checks every line"));
            None
        }
        None => changes.as_mut().and_then(|c| c.index.take()),
    };
    merged.unchanged += report.skipped_unchanged;
    merged.deleted += deleted;
    report.loaded = Some(merged);
    if let (Some((context, lines)), Some(source)) = (context, source_fingerprint) {
        // A table that was empty holds only this stage's rows: its state needs no scan.
        let state = if let (true, Some(fresh)) = (direct, &sql.fresh_state) {
            let xid = pg.block(current_xid(tx))?;
            let fresh = sqlx::query_scalar::<_, String>(generated(fresh)).bind(written as i64).bind(xid as i64);
            Some(pg.block(fresh.fetch_one(&mut **tx)).map_err(db("read the table's state"))?)
        } else if let (Some(upserted), Some(before), Some(replaced), [MergeStep::Upsert(_)]) =
            (&sql.upserted_state, &state_before, &merged.replaced_xmins, st.target.sql.merge.as_slice())
        {
            // An upsert: told from the state before and what its merge wrote and replaced.
            let written = (merged.inserted + merged.updated) as i64;
            told_state(pg, tx, sql, upserted, before, written, Some((merged.updated as i64, replaced.to_string())))?
        } else if let (Some(moved), Some(before)) = (&sql.moved_state, &state_before) {
            // A history: told from the state before and what its merge moved.
            told_state(pg, tx, sql, moved, before, merged.inserted as i64, None)?
        } else {
            pg.block(super::state(tx, &sql.exists, &sql.state))?
        };
        if let Some(table_state) = state {
            let as_of = lines.as_ref().and(t.history.as_ref()).map(|h| h.date.clone());
            report.fingerprint = Some(fingerprint::Fingerprint { table: t.qualified.clone(), context, source, table_state, lines, as_of });
        }
    }
    report.status = report.loaded_status();
    // A replay of rejected rows: those that pass now are loaded and their rejects marked with
    // this run in its transaction; those that fail still stay rejected under their own run, not
    // recorded again. It is no load of a file: nothing to reuse, no contract to check.
    if let Some(replay) = opts.replay.as_ref().filter(|r| r.stage == st.name) {
        let mut replayed: Vec<(String, i64)> = match &replay.rows {
            crate::exec::context::ReplayedRows::Lines(lines) => {
                let failed: std::collections::HashSet<u64> = report.rejects.iter().filter(|j| j.severity == crate::spec::model::Severity::Error).map(|j| j.line).collect();
                lines.iter().filter(|(line, _)| !failed.contains(line)).map(|(_, at)| at.clone()).collect()
            }
            // The rows that load, by their key as read: the rejected rows with that key.
            crate::exec::context::ReplayedRows::Keys { headers, rows } => {
                let staged = report.rows_read - report.rejects_by_rule.get("csv").copied().unwrap_or(0);
                let rejected: std::collections::HashSet<u64> = report.rejected_records.iter().copied().collect();
                let loaded: Vec<u64> = (1..=staged).filter(|r| !rejected.contains(r)).collect();
                let mut out = Vec::new();
                for (_, fields) in cx.reader.rejected_fields(st, &loaded)? {
                    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&fields).unwrap_or_default();
                    let key: Vec<String> = headers.iter().map(|h| fields.get(h).and_then(|v| v.as_str()).unwrap_or_default().to_string()).collect();
                    out.extend(rows.get(&key).into_iter().flatten().cloned());
                }
                out
            }
        };
        replayed.sort();
        replayed.dedup();
        report.replayed = replayed;
        report.replay_of = Some(replay.of_run);
        report.rejects.clear();
        report.fingerprint = None;
    }
    // The contracts, on what the merge left, before anything commits: a failed `error` one
    // rolls the stage back.
    if !st.contracts.is_empty() && opts.replay.is_none() {
        let history = cx.records.map(|(_, on)| on == st.target.connection);
        report.checks = pg.block(crate::exec::contracts::evaluate(tx, &cx.plan.name, st, &report, opts.date, history))?;
        for c in report.checks.iter().filter(|c| !c.passed) {
            progress.detail(&st.name, &format!("check {} failed ({}): {}", c.check, c.severity, c.message));
        }
        let failed: Vec<String> = report.checks.iter().filter(|c| !c.passed && c.severity == "error").map(|c| format!("check `{}` failed: {}", c.check, c.message)).collect();
        if !failed.is_empty() {
            report.status = crate::exec::report::Status::ContractFailed;
            report.refused = Some(format!("{}; the stage is rolled back and {} is as it was", failed.join("; "), t.qualified));
            report.loaded = None;
            report.fingerprint = None;
            if opts.dry_run {
                run(tx, &sql.rollback_to_savepoint, "roll back the stage")?;
            }
            return Ok(report);
        }
    }
    if let Some(mut t) = own_tx.take() {
        if set {
            let run_id = cx.records.map(|(id, _)| id).ok_or_else(|| ExecError::Internal("a set loaded without a run to record it".into()))?;
            let read = ledger::loaded(&mut report, files);
            pg.block(super::records::ledger_record(&mut t, run_id, &cx.plan.name, st, &read))?;
        }
        // The stage's record goes in with its rows: both commit, or neither.
        if let Some((run_id, on)) = cx.records
            && on == st.target.connection
        {
            pg.block(super::records::record_stage_in(&mut t, run_id, &report))?;
            report.recorded = true;
        }
        // A file claimed from the work queue is done with its rows, or not at all: a claim lost
        // meanwhile (its lease ran out, another worker took the file) rolls this load back.
        if let Some(c) = cx.claim
            && !pg.block(crate::exec::queue::done_in(&mut *t, c, &report))?
        {
            return Err(ExecError::Internal(format!(
                "stage {}: the claim on {} ran out before its load committed and another worker took it: this load is rolled back",
                st.name, c.file_key
            )));
        }
        pg.block(t.commit()).map_err(|e| ExecError::database("commit the stage", e))?;
        if let Some(Err(e)) = pending.map(incremental::PendingIndex::keep) {
            progress.detail(&st.name, &format!("no line index kept ({e}): the next load checks every line"));
        }
    }
    Ok(report)
}

/// Whether the last load `f` recorded was of the newest business date the history table holds
/// (`etl_as_of_dates`), and this load's date is that one or later.
fn newest_load(pg: &Pg, tx: &mut Tx, st: &StagePlan, sql: &PgStatements, f: &fingerprint::Fingerprint) -> Result<bool, ExecError> {
    let (Some(h), Some(newest), Some(was)) = (st.target.history.as_ref(), sql.newest_as_of.as_ref(), f.as_of.as_ref()) else { return Ok(false) };
    let newest: Option<String> = pg.block(sqlx::query_scalar(generated(newest)).fetch_one(&mut **tx)).map_err(db("read the newest business date loaded"))?;
    let date = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    Ok(match (newest.as_deref().and_then(date), date(was), date(&h.date)) {
        (Some(newest), Some(was), Some(now)) => newest == was && now >= was,
        _ => false,
    })
}

/// Leaves out of `files` those whose content the ledger holds as loaded by this stage (all of
/// them with `select: all` or `--force` are read), and reports each left out. A file the
/// ledger has under its key with another ETag is downloaded to tell by its digest.
fn leave_out_loaded(cx: &StageContext<'_>, pg: &Pg, tx: &mut Tx, st: &StagePlan, files: &mut Vec<Source>) -> Result<Vec<FileReport>, ExecError> {
    let Some(set) = &st.source.set else { return Ok(Vec::new()) };
    if set.select == Select::All || cx.opts.force || files.is_empty() {
        return Ok(Vec::new());
    }
    let entries = pg.block(super::records::ledger_loaded(&mut **tx, &cx.plan.name, st, &files[0].origin))?;
    ledger::leave_out(&entries, files, |f| f.path(&cx.opts.temp_dir, cx.rt).map(|_| ()))
}

/// A set's report when every file is loaded already: nothing read.
pub fn nothing_new(st: &StagePlan, already: Vec<FileReport>) -> StageReport {
    let mut report = StageReport::new(st, &st.source.key, 0);
    report.files = already;
    report.status = crate::exec::report::Status::Succeeded;
    report
}

/// How a stage's input is shown: its one file, or its set's pattern where the files are.
pub fn shown_of(cx: &StageContext<'_>, st: &StagePlan, files: &[Source]) -> String {
    match (&st.source.set, files) {
        (None, [one, ..]) => one.shown.clone(),
        (Some(set), [first, ..]) => match first.shown.strip_suffix(first.key.as_str()) {
            Some(base) => format!("{base}{}", set.pattern.text()),
            None => set.pattern.text().to_string(),
        },
        _ => {
            let _ = cx;
            st.source.key.clone()
        }
    }
}

/// A set's file reports: each read one's size and digest, then those left out.
pub fn fill_files(report: &mut StageReport, files: &[Source], already: Vec<FileReport>) {
    for f in report.files.iter_mut() {
        if let Some(src) = files.iter().find(|s| s.shown == f.file) {
            f.bytes = src.bytes;
            f.sha256 = src.sha256.clone();
        }
    }
    report.files.extend(already);
}

/// Fills the DuckDB relations a PostgreSQL stage's extract joins: the key set of each table it
/// references (locked against writes until the stage commits), the values its unique columns
/// hold with their keys, and, for an upsert, the table's current rows (left empty
/// `without_current`: the table is empty, or only changed records are read and the merge
/// compares them, as it does when they are larger than DuckDB may hold: `extract::compared_in_duckdb`).
/// Past their share of DuckDB's memory, the extract's joins are held to a part of it
/// (`extract::lookups_bound_joins`).
fn lookups(cx: &StageContext<'_>, pg: &Pg, tx: &mut Tx, sql: &PgStatements, without_current: bool, created: bool) -> Result<Current, ExecError> {
    let dir = &cx.opts.temp_dir;
    let scratch = || tempfile::Builder::new().prefix("etl-lookup-").suffix(".csv").tempfile_in(dir).map_err(ExecError::write(dir));
    // The bytes of the lookups loaded, which say whether the extract's joins are held to a part
    // of DuckDB's memory.
    let mut loaded = 0u64;
    let limit = cx.reader.memory_limit();
    for r in &sql.reference_lookups {
        if !pg.block(super::exists(tx, &r.exists))? {
            return Err(ExecError::Database {
                what: format!("check the references of {}", r.column),
                message: format!("the table {} it references does not exist; load the stage that creates it first", r.table),
            });
        }
        // A new table gets its foreign keys after the load, which takes SHARE ROW EXCLUSIVE on the
        // referenced table: taken now, so a writer queued meanwhile cannot deadlock with it.
        let lock = if created { &r.lock_for_new_table } else { &r.lock };
        pg.block(execute(tx, lock, "lock a referenced table"))?;
        let file = scratch()?;
        let (bytes, longest) = pg.block(export_csv(tx, &r.lookup.export, file.path()))?;
        loaded += bytes;
        cx.reader.load_lookup(&r.lookup.create, Some((&r.lookup.fill, file.path(), longest)))?;
    }
    // A lookup left empty, or filled with what the table exports if its bytes are `wanted`:
    // whether it was filled.
    let mut fill = |tx: &mut Tx, l: &crate::plan::Lookup, empty: bool, wanted: &dyn Fn(u64) -> bool| -> Result<bool, ExecError> {
        if !empty {
            let file = scratch()?;
            let (bytes, longest) = pg.block(export_csv(tx, &l.export, file.path()))?;
            if wanted(bytes) {
                loaded += bytes;
                cx.reader.load_lookup(&l.create, Some((&l.fill, file.path(), longest)))?;
                return Ok(true);
            }
        }
        cx.reader.load_lookup(&l.create, None)?;
        Ok(false)
    };
    // The values the table's unique columns hold: needed whenever a row may be written.
    for held in &sql.held_lookups {
        fill(tx, held, created, &|_| true)?;
    }
    let current = match &sql.current_lookup {
        None => Current::Absent,
        Some(current) if without_current => {
            fill(tx, &current.lookup, true, &|_| true)?;
            Current::Absent
        }
        Some(current) => {
            // Compared in DuckDB only while they fit their share of its memory: the table's size
            // says first, the export's exactly.
            let fits = |bytes: u64| crate::plan::extract::compared_in_duckdb(bytes, limit);
            let size: i64 = pg.block(super::scalar(tx, &current.size, "read the table's size"))?;
            if fill(tx, &current.lookup, !fits(size.max(0) as u64), &fits)? { Current::Compared } else { Current::TooLarge }
        }
    };
    cx.reader.bound_joins(crate::plan::extract::lookups_bound_joins(loaded, limit))?;
    Ok(current)
}

/// Where a PostgreSQL stage's rows are compared with the table's current ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Current {
    /// Nowhere before the merge: no comparison is made (no key, not row by row), the table is
    /// empty, or only the changed records are read (the merge compares them).
    Absent,
    /// In DuckDB, as the file is read: an unchanged row is not written.
    Compared,
    /// In the merge: the table's rows are more than DuckDB's memory leaves them.
    TooLarge,
}

/// Writes the staged rows into the table.
/// A table's state after its merge, told by `told` (`postgres::moved_state_sql` or
/// `upserted_state_sql`) from its state before and the `written` rows (and, for an upsert, the
/// versions replaced and their xmins' hash sum); read with a scan where it cannot be told.
fn told_state(pg: &Pg, tx: &mut Tx, sql: &PgStatements, told: &str, before: &str, written: i64, replaced: Option<(i64, String)>) -> Result<Option<String>, ExecError> {
    let xid = pg.block(current_xid(tx))?;
    let mut q = sqlx::query_scalar::<_, Option<String>>(generated(told)).bind(before).bind(written).bind(xid as i64);
    if let Some((n, sum)) = replaced {
        q = q.bind(n).bind(sum);
    }
    match pg.block(q.fetch_one(&mut **tx)).map_err(db("tell the table's state"))? {
        Some(s) => Ok(Some(s)),
        None => pg.block(super::state(tx, &sql.exists, &sql.state)),
    }
}

async fn merge(tx: &mut Tx, steps: &[MergeStep], staged: u64) -> Result<Merged, ExecError> {
    let mut m = Merged::default();
    for step in steps {
        match step {
            MergeStep::Upsert(s) => {
                let row = sqlx::query(generated(s)).fetch_one(&mut **tx).await.map_err(db("merge into the target table"))?;
                let inserted: i64 = row.get(0);
                let total: i64 = row.get(1);
                m.inserted = inserted as u64;
                m.updated = (total - inserted) as u64;
                // PostgreSQL's upsert also says how many versions it replaced and their xmins'
                // hash sum; they must be the rows it updated (DuckDB's says nothing of them).
                if row.len() == 4 {
                    let replaced: i64 = row.get(2);
                    if replaced == total - inserted {
                        m.replaced_xmins = row.get::<String, _>(3).parse::<i128>().ok();
                    }
                }
            }
            MergeStep::Delete(s) => m.deleted += super::affected(tx, s, "delete the rows the load replaces").await?,
            MergeStep::Run(s) => execute(tx, s, "rewrite the versions of the keys that changed").await?,
            MergeStep::Versions(s) => {
                let row = sqlx::query(generated(s)).fetch_one(&mut **tx).await.map_err(db("count the versions opened and closed"))?;
                m.opened = row.get::<i64, _>(0) as u64;
                m.closed = row.get::<i64, _>(1) as u64;
            }
            MergeStep::Insert(s) => {
                let r = sqlx::query(generated(s)).execute(&mut **tx).await.map_err(db("insert into the target table"))?;
                m.inserted = r.rows_affected();
            }
        }
    }
    // A history's inserts are versions (a changed key's earlier ones put back too): its staged
    // rows left as they were are those that opened no version.
    let history = steps.iter().any(|s| matches!(s, MergeStep::Versions(_)));
    m.unchanged = if history { staged.saturating_sub(m.opened) } else { staged.saturating_sub(m.inserted + m.updated) };
    Ok(m)
}

/// `delete_missing`: the file's distinct keys, written by the extract's DuckDB to a CSV file,
/// COPYed into the stage's transaction; returns how many of the table's (live) rows have a key
/// the file lacks, and how many (live) rows it has.
///
/// A history load of only the changed lines (`vanished`: the last file's keys no line of this
/// one holds, see `incremental::Changes`): the keys of the changed lines are those DuckDB read;
/// the vanished ones are COPYed in beside them, and the count is of the versions whose key
/// vanished and no changed line holds.
fn copy_keys(cx: &StageContext<'_>, pg: &Pg, tx: &mut Tx, st: &StagePlan, m: &crate::plan::MissingSql, vanished: Option<&[Vec<u8>]>) -> Result<(u64, u64), ExecError> {
    use std::io::Read;
    let keys = st.extract.keys.as_ref().ok_or_else(|| ExecError::Internal(format!("stage {} deletes missing keys without a key export", st.name)))?;
    let dir = &cx.opts.temp_dir;
    let file = tempfile::Builder::new().prefix("etl-keys-").suffix(".csv").tempfile_in(dir).map_err(ExecError::write(dir))?;
    cx.reader.connection().execute_batch(&keys.with_file(&file.path().display().to_string())).map_err(ExecError::duckdb("write the file's keys"))?;
    pg.block(execute(tx, &m.create_keys, "stage the file's keys"))?;
    pg.block(async {
        let mut copy = (**tx).copy_in_raw(&m.copy_keys).await.map_err(db("copy the file's keys"))?;
        let mut input = std::fs::File::open(file.path()).map_err(ExecError::write(file.path()))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buf).map_err(ExecError::write(file.path()))?;
            if n == 0 {
                break;
            }
            copy.send(&buf[..n]).await.map_err(db("copy the file's keys"))?;
        }
        copy.finish().await.map_err(db("copy the file's keys"))?;
        Ok::<(), ExecError>(())
    })?;
    let count = match vanished {
        None => &m.count,
        Some(keys) => {
            let v = m.vanished.as_ref().ok_or_else(|| ExecError::Internal(format!("stage {} reads only its changed lines without the vanished keys' statements", st.name)))?;
            pg.block(execute(tx, &v.jit_off, "turn JIT off for the few keys' lookups"))?;
            pg.block(execute(tx, &v.create, "stage the last file's vanished keys"))?;
            pg.block(async {
                let mut copy = (**tx).copy_in_raw(&v.copy).await.map_err(db("copy the last file's vanished keys"))?;
                let mut buf = Vec::with_capacity(1 << 20);
                for k in keys {
                    buf.extend_from_slice(k);
                    buf.push(b'\n');
                    if buf.len() >= 1 << 20 {
                        copy.send(std::mem::take(&mut buf)).await.map_err(db("copy the last file's vanished keys"))?;
                    }
                }
                if !buf.is_empty() {
                    copy.send(buf).await.map_err(db("copy the last file's vanished keys"))?;
                }
                copy.finish().await.map_err(db("copy the last file's vanished keys"))?;
                Ok::<(), ExecError>(())
            })?;
            let mut count = |sql: &str| pg.block(sqlx::query_scalar::<_, i64>(generated(sql)).fetch_one(&mut **tx)).map_err(db("count the versions whose key the file lacks"));
            let gone = count(&v.gone)?;
            let rows = if gone > 0 { count(&v.rows)? } else { 0 };
            return Ok((gone as u64, rows as u64));
        }
    };
    let row = pg.block(sqlx::query(generated(count)).fetch_one(&mut **tx)).map_err(db("count the rows whose key the file lacks"))?;
    let (lacking, rows): (i64, i64) = (row.get(0), row.get(1));
    Ok((lacking as u64, rows as u64))
}

/// `on_delete: restrict`: why the load is refused when rows of other tables reference a row
/// the file lacks (each such table named, with its count and up to five of its rows).
async fn referencing_rows(tx: &mut Tx, t: &crate::plan::TargetPlan, m: &MissingSql) -> Result<Option<String>, ExecError> {
    let mut found = Vec::new();
    for r in &m.referenced_by {
        if !super::exists(tx, &r.exists).await? {
            continue;
        }
        let rows = sqlx::query(generated(&r.sql)).fetch_all(&mut **tx).await.map_err(db("look for rows referencing the deleted keys"))?;
        if let Some(first) = rows.first() {
            let count: i64 = first.get(0);
            let shown: Vec<String> = rows.iter().map(|row| row.get::<String, _>(1)).collect();
            found.push(format!("{count} rows of {} (e.g. {})", r.table, shown.join(", ")));
        }
    }
    Ok((!found.is_empty()).then(|| {
        format!(
            "rows of other tables reference keys of {} the file lacks: {}. Nothing is loaded and the tables keep their rows. \
             Keep those keys in the file, or set the target's `on_delete: cascade` (delete those rows too) or `on_delete: soft` (keep the keys, flagged `_deleted_at`)",
            t.qualified,
            found.join("; ")
        )
    }))
}

/// Deletes (or flags) the table's rows whose key the file lacks, after the merge: with
/// `on_delete: cascade` the rows of other tables that reference them first; with `soft` those
/// referenced are flagged and the others deleted; a flagged key that returned is cleared.
async fn remove_missing(tx: &mut Tx, m: &MissingSql, date: &str, merged: &mut Merged) -> Result<(), ExecError> {
    for c in &m.cascade {
        if super::exists(tx, &c.exists).await? {
            merged.cascaded += super::affected(tx, &c.sql, "delete the rows referencing the deleted keys").await?;
        }
    }
    if let (Some(create), Some(flag)) = (&m.create_held, &m.flag_referenced) {
        super::execute(tx, create, "note the referenced keys the file lacks").await?;
        for h in &m.hold {
            if super::exists(tx, &h.exists).await? {
                super::execute(tx, &h.sql, "note the referenced keys the file lacks").await?;
            }
        }
        let flagged = sqlx::query(generated(flag)).bind(date).execute(&mut **tx).await.map_err(db("flag the referenced rows whose key the file lacks"))?;
        merged.flagged = flagged.rows_affected();
        merged.deleted += super::affected(tx, &m.apply, "delete the rows whose key the file lacks").await?;
    } else if m.restore.is_some() {
        let gone = sqlx::query(generated(&m.apply)).bind(date).execute(&mut **tx).await.map_err(db("flag the rows whose key the file lacks"))?;
        merged.flagged = gone.rows_affected();
    } else {
        merged.deleted += super::affected(tx, &m.apply, "delete the rows whose key the file lacks").await?;
    }
    if let Some(restore) = &m.restore {
        merged.restored = super::affected(tx, restore, "clear the flag of returned keys").await?;
    }
    Ok(())
}

/// A lock wait that timed out, completed with the sessions that hold the stage's locks (read on
/// another session: the stage's own transaction is aborted).
pub fn with_lock_holders(pg: &Pg, st: &StagePlan, e: ExecError) -> ExecError {
    let ExecError::LockTimeout { what, message, .. } = e else { return e };
    let mut tables = vec![st.target.qualified.clone()];
    if let Some(sql) = st.target.postgres() {
        tables.extend(sql.referenced.iter().map(|r| r.table.clone()));
    }
    let key = format!("etl:{}", st.target.qualified);
    let held: Vec<String> = pg
        .block(sqlx::query_scalar(generated(crate::plan::postgres::LOCK_HOLDERS)).bind(&tables).bind(&key).fetch_all(pg.pool()))
        .unwrap_or_default();
    let holders = if held.is_empty() { "; no session holds them now".to_string() } else { format!("; held by {}", held.join("; ")) };
    ExecError::LockTimeout { what, message, holders }
}
