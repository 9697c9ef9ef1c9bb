//! Compiles a checked `Spec` into a `Plan`, everything a run needs and nothing it must look up
//! again: each connection resolved to its settings, and per stage the DuckDB SQL that reads and
//! casts its CSV, the Polars predicates that check each row, the target's DDL and load SQL, and
//! every other statement the run sends (locks, catalog checks, lookups, states, run records).
//! Pure: no I/O, so `etl plan` shows the whole run offline. It does not read a database's
//! catalog: what a live table holds is checked by the executor, with the statements planned here.

pub mod compiled;
pub mod contracts;
pub mod derive;
pub mod duck;
pub mod extract;
pub mod load;
pub mod postgres;
pub mod predicates;
pub mod reads;
pub mod records;
pub mod render;
pub mod sql;

use indexmap::IndexMap;
use rust_decimal::Decimal;

pub use compiled::*;

use crate::spec::model::{Compression, Connection, CsvOptions, Encoding, Select, Spec, StageSelection};
use crate::spec::words::{cron_expression, every_cron, every_words, strptime_formats};

/// Compiles a spec that passed `spec::check`. Names are assumed to resolve.
pub fn compile(spec: &Spec) -> Plan {
    let connections: IndexMap<String, ConnectionPlan> = spec
        .connections
        .iter()
        .map(|(name, c)| {
            let resolved = match c {
                Connection::S3(s3) => ConnectionPlan::S3(s3.clone()),
                Connection::Local(l) => ConnectionPlan::Local { dir: l.path.clone() },
                Connection::Postgres(pg) => ConnectionPlan::Postgres(pg.clone()),
                Connection::Duckdb(d) => ConnectionPlan::Duckdb { file: d.path.clone() },
            };
            (name.clone(), resolved)
        })
        .collect();
    let stages = run_order(spec).iter().map(|name| stage(spec, name)).collect();
    let first_target = spec.stages.values().next().map(|s| s.target.connection.clone()).unwrap_or_default();
    let analytics = spec
        .analytics
        .iter()
        .map(|(name, a)| {
            let connection = a.connection.clone().unwrap_or_else(|| first_target.clone());
            let duck = matches!(spec.connections.get(&connection), Some(Connection::Duckdb(_)));
            let written = a.sql.trim().trim_end_matches(';').trim_end();
            // With expectations, the result is computed once into a temporary table that the
            // report and each expectation read.
            let materialize = (!a.expect.is_empty()).then(|| {
                let result = sql::ident(ANALYTIC_RESULT);
                if duck { format!("CREATE OR REPLACE TEMP TABLE {result} AS {written}") } else { format!("CREATE TEMP TABLE {result} ON COMMIT DROP AS {written}") }
            });
            let body = if materialize.is_some() { format!("SELECT * FROM {}", sql::ident(ANALYTIC_RESULT)) } else { written.to_string() };
            let (run, search_path) = match spec.connections.get(&connection) {
                // Each value as DuckDB prints it, then each value's type (so numbers stay numbers
                // in the JSON report).
                Some(Connection::Duckdb(_)) => (format!("SELECT CAST(COLUMNS(*) AS VARCHAR), typeof(COLUMNS(*)) FROM ({body}) AS q"), None),
                other => {
                    let schema = match other {
                        Some(Connection::Postgres(pg)) => pg.schema.as_deref(),
                        _ => None,
                    };
                    // json_each keeps the query's column order; each value comes back as
                    // PostgreSQL prints it (numeric in full, so no value passes through a float)
                    // with its JSON type, so numbers stay numbers in the JSON report.
                    let run = format!(
                        "SELECT r.n, e.key, e.value #>> '{{}}', json_typeof(e.value) FROM (SELECT row_number() OVER () AS n, row_to_json(q) AS j FROM ({body}) AS q) AS r, \
                         LATERAL json_each(r.j) WITH ORDINALITY AS e(key, value, pos) ORDER BY r.n, e.pos"
                    );
                    let search_path = schema.map(|s| {
                        sql::Query::new("SELECT set_config('search_path', $1 || ', ' || current_setting('search_path'), true)", &[&sql::ident(s)])
                    });
                    (run, search_path)
                }
            };
            let expect = a
                .expect
                .iter()
                .map(|cond| {
                    let row = if duck { "CAST(q AS VARCHAR)" } else { "row_to_json(q)::text" };
                    (cond.clone(), format!("SELECT count(*) OVER (), {row} FROM ({body}) AS q WHERE NOT coalesce(({cond}), false) LIMIT 20"))
                })
                .collect();
            let reads = if duck {
                Err("it runs on DuckDB, whose tables keep no row versions to compare".to_string())
            } else {
                reads::tables_read(&a.sql).map(|tables| tables.into_iter().map(|t| { let state = postgres::state_sql(&t); (t, state) }).collect())
            };
            AnalyticPlan { name: name.clone(), connection, sql: a.sql.trim().to_string(), materialize, run, search_path, description: a.description.clone(), expect, reads }
        })
        .collect();
    let schedules = spec
        .schedules
        .iter()
        .map(|(name, s)| SchedulePlan {
            name: name.clone(),
            cron: match (&s.cron, s.every) {
                (Some(c), _) => cron_expression(c).unwrap_or_default(),
                (None, Some(every)) => every_cron(every, s.at.as_deref()),
                (None, None) => String::new(),
            },
            trigger: match (&s.cron, s.every) {
                (Some(c), _) => format!("cron {c}"),
                (None, Some(every)) => every_words(every, s.at.as_deref()),
                (None, None) => String::new(),
            },
            stages: match &s.stages {
                StageSelection::All => None,
                StageSelection::Only(l) => Some(l.clone()),
            },
            timezone: s.timezone.clone().unwrap_or_else(|| "UTC".into()),
            enabled: s.enabled,
            catchup: s.catchup,
            max_catchup: s.max_catchup.unwrap_or(10),
            retries: s.retries,
            retry_delay: s.retry_delay.as_deref().and_then(crate::spec::check::parse_duration).unwrap_or(std::time::Duration::from_secs(300)),
            notify: s.notify.as_deref().map(notify),
            distribute: s.workers == Some(crate::spec::model::Workers::Distribute),
        })
        .collect();
    Plan { name: spec.name.clone(), connections, stages, analytics, schedules, notify: notify(&spec.notify) }
}

