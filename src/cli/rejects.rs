//! `etl rejects`: the rejects the run records keep, listed one a line, shown in full with each
//! row's fields as read, one stage's rejected rows exported as a CSV file with its headers, to
//! correct, or replayed: checked again under the spec as it is now and loaded where they pass.

use std::fmt::Write as _;

use super::args::{Output, RejectsAction, RejectsArgs};
use super::error::CliError;
use super::prepare::prepare;
use super::render::{print, table};
use crate::exec::postgres::records::StoredReject;
use crate::{exec, exit};

/// Runs an `etl rejects` action.
pub fn run(action: RejectsAction) -> Result<u8, CliError> {
    match action {
        RejectsAction::List(args) => {
            let rejects = read(&args)?.1;
            print(&match args.output {
                Output::Json => json(&rejects),
                Output::Text => list(&rejects),
            });
        }
        RejectsAction::Show(args) => {
            let rejects = read(&args)?.1;
            print(&match args.output {
                Output::Json => json(&rejects),
                Output::Text => show(&rejects),
            });
        }
        RejectsAction::Replay { select, from_file } => return replay(select, from_file),
        RejectsAction::Export { select, out } => {
            let (p, rejects) = read(&select)?;
            let stages: std::collections::BTreeSet<&str> = rejects.iter().map(|r| r.stage.as_str()).collect();
            let stage = match (select.stage.as_deref(), stages.len()) {
                (Some(s), _) => s.to_string(),
                (None, 0) => {
                    eprintln!("no rejects to export");
                    return Ok(exit::OK);
                }
                (None, 1) => stages.iter().next().map(|s| (*s).to_string()).unwrap_or_default(),
                (None, _) => {
                    return Err(CliError::flag(
                        "etl rejects export",
                        format!("the rejects are of several stages ({})", stages.iter().copied().collect::<Vec<_>>().join(", ")),
                        "name one with --stage: a CSV file holds one stage's columns",
                    ));
                }
            };
            let st = p.plan.stages.iter().find(|s| s.name == stage).ok_or_else(|| CliError::flag("etl rejects export", format!("no stage `{stage}`"), "name a stage of the spec"))?;
            let csv = export(&st.extract.rejected_headers, rejects.iter().filter(|r| r.stage == stage), None, true).0;
            match out {
                Some(path) => std::fs::write(&path, csv).map_err(|e| CliError::flag("etl rejects export --out", format!("cannot write {}: {e}", path.display()), "give a file in a directory you can write"))?,
                None => print(&String::from_utf8_lossy(&csv)),
            }
        }
    }
    Ok(exit::OK)
}

