//! `etl init`: a first spec for a CSV file (a path, or an S3 object whose first MiBs are read),
//! written from a sample of it: the dialect DuckDB's
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

/// Where the sampled file is.
enum Origin {
    /// A local file.
    Local(PathBuf),
    /// An S3 object: its bucket and key.
    S3 { bucket: String, key: String },
}

impl Origin {
    fn of(from: &Path) -> Result<Origin, CliError> {
        let text = from.to_string_lossy();
        let Some(rest) = text.strip_prefix("s3://") else {
            if !from.is_file() {
                return Err(CliError::flag("etl init", format!("{} is not a file", from.display()), "give the path of a CSV file to sample, or s3://BUCKET/KEY"));
            }
            return Ok(Origin::Local(from.to_path_buf()));
        };
        match rest.split_once('/') {
            Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() && !key.ends_with('/') => Ok(Origin::S3 { bucket: bucket.into(), key: key.into() }),
            _ => Err(CliError::flag("etl init --from", format!("{text} names no object"), "give s3://BUCKET/KEY, e.g. s3://my-bucket/daily/trades.csv")),
        }
    }

    /// The file's name (the last part of its path or key).
    fn file_name(&self) -> String {
        match self {
            Origin::Local(p) => p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string(),
            Origin::S3 { key, .. } => key.rsplit('/').next().unwrap_or(key).to_string(),
        }
    }

    fn shown(&self) -> String {
        match self {
            Origin::Local(p) => p.display().to_string(),
            Origin::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
        }
    }
}

/// Runs `etl init`.
pub fn run(args: InitArgs) -> Result<u8, CliError> {
    let what = "etl init";
    let origin = Origin::of(&args.from)?;
    let name_of_file = origin.file_name();
    let stem = name_of_file.split('.').next().filter(|s| !s.is_empty()).unwrap_or("data").to_string();
    let table = args.table.clone().unwrap_or_else(|| identifier(&stem));
    let name = args.name.clone().unwrap_or_else(|| table.clone());
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("{name}.yaml")));
    if out.exists() && !args.force {
        return Err(CliError::flag(what, format!("{} exists", out.display()), "give another --out, or --force to write over it"));
    }
    let temp = tempfile::tempdir().map_err(|e| CliError::System { what: "create a temporary directory".into(), message: e.to_string() })?;
    // The sample: the file itself, or the first MiBs of the object, cut after a whole line.
    let (local, part) = match &origin {
        Origin::Local(p) => (p.clone(), String::new()),
        Origin::S3 { bucket, key } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| CliError::System { what: "start a runtime".into(), message: e.to_string() })?;
            let conn = s3_connection(bucket, args.s3_endpoint.as_deref());
            let s3 = rt.block_on(exec::source::s3::S3::connect(&conn));
            let (path, size) = rt.block_on(s3.sample(key, temp.path(), args.sample_mib.max(1) << 20))?;
            let read = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let part = if read < size { format!(" (its first {} of {})", exec::progress::bytes(read), exec::progress::bytes(size)) } else { String::new() };
            (path, part)
        }
    };
    let reader = exec::extract::Reader::open(temp.path(), &exec::duckdb_memory())?;
    let sample = reader.guess(&local, args.sample_rows)?;
    let text = spec_text(&args, &sample, &origin, &part, &out, &name, &table)?;
    std::fs::write(&out, &text).map_err(|e| CliError::flag(what, format!("cannot write {}: {e}", out.display()), "give an --out in a directory you can write"))?;
    // Checked as any spec is; a spec `etl init` wrote that does not pass is a bug of etl's.
    let loaded = load_offline(&out, &Default::default())?;
    let compiled = plan::compile(&loaded.spec);
    eprintln!("wrote {} from {} sampled rows of {}{part}; its plan:", out.display(), sample.rows, origin.shown());
    print(&plan::render::render(&compiled, &[]));
    Ok(exit::OK)
}

/// The S3 connection of a sample: the bucket, the endpoint given, credentials from the
/// environment or the AWS chain.
fn s3_connection(bucket: &str, endpoint: Option<&str>) -> crate::spec::model::S3Connection {
    crate::spec::model::S3Connection {
        endpoint: endpoint.map(str::to_string),
        bucket: bucket.to_string(),
        region: None,
        path_style: None,
        prefix: None,
        access_key_id: None,
        secret_access_key: None,
        session_token: None,
        checksums: None,
    }
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

fn spec_text(args: &InitArgs, sample: &Sample, origin: &Origin, part: &str, out: &Path, name: &str, table: &str) -> Result<String, CliError> {
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
    let (connection, file) = match origin {
        Origin::Local(from) => {
            let file_dir = std::fs::canonicalize(from).ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
            let spec_dir = std::fs::canonicalize(out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))).unwrap_or_default();
            let dir = if file_dir == spec_dir { ".".to_string() } else { file_dir.display().to_string() };
            (format!("  files: {{ type: local, path: {} }}", quoted(&dir)), origin.file_name())
        }
        Origin::S3 { bucket, key } => {
            let endpoint = args.s3_endpoint.as_deref().map(|e| format!(", endpoint: {}", quoted(e))).unwrap_or_default();
            (
                format!("  # Credentials: the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or the AWS chain.\n  files: {{ type: s3, bucket: {}{endpoint} }}", quoted(bucket)),
                key.clone(),
            )
        }
    };

    let mut t = String::new();
    let _ = writeln!(t, "# Written by `etl init` from {} sampled rows of {}{part}.", sample.rows, origin.shown());
    let _ = writeln!(t, "# Each column's type is what every sampled value is; check them, then `etl plan` and `etl run`.");
    let _ = writeln!(t, "version: 1");
    let _ = writeln!(t, "name: {name}");
    let _ = writeln!(t, "connections:");
    let _ = writeln!(t, "{connection}");
    let _ = writeln!(t, "  db: {{ type: postgres, url: \"{{{{ env.DATABASE_URL }}}}\" }}");
    let _ = writeln!(t, "stages:");
    let _ = writeln!(t, "  {table}:");
    let csv = if sample.delimiter != "," || sample.quote != "\"" {
        format!(", csv: {{ delimiter: {}, quote: {} }}", quoted(&sample.delimiter), quoted(&sample.quote))
    } else {
        String::new()
    };
    let _ = writeln!(t, "    source: {{ connection: files, key: {}{csv} }}", quoted(&file));
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
