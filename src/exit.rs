//! Exit codes: a contract, tested. Every layer that decides one uses these.

/// Success.
pub const OK: u8 = 0;
/// A general error.
pub const ERROR: u8 = 1;
/// Bad arguments or an invalid spec.
pub const USAGE: u8 = 2;
/// Cannot connect to S3 or the database (or lost the connection mid-run).
pub const CONNECT: u8 = 3;
/// The run loaded its rows but rejected some (each recorded with its reason).
pub const REJECTED: u8 = 4;
/// The data was refused and nothing of the stage loaded: over its error budget, or refused
/// whole (an empty file for a `replace` target).
pub const REFUSED: u8 = 5;
