//! What a compiled spec is: the `Plan` and its parts, as the executor sees them. The compiler
//! (`plan::compile` and its rooms: extract, load, postgres, duck, predicates) fills them in; the
//! types live here so that every room can use them without importing the compiler.

use indexmap::IndexMap;
use polars::prelude::Expr;

use super::sql::{FileSql, PassSql, Query, literal};
use crate::spec::model::{ColumnType, Compression, Encoding, LoadMode, PostgresConnection, S3Connection, Severity};

/// The catalog a DuckDB target's file is attached as in the run's DuckDB database.
pub const DUCKDB_CATALOG: &str = "etl_target";

/// Default rows per batch.
pub const DEFAULT_BATCH_SIZE: u32 = 10_000;

// The plan, its connections and stages

/// A compiled spec.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The spec's name.
    pub name: String,
    /// Every connection the spec names, resolved to its settings, in spec order.
    pub connections: IndexMap<String, ConnectionPlan>,
    /// Stages in run order (dependencies first, otherwise as written).
    pub stages: Vec<StagePlan>,
    /// Analytics queries in spec order.
    pub analytics: Vec<AnalyticPlan>,
    /// Schedules in spec order.
    pub schedules: Vec<SchedulePlan>,
    /// The webhooks told when a run ends.
    pub notify: Vec<NotifyPlan>,
}

/// A webhook told when a run ends.
#[derive(Debug, Clone)]
pub struct NotifyPlan {
    /// Where to POST (never shown).
    pub url: crate::spec::model::Secret,
    /// The ends of a run it is told of (their record's words).
    pub on: Vec<&'static str>,
    /// How long one attempt may take.
    pub timeout: std::time::Duration,
    /// Attempts after a failed one.
    pub retries: u32,
}

/// A connection with its settings.
#[derive(Debug, Clone)]
pub enum ConnectionPlan {
    /// An S3 bucket (a stage's object is the connection's prefix, then its key).
    S3(S3Connection),
    /// A local directory (relative to the spec file's directory).
    Local {
        /// The directory.
        dir: String,
    },
    /// A PostgreSQL database.
    Postgres(PostgresConnection),
    /// An embedded DuckDB file (relative to the spec file's directory).
    Duckdb {
        /// The file.
        file: String,
    },
}

/// Where a stage's CSV file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePlan {
    /// The connection (an `s3` or `local` one in `Plan::connections`).
    pub connection: String,
    /// The object key or the file's path in the directory; for a file set, its pattern.
    pub key: String,
    /// A set of files (`files:`), or none for one `key`.
    pub set: Option<FileSetPlan>,
    /// A last line starting with this is the sender's trailer, set aside.
    pub trailer: Option<String>,
}

/// A stage's set of files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSetPlan {
    /// The pattern, after templating.
    pub pattern: crate::spec::pattern::Pattern,
    /// Which files a run loads.
    pub select: crate::spec::model::Select,
    /// What an empty set does.
    pub on_missing: crate::spec::model::OnMissing,
    /// How long to wait for a set that is not there yet.
    pub wait: Option<WaitPlan>,
    /// Whether each file commits on its own.
    pub atomicity: crate::spec::model::Atomicity,
}

/// Waiting for a set: look every `poll` until `until` (a time of day in `timezone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitPlan {
    /// The deadline's time of day.
    pub until: chrono::NaiveTime,
    /// The spec's time zone, in which `until` is read.
    pub timezone: String,
    /// Between looks.
    pub poll: std::time::Duration,
}

/// A compiled stage.
#[derive(Debug, Clone)]
pub struct StagePlan {
    /// Stage name.
    pub name: String,
    /// Stages that load first.
    pub needs: Vec<String>,
    /// Where its CSV file is.
    pub source: SourcePlan,
    /// The CSV dialect, defaults filled in.
    pub csv: CsvDialect,
    /// Columns in order.
    pub columns: Vec<ColumnPlan>,
    /// Row checks, column facets first, then rules.
    pub checks: Vec<Check>,
    /// Target.
    pub target: TargetPlan,
    /// Rows per COPY batch.
    pub batch_size: u32,
    /// Error budget: most rejected rows allowed.
    pub max_rejects: Option<u64>,
    /// Error budget: largest rejected fraction allowed.
    pub max_reject_ratio: Option<f64>,
    /// The relations the extract joins (referenced keys, current rows).
    pub lookups: Lookups,
    /// The DuckDB statements of the extract.
    pub extract: ExtractSql,
    /// Contracts on the load, checked in its transaction before it commits.
    pub contracts: Vec<ContractPlan>,
    /// The largest rejected record kept with its rejects, in bytes (0: none kept).
    pub reject_record_bytes: usize,
    /// A `mode: history` stage compiled for a fixed date, when only its `as_of` column's value
    /// and its merge depend on the date: the lines of a new date's file that equal the last
    /// load's are reused when this is as that load's was (see `plan::undated`).
    pub undated: Option<Box<StagePlan>>,
}

