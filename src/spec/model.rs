//! The spec's serde types: what a YAML spec may say, before any name is resolved.
//!
//! Doc comments here become the JSON schema's descriptions (and so the README's spec reference
//! and editors' hover text): write them for the person editing a spec.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use indexmap::IndexMap;
use rust_decimal::Decimal;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
}

/// A place to read CSV files from or to load rows into.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Connection {
    /// An S3 bucket, on AWS or any S3-compatible server (MinIO, Ceph, R2, ...).
    S3(S3Connection),
    /// A directory on the local file system.
    Local(LocalConnection),
    /// A PostgreSQL database.
    Postgres(PostgresConnection),
    /// An embedded DuckDB database file: a target that needs no server.
    Duckdb(DuckdbConnection),
}

impl Connection {
    /// The word used for this kind in specs and messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Connection::S3(_) => "s3",
            Connection::Local(_) => "local",
            Connection::Postgres(_) => "postgres",
            Connection::Duckdb(_) => "duckdb",
        }
    }
}

/// An S3 bucket. Credentials not given here come from the environment or the standard AWS chain.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Connection {
    /// Endpoint URL of an S3-compatible server, e.g. `http://127.0.0.1:19000`; a bare
    /// `host:port` means http. Omit for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Bucket name.
    pub bucket: String,
    /// Region; defaults to the AWS chain's region, else `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket` rather than `bucket.endpoint`. Defaults to true
    /// when `endpoint` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// A prefix put before every stage's `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Access key id; omit to use the environment or the AWS chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret access key; never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    /// Session token for temporary credentials; never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<Secret>,
    /// When to compute and validate request and response checksums. Defaults to
    /// `when_required` for a custom endpoint (many S3-compatible servers reject the AWS SDK's
    /// default checksums) and `when_supported` for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums: Option<ChecksumMode>,
}

/// When S3 checksums are computed and validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    /// Only for operations that require one.
    WhenRequired,
    /// For every operation that supports one (the AWS SDK's default).
    WhenSupported,
}

/// A local directory holding the CSV files.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalConnection {
    /// Directory; a relative path is taken from the spec file's directory.
    pub path: String,
}

/// A PostgreSQL database, given as a URL or as parts (parts override the URL's).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresConnection {
    /// `postgres://user:password@host:port/database`; never printed with its password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    /// Host name or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Database name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password; never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Schema holding the target tables. Defaults to `public`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// libpq sslmode: disable, prefer, require, verify-ca or verify-full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<String>,
}

/// An embedded DuckDB database file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DuckdbConnection {
    /// Database file, created when missing; a relative path is taken from the spec file's
    /// directory.
    pub path: String,
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
    /// Field values read as NULL. Default `[""]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_values: Option<Vec<String>>,
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
    /// Where the CSV file is.
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
}

/// Where a stage's CSV file is.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// A connection of type `s3` or `local`.
    pub connection: String,
    /// Object key (s3) or file path (local), relative to the connection's prefix or directory.
    pub key: String,
    /// CSV dialect; overrides `defaults.csv` key by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvOptions>,
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
}

/// How a stage writes its rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    /// Insert new keys, update changed rows, leave unchanged rows alone. Needs `key`.
    #[default]
    Upsert,
    /// Insert every row.
    Append,
    /// Delete the table's rows, then insert, in one transaction.
    Replace,
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
    /// Smallest allowed value, inclusive (numeric columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Number>,
    /// Largest allowed value, inclusive (numeric columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Number>,
    /// Values must be greater than this (numeric columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive_min: Option<Number>,
    /// Values must be less than this (numeric columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive_max: Option<Number>,
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

/// A value in an enum set or a `one_of` list: an integer or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Literal {
    /// An integer value.
    Int(i64),
    /// A text value.
    Text(String),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
        }
    }
}

