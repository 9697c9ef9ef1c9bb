//! The target SQL of a stage: the table, its key, indexes and foreign keys (so a new dataset
//! needs only YAML), and the statements that stage a batch and merge it into the table.

use crate::spec::model::{ColumnType, LoadMode};

use super::sql::{FileSql, ident};
use super::{ColumnPlan, Dialect, TargetPlan};

/// A stage's target SQL, in the order it runs.
#[derive(Debug, Clone, Default)]
pub struct LoadSql {
    /// Creates the table when missing. PostgreSQL: the columns only, so the first load is a bulk
    /// COPY into a bare table; DuckDB: with its key and unique constraints.
    pub create_table: Vec<String>,
    /// Adds the key and unique constraints to a table created bare (PostgreSQL), after its first
    /// load: one index build each instead of per-row upkeep.
    pub constraints: Vec<String>,
    /// Creates the requested indexes when missing.
    pub create_indexes: Vec<String>,
    /// Adds the foreign keys (PostgreSQL: each checked against the catalog first; DuckDB
    /// declares them in CREATE TABLE).
    pub foreign_keys: Vec<ForeignKey>,
    /// Creates the per-transaction staging table.
    pub create_staging: String,
    /// Fills the staging table (PostgreSQL: COPY in binary format; DuckDB: see `copy_file`).
    pub copy: String,
    /// DuckDB: COPYs one batch, written as CSV, into the staging table.
    pub copy_file: Option<FileSql>,
    /// PostgreSQL: COPYs the rows straight into the table (a table that is new or empty).
    pub copy_direct: String,
    /// PostgreSQL: the same into a table created by this transaction, whose rows FREEZE writes
    /// as already visible.
    pub copy_frozen: String,
    /// DuckDB: counts the staged rows whose key the table holds (to tell inserts from updates).
    pub count_existing: Option<String>,
    /// Writes the staged rows into the table.
    pub merge: Vec<MergeStep>,
    /// Drops the staging table (DuckDB, after a dry run's stage).
    pub drop_staging: String,
}

/// One statement of a merge, by what it reports.
#[derive(Debug, Clone)]
pub enum MergeStep {
    /// Empties the table (mode replace).
    Delete(String),
    /// Inserts the staged rows; its row count is the rows inserted.
    Insert(String),
    /// Upserts the staged rows. PostgreSQL: yields (rows inserted, rows written); DuckDB: its row
    /// count is the rows written.
    Upsert(String),
}

impl MergeStep {
    /// The statement.
    pub fn sql(&self) -> &str {
        match self {
            MergeStep::Delete(s) | MergeStep::Insert(s) | MergeStep::Upsert(s) => s,
        }
    }
}

/// A foreign key of the target table.
#[derive(Debug, Clone)]
pub struct ForeignKey {
    /// Constraint name.
    pub name: String,
    /// The column.
    pub column: String,
    /// The table it references.
    pub table: String,
    /// The column there.
    pub ref_column: String,
    /// The statement adding it.
    pub sql: String,
}

/// The staging table's name.
pub fn staging_table(t: &TargetPlan) -> String {
    format!("_etl_stage_{}", t.table)
}

/// The SQL type of a column in a dialect.
pub fn sql_type(c: &ColumnPlan, dialect: Dialect) -> String {
    match (c.ty, dialect) {
        (ColumnType::String, _) => match c.max_length {
            Some(n) => format!("VARCHAR({n})"),
            None => "TEXT".into(),
        },
        (ColumnType::Int32, _) => "INTEGER".into(),
        (ColumnType::Int64, _) => "BIGINT".into(),
        (ColumnType::Decimal { precision, scale }, _) => format!("NUMERIC({precision},{scale})"),
        (ColumnType::Float64, Dialect::Postgres) => "DOUBLE PRECISION".into(),
        (ColumnType::Float64, Dialect::Duckdb) => "DOUBLE".into(),
        (ColumnType::Bool, _) => "BOOLEAN".into(),
        (ColumnType::Date, _) => "DATE".into(),
        (ColumnType::Timestamp, _) => "TIMESTAMP".into(),
    }
}

