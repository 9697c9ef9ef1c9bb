//! What the command line prints: a run's report for people (a summary table per stage,
//! analytics as tables) and for machines (one JSON document), the rejects as CSV, and the plain
//! tables they and the job list are drawn as. Output goes to stdout; a closed pipe
//! (`etl plan | head`) is not an error.

use std::fmt::Write;
use std::io::Write as _;

use crate::exec::RunReport;
use crate::exec::csv::write_record;
use crate::plan::severity_word;

/// Writes to stdout, ignoring a closed pipe.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The report as text.
pub fn text(r: &RunReport) -> String {
    let mut out = String::new();
    let mode = if r.dry_run { " (dry run: nothing written)" } else { "" };
    let id = r.run_id.map(|i| format!(" run {i}")).unwrap_or_default();
    let _ = writeln!(out, "{}{id} for {}: {}{mode}", r.spec, r.date, r.status);
    let header = ["stage", "read", "valid", "rejected", "warned", "inserted", "updated", "unchanged", "status"];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for s in &r.stages {
        let (i, u, n) = s.loaded.map_or(("-".into(), "-".into(), "-".into()), |m| (m.inserted.to_string(), m.updated.to_string(), m.unchanged.to_string()));
        rows.push(vec![s.stage.clone(), s.rows_read.to_string(), s.rows_valid.to_string(), s.rows_rejected.to_string(), s.rows_warned.to_string(), i, u, n, s.status.to_string()]);
    }
    table(&mut out, &header.map(String::from), &rows);
    for s in &r.stages {
        if let Some(run) = s.unchanged_since_run {
            let _ = writeln!(out, "stage {} unchanged since run {run} (same source, spec and tables): not loaded again; its counts and rejects are that run's", s.stage);
        }
        if let Some(b) = &s.budget {
            let _ = writeln!(out, "stage {} loaded nothing: over its error budget ({b})", s.stage);
        }
        for hint in &s.hints {
            let _ = writeln!(out, "stage {} hint: {hint}", s.stage);
        }
        if let Some(why) = &s.refused {
            let _ = writeln!(out, "stage {} loaded nothing: {why}", s.stage);
        }
        for c in &s.checks {
            let verdict = if c.passed { "passed" } else if c.severity == "error" { "FAILED" } else { "failed (warn)" };
            let _ = writeln!(out, "stage {} check {} {verdict}: {}", s.stage, c.check, c.message);
            for row in &c.rows {
                let _ = writeln!(out, "stage {} check {}   {row}", s.stage, c.check);
            }
        }
        if let Some(m) = s.loaded.filter(|m| m.opened > 0 || m.closed > 0) {
            let _ = writeln!(out, "stage {} opened a version for {} keys and closed the version of {} on its date", s.stage, m.opened, m.closed);
        }
        if let Some(m) = s.loaded.filter(|m| (m.deleted > 0 || m.flagged > 0 || m.restored > 0) && m.opened + m.closed == 0) {
            if m.deleted > 0 {
                let _ = writeln!(out, "stage {} deleted {} rows (those its load replaces, or whose key the file lacks)", s.stage, m.deleted);
            }
            if m.flagged > 0 || m.restored > 0 {
                let _ = writeln!(out, "stage {} flagged {} rows deleted (their key is not in the file) and cleared {} whose key returned", s.stage, m.flagged, m.restored);
            }
        }
        if let Some(m) = s.loaded.filter(|m| m.cascaded > 0) {
            let _ = writeln!(out, "stage {} deleted {} rows of other tables that referenced the deleted keys (on_delete: cascade)", s.stage, m.cascaded);
        }
        if !s.rejects_by_rule.is_empty() {
            let by: Vec<String> = s.rejects_by_rule.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "stage {} rejects by rule: {}", s.stage, by.join(", "));
        }
    }
    for a in &r.analytics {
        let _ = writeln!(out, "\n{}", a.name);
        if let Some(d) = &a.description {
            let _ = writeln!(out, "{d}");
        }
        if let Some(e) = &a.error {
            let _ = writeln!(out, "failed: {e}");
            continue;
        }
        if let Some(run) = a.reused_from {
            let _ = writeln!(out, "(not queried: its tables are as run {run} found them, and this is that run's result)");
        }
        let rows: Vec<Vec<String>> = a.rows.iter().map(|r| r.iter().map(|v| v.clone().unwrap_or_else(|| "NULL".into())).collect()).collect();
        table(&mut out, &a.columns, &rows);
        for e in &a.expectations {
            let verdict = if e.passed { "met" } else { "FAILED" };
            let _ = writeln!(out, "expects {}: {verdict}: {}", e.check, e.message);
            for row in &e.rows {
                let _ = writeln!(out, "  {row}");
            }
        }
    }
    out
}

