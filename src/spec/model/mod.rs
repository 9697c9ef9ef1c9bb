//! The spec's serde types: what a YAML spec may say, before any name is resolved.
//!
//! Doc comments here become the JSON schema's descriptions (and so the README's spec reference
//! and editors' hover text): write them for the person editing a spec.

use std::borrow::Cow;

use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod connection;
mod value;

pub use connection::{ChecksumMode, Connection, DEFAULT_CONNECT_TIMEOUT, DuckdbConnection, LocalConnection, PostgresConnection, S3Connection};
pub use value::{Bound, COLUMN_TYPE_PATTERN, ColumnType, Constant, Literal, Number, Secret, decimal_places, parse_decimal};

/// An etl spec: where CSV files come from, how each column is typed and checked, where valid rows
/// are loaded, what to report afterwards and when to run.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Version of the spec language. Only `1` exists.
    pub version: u32,
    /// Name of this spec, recorded with every run (letters, digits, `_` and `-`).
    pub name: String,
    /// Free text shown by `etl plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// IANA time zone of the business date: `run.date` defaults to today here. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Spec-level variables, available to templates as `vars.NAME`. `--env` overlays usually
    /// change these.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub vars: IndexMap<String, serde_json::Value>,
    /// Named connections: sources (`s3`, `local`) and targets (`postgres`, `duckdb`).
    pub connections: IndexMap<String, Connection>,
    /// Named sets of allowed values, e.g. `account_type: { FUTURE: 1, SECURITY: 2 }`; a column
    /// refers to one with `enum: account_type`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub enums: IndexMap<String, IndexMap<String, Literal>>,
    /// Settings every stage inherits unless it sets its own.
    #[serde(default)]
    pub defaults: Defaults,
    /// The stages, each one CSV source loaded into one table. They run in dependency order
    /// (`needs`), otherwise in the order written.
    pub stages: IndexMap<String, Stage>,
    /// Named SQL queries run against the target after loading; results are printed and included
    /// in the JSON report.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub analytics: IndexMap<String, Analytic>,
    /// Named schedules, registered by `etl schedule start`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub schedules: IndexMap<String, Schedule>,
    /// Webhooks told when a run ends (a schedule's own `notify` replaces these for its firings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
}

/// A webhook told when a run ends: a POST of the run's JSON report with a one-line `summary`
/// and a Slack-compatible `text`, after everything committed; tried again with doubling waits,
/// each attempt bounded by `timeout`. One that still fails is logged and recorded with the run
/// (`etl_runs.notify_error`); it never fails the run or changes its exit code.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// Where to POST (a secret: never shown), e.g. `"{{ env.SLACK_WEBHOOK }}"`.
    pub url: Secret,
    /// Which ends of a run it is told of. Default: every one but `succeeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<RunEnd>,
    /// How long one attempt may take (`10s`). Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Attempts after a failed one, the first after a second, each next wait doubled. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// How a run ended, as its record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// Every row loaded.
    Succeeded,
    /// Loaded, some rows rejected.
    Rejected,
    /// A stage over its error budget: nothing of it loaded.
    OverBudget,
    /// A stage's data refused whole.
    Refused,
    /// A stage's contract failed: it rolled back.
    ContractFailed,
    /// A file set had no file.
    Missing,
    /// A file set still had no file when its wait ended.
    Late,
    /// An error ended it (or an analytic failed after the loads).
    Failed,
}

impl RunEnd {
    /// The word a run's record holds.
    pub fn word(self) -> &'static str {
        match self {
            RunEnd::Succeeded => "succeeded",
            RunEnd::Rejected => "rejected",
            RunEnd::OverBudget => "over_budget",
            RunEnd::Refused => "refused",
            RunEnd::ContractFailed => "contract_failed",
            RunEnd::Missing => "missing",
            RunEnd::Late => "late",
            RunEnd::Failed => "failed",
        }
    }
}


/// Settings every stage inherits.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Rows per COPY batch. Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub batch_size: Option<u32>,
    /// Tolerance of rules that compare with `=`, e.g. `0.01`. Default 0 (exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Number>,
    /// CSV format of every source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvOptions>,
    /// Error budget: a stage with more rejected rows than this loads nothing. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rejects: Option<u64>,
    /// Error budget as a fraction of rows read (0 to 1). Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_reject_ratio: Option<f64>,
    /// How long a PostgreSQL stage waits for its locks (its table's, and those of the tables it
    /// references), in PostgreSQL's units (`30s`, `5min`, `500ms`): past it the run fails with
    /// exit 3, naming the sessions that hold them. Default: as long as it takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_timeout: Option<String>,
    /// The longest any one statement of a PostgreSQL stage may run (`15min`): past it the stage
    /// rolls back and the run fails. Default: the connection's `statement_timeout`, else none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout: Option<String>,
    /// The largest rejected record (its fields as read, as JSON) kept with its rejects, in bytes;
    /// a larger one is not kept. 0 keeps none. Default 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_record_bytes: Option<u32>,
}

