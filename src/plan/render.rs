//! `etl plan` as text: for each stage the DuckDB read-and-cast SQL, the Polars checks, the
//! target DDL and the load SQL; then analytics and schedules.

use std::fmt::Write;

use super::extract::extract_sql;
use super::load::qualified;
use super::{Dialect, Plan, StagePlan, severity_word};
use crate::spec::model::LoadMode;

/// Renders the plan, or only the named stage.
pub fn render(plan: &Plan, only_stage: Option<&str>) -> String {
    let mut out = String::new();
    let order: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(out, "plan for {}: {} stage(s), run order {}", plan.name, order.len(), order.join(" → "));
    for st in plan.stages.iter().filter(|s| only_stage.is_none_or(|o| o == s.name)) {
        stage(&mut out, st);
    }
    if only_stage.is_none() {
        if !plan.analytics.is_empty() {
            let _ = writeln!(out, "\n== analytics ==");
            for a in &plan.analytics {
                let _ = writeln!(out, "\n-- {} (on {})", a.name, a.connection);
                if let Some(d) = &a.description {
                    let _ = writeln!(out, "-- {d}");
                }
                let _ = writeln!(out, "{};", a.sql);
            }
        }
        if !plan.schedules.is_empty() {
            let _ = writeln!(out, "\n== schedules ==");
            for s in &plan.schedules {
                let stages = s.stages.as_ref().map_or("all".to_string(), |l| l.join(", "));
                let enabled = if s.enabled { "" } else { ", paused" };
                let _ = writeln!(out, "{}: cron \"{}\" ({}), stages: {stages}{enabled}", s.name, s.cron, s.timezone);
            }
        }
    }
    out
}

fn stage(out: &mut String, st: &StagePlan) {
    let t = &st.target;
    let dialect = match t.dialect {
        Dialect::Postgres => "PostgreSQL",
        Dialect::Duckdb => "DuckDB",
    };
    let _ = writeln!(out, "\n== stage {} ==", st.name);
    if !st.needs.is_empty() {
        let _ = writeln!(out, "needs: {}", st.needs.join(", "));
    }
    let nulls: Vec<String> = st.csv.null_values.iter().map(|n| format!("{n:?}")).collect();
    let _ = writeln!(
        out,
        "source: {} / {} (csv: delimiter {:?}, header {}, {}, nulls [{}])",
        st.source_connection,
        st.source_key,
        st.csv.delimiter,
        st.csv.header,
        st.csv.encoding.duckdb_name(),
        nulls.join(", ")
    );
    let mode = match t.mode {
        LoadMode::Upsert => format!("upsert on ({})", t.key.join(", ")),
        LoadMode::Append => "append".into(),
        LoadMode::Replace => "replace".into(),
    };
    let budget = match (st.max_rejects, st.max_reject_ratio) {
        (None, None) => "no error budget".to_string(),
        (a, b) => {
            let mut parts = Vec::new();
            if let Some(a) = a {
                parts.push(format!("at most {a} rejects"));
            }
            if let Some(b) = b {
                parts.push(format!("at most {b} of rows rejected"));
            }
            parts.join(", ")
        }
    };
    let _ = writeln!(out, "target: {} / {} ({dialect}), {mode}, batches of {}, {budget}", t.connection, qualified(t), st.batch_size);

    let x = extract_sql(st, &st.source_key);
    let _ = writeln!(out, "\n-- 1. read and cast (DuckDB: the CSV as text in file order, then typed)");
    let _ = writeln!(out, "{};", x.stage_raw);
    let _ = writeln!(out, "{};", x.select);

    let _ = writeln!(out, "\n-- 2. row checks (Polars; a row violating an `error` check is rejected, a `warn` check only counts)");
    for c in &st.checks {
        let _ = writeln!(out, "[{}] {}: {}", severity_word(c.severity), c.rule, c.condition);
        let _ = writeln!(out, "    violation: {}", c.violation);
    }
    for c in st.columns.iter().filter(|c| c.references.is_some()) {
        let (table, col) = c.references.as_ref().expect("filtered");
        let _ = writeln!(out, "[error] references: {} exists in {table}.{col} (checked in the target, step 4)", c.name);
    }

    let _ = writeln!(out, "\n-- 3. target DDL ({dialect}; run when the table is missing)");
    for s in &t.sql.create_table {
        let _ = writeln!(out, "{s};");
    }
    for s in &t.sql.create_indexes {
        let _ = writeln!(out, "{s};");
    }
    for fk in t.sql.foreign_keys.iter().filter(|f| !f.sql.is_empty()) {
        let _ = writeln!(out, "{};", fk.sql);
    }

    let _ = writeln!(out, "\n-- 4. load ({dialect}; one transaction, advisory lock on the table)");
    let _ = writeln!(out, "{};", t.sql.create_staging);
    let _ = writeln!(out, "{};  -- per batch of {} rows", t.sql.copy, st.batch_size);
    for (column, sql) in &t.sql.reference_checks {
        let _ = writeln!(out, "{sql};  -- rejects rows whose {column} is not in the referenced table");
    }
    for s in &t.sql.merge {
        let _ = writeln!(out, "{s};");
    }
}