/// A stage's contract (`checks:`), compiled.
#[derive(Debug, Clone)]
pub struct ContractPlan {
    /// Its name.
    pub name: String,
    /// What a failure does.
    pub severity: Severity,
    /// What it checks.
    pub kind: ContractKind,
}

/// What a contract checks, and the statement each reads it with.
#[derive(Debug, Clone)]
pub enum ContractKind {
    /// The rows the load read.
    RowCount {
        /// At least.
        min: Option<u64>,
        /// At most.
        max: Option<u64>,
        /// The largest change from the last load's count for an earlier business date, and the
        /// statement reading that count (`$1` spec, `$2` stage, `$3` table, `$4` the run's date).
        change_from_last: Option<(f64, String)>,
    },
    /// A column's total over the load's valid rows (summed as the rows are staged).
    Totals {
        /// The column.
        column: String,
        /// Sum or count.
        of: crate::spec::model::TotalOf,
        /// The control value (a manifest's, once the run has read it).
        equals: Option<rust_decimal::Decimal>,
        /// Where the sender states it: (source connection, file, path); read when the run starts.
        manifest: Option<(String, String, String)>,
        /// Or the field of the trailer line at this position (1 is the first).
        trailer: Option<u32>,
        /// Why the control value is not known (a manifest not read, or without a number there).
        unresolved: Option<String>,
        /// How far it may be.
        tolerance: rust_decimal::Decimal,
    },
    /// The column's newest value in the table, no older than `max_age` before the run's date.
    Freshness {
        /// The column.
        column: String,
        /// The age allowed, in whole seconds (as written, e.g. `1d`).
        max_age: (u64, String),
        /// Reads `(newest value, whether it is older than $1::timestamp)` as text.
        newest: String,
    },
    /// The offending rows of a query: `count(*) OVER ()` and each row as JSON, up to 20.
    Sql {
        /// The statement.
        query: String,
    },
}

impl StagePlan {
    /// Whether a contract's outcome depends on the run's business date (not only on the file and
    /// the tables): then the date is part of what a skipped stage must match.
    pub fn contracts_read_the_date(&self) -> bool {
        self.contracts.iter().any(|c| matches!(c.kind, ContractKind::Freshness { .. } | ContractKind::RowCount { change_from_last: Some(_), .. }))
    }

    /// Whether a contract totals the load's valid rows: then every line of its file is read.
    pub fn contracts_total_rows(&self) -> bool {
        self.contracts.iter().any(|c| matches!(c.kind, ContractKind::Totals { .. }))
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnSource {
    /// The CSV column named by its `header`.
    File,
    /// This capture of the `files:` pattern.
    Path(String),
    /// This text, the same for every row.
    Value(String),
    /// This expression over the row's other columns (the rule language), computed after they
    /// are typed.
    Expr(crate::spec::expr::Expr),
}

impl ColumnPlan {
    /// Whether its value is read from a CSV column (and its header must be in the file).
    pub fn reads_file(&self) -> bool {
        self.source == ColumnSource::File
    }
}

/// A compiled column.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    /// Column name in the table.
    pub name: String,
    /// CSV header it is read from.
    pub header: String,
    /// Where its value comes from: the CSV column `header`, a path capture, a constant or an
    /// expression.
    pub source: ColumnSource,
    /// Type.
    pub ty: ColumnType,
    /// Whether it may be null.
    pub nullable: bool,
    /// Parse formats (DuckDB strptime) for date and timestamp columns with a `format`.
    pub formats: Vec<String>,
    /// Longest text, for VARCHAR(n).
    pub max_length: Option<u32>,
    /// Whether it is unique on its own.
    pub unique: bool,
    /// Whether to index it.
    pub index: bool,
    /// The (table, column) it references.
    pub references: Option<(String, String)>,
    /// Its description, for the column comment.
    pub description: Option<String>,
}

/// The CSV dialect of a source.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvDialect {
    /// One character.
    pub delimiter: String,
    /// One character.
    pub quote: String,
    /// One character.
    pub escape: String,
    /// Whether the first line is a header.
    pub header: bool,
    /// Text encoding.
    pub encoding: Encoding,
    /// Values read as NULL.
    pub null_values: Vec<String>,
    /// How the file is compressed (resolved from the key's extension for `auto`).
    pub compression: Compression,
}

