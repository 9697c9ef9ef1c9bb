//! The DuckDB statements a run sends besides a stage's extract and load: the run's in-memory
//! database set up, a DuckDB target's file attached to it, and a DuckDB stage's transaction and
//! table checks.

use super::compiled::{DUCKDB_CATALOG, DuckStatements, TargetPlan};
use super::sql::{Query, ident, literal};

/// Opens a stage's transaction on a DuckDB target (or a dry run's, for every stage).
pub const BEGIN: &str = "BEGIN TRANSACTION";
/// Commits a DuckDB stage.
pub const COMMIT: &str = "COMMIT";
/// Rolls a DuckDB stage (or a dry run) back.
pub const ROLLBACK: &str = "ROLLBACK";

/// DuckDB's memory limit when `ETL_DUCKDB_MEMORY` is unset. With the census in a file of its
/// own and the repeated keys found in passes, 128MB holds from 1M to 100M trades (a first load's
/// peak 249 MB at 1M, 286 MB at 10M against 374 MB at 256MB in the same time, 281 MB at 100M;
/// BENCHMARKS.md, "Where the memory past the limit went").
pub const DEFAULT_MEMORY: &str = "128MB";

/// Sets up the run's DuckDB database: its memory limit, where it spills past it, rows kept in
/// file order, no extension fetched from the network, and the file of the censuses
/// (`extract::SCRATCH_CATALOG`) in the temporary directory. (DuckDB's `operator_memory_limit`
/// at a quarter of the limit for every stage was measured and not kept: a load of trades
/// referencing 1M assets took 13.4-14.7 s against 11.4-12.5 s without; it is set only for a
/// stage whose lookups are large: [`BOUND_JOINS`].)
pub fn configure(memory_limit: &str, temp_dir: &str) -> String {
    format!(
        "SET memory_limit = {}; SET temp_directory = {}; SET preserve_insertion_order = true; \
         SET autoinstall_known_extensions = false; SET autoload_known_extensions = false; ATTACH {} AS {};",
        literal(memory_limit),
        literal(temp_dir),
        literal(&format!("{temp_dir}/etl-census.duckdb")),
        super::sql::ident(super::extract::SCRATCH_CATALOG)
    )
}

/// Holds a query's hash tables and sorts to a quarter of DuckDB's memory limit, for a stage whose
/// lookups take more than its share (`extract::lookups_bound_joins`): DuckDB builds a join's
/// hash table in all the memory that is free when it fits, and the CSV reader's buffers, asked
/// for after, then found none (the 1M values of a table's `unique` column, 28 MB exported,
/// failed every load into it at 128MB). Capped, a larger hash table spills.
pub const BOUND_JOINS: &str = "SET operator_memory_limit = CAST(parse_formatted_bytes(current_setting('memory_limit')) // 4 AS VARCHAR) || 'B'";

/// Lets a query's hash tables and sorts take what is free again (DuckDB's default).
pub const UNBOUND_JOINS: &str = "RESET operator_memory_limit";

/// DuckDB's memory limit in bytes (null: none, which DuckDB shows in pebibytes, past what it
/// parses).
pub const MEMORY_LIMIT: &str = "SELECT TRY(CAST(parse_formatted_bytes(current_setting('memory_limit')) AS BIGINT))";

/// Attaches a DuckDB target's file (created when missing) and makes it the default catalog.
pub fn attach(file: &str) -> String {
    format!("ATTACH IF NOT EXISTS {} AS {DUCKDB_CATALOG}; USE {DUCKDB_CATALOG};", literal(file))
}

/// Compiles a DuckDB stage's statements.
pub fn compile(t: &TargetPlan) -> DuckStatements {
    DuckStatements {
        read_columns: Query::new(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog = ? AND table_schema = 'main' AND table_name = ?",
            &[DUCKDB_CATALOG, &t.table],
        ),
        delete_all: format!("DELETE FROM {}", ident(&t.table)),
    }
}
