//! `etl plan` as text: the connections, then for each stage every statement its run sends, in
//! the order it sends them (transaction, table check or DDL, reuse, lookups, the DuckDB read and
//! cast, the Polars checks, the load, the state recorded); then analytics, schedules and the
//! run records.

use std::fmt::Write;

use super::compiled::{ConnectionPlan, Dialect, DuckStatements, MergeStep, PgStatements, Plan, ReadFile, StagePlan, TargetStatements, Test, severity_word};
use super::postgres::CURRENT_XID;
use super::{duck, records};
use crate::spec::model::{Compression, LoadMode};

/// Renders the plan, or only the named stage.
pub fn render(plan: &Plan, only_stages: &[String]) -> String {
    let mut out = String::new();
    let order: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(out, "plan for {}: {} stage(s), run order {}", plan.name, order.len(), order.join(" → "));
    let all = only_stages.is_empty();
    if all {
        connections(&mut out, plan);
    }
    for st in plan.stages.iter().filter(|s| all || only_stages.contains(&s.name)) {
        stage(&mut out, st);
    }
    if all {
        if !plan.analytics.is_empty() {
            let _ = writeln!(out, "\n== analytics ==");
            for a in &plan.analytics {
                let _ = writeln!(out, "\n-- {} (on {})", a.name, a.connection);
                if let Some(d) = &a.description {
                    let _ = writeln!(out, "-- {d}");
                }
                let _ = writeln!(out, "{};", a.sql);
                match &a.reads {
                    Ok(tables) => {
                        let names: Vec<&str> = tables.iter().map(|(t, _)| t.as_str()).collect();
                        let _ = writeln!(
                            out,
                            "-- reads {}: while they are as an earlier run found them, that run's result is reported (not with --force).\n\
                             -- First, once for all the analytics, in a transaction with their search path (below), rolled back: each\n\
                             -- table they read and each a stage of the run loaded, found in the catalog:\n{};\n\
                             -- and the state of each table they read that no stage of the run loaded or checked:",
                            if names.is_empty() { "no table".to_string() } else { names.join(", ") },
                            crate::plan::records::ANALYTIC_TABLE
                        );
                        for (_, state) in tables {
                            let _ = writeln!(out, "{state};");
                        }
                        let _ = writeln!(out, "-- then, on the run records' connection:\n{};\n-- and, with the result reported:\n{};", crate::plan::records::LAST_ANALYTIC, crate::plan::records::RECORD_ANALYTIC);
                    }
                    Err(why) => {
                        let _ = writeln!(out, "-- queried on every run: {why}");
                    }
                }
                let _ = writeln!(out, "-- sent in a transaction of its own, rolled back, as:");
                if let Some(q) = &a.search_path {
                    let _ = writeln!(out, "{q}");
                }
                if let Some(m) = &a.materialize {
                    let _ = writeln!(out, "{m};");
                }
                let _ = writeln!(out, "{};", a.run);
                for (cond, sql) in &a.expect {
                    let _ = writeln!(out, "-- expects every row to meet `{cond}`: the rows that do not, in the same transaction:\n{sql};");
                }
            }
        }
        if !plan.schedules.is_empty() {
            let _ = writeln!(out, "\n== schedules ==");
            for s in &plan.schedules {
                let stages = s.stages.as_ref().map_or("all".to_string(), |l| l.join(", "));
                let enabled = if s.enabled { "" } else { ", paused" };
                let catchup = match s.catchup {
                    crate::spec::model::Catchup::Skip => String::new(),
                    crate::spec::model::Catchup::Latest => ", catch-up: the latest missed firing".into(),
                    crate::spec::model::Catchup::All => format!(", catch-up: every missed firing (at most {})", s.max_catchup),
                };
                let retries = if s.retries > 0 { format!(", retries: {} (first after {})", s.retries, humantime::format_duration(s.retry_delay)) } else { String::new() };
                let _ = writeln!(out, "{}: cron \"{}\" ({}), stages: {stages}{enabled}{catchup}{retries}", s.name, s.cron, s.timezone);
            }
        }
        run_records(&mut out, plan);
    }
    out
}

