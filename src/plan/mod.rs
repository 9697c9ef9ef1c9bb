//! Compiles a checked `Spec` into a `Plan`: for each stage the DuckDB SQL that reads and casts
//! its CSV, the Polars expressions that check each row, and the SQL that creates and loads the
//! target. Pure: no I/O, so `etl plan` and its tests run offline.

pub mod checks;
pub mod extract;
pub mod load;
pub mod render;

use indexmap::IndexMap;
use rust_decimal::Decimal;

use crate::spec::model::{
    ColumnType, Connection, CsvOptions, Encoding, Every, LoadMode, Severity, Spec, StageSelection,
};

/// A compiled spec.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The spec's name.
    pub name: String,
    /// Stages in run order (dependencies first, otherwise as written).
    pub stages: Vec<StagePlan>,
    /// Analytics queries in spec order.
    pub analytics: Vec<AnalyticPlan>,
    /// Schedules in spec order.
    pub schedules: Vec<SchedulePlan>,
}

/// A compiled stage.
#[derive(Debug, Clone)]
pub struct StagePlan {
    /// Stage name.
    pub name: String,
    /// Stages that load first.
    pub needs: Vec<String>,
    /// Source connection name.
    pub source_connection: String,
    /// Object key or file path.
    pub source_key: String,
    /// The CSV dialect, defaults filled in.
    pub csv: CsvDialect,
    /// Columns in order.
    pub columns: Vec<ColumnPlan>,
    /// Row checks, column facets first, then rules.
    pub checks: Vec<checks::Check>,
    /// Target.
    pub target: TargetPlan,
    /// Rows per COPY batch.
    pub batch_size: u32,
    /// Error budget: most rejected rows allowed.
    pub max_rejects: Option<u64>,
    /// Error budget: largest rejected fraction allowed.
    pub max_reject_ratio: Option<f64>,
    /// The relations the extract joins (referenced keys, current rows).
    pub lookups: extract::Lookups,
}

/// A compiled column.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    /// Column name in the table.
    pub name: String,
    /// CSV header it is read from.
    pub header: String,
    /// Type.
    pub ty: ColumnType,
    /// Whether it may be null.
    pub nullable: bool,
    /// Parse formats (DuckDB strptime) for date and timestamp columns with a `format`.
    pub formats: Vec<String>,
    /// Longest text, for VARCHAR(n).
    pub max_length: Option<u32>,
    /// Whether it is unique on its own.
    pub unique: bool,
    /// Whether to index it.
    pub index: bool,
    /// The (table, column) it references.
    pub references: Option<(String, String)>,
    /// Its description, for the column comment.
    pub description: Option<String>,
}

/// The CSV dialect of a source.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvDialect {
    /// One character.
    pub delimiter: String,
    /// One character.
    pub quote: String,
    /// One character.
    pub escape: String,
    /// Whether the first line is a header.
    pub header: bool,
    /// Text encoding.
    pub encoding: Encoding,
    /// Values read as NULL.
    pub null_values: Vec<String>,
}

/// SQL dialect of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// DuckDB.
    Duckdb,
}

/// A compiled target.
#[derive(Debug, Clone)]
pub struct TargetPlan {
    /// Connection name.
    pub connection: String,
    /// Its dialect.
    pub dialect: Dialect,
    /// Schema (postgres), if any.
    pub schema: Option<String>,
    /// Table name.
    pub table: String,
    /// Key columns.
    pub key: Vec<String>,
    /// Load mode.
    pub mode: LoadMode,
    /// Generated identity key, if any.
    pub surrogate_key: Option<String>,
    /// The SQL: DDL and load statements.
    pub sql: load::LoadSql,
}

/// A compiled analytics query.
#[derive(Debug, Clone)]
pub struct AnalyticPlan {
    /// Name.
    pub name: String,
    /// Connection it runs on.
    pub connection: String,
    /// The SQL.
    pub sql: String,
    /// Description.
    pub description: Option<String>,
}