/// The CSV dialect of a source.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Field delimiter, one character. Default `,`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// Quote character, one character. Default `"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
    /// Escape character inside quotes, one character. Default `"` (a doubled quote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escape: Option<String>,
    /// Whether the first line is a header. Default true; without one, columns are matched by
    /// position in the order written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<bool>,
    /// Text encoding. Default utf-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// Field values read as NULL, quoted or not: with the default `[""]`, an empty field and a
    /// quoted empty one (`""`) are both NULL, as the seed's pandas read them (PostgreSQL's CSV
    /// COPY reads `""` as an empty text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_values: Option<Vec<String>>,
    /// How the file is compressed. Default `auto`: by the key's extension (`.gz` gzip, `.zst`
    /// zstd, else none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
}

/// A source file's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// By the key's extension: `.gz`/`.gzip` gzip, `.zst`/`.zstd` zstd, else none.
    Auto,
    /// Plain text.
    None,
    /// gzip (one or more members).
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The compression of a file named `key`: this one, or for `auto` the key's extension's.
    pub fn of(self, key: &str) -> Compression {
        if self != Compression::Auto {
            return self;
        }
        let lower = key.to_ascii_lowercase();
        if lower.ends_with(".gz") || lower.ends_with(".gzip") {
            Compression::Gzip
        } else if lower.ends_with(".zst") || lower.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The name DuckDB's CSV reader takes.
    pub fn duckdb_name(self) -> &'static str {
        match self {
            Compression::Auto => "auto",
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// A CSV text encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Encoding {
    /// UTF-8, with or without a byte-order mark.
    #[serde(rename = "utf-8", alias = "utf8", alias = "UTF-8")]
    Utf8,
    /// UTF-16 (little endian with a byte-order mark).
    #[serde(rename = "utf-16", alias = "UTF-16")]
    Utf16,
    /// ISO-8859-1.
    #[serde(rename = "latin-1", alias = "latin1", alias = "ISO-8859-1")]
    Latin1,
}

impl Encoding {
    /// The name DuckDB's CSV reader takes.
    pub fn duckdb_name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Utf16 => "utf-16",
            Encoding::Latin1 => "latin-1",
        }
    }
}

/// One CSV source loaded into one table.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Free text shown by `etl plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Stages that must load before this one (e.g. the table this one references).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Where the CSV file (or set of files) is.
    pub source: Source,
    /// Where valid rows go.
    pub target: Target,
    /// The columns, in order. A CSV column not listed here is ignored.
    pub columns: IndexMap<String, Column>,
    /// Row rules: named boolean expressions over the row's columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Rows per COPY batch; overrides `defaults.batch_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub batch_size: Option<u32>,
    /// Error budget for this stage; overrides `defaults.max_rejects`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rejects: Option<u64>,
    /// Error budget as a fraction of rows read; overrides `defaults.max_reject_ratio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_reject_ratio: Option<f64>,
    /// Overrides `defaults.lock_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_timeout: Option<String>,
    /// Overrides `defaults.statement_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout: Option<String>,
    /// Contracts on the load as a whole, checked inside the stage's transaction after its rows are
    /// merged and before it commits: a failed `error` check rolls the stage back (exit 5, the
    /// table as it was), a failed `warn` one is reported. Each result is kept in `etl_checks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<StageCheck>,
}

/// A contract on a stage's load: exactly one of `row_count`, `totals`, `freshness`, `sql`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageCheck {
    /// Check name, reported with its result.
    pub name: String,
    /// `error` (default): a failure rolls the stage back, exit 5; `warn`: the stage loads and the
    /// failure is reported.
    #[serde(default)]
    pub severity: Severity,
    /// The number of rows the load read (its file or set's data rows, rejected ones included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<RowCount>,
    /// A column's sum (or count) over the load's valid rows against a control value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<Totals>,
    /// The newest value of a date or timestamp column in the table, against the run's business
    /// date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
    /// A query on the target returning the offending rows: none passes. `{{ table }}` stands for
    /// the stage's table (quoted, in its schema); the first 20 rows are reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
}

