//! A PostgreSQL target: connecting (never showing the password), the engine's migrations, and
//! sending the Plan's statements with what they bind. Its rooms: `table` (a stage's table checked
//! or created), `load` (a stage loaded in one transaction), `copy` (COPY in and out),
//! `binary` (COPY's binary format), `records` (the engine's run records).

pub mod binary;
pub mod copy;
pub mod load;
pub mod pgpass;
pub mod records;
pub mod table;

use std::str::FromStr;

use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Arguments, PgPool, Postgres, Transaction};

use crate::exec::error::ExecError;
use crate::plan::postgres::TABLE_EXISTS;
use crate::plan::sql::{Bind, Query};
use crate::spec::model::{DEFAULT_CONNECT_TIMEOUT, PostgresConnection};

/// A transaction on a PostgreSQL target.
pub type Tx = Transaction<'static, Postgres>;

/// Whether a postgres URL carries a password (`postgres://user:secret@host/db`).
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// The help for a connection error whose cause is not known.
pub const CONNECT_HELP: &str = "check that the server runs, and the address and credentials in the spec (or the --db-* flags, PG* variables, ~/.pgpass)";

/// What to do about a failed connection, by its cause: no server, no such database, a wrong
/// password or user, a refused TLS setting.
pub fn connect_help(e: &sqlx::Error) -> String {
    let code = match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.to_string()),
        _ => None,
    };
    match code.as_deref() {
        Some("3D000") => "the database does not exist on that server: create it (`createdb NAME`), or name another with the connection's `database` (or --db-name, PGDATABASE)".into(),
        Some("28P01") => "the server refused the password: check `password` (or --db-password, PGPASSWORD, ~/.pgpass) for this user".into(),
        Some("28000") => "the server does not let this user in from here: check `user` (or --db-user, PGUSER), and the server's pg_hba.conf".into(),
        Some("53300") => "the server has no free connection slot: retry later, or raise its max_connections".into(),
        _ => match e {
            sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                "nothing listens there: is PostgreSQL running, and are the host and port right (`host`/`port`, --db-host/--db-port, PGHOST/PGPORT)?".into()
            }
            sqlx::Error::Tls(t) if t.to_string().contains("without TLS support") => {
                "this etl is built without TLS for PostgreSQL: set `sslmode: disable` or `prefer` (a server that requires TLS cannot be reached yet)".into()
            }
            sqlx::Error::Tls(_) => "the TLS handshake failed: check `sslmode` and the server's certificate".into(),
            _ => CONNECT_HELP.into(),
        },
    }
}

/// The connections a target's pool opens at most; a pool waits at most `connect_timeout` (30 s
/// at least) for one of them, so no more than this many queries are asked of it at once.
pub const POOL_CONNECTIONS: u32 = 4;

/// An open PostgreSQL target.
pub struct Pg {
    rt: tokio::runtime::Runtime,
    pool: PgPool,
    /// `host:port/database` for messages.
    pub label: String,
}

/// Connection options from a spec connection, as psql would take them: the connection's `url`
/// (else `DATABASE_URL`, else libpq's `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`,
/// `PGSSLMODE`, with localhost:5432 where none is set), then the connection's parts over it,
/// and, with no password from any of them, the matching line of `PGPASSFILE` or `~/.pgpass`.
pub fn connect_options(c: &PostgresConnection) -> Result<PgConnectOptions, String> {
    // An empty value (a template that rendered nothing) is unset.
    let set = |v: &Option<String>| v.as_deref().filter(|s| !s.trim().is_empty()).map(str::to_string);
    let spec_url = c.url.as_ref().map(|u| u.expose().to_string()).filter(|u| !u.trim().is_empty());
    let env_url = || std::env::var("DATABASE_URL").ok().filter(|u| !u.trim().is_empty() && set(&c.host).is_none());
    let url = spec_url.or_else(env_url);
    let mut o = match &url {
        Some(url) => PgConnectOptions::from_str(url).map_err(|e| scrub(&e.to_string(), c))?,
        None => PgConnectOptions::new_without_pgpass(),
    };
    let mut password = c.password.as_ref().map(|p| p.expose().to_string()).filter(|p| !p.is_empty());
    let given = password.is_some()
        || url.as_deref().is_some_and(url_has_password)
        || (url.is_none() && std::env::var("PGPASSWORD").is_ok_and(|p| !p.is_empty()));
    if let Some(h) = set(&c.host) {
        o = o.host(&h);
    }
    if let Some(p) = c.port {
        o = o.port(p);
    }
    if let Some(d) = set(&c.database) {
        o = o.database(&d);
    }
    if let Some(u) = set(&c.user) {
        o = o.username(&u);
    }
    if !given {
        password = pgpass::password(o.get_host(), o.get_port(), o.get_database().unwrap_or(o.get_username()), o.get_username());
    }
    if let Some(p) = password {
        o = o.password(&p);
    }
    if let Some(m) = &c.sslmode {
        o = o.ssl_mode(PgSslMode::from_str(m).map_err(|e| e.to_string())?);
    }
    if let Some(t) = c.statement_timeout.as_deref().filter(|t| !t.trim().is_empty()) {
        o = o.options([("statement_timeout", t.trim())]);
    }
    Ok(o.application_name("etl"))
}