/// The same plan as JSON, for `etl plan --output json`: the text's sections (`== stage assets ==`)
/// and their numbered steps (`-- 6. read and cast ...`), each with the statements and notes it
/// shows, in order. Built from the text, so the two always agree.
pub fn render_json(plan: &Plan, only_stages: &[String]) -> serde_json::Value {
    let text = render(plan, only_stages);
    let mut lines = text.lines();
    let headline = lines.next().unwrap_or_default().to_string();
    let mut sections: Vec<serde_json::Value> = Vec::new();
    // (title, the lines before its first step, its steps as (title, lines))
    type Section = (String, Vec<String>, Vec<(String, Vec<String>)>);
    let mut section: Option<Section> = None;
    let flush = |section: &mut Option<Section>, sections: &mut Vec<serde_json::Value>| {
        if let Some((title, head, steps)) = section.take() {
            let steps: Vec<serde_json::Value> =
                steps.into_iter().map(|(t, body)| serde_json::json!({ "step": t, "text": body.join("\n") })).collect();
            sections.push(serde_json::json!({ "section": title, "text": head.join("\n"), "steps": steps }));
        }
    };
    for line in lines {
        if let Some(title) = line.strip_prefix("== ").and_then(|l| l.strip_suffix(" ==")) {
            flush(&mut section, &mut sections);
            section = Some((title.to_string(), Vec::new(), Vec::new()));
            continue;
        }
        let Some((_, head, steps)) = section.as_mut() else { continue };
        let numbered = line.strip_prefix("-- ").and_then(|l| l.split_once(". ").filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit())));
        match numbered {
            Some(_) => steps.push((line.trim_start_matches("-- ").to_string(), Vec::new())),
            None if line.is_empty() => {}
            None => match steps.last_mut() {
                Some((_, body)) => body.push(line.to_string()),
                None => head.push(line.to_string()),
            },
        }
    }
    flush(&mut section, &mut sections);
    serde_json::json!({ "spec": plan.name, "plan": headline, "sections": sections })
}

fn connections(out: &mut String, plan: &Plan) {
    let _ = writeln!(out, "\n== connections ==");
    let _ = writeln!(out, "-- the run's own DuckDB database (in memory, every extract; ETL_DUCKDB_MEMORY sets the limit): {}", duck::configure(duck::DEFAULT_MEMORY, "{temp dir}"));
    let _ = writeln!(out, "-- its limit read back: {}", duck::MEMORY_LIMIT);
    let _ = writeln!(
        out,
        "-- before a stage's extract, when its lookups take more than 1/{} of that limit: {}; else: {}",
        crate::plan::extract::CURRENT_SHARE,
        duck::BOUND_JOINS,
        duck::UNBOUND_JOINS
    );
    for (name, c) in &plan.connections {
        let shown = match c {
            ConnectionPlan::S3(s3) => {
                let endpoint = s3.endpoint.clone().unwrap_or_else(|| "AWS".into());
                let prefix = s3.prefix.as_deref().map(|p| format!(", prefix {p:?}")).unwrap_or_default();
                format!("s3, bucket {} at {endpoint}{prefix}", s3.bucket)
            }
            ConnectionPlan::Local { dir } => format!("local directory {dir:?} (from the spec's directory)"),
            ConnectionPlan::Postgres(pg) => {
                let at = |v: &Option<String>, default: &str| v.clone().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| default.to_string());
                let url = if pg.url.as_ref().is_some_and(|u| !u.expose().trim().is_empty()) { "URL (not shown) with " } else { "" };
                format!(
                    "postgres, {url}host {}, port {}, database {}, user {}, schema {}",
                    at(&pg.host, "(default)"),
                    pg.port.map_or("(default)".to_string(), |p| p.to_string()),
                    at(&pg.database, "(default)"),
                    at(&pg.user, "(default)"),
                    pg.schema.as_deref().unwrap_or("public")
                )
            }
            ConnectionPlan::Duckdb { file } => format!("duckdb file {file:?} (from the spec's directory), attached as: {}", duck::attach(file)),
        };
        let _ = writeln!(out, "{name}: {shown}");
    }
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
    let packed = match st.csv.compression {
        Compression::Gzip | Compression::Zstd => format!(", {} (decoded into the run's spool; DuckDB reads the plain copy)", st.csv.compression.duckdb_name()),
        _ => String::new(),
    };
    let packed = match (&st.source.set, st.csv.compression) {
        (Some(_), Compression::Auto) => ", each file's compression by its extension (a gzip or zstd file is decoded into the run's spool)".to_string(),
        _ => packed,
    };
    let what = match &st.source.set {
        None => st.source.key.clone(),
        Some(set) => {
            let select = match set.select {
                crate::spec::model::Select::New => "the files whose content this stage has not loaded (the ledger etl_files)",
                crate::spec::model::Select::All => "every file",
            };
            let missing = match set.on_missing {
                crate::spec::model::OnMissing::Fail => "no file fails the run",
                crate::spec::model::OnMissing::Skip => "no file: the stage loads nothing",
            };
            let wait = set.wait.as_ref().map(|w| format!(", looked for every {}s until {} {}", w.poll.as_secs(), w.until.format("%H:%M:%S"), w.timezone)).unwrap_or_default();
            let commits = match set.atomicity {
                crate::spec::model::Atomicity::Stage => "",
                crate::spec::model::Atomicity::File => "; each file in a transaction of its own (atomicity: file), the statements below run once per file",
            };
            format!("files {} (in name order, {select}; {missing}{wait}{commits})", set.pattern.text())
        }
    };
    let _ = writeln!(
        out,
        "source: {} / {what} (csv: delimiter {:?}, header {}, {}, nulls [{}]{packed})",
        st.source.connection,
        st.csv.delimiter,
        st.csv.header,
        st.csv.encoding.duckdb_name(),
        nulls.join(", ")
    );
    let mode = match t.mode {
        LoadMode::Upsert => format!("upsert on ({})", t.key.join(", ")),
        LoadMode::Append => "append".into(),
        LoadMode::Replace if t.delete_missing.is_some() => format!("replace on ({}): rows upserted, then those whose key the file lacks deleted (rows other tables reference stay in place)", t.key.join(", ")),
        LoadMode::Replace => "replace".into(),
        LoadMode::History => format!(
            "history of ({}) by {}: versions [{}, {}) per key, the load's date {}{}",
            t.key.join(", "),
            t.history.as_ref().map_or("?", |h| h.as_of.as_str()),
            t.history.as_ref().map_or("valid_from", |h| h.valid_from.as_str()),
            t.history.as_ref().map_or("valid_to", |h| h.valid_to.as_str()),
            t.history.as_ref().map_or("?", |h| h.date.as_str()),
            if t.history.as_ref().is_some_and(|h| h.close) { "; a key the file lacks is closed" } else { "" }
        ),
        LoadMode::Snapshot => format!(
            "snapshot by {} (each date's rows replaced by its load, other dates untouched){}",
            t.as_of.as_deref().unwrap_or("?"),
            if t.key.is_empty() { String::new() } else { format!(", key ({}) per date", t.key.join(", ")) }
        ),
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
    let _ = writeln!(out, "target: {} / {} ({dialect}), {mode}, batches of {}, {budget}", t.connection, t.qualified, st.batch_size);
    match &t.statements {
        TargetStatements::Postgres(pg) => postgres_stage(out, st, pg),
        TargetStatements::Duckdb(d) => duckdb_stage(out, st, d),
    }
    if st.source.set.is_some() {
        let _ = writeln!(out, "\n-- the file ledger (on this stage's target): the set's loaded files read before the load and again under its lock; each file loaded recorded in the stage's transaction");
        let (loaded, record) = match t.dialect {
            Dialect::Postgres => (records::LEDGER_LOADED, records::LEDGER_RECORD),
            Dialect::Duckdb => (records::DUCKDB_LEDGER_LOADED, records::DUCKDB_LEDGER_RECORD),
        };
        let _ = writeln!(out, "{loaded};");
        let _ = writeln!(out, "{record};");
    }
}