/// Bounds on the rows a load read.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RowCount {
    /// At least this many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    /// At most this many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// Against the rows the stage's last successful load for an earlier business date read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_from_last: Option<ChangeFromLast>,
}

/// How far a load's row count may move from the last one's.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeFromLast {
    /// The largest change as a share of the last count: 0.5 allows from half to one and a half
    /// times as many rows.
    #[schemars(range(min = 0.0))]
    pub max_ratio: f64,
}

/// A control total.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// The column summed or counted (its non-null values).
    pub column: String,
    /// `sum` (default; an integer or decimal column, exact) or `count`.
    #[serde(default)]
    pub of: TotalOf,
    /// The control value: a number, or a template giving one (e.g. `"{{ vars.control }}"`).
    /// Give one of `equals`, `manifest` and `trailer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Number>,
    /// The control value read from a JSON file beside the data (the sender's manifest), on the
    /// stage's source connection, when the run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    /// The control value in the sender's trailer line (`source.trailer`): its field at this
    /// position (1 is the first), split by the stage's delimiter; a set's files' trailers add up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub trailer: Option<u32>,
    /// How far the total may be from it. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Number>,
}

/// A control value in a JSON manifest.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Its key (s3) or path (local) on the stage's source connection, e.g.
    /// `"trades/{{ run.date }}/_manifest.json"`.
    pub file: String,
    /// Where the value is: object keys (and array indexes) joined by dots, e.g. `trades.amount`.
    /// The value is a JSON number or a string holding one, taken digit for digit.
    pub path: String,
}

/// What a control total adds up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TotalOf {
    /// The column's values.
    #[default]
    Sum,
    /// Its non-null values.
    Count,
}

/// How recent a table's data must be.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Freshness {
    /// A date or timestamp column of the stage.
    pub column: String,
    /// How much older than the run's business date its newest value may be, e.g. `1d`, `36h`.
    pub max_age: String,
}

/// Where a stage's CSV file or files are.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// A connection of type `s3` or `local`.
    pub connection: String,
    /// One file: its object key (s3) or path (local), relative to the connection's prefix or
    /// directory. Give `key` or `files`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A set of files: a pattern over keys (s3, listed under the connection's prefix) or paths
    /// (local), after templating, e.g. `trades/{{ run.date }}/part-*.csv.gz`. `*` and `?` match
    /// within one path part, `**` across parts, `{a,b}` either; `{name}` captures one path part,
    /// which a column can take with `from_path: name`. The files load in name order, in the
    /// stage's one transaction; each is recorded in the file ledger (`etl_files`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<String>,
    /// With `files`: which files of the set a run loads. `new` (the default, except with
    /// `mode: replace`, where it is `all`): only those whose content this stage has not loaded yet (a new file, a late
    /// one, a restated one); `all`: the whole set, every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<Select>,
    /// With `files`: what a set with no file does. `fail` (default): the run fails, exit 3,
    /// naming the pattern and the date; `skip`: the stage loads nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_missing: Option<OnMissing>,
    /// With `files`: wait for a set that is not there yet, looking again every `poll` until
    /// `until`; then it is missing (`on_missing` says what follows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,
    /// With `files`: how the set's files commit. `stage` (the default): all in the stage's one
    /// transaction, so the table shows all of them or none. `file`: each file in a transaction of
    /// its own, with its ledger row: a file that fails (over the error budget, an error) is
    /// rolled back alone, the files before it stay loaded, the files after it still load, and a
    /// later run loads only the files not loaded yet. For an `append` or `upsert` target on
    /// PostgreSQL, without `delete_missing` or `checks` (those judge the whole set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atomicity: Option<Atomicity>,
    /// CSV dialect; overrides `defaults.csv` key by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvOptions>,
    /// The sender's trailer: a file's last line that starts with this text (e.g. `TRL`) is set
    /// aside, not read as a row; a `totals` check can take its control value from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trailer: Option<String>,
}

/// Which files of a set a run loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    /// Only files whose content the stage has not loaded (by key and SHA-256).
    New,
    /// Every file of the set.
    All,
}

/// How a file set's files commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Atomicity {
    /// All files in the stage's one transaction.
    #[default]
    Stage,
    /// Each file in a transaction of its own, with its ledger row.
    File,
}

/// What a file set with no file does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// The run fails (exit 3), naming the pattern and the business date.
    #[default]
    Fail,
    /// The stage loads nothing; the run goes on.
    Skip,
}