/// An exact decimal number, written in YAML as a number or a string (`"0.01"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Number(pub Decimal);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let text = match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s,
            other => return Err(D::Error::custom(format!("expected a number, found {other}"))),
        };
        parse_decimal(&text)
            .map(Number)
            .ok_or_else(|| D::Error::custom(format!("`{text}` is not a decimal number")))
    }
}

/// Parses a decimal from plain or scientific notation, exactly.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let t = text.trim();
    Decimal::from_str_exact(t)
        .ok()
        .or_else(|| Decimal::from_scientific(t).ok())
}

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl JsonSchema for Number {
    fn schema_name() -> Cow<'static, str> {
        "Number".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A decimal number; quote it (\"123456789012345678.91\") to keep more digits than a double holds.",
            "type": ["number", "string"],
            "pattern": "^\\s*[-+]?(\\d+\\.?\\d*|\\.\\d+)([eE][-+]?\\d+)?\\s*$"
        })
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.normalize().fmt(f)
    }
}

/// A secret string (password, key): its Debug and Display never show it.
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"******\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("******")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("******")
    }
}

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// Text, kept exactly as written.
    String,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// Exact decimal with `precision` digits, `scale` of them after the point.
    Decimal {
        /// Total digits, 1 to 38.
        precision: u8,
        /// Digits after the point, 0 to precision.
        scale: u8,
    },
    /// Double-precision float (not for money).
    Float64,
    /// true/false.
    Bool,
    /// Calendar date.
    Date,
    /// Date and time without zone.
    Timestamp,
}

impl ColumnType {
    /// Whether ordering and arithmetic apply.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ColumnType::Int32 | ColumnType::Int64 | ColumnType::Decimal { .. } | ColumnType::Float64
        )
    }
    /// Whether the type is an integer.
    pub fn is_integer(self) -> bool {
        matches!(self, ColumnType::Int32 | ColumnType::Int64)
    }
    /// Whether the type is a date or timestamp.
    pub fn is_temporal(self) -> bool {
        matches!(self, ColumnType::Date | ColumnType::Timestamp)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::String => f.write_str("string"),
            ColumnType::Int32 => f.write_str("int32"),
            ColumnType::Int64 => f.write_str("int64"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::Float64 => f.write_str("float64"),
            ColumnType::Bool => f.write_str("bool"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
        }
    }
}

/// The regular expression the schema gives for a column type.
pub const COLUMN_TYPE_PATTERN: &str =
    r"^(string|int32|int64|float64|bool|date|timestamp|decimal\(\s*[0-9]+\s*,\s*[0-9]+\s*\))$";

impl FromStr for ColumnType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        Ok(match t {
            "string" => ColumnType::String,
            "int32" => ColumnType::Int32,
            "int64" => ColumnType::Int64,
            "float64" => ColumnType::Float64,
            "bool" => ColumnType::Bool,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            _ => {
                let inner = t
                    .strip_prefix("decimal(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("unknown type `{t}`"))?;
                let (p, s) = inner
                    .split_once(',')
                    .ok_or_else(|| format!("`{t}` needs a precision and a scale: decimal(20,2)"))?;
                let precision: u8 = p.trim().parse().map_err(|_| format!("bad precision in `{t}`"))?;
                let scale: u8 = s.trim().parse().map_err(|_| format!("bad scale in `{t}`"))?;
                if !(1..=38).contains(&precision) {
                    return Err(format!("precision of `{t}` must be 1 to 38"));
                }
                if scale > precision {
                    return Err(format!("scale of `{t}` must not exceed its precision {precision}"));
                }
                ColumnType::Decimal { precision, scale }
            }
        })
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for ColumnType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl JsonSchema for ColumnType {
    fn schema_name() -> Cow<'static, str> {
        "ColumnType".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`string`, `int32`, `int64`, `decimal(P,S)`, `float64`, `bool`, `date` or `timestamp`.",
            "type": "string",
            "pattern": COLUMN_TYPE_PATTERN
        })
    }
}