/// SQL dialect of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// DuckDB.
    Duckdb,
}

/// A compiled target.
#[derive(Debug, Clone)]
pub struct TargetPlan {
    /// Connection name.
    pub connection: String,
    /// Its dialect.
    pub dialect: Dialect,
    /// Schema (postgres), if any.
    pub schema: Option<String>,
    /// Table name.
    pub table: String,
    /// The table's name as SQL: quoted, in its schema (PostgreSQL).
    pub qualified: String,
    /// Key columns.
    pub key: Vec<String>,
    /// Load mode.
    pub mode: LoadMode,
    /// With `mode: snapshot`, the date column whose dates a load replaces (also the key's first
    /// column).
    pub as_of: Option<String>,
    /// With an upsert of a complete file: what becomes of the table's keys the file lacks.
    pub delete_missing: Option<crate::spec::model::DeleteMissing>,
    /// With `mode: history`: its versions' columns and the load's date.
    pub history: Option<HistoryPlan>,
    /// The largest share of the table's rows one load may delete or flag.
    pub max_delete_ratio: f64,
    /// What a deleted key does to the rows of other tables that reference it.
    pub on_delete: crate::spec::model::OnDelete,
    /// The other stages' tables (on the same connection) whose foreign keys reference this one.
    pub referencing: Vec<Referencing>,
    /// With a `sql` contract, which may read any of them: every other stage's table on the same
    /// connection (their states are part of what the stage's outcome depends on).
    pub contract_reads: Vec<String>,
    /// Generated identity key, if any.
    pub surrogate_key: Option<String>,
    /// How the table is spread over a Citus cluster, if it is.
    pub distribution: Option<DistributionPlan>,
    /// Whether a file with no rows may empty a `replace` target.
    pub allow_empty: bool,
    /// The SQL: DDL and load statements.
    pub sql: LoadSql,
    /// The other statements the stage sends to its target.
    pub statements: TargetStatements,
}

/// A table of another stage whose foreign key references a stage's table.
#[derive(Debug, Clone)]
pub struct Referencing {
    /// The referencing table (quoted, qualified).
    pub table: String,
    /// Its column holding the reference.
    pub column: String,
    /// The referenced table's column.
    pub ref_column: String,
    /// The tables whose foreign keys reference this one in turn (what a cascade deletes first).
    pub referencing: Vec<Referencing>,
}

/// A target's statements besides its DDL and load, by dialect.
#[derive(Debug, Clone)]
pub enum TargetStatements {
    /// PostgreSQL's.
    Postgres(Box<PgStatements>),
    /// DuckDB's.
    Duckdb(DuckStatements),
}

/// A compiled analytics query.
#[derive(Debug, Clone)]
pub struct AnalyticPlan {
    /// Name.
    pub name: String,
    /// Connection it runs on.
    pub connection: String,
    /// The SQL as written.
    pub sql: String,
    /// With expectations: computes the result once into a temporary table, which `run` and each
    /// expectation then read.
    pub materialize: Option<String>,
    /// The statement sent: the query wrapped so every value comes back as the database prints
    /// it (PostgreSQL: as JSON text, numerics in full; DuckDB: cast to VARCHAR).
    pub run: String,
    /// PostgreSQL: puts the connection's schema first on the search path (in the query's own
    /// transaction), so unqualified names are the tables the stages loaded.
    pub search_path: Option<Query>,
    /// Description.
    pub description: Option<String>,
    /// Each `expect` condition and the statement giving the rows that fail it (`count(*) OVER
    /// ()` and the row as JSON text, up to 20).
    pub expect: Vec<(String, String)>,
    /// The tables it reads, each with the statement giving its state (`postgres::state_sql`):
    /// while they are as an earlier run found them, that run's result is reported instead of
    /// querying again. Or why it always runs (`reads::tables_read`).
    pub reads: Result<Vec<(String, String)>, String>,
}

/// A compiled schedule.
#[derive(Debug, Clone)]
pub struct SchedulePlan {
    /// Name.
    pub name: String,
    /// Six-field cron expression (seconds first), as the scheduler takes it.
    pub cron: String,
    /// The trigger in a person's words (`every day at 02:00`, `cron */15 * * * *`).
    pub trigger: String,
    /// Stages it runs (None: all).
    pub stages: Option<Vec<String>>,
    /// IANA time zone.
    pub timezone: String,
    /// Whether it fires.
    pub enabled: bool,
    /// Which missed firings a starting scheduler makes up.
    pub catchup: crate::spec::model::Catchup,
    /// With `catchup: all`, at most this many.
    pub max_catchup: u32,
    /// Retries of a firing that ended with exit 3.
    pub retries: u32,
    /// The wait before the first retry (doubling after).
    pub retry_delay: std::time::Duration,
    /// Its own webhooks, instead of the spec's (None: the spec's).
    pub notify: Option<Vec<NotifyPlan>>,
    /// Its firings' runs queue their file-by-file stages' files for `etl worker`s.
    pub distribute: bool,
}

