//! The commands that look after a spec's targets without running it: `etl clean` (empty the
//! selected stages' tables) and `etl migrate` (apply the engine's migrations).

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
