//! What a stage's outcome depends on, as digests: its context (the compiled stage, the engine's
//! build and the state of every table it references), its source (an S3 object's ETag and
//! size, a local file's SHA-256) and the state of its target table (`plan::postgres::state_sql`:
//! row count, a hash sum of the rows' `xmin`s and the table's definition: any insert, update or
//! delete committed since, or change to its columns, constraints or indexes, changes it). A stage whose
//! three are what they were right after its last load would load nothing new and reject the
//! same rows: the run skips it.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::plan::StagePlan;

/// A stage's digests, recorded with each load in `etl_run_stages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The target table (schema-qualified, quoted) the state is of.
    pub table: String,
    /// The compiled stage and the referenced tables' states.
    pub context: String,
    /// The source's content.
    pub source: String,
    /// The target table's state after the load.
    pub table_state: String,
    /// A history stage's lines context ([`lines_context`]): what its lines' outcomes depended on.
    pub lines: Option<String>,
    /// A history load's business date (`YYYY-MM-DD`), with `lines`.
    pub as_of: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of a load's rejects (line, rule, column, value, message, severity of each, in one
/// order), recorded with the load: a later run carries outcomes over only when `etl_rejects`
/// still holds exactly these (an operator may have deleted or truncated them).
pub fn rejects_digest(rejects: &[crate::exec::validate::Reject]) -> String {
    let mut sorted: Vec<_> = rejects.iter().collect();
    sorted.sort_by(|a, b| (a.line, &a.rule, &a.column, &a.value, &a.message).cmp(&(b.line, &b.rule, &b.column, &b.value, &b.message)));
    let mut h = Sha256::new();
    h.update((sorted.len() as u64).to_le_bytes());
    for r in sorted {
        h.update(r.line.to_le_bytes());
        for part in [Some(r.rule.as_str()), r.column.as_deref(), r.value.as_deref(), Some(r.message.as_str()), Some(crate::plan::severity_word(r.severity))] {
            match part {
                Some(p) => {
                    h.update([1]);
                    h.update((p.len() as u64).to_le_bytes());
                    h.update(p.as_bytes());
                }
                None => h.update([0]),
            }
        }
    }
    hex(&h.finalize())
}

/// The engine's build: a hash of its sources, its locked dependencies (DuckDB, Polars) and the
/// compiler (`build.rs`). Any change to how rows are read, cast or checked changes it.
pub const BUILD_ID: &str = env!("ETL_BUILD_ID");

/// The context digest: the engine's build, the compiled stage (its SQL, checks, columns,
/// budget; not where its file is, which the source digest stands for) and `(table, state)` of
/// each table it references.
pub fn context(stage: &StagePlan, referenced: &[(String, String)]) -> String {
    context_of(BUILD_ID, stage, referenced)
}

/// A history stage's lines context: [`context`] of the stage compiled for a fixed date
/// (`StagePlan::undated`), None when more than its `as_of` value depends on the date. Two loads
/// with the same one give each line the same outcome, whatever their dates.
pub fn lines_context(stage: &StagePlan, referenced: &[(String, String)]) -> Option<String> {
    stage.undated.as_deref().map(|u| context_of(BUILD_ID, u, referenced))
}

/// [`context`] for a given build.
fn context_of(build: &str, stage: &StagePlan, referenced: &[(String, String)]) -> String {
    let mut h = Sha256::new();
    h.update(build.as_bytes());
    let mut compiled = stage.clone();
    compiled.source.connection.clear();
    compiled.source.key.clear();
    h.update(format!("\n{compiled:?}\n").as_bytes());
    for (table, state) in referenced {
        h.update(format!("{table}={state}\n").as_bytes());
    }
    hex(&h.finalize())
}

/// The source digest of an S3 object before it is read. An ETag that looks like an MD5 (32 hex
/// digits, with `-N` for a multipart upload) may name the content wherever it is: the digest is
/// the ETag and size, so the same file under another key is the same source. Whether it does is
/// known only once the bytes are read ([`Md5Etag`]); where they do not match (a server that
/// encrypts, or makes ETags up) the load records [`s3_keyed`] instead. Any other ETag only names
/// a version of one object on one server: the keyed form from the start.
pub fn s3_object(origin: &str, key: &str, etag: Option<&str>, bytes: u64) -> Option<String> {
    // Without an ETag the content cannot be told apart: never the same.
    let etag = etag?;
    match md5_parts(etag) {
        Some(_) => Some(hex(&Sha256::digest(format!("s3-md5\n{}\n{bytes}", etag.trim_matches('"').to_ascii_lowercase()).as_bytes()))),
        None => s3_keyed(origin, key, Some(etag), bytes),
    }
}

