//! The statements a PostgreSQL stage sends around its DDL and load, in the order a run sends
//! them: the transaction's settings and locks, the catalog reads that check an existing table,
//! the probes and states that decide whether the last load can be reused, the lookups exported
//! for the extract to join, and the table's state after the load.

use crate::spec::model::LoadMode;

use super::extract::{lookup_create, lookup_fill};
use super::sql::{Bind, FileSql, Query, ident};
use super::{ColumnPlan, TargetPlan};
use super::extract::Lookups;

/// Whether a table exists (`$1`: its quoted, qualified name).
pub const TABLE_EXISTS: &str = "SELECT to_regclass($1)::text";

/// The current transaction's id as a row's `xmin` shows it (its low 32 bits).
pub const CURRENT_XID: &str = "SELECT txid_current() % 4294967296";

/// A PostgreSQL stage's statements besides its DDL and load (`load::LoadSql`).
#[derive(Debug, Clone)]
pub struct PgStatements {
    /// The transaction's settings: lookups are exported as text DuckDB parses back (ISO dates,
    /// floats in full).
    pub settings: Vec<String>,
    /// A dry run keeps one transaction for every stage; each stage runs under this savepoint.
    pub savepoint: String,
    /// Undoes a dry run's stage that went over its error budget.
    pub rollback_to_savepoint: String,
    /// Two runs never interleave on the table: a lock on its name until the stage ends.
    pub advisory_lock: Query,
    /// The table's columns as the catalog has them (none: the table is missing).
    pub read_columns: Query,
    /// Whether the target schema exists (read only when the table is missing).
    pub schema_exists: Query,
    /// Creates the target schema when it does not exist.
    pub create_schema: String,
    /// Whether a unique constraint or index covers the key (an existing table needs one).
    pub key_is_unique: Option<Query>,
    /// Whether each foreign key (`load::LoadSql::foreign_keys`, same order) exists.
    pub foreign_key_exists: Vec<Query>,
    /// Locks an existing table against other writers until the stage commits.
    pub lock: String,
    /// Whether the table exists.
    pub exists: Query,
    /// Whether the table holds no row.
    pub is_empty: String,
    /// Empties the table (mode replace, before the rows are copied into it).
    pub delete_all: Option<String>,
    /// The table's state (see `state_sql`).
    pub state: String,
    /// Each table the stage references, once, in name order: what its state digest reads.
    pub referenced: Vec<Referenced>,
    /// The key set of each foreign key, exported for the extract to join.
    pub reference_lookups: Vec<ReferenceLookup>,
    /// The table's current rows, exported for the extract to join (an upsert with a key).
    pub current_lookup: Option<Lookup>,
}

/// A table a stage references.
#[derive(Debug, Clone)]
pub struct Referenced {
    /// The table (quoted, qualified).
    pub table: String,
    /// Whether it exists.
    pub exists: Query,
    /// Keeps it from changing until the stage commits.
    pub lock: String,
    /// Its state.
    pub state: String,
}

/// A foreign key's key set, exported from the target into the extract's DuckDB.
#[derive(Debug, Clone)]
pub struct ReferenceLookup {
    /// The stage's column.
    pub column: String,
    /// The referenced table (quoted, qualified).
    pub table: String,
    /// Whether that table exists.
    pub exists: Query,
    /// Keeps it from changing until the stage commits.
    pub lock: String,
    /// The same for a stage whose table is new: its foreign key, added after the load, takes
    /// this lock anyway, so a writer queued meanwhile cannot deadlock with it.
    pub lock_for_new_table: String,
    /// The export, and the DuckDB relation it fills.
    pub lookup: Lookup,
}

/// Rows exported from the target as CSV and read into a DuckDB relation.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// `COPY (...) TO STDOUT` of the rows.
    pub export: String,
    /// Creates the relation, empty.
    pub create: String,
    /// Fills it from the exported file.
    pub fill: FileSql,
}

/// SQL giving a table's state as one text: `count:sum(xmin):max(xmin)`. Any committed insert,
/// update or delete changes it.
pub fn state_sql(qualified: &str) -> String {
    format!(
        "SELECT count(*)::text || ':' || coalesce(sum(xmin::text::bigint), 0)::text || ':' || coalesce(max(xmin::text::bigint), 0)::text FROM {qualified}"
    )
}

fn export(query: &str) -> String {
    format!("COPY ({query}) TO STDOUT (FORMAT csv)")
}

