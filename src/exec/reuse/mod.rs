//! Reusing a stage's last load. Each load records what its outcome depended on (`fingerprint`):
//! the compiled stage and the states of the tables it references, its source's content, and its
//! table's state right after it. A stage whose digests are all as they were is skipped (its
//! counts and rejects reported again); an upsert whose file is new but whose spec and tables are
//! unchanged reads only its changed lines (`incremental`). Before any source is downloaded, a
//! stage whose source (or line index) matches its last load's is not downloaded; the digests
//! are compared under the stage's locks, with the table's definition as it was before the table
//! check put anything back, and a stage found changed there is downloaded and loaded then.

pub mod fingerprint;

use std::collections::HashMap;
use std::path::PathBuf;

use indexmap::IndexMap;

use super::postgres::records::{LastLoad, last_load, rejects_of};
use super::validate::Reject;
use super::postgres::{self, Pg, Tx};
use super::report::{Merged, StageReport};
use super::source::Source;
use super::context::{RunOptions, Target};
use super::error::ExecError;
use super::incremental;
use crate::plan::PgStatements;
use crate::plan::{Plan, StagePlan};
use crate::spec::model::LoadMode;

/// A stage's last load that this run may reuse, as it looked before the stage's locks were
/// taken: all of it (`index` None: the same source) or, for an upsert of a new source, its
/// unchanged lines (`index`: the line index of the last load's file).
pub struct Reuse {
    /// The load.
    pub last: LastLoad,
    /// The line index of its file, when only the changed lines of a new file are to be read.
    pub index: Option<PathBuf>,
    /// The scan of the new file, made as it downloaded (see `incremental::follow`).
    pub following: std::sync::Mutex<Option<incremental::Following>>,
}

/// The stages whose last load may be reused: one of the same source (all of it), or, for an upsert
/// of a new source, one whose line index is kept (its unchanged lines). Whether the compiled
/// stage, the referenced tables and the table itself are as that load left them is checked under
/// the stage's locks (`load_stage`), which loads the stage when they are not. None in a dry run,
/// with `--force`, for an append stage, or for a stage whose target is not the engine's
/// PostgreSQL connection.
pub fn reusable_loads(
    plan: &Plan,
    stages: &[&StagePlan],
    targets: &IndexMap<String, Target<'_>>,
    opts: &RunOptions,
    sources: &HashMap<String, Source>,
    progress: &super::progress::Progress,
) -> Result<HashMap<String, Reuse>, ExecError> {
    let mut out = HashMap::new();
    let Some((engine, Target::Pg(pg))) = targets.get_index(0) else { return Ok(out) };
    if opts.dry_run || opts.force {
        return Ok(out);
    }
    let cache = incremental::cache_dir();
    // Tables an earlier stage of this run loads: a stage referencing one cannot reuse its load.
    let mut reloaded: Vec<String> = Vec::new();
    for st in stages {
        let table = &st.target.qualified;
        let eligible = st.target.connection == *engine
            && st.target.mode != LoadMode::Append
            && !st.lookups.references.iter().any(|r| reloaded.contains(&r.table));
        let source = sources.get(&st.name).filter(|s| s.fingerprint.is_some());
        let mut found = None;
        if eligible
            && let Some(pgs) = st.target.postgres()
            && let Some(source) = source
            && let Some(last) = pg.block(last_load(pg.pool(), &plan.name, &st.name, table))?
        {
            let same = source.is(&last.fingerprint.source);
            // A history load of another date may read only the changed lines even of the same
            // file: its whole load is reused only for the same date. (Only a history stage has
            // an undated form, and only when nothing but its `as_of` value depends on the date.)
            let history = st.undated.is_some();
            let index = if same && !history {
                None
            } else {
                cache
                    .as_ref()
                    .map(|dir| incremental::index_path(dir, &plan.name, &st.name, table, &last.fingerprint.source))
                    // Only the changed lines would be read: the keys of the others unknown to
                    // `delete_missing`, which then reads every line (a history keeps the last
                    // file's keys in its index for that).
                    .filter(|p| (history || st.target.mode == LoadMode::Upsert && st.target.delete_missing.is_none()) && p.is_file())
            };
            // Whether the spec, the referenced tables and the table are as that load left them
            // is checked under the stage's locks (`load_stage`), where it counts: checked here
            // too, every table's rows would be read twice. A stage found changed there is
            // downloaded and loaded then.
            // Its definition, though, is read now (from the catalog: no row is read): a table
            // dropped, made again or altered since cannot be as that load left it, so the stage
            // loads, and its file downloads while the stages before it load rather than after
            // its check. The check under the locks still decides; this only rules reuse out.
            let as_defined = (same || index.is_some()) && {
                let mut tx = pg.begin()?;
                let definition = pg.block(crate::exec::postgres::state(&mut tx, &pgs.exists, &pgs.definition))?;
                definition.is_some_and(|d| last.fingerprint.table_state.rsplit(':').next() == Some(d.as_str()))
            };
            if as_defined {
                found = Some(Reuse { last, index, following: Default::default() });
            } else if same || index.is_some() {
                progress.detail(&st.name, &format!("its table is not as run {} left it (dropped, made again or altered): loaded again", last.loaded_by));
            }
        }
        match found {
            Some(reuse) => {
                if reuse.index.is_some() {
                    reloaded.push(table.clone());
                }
                out.insert(st.name.clone(), reuse);
            }
            None => reloaded.push(table.clone()),
        }
    }
    Ok(out)
}