/// Removes the connection's password from a message, wherever a driver may have put it.
pub fn scrub(message: &str, c: &PostgresConnection) -> String {
    let mut m = message.to_string();
    if let Some(p) = &c.password
        && !p.expose().is_empty() {
            m = m.replace(p.expose(), "******");
        }
    if let Some(url) = &c.url
        && let Some(pw) = url.expose().split_once("://").and_then(|(_, r)| r.split_once('@')).and_then(|(ui, _)| ui.split_once(':')).map(|(_, p)| p)
            && !pw.is_empty() {
                m = m.replace(pw, "******");
            }
    m
}

impl Pg {
    /// Connects; a failure is a connection error (exit 3) naming the server, never the password.
    pub fn connect(name: &str, c: &PostgresConnection) -> Result<Pg, ExecError> {
        let opts = connect_options(c).map_err(|message| ExecError::Connect {
            what: format!("PostgreSQL connection `{name}`"),
            message,
            help: "fix the connection's url or sslmode".into(),
        })?;
        let label = format!("{}:{}/{}", opts.get_host(), opts.get_port(), opts.get_database().unwrap_or("(default)"));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| ExecError::Internal(e.to_string()))?;
        let what = format!("PostgreSQL at {label} (connection `{name}`)");
        let fail = |e: sqlx::Error| ExecError::Connect { what: what.clone(), help: connect_help(&e), message: scrub(&super::error::server_message(&e), c) };
        let wait = std::time::Duration::from_secs(u64::from(c.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)));
        let silent = || ExecError::Connect {
            what: what.clone(),
            help: "check the host and port: something accepts connections there but does not answer as PostgreSQL (a hung server, a firewall, another service); raise `connect_timeout` for a slow network".into(),
            message: format!(
                "no answer within {} s: is a PostgreSQL server listening there? (the connection's `connect_timeout` sets the wait)",
                wait.as_secs()
            ),
        };
        // One direct connection first: its error says why (refused, bad password, no database)
        // at once, where a pool would retry until its timeout and only say it timed out. A
        // server that never answers is given `connect_timeout`.
        rt.block_on(async {
            use sqlx::Connection;
            tokio::time::timeout(wait, async {
                let probe = sqlx::PgConnection::connect_with(&opts).await?;
                probe.close().await
            })
            .await
        })
        .map_err(|_| silent())?
        .map_err(&fail)?;
        // The timer is made inside the runtime: it needs its clock.
        let pool = rt
            .block_on(async {
                let connect = PgPoolOptions::new()
                    .max_connections(POOL_CONNECTIONS)
                    .acquire_timeout(wait.max(std::time::Duration::from_secs(30)))
                    .after_connect(|_, _| Box::pin(async { no_delay_on_tcp_sockets(); Ok(()) }))
                    .connect_with(opts);
                tokio::time::timeout(wait, connect).await
            })
            .map_err(|_| silent())?
            .map_err(fail)?;
        Ok(Pg { rt, pool, label })
    }

    /// Runs a future to completion.
    pub fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Enters the runtime's context, so connections and transactions dropped while it is held
    /// (on an error path) can return to the pool or roll back.
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.rt.enter()
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the engine's migrations (etl_runs, etl_run_stages, etl_rejects, ...).
    pub fn migrate(&self) -> Result<(), ExecError> {
        self.block(sqlx::migrate!("./migrations").run(&self.pool)).map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => ExecError::database("apply the engine's migrations", e),
            e => ExecError::Database { what: "apply the engine's migrations".into(), message: e.to_string() },
        })
    }

    /// Begins a transaction.
    pub fn begin(&self) -> Result<Transaction<'static, Postgres>, ExecError> {
        self.block(self.pool.begin()).map_err(db("begin a transaction"))
    }
}

/// Generated SQL from the Plan: every identifier in it came through the spec's identifier check
/// and is quoted (STYLE habit 7); values never go in, they are bound or COPYed.
pub fn generated(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql.to_string())
}

/// Maps a driver error of the statement doing `what`.
pub fn db(what: &'static str) -> impl Fn(sqlx::Error) -> ExecError {
    move |e| ExecError::database(what, e)
}