/// Compiles a PostgreSQL stage's statements.
pub fn compile(t: &TargetPlan, columns: &[ColumnPlan], lookups: &Lookups) -> PgStatements {
    let q = &t.qualified;
    let schema = t.schema.clone().unwrap_or_else(|| "public".into());
    let key_is_unique = (!t.key.is_empty()).then(|| {
        let mut key = t.key.clone();
        key.sort();
        Query {
            sql: "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique
                    AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a
                          WHERE a.attrelid = c.oid AND a.attnum = ANY (i.indkey)) = $3)"
                .into(),
            binds: vec![Bind::Text(schema.clone()), Bind::Text(t.table.clone()), Bind::Texts(key)],
        }
    });
    let foreign_key_exists = t
        .sql
        .foreign_keys
        .iter()
        .map(|fk| {
            Query::new(
                "SELECT EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
               JOIN pg_namespace n ON n.oid = r.relnamespace WHERE n.nspname = $1 AND r.relname = $2 AND c.conname = $3)",
                &[&schema, &t.table, &fk.name],
            )
        })
        .collect();
    let mut tables: Vec<&str> = lookups.references.iter().map(|r| r.table.as_str()).collect();
    tables.sort_unstable();
    tables.dedup();
    let referenced = tables
        .iter()
        .map(|table| Referenced {
            table: (*table).to_string(),
            exists: Query::new(TABLE_EXISTS, &[table]),
            lock: format!("LOCK TABLE {table} IN SHARE MODE"),
            state: state_sql(table),
        })
        .collect();
    let reference_lookups = lookups
        .references
        .iter()
        .map(|r| {
            let ty = columns.iter().find(|c| c.name == r.column).map(|c| c.ty).unwrap_or(crate::spec::model::ColumnType::String);
            let k = ident(&r.ref_column);
            let keys = [(r.ref_column.clone(), ty)];
            ReferenceLookup {
                column: r.column.clone(),
                table: r.table.clone(),
                exists: Query::new(TABLE_EXISTS, &[&r.table]),
                lock: format!("LOCK TABLE {} IN SHARE MODE", r.table),
                lock_for_new_table: format!("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", r.table),
                lookup: Lookup {
                    export: export(&format!("SELECT DISTINCT {k} FROM {} WHERE {k} IS NOT NULL", r.table)),
                    create: lookup_create(&r.relation, &keys),
                    fill: lookup_fill(&r.relation, &keys),
                },
            }
        })
        .collect();
    let current_lookup = lookups.current.as_ref().map(|relation| {
        let typed: Vec<(String, crate::spec::model::ColumnType)> = columns.iter().map(|c| (c.name.clone(), c.ty)).collect();
        let list: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
        Lookup {
            export: export(&format!("SELECT {} FROM {q}", list.join(", "))),
            create: lookup_create(relation, &typed),
            fill: lookup_fill(relation, &typed),
        }
    });
    PgStatements {
        settings: vec!["SET LOCAL DateStyle = ISO".into(), "SET LOCAL extra_float_digits = 1".into()],
        savepoint: "SAVEPOINT etl_stage".into(),
        rollback_to_savepoint: "ROLLBACK TO SAVEPOINT etl_stage".into(),
        advisory_lock: Query::new("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&format!("etl:{q}")]),
        read_columns: Query::new(
            "SELECT column_name::text, data_type::text, character_maximum_length, numeric_precision, numeric_scale
         FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
            &[&schema, &t.table],
        ),
        schema_exists: Query::new("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", &[&schema]),
        create_schema: format!("CREATE SCHEMA {}", ident(&schema)),
        key_is_unique,
        foreign_key_exists,
        lock: format!("LOCK TABLE {q} IN SHARE ROW EXCLUSIVE MODE"),
        exists: Query::new(TABLE_EXISTS, &[q]),
        is_empty: format!("SELECT NOT EXISTS (SELECT 1 FROM {q})"),
        delete_all: (t.mode == LoadMode::Replace).then(|| format!("DELETE FROM {q}")),
        state: state_sql(q),
        referenced,
        reference_lookups,
        current_lookup,
    }
}

/// Empties the given tables (`etl clean`) in one statement, so tables referencing each other
/// can be emptied together.
pub fn truncate(tables: &[String]) -> String {
    format!("TRUNCATE {}", tables.join(", "))
}