/// The webhooks, defaults filled in: told of every end of a run but `succeeded`, 10 s an
/// attempt, 3 attempts after a failed one.
fn notify(hooks: &[crate::spec::model::Notify]) -> Vec<NotifyPlan> {
    use crate::spec::model::RunEnd;
    hooks
        .iter()
        .map(|n| NotifyPlan {
            url: n.url.clone(),
            on: if n.on.is_empty() {
                [RunEnd::Rejected, RunEnd::OverBudget, RunEnd::Refused, RunEnd::ContractFailed, RunEnd::Missing, RunEnd::Late, RunEnd::Failed].map(RunEnd::word).to_vec()
            } else {
                n.on.iter().map(|e| e.word()).collect()
            },
            timeout: n.timeout.as_deref().and_then(crate::spec::check::parse_duration).unwrap_or(std::time::Duration::from_secs(10)),
            retries: n.retries.unwrap_or(3),
        })
        .collect()
}

/// A `mode: history` stage's versions (its `as_of` a constant, as the spec check sees to).
fn history_plan(st: &crate::spec::model::Stage) -> Option<HistoryPlan> {
    if st.target.mode != crate::spec::model::LoadMode::History {
        return None;
    }
    let as_of = st.target.as_of.clone()?;
    let date = st.columns.get(&as_of)?.value.as_ref()?.0.clone();
    Some(HistoryPlan {
        as_of,
        date,
        valid_from: st.target.valid_from.clone().unwrap_or_else(|| "valid_from".into()),
        valid_to: st.target.valid_to.clone().unwrap_or_else(|| "valid_to".into()),
        close: st.target.delete_missing == Some(crate::spec::model::DeleteMissing::Close),
    })
}

/// Whether a `mode: replace` stage replaces its PostgreSQL table row by row: its rows upserted on
/// the key, then the rows whose key the file lacks deleted, so rows other tables reference stay
/// in place (an emptied table would break their foreign keys). A table with `unique` columns
/// besides the key is emptied first instead: its new rows may take values the old ones held.
fn keyed_replace(st: &crate::spec::model::Stage, dialect: Dialect) -> bool {
    st.target.mode == crate::spec::model::LoadMode::Replace
        && dialect == Dialect::Postgres
        && !st.target.key.is_empty()
        && !st.columns.iter().any(|(n, c)| c.unique && !(st.target.key.len() == 1 && &st.target.key[0] == n))
}

