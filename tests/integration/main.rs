//! The one integration-test binary: every test file is a module here, so the stack links once.

mod backfill;
mod bad_input;
mod compression;
mod computed;
mod contracts;
mod dates;
mod etags;
mod extract;
mod faults;
mod files;
mod fuzzed;
mod history;
mod init;
mod metrics;
mod notify;
mod outcomes;
mod rejects;
mod rules;
mod run;
mod schedule;
mod secrets;
mod services;
mod spec_cli;
mod statements;
mod unchanged;
mod util;
