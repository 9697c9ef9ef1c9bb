//! Scheduled runs: jobs kept in PostgreSQL (`store`), their triggers (`trigger`), and
//! `etl schedule start`, which fires them (`runner`). Each firing re-reads its spec and runs it
//! exactly as `etl run` would. The `etl schedule` command itself is `cli::schedule`.

pub mod runner;
pub mod store;
pub mod trigger;

pub use runner::{JobError, JobOutcome, RunJob, StartOptions, start};
pub use store::{JobDef, JobRow, list, remove, set_enabled, upsert};
pub use trigger::{next_run, spec_jobs, trigger};