/// Waiting for a file set to arrive.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// The time of day (`HH:MM` or `HH:MM:SS`, in the spec's `timezone`) after which a set still
    /// empty is missing. A time already past on the day the run starts: missing at once.
    pub until: String,
    /// How long between looks, e.g. `30s`, `5m`. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<String>,
}

/// Where a stage's valid rows go and how.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// A connection of type `postgres` or `duckdb`.
    pub connection: String,
    /// Table name; created from the spec when missing.
    pub table: String,
    /// Columns identifying a row: unique in the table, and what `upsert` matches on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// How rows are written. Default `upsert`.
    #[serde(default)]
    pub mode: LoadMode,
    /// Name of a generated `BIGINT` identity primary key added to the table (the seed's `id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surrogate_key: Option<String>,
    /// With `mode: replace`, whether a file with no rows may empty the table (with `mode:
    /// snapshot`, its date). Default false: such a file is refused (exit 5) and the table keeps
    /// its rows.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_empty: bool,
    /// With `mode: upsert` of a complete file (every key the table should hold): what becomes
    /// of the table's keys the file lacks. `hard` deletes their rows; `soft` sets their
    /// `_deleted_at` column to the run's business date (and clears it when the key returns).
    /// A key on a rejected line counts as present: its row is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_missing: Option<DeleteMissing>,
    /// With `delete_missing`: the largest share of the table's rows one load may delete (or
    /// flag), default 0.5. A load that would take more is refused (exit 5) and changes
    /// nothing: a truncated file never empties a table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_delete_ratio: Option<f64>,
    /// With `delete_missing: hard` or a keyed `mode: replace`: what a deleted key does to the rows
    /// of other stages' tables that reference it. `restrict` (default) refuses the load (exit 5)
    /// naming those rows; `cascade` deletes them too, in the same transaction; `soft` keeps a
    /// referenced row and sets its `_deleted_at` to the run's business date instead (deleted by a
    /// later load once nothing references it, cleared if its key returns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_delete: Option<OnDelete>,
    /// With `mode: history`: the name of the column holding the date a version starts on.
    /// Default `valid_from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// With `mode: history`: the name of the column holding the date a version ends on (null for
    /// the current version). Default `valid_to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<String>,
    /// With `mode: snapshot` or `history`: the date column naming each row's business date (usually a
    /// `value: "{{ run.date }}"` or a `from_path` capture). The key is unique per date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// On a Citus cluster (a `postgres` connection to its coordinator), how the table is spread
    /// over the nodes: `reference` keeps a copy on every node (small tables others reference);
    /// `{ column: C }` spreads the rows over the workers' shards by the hash of column C (which
    /// the key and every unique column must include), optionally placed with another stage's
    /// table (`colocate_with`) and in `shard_count` shards. Default: a table of the coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
}

/// How a table is spread over a Citus cluster's nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distribution {
    /// A copy of the table on every node (`create_reference_table`).
    Reference,
    /// The rows spread over the workers' shards by the hash of one column
    /// (`create_distributed_table`).
    Hash(HashDistribution),
}

/// A table distributed by the hash of one column.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HashDistribution {
    /// The column whose hash picks each row's shard. The key and every unique column must
    /// include it.
    pub column: String,
    /// Another distributed stage whose table's shards this one's are placed with (its
    /// distribution column has the same type): rows with the same value are on the same node, so
    /// a foreign key between them on that column, and joins on it, stay within a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colocate_with: Option<String>,
    /// How many shards the table is split into. Default: the cluster's `citus.shard_count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64000))]
    pub shard_count: Option<u32>,
}

impl<'de> Deserialize<'de> for Distribution {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Hash(HashDistribution),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "reference" => Ok(Distribution::Reference),
            Raw::Word(w) => Err(D::Error::custom(format!("`{w}` is not a distribution: write `reference` or `{{ column: NAME }}`"))),
            Raw::Hash(h) => Ok(Distribution::Hash(h)),
        }
    }
}

impl Serialize for Distribution {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Distribution::Reference => s.serialize_str("reference"),
            Distribution::Hash(h) => h.serialize(s),
        }
    }
}

impl JsonSchema for Distribution {
    fn schema_name() -> Cow<'static, str> {
        "Distribution".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let hash = generator.subschema_for::<HashDistribution>();
        json_schema!({
            "description": "`reference` (a copy on every node), or `{ column: NAME }` (rows spread over the workers by that column's hash).",
            "oneOf": [{ "const": "reference", "description": "A copy of the table on every node (`create_reference_table`): for small tables that distributed ones reference." }, hash]
        })
    }
}

