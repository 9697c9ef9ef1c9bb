//! The commands that look after a spec's targets without running it: `etl clean` (empty the
//! selected stages' tables), `etl migrate` (apply the engine's migrations), what `etl
//! backfill` reads to resume (the business dates already loaded), the rejects `etl rejects`
//! reads, and the run history `etl report` shows.

use indexmap::IndexMap;

use super::duck::Duck;
use super::extract::Reader;
use super::postgres::{self, Pg, db, generated};
use super::context::RunOptions;
use super::error::ExecError;
use crate::plan::{ConnectionPlan, Plan, StagePlan};

/// Empties the target tables of the selected stages. Returns what was emptied.
pub fn clean(plan: &Plan, opts: &RunOptions) -> Result<Vec<String>, ExecError> {
    let stages = plan.select(opts.stages.as_deref());
    let mut done = Vec::new();
    let mut by_conn: IndexMap<&str, Vec<&StagePlan>> = IndexMap::new();
    for st in &stages {
        by_conn.entry(st.target.connection.as_str()).or_default().push(st);
    }
    for (name, sts) in by_conn {
        match plan.connections.get(name) {
            Some(ConnectionPlan::Postgres(c)) => {
                let pg = Pg::connect(name, c)?;
                let _ctx = pg.enter();
                let mut tables = Vec::new();
                for st in &sts {
                    if pg.block(postgres::table_exists(pg.pool(), &st.target.qualified))? {
                        tables.push(st.target.qualified.clone());
                    }
                }
                if !tables.is_empty() {
                    let sql = crate::plan::postgres::truncate(&tables);
                    pg.block(sqlx::query(generated(&sql)).execute(pg.pool())).map_err(db("empty the tables"))?;
                    done.extend(tables.into_iter().map(|t| format!("{t} in {}", pg.label)));
                }
            }
            Some(ConnectionPlan::Duckdb { file }) => {
                let reader = Reader::open(&opts.temp_dir, &opts.duckdb_memory)?;
                let duck = Duck::open(&reader, &opts.spec_dir().join(file))?;
                // Referencing tables first: they load later.
                for st in sts.iter().rev() {
                    let Some(sql) = st.target.duckdb() else { continue };
                    if duck.execute(&sql.delete_all, "empty a table").is_ok() {
                        done.push(format!("{} in {}", st.target.table, duck.path));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(done)
}

/// Applies the engine's migrations to the first PostgreSQL target. Returns where.
pub fn migrate(plan: &Plan) -> Result<String, ExecError> {
    for st in &plan.stages {
        if let Some(ConnectionPlan::Postgres(c)) = plan.connections.get(&st.target.connection) {
            let pg = Pg::connect(&st.target.connection, c)?;
            let _ctx = pg.enter();
            pg.migrate()?;
            return Ok(pg.label.clone());
        }
    }
    Err(ExecError::Unsupported("the spec has no PostgreSQL target to migrate".into()))
}

/// For `etl backfill`: the business dates in `from..=to` for which every selected stage was loaded
/// (or found unchanged) by a finished run of the spec, read from the run's records target (the
/// first target of the selected stages, as `etl run` keeps its records there).
pub fn dates_done(plan: &Plan, opts: &RunOptions, from: chrono::NaiveDate, to: chrono::NaiveDate) -> Result<std::collections::BTreeSet<chrono::NaiveDate>, ExecError> {
    let stages = plan.select(opts.stages.as_deref());
    let Some(first) = stages.first() else { return Ok(Default::default()) };
    let name = first.target.connection.as_str();
    // PostgreSQL keeps the records of every target schema in one place: a load counts where it
    // went into the table the stage loads now. A DuckDB file's records are of that file only.
    let by_table = matches!(plan.connections.get(name), Some(ConnectionPlan::Postgres(_)));
    let pairs = match plan.connections.get(name) {
        Some(ConnectionPlan::Postgres(c)) => {
            let pg = Pg::connect(name, c)?;
            let _ctx = pg.enter();
            pg.migrate()?;
            pg.block(postgres::records::dates_done(pg.pool(), &plan.name, from, to))?
        }
        Some(ConnectionPlan::Duckdb { file }) => {
            let reader = Reader::open(&opts.temp_dir, &opts.duckdb_memory)?;
            Duck::open(&reader, &opts.spec_dir().join(file))?.dates_done(&plan.name, from, to)?
        }
        _ => return Err(ExecError::Internal(format!("connection {name} is not a target"))),
    };
    let mut by_date: std::collections::BTreeMap<chrono::NaiveDate, Vec<(String, Option<String>)>> = Default::default();
    for (date, stage, table) in pairs {
        if let Ok(d) = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d") {
            by_date.entry(d).or_default().push((stage, table));
        }
    }
    let loaded = |done: &[(String, Option<String>)], s: &StagePlan| done.iter().any(|(name, table)| *name == s.name && (!by_table || table.as_ref() == Some(&s.target.qualified)));
    Ok(by_date.into_iter().filter(|(_, done)| stages.iter().all(|s| loaded(done, s))).map(|(d, _)| d).collect())
}

/// The PostgreSQL target holding the run records of a command reading them (the target of
/// `stage`, as `etl run` keeps them there), migrated; `command` names the command that reads
/// them, for the error when they are in a DuckDB file.
fn records_on(plan: &Plan, stage: &StagePlan, command: &str) -> Result<Pg, ExecError> {
    let name = stage.target.connection.as_str();
    match plan.connections.get(name) {
        Some(ConnectionPlan::Postgres(c)) => {
            let pg = Pg::connect(name, c)?;
            {
                let _ctx = pg.enter();
                pg.migrate()?;
            }
            Ok(pg)
        }
        _ => Err(ExecError::Unsupported(format!(
            "the run records of this spec are in the DuckDB file of connection `{name}`: read its etl_runs, etl_run_stages and etl_rejects tables there (`{command}` reads PostgreSQL's)"
        ))),
    }
}

/// For `etl rejects`: the rejects the run records keep (on the first target of the selected
/// stages, as `etl run` keeps them), selected as `records::REJECTS_LIST` says.
pub fn rejects(plan: &Plan, opts: &RunOptions, run: Option<i64>, rule: Option<&str>, line: Option<i64>) -> Result<Vec<postgres::records::StoredReject>, ExecError> {
    let stages = plan.select(opts.stages.as_deref());
    let Some(first) = stages.first() else { return Ok(Vec::new()) };
    let pg = records_on(plan, first, "etl rejects")?;
    let _ctx = pg.enter();
    let stage = opts.stages.as_ref().and_then(|s| s.first()).map(String::as_str);
    pg.block(postgres::records::stored_rejects(pg.pool(), &plan.name, run, stage, rule, line))
}

/// What `etl report` shows (see `postgres::records::history`), read from the run records on the
/// first target of the spec's stages: PostgreSQL's tables, or a DuckDB file's.
pub fn history(plan: &Plan, opts: &RunOptions, run: Option<i64>, last: i64) -> Result<postgres::records::History, ExecError> {
    let Some(first) = plan.stages.first() else { return Err(ExecError::Unsupported("the spec has no stage, so no run records".into())) };
    if let Some(ConnectionPlan::Duckdb { file }) = plan.connections.get(&first.target.connection) {
        let reader = Reader::open(&opts.temp_dir, &opts.duckdb_memory)?;
        return Duck::open(&reader, &opts.spec_dir().join(file))?.history(&plan.name, run, last);
    }
    let pg = records_on(plan, first, "etl report")?;
    let _ctx = pg.enter();
    pg.block(postgres::records::history(pg.pool(), &plan.name, run, last))
}