/// The source digest of one version of one object: `origin` (the endpoint and bucket), key,
/// ETag and size.
pub fn s3_keyed(origin: &str, key: &str, etag: Option<&str>, bytes: u64) -> Option<String> {
    let etag = etag?;
    Some(hex(&Sha256::digest(format!("s3\n{origin}\n{key}\n{etag}\n{bytes}").as_bytes())))
}

/// The parts of an ETag shaped like an MD5: `Some(0)` for a plain one, `Some(n)` for a multipart
/// upload's `<md5>-n`; None for any other.
pub fn md5_parts(etag: &str) -> Option<u64> {
    let bare = etag.trim_matches('"');
    let (md5, parts) = match bare.split_once('-') {
        Some((m, p)) => (m, p.parse::<u64>().ok().filter(|n| *n > 0)?),
        None => (bare, 0),
    };
    (md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit())).then_some(parts)
}

/// The ETag S3 gives an object uploaded whole (the MD5 of its bytes) or in parts of
/// `part_size` bytes (the MD5 of the parts' MD5s, `-` and the number of parts), computed from
/// the bytes as they are read.
pub struct Md5Etag {
    part_size: Option<u64>,
    whole: md5::Md5,
    part: md5::Md5,
    in_part: u64,
    parts: Vec<u8>,
    count: u64,
}

impl Md5Etag {
    /// For an object uploaded whole (`part_size` None) or in parts.
    pub fn new(part_size: Option<u64>) -> Md5Etag {
        use md5::Digest;
        Md5Etag { part_size: part_size.filter(|n| *n > 0), whole: md5::Md5::new(), part: md5::Md5::new(), in_part: 0, parts: Vec::new(), count: 0 }
    }

    /// The next bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        use md5::Digest;
        let Some(size) = self.part_size else {
            self.whole.update(bytes);
            return;
        };
        while !bytes.is_empty() {
            let take = ((size - self.in_part) as usize).min(bytes.len());
            self.part.update(&bytes[..take]);
            self.in_part += take as u64;
            bytes = &bytes[take..];
            if self.in_part == size {
                self.close_part();
            }
        }
    }

    fn close_part(&mut self) {
        use md5::Digest;
        let part = std::mem::replace(&mut self.part, md5::Md5::new());
        self.parts.extend_from_slice(&part.finalize());
        self.in_part = 0;
        self.count += 1;
    }

    /// The ETag of the bytes read, unquoted, in lower case.
    pub fn finish(mut self) -> String {
        use md5::Digest;
        if self.part_size.is_none() {
            return hex(&self.whole.finalize());
        }
        if self.in_part > 0 || self.count == 0 {
            self.close_part();
        }
        format!("{}-{}", hex(&md5::Md5::digest(&self.parts)), self.count)
    }

    /// Whether the bytes read are the content `etag` names.
    pub fn matches(self, etag: &str) -> bool {
        self.finish() == etag.trim_matches('"').to_ascii_lowercase()
    }
}

/// The source digest of a local file: a SHA-256 of its bytes' SHA-256 (see [`copy_digests`]).
pub fn local_file(path: &Path) -> std::io::Result<String> {
    copy_hashed(path, None)
}

/// The digest of a local file as [`local_file`] takes it, of its copy at `to` when given (made
/// first): the copy is exactly the bytes hashed.
pub fn copy_hashed(path: &Path, to: Option<&Path>) -> std::io::Result<String> {
    copy_digests(path, to).map(|(fingerprint, _)| fingerprint)
}