/// What an upsert of a complete file does with the table's keys the file lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeleteMissing {
    /// Delete their rows.
    Hard,
    /// Set their `_deleted_at` to the run's business date; cleared when the key returns.
    Soft,
    /// With `mode: history`: close their current version at the load's date.
    Close,
}

/// What deleting a key does to the rows of other tables that reference it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnDelete {
    /// Refuse the load (exit 5), naming the referencing rows; nothing changes.
    #[default]
    Restrict,
    /// Delete the referencing rows too (and theirs, in turn), in the stage's transaction.
    Cascade,
    /// Keep a referenced row, its `_deleted_at` set to the run's business date.
    Soft,
}

/// The default `max_delete_ratio`.
pub const DEFAULT_MAX_DELETE_RATIO: f64 = 0.5;

/// The column a soft delete sets.
pub const DELETED_AT: &str = "_deleted_at";

/// How a stage writes its rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    /// Insert new keys, update changed rows, leave unchanged rows alone. Needs `key`.
    #[default]
    Upsert,
    /// Insert every row.
    Append,
    /// Make the table hold exactly the file's rows, in one transaction: a PostgreSQL table with a
    /// key is upserted and its keys the file lacks deleted (rows other tables reference stay in
    /// place); another is emptied, then filled.
    Replace,
    /// Keep each business date's rows side by side (`as_of`): a load replaces exactly the rows
    /// of the dates it loads, in its transaction, and leaves every other date's untouched.
    Snapshot,
    /// Keep each key's versions over business dates (slowly changing dimension type 2): a key
    /// whose values change on the load's date `as_of` gets a version from that date, the
    /// previous one closed there; an unchanged key keeps its version. A past date loaded again
    /// (restated or late) rewrites the versions up to the next date loaded, so the table is what
    /// loading every date in order gives. A view `<table>_current` holds the current versions.
    History,
}

/// One column: its type in the CSV and the table, and the checks on its values.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// `string`, `int32`, `int64`, `decimal(P,S)`, `float64`, `bool`, `date` or `timestamp`.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// The CSV header this column is read from, when it differs from the column's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Take the value from a capture of the stage's `files:` pattern (`{date}` in
    /// `trades/{date}/*.csv`) instead of a CSV column: every row of a file gets that file's
    /// value, typed and checked like any column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_path: Option<String>,
    /// A constant instead of a CSV column: every row gets this value (a template such as
    /// `"{{ run.date }}"` is rendered once for the run), typed and checked like any column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Constant>,
    /// Compute the value instead of reading it: an expression in the rule language over the
    /// row's other columns (not other computed ones), e.g. `date(traded_at)`, `upper(trim(code))`,
    /// `case when qty < 0 then 'sell' else 'buy' end`, `cash + fee`. Exact: decimals never pass
    /// through a float, and division is not offered. Typed and checked like any column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
    /// Whether the value may be missing (empty or a null value). Default false.
    #[serde(default)]
    pub nullable: bool,
    /// Free text shown by `etl plan` and put in the table's column comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Longest allowed text, in characters (string columns). Also the column's VARCHAR length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Shortest allowed text, in characters (string columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u32>,
    /// Smallest allowed value, inclusive (numeric, date and timestamp columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Bound>,
    /// Largest allowed value, inclusive (numeric, date and timestamp columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Bound>,
    /// Values must be greater than this (numeric, date and timestamp columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive_min: Option<Bound>,
    /// Values must be less than this (numeric, date and timestamp columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive_max: Option<Bound>,
    /// Values must be a whole multiple of this, e.g. `100` for lots of 100 (numeric columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple_of: Option<Number>,
    /// Name of an entry of `enums`: the value must be one of its values.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub enum_name: Option<String>,
    /// The value must be one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Literal>>,
    /// A regular expression the whole text must match (string columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Parse format of a date or timestamp, strftime style, e.g. `%Y-%m-%dT%H:%M:%S%.f`
    /// (`%.f`: optional fractional seconds). Default: ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Values must be unique within the file and the table (a unique constraint).
    #[serde(default)]
    pub unique: bool,
    /// Create an index on this column.
    #[serde(default)]
    pub index: bool,
    /// `stage.column` this column's values must exist in (a foreign key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<String>,
}

