//! A PostgreSQL target: connecting (never showing the password), the engine's migrations, and
//! sending the Plan's statements with what they bind. Its rooms: `table` (a stage's table checked
//! or created), `load` (a stage loaded in one transaction), `copy` (COPY in and out),
//! `binary` (COPY's binary format), `records` (the engine's run records).

pub mod binary;
pub mod copy;
pub mod load;
pub mod records;
pub mod table;

use std::str::FromStr;

use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Arguments, PgPool, Postgres, Transaction};

use crate::exec::error::ExecError;
use crate::plan::postgres::TABLE_EXISTS;
use crate::plan::sql::{Bind, Query};
use crate::spec::model::PostgresConnection;

/// A transaction on a PostgreSQL target.
pub type Tx = Transaction<'static, Postgres>;

/// An open PostgreSQL target.
pub struct Pg {
    rt: tokio::runtime::Runtime,
    pool: PgPool,
    /// `host:port/database` for messages.
    pub label: String,
}

/// Connection options from a spec connection: the URL first, then its parts over it.
pub fn connect_options(c: &PostgresConnection) -> Result<PgConnectOptions, String> {
    // An empty value (a template that rendered nothing) is unset.
    let set = |v: &Option<String>| v.as_deref().filter(|s| !s.trim().is_empty()).map(str::to_string);
    let mut o = match c.url.as_ref().map(|u| u.expose()).filter(|u| !u.trim().is_empty()) {
        Some(url) => PgConnectOptions::from_str(url).map_err(|e| scrub(&e.to_string(), c))?,
        None => PgConnectOptions::new_without_pgpass().host("localhost").port(5432),
    };
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
    if let Some(p) = c.password.as_ref().filter(|p| !p.expose().is_empty()) {
        o = o.password(p.expose());
    }
    if let Some(m) = &c.sslmode {
        o = o.ssl_mode(PgSslMode::from_str(m).map_err(|e| e.to_string())?);
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
        let opts = connect_options(c).map_err(|message| ExecError::Connect { what: format!("PostgreSQL connection `{name}`"), message })?;
        let label = format!("{}:{}/{}", opts.get_host(), opts.get_port(), opts.get_database().unwrap_or("(default)"));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| ExecError::Internal(e.to_string()))?;
        let fail = |e: sqlx::Error| ExecError::Connect { what: format!("PostgreSQL at {label} (connection `{name}`)"), message: scrub(&e.to_string(), c) };
        // One direct connection first: its error says why (refused, bad password, no database)
        // at once, where a pool would retry until its timeout and only say it timed out.
        rt.block_on(async {
            use sqlx::Connection;
            let probe = sqlx::PgConnection::connect_with(&opts).await?;
            probe.close().await
        })
        .map_err(fail)?;
        let pool = rt
            .block_on(PgPoolOptions::new().max_connections(4).acquire_timeout(std::time::Duration::from_secs(30)).connect_with(opts))
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
    sqlx::query(generated(sql)).execute(&mut **tx).await.map_err(db(what))?;
    Ok(())
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

