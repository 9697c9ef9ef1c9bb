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

/// The name of the column holding, for a row whose key (or unique column) repeats an earlier
/// row's, the record number of that first row.
pub fn duplicate_column(what: &str) -> String {
    format!("__duplicate_of_{what}")
}

/// The DuckDB table a stage's raw text rows are staged in.
pub fn raw_table(stage: &StagePlan) -> String {
    format!("raw_{}", stage.name)
}

/// The DuckDB table DuckDB's CSV reader writes malformed lines to.
pub fn reject_table(stage: &StagePlan) -> String {
    format!("csv_errors_{}", stage.name)
}

/// The two DuckDB statements of a stage's extract.
#[derive(Debug, Clone)]
pub struct ExtractSql {
    /// Reads the CSV with DuckDB's reader into a table of text, in file order; malformed lines
    /// go to the reject table instead of aborting the file.
    pub stage_raw: String,
    /// Yields the record number, each column typed, each value that did not cast (as text), and
    /// for repeated keys the record of their first occurrence; in file order.
    pub select: String,
}

/// The `read_csv(...)` call of a stage.
pub fn read_csv(stage: &StagePlan, path: &str) -> String {
    let csv = &stage.csv;
    let nulls: Vec<String> = csv.null_values.iter().map(|n| literal(n)).collect();
    let mut options = vec![
        format!("header = {}", csv.header),
        format!("delim = {}", literal(&csv.delimiter)),
        format!("quote = {}", literal(&csv.quote)),
        format!("escape = {}", literal(&csv.escape)),
        format!("encoding = {}", literal(csv.encoding.duckdb_name())),
        format!("nullstr = [{}]", nulls.join(", ")),
        "all_varchar = true".to_string(),
        "strict_mode = true".to_string(),
        "ignore_errors = true".to_string(),
        "store_rejects = true".to_string(),
        format!("rejects_table = {}", literal(&reject_table(stage))),
        format!("rejects_scan = {}", literal(&format!("csv_scans_{}", stage.name))),
    ];
    if !csv.header {
        // Without a header, the file's columns are the spec's, in order.
        let names: Vec<String> = stage.columns.iter().map(|c| literal(&c.header)).collect();
        options.push(format!("names = [{}]", names.join(", ")));
    }
    format!("read_csv({}, {})", literal(path), options.join(", "))
}

/// Compiles a stage's extract for the CSV at `path`.
pub fn extract_sql(stage: &StagePlan, path: &str) -> ExtractSql {
    let headers: Vec<String> = stage
        .columns
        .iter()
        .map(|c| {
            if c.header == c.name {
                format!("  {}", ident(&c.name))
            } else {
                format!("  {} AS {}", ident(&c.header), ident(&c.name))
            }
        })
        .collect();
    let stage_raw = format!(
        "CREATE OR REPLACE TEMP TABLE {} AS\nSELECT\n{}\nFROM {}",
        ident(&raw_table(stage)),
        headers.join(",\n"),
        read_csv(stage, path)
    );

    let mut inner = vec![format!("    rowid + 1 AS {}", ident(RECORD))];
    let mut outer = vec![format!("  {}", ident(RECORD))];
    for c in &stage.columns {
        let v = ident(&c.name);
        outer.push(format!("  {v}"));
        match cast(c) {
            None => inner.push(format!("    {v}")),
            Some(expr) => {
                let u = ident(&uncast_column(&c.name));
                inner.push(format!("    {expr} AS {v}"));
                // A decimal with more places than the column keeps would be rounded by the cast:
                // it does not fit, so it is a cast failure too, never a silent rounding.
                let lossy = match c.ty {
                    ColumnType::Decimal { precision, scale } => {
                        let wide = 38 - (precision - scale);
                        format!(" OR TRY_CAST({v} AS DECIMAL(38,{wide})) <> {expr}")
                    }
                    _ => String::new(),
                };
                inner.push(format!("    CASE WHEN {v} IS NOT NULL AND ({expr} IS NULL{lossy}) THEN {v} END AS {u}"));
                outer.push(format!("  {u}"));
            }
        }
    }
    let mut dup = |what: &str, cols: &[String]| {
        let part: Vec<String> = cols.iter().map(|c| ident(c)).collect();
        let present: Vec<String> = cols.iter().map(|c| format!("{} IS NOT NULL", ident(c))).collect();
        let first = format!("min({}) OVER (PARTITION BY {})", ident(RECORD), part.join(", "));
        outer.push(format!(
            "  CASE WHEN {} AND {first} < {} THEN {first} END AS {}",
            present.join(" AND "),
            ident(RECORD),
            ident(&duplicate_column(what))
        ));
    };
    if !stage.target.key.is_empty() {
        dup("key", &stage.target.key);
    }
    let key_is = |c: &ColumnPlan| stage.target.key.len() == 1 && stage.target.key[0] == c.name;
    for c in stage.columns.iter().filter(|c| c.unique && !key_is(c)) {
        dup(&c.name, std::slice::from_ref(&c.name));
    }
    let select = format!(
        "SELECT\n{}\nFROM (\n  SELECT\n{}\n  FROM {}\n) AS typed\nORDER BY {}",
        outer.join(",\n"),
        inner.join(",\n"),
        ident(&raw_table(stage)),
        ident(RECORD)
    );
    ExtractSql { stage_raw, select }
}