fn lines<'a>(out: &mut String, statements: impl IntoIterator<Item = &'a String>) {
    for s in statements {
        let _ = writeln!(out, "{s};");
    }
}

fn postgres_stage(out: &mut String, st: &StagePlan, pg: &PgStatements) {
    let t = &st.target;
    let _ = writeln!(out, "\n-- 1. the stage's transaction (PostgreSQL; a dry run keeps one for every stage, each under a savepoint)");
    lines(out, &pg.settings);
    let _ = writeln!(out, "{}", pg.advisory_lock);
    if pg.settings.iter().any(|s| s.contains("lock_timeout")) {
        let _ = writeln!(out, "-- when a lock wait times out, who holds the locks (read on another session; $1 = the tables, $2 = the advisory key):");
        let _ = writeln!(out, "{};", crate::plan::postgres::LOCK_HOLDERS);
    }
    let _ = writeln!(out, "{};  -- a dry run (`{};` when the stage is over its budget)", pg.savepoint, pg.rollback_to_savepoint);

    let _ = writeln!(out, "-- when its last load may be reused: the table's definition before the check below (a repaired table is loaded again)");
    let _ = writeln!(out, "{}", pg.exists);
    let _ = writeln!(out, "{};", pg.definition);

    let _ = writeln!(out, "\n-- 2. the target table: checked against the spec, or created when missing");
    let _ = writeln!(out, "{}", pg.read_columns);
    let _ = writeln!(out, "-- when it exists (its key unique, missing indexes and foreign keys added, locked against other writers):");
    if let Some(q) = &pg.key_is_unique {
        let _ = writeln!(out, "{q}");
    }
    lines(out, &t.sql.create_indexes);
    for (fk, exists) in t.sql.foreign_keys.iter().zip(&pg.foreign_key_exists) {
        let _ = writeln!(out, "{exists}");
        let _ = writeln!(out, "{};  -- when missing", fk.sql);
    }
    let _ = writeln!(out, "{};", pg.lock);
    let _ = writeln!(out, "-- when it is missing (created bare but for an identity's key; the other keys, indexes and foreign keys follow the first load):");
    let _ = writeln!(out, "{}", pg.schema_exists);
    let _ = writeln!(out, "{};  -- when missing", pg.create_schema);
    lines(out, &t.sql.create_table);

    let _ = writeln!(out, "\n-- 3. reuse (see the run records): skipped, or only its changed lines read, when the tables are as its last load left them");
    for r in &pg.referenced {
        let _ = writeln!(out, "{}", r.exists);
        let _ = writeln!(out, "{};", r.lock);
        let _ = writeln!(out, "{};", r.state);
    }
    let _ = writeln!(out, "{}", pg.exists);
    let _ = writeln!(out, "{};", pg.state);
    if let Some(n) = &pg.newest_as_of {
        let _ = writeln!(out, "-- a history: when the stage differs from its last load's only in the date, that load was of the newest date loaded, and this one is not earlier, only the changed lines are read");
        let _ = writeln!(out, "{n};");
    }

    let _ = writeln!(out, "\n-- 4. is the existing table empty?");
    let _ = writeln!(out, "{};", pg.is_empty);
    if let Some(d) = &pg.delete_all {
        let _ = writeln!(out, "{d};  -- mode replace: a table with rows is emptied");
    }

    let _ = writeln!(out, "\n-- 5. lookups the extract joins (exported from the stage's transaction into DuckDB)");
    for r in &pg.reference_lookups {
        let _ = writeln!(out, "-- {} must be one of the values of {}", r.column, r.table);
        let _ = writeln!(out, "{}", r.exists);
        let _ = writeln!(out, "{};  -- a new table: {};", r.lock, r.lock_for_new_table);
        let _ = writeln!(out, "{};", r.lookup.export);
        let _ = writeln!(out, "{};", r.lookup.create);
        let _ = writeln!(out, "{};", r.lookup.fill);
    }
    if let Some(c) = &pg.current_lookup {
        let _ = writeln!(
            out,
            "-- the table's current rows (a row equal to its current one is not written; left empty for an empty table, when only changed lines are read, \
             or when the table or its export is larger than 1/{} of DuckDB's memory limit: the merge compares then)",
            crate::plan::extract::CURRENT_SHARE
        );
        let _ = writeln!(out, "{}", c.size);
        let _ = writeln!(out, "{};", c.lookup.export);
        let _ = writeln!(out, "{};", c.lookup.create);
        let _ = writeln!(out, "{};", c.lookup.fill);
    }
    for (h, l) in st.lookups.held.iter().zip(&pg.held_lookups) {
        let _ = writeln!(out, "-- the values of {} the table's rows hold, with their keys (a row of the file whose value another row holds is rejected)", h.column);
        let _ = writeln!(out, "{};", l.export);
        let _ = writeln!(out, "{};", l.create);
        let _ = writeln!(out, "{};", l.fill);
    }
    if pg.reference_lookups.is_empty() && pg.current_lookup.is_none() && pg.held_lookups.is_empty() {
        let _ = writeln!(out, "(none)");
    }

    extract(out, st, 6);
    checks(out, st, 7);

    let _ = writeln!(out, "\n-- 8. load (PostgreSQL; one binary COPY, fed batch by batch, {} rows each)", st.batch_size);
    if let Some(f) = &t.sql.forget_dates {
        let _ = writeln!(out, "-- a history table this transaction created: the dates of a dropped table of that name forgotten\n{f};");
    }
    let _ = writeln!(out, "-- a table this transaction created:");
    let _ = writeln!(out, "{};", t.sql.copy_frozen);
    let _ = writeln!(out, "-- (a single pass that found a repeated key empties what it copied, then COPYs again: `{}`; into the staging table `{}`; an existing table is read in two passes)", t.sql.uncopy_created, t.sql.uncopy_staged);
    lines(out, &t.sql.constraints);
    lines(out, &t.sql.create_indexes);
    for (fk, exists) in t.sql.foreign_keys.iter().zip(&pg.foreign_key_exists) {
        let _ = writeln!(out, "{exists}");
        let _ = writeln!(out, "{};", fk.sql);
    }
    let _ = writeln!(out, "-- an empty table (or mode append; a dry run's new table):");
    let _ = writeln!(out, "{};", t.sql.copy_direct);
    let _ = writeln!(out, "-- a table with rows:");
    let _ = writeln!(out, "{};", t.sql.create_staging);
    let _ = writeln!(out, "{};", t.sql.copy);
    if let Some(m) = &pg.missing {
        let how = if m.restore.is_some() { "flagged (`_deleted_at`, $1 = the run's date)" } else { "deleted" };
        let limit = if t.max_delete_ratio < 1.0 { format!(", unless more than {} of its rows", t.max_delete_ratio) } else { String::new() };
        let _ = writeln!(out, "-- the file's keys copied in; the table's other keys {how} after the merge{limit}");
        if let Some(a) = &m.add_column {
            let _ = writeln!(out, "{a};  -- an existing table without the column");
        }
        let _ = writeln!(out, "{};", m.create_keys);
        let _ = writeln!(out, "{};", m.copy_keys);
        let _ = writeln!(out, "{};", m.count);
        if !m.referenced_by.is_empty() {
            let _ = writeln!(out, "-- on_delete: restrict: rows of other tables referencing a key about to be deleted refuse the load (each only when its table exists)");
        }
        guarded(out, &m.referenced_by);
    }
    merge(out, &t.sql.merge);
    if pg.newest_as_of.is_some() && st.undated.is_some() {
        let _ = writeln!(out, "-- a history reading only its changed lines: the versions of the staged keys compared, and those of the keys of the last file no line of this one holds closed unless a changed line holds them");
        if let Some(v) = pg.missing.as_ref().and_then(|m| m.vanished.as_ref()) {
            let _ = writeln!(out, "{};", v.jit_off);
            let _ = writeln!(out, "{};", v.create);
            let _ = writeln!(out, "{};", v.copy);
            let _ = writeln!(out, "{};", v.gone);
            let _ = writeln!(out, "{};  -- when some are", v.rows);
        }
        merge(out, &t.sql.history_lines);
    }
    if let Some(m) = &pg.missing {
        if !m.cascade.is_empty() {
            let _ = writeln!(out, "-- on_delete: cascade: the rows referencing the deleted keys go first (each only when its tables exist)");
        }
        guarded(out, &m.cascade);
        if let (Some(create), Some(flag)) = (&m.create_held, &m.flag_referenced) {
            let _ = writeln!(out, "-- on_delete: soft: the keys another table references are flagged ($1 = the run's date), the others deleted");
            let _ = writeln!(out, "{create};");
            guarded(out, &m.hold);
            let _ = writeln!(out, "{flag};");
        }
        let _ = writeln!(out, "{};", m.apply);
        if let Some(r) = &m.restore {
            let _ = writeln!(out, "{r};");
        }
    }

    let _ = writeln!(out, "\n-- 9. the table's state, recorded with the load for the next run to compare");
    if let Some(f) = &pg.fresh_state {
        let _ = writeln!(out, "-- a table that was empty holds only its rows, written by this transaction: its state without a scan ($1 = rows, $2 = the id)");
        let _ = writeln!(out, "{CURRENT_XID};");
        let _ = writeln!(out, "{f};");
    } else if pg.moved_state.is_some() || pg.upserted_state.is_some() {
        let _ = writeln!(out, "{CURRENT_XID};");
    } else {
        let _ = writeln!(out, "-- a Citus table: its rows are written by the workers' transactions, so its state is always read");
    }
    if let Some(m) = &pg.moved_state {
        let _ = writeln!(out, "-- a history whose state before was read under the lock: its state after, from the versions its merge took out and the rows it wrote ($1 = the state before, $2 = rows, $3 = the id; null: read it)");
        let _ = writeln!(out, "{m};");
    }
    if let Some(u) = &pg.upserted_state {
        let _ = writeln!(out, "-- an upsert whose state before was read under the lock: its state after, from the rows its merge wrote and the versions it replaced ($1 = the state before, $2 = rows written, $3 = the id, $4 = rows updated, $5 = their old xmins' hash sum; null: read it)");
        let _ = writeln!(out, "{u};");
    }
    let _ = writeln!(out, "{};  -- otherwise", pg.state);
    if !st.contracts.is_empty() {
        let _ = writeln!(out, "\n-- 10. the contracts, in the stage's transaction before it commits (a failed `error` one rolls the stage back, exit 5)");
        for c in &st.contracts {
            let sev = crate::plan::severity_word(c.severity);
            match &c.kind {
                crate::plan::ContractKind::RowCount { min, max, change_from_last } => {
                    let bound = |b: &Option<u64>| b.map_or("-".to_string(), |n| n.to_string());
                    let _ = writeln!(out, "-- check {} ({sev}): rows read between {} and {}", c.name, bound(min), bound(max));
                    if let Some((ratio, sql)) = change_from_last {
                        let _ = writeln!(out, "-- ... and within {ratio} of the last load's for an earlier date ($1 spec, $2 stage, $3 table, $4 the run's date):\n{sql};");
                    }
                }
                crate::plan::ContractKind::Totals { column, of, equals, manifest, trailer, tolerance, .. } => {
                    let of = if *of == crate::spec::model::TotalOf::Count { "count" } else { "sum" };
                    let control = match (equals, manifest, trailer) {
                        (Some(v), _, _) => v.to_string(),
                        (None, Some((connection, file, path)), _) => format!("the number at `{path}` of {file} on {connection} (read when the run starts)"),
                        (None, None, Some(n)) => format!("the sum of field {n} of the files' trailer lines"),
                        (None, None, None) => "nothing".into(),
                    };
                    let _ = writeln!(out, "-- check {} ({sev}): the {of} of {column} over the load's valid rows, counted as they are staged, = {control} within {tolerance}", c.name);
                }
                crate::plan::ContractKind::Freshness { newest, max_age, .. } => {
                    let _ = writeln!(out, "-- check {} ({sev}): the newest value no older than {} ($1 = the run's date)\n{newest};", c.name, max_age.1);
                }
                crate::plan::ContractKind::Sql { query } => {
                    let _ = writeln!(out, "-- check {} ({sev}): no offending row\n{query};", c.name);
                }
            }
        }
    }
}

