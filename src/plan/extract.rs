//! The DuckDB SQL that reads a stage's CSV with DuckDB's own reader and casts each column to
//! its spec type. Every field is read as text first, so a value that does not cast rejects its
//! row (its text kept in `__uncast_<column>`) instead of aborting the file.

use crate::spec::model::ColumnType;

use super::{ColumnPlan, StagePlan};

/// Quotes an identifier for SQL (DuckDB and PostgreSQL agree).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a text literal for SQL.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The column holding the 1-based record number of a row within its file.
pub const RECORD: &str = "__record";

/// The name of the column holding a value's text when it did not cast.
pub fn uncast_column(column: &str) -> String {
    format!("__uncast_{column}")
}

/// The DuckDB type of a column.
pub fn duckdb_type(t: ColumnType) -> String {
    match t {
        ColumnType::String => "VARCHAR".into(),
        ColumnType::Int32 => "INTEGER".into(),
        ColumnType::Int64 => "BIGINT".into(),
        ColumnType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
        ColumnType::Float64 => "DOUBLE".into(),
        ColumnType::Bool => "BOOLEAN".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Timestamp => "TIMESTAMP".into(),
    }
}

fn cast(c: &ColumnPlan) -> Option<String> {
    let v = ident(&c.name);
    if c.ty == ColumnType::String {
        return None;
    }
    if !c.formats.is_empty() {
        let fmts: Vec<String> = c.formats.iter().map(|f| literal(f)).collect();
        let parsed = format!("try_strptime({v}, [{}])", fmts.join(", "));
        return Some(match c.ty {
            ColumnType::Date => format!("CAST({parsed} AS DATE)"),
            _ => parsed,
        });
    }
    Some(format!("TRY_CAST({v} AS {})", duckdb_type(c.ty)))
}

/// The SELECT that reads `path` and yields the record number, each column typed, and for each
/// column that can fail to cast, its text when it did.
pub fn extract_sql(stage: &StagePlan, path: &str) -> String {
    let csv = &stage.csv;
    let nulls: Vec<String> = csv.null_values.iter().map(|n| literal(n)).collect();
    let mut outer = vec![format!("  {}", ident(RECORD))];
    for c in &stage.columns {
        match cast(c) {
            None => outer.push(format!("  {}", ident(&c.name))),
            Some(expr) => {
                let v = ident(&c.name);
                outer.push(format!("  {expr} AS {v}"));
                outer.push(format!(
                    "  CASE WHEN {v} IS NOT NULL AND {expr} IS NULL THEN {v} END AS {}",
                    ident(&uncast_column(&c.name))
                ));
            }
        }
    }
    let inner: Vec<String> = stage
        .columns
        .iter()
        .map(|c| {
            if c.header == c.name {
                format!("    {}", ident(&c.name))
            } else {
                format!("    {} AS {}", ident(&c.header), ident(&c.name))
            }
        })
        .collect();
    let options = [
        format!("header = {}", csv.header),
        format!("delim = {}", literal(&csv.delimiter)),
        format!("quote = {}", literal(&csv.quote)),
        format!("escape = {}", literal(&csv.escape)),
        format!("encoding = {}", literal(csv.encoding.duckdb_name())),
        format!("nullstr = [{}]", nulls.join(", ")),
        "all_varchar = true".to_string(),
        "strict_mode = true".to_string(),
    ];
    format!(
        "SELECT\n{}\nFROM (\n  SELECT\n    row_number() OVER () AS {},\n{}\n  FROM read_csv({}, {})\n) AS raw",
        outer.join(",\n"),
        ident(RECORD),
        inner.join(",\n"),
        literal(path),
        options.join(", ")
    )
}