/// The tables of the stages (on the same connection) whose columns reference stage `name`'s,
/// each with those referencing it in turn; a stage already on the path (`seen`) is not followed
/// again.
/// A stage's table's spread over a Citus cluster, the table it is colocated with named as SQL.
fn distribution(spec: &Spec, st: &crate::spec::model::Stage) -> Option<DistributionPlan> {
    use crate::spec::model::Distribution;
    let table_of = |name: &str| {
        let other = spec.stages.get(name)?;
        let schema = match spec.connections.get(&other.target.connection)? {
            Connection::Postgres(pg) => pg.schema.clone().unwrap_or_else(|| "public".into()),
            _ => return None,
        };
        Some(sql::qualified(Some(&schema), &other.target.table))
    };
    Some(match st.target.distribution.as_ref()? {
        Distribution::Reference => DistributionPlan::Reference,
        Distribution::Hash(h) => DistributionPlan::Hash {
            column: h.column.clone(),
            colocate_with: h.colocate_with.as_deref().and_then(table_of),
            shard_count: h.shard_count,
        },
    })
}

fn referencing(spec: &Spec, name: &str, seen: &mut Vec<String>) -> Vec<Referencing> {
    let connection = &spec.stages[name].target.connection;
    let schema = match spec.connections.get(connection) {
        Some(Connection::Postgres(pg)) => pg.schema.clone().unwrap_or_else(|| "public".into()),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for (other, ost) in spec.stages.iter().filter(|(_, s)| &s.target.connection == connection) {
        if seen.contains(other) {
            continue;
        }
        for (cname, c) in &ost.columns {
            let Some((rstage, rcol)) = c.references.as_deref().and_then(|r| r.split_once('.')) else { continue };
            if rstage != name {
                continue;
            }
            seen.push(other.clone());
            let deeper = referencing(spec, other, seen);
            seen.pop();
            out.push(Referencing { table: sql::qualified(Some(&schema), &ost.target.table), column: cname.clone(), ref_column: rcol.to_string(), referencing: deeper });
        }
    }
    out
}

/// A stage with a `sql` contract: the tables of the other stages on its (PostgreSQL) connection,
/// which its query may read.
fn contract_reads(spec: &Spec, name: &str) -> Vec<String> {
    let st = &spec.stages[name];
    let Some(Connection::Postgres(pg)) = spec.connections.get(&st.target.connection) else { return Vec::new() };
    if !st.checks.iter().any(|c| c.sql.is_some()) {
        return Vec::new();
    }
    let schema = pg.schema.clone().unwrap_or_else(|| "public".into());
    spec.stages
        .iter()
        .filter(|(o, s)| *o != name && s.target.connection == st.target.connection)
        .map(|(_, s)| sql::qualified(Some(&schema), &s.target.table))
        .collect()
}

/// The table's key: a snapshot's `as_of` date first, then the spec's key (unique per date).
fn snapshot_key(t: &crate::spec::model::Target) -> Vec<String> {
    match (&t.as_of, t.mode) {
        (Some(d), crate::spec::model::LoadMode::Snapshot) if !t.key.is_empty() => std::iter::once(d.clone()).chain(t.key.iter().filter(|k| *k != d).cloned()).collect(),
        _ => t.key.clone(),
    }
}

/// Where a column's value comes from (a spec that passed its checks has at most one of
/// `from_path`, `value`, `expr`, and an expression that parses).
fn column_source(c: &crate::spec::model::Column) -> compiled::ColumnSource {
    use compiled::ColumnSource;
    if let Some(capture) = &c.from_path {
        return ColumnSource::Path(capture.clone());
    }
    if let Some(v) = &c.value {
        return ColumnSource::Value(v.0.clone());
    }
    match c.expr.as_deref().map(crate::spec::expr::parse) {
        Some(Ok(e)) => ColumnSource::Expr(e),
        _ => ColumnSource::File,
    }
}

/// The temporary table an analytic with expectations is computed into.
pub const ANALYTIC_RESULT: &str = "_etl_analytic_result";

/// The largest rejected record kept with its rejects, unless `defaults.reject_record_bytes` says.
pub const DEFAULT_REJECT_RECORD_BYTES: usize = 65536;

/// Compiles one stage.
fn stage(spec: &Spec, name: &str) -> StagePlan {
    let mut plan = compiled_stage(spec, name);
    plan.undated = undated(spec, name, &plan).map(Box::new);
    plan
}

/// A stage compiled (without its `undated` form).
fn compiled_stage(spec: &Spec, name: &str) -> StagePlan {
    let st = &spec.stages[name];
    // A set's files may differ in compression: each is told by its own name when read.
    let csv = dialect(spec.defaults.csv.as_ref(), st.source.csv.as_ref(), st.source.key.as_deref());
    let columns: Vec<ColumnPlan> = st
        .columns
        .iter()
        .map(|(cname, c)| ColumnPlan {
            name: cname.clone(),
            header: c.from.clone().unwrap_or_else(|| cname.clone()),
            source: column_source(c),
            ty: c.ty,
            nullable: c.nullable,
            formats: c.format.as_deref().filter(|_| c.ty.is_temporal()).map(|f| strptime_formats(f).unwrap_or_default()).unwrap_or_default(),
            max_length: c.max_length,
            unique: c.unique,
            index: c.index,
            references: c.references.as_ref().and_then(|r| {
                let (s, col) = r.split_once('.')?;
                Some((spec.stages.get(s)?.target.table.clone(), col.to_string()))
            }),
            description: c.description.clone(),
        })
        .collect();
    let (dialect, schema) = match &spec.connections[&st.target.connection] {
        Connection::Postgres(pg) => (Dialect::Postgres, Some(pg.schema.clone().unwrap_or_else(|| "public".into()))),
        _ => (Dialect::Duckdb, None),
    };
    let mut target = TargetPlan {
        connection: st.target.connection.clone(),
        dialect,
        qualified: sql::qualified(schema.as_deref(), &st.target.table),
        schema,
        table: st.target.table.clone(),
        key: snapshot_key(&st.target),
        mode: st.target.mode,
        as_of: st.target.as_of.clone().filter(|_| st.target.mode == crate::spec::model::LoadMode::Snapshot),
        history: history_plan(st),
        delete_missing: match st.target.mode {
            crate::spec::model::LoadMode::Upsert => st.target.delete_missing,
            _ if keyed_replace(st, dialect) => Some(crate::spec::model::DeleteMissing::Hard),
            _ => None,
        },
        max_delete_ratio: if keyed_replace(st, dialect) { 1.0 } else { st.target.max_delete_ratio.unwrap_or(crate::spec::model::DEFAULT_MAX_DELETE_RATIO) },
        on_delete: st.target.on_delete.unwrap_or_default(),
        referencing: referencing(spec, name, &mut vec![name.to_string()]),
        contract_reads: contract_reads(spec, name),
        surrogate_key: st.target.surrogate_key.clone(),
        distribution: distribution(spec, st),
        allow_empty: st.target.allow_empty,
        sql: LoadSql::default(),
        statements: TargetStatements::Duckdb(DuckStatements::default()),
    };
    target.sql = load::compile(&target, &columns);
    let lookups = extract::lookups(name, &target, &columns);
    target.statements = match dialect {
        Dialect::Postgres => {
            let mut pg = postgres::compile(&target, &columns, &lookups);
            pg.settings.extend(postgres::timeouts(
                st.lock_timeout.as_deref().or(spec.defaults.lock_timeout.as_deref()),
                st.statement_timeout.as_deref().or(spec.defaults.statement_timeout.as_deref()),
            ));
            TargetStatements::Postgres(Box::new(pg))
        }
        Dialect::Duckdb => TargetStatements::Duckdb(duck::compile(&target)),
    };
    let tolerance = spec.defaults.tolerance.map_or(Decimal::ZERO, |t| t.0);
    let mut plan = StagePlan {
        name: name.to_string(),
        needs: st.needs.clone(),
        source: source(spec, st),
        csv,
        checks: predicates::compile(spec, st, tolerance),
        columns,
        target,
        batch_size: st.batch_size.or(spec.defaults.batch_size).unwrap_or(DEFAULT_BATCH_SIZE),
        max_rejects: st.max_rejects.or(spec.defaults.max_rejects),
        max_reject_ratio: st.max_reject_ratio.or(spec.defaults.max_reject_ratio),
        lookups,
        extract: ExtractSql::default(),
        contracts: Vec::new(),
        reject_record_bytes: spec.defaults.reject_record_bytes.map_or(DEFAULT_REJECT_RECORD_BYTES, |b| b as usize),
        undated: None,
    };
    plan.contracts = contracts::compile(st, &plan.target);
    // A DuckDB target's transaction (open across a dry run's stages) may write to one database
    // only, so with one in the spec the census stays a temporary table.
    let duckdb_target = spec.stages.values().any(|s| !matches!(spec.connections.get(&s.target.connection), Some(Connection::Postgres(_))));
    plan.extract = extract::compile(&plan, !duckdb_target);
    plan
}

/// The date a history stage is compiled with for [`StagePlan::undated`].
const UNDATED: &str = "1970-01-01";

/// A history stage compiled with its `as_of` date set to [`UNDATED`], when nothing but the
/// `as_of` column's value (and the merge) depends on that date: the value is a date, and no
/// check and no computed column reads the column but its own type and not-null facets (which
/// a date passes on every row alike). Two
/// loads whose `undated` stages are the same give every line the same outcome, whatever their
/// dates; anything else in the stage that depends on the date (a template reading `run.date`
/// elsewhere) still differs between them.
fn undated(spec: &Spec, name: &str, plan: &StagePlan) -> Option<StagePlan> {
    let h = plan.target.history.as_ref()?;
    // Its own type and not-null facets pass for every row alike, on a date that is one.
    chrono::NaiveDate::parse_from_str(&h.date, "%Y-%m-%d").ok()?;
    let reads = |c: &compiled::Check| match c.column.as_deref() {
        Some(col) => col == h.as_of && c.rule != "not_null" && c.rule != "type",
        None => c.reads.contains(&h.as_of),
    };
    if plan.checks.iter().any(reads) {
        return None;
    }
    let computed_read = plan.columns.iter().any(|c| match &c.source {
        compiled::ColumnSource::Expr(e) => {
            let mut cols = Vec::new();
            crate::spec::expr::columns_of(e, &mut cols);
            cols.contains(&h.as_of)
        }
        _ => false,
    });
    if computed_read {
        return None;
    }
    let mut other = spec.clone();
    let column = other.stages.get_mut(name)?.columns.get_mut(&h.as_of)?;
    column.value = Some(crate::spec::model::Constant(UNDATED.into()));
    Some(compiled_stage(&other, name))
}

/// Where a stage's file or files are.
fn source(spec: &Spec, st: &crate::spec::model::Stage) -> SourcePlan {
    let s = &st.source;
    let set = s.files.as_deref().and_then(|f| crate::spec::pattern::Pattern::new(f).ok()).map(|pattern| FileSetPlan {
        pattern,
        select: s.select.unwrap_or(match st.target.mode {
            crate::spec::model::LoadMode::Replace | crate::spec::model::LoadMode::Snapshot => Select::All,
            _ => Select::New,
        }),
        on_missing: s.on_missing.unwrap_or_default(),
        wait: s.wait.as_ref().map(|w| WaitPlan {
            until: crate::spec::check::parse_time_of_day(&w.until).unwrap_or_default(),
            timezone: spec.timezone.clone().unwrap_or_else(|| "UTC".into()),
            poll: w.poll.as_deref().and_then(crate::spec::check::parse_duration).unwrap_or(std::time::Duration::from_secs(60)),
        }),
        atomicity: s.atomicity.unwrap_or_default(),
    });
    SourcePlan { connection: s.connection.clone(), key: s.key.clone().or_else(|| s.files.clone()).unwrap_or_default(), set, trailer: s.trailer.clone() }
}

/// Stages in dependency order; ties keep the spec's order.
pub fn run_order(spec: &Spec) -> Vec<&str> {
    let mut done: Vec<&str> = Vec::new();
    while done.len() < spec.stages.len() {
        let before = done.len();
        for (name, st) in &spec.stages {
            if !done.contains(&name.as_str()) && st.needs.iter().all(|n| done.contains(&n.as_str())) {
                done.push(name);
                break;
            }
        }
        if done.len() == before {
            // A cycle; the checker reports it. Append the rest as written.
            for name in spec.stages.keys() {
                if !done.contains(&name.as_str()) {
                    done.push(name);
                }
            }
        }
    }
    done
}

fn dialect(defaults: Option<&CsvOptions>, own: Option<&CsvOptions>, key: Option<&str>) -> CsvDialect {
    let pick = |f: fn(&CsvOptions) -> Option<String>, default: &str| {
        own.and_then(f).or_else(|| defaults.and_then(f)).unwrap_or_else(|| default.to_string())
    };
    CsvDialect {
        delimiter: pick(|c| c.delimiter.clone(), ","),
        quote: pick(|c| c.quote.clone(), "\""),
        escape: pick(|c| c.escape.clone(), "\""),
        header: own.and_then(|c| c.header).or_else(|| defaults.and_then(|c| c.header)).unwrap_or(true),
        encoding: own.and_then(|c| c.encoding).or_else(|| defaults.and_then(|c| c.encoding)).unwrap_or(Encoding::Utf8),
        null_values: own
            .and_then(|c| c.null_values.clone())
            .or_else(|| defaults.and_then(|c| c.null_values.clone()))
            .unwrap_or_else(|| vec![String::new()]),
        compression: {
            let c = own.and_then(|c| c.compression).or_else(|| defaults.and_then(|c| c.compression)).unwrap_or(Compression::Auto);
            key.map_or(c, |k| c.of(k))
        },
    }
}