/// Statements sent only when the tables they name exist, each after its check.
fn guarded(out: &mut String, statements: &[crate::plan::Guarded]) {
    for g in statements {
        let _ = writeln!(out, "{}", g.exists);
        let _ = writeln!(out, "{};", g.sql);
    }
}

fn duckdb_stage(out: &mut String, st: &StagePlan, d: &DuckStatements) {
    let t = &st.target;
    let _ = writeln!(out, "\n-- 1. the stage's transaction (DuckDB: the target file is attached to the run's database; a dry run keeps one for every stage)");
    let _ = writeln!(out, "{};", duck::BEGIN);

    let _ = writeln!(out, "\n-- 2. the target table: checked against the spec, or created when missing");
    let _ = writeln!(out, "{}", d.read_columns);
    lines(out, &t.sql.create_table);
    lines(out, &t.sql.create_indexes);

    let _ = writeln!(out, "\n-- 3. lookups the extract joins (the target's tables, read in place)");
    for r in &st.lookups.references {
        let _ = writeln!(out, "{}: the values of {}.{} ({} must be one of them)", r.relation, r.table, r.ref_column, r.column);
    }
    if let Some(c) = &st.lookups.current {
        let _ = writeln!(out, "{c}: the table's current rows (a row equal to its current one is not written)");
    }
    if st.lookups.references.is_empty() && st.lookups.current.is_none() {
        let _ = writeln!(out, "(none)");
    }

    extract(out, st, 4);
    checks(out, st, 5);

    let _ = writeln!(out, "\n-- 6. load (DuckDB; batches of {} rows written as CSV to one file, copied once the rows have streamed)", st.batch_size);
    let _ = writeln!(out, "{};", t.sql.create_staging);
    if let Some(copy) = &t.sql.copy_file {
        let _ = writeln!(out, "{copy};");
    }
    if let Some(c) = &t.sql.count_existing {
        let _ = writeln!(out, "{c};");
    }
    merge(out, &t.sql.merge);
    let _ = writeln!(out, "{};  -- {}; when it failed or is over its budget (a dry run: {};)", duck::COMMIT, duck::ROLLBACK, t.sql.drop_staging);
}