/// A named boolean expression every row must satisfy.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Rule name, reported with every row it rejects.
    pub name: String,
    /// Expression over the row's columns, e.g. `total_asset = cash + frozen_cash + market_value`.
    /// Operators: `+ - * /`, `= != < <= > >=`, `and or not`, `is null`, `is not null`,
    /// functions `abs`, `coalesce`, `length`; string literals in single quotes.
    pub check: String,
    /// Two sides of `=` may differ by up to this much; overrides `defaults.tolerance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Number>,
    /// `error` rejects the row (default); `warn` only counts it.
    #[serde(default)]
    pub severity: Severity,
    /// Message stored with each rejected row instead of the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a failing rule does to its row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Reject the row.
    #[default]
    Error,
    /// Load the row, count a warning.
    Warn,
}

/// A named query run against a target after loading.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Analytic {
    /// The SQL, in the target's dialect.
    pub sql: String,
    /// Target connection to run it on; needed only when stages load into more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Free text printed above the results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Conditions every result row must meet, in the target's SQL over the query's columns (e.g.
    /// `total_records > 0`). A row that fails one (or where it is null) fails the analytic: the
    /// run exits 1 with the offending rows shown; the loads before it stand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<String>,
}

/// When to run stages: a cron expression, or every day/hour/minute.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Cron expression: `min hour day month weekday`, or with a leading seconds field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Run every `day`, `hour` or `minute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Every>,
    /// With `every: day`, the time of day, `HH:MM`. Default `00:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// `all`, or a list of stage names. Default `all`.
    #[serde(default)]
    pub stages: StageSelection,
    /// IANA time zone the trigger is read in. Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Whether the schedule fires. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Firings missed while no scheduler ran (counted from the job's last firing, or from when
    /// its trigger was set or it was resumed), made up when a scheduler starts, each with its own
    /// business date: `skip` (default) makes up none, `latest` the last one, `all` each of them,
    /// oldest first, up to `max_catchup`.
    #[serde(default)]
    pub catchup: Catchup,
    /// With `catchup: all`: at most this many missed firings are made up, the latest ones.
    /// Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_catchup: Option<u32>,
    /// A firing that ends with exit 3 (S3 or the database could not be reached, or a file set
    /// had no file) is tried again up to this many times. Default 0.
    #[serde(default)]
    pub retries: u32,
    /// How long to wait before the first retry (`30s`, `5m`); each next wait doubles, up to an
    /// hour. Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<String>,
    /// Webhooks told when one of its firings' runs ends, instead of the spec's `notify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<Notify>>,
    /// Who loads the files of its stages that commit file by file (`atomicity: file`): `local`
    /// (default) the firing's run alone; `distribute` that run and any `etl worker`s, as
    /// `etl run --distribute` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<Workers>,
}

/// Who loads a distributed stage's files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Workers {
    /// The run alone.
    #[default]
    Local,
    /// The run and any `etl worker`s, through the work queue.
    Distribute,
}

/// Which firings missed while no scheduler ran are made up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Catchup {
    /// None: the next firing is the next tick.
    #[default]
    Skip,
    /// The most recent missed firing only.
    Latest,
    /// Every missed firing, oldest first (at most `max_catchup`, the latest ones).
    All,
}

impl Catchup {
    /// The word for it, as the job store keeps it.
    pub fn as_str(self) -> &'static str {
        match self {
            Catchup::Skip => "skip",
            Catchup::Latest => "latest",
            Catchup::All => "all",
        }
    }
}

fn yes() -> bool {
    true
}

/// A schedule's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Every {
    /// Once a day (at `at`).
    Day,
    /// At the start of every hour.
    Hour,
    /// At the start of every minute.
    Minute,
}

/// `all` stages or a list of names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StageSelection {
    /// Every stage of the spec.
    #[default]
    All,
    /// These stages (and nothing else; their `needs` must already be loaded).
    Only(Vec<String>),
}

impl<'de> Deserialize<'de> for StageSelection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "all" => Ok(StageSelection::All),
            Raw::Word(w) => Ok(StageSelection::Only(vec![w])),
            Raw::List(l) => Ok(StageSelection::Only(l)),
        }
    }
}

impl Serialize for StageSelection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StageSelection::All => s.serialize_str("all"),
            StageSelection::Only(l) => l.serialize(s),
        }
    }
}

impl JsonSchema for StageSelection {
    fn schema_name() -> Cow<'static, str> {
        "StageSelection".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`all`, or a list of stage names.",
            "anyOf": [
                { "const": "all" },
                { "type": "array", "items": { "type": "string" } }
            ]
        })
    }
}