/// `etl rejects replay`: the stage's rejected rows of its latest load (those with a record, not
/// replayed yet) written as a file in a dialect the stage reads, and loaded as `etl run --stage
/// S --force` would load such a file, for the run's business date; each row that passes marks
/// its rejects replayed in the load's transaction.
fn replay(args: RejectsArgs, from_file: Option<std::path::PathBuf>) -> Result<u8, CliError> {
    let what = "etl rejects replay";
    if args.run.is_some() {
        return Err(CliError::flag(
            what,
            "a replay loads the rejected rows of each stage's latest load",
            "leave out --run: a later load may hold newer rows for the keys of an earlier one's rejects",
        ));
    }
    let (p, rejects) = read(&args)?;
    let pending: Vec<&StoredReject> = rejects.iter().filter(|r| r.severity == "error" && r.replayed_by.is_none() && r.record.is_some()).collect();
    let stages: std::collections::BTreeSet<&str> = pending.iter().map(|r| r.stage.as_str()).collect();
    let stage = match (args.stage.as_deref(), stages.len()) {
        (Some(s), _) => s.to_string(),
        (None, 0) => String::new(),
        (None, 1) => stages.iter().next().map(|s| (*s).to_string()).unwrap_or_default(),
        (None, _) => {
            return Err(CliError::flag(what, format!("rejected rows of several stages ({}) wait", stages.iter().copied().collect::<Vec<_>>().join(", ")), "name one with --stage"));
        }
    };
    let pending: Vec<&StoredReject> = pending.into_iter().filter(|r| r.stage == stage).collect();
    let Some(first) = pending.first() else {
        eprintln!("no rejected row to replay{}", args.rule.as_deref().map(|r| format!(" for rule {r}")).unwrap_or_default());
        return Ok(exit::OK);
    };
    let (of_run, date) = (first.run_id, first.business_date.as_deref().and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()));
    // The spec as it is now, for the business date of the load whose rows these are (a column
    // `value: "{{ run.date }}"` takes that date, as it did then).
    let p = match date {
        Some(d) if args.spec.date.is_none() && d != p.opts.date => {
            let mut dated = args.clone();
            dated.spec.date = Some(d);
            prepare(&dated.as_run_args())?
        }
        _ => p,
    };
    let mut plan = p.plan.clone();
    let st = plan.stages.iter_mut().find(|s| s.name == stage).ok_or_else(|| CliError::flag(what, format!("no stage `{stage}`"), "name a stage of the spec"))?;
    let replayable = match st.target.mode {
        crate::spec::model::LoadMode::Upsert => st.target.delete_missing.is_none(),
        crate::spec::model::LoadMode::Append => true,
        _ => false,
    };
    if st.columns.iter().any(|c| matches!(c.source, crate::plan::ColumnSource::Path(_))) {
        return Err(CliError::flag(
            what,
            format!("stage `{stage}` takes columns from its files' paths, which a rejected row's record does not keep"),
            "correct the files and load them again with `etl run`",
        ));
    }
    if !replayable {
        return Err(CliError::flag(
            what,
            format!("stage `{stage}` replaces what its file does not hold (its mode or `delete_missing`), so a file of a few rows cannot be loaded alone"),
            "correct the file and load it again with `etl run`",
        ));
    }
    let dir = p.opts.temp_dir.clone();
    let write_failed = |e: std::io::Error| CliError::System { what: "write the rows to replay".into(), message: e.to_string() };
    let rows = match &from_file {
        // A corrected file, in the dialect `export` writes: its rows stand for the rejected rows
        // with their keys.
        Some(file) => {
            let headers: Vec<String> = st
                .target
                .key
                .iter()
                .map(|k| st.columns.iter().find(|c| &c.name == k && c.reads_file()).map(|c| c.header.clone()))
                .collect::<Option<_>>()
                .filter(|h: &Vec<String>| !h.is_empty())
                .ok_or_else(|| CliError::flag(what, format!("stage `{stage}` has no key read from its file to match corrected rows with"), "replay the stored rows, without --from-file"))?;
            let mut rows: std::collections::HashMap<Vec<String>, Vec<(String, i64)>> = std::collections::HashMap::new();
            for r in &pending {
                let fields = r.record.as_ref().and_then(|v| v.as_object());
                let key: Vec<String> = headers.iter().map(|h| fields.and_then(|f| f.get(h)).and_then(|v| v.as_str()).unwrap_or_default().to_string()).collect();
                rows.entry(key).or_default().push((r.source.clone(), r.line));
            }
            std::fs::copy(file, dir.join("replay.csv")).map_err(|e| CliError::flag(what, format!("cannot read {}: {e}", file.display()), "give the corrected CSV file `etl rejects export` wrote"))?;
            st.csv.header = true;
            st.csv.null_values = vec![String::new()];
            exec::context::ReplayedRows::Keys { headers, rows }
        }
        // The rows in the stage's own dialect but plain UTF-8 text, each once, in line order.
        None => {
            let null = st.csv.null_values.first().cloned().unwrap_or_default();
            let (csv, lines) = export(&st.extract.rejected_headers, pending.iter().copied(), Some(&null), st.csv.header);
            std::fs::write(dir.join("replay.csv"), csv).map_err(write_failed)?;
            exec::context::ReplayedRows::Lines(lines)
        }
    };
    st.csv.delimiter = ",".into();
    st.csv.quote = "\"".into();
    st.csv.escape = "\"".into();
    st.csv.encoding = crate::spec::model::Encoding::Utf8;
    st.csv.compression = crate::spec::model::Compression::None;
    st.source.connection = REPLAY_CONNECTION.into();
    st.source.key = "replay.csv".into();
    st.source.set = None;
    st.extract = crate::plan::extract::compile(st, st.extract.census_on_disk);
    plan.connections.insert(REPLAY_CONNECTION.into(), crate::plan::ConnectionPlan::Local { dir: dir.display().to_string() });
    let mut opts = p.opts.clone();
    opts.stages = Some(vec![stage.clone()]);
    opts.force = true;
    if let Some(d) = date {
        opts.date = d;
    }
    opts.replay = Some(exec::context::Replay { stage: stage.clone(), of_run, rows });
    let report = exec::run(&plan, &opts)?;
    let replayed = report.stages.iter().map(|s| s.replayed.len()).sum::<usize>();
    match args.output {
        Output::Json => print(&format!("{}\n", serde_json::to_string_pretty(&report).unwrap_or_default())),
        Output::Text => {
            print(&super::render::text(&report));
            let read = lines_count(&report);
            match &from_file {
                Some(file) => print(&format!("replayed {read} corrected rows of {} for run {of_run}: {replayed} rejected rows loaded by key\n", file.display())),
                None => print(&format!("replayed {read} rejected rows of run {of_run}: {replayed} loaded, {} still rejected\n", read.saturating_sub(replayed))),
            }
        }
    }
    Ok(report.exit_code())
}

