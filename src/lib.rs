//! etl: a declarative, YAML-spec batch ETL engine. The spec layer (`spec`) and the compiler
//! (`plan`) are pure and always built; the executor (`exec`), the scheduler and the command line
//! (`app`) come with the `engine` feature (on by default), so the pure layers can be built and
//! fuzzed without DuckDB, PostgreSQL or S3.

pub mod plan;
pub mod spec;

#[cfg(feature = "engine")]
mod app;
#[cfg(feature = "engine")]
pub mod cli;
#[cfg(feature = "engine")]
pub mod exec;
#[cfg(feature = "engine")]
pub mod schedule;

#[cfg(feature = "engine")]
pub use app::{default_spec_path, run};

/// Exit codes: a contract, tested.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A general error.
    pub const ERROR: u8 = 1;
    /// Bad arguments or an invalid spec.
    pub const USAGE: u8 = 2;
    /// Cannot connect to S3 or the database.
    pub const CONNECT: u8 = 3;
    /// The run finished but rows were rejected.
    pub const REJECTED: u8 = 4;
}
