//! The command line: clap definitions only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Declarative batch ETL: CSV from S3 or local files, validated row by row, loaded into
/// PostgreSQL (or an embedded DuckDB file), driven by a YAML spec.
#[derive(Debug, Parser)]
#[command(name = "etl", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
    /// When to colour diagnostics.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check specs against the schema and the semantic rules; report every problem with its
    /// line and column. Exit 0 when all are valid, 2 otherwise. Needs no network.
    ValidateSpec {
        /// Spec files.
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<PathBuf>,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Print what a run would do: per stage the DuckDB SQL that reads and casts the CSV, the
    /// Polars row checks, and the target DDL and load SQL. Offline.
    Plan {
        /// Spec file [default: $ETL_SPEC, then specs/small_etl.yaml].
        #[arg(value_name = "SPEC")]
        spec_path: Option<PathBuf>,
        /// Only this stage.
        #[arg(long, value_name = "STAGE")]
        stage: Option<String>,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Print the JSON schema of a spec (draft 2020-12).
    Schema {
        /// Print the spec reference in Markdown instead.
        #[arg(long)]
        markdown: bool,
    },
}

/// How to read a spec.
#[derive(Debug, Clone, Default, Args)]
pub struct SpecArgs {
    /// Environment overlay: merge configs/ENV.yaml over the spec (e.g. dev, test).
    #[arg(short = 'e', long = "env", value_name = "ENV")]
    pub env: Option<String>,
    /// Directory holding the ENV.yaml overlays [default: configs/ beside the spec's directory].
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Override any spec value, e.g. --set defaults.batch_size=5000 (the value is read as YAML).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
}