/// A planned statement's binds as the driver's arguments.
pub fn arguments(q: &Query) -> Result<PgArguments, ExecError> {
    let mut args = PgArguments::default();
    for b in &q.binds {
        match b {
            Bind::Text(t) => args.add(t.clone()),
            Bind::Texts(ts) => args.add(ts.clone()),
        }
        .map_err(|e| ExecError::Internal(format!("bind a parameter of `{}`: {e}", q.sql)))?;
    }
    Ok(args)
}

/// Runs one statement of the Plan that binds nothing.
pub async fn execute(tx: &mut Tx, sql: &str, what: &'static str) -> Result<(), ExecError> {
    affected(tx, sql, what).await.map(|_| ())
}

/// Runs one planned statement; the rows it touched.
pub async fn affected(tx: &mut Tx, sql: &str, what: &'static str) -> Result<u64, ExecError> {
    Ok(sqlx::query(generated(sql)).execute(&mut **tx).await.map_err(db(what))?.rows_affected())
}

/// Runs one planned statement with what it binds.
pub async fn execute_bound(tx: &mut Tx, q: &Query, what: &'static str) -> Result<(), ExecError> {
    sqlx::query_with(generated(&q.sql), arguments(q)?).execute(&mut **tx).await.map_err(db(what))?;
    Ok(())
}

/// The one value a planned query yields.
pub async fn scalar<T>(tx: &mut Tx, q: &Query, what: &'static str) -> Result<T, ExecError>
where
    T: Send + Unpin + for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    sqlx::query_scalar_with(generated(&q.sql), arguments(q)?).fetch_one(&mut **tx).await.map_err(db(what))
}

/// The one value a planned statement that binds nothing yields.
pub async fn value<T>(tx: &mut Tx, sql: &str, what: &'static str) -> Result<T, ExecError>
where
    T: Send + Unpin + for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    sqlx::query_scalar(generated(sql)).fetch_one(&mut **tx).await.map_err(db(what))
}

/// Whether a table exists (the Plan's `exists` query of it).
pub async fn exists(tx: &mut Tx, q: &Query) -> Result<bool, ExecError> {
    let found: Option<String> = scalar(tx, q, "look up a table").await?;
    Ok(found.is_some())
}

/// The state of a table (its `exists` and `state` statements), None when it does not exist.
pub async fn state(tx: &mut Tx, exists_q: &Query, state_sql: &str) -> Result<Option<String>, ExecError> {
    if !exists(tx, exists_q).await? {
        return Ok(None);
    }
    Ok(Some(value(tx, state_sql, "read a table's state").await?))
}

/// Whether the table `qualified` exists, on the pool (for the commands that run no stage).
pub async fn table_exists(pool: &PgPool, qualified: &str) -> Result<bool, ExecError> {
    let found: Option<String> =
        sqlx::query_scalar(TABLE_EXISTS).bind(qualified).fetch_one(pool).await.map_err(db("look up a table"))?;
    Ok(found.is_some())
}


/// Turns Nagle's algorithm off on this process's TCP sockets (sqlx leaves it on, and has no
/// option for it). A COPY sends its last data and then `CopyDone` as two small writes: with
/// Nagle on, the second waits for the server to acknowledge the first, which it delays (up to
/// 40 ms on Linux) as it owes no reply before `CopyDone`: every COPY, however small, took 40 ms
/// longer. Called as each pooled connection opens; harmless on every other TCP socket.
fn no_delay_on_tcp_sockets() {
    #[cfg(target_os = "linux")]
    {
        let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return };
        for fd in fds.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<libc::c_int>().ok())) {
            let mut domain: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt and setsockopt only read and write the option values given
            // here; an fd that is no socket (or was closed meanwhile) makes them fail, ignored.
            unsafe {
                let is_tcp = libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN, (&raw mut domain).cast(), &raw mut len) == 0
                    && (domain == libc::AF_INET || domain == libc::AF_INET6);
                if is_tcp {
                    let one: libc::c_int = 1;
                    libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, (&raw const one).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every TCP socket of the process has Nagle's algorithm off once a connection opened (a
    /// socket read back, not a timing: the 40 ms it saves per COPY is for the benchmarks).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_tcp_sockets_get_no_delay() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // IPv6 too (a server named `localhost` may be reached on ::1), where the host has it.
        let v6 = std::net::TcpListener::bind("[::1]:0").ok().map(|l| (std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap(), l));
        if v6.is_none() {
            eprintln!("no IPv6 loopback here: only an IPv4 socket is checked");
        }
        // (A new socket has Nagle on; not asserted, as another test's connection may turn it off.)
        super::no_delay_on_tcp_sockets();
        assert!(stream.nodelay().unwrap(), "socket {} still delays", stream.as_raw_fd());
        if let Some((s, _)) = &v6 {
            assert!(s.nodelay().unwrap(), "IPv6 socket {} still delays", s.as_raw_fd());
        }
    }
}