fn extract(out: &mut String, st: &StagePlan, n: u32) {
    let e = &st.extract;
    let headers: Vec<String> = st.columns.iter().filter(|c| c.reads_file()).map(|c| c.header.clone()).collect();
    let passes = if e.single.is_some() {
        "one pass streaming the typed rows while each record's number, file and key go to a census; only when a key repeats, two: the first keeps each record's number, file and key, the second streams the typed rows"
    } else {
        "two passes: the first keeps each record's number, file and key, the second streams the typed rows"
    };
    let _ = writeln!(
        out,
        "\n-- {n}. read and cast (DuckDB, over a view numbering the CSV's records in file order, each pass on one thread with the file the probe side of its joins; {passes})"
    );
    if let Some(one) = &e.single {
        let _ = writeln!(
            out,
            "-- first, one pass: the census created empty; each scan's view (as below, its reject tables cleared first) read once, its typed rows streamed (the repeated keys' columns null, the file number last) and each batch's {} appended to the census from a second connection as it passes:",
            one.census_columns.join(", ")
        );
        if one.hashes > 0 {
            let _ = writeln!(out, "-- (the key's hash, {}, is looked at for the first {} records as they pass: a repeat among them stops the pass at once)", crate::plan::extract::hash_column(0), crate::plan::extract::EARLY_RECORDS);
        }
        let _ = writeln!(out, "{};", one.census_empty);
        let _ = writeln!(out, "{};\n{};\n{};", e.ordered_pass, one.select, e.ordered_pass_reset);
        let _ = writeln!(out, "{};", e.malformed);
        let _ = writeln!(out, "{};", e.count);
        if !e.duplicates.is_empty() {
            let _ = writeln!(out, "-- the repeated keys found from that census (the statements below), then counted:");
            for d in &e.duplicates {
                let _ = writeln!(out, "{};", d.found);
            }
            let _ = writeln!(out, "-- only when one is not 0, or a scan of several files fails: what was copied is emptied (see the load) and the files are read again in the two passes below, which place each repeat and name the failing file");
        } else {
            let _ = writeln!(out, "-- only when a scan of several files fails: what was copied is emptied (see the load) and the files are read again in the two passes below, which name the failing file");
        }
    }
    let _ = writeln!(out, "{}", e.clear_rejects);
    let file = |path, number| ReadFile { path, number, captures: &[] };
    if st.source.set.is_some() {
        let _ = writeln!(out, "-- the set's files in one scan, in name order (`{{capture}}`: each file's value):");
        let _ = writeln!(out, "{};", e.read.sql(&[file("<file 1>", 0), file("<file 2>", 1)], &headers, 0));
        let _ = writeln!(out, "{};\n{};\n{};", e.ordered_pass, e.census, e.ordered_pass_reset);
        let _ = writeln!(out, "{};", e.malformed);
        let _ = writeln!(out, "{};", e.count);
        let _ = writeln!(out, "-- files whose header orders the columns otherwise: one scan per header, numbered on from the records before it, its reject tables cleared first:");
        let _ = writeln!(out, "{};", e.read.sql(&[file("<file>", 2)], &headers, 1000));
        let _ = writeln!(out, "{};\n{};\n{};", e.ordered_pass, e.census_append, e.ordered_pass_reset);
    } else {
        let _ = writeln!(out, "{};", e.read.sql(&[file(&st.source.key, 0)], &headers, 0));
        let _ = writeln!(out, "{};\n{};\n{};", e.ordered_pass, e.census, e.ordered_pass_reset);
        let _ = writeln!(out, "{};", e.malformed);
        let _ = writeln!(out, "{};", e.count);
    }
    if !e.duplicates.is_empty() {
        let _ = writeln!(
            out,
            "-- the repeated keys and unique values: the hashes that repeat, then exactly the values among their records; on one thread (so the aggregates spill past the memory limit), in {{passes}} = ⌈records / {}⌉ passes (pass 0, 1, ...), each over a share of the hashes:",
            e.records_per_pass
        );
        let _ = writeln!(out, "{};", e.one_thread);
        for d in &e.duplicates {
            let _ = writeln!(out, "{};\n{};", d.create, d.find);
        }
        let _ = writeln!(out, "{};", e.one_thread_reset);
    }
    let _ = writeln!(out, "-- the second pass, streamed (each scan's view again; it must yield as many records as the first counted):");
    let _ = writeln!(out, "{};", e.ordered_pass);
    let _ = writeln!(out, "{};", e.select);
    let _ = writeln!(out, "{};", e.ordered_pass_reset);
    let _ = writeln!(out, "-- rejected records (only when there are): their fields as read, a third pass over each scan's view keeping only them:");
    let _ = writeln!(out, "{};", e.rejected_create);
    let _ = writeln!(out, "{};", e.ordered_pass);
    let _ = writeln!(out, "{};", e.rejected_fields);
    let _ = writeln!(out, "{};", e.ordered_pass_reset);
    if let Some(k) = &e.keys {
        let _ = writeln!(out, "-- delete_missing: the file's keys (a rejected line's too), for the target to keep");
        let _ = writeln!(out, "{k};");
    }
}