/// A compiled schedule.
#[derive(Debug, Clone)]
pub struct SchedulePlan {
    /// Name.
    pub name: String,
    /// Six-field cron expression (seconds first), as the scheduler takes it.
    pub cron: String,
    /// Stages it runs (None: all).
    pub stages: Option<Vec<String>>,
    /// IANA time zone.
    pub timezone: String,
    /// Whether it fires.
    pub enabled: bool,
}

/// Default rows per batch.
pub const DEFAULT_BATCH_SIZE: u32 = 10_000;

/// Compiles a spec that passed `spec::check`. Names are assumed to resolve.
pub fn compile(spec: &Spec) -> Plan {
    let order = run_order(spec);
    let stages = order
        .iter()
        .map(|name| {
            let st = &spec.stages[*name];
            let csv = dialect(spec.defaults.csv.as_ref(), st.source.csv.as_ref());
            let columns: Vec<ColumnPlan> = st
                .columns
                .iter()
                .map(|(cname, c)| ColumnPlan {
                    name: cname.clone(),
                    header: c.from.clone().unwrap_or_else(|| cname.clone()),
                    ty: c.ty,
                    nullable: c.nullable,
                    formats: c
                        .format
                        .as_deref()
                        .filter(|_| c.ty.is_temporal())
                        .map(|f| strptime_formats(f).unwrap_or_default())
                        .unwrap_or_default(),
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
            let conn = &spec.connections[&st.target.connection];
            let (dialect, schema) = match conn {
                Connection::Postgres(pg) => (Dialect::Postgres, Some(pg.schema.clone().unwrap_or_else(|| "public".into()))),
                _ => (Dialect::Duckdb, None),
            };
            let mut target = TargetPlan {
                connection: st.target.connection.clone(),
                dialect,
                schema,
                table: st.target.table.clone(),
                key: st.target.key.clone(),
                mode: st.target.mode,
                surrogate_key: st.target.surrogate_key.clone(),
                sql: load::LoadSql::default(),
            };
            target.sql = load::compile(&target, &columns);
            let lookups = extract::lookups(name, &target, &columns);
            let tolerance = spec.defaults.tolerance.map_or(Decimal::ZERO, |t| t.0);
            StagePlan {
                name: (*name).to_string(),
                needs: st.needs.clone(),
                source_connection: st.source.connection.clone(),
                source_key: st.source.key.clone(),
                csv,
                checks: checks::compile(spec, st, tolerance),
                columns,
                target,
                batch_size: st.batch_size.or(spec.defaults.batch_size).unwrap_or(DEFAULT_BATCH_SIZE),
                max_rejects: st.max_rejects.or(spec.defaults.max_rejects),
                max_reject_ratio: st.max_reject_ratio.or(spec.defaults.max_reject_ratio),
                lookups,
            }
        })
        .collect();
    let first_target = spec.stages.values().next().map(|s| s.target.connection.clone()).unwrap_or_default();
    let analytics = spec
        .analytics
        .iter()
        .map(|(name, a)| AnalyticPlan {
            name: name.clone(),
            connection: a.connection.clone().unwrap_or_else(|| first_target.clone()),
            sql: a.sql.trim().to_string(),
            description: a.description.clone(),
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
            stages: match &s.stages {
                StageSelection::All => None,
                StageSelection::Only(l) => Some(l.clone()),
            },
            timezone: s.timezone.clone().unwrap_or_else(|| "UTC".into()),
            enabled: s.enabled,
        })
        .collect();
    Plan { name: spec.name.clone(), stages, analytics, schedules }
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

/// The stages to run for a selection: the named ones, in run order.
pub fn select<'a>(plan: &'a Plan, only: Option<&[String]>) -> Vec<&'a StagePlan> {
    plan.stages.iter().filter(|s| only.is_none_or(|o| o.contains(&s.name))).collect()
}

fn dialect(defaults: Option<&CsvOptions>, own: Option<&CsvOptions>) -> CsvDialect {
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
    }
}

