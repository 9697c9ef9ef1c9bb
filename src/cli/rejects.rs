//! `etl rejects`: the rejects the run records keep, listed one a line, shown in full with each
//! row's fields as read, or one stage's rejected rows exported as a CSV file with its headers, to
//! correct and load again.

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
            let csv = export(&st.extract.rejected_headers, rejects.iter().filter(|r| r.stage == stage));
            match out {
                Some(path) => std::fs::write(&path, csv).map_err(|e| CliError::flag("etl rejects export --out", format!("cannot write {}: {e}", path.display()), "give a file in a directory you can write"))?,
                None => print(&String::from_utf8_lossy(&csv)),
            }
        }
    }
    Ok(exit::OK)
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
                let _ = writeln!(out, "  record: not kept (a malformed line, a warning, or larger than reject_record_bytes)");
            }
        }
    }
    out
}

/// The rejected rows as a CSV file with the stage's headers, each row once, in line order: a
/// field the record lacks or holds as null is empty.
fn export<'a>(headers: &[String], rejects: impl Iterator<Item = &'a StoredReject>) -> Vec<u8> {
    let mut out = Vec::new();
    let header: Vec<Option<String>> = headers.iter().map(|h| Some(h.clone())).collect();
    exec::csv::write_record(&mut out, &header);
    let mut seen = std::collections::HashSet::new();
    for r in rejects {
        let Some(fields) = r.record.as_ref().and_then(|v| v.as_object()) else { continue };
        if !seen.insert((r.run_id, r.source.clone(), r.line)) {
            continue;
        }
        let row: Vec<Option<String>> = headers.iter().map(|h| fields.get(h).and_then(|v| v.as_str()).map(str::to_string)).collect();
        exec::csv::write_record(&mut out, &row);
    }
    out
}