/// The stage's context digest now: the compiled stage, the state of each table it references
/// (each locked SHARE first when `lock`) and, when a contract reads it, the run's business date.
/// None when one of the tables does not exist.
/// With it, a history stage's lines context ([`fingerprint::lines_context`]), the run's date
/// left out: a contract reads the table after the merge, never a line.
pub fn stage_context(pg: &Pg, tx: &mut Tx, st: &StagePlan, pgs: &PgStatements, lock: bool, date: chrono::NaiveDate) -> Result<Option<(String, Option<String>)>, ExecError> {
    let mut states = Vec::new();
    for r in &pgs.referenced {
        if lock && pg.block(postgres::exists(tx, &r.exists))? {
            pg.block(postgres::execute(tx, &r.lock, "lock a referenced table"))?;
        }
        let Some(state) = pg.block(postgres::state(tx, &r.exists, &r.state))? else { return Ok(None) };
        states.push((r.table.clone(), state));
    }
    let lines = fingerprint::lines_context(st, &states);
    if st.contracts_read_the_date() {
        states.push(("run.date".into(), date.to_string()));
    }
    Ok(Some((fingerprint::context(st, &states), lines)))
}

/// The rejects of a stage's last load as `etl_rejects` holds them, when they are exactly the ones
/// the load recorded (their digest); else why not (rows deleted by an operator, a load recorded
/// before the digest was kept): then nothing of that load's outcomes may be carried over.
pub fn recorded_rejects(pg: &Pg, st: &StagePlan, last: &LastLoad) -> Result<Result<Vec<Reject>, String>, ExecError> {
    // The rejects are kept once, under the run whose load it was.
    let rejects = pg.block(rejects_of(pg.pool(), last.loaded_by, &st.name))?;
    Ok(match &last.rejects_digest {
        Some(d) if *d == fingerprint::rejects_digest(&rejects) => Ok(rejects),
        Some(_) => Err(format!("etl_rejects no longer holds the rejects run {} recorded ({} there now)", last.loaded_by, rejects.len())),
        None => Err(format!("run {} recorded no digest of its rejects", last.loaded_by)),
    })
}

/// The report of a stage skipped as unchanged: its last load's counts and rejects.
pub fn unchanged_stage(st: &StagePlan, src: &Source, last: &LastLoad, rejects: Vec<Reject>) -> StageReport {
    let valid = last.rows_read.saturating_sub(last.rows_rejected);
    let mut report = StageReport::new(st, &src.shown, src.bytes);
    report.etag = src.etag.clone();
    report.rows_read = last.rows_read;
    report.rows_valid = valid;
    report.rows_rejected = last.rows_rejected;
    report.rows_warned = last.rows_warned;
    report.loaded = Some(Merged { unchanged: valid, ..Merged::default() });
    report.skipped_unchanged = valid;
    report.status = last.status;
    report.unchanged_since_run = Some(last.loaded_by);
    report.fingerprint = Some(last.fingerprint.clone());
    report.count_rules(&rejects);
    report.rejects = rejects;
    report
}