/// Translates a strftime-style format (chrono's, as the seed wrote them) into the DuckDB
/// strptime formats that accept the same texts. `%.f` (optional fractional seconds) becomes two
/// formats, with and without `.%f`.
pub fn strptime_formats(format: &str) -> Result<Vec<String>, String> {
    const SUPPORTED: &str = "YmdHMSjbBaAyIpzZeFT%";
    let mut with = String::new();
    let mut without = String::new();
    let mut optional_fraction = false;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            with.push(c);
            without.push(c);
            continue;
        }
        match chars.next() {
            Some('.') => match chars.next() {
                Some('f') => {
                    optional_fraction = true;
                    with.push_str(".%f");
                }
                other => return Err(format!("`%.{}` is not supported; use `%.f` for optional fractional seconds", other.map(String::from).unwrap_or_default())),
            },
            Some('f') => {
                with.push_str("%f");
                without.push_str("%f");
            }
            Some('F') => {
                with.push_str("%Y-%m-%d");
                without.push_str("%Y-%m-%d");
            }
            Some('T') => {
                with.push_str("%H:%M:%S");
                without.push_str("%H:%M:%S");
            }
            Some(d) if SUPPORTED.contains(d) => {
                with.push('%');
                with.push(d);
                without.push('%');
                without.push(d);
            }
            Some(d) => return Err(format!("format specifier `%{d}` is not supported; use %Y %m %d %H %M %S %.f %z and literal text")),
            None => return Err("the format ends with a lone `%`".into()),
        }
    }
    Ok(if optional_fraction { vec![with, without] } else { vec![with] })
}

/// Checks a cron expression with the scheduler's own parser (croner) and returns it with a
/// seconds field, as tokio-cron-scheduler takes it.
pub fn cron_expression(expr: &str) -> Result<String, String> {
    let e = expr.trim();
    let fields = e.split_whitespace().count();
    let six = match fields {
        5 => format!("0 {e}"),
        6 => e.to_string(),
        n => return Err(format!("it has {n} fields; write 5 (min hour day month weekday) or 6 (with seconds first)")),
    };
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(&six)
        .map(|_| six)
        .map_err(|e| e.to_string())
}

/// Parses `HH:MM`.
pub fn parse_at(at: &str) -> Option<(u32, u32)> {
    let (h, m) = at.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && at.trim().len() <= 5).then_some((h, m))
}

/// The six-field cron expression of `every` (and `at`).
pub fn every_cron(every: Every, at: Option<&str>) -> String {
    match every {
        Every::Minute => "0 * * * * *".into(),
        Every::Hour => "0 0 * * * *".into(),
        Every::Day => {
            let (h, m) = at.and_then(parse_at).unwrap_or((0, 0));
            format!("0 {m} {h} * * *")
        }
    }
}

/// Column name → type, for a stage.
pub fn column_types(columns: &[ColumnPlan]) -> IndexMap<String, ColumnType> {
    columns.iter().map(|c| (c.name.clone(), c.ty)).collect()
}

/// The severity word.
pub fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warn => "warn",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chrono_formats_become_duckdb_formats() {
        assert_eq!(
            strptime_formats("%Y-%m-%dT%H:%M:%S%.f").unwrap(),
            vec!["%Y-%m-%dT%H:%M:%S.%f".to_string(), "%Y-%m-%dT%H:%M:%S".to_string()]
        );
        assert!(strptime_formats("%Q").is_err());
    }

    #[test]
    fn cron_takes_five_or_six_fields() {
        assert_eq!(cron_expression("0 2 * * *").unwrap(), "0 0 2 * * *");
        assert!(cron_expression("61 2 * * *").is_err());
        assert!(cron_expression("* * *").is_err());
        assert_eq!(every_cron(Every::Day, Some("02:30")), "0 30 2 * * *");
        assert_eq!(parse_at("24:00"), None);
    }
}
