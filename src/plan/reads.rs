//! What an analytic's SQL reads: the tables it names (parsed by sqlparser), so that a run whose
//! tables are as an earlier run's found them reports that run's result instead of querying
//! again; or why its result may change with no table changing (a function outside the list of
//! those whose value depends only on their arguments and rows, a table function, SQL not
//! understood here), in which case it always runs.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, ObjectName, Query, Statement, TableFactor, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Functions whose value depends only on their arguments, or on the rows they aggregate or
/// window over (lower case).
const DETERMINED: &[&str] = &[
    "abs", "array_agg", "avg", "bool_and", "bool_or", "btrim", "ceil", "ceiling", "char_length", "coalesce", "concat", "concat_ws", "count",
    "cume_dist", "date_part", "date_trunc", "dense_rank", "every", "exp", "first_value", "floor", "greatest", "lag", "last_value", "lead",
    "least", "left", "length", "ln", "log", "lower", "ltrim", "max", "md5", "min", "mod", "mode", "nth_value", "ntile", "nullif",
    "percent_rank", "percentile_cont", "percentile_disc", "position", "power", "rank", "replace", "right", "round", "row_number", "rtrim",
    "sign", "split_part", "sqrt", "stddev", "stddev_pop", "stddev_samp", "string_agg", "strpos", "substr", "substring", "sum", "to_char",
    "trim", "trunc", "upper", "var_pop", "var_samp", "variance",
];

/// The tables a PostgreSQL analytic's query reads, as written (unqualified names resolve as the
/// query's own search path resolves them), each once, in order of appearance; or why its result
/// cannot be taken from an earlier run.
pub fn tables_read(sql: &str) -> Result<Vec<String>, String> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| format!("its SQL is not understood here ({e})"))?;
    let [Statement::Query(query)] = statements.as_slice() else { return Err("it is not one query".into()) };
    let mut v = Reads::default();
    let _ = query.visit(&mut v);
    if let Some(why) = v.why {
        return Err(why);
    }
    let mut tables: Vec<String> = Vec::new();
    for t in v.tables {
        let single = t.0.len() == 1;
        let name = t.to_string();
        if single && v.ctes.contains(&name.to_lowercase()) {
            continue;
        }
        if !tables.contains(&name) {
            tables.push(name);
        }
    }
    Ok(tables)
}

#[derive(Default)]
struct Reads {
    ctes: Vec<String>,
    tables: Vec<ObjectName>,
    why: Option<String>,
}

impl Visitor for Reads {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(with) = &q.with {
            self.ctes.extend(with.cte_tables.iter().map(|c| c.alias.name.value.to_lowercase()));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        self.tables.push(r.clone());
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        let function = match t {
            TableFactor::Table { args: Some(_), name, .. } => Some(name.to_string()),
            TableFactor::Table { .. } | TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => None,
            other => Some(other.to_string()),
        };
        if let Some(f) = function {
            self.why.get_or_insert(format!("it reads `{f}`, not a table"));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            let name = f.name.to_string().to_lowercase();
            if !DETERMINED.contains(&name.as_str()) {
                self.why.get_or_insert(format!("it calls `{name}`, whose value may change with no table changing"));
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::tables_read;

    #[test]
    fn the_tables_an_analytic_reads_are_found_and_volatile_ones_refused() {
        assert_eq!(
            tables_read("SELECT a.account_type, count(*) FROM asset a JOIN \"Trade\" t ON t.account_id = a.account_id GROUP BY 1").unwrap(),
            ["asset", "\"Trade\""]
        );
        assert_eq!(
            tables_read("WITH big AS (SELECT * FROM mart.trade WHERE traded_amount > 100) SELECT count(*) FROM big, (SELECT 1 FROM asset) x").unwrap(),
            ["mart.trade", "asset"]
        );
        assert_eq!(tables_read("SELECT round(sum(cash), 2) FROM asset WHERE cash > (SELECT avg(cash) FROM asset)").unwrap(), ["asset"]);
        assert!(tables_read("SELECT count(*) FROM trade WHERE traded_time > now() - interval '1 day'").unwrap_err().contains("`now`"));
        assert!(tables_read("SELECT random() FROM asset").unwrap_err().contains("`random`"));
        assert!(tables_read("SELECT count(*) FROM trade WHERE traded_time::date = CURRENT_DATE").is_err());
        assert!(tables_read("SELECT * FROM generate_series(1, 3)").unwrap_err().contains("not a table"));
        assert!(tables_read("SELECT 1; SELECT 2").is_err());
        assert!(tables_read("SELEC nothing").is_err());
    }
}