fn checks(out: &mut String, st: &StagePlan, n: u32) {
    let _ = writeln!(out, "\n-- {n}. row checks (Polars; a row violating an `error` check is rejected, a `warn` check only counts)");
    for c in &st.checks {
        let _ = writeln!(out, "[{}] {}: {}", severity_word(c.severity), c.rule, c.condition);
        match &c.test {
            Test::Frame(violation) => {
                // A NUL byte (the NUL check's literal) written `\0`, as rejects show it.
                let _ = writeln!(out, "    violation: {}", violation.to_string().replace('\0', "\\0"));
            }
            Test::Rule { expr, tolerance } => {
                let within = tolerance.map(|t| format!(", sides equal within {t}")).unwrap_or_default();
                let _ = writeln!(out, "    per row, exact decimals{within}: {expr}");
            }
        }
    }
}

fn merge(out: &mut String, steps: &[MergeStep]) {
    for s in steps {
        let _ = writeln!(out, "{};", s.sql());
    }
}

fn run_records(out: &mut String, plan: &Plan) {
    let Some(first) = plan.stages.first() else { return };
    let _ = writeln!(out, "\n== run records (on the first selected stage's target; a dry run records nothing) ==");
    match first.target.dialect {
        Dialect::Postgres => {
            let _ = writeln!(out, "-- the engine's migrations (migrations/) are applied first");
            for s in [
                records::BEGIN_RUN,
                records::HOLD_RUN,
                records::RUNNING_RUNS,
                records::TRY_RUN,
                records::ABANDON_RUN,
                records::RELEASE_RUN,
                records::LAST_LOAD,
                records::REJECTS_OF,
                records::RECORD_STAGE,
                records::COPY_REJECTS,
                records::FINISH_RUN,
            ] {
                let _ = writeln!(out, "{s};");
            }
            if plan.stages.iter().any(|s| !s.contracts.is_empty()) {
                let _ = writeln!(out, "-- each stage's contract results, with its record:\n{};", records::RECORD_CHECK);
            }
            if plan.stages.iter().any(|s| s.source.set.as_ref().is_some_and(|f| f.atomicity == crate::spec::model::Atomicity::File)) {
                let _ = writeln!(
                    out,
                    "-- `etl run --distribute` queues the files of the stages that commit file by file, on their target; it and any `etl worker` claim them (a lease, renewed every third of it on a connection of its own), each file's row done in its load's transaction (a stage with a key or unique column commits its files in the set's order: a file waits for the ones queued before it, and hands its claim back while one of them waits for a worker), and the run waits for the stage's files:"
                );
                for s in [records::QUEUE_FILE, records::QUEUE_CLAIM, records::QUEUE_RENEW, records::QUEUE_TURN, records::QUEUE_HAND_BACK, records::QUEUE_DONE, records::QUEUE_FAILED, records::QUEUE_LEFT, records::QUEUE_ENDS] {
                    let _ = writeln!(out, "{s};");
                }
            }
            let _ = writeln!(out, "-- `etl backfill` first reads the dates already loaded:\n{};", records::DATES_DONE);
            let _ = writeln!(out, "-- `etl rejects` reads the rejects, and a replay marks each row it loaded, in its load's transaction:\n{};\n{};", records::REJECTS_LIST, records::MARK_REPLAYED);
            let _ = writeln!(out, "-- `etl report` reads the runs, their stages, and the reported run's rejects, contracts and files:");
            for s in [records::REPORT_RUNS, records::REPORT_STAGES, records::REPORT_REJECTS_BY_RULE, records::REPORT_REJECTS_BY_COLUMN, records::REPORT_CHECKS, records::REPORT_FILES] {
                let _ = writeln!(out, "{s};");
            }
        }
        Dialect::Duckdb => {
            let _ = writeln!(out, "{}", records::DUCKDB_TABLES.trim());
            for s in [records::DUCKDB_BEGIN_RUN, records::DUCKDB_RECORD_STAGE, records::DUCKDB_FINISH_RUN] {
                let _ = writeln!(out, "{s};");
            }
            let _ = writeln!(out, "-- the rejects are appended to {}", records::DUCKDB_REJECTS_TABLE);
            let _ = writeln!(out, "-- `etl backfill` first reads the dates already loaded:\n{};", records::DUCKDB_DATES_DONE);
            let _ = writeln!(out, "-- `etl report` reads the runs, their stages, and the reported run's rejects and files:");
            for s in [records::DUCKDB_REPORT_RUNS, records::DUCKDB_REPORT_STAGES, records::DUCKDB_REPORT_REJECTS_BY_RULE, records::DUCKDB_REPORT_REJECTS_BY_COLUMN, records::DUCKDB_REPORT_FILES] {
                let _ = writeln!(out, "{s};");
            }
        }
    }
}
