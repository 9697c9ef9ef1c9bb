//! `etl plan` as text: for each stage the DuckDB read-and-cast SQL, the Polars checks, the
//! target DDL and the load SQL; then analytics and schedules.

use std::fmt::Write;

use super::extract::{duplicates_sql, select_sql, stage_raw_sql};
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

    let headers: Vec<String> = st.columns.iter().map(|c| c.header.clone()).collect();
    let _ = writeln!(out, "\n-- 1. read and cast (DuckDB: the CSV as text in file order, then typed)");
    let _ = writeln!(out, "{};", stage_raw_sql(st, &st.source_key, &headers));
    for sql in duplicates_sql(st) {
        let _ = writeln!(out, "{sql};");
    }
    let _ = writeln!(out, "{};", select_sql(st));

    let _ = writeln!(out, "\n-- 2. row checks (Polars; a row violating an `error` check is rejected, a `warn` check only counts)");
    for c in &st.checks {
        let _ = writeln!(out, "[{}] {}: {}", severity_word(c.severity), c.rule, c.condition);
        let _ = writeln!(out, "    violation: {}", c.violation);
    }
    let _ = writeln!(out, "\n-- 3. target DDL ({dialect}; run when the table is missing)");
    for s in &t.sql.create_table {
        let _ = writeln!(out, "{s};");
    }
    if !t.sql.constraints.is_empty() {
        let _ = writeln!(out, "-- after the first load into the new table:");
    }
    for s in &t.sql.constraints {
        let _ = writeln!(out, "{s};");
    }
    for s in &t.sql.create_indexes {
        let _ = writeln!(out, "{s};");
    }
    for fk in t.sql.foreign_keys.iter().filter(|f| !f.sql.is_empty()) {
        let _ = writeln!(out, "{};", fk.sql);
    }

    let _ = writeln!(out, "\n-- 4. lookups joined by step 1 (filled before it, in the stage's transaction)");
    for r in &st.lookups.references {
        let _ = writeln!(out, "{}: the values of {}.{} ({} must be one of them)", r.relation, r.table, r.ref_column, r.column);
    }
    if let Some(c) = &st.lookups.current {
        let _ = writeln!(out, "{c}: the table's current rows (a row equal to its current one is not written)");
    }
    if st.lookups.references.is_empty() && st.lookups.current.is_none() {
        let _ = writeln!(out, "(none)");
    }

    let _ = writeln!(out, "\n-- 5. load ({dialect}; one transaction, the table locked against other writers)");
    if t.dialect == super::Dialect::Postgres {
        let _ = writeln!(out, "-- a new or empty table (or mode append):");
        let _ = writeln!(out, "{};  -- one COPY, fed batch by batch ({} rows)", t.sql.copy_direct, st.batch_size);
        let _ = writeln!(out, "-- a table with rows:");
    }
    let _ = writeln!(out, "{};", t.sql.create_staging);
    let _ = writeln!(out, "{};  -- batches of {} rows", t.sql.copy, st.batch_size);
    for s in &t.sql.merge {
        let _ = writeln!(out, "{s};");
    }
}