impl Plan {
    /// The stages to run for a selection: the named ones, in run order.
    pub fn select(&self, only: Option<&[String]>) -> Vec<&StagePlan> {
        self.stages.iter().filter(|s| only.is_none_or(|o| o.contains(&s.name))).collect()
    }
}

impl TargetPlan {
    /// Whether the table has a `_deleted_at` column: keys the file lacks are flagged
    /// (`delete_missing: soft`), or those other tables reference are (`on_delete: soft`).
    pub fn flags_deleted(&self) -> bool {
        self.delete_missing == Some(crate::spec::model::DeleteMissing::Soft) || self.soft_on_delete()
    }

    /// Whether rows the file lacks that other tables reference are flagged, not deleted.
    pub fn soft_on_delete(&self) -> bool {
        self.delete_missing == Some(crate::spec::model::DeleteMissing::Hard) && self.on_delete == crate::spec::model::OnDelete::Soft
    }

    /// A PostgreSQL target's statements (None for DuckDB).
    pub fn postgres(&self) -> Option<&PgStatements> {
        match &self.statements {
            TargetStatements::Postgres(p) => Some(p),
            TargetStatements::Duckdb(_) => None,
        }
    }

    /// A DuckDB target's statements (None for PostgreSQL).
    pub fn duckdb(&self) -> Option<&DuckStatements> {
        match &self.statements {
            TargetStatements::Duckdb(d) => Some(d),
            TargetStatements::Postgres(_) => None,
        }
    }
}

// A stage's extract (DuckDB)

/// One group's repeated values (see `ExtractSql::duplicates`).
#[derive(Debug, Clone, Default)]
pub struct DuplicatesSql {
    /// Creates the group's table of repeated values (and their first records), empty.
    pub create: String,
    /// Adds the repeated values among one pass's share of the values' hashes.
    pub find: PassSql,
    /// Counts the repeated values found: the single pass (`ExtractSql::single`) stands only when
    /// every group's count is 0.
    pub found: String,
}

/// See `ExtractSql::single`.
#[derive(Debug, Clone, Default)]
pub struct SinglePassSql {
    /// Creates the census empty, with the columns and types `census` gives it.
    pub census_empty: String,
    /// The census table (unquoted), in `extract::SCRATCH_CATALOG`'s schema `main`.
    pub census_table: String,
    /// The columns the census keeps, in its order: each a column of `select`'s rows.
    pub census_columns: Vec<String>,
    /// The typed rows as `ExtractSql::select` yields them, the repeated keys' columns null, then
    /// the file number (`FILE_NUMBER`) and the hash of each group of unique columns, the key's
    /// first (`extract::hash_column`).
    pub select: String,
    /// How many hashes `select` ends with (the stage's key and unique columns' groups).
    pub hashes: usize,
}

