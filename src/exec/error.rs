//! Why a run failed: one error type for the executor, every variant with a help line that says
//! what to do, and the exit code each one means.

use std::path::Path;

use crate::exit;

/// Why a run failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum ExecError {
    /// A source could not be fetched.
    #[error("cannot read {source_name}: {message}")]
    #[diagnostic(
        code(run::source),
        help("check that the object or file exists where the stage's `source` points (`--source STAGE=KEY` reads another) and that the credentials may read it")
    )]
    Source {
        /// The object or file.
        source_name: String,
        /// Why.
        message: String,
    },
    /// A stage's set of files is empty (and `on_missing` is `fail`).
    #[error("stage {stage}: no file matches {pattern} for {date}{waited}")]
    #[diagnostic(
        code(run::missing),
        help("check the pattern (after templating) and the business date (`--date`); `on_missing: skip` lets the run go on without the files, `wait: {{ until: \"HH:MM\" }}` waits for them")
    )]
    Missing {
        /// The stage.
        stage: String,
        /// Its pattern, templated.
        pattern: String,
        /// The run's business date.
        date: String,
        /// How long it looked, if it waited.
        waited: String,
        /// Whether it waited for the set (then the run is `late`, else `missing`).
        late: bool,
    },
    /// The CSV header lacks columns the spec reads.
    #[error("{file} has no column {missing}; its header is: {found}")]
    #[diagnostic(code(run::header))]
    Header {
        /// The file.
        file: String,
        /// Missing headers.
        missing: String,
        /// The header found.
        found: String,
        /// What to do: the delimiter the header seems to use, the near-misses to map with
        /// `from:`, or renaming.
        #[help]
        help: String,
    },
    /// DuckDB could not read a CSV file.
    #[error("cannot read CSV {file}: {message}")]
    #[diagnostic(
        code(run::csv),
        help("fix the file, or make the stage's `source.csv` (delimiter, quote, escape, encoding, header) describe it")
    )]
    Csv {
        /// The file.
        file: String,
        /// DuckDB's message.
        message: String,
    },
    /// A DuckDB operation failed.
    #[error("DuckDB failed to {what}: {}", shortened(.message))]
    #[diagnostic(
        code(run::duckdb),
        help("if DuckDB ran out of memory or disk, raise ETL_DUCKDB_MEMORY or free space in the temporary directory; otherwise report it with the output of `etl plan`")
    )]
    Duckdb {
        /// What was attempted.
        what: &'static str,
        /// DuckDB's message.
        message: String,
    },
    /// A Polars operation failed.
    #[error("Polars failed to {what}: {message}")]
    #[diagnostic(code(run::polars), help("this is likely a bug in etl: report it with the output of `etl plan` and the rows of the batch, if you can"))]
    Polars {
        /// What was attempted.
        what: &'static str,
        /// Polars' message.
        message: String,
    },
    /// A server could not be reached or refused the login.
    #[error("cannot connect to {what}: {message}")]
    #[diagnostic(code(run::connect))]
    Connect {
        /// What.
        what: String,
        /// Why (never with a password).
        message: String,
        /// What to do about this cause.
        #[help]
        help: String,
    },
    /// A database statement failed.
    #[error("PostgreSQL failed to {what}: {message}")]
    #[diagnostic(
        code(run::database),
        help("`etl plan` shows every statement a run sends; check that the spec's user may create and write the target tables in their schema")
    )]
    Database {
        /// What was attempted.
        what: String,
        /// The server's message.
        message: String,
    },
    /// A lock wait ran past the stage's `lock_timeout`: another session holds the table.
    #[error("could not {what} within the stage's lock_timeout: {message}{holders}")]
    #[diagnostic(
        code(run::lock_timeout),
        help("another session holds the stage's table (or one it references): let it finish, or end it (`SELECT pg_terminate_backend(PID)`), or raise `lock_timeout`")
    )]
    LockTimeout {
        /// What was attempted.
        what: String,
        /// The server's message.
        message: String,
        /// Who holds the locks, as read when the wait ended (`; held by PID (...)`).
        holders: String,
    },
    /// The connection to the database broke mid-run (a restart, a network cut, a terminated
    /// session); the unfinished stage was rolled back with it.
    #[error("lost the connection to PostgreSQL while trying to {what}: {message}")]
    #[diagnostic(code(run::connection_lost), help("the server restarted or dropped the session; nothing of the unfinished stage was committed, so run again"))]
    ConnectionLost {
        /// What was attempted.
        what: String,
        /// The driver's message.
        message: String,
    },
    /// An existing target table does not match the spec; nothing was loaded.
    #[error("table {table} does not match the spec: {problems}")]
    #[diagnostic(code(run::table_mismatch), help("alter the table to match, or drop it and let etl create it"))]
    TableMismatch {
        /// The table.
        table: String,
        /// What differs.
        problems: String,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {message}")]
    #[diagnostic(code(run::write), help("check that the directory exists, that etl may write there, and that the disk has room"))]
    Write {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// Something this version cannot do yet.
    #[error("{0}")]
    #[diagnostic(code(run::unsupported), help("the README's spec reference lists what each kind of connection supports"))]
    Unsupported(String),
    /// A bug in etl.
    #[error("internal error (a bug in etl, please report it): {0}")]
    #[diagnostic(code(run::internal), help("report it with the command, its output and the output of `etl plan`"))]
    Internal(String),
}

/// DuckDB's message with each line cut to 400 characters: a CSV error quotes the whole line it
/// refused, which may be megabytes.
fn shortened(message: &str) -> String {
    const MOST: usize = 400;
    message
        .lines()
        .map(|l| match l.char_indices().nth(MOST) {
            Some((at, _)) => format!("{}… ({} bytes more)", &l[..at], l.len() - at),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl ExecError {
    pub(crate) fn duckdb(what: &'static str) -> impl Fn(duckdb::Error) -> ExecError {
        move |e| ExecError::Duckdb { what, message: e.to_string() }
    }

    pub(crate) fn polars(what: &'static str) -> impl Fn(polars::error::PolarsError) -> ExecError {
        move |e| ExecError::Polars { what, message: e.to_string() }
    }

    /// A PostgreSQL error: a broken connection (exit 3) or a failed statement.
    pub fn database(what: impl Into<String>, e: sqlx::Error) -> ExecError {
        let lost = match &e {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
            // SQLSTATE class 08 (connection exception) and 57P (the server shut down or
            // terminated the session).
            sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
            _ => false,
        };
        let (what, message) = (what.into(), server_message(&e));
        // SQLSTATE 55P03: a lock wait ran past lock_timeout.
        if let sqlx::Error::Database(d) = &e
            && d.code().as_deref() == Some("55P03")
        {
            return ExecError::LockTimeout { what, message, holders: String::new() };
        }
        if lost { ExecError::ConnectionLost { what, message } } else { ExecError::Database { what, message } }
    }

    /// A file DuckDB could not read, named as the user knows it (not its copy in the spool). A
    /// read that ran out of DuckDB's memory or of temporary disk is no fault of the file: it says
    /// so, with the setting to raise.
    pub(crate) fn csv(shown: &str) -> impl Fn(duckdb::Error) -> ExecError + '_ {
        move |e| {
            let message = first_line(&e.to_string());
            if message.starts_with("Out of Memory Error") || message.contains("No space left on device") {
                return ExecError::Duckdb { what: "read the file (past its memory limit it spills to the temporary directory)", message: format!("{shown}: {message}") };
            }
            ExecError::Csv { file: shown.to_string(), message }
        }
    }

    pub(crate) fn write(path: &Path) -> impl Fn(std::io::Error) -> ExecError + '_ {
        move |e| ExecError::Write { path: path.display().to_string(), message: e.to_string() }
    }

    /// The status a run (and a scheduled firing) that ended with this error is recorded with:
    /// `missing` or `late` for a file set with no file, else `failed`.
    pub fn run_status(&self) -> crate::exec::Status {
        match self {
            ExecError::Missing { late: true, .. } => crate::exec::Status::Late,
            ExecError::Missing { .. } => crate::exec::Status::Missing,
            _ => crate::exec::Status::Failed,
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExecError::Source { .. } | ExecError::Missing { .. } | ExecError::Connect { .. } | ExecError::ConnectionLost { .. } | ExecError::LockTimeout { .. } => exit::CONNECT,
            _ => exit::ERROR,
        }
    }
}

/// What PostgreSQL said: its message, where in the statement, its detail and hint; never the
/// line of PostgreSQL's own source that sqlx's text appends (" at line 1188" reads as a line of
/// the user's file or spec).
pub fn server_message(e: &sqlx::Error) -> String {
    let Some(pg) = (match e {
        sqlx::Error::Database(d) => d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>(),
        _ => None,
    }) else {
        return e.to_string();
    };
    let mut out = pg.message().to_string();
    if let Some(sqlx::postgres::PgErrorPosition::Original(at)) = pg.position() {
        out.push_str(&format!(" (at character {at} of the statement)"));
    }
    if let Some(d) = pg.detail() {
        out.push_str(&format!("; {d}"));
    }
    if let Some(h) = pg.hint() {
        out.push_str(&format!("; hint: {h}"));
    }
    out
}

/// The first line of a message.
pub(crate) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duckdb_message_quoting_a_long_line_is_cut() {
        let long = format!("CSV Error on Line: 1\nOriginal Line: {}\nend", "é".repeat(1000));
        let shown = ExecError::Duckdb { what: "read", message: long }.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3, "{shown}");
        assert!(lines[1].ends_with("… (1230 bytes more)") && lines[1].chars().count() < 450, "{}", lines[1]);
        assert_eq!(lines[2], "end");
    }

    /// One error of each variant, as a person sees it: every one has a help line, and the text
    /// is the reviewed golden file (UPDATE_GOLDEN=1 rewrites it).
    #[test]
    fn every_error_renders_a_help_line() {
        let errors = [
            ExecError::Source { source_name: "s3://lake/trades.csv at http://127.0.0.1:19000".into(), message: "no such object".into() },
            ExecError::Header {
                file: "trades.csv".into(),
                missing: "cash".into(),
                found: "id, account_id".into(),
                help: "rename the columns in the file, or point the spec at them with `from:`".into(),
            },
            ExecError::Csv { file: "trades.csv".into(), message: "Invalid unicode (byte sequence mismatch)".into() },
            ExecError::Duckdb { what: "run the typed select", message: "Out of Memory Error: failed to allocate".into() },
            ExecError::Polars { what: "evaluate the row checks", message: "column not found".into() },
            ExecError::Connect {
                what: "PostgreSQL at localhost:1/etl (connection `db`)".into(),
                message: "Connection refused".into(),
                help: crate::exec::postgres::CONNECT_HELP.into(),
            },
            ExecError::Database { what: "create the target table".into(), message: "permission denied for schema public".into() },
            ExecError::ConnectionLost { what: "COPY a batch".into(), message: "connection reset by peer".into() },
            ExecError::TableMismatch { table: "\"public\".\"asset\"".into(), problems: "column `cash` is missing".into() },
            ExecError::Write { path: "/tmp/rejects.csv".into(), message: "No space left on device".into() },
            ExecError::Unsupported("the spec has no PostgreSQL target to migrate".into()),
            ExecError::Internal("stage assets: 3 rows read but 2 valid + 0 rejected".into()),
        ];
        let mut all = String::new();
        for e in &errors {
            let mut out = String::new();
            miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor()).render_report(&mut out, e).unwrap();
            assert!(out.contains("help:"), "no help line:\n{out}");
            all.push_str(&out);
            all.push_str(&format!("exit code {}\n\n", e.exit_code()));
        }
        crate::golden::check("tests/golden/errors/exec.txt", &all);
    }

    /// A read that ran out of DuckDB's memory or of disk is not blamed on the file.
    #[test]
    fn a_read_out_of_memory_names_the_setting_not_the_file() {
        let failure = |m: &str| duckdb::Error::DuckDBFailure(duckdb::ffi::Error::new(duckdb::ffi::duckdb_state_DuckDBError), Some(m.to_string()));
        let oom = ExecError::csv("trades.csv")(failure("Out of Memory Error: failed to pin block of size 256.0 KiB (121.9 MiB/122.0 MiB used)"));
        assert!(matches!(&oom, ExecError::Duckdb { message, .. } if message.starts_with("trades.csv: Out of Memory Error")), "{oom:?}");
        let full = ExecError::csv("trades.csv")(failure("IO Error: Could not write file \"/tmp/x.tmp\": No space left on device"));
        assert!(matches!(full, ExecError::Duckdb { .. }), "{full:?}");
        let bad = ExecError::csv("trades.csv")(failure("Invalid Input Error: CSV Error on Line: 3"));
        assert!(matches!(bad, ExecError::Csv { .. }), "{bad:?}");
    }
}
