//! The spec's connections: where CSV files are read from (an S3 bucket, a local directory) and
//! where rows are loaded (a PostgreSQL database, an embedded DuckDB file).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Secret;

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
    /// Seconds to wait for the server to answer a new connection before giving up (exit 3).
    /// Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub connect_timeout: Option<u32>,
    /// PostgreSQL's `statement_timeout` for the run's sessions, in its own units (`90s`,
    /// `30min`, `0` for none). Default: the server's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout: Option<String>,
}

/// Seconds a connection waits for the server when the spec does not say.
pub const DEFAULT_CONNECT_TIMEOUT: u32 = 10;

/// An embedded DuckDB database file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DuckdbConnection {
    /// Database file, created when missing; a relative path is taken from the spec file's
    /// directory.
    pub path: String,
}
