//! `etl init`: a first spec for a CSV file, written from a sample of it: the dialect DuckDB's
//! sniffer finds, each column's type proposed conservatively with the evidence as a comment, the
//! headers mapped to column names; checked as any spec is, and its plan shown.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::args::InitArgs;
use super::error::CliError;
use super::prepare::load_offline;
use super::render::print;
use crate::exec::guess::{Guess, Sample};
use crate::{exec, exit, plan};

/// Runs `etl init`.
pub fn run(args: InitArgs) -> Result<u8, CliError> {
    let what = "etl init";
    let from = args.from.clone();
    if !from.is_file() {
        return Err(CliError::flag(what, format!("{} is not a file", from.display()), "give the path of a CSV file to sample"));
    }
    let stem = from.file_name().and_then(|n| n.to_str()).map(|n| n.split('.').next().unwrap_or(n).to_string()).unwrap_or_else(|| "data".into());
    let table = args.table.clone().unwrap_or_else(|| identifier(&stem));
    let name = args.name.clone().unwrap_or_else(|| table.clone());
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("{name}.yaml")));
    if out.exists() && !args.force {
        return Err(CliError::flag(what, format!("{} exists", out.display()), "give another --out, or --force to write over it"));
    }
    let temp = tempfile::tempdir().map_err(|e| CliError::System { what: "create a temporary directory".into(), message: e.to_string() })?;
    let reader = exec::extract::Reader::open(temp.path(), &exec::duckdb_memory())?;
    let sample = reader.guess(&from, args.sample_rows)?;
    let text = spec_text(&args, &sample, &from, &out, &name, &table)?;
    std::fs::write(&out, &text).map_err(|e| CliError::flag(what, format!("cannot write {}: {e}", out.display()), "give an --out in a directory you can write"))?;
    // Checked as any spec is; a spec `etl init` wrote that does not pass is a bug of etl's.
    let loaded = load_offline(&out, &Default::default())?;
    let compiled = plan::compile(&loaded.spec);
    eprintln!("wrote {} from {} sampled rows of {}; its plan:", out.display(), sample.rows, from.display());
    print(&plan::render::render(&compiled, &[]));
    Ok(exit::OK)
}

/// A column or table name from a header: lower case, `_` for anything but letters and digits, a
/// leading digit prefixed.
fn identifier(header: &str) -> String {
    let mut out: String = header.trim().chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    out = out.trim_matches('_').to_string();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out = format!("c_{out}");
    }
    out
}

/// YAML's quoting of a text.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn spec_text(args: &InitArgs, sample: &Sample, from: &Path, out: &Path, name: &str, table: &str) -> Result<String, CliError> {
    let mut names: Vec<String> = Vec::new();
    for g in &sample.columns {
        let mut n = identifier(&g.header);
        while names.contains(&n) {
            n.push('_');
        }
        names.push(n);
    }
    let column_of = |key: &str| -> Option<String> { sample.columns.iter().zip(&names).find(|(g, n)| g.header == key || *n == key).map(|(_, n)| n.clone()) };
    let (key, why): (Vec<String>, String) = if args.key.is_empty() {
        match sample.columns.iter().zip(&names).find(|(g, n)| *n == "id" && g.unique) {
            Some((_, n)) => (vec![n.clone()], format!("`{n}` is there and different on every sampled row: check it is the file's key")),
            None => (Vec::new(), "no key given (--key) and no `id` column unique in the sample: rows are appended".into()),
        }
    } else {
        let key: Vec<String> = args.key.iter().map(|k| column_of(k).ok_or_else(|| CliError::flag("etl init --key", format!("the file has no column `{k}`"), "name a header of the file"))).collect::<Result<_, _>>()?;
        (key, "the key given with --key".into())
    };
    let file_dir = std::fs::canonicalize(from).ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    let spec_dir = std::fs::canonicalize(out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))).unwrap_or_default();
    let dir = if file_dir == spec_dir { ".".to_string() } else { file_dir.display().to_string() };
    let file = from.file_name().and_then(|n| n.to_str()).unwrap_or_default();

    let mut t = String::new();
    let _ = writeln!(t, "# Written by `etl init` from {} sampled rows of {}.", sample.rows, from.display());
    let _ = writeln!(t, "# Each column's type is what every sampled value is; check them, then `etl plan` and `etl run`.");
    let _ = writeln!(t, "version: 1");
    let _ = writeln!(t, "name: {name}");
    let _ = writeln!(t, "connections:");
    let _ = writeln!(t, "  files: {{ type: local, path: {} }}", quoted(&dir));
    let _ = writeln!(t, "  db: {{ type: postgres, url: \"{{{{ env.DATABASE_URL }}}}\" }}");
    let _ = writeln!(t, "stages:");
    let _ = writeln!(t, "  {table}:");
    let csv = if sample.delimiter != "," || sample.quote != "\"" {
        format!(", csv: {{ delimiter: {}, quote: {} }}", quoted(&sample.delimiter), quoted(&sample.quote))
    } else {
        String::new()
    };
    let _ = writeln!(t, "    source: {{ connection: files, key: {}{csv} }}", quoted(file));
    let _ = writeln!(t, "    # {why}");
    if key.is_empty() {
        let _ = writeln!(t, "    target: {{ connection: db, table: {table}, mode: append }}");
    } else {
        let _ = writeln!(t, "    target: {{ connection: db, table: {table}, key: [{}] }}", key.join(", "));
    }
    let _ = writeln!(t, "    columns:");
    for (g, n) in sample.columns.iter().zip(&names) {
        let _ = writeln!(t, "      # {}", g.evidence);
        let _ = writeln!(t, "      {n}: {{ {} }}", column(g, n, key.contains(n)));
    }
    Ok(t)
}

fn column(g: &Guess, name: &str, in_key: bool) -> String {
    let mut parts = vec![format!("type: {}", if g.ty.starts_with("decimal") { quoted(&g.ty) } else { g.ty.clone() })];
    if let Some(f) = &g.format {
        parts.push(format!("format: {}", quoted(f)));
    }
    if g.nullable && !in_key {
        parts.push("nullable: true".into());
    }
    if g.header != name {
        parts.push(format!("from: {}", quoted(&g.header)));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::identifier;

    #[test]
    fn headers_become_identifiers() {
        assert_eq!(identifier("Trade ID"), "trade_id");
        assert_eq!(identifier("2024 total"), "c_2024_total");
        assert_eq!(identifier("  amount($) "), "amount");
        assert_eq!(identifier("金额"), "c_");
    }
}