fn constraint_name(table: &str, cols: &[String], suffix: &str) -> String {
    let mut n = format!("{table}_{}_{suffix}", cols.join("_"));
    if n.len() > 63 {
        n.truncate(63);
    }
    n
}

/// Compiles a target's SQL.
pub fn compile(t: &TargetPlan, columns: &[ColumnPlan]) -> LoadSql {
    let table = t.qualified.clone();
    let mut defs: Vec<String> = Vec::new();
    let mut create_table = Vec::new();
    if let Some(sk) = &t.surrogate_key {
        match t.dialect {
            Dialect::Postgres => defs.push(format!("{} BIGINT GENERATED ALWAYS AS IDENTITY", ident(sk))),
            Dialect::Duckdb => {
                let seq = format!("{}_{}_seq", t.table, sk);
                create_table.push(format!("CREATE SEQUENCE IF NOT EXISTS {}", ident(&seq)));
                defs.push(format!("{} BIGINT PRIMARY KEY DEFAULT nextval('{}')", ident(sk), seq.replace('\'', "''")));
            }
        }
    }
    for c in columns {
        let null = if c.nullable { "" } else { " NOT NULL" };
        defs.push(format!("{} {}{null}", ident(&c.name), sql_type(c, t.dialect)));
    }
    let mut keys: Vec<String> = Vec::new();
    if let Some(sk) = &t.surrogate_key
        && t.dialect == Dialect::Postgres
    {
        keys.push(format!("CONSTRAINT {} PRIMARY KEY ({})", ident(&constraint_name(&t.table, std::slice::from_ref(sk), "pkey")), ident(sk)));
    }
    if !t.key.is_empty() {
        let cols: Vec<String> = t.key.iter().map(|k| ident(k)).collect();
        let kind = if t.surrogate_key.is_some() { "UNIQUE" } else { "PRIMARY KEY" };
        let suffix = if t.surrogate_key.is_some() { "key" } else { "pkey" };
        keys.push(format!(
            "CONSTRAINT {} {kind} ({})",
            ident(&constraint_name(&t.table, &t.key, suffix)),
            cols.join(", ")
        ));
    }
    for c in columns.iter().filter(|c| c.unique && !(t.key.len() == 1 && t.key[0] == c.name)) {
        keys.push(format!(
            "CONSTRAINT {} UNIQUE ({})",
            ident(&constraint_name(&t.table, std::slice::from_ref(&c.name), "key")),
            ident(&c.name)
        ));
    }
    let constraints = match t.dialect {
        Dialect::Postgres => keys.iter().map(|k| format!("ALTER TABLE {table} ADD {k}")).collect(),
        Dialect::Duckdb => {
            defs.append(&mut keys);
            Vec::new()
        }
    };
    let mut foreign_keys = Vec::new();
    for c in columns {
        let Some((rtable, rcol)) = &c.references else { continue };
        let name = constraint_name(&t.table, std::slice::from_ref(&c.name), "fkey");
        let rq = super::sql::qualified(t.schema.as_deref(), rtable);
        let clause = format!("CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {rq} ({})", ident(&name), ident(&c.name), ident(rcol));
        let sql = match t.dialect {
            Dialect::Postgres => format!("ALTER TABLE {table} ADD {clause}"),
            // DuckDB declares foreign keys only in CREATE TABLE.
            Dialect::Duckdb => {
                defs.push(clause.clone());
                String::new()
            }
        };
        foreign_keys.push(ForeignKey { name, column: c.name.clone(), table: rtable.clone(), ref_column: rcol.clone(), sql });
    }
    create_table.push(format!("CREATE TABLE IF NOT EXISTS {table} (\n  {}\n)", defs.join(",\n  ")));
    let create_indexes = columns
        .iter()
        .filter(|c| c.index)
        .map(|c| {
            let name = constraint_name(&t.table, std::slice::from_ref(&c.name), "idx");
            format!("CREATE INDEX IF NOT EXISTS {} ON {table} ({})", ident(&name), ident(&c.name))
        })
        .collect();

    let names: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
    let list = names.join(", ");
    let staging = ident(&staging_table(t));
    let create_staging = match t.dialect {
        Dialect::Postgres => format!("CREATE TEMP TABLE {staging} ON COMMIT DROP AS SELECT {list} FROM {table} WITH NO DATA"),
        Dialect::Duckdb => format!("CREATE OR REPLACE TEMP TABLE {staging} AS SELECT {list} FROM {table} LIMIT 0"),
    };
    let (copy, copy_file, copy_direct, copy_frozen) = match t.dialect {
        Dialect::Postgres => (
            format!("COPY {staging} ({list}) FROM STDIN (FORMAT binary)"),
            None,
            format!("COPY {table} ({list}) FROM STDIN (FORMAT binary)"),
            format!("COPY {table} ({list}) FROM STDIN (FORMAT binary, FREEZE)"),
        ),
        Dialect::Duckdb => (
            String::new(),
            Some(FileSql::new(format!("COPY {staging} FROM "), " (FORMAT csv, HEADER false, ALLOW_QUOTED_NULLS false)")),
            String::new(),
            String::new(),
        ),
    };
    let insert = format!("INSERT INTO {table} AS t ({list})\nSELECT {list} FROM {staging}");
    let merge = match t.mode {
        LoadMode::Append => vec![MergeStep::Insert(insert)],
        LoadMode::Replace => vec![MergeStep::Delete(format!("DELETE FROM {table}")), MergeStep::Insert(insert)],
        LoadMode::Upsert => {
            let keys: Vec<String> = t.key.iter().map(|k| ident(k)).collect();
            let rest: Vec<&ColumnPlan> = columns.iter().filter(|c| !t.key.contains(&c.name)).collect();
            let conflict = format!("ON CONFLICT ({})", keys.join(", "));
            let upsert = if rest.is_empty() {
                format!("{insert}\n{conflict} DO NOTHING")
            } else {
                let set: Vec<String> = rest.iter().map(|c| format!("{0} = EXCLUDED.{0}", ident(&c.name))).collect();
                let old: Vec<String> = rest.iter().map(|c| format!("t.{}", ident(&c.name))).collect();
                let new: Vec<String> = rest.iter().map(|c| format!("EXCLUDED.{}", ident(&c.name))).collect();
                let (o, n) = if rest.len() == 1 {
                    (old.join(""), new.join(""))
                } else {
                    (format!("ROW({})", old.join(", ")), format!("ROW({})", new.join(", ")))
                };
                format!("{insert}\n{conflict} DO UPDATE SET\n  {}\nWHERE {o} IS DISTINCT FROM {n}", set.join(",\n  "))
            };
            let upsert = match t.dialect {
                // Which rows were inserted (xmax 0) and how many were written, in one statement.
                Dialect::Postgres => format!(
                    "WITH merged AS (\n{upsert}\nRETURNING (xmax = 0) AS inserted\n)\nSELECT count(*) FILTER (WHERE inserted), count(*) FROM merged"
                ),
                Dialect::Duckdb => upsert,
            };
            vec![MergeStep::Upsert(upsert)]
        }
    };
    let count_existing = (t.dialect == Dialect::Duckdb && t.mode == LoadMode::Upsert && !t.key.is_empty()).then(|| {
        let on: Vec<String> = t.key.iter().map(|k| format!("r.{0} = s.{0}", ident(k))).collect();
        format!("SELECT count(*) FROM {staging} AS s WHERE EXISTS (SELECT 1 FROM {} AS r WHERE {})", ident(&t.table), on.join(" AND "))
    });
    LoadSql {
        create_table,
        constraints,
        create_indexes,
        foreign_keys,
        create_staging,
        copy,
        copy_file,
        copy_direct,
        copy_frozen,
        count_existing,
        merge,
        drop_staging: format!("DROP TABLE IF EXISTS {staging}"),
    }
}