/// The connection a replay reads its file from.
const REPLAY_CONNECTION: &str = "__replay";

fn lines_count(report: &exec::RunReport) -> usize {
    report.stages.iter().map(|s| s.rows_read as usize).sum()
}

fn read(args: &RejectsArgs) -> Result<(super::prepare::Prepared, Vec<StoredReject>), CliError> {
    let p = prepare(&args.as_run_args())?;
    let rejects = exec::admin::rejects(&p.plan, &p.opts, args.run, args.rule.as_deref(), args.line)?;
    Ok((p, rejects))
}

fn json(rejects: &[StoredReject]) -> String {
    format!("{}\n", serde_json::to_string_pretty(rejects).unwrap_or_default())
}

fn list(rejects: &[StoredReject]) -> String {
    let header: Vec<String> = ["stage", "run", "file", "line", "column", "rule", "value", "message"].map(String::from).to_vec();
    let rows: Vec<Vec<String>> = rejects
        .iter()
        .map(|r| {
            vec![
                r.stage.clone(),
                r.run_id.to_string(),
                r.source.clone(),
                r.line.to_string(),
                r.column.clone().unwrap_or_default(),
                r.rule.clone(),
                r.value.clone().unwrap_or_default(),
                r.message.clone(),
            ]
        })
        .collect();
    let mut out = String::new();
    table(&mut out, &header, &rows);
    let _ = writeln!(out, "{} rejects", rejects.len());
    out
}

fn show(rejects: &[StoredReject]) -> String {
    let mut out = String::new();
    for r in rejects {
        let _ = writeln!(out, "{} line {} of {} (run {}): {} {}", r.stage, r.line, r.source, r.run_id, r.rule, r.severity);
        if let Some(c) = &r.column {
            let _ = writeln!(out, "  column: {c}");
        }
        if let Some(v) = &r.value {
            let _ = writeln!(out, "  value: {v}");
        }
        let _ = writeln!(out, "  message: {}", r.message);
        match r.record.as_ref().and_then(|v| v.as_object()) {
            Some(fields) => {
                let _ = writeln!(out, "  record:");
                for (k, v) in fields {
                    let shown = v.as_str().map_or_else(|| "NULL".to_string(), str::to_string);
                    let _ = writeln!(out, "    {k}: {shown}");
                }
            }
            None => {
                let _ = writeln!(out, "  record: not kept (a malformed line, a warning, a row holding a NUL byte, or larger than reject_record_bytes)");
            }
        }
    }
    out
}

/// The rejected rows as a CSV file with the stage's headers (unless `header` is false), each row
/// once, in the order given: a field the record lacks or holds as null is written as `null`
/// unquoted (empty by default), every text quoted. With each row's line in the file: the file and
/// line of the row it is.
fn export<'a>(headers: &[String], rejects: impl Iterator<Item = &'a StoredReject>, null: Option<&str>, header: bool) -> (Vec<u8>, std::collections::HashMap<u64, (String, i64)>) {
    let mut out = Vec::new();
    let mut lines = std::collections::HashMap::new();
    let mut line = 1u64;
    if header {
        let names: Vec<Option<String>> = headers.iter().map(|h| Some(h.clone())).collect();
        exec::csv::write_record(&mut out, &names);
        line += 1;
    }
    let mut seen = std::collections::HashSet::new();
    for r in rejects {
        let Some(fields) = r.record.as_ref().and_then(|v| v.as_object()) else { continue };
        if !seen.insert((r.run_id, r.source.clone(), r.line)) {
            continue;
        }
        for (i, h) in headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match fields.get(h).and_then(|v| v.as_str()) {
                Some(v) => exec::csv::push_quoted(&mut out, v),
                None => out.extend_from_slice(null.unwrap_or_default().as_bytes()),
            }
        }
        out.push(b'\n');
        lines.insert(line, (r.source.clone(), r.line));
        line += 1;
    }
    (out, lines)
}