/// The DuckDB statements of a stage's extract, in the order they run.
#[derive(Debug, Clone, Default)]
pub struct ExtractSql {
    /// Drops the reject tables an earlier read of the stage left (DuckDB appends to them).
    pub clear_rejects: String,
    /// Creates the view numbering the CSV's records in file order (see `ReadCsv`).
    pub read: ReadCsv,
    /// The first pass over the view: each record's number, file, typed key and unique values,
    /// kept in the census table.
    pub census: String,
    /// The census is a table of `extract::SCRATCH_CATALOG`, not a temporary one.
    pub census_on_disk: bool,
    /// `census` for a later scan of a set's files: appends to the census.
    pub census_append: String,
    /// Finds the repeated keys (and unique values) of the file from the census: per group, its
    /// table created, then filled in `extract::passes` passes, between `one_thread` and
    /// `one_thread_reset`.
    pub duplicates: Vec<DuplicatesSql>,
    /// The records one pass of `duplicates` takes (`extract::RECORDS_PER_PASS`).
    pub records_per_pass: u64,
    /// Sent before the repeated keys' aggregates, and undone by `one_thread_reset` after. One
    /// thread: DuckDB 1.2's hash aggregate holds less at once on one (on two it ran out of 256MB
    /// where one spilled: BENCHMARKS.md, "Memory from 1M to 100M trades").
    pub one_thread: String,
    /// See `one_thread`.
    pub one_thread_reset: String,
    /// Counts the records read, per file number.
    pub count: String,
    /// Lists the malformed lines the reader set aside, with their file's path.
    pub malformed: String,
    /// Yields the typed rows, with their record numbers and the lookups' flags: the second
    /// pass over the view, streamed.
    pub select: String,
    /// The single pass, a stage loading PostgreSQL reads its files with when what it copied can
    /// be emptied again: `select` without the repeated keys' joins (those columns null) and with
    /// each row's file number last, streamed; each batch's `census_columns` are appended to the
    /// census (created by `census_empty`, in `extract::SCRATCH_CATALOG`) from a second
    /// connection as it passes. Then `duplicates` run over that census: only when one of them
    /// finds a repeated value is what was copied emptied and the file read in two passes,
    /// `census` then `select`, which place each repeat. None: the census is a temporary table,
    /// which a second connection cannot see.
    pub single: Option<SinglePassSql>,
    /// Sent before each pass over the read view (`census`, `select`, `rejected_fields`), and
    /// undone by `ordered_pass_reset` once it has run. One thread: the view numbers its records
    /// in one ordered stream anyway, and a second thread only hands its chunks over (DuckDB's
    /// streamed result then spends a fifth of the extract's time in its locks). The file the
    /// probe side of every join: DuckDB estimates a CSV scan at a few dozen rows and would
    /// otherwise build a hash table of the whole file when a lookup holds more, before the
    /// first row comes out.
    pub ordered_pass: String,
    /// See `ordered_pass`.
    pub ordered_pass_reset: String,
    /// `delete_missing`: writes the file's distinct keys (every line's whose key is typed, a
    /// rejected line's too) to a CSV file.
    pub keys: Option<FileSql>,
    /// The raw fields of rejected records, kept with their rejects: creates the table of their
    /// record numbers (`rejected_table`, which the executor appends them to), then
    /// `rejected_fields` yields each one's number and the text of every column read from the
    /// file, whose CSV headers are `rejected_headers` (a third pass over the view, only when
    /// records were rejected).
    pub rejected_create: String,
    /// See `rejected_create` (unquoted).
    pub rejected_table: String,
    /// See `rejected_create`.
    pub rejected_headers: Vec<String>,
    /// See `rejected_create`.
    pub rejected_fields: String,
}

/// The statement that creates the view reading a stage's CSV: it takes the files' paths and
/// their columns (the header's fields, or the spec's columns for a file without a header), both
/// only known once the files are there, and the number of records read before them. Nothing
/// is sniffed: every column is read as text, and a line that does not fit goes to the reject
/// table. The view numbers the records in file order (`row_number() OVER ()`, which DuckDB
/// computes in one ordered stream) and says of each whether all its fields are null, so that
/// every pass over it reads the same fields and sets aside the same malformed lines.
#[derive(Debug, Clone, Default)]
pub struct ReadCsv {
    /// The view (quoted).
    pub(super) view: String,
    /// Each column: `(header, name)` read from the file, or `(capture, name)` from the path.
    pub(super) columns: Vec<ReadColumn>,
    pub(super) options: String,
    pub(super) tail: String,
}

/// Where a raw column's text comes from.
#[derive(Debug, Clone)]
pub(super) enum ReadColumn {
    /// The file's column with this header.
    File { header: String, name: String },
    /// A capture of the file's path.
    Path { capture: String, name: String },
    /// A constant.
    Value { text: String, name: String },
}

/// One file of a [`ReadCsv`]: its path, its number among the stage's files (kept in the view's
/// `__file` column), its path's captures.
#[derive(Debug, Clone, Copy)]
pub struct ReadFile<'a> {
    /// The path DuckDB reads.
    pub path: &'a str,
    /// Its number among the stage's files (0-based, in read order).
    pub number: usize,
    /// The values of the set pattern's captures.
    pub captures: &'a [(String, String)],
}

/// The read view's column holding each row's file number (`ReadFile::number`).
pub const FILE_NUMBER: &str = "__file";

