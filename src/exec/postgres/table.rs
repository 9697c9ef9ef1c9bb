//! A PostgreSQL stage's table: created from the spec when missing (bare: its key, indexes and
//! foreign keys follow the first load, built in bulk), or checked against the spec (every column
//! present with a type that holds the spec's, a unique key), its missing indexes and foreign keys
//! added. Every statement comes from the stage's Plan.

use sqlx::Row;

use super::{Tx, arguments, db, execute, generated, scalar};
use crate::exec::error::ExecError;
use crate::plan::StagePlan;
use crate::plan::load::sql_type;
use crate::plan::PgStatements;
use crate::spec::model::ColumnType;

/// What [`ensure_table`] found.
pub struct Ensured {
    /// It created the table: its keys, secondary indexes and foreign keys are built after the
    /// load (`add_constraints`, `finish_table`), as PostgreSQL's documentation advises for bulk
    /// loads; otherwise they are ensured now.
    pub created: bool,
    /// Every column has the very type the binary COPY writes (not only one that holds it, such as
    /// `bigint` for an int32 column, `numeric` for an int64, `timestamp` for a date): rows may be
    /// COPYed straight into the table; otherwise through the staging table, typed by the spec, and
    /// cast as they are written.
    pub exact: bool,
}

/// Creates the stage's table when missing, or checks that the existing one holds the spec's
/// columns with compatible types and a unique key.
pub async fn ensure_table(tx: &mut Tx, stage: &StagePlan, pg: &PgStatements) -> Result<Ensured, ExecError> {
    let t = &stage.target;
    let existing = sqlx::query_with(generated(&pg.read_columns.sql), arguments(&pg.read_columns)?)
        .fetch_all(&mut **tx)
        .await
        .map_err(db("read the target table's columns"))?;
    if existing.is_empty() {
        // Only when missing: creating a schema needs a privilege on the database that a loader
        // working in an existing schema need not have.
        let has_schema: bool = scalar(tx, &pg.schema_exists, "look up the target schema").await?;
        if !has_schema {
            execute(tx, &pg.create_schema, "create the target schema").await?;
        }
        for s in &t.sql.create_table {
            execute(tx, s, "create the target table").await?;
        }
        return Ok(Ensured { created: true, exact: true });
    }
    let mut problems = Vec::new();
    let mut exact = true;
    // A history table has no column for the date its rows are loaded for (its versions' dates
    // hold it).
    let as_of = t.history.as_ref().map(|h| h.as_of.as_str());
    for c in stage.columns.iter().filter(|c| Some(c.name.as_str()) != as_of) {
        let Some(row) = existing.iter().find(|r| r.get::<String, _>(0) == c.name) else {
            problems.push(format!("column `{}` is missing (the spec wants {})", c.name, sql_type(c, t.dialect)));
            continue;
        };
        let data_type: String = row.get(1);
        let max_len: Option<i32> = row.get(2);
        let precision: Option<i32> = row.get(3);
        let scale: Option<i32> = row.get(4);
        let ok = match c.ty {
            ColumnType::String => match data_type.as_str() {
                "text" => true,
                "character varying" => max_len.is_none_or(|m| c.max_length.is_some_and(|n| n as i32 <= m)),
                _ => false,
            },
            ColumnType::Int32 => matches!(data_type.as_str(), "integer" | "bigint" | "numeric"),
            ColumnType::Int64 => matches!(data_type.as_str(), "bigint" | "numeric"),
            ColumnType::Decimal { precision: p, scale: s } => {
                data_type == "numeric"
                    && precision.is_none_or(|tp| tp - scale.unwrap_or(0) >= i32::from(p) - i32::from(s))
                    && scale.is_none_or(|ts| ts >= i32::from(s))
            }
            ColumnType::Float64 => data_type == "double precision",
            ColumnType::Bool => data_type == "boolean",
            ColumnType::Date => matches!(data_type.as_str(), "date" | "timestamp without time zone"),
            ColumnType::Timestamp => data_type == "timestamp without time zone",
        };
        // The binary forms that differ from the spec's type's: text and varchar, and numerics of
        // any precision, are written alike.
        exact &= match c.ty {
            ColumnType::Int32 => data_type == "integer",
            ColumnType::Int64 => data_type == "bigint",
            ColumnType::Date => data_type == "date",
            _ => true,
        };
        if !ok {
            let shown = match (max_len, precision, scale) {
                (Some(m), _, _) => format!("{data_type}({m})"),
                (_, Some(p), Some(s)) if data_type == "numeric" => format!("numeric({p},{s})"),
                _ => data_type.clone(),
            };
            problems.push(format!("column `{}` is {shown}, which cannot hold the spec's {}", c.name, sql_type(c, t.dialect)));
        }
    }
    if let Some(q) = &pg.key_is_unique {
        let unique: bool = scalar(tx, q, "read the target table's keys").await?;
        if !unique {
            problems.push(format!("the key ({}) has no unique constraint or index", t.key.join(", ")));
        }
    }
    if !problems.is_empty() {
        return Err(ExecError::TableMismatch { table: t.qualified.clone(), problems: problems.join("; ") });
    }
    // A soft delete's column, added to a table made before `delete_missing: soft` was set.
    if let Some(add) = pg.missing.as_ref().and_then(|m| m.add_column.as_ref())
        && !existing.iter().any(|r| r.get::<String, _>(0) == crate::spec::model::DELETED_AT)
    {
        execute(tx, add, "add the soft delete's column").await?;
    }
    finish_table(tx, stage, pg).await?;
    Ok(Ensured { created: false, exact })
}

/// Builds the key and unique constraints of a table the run created bare, once it is loaded.
pub async fn add_constraints(tx: &mut Tx, stage: &StagePlan) -> Result<(), ExecError> {
    for s in &stage.target.sql.constraints {
        execute(tx, s, "add the key").await?;
    }
    Ok(())
}

/// Ensures the table's secondary indexes and foreign keys (a foreign key added to a loaded table
/// is validated in bulk).
pub async fn finish_table(tx: &mut Tx, stage: &StagePlan, pg: &PgStatements) -> Result<(), ExecError> {
    let t = &stage.target;
    for s in &t.sql.create_indexes {
        execute(tx, s, "create an index").await?;
    }
    for (fk, exists) in t.sql.foreign_keys.iter().zip(&pg.foreign_key_exists) {
        let present: bool = scalar(tx, exists, "read the target table's foreign keys").await?;
        if !present {
            execute(tx, &fk.sql, "add a foreign key").await?;
        }
    }
    Ok(())
}