/// A local file's source digest and the plain SHA-256 of its bytes (what `sha256sum` prints, as
/// the file ledger keeps it), both from one pass over its copy at `to` (when given, made first):
/// the source digest is the SHA-256 of `file` and the plain one, so the bytes are hashed once.
pub fn copy_digests(path: &Path, to: Option<&Path>) -> std::io::Result<(String, String)> {
    // The copy is made by the kernel (`copy_file_range`, a reflink where the file system has
    // them: no pass through this process), then it is what is hashed: copying and hashing in
    // one loop took three times as long (3.0 s for 1.4 GiB).
    let hashed = match to {
        Some(to) => {
            std::fs::copy(path, to)?;
            to
        }
        None => path,
    };
    let mut file = std::fs::File::open(hashed)?;
    let mut plain = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        plain.update(&buf[..n]);
    }
    let plain = hex(&plain.finalize());
    Ok((hex(&Sha256::digest(format!("file\n{plain}").as_bytes())), plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history stage's lines context: the same on any two dates when only its `as_of` value
    /// depends on the date, different when anything else does (a rule's template reading
    /// `run.date`, in any format), and none when a check reads the `as_of` column.
    #[test]
    fn a_history_stages_lines_context_depends_on_the_date_only_through_what_else_reads_it() {
        use crate::spec::{LoadOptions, load_text};
        let compiled = |extra_column: &str, rule: &str, date: &str| {
            let text = format!(
                r#"
version: 1
name: t
connections:
  f: {{ type: local, path: . }}
  d: {{ type: postgres, url: "postgres://u@h/db" }}
stages:
  s:
    source: {{ connection: f, key: "s/{{{{ run.date }}}}.csv" }}
    target: {{ connection: d, table: s, key: [id], mode: history, as_of: day, delete_missing: close }}
    columns:
      id: {{ type: string }}
      cash: {{ type: "decimal(20,2)" }}
      day: {{ type: date, value: "{{{{ run.date }}}}" }}
{extra_column}
    rules:
      - {{ name: r, check: "{rule}" }}
"#
            );
            let opts = LoadOptions { date: Some(chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap()), ..LoadOptions::default() };
            let loaded = load_text("t.yaml", &text, None, &opts).unwrap_or_else(|e| panic!("{}", e.render(false)));
            crate::plan::compile(&loaded.spec).stages.remove(0)
        };
        let states = [("\"public\".\"x\"".to_string(), "1:2:3:d".to_string())];
        let lines = |st: &StagePlan| lines_context(st, &states);
        // Only `as_of` reads the date: the same lines context, other full contexts.
        let (a, b) = (compiled("", "cash >= 0", "2025-12-19"), compiled("", "cash >= 0", "2025-12-22"));
        assert!(lines(&a).is_some());
        assert_eq!(lines(&a), lines(&b));
        assert_ne!(context(&a, &states), context(&b, &states), "the whole stage's context has the date");
        assert_ne!(lines(&a), lines(&compiled("", "cash >= 1", "2025-12-19")), "any other change tells them apart");
        // A rule whose template reads the date, in another format: other lines contexts.
        let rule = "cash >= {{ run.date | strftime('%d') }}";
        assert_ne!(lines(&compiled("", rule, "2025-12-19")), lines(&compiled("", rule, "2025-12-22")));
        // A computed column of the date, or a rule reading the `as_of` column: none.
        assert_eq!(lines(&compiled("", "day >= date '2025-01-01'", "2025-12-19")), None);
        assert_eq!(lines(&compiled("      weekday: { type: date, expr: \"day\" }", "cash >= 0", "2025-12-19")), None);
    }

    #[test]
    fn a_source_without_an_etag_has_no_digest_and_one_byte_changes_a_file_digest() {
        assert_eq!(s3_object("b", "k", None, 3), None);
        assert_ne!(s3_object("b", "k", Some("\"e\""), 3), s3_object("b", "k", Some("\"e\""), 4));
        // An MD5 ETag names the content under any key; another ETag only within its object.
        let md5 = Some("\"9b2cf535f27731c974343645a3985328\"");
        assert_eq!(s3_object("b", "day1/a.csv", md5, 9), s3_object("c", "day2/a.csv", md5, 9));
        assert_ne!(s3_object("b", "day1/a.csv", Some("\"v1\""), 9), s3_object("b", "day2/a.csv", Some("\"v1\""), 9));
        // ... and only on its server: the same bucket and key elsewhere is another object.
        assert_ne!(s3_object("http://a:9000/b", "k", Some("\"v1\""), 9), s3_object("http://c:9000/b", "k", Some("\"v1\""), 9));
        let multipart = Some("\"9b2cf535f27731c974343645a3985328-3\"");
        assert_eq!(s3_object("b", "x", multipart, 9), s3_object("b", "y", multipart, 9));
        assert_eq!(s3_object("b", "x", Some("\"v1\""), 9), s3_keyed("b", "x", Some("\"v1\""), 9));
        assert_ne!(s3_object("b", "x", md5, 9), s3_keyed("b", "x", md5, 9), "a checked MD5 and an unchecked one are told apart");
        assert_eq!(md5_parts("\"9b2cf535f27731c974343645a3985328-0\""), None);
        assert_eq!(md5_parts("9b2cf535f27731c974343645a398532"), None);
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "x,y\n1,2\n").unwrap();
        std::fs::write(&b, "x,y\n1,3\n").unwrap();
        assert_ne!(local_file(&a).unwrap(), local_file(&b).unwrap());
        std::fs::write(&b, "x,y\n1,2\n").unwrap();
        assert_eq!(local_file(&a).unwrap(), local_file(&b).unwrap());
    }

    #[test]
    fn an_md5_etag_is_checked_against_the_bytes_whole_or_in_parts() {
        // `echo -n hello | md5sum`.
        let mut whole = Md5Etag::new(None);
        whole.update(b"hel");
        whole.update(b"lo");
        assert!(whole.matches("\"5D41402ABC4B2A76B9719D911017C592\""));
        let mut other = Md5Etag::new(None);
        other.update(b"hello!");
        assert!(!other.matches("5d41402abc4b2a76b9719d911017c592"));
        // Parts of 4 bytes, fed in pieces that straddle them: md5(md5("hell") md5("o wo") md5("rld")).
        let parts: Vec<u8> = [&b"hell"[..], b"o wo", b"rld"].iter().flat_map(|p| { use md5::Digest; md5::Md5::digest(p).to_vec() }).collect();
        let expected = format!("{}-3", { use md5::Digest; hex(&md5::Md5::digest(&parts)) });
        for pieces in [vec![&b"hello world"[..]], vec![b"h", b"ello wor", b"ld"], vec![b"hell", b"o wo", b"rld"]] {
            let mut m = Md5Etag::new(Some(4));
            for p in pieces {
                m.update(p);
            }
            assert_eq!(m.finish(), expected);
        }
        // Parts of another size are another ETag.
        let mut m = Md5Etag::new(Some(5));
        m.update(b"hello world");
        assert!(!m.matches(&expected));
        // Bytes that fill their last part exactly: no empty part after it.
        let parts: Vec<u8> = [&b"hell"[..], b"o wo"].iter().flat_map(|p| { use md5::Digest; md5::Md5::digest(p).to_vec() }).collect();
        let mut m = Md5Etag::new(Some(4));
        m.update(b"hello wo");
        assert_eq!(m.finish(), format!("{}-2", { use md5::Digest; hex(&md5::Md5::digest(&parts)) }));
        // No bytes at all: one empty part (the ETag of an upload of one empty part).
        let empty = { use md5::Digest; md5::Md5::digest(b"").to_vec() };
        assert_eq!(Md5Etag::new(Some(4)).finish(), format!("{}-1", { use md5::Digest; hex(&md5::Md5::digest(&empty)) }));
    }

    #[test]
    fn the_context_holds_the_build_and_the_rejects_digest_holds_every_reject() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.yaml")).unwrap();
        let loaded = crate::spec::load_text("quickstart.yaml", &text, None, &Default::default()).unwrap_or_else(|e| panic!("{}", e.render(false)));
        let plan = crate::plan::compile(&loaded.spec);
        let st = &plan.stages[0];
        assert_eq!(context(st, &[]), context_of(BUILD_ID, st, &[]));
        assert_ne!(context_of("0.1.0-a", st, &[]), context_of("0.1.0-b", st, &[]), "another build is another context");
        assert!(BUILD_ID.starts_with(env!("CARGO_PKG_VERSION")) && BUILD_ID.len() > env!("CARGO_PKG_VERSION").len() + 8, "{BUILD_ID}");
        let reject = |line: u64, value: Option<&str>| crate::exec::validate::Reject {
            file: None,
            line,
            column: Some("cash".into()),
            rule: "min".into(),
            value: value.map(str::to_string),
            message: "below 0".into(),
            severity: crate::spec::model::Severity::Error,
            record: None,
        };
        let all = [reject(2, Some("-1")), reject(5, None)];
        assert_eq!(rejects_digest(&all), rejects_digest(&[reject(5, None), reject(2, Some("-1"))]), "in any order");
        assert_ne!(rejects_digest(&all), rejects_digest(&all[..1]), "one deleted");
        assert_ne!(rejects_digest(&all), rejects_digest(&[reject(2, Some("-1")), reject(5, Some(""))]), "a missing value is not an empty one");
        assert_ne!(rejects_digest(&[]), rejects_digest(&all[..1]));
    }
}