impl ReadCsv {
    /// The statement creating the view over `files`, all of whose columns are `file_columns`,
    /// read in one scan (in list order, each file's rows in line order), numbering their
    /// records from `before + 1`.
    pub fn sql(&self, files: &[ReadFile<'_>], file_columns: &[String], before: u64) -> String {
        let columns: Vec<String> = file_columns.iter().map(|c| format!("{}: 'VARCHAR'", literal(c))).collect();
        // A value per file: a constant for one file, else chosen by the scan's filename (a
        // constant within each chunk DuckDB reads, so evaluated once a chunk).
        let per_file = |value: &dyn Fn(&ReadFile<'_>) -> String| match files {
            [one] => value(one),
            _ => format!(
                "CASE filename {} END",
                files.iter().map(|f| format!("WHEN {} THEN {}", literal(f.path), value(f))).collect::<Vec<_>>().join(" ")
            ),
        };
        let mut select = vec![format!("  row_number() OVER () + {before} AS {}", super::sql::ident(super::extract::RECORD))];
        let mut read = Vec::new();
        for c in &self.columns {
            select.push(match c {
                ReadColumn::File { header, name } => {
                    read.push(format!("{} IS NULL", super::sql::ident(header)));
                    if header == name {
                        format!("  {}", super::sql::ident(name))
                    } else {
                        format!("  {} AS {}", super::sql::ident(header), super::sql::ident(name))
                    }
                }
                ReadColumn::Path { capture, name } => {
                    let value = per_file(&|f: &ReadFile<'_>| {
                        literal(&f.captures.iter().find(|(n, _)| n == capture).map_or_else(|| format!("{{{capture}}}"), |(_, v)| v.clone()))
                    });
                    format!("  CAST({value} AS VARCHAR) AS {}", super::sql::ident(name))
                }
                ReadColumn::Value { text, name } => format!("  CAST({} AS VARCHAR) AS {}", literal(text), super::sql::ident(name)),
            });
        }
        select.push(format!("  CAST({} AS UINTEGER) AS {}", per_file(&|f: &ReadFile<'_>| f.number.to_string()), super::sql::ident(FILE_NUMBER)));
        let all = if read.is_empty() { "true".to_string() } else { read.join(" AND ") };
        select.push(format!("  ({all}) AS {}", super::sql::ident(super::extract::FIELDS)));
        let paths = match files {
            [one] => literal(one.path),
            _ => format!("[{}]", files.iter().map(|f| literal(f.path)).collect::<Vec<_>>().join(", ")),
        };
        let filename = if files.len() > 1 { ", filename = true" } else { "" };
        format!(
            "CREATE OR REPLACE TEMP VIEW {} AS\nSELECT\n{}\nFROM read_csv({paths}, {}{filename}, columns = {{{}}}, {}",
            self.view,
            select.join(",\n"),
            self.options,
            columns.join(", "),
            self.tail
        )
    }
}

/// A key set a stage's column must be found in.
#[derive(Debug, Clone)]
pub struct Reference {
    /// The stage's column.
    pub column: String,
    /// The DuckDB relation holding the referenced values (SQL, quoted).
    pub relation: String,
    /// The column of that relation.
    pub ref_column: String,
    /// The referenced table in the target (SQL, quoted), whose values fill the relation.
    pub table: String,
}

/// The relations a stage's extract joins, filled by the executor before the extract runs.
#[derive(Debug, Clone, Default)]
pub struct Lookups {
    /// One per foreign key.
    pub references: Vec<Reference>,
    /// The target's current rows (the spec's columns), for an upsert with a key.
    pub current: Option<String>,
    /// Per `unique` column (not the key alone) of an upsert or append: the values the table
    /// holds already, with each one's key.
    pub held: Vec<Held>,
}

/// The values of a `unique` column the target's rows hold, for a row of the file to be
/// rejected when another row holds its value (PostgreSQL checks a unique constraint row by
/// row, so even a row that this load changes still holds its old value).
#[derive(Debug, Clone)]
pub struct Held {
    /// The stage's column.
    pub column: String,
    /// The DuckDB relation holding the column and the key of each of the table's rows that has
    /// a value (SQL, quoted).
    pub relation: String,
}

// A stage's row checks (Polars)

/// One row check.
#[derive(Debug, Clone)]
pub struct Check {
    /// What is checked: a facet (`not_null`, `max_length`, `min`, `enum`, ...) or a rule's name.
    pub rule: String,
    /// The column a facet is about; None for rules.
    pub column: Option<String>,
    /// What a failing row gets.
    pub severity: Severity,
    /// The condition as written in the spec's terms, e.g. `cash >= 0`.
    pub condition: String,
    /// How a row is tested.
    pub test: Test,
    /// Message stored with a rejected row.
    pub message: String,
    /// The columns it reads (for the offending values).
    pub reads: Vec<String>,
}

/// How a check tests a row.
#[derive(Debug, Clone)]
pub enum Test {
    /// A Polars expression over the batch, true for a row that violates the check (facets).
    Frame(Expr),
    /// A rule, evaluated on each row with SQL's nulls and PostgreSQL's exact decimal arithmetic
    /// ([`crate::spec::expr::check`]); with a tolerance, `a = b` holds within it.
    Rule {
        /// The type-checked rule.
        expr: crate::spec::expr::Expr,
        /// How far apart the two sides of `a = b` may be.
        tolerance: Option<crate::spec::expr::Dec>,
    },
}

// A stage's DDL and load

/// A stage's target SQL, in the order it runs.
#[derive(Debug, Clone, Default)]
pub struct LoadSql {
    /// Creates the table when missing. PostgreSQL: the columns and an identity's primary key only
    /// (its values never repeat, so it cannot fail the COPY, and kept as the rows arrive it costs
    /// less than built after), so the first load is a bulk COPY into a bare table; DuckDB: with
    /// its key and unique constraints.
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
    /// PostgreSQL: empties what a single pass (`ExtractSql::single`) copied, when the file must be
    /// read again in two passes: in a table created by this transaction (its COPY FREEZE holds
    /// after a TRUNCATE of the same transaction; its constraints come after the load, so a
    /// repeated key does not fail the COPY) ...
    pub uncopy_created: String,
    /// ... and in the staging table. (An existing table is read in two passes: its constraints
    /// would fail the COPY at a repeated key.)
    pub uncopy_staged: String,
    /// DuckDB: counts the staged rows whose key the table holds (to tell inserts from updates).
    pub count_existing: Option<String>,
    /// Writes the staged rows into the table.
    pub merge: Vec<MergeStep>,
    /// A history load that staged only the file's changed lines: its merge (see
    /// `history_merge`).
    pub history_lines: Vec<MergeStep>,
    /// A history table this stage's transaction created: forgets the business dates recorded
    /// for a table of that name dropped before (its versions would end at them).
    pub forget_dates: Option<String>,
    /// Drops the staging table (DuckDB, after a dry run's stage).
    pub drop_staging: String,
}

/// How a table is spread over a Citus cluster (`spec::model::Distribution`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DistributionPlan {
    /// A copy on every node: `create_reference_table`.
    Reference,
    /// The rows spread over the workers by the hash of `column`: `create_distributed_table`,
    /// placed with the table `colocate_with` (quoted, in its schema) when one is named.
    Hash { column: String, colocate_with: Option<String>, shard_count: Option<u32> },
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
    /// A statement whose count is not reported (a history load's temporary tables).
    Run(String),
    /// A history load's counts: (keys given a version from the date, keys whose version on the
    /// date closes there).
    Versions(String),
}

impl MergeStep {
    /// The statement.
    pub fn sql(&self) -> &str {
        match self {
            MergeStep::Delete(s) | MergeStep::Insert(s) | MergeStep::Upsert(s) | MergeStep::Run(s) | MergeStep::Versions(s) => s,
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

// A PostgreSQL stage's other statements

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
    /// The definition part of its state alone (a catalog read, no scan): read before the table
    /// check may put back an index or foreign key, so a repaired table is never taken as the
    /// last load left it.
    pub definition: String,
    /// Its state after a load into an empty table, read without scanning the rows (`$1` rows,
    /// `$2` the transaction's id); none for a Citus table, whose state is scanned.
    pub fresh_state: Option<String>,
    /// Each table the stage's outcome depends on besides its own, once, in name order: those it
    /// references, those referencing it (`on_delete: soft`) and those a `sql` contract may read.
    /// What its state digest reads.
    pub referenced: Vec<Referenced>,
    /// The key set of each foreign key, exported for the extract to join.
    pub reference_lookups: Vec<ReferenceLookup>,
    /// The table's current rows, exported for the extract to join (an upsert with a key), when
    /// they fit the share of DuckDB's memory its comparison may take.
    pub current_lookup: Option<CurrentLookup>,
    /// The values each `unique` column holds in the table, with their keys (see [`Held`]).
    pub held_lookups: Vec<Lookup>,
    /// `delete_missing`: the file's keys copied in, and the table's other keys deleted or
    /// flagged.
    pub missing: Option<MissingSql>,
    /// A history table: the newest business date loaded into it (`YYYY-MM-DD`, null: none).
    pub newest_as_of: Option<String>,
    /// A history table: its state after the merge without a scan (see
    /// `postgres::moved_state_sql`).
    pub moved_state: Option<String>,
    /// An upsert's table: its state after the merge without a scan (see
    /// `postgres::upserted_state_sql`), when the merge is the upsert alone.
    pub upserted_state: Option<String>,
}

/// A history table's versions: the business date column the file's rows carry (not a column
/// of the table), the load's date, the columns bounding each version.
#[derive(Debug, Clone)]
pub struct HistoryPlan {
    /// The spec's `as_of` column (a constant: the load's date).
    pub as_of: String,
    /// The load's date, `YYYY-MM-DD`.
    pub date: String,
    /// The column of the date a version starts on.
    pub valid_from: String,
    /// The column of the date a version ends on (null: current).
    pub valid_to: String,
    /// Whether a key the file lacks has its version closed at the date.
    pub close: bool,
}

/// The statements of `delete_missing`, after the file's keys are staged and before the merge.
#[derive(Debug, Clone)]
pub struct MissingSql {
    /// Adds the soft delete's column to an existing table that lacks it.
    pub add_column: Option<String>,
    /// The temporary table of the file's keys.
    pub create_keys: String,
    /// COPYs the keys DuckDB wrote (CSV) into it.
    pub copy_keys: String,
    /// The table's (live) rows whose key the file lacks, and all its (live) rows.
    pub count: String,
    /// `on_delete: restrict`: per referencing table, its rows that reference a row about to be
    /// deleted (`count(*) OVER ()` and the row as JSON, up to five); any refuses the load before
    /// the merge.
    pub referenced_by: Vec<Guarded>,
    /// `on_delete: cascade`: deletes the rows of other tables that reference a row about to be
    /// deleted, the farthest first.
    pub cascade: Vec<Guarded>,
    /// `on_delete: soft`: the temporary table of the keys the file lacks whose rows another
    /// table references, filled by `hold` (one statement per referencing table).
    pub create_held: Option<String>,
    /// See `create_held`.
    pub hold: Vec<Guarded>,
    /// `on_delete: soft`: flags the held rows (`$1`: the run's business date); `apply` then
    /// deletes the other rows the file lacks.
    pub flag_referenced: Option<String>,
    /// Deletes those rows, or flags them (`$1`: the run's business date).
    pub apply: String,
    /// A soft delete's keys that returned: their flag cleared.
    pub restore: Option<String>,
    /// A history load that staged only the file's changed lines: the last file's keys no line
    /// of this file holds (see [`Vanished`]).
    pub vanished: Option<Vanished>,
}

/// The keys of the last file that no line of this one holds, for a history load of only the
/// changed lines: the versions it may close are theirs.
#[derive(Debug, Clone)]
pub struct Vanished {
    /// PostgreSQL's JIT off for the rest of the stage: its statements are lookups of a few keys
    /// by the table's index, which the planner costs as if they were many (above
    /// `jit_above_cost`), and compiling them would take longer than running them.
    pub jit_off: String,
    /// Their temporary table.
    pub create: String,
    /// COPYs them in (CSV, from the line index).
    pub copy: String,
    /// The versions current on the date whose key vanished and no changed line holds (those
    /// closed: see `MissingSql::count`).
    pub gone: String,
    /// All the versions current on the date (read only when some are closed: the share
    /// `max_delete_ratio` bounds).
    pub rows: String,
}

impl MissingSql {
    /// The keys copied in, counted and `apply`'d; nothing else (no soft delete's column, no
    /// referencing table to look at).
    pub fn new(create_keys: String, copy_keys: String, count: String, apply: String) -> MissingSql {
        MissingSql {
            add_column: None,
            create_keys,
            copy_keys,
            count,
            referenced_by: Vec::new(),
            cascade: Vec::new(),
            create_held: None,
            hold: Vec::new(),
            flag_referenced: None,
            apply,
            restore: None,
            vanished: None,
        }
    }
}

/// A statement that names tables other stages make, sent only when they all exist (a table
/// not made yet holds no row to reference anything).
#[derive(Debug, Clone)]
pub struct Guarded {
    /// The table it reads or writes (quoted, qualified).
    pub table: String,
    /// Yields a text when every table the statement names exists.
    pub exists: Query,
    /// The statement.
    pub sql: String,
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

/// A PostgreSQL table's current rows, exported for the extract to compare the file's rows with
/// (`extract::UNCHANGED`), when they fit the share of DuckDB's memory that comparison may take
/// (`extract::compared_in_duckdb`); otherwise PostgreSQL's merge compares them.
#[derive(Debug, Clone)]
pub struct CurrentLookup {
    /// The table's size on disk in bytes (its TOAST included), asked first: a table larger than
    /// the share is not exported at all.
    pub size: Query,
    /// The rows' export, relation and fill (the export's own size decides last).
    pub lookup: Lookup,
}

// A DuckDB stage's other statements

/// A DuckDB stage's statements besides its extract, DDL and load.
#[derive(Debug, Clone, Default)]
pub struct DuckStatements {
    /// The table's columns as the catalog has them (none: the table is missing).
    pub read_columns: Query,
    /// Empties the table (`etl clean`).
    pub delete_all: String,
}

/// Column name → type, for a stage.
pub fn column_types(columns: &[ColumnPlan]) -> IndexMap<String, ColumnType> {
    columns.iter().map(|c| (c.name.clone(), c.ty)).collect()
}

/// The severity word.
pub fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warn => "warn",
    }
}