/// A table: a header, a rule under it, the rows, each column as wide as its widest cell on a
/// terminal (display width: a CJK character takes two columns), numbers right-aligned.
pub fn table(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    use unicode_width::UnicodeWidthStr;
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for r in rows {
        for (i, v) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(v.width());
            }
        }
    }
    // A column is numeric when every value it holds reads as a number.
    let numeric: Vec<bool> = (0..widths.len())
        .map(|i| {
            let mut values = rows.iter().filter_map(|r| r.get(i)).filter(|v| !v.is_empty() && v.as_str() != "NULL").peekable();
            values.peek().is_some() && values.all(|v| is_number(v))
        })
        .collect();
    let line = |out: &mut String, cells: &[String], align: bool| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = " ".repeat(widths.get(i).copied().unwrap_or(0).saturating_sub(c.width()));
                if align && numeric.get(i).copied().unwrap_or(false) { format!("{pad}{c}") } else { format!("{c}{pad}") }
            })
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(out, header, true);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(out, &rule, false);
    for r in rows {
        line(out, r, true);
    }
}

/// Whether a cell reads as a number: an optional minus, digits, an optional fraction.
fn is_number(v: &str) -> bool {
    let t = v.strip_prefix('-').unwrap_or(v);
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    !int.is_empty() && int.bytes().all(|b| b.is_ascii_digit()) && frac.bytes().all(|b| b.is_ascii_digit())
}

/// The report as one JSON document.
pub fn json(r: &RunReport) -> String {
    serde_json::to_string_pretty(r).expect("a report always serialises") + "\n"
}

/// Every reject of the run as CSV: stage, source, line, column, rule, value, message, severity.
pub fn rejects_csv(r: &RunReport) -> Vec<u8> {
    let mut out = b"stage,source,line,column,rule,value,message,severity\n".to_vec();
    for s in &r.stages {
        for j in &s.rejects {
            let sev = severity_word(j.severity);
            write_record(
                &mut out,
                &[Some(s.stage.clone()), Some(j.file.clone().unwrap_or_else(|| s.source.clone())), Some(j.line.to_string()), j.column.clone(), Some(j.rule.clone()), j.value.clone(), Some(j.message.clone()), Some(sev.into())],
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::table;

    #[test]
    fn a_table_aligns_by_display_width_and_right_aligns_numbers() {
        let header = ["strategy", "trades", "amount"].map(String::from).to_vec();
        let rows = vec![
            ["均值回归", "12", "1500.50"].map(String::from).to_vec(),
            ["momentum", "3", "-7.25"].map(String::from).to_vec(),
            ["套利", "140", "NULL"].map(String::from).to_vec(),
        ];
        let mut out = String::new();
        table(&mut out, &header, &rows);
        // Each CJK character takes two columns on a terminal: every column starts at one place.
        assert_eq!(
            out,
            "strategy  trades   amount\n\
             --------  ------  -------\n\
             均值回归      12  1500.50\n\
             momentum       3    -7.25\n\
             套利         140     NULL\n"
        );
    }
}
