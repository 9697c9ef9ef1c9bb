//! Where each stage's rows come from. Every source is located before any stage loads (an S3
//! object by HEAD, a local file by copying it), so a missing object fails the run with nothing
//! loaded. Each source is copied once into the run's spool (its temporary directory) under a
//! name unique to where it came from: a local file at once, hashed as it is copied (the copy is
//! the version hashed, whatever the producer does to the file afterwards); an S3 object when
//! its stage needs the rows, pinned to the ETag HEAD saw. A gzip or zstd source is then decoded
//! into a plain copy beside it (streaming: memory stays small). DuckDB, the record scan and the
//! line index read that copy, never the live object or file; the fingerprint stays the stored
//! bytes'.

pub mod s3;

use std::path::{Path, PathBuf};

use crate::exec::error::ExecError;
use super::reuse::fingerprint;
use crate::plan::{ConnectionPlan, Plan, StagePlan};
use crate::spec::model::Compression;

/// A stage's located source.
pub struct Source {
    /// The source as the user knows it (`s3://bucket/key` or a path).
    pub shown: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The object's ETag (S3).
    pub etag: Option<String>,
    /// The digest of its content (none when it cannot be told: an object without an ETag).
    pub fingerprint: Option<String>,
    /// How the stored file is compressed.
    pub compression: Compression,
    place: Place,
    /// The decompressed copy, once made.
    plain: Option<PathBuf>,
}

enum Place {
    Local(PathBuf),
    S3 { client: s3::S3, key: String, downloaded: Option<PathBuf> },
}

/// A file name in the spool unique to a source's origin (two stages whose keys share a last
/// part never share a copy), ending in the origin's own last part.
pub fn spool_name(kind: &str, origin: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in origin {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    let last = origin.last().and_then(|o| o.rsplit(['/', '\\']).next()).filter(|n| !n.is_empty()).unwrap_or("source");
    format!("{kind}-{digest}-{last}")
}

impl Source {
    /// Finds the stage's source: HEAD for an S3 object; a local file is copied into `spool` and
    /// hashed as it is.
    pub fn locate(plan: &Plan, stage: &StagePlan, spec_dir: &Path, spool: &Path, rt: &tokio::runtime::Runtime) -> Result<Source, ExecError> {
        match plan.connections.get(&stage.source.connection) {
            Some(ConnectionPlan::S3(c)) => {
                let client = rt.block_on(s3::S3::connect(c));
                let head = rt.block_on(client.head(&stage.source.key))?;
                Ok(Source {
                    shown: head.shown,
                    bytes: head.bytes,
                    etag: head.etag,
                    fingerprint: head.fingerprint,
                    compression: stage.csv.compression,
                    place: Place::S3 { client, key: stage.source.key.clone(), downloaded: None },
                    plain: None,
                })
            }
            _ => {
                let path = local_path(plan, stage, spec_dir).ok_or_else(|| ExecError::Internal(format!("stage {} has no source", stage.name)))?;
                let shown = path.display().to_string();
                let fail = |e: std::io::Error| ExecError::Source { source_name: shown.clone(), message: e.to_string() };
                let copy = spool.join(spool_name("local", &[&shown]));
                let digest = fingerprint::copy_hashed(&path, Some(&copy)).map_err(fail)?;
                let bytes = std::fs::metadata(&copy).map_err(fail)?.len();
                Ok(Source {
                    shown: shown.clone(),
                    bytes,
                    etag: None,
                    fingerprint: Some(digest),
                    compression: stage.csv.compression,
                    place: Place::Local(copy),
                    plain: None,
                })
            }
        }
    }

    /// The source as a local file: an S3 object is downloaded into `dir` the first time (the
    /// version HEAD saw, or an error if it changed since).
    pub fn path(&mut self, dir: &Path, rt: &tokio::runtime::Runtime) -> Result<PathBuf, ExecError> {
        if let Some(p) = &self.plain {
            return Ok(p.clone());
        }
        let stored = self.stored(dir, rt)?;
        if self.compression == Compression::None || self.compression == Compression::Auto {
            return Ok(stored);
        }
        let plain = stored.with_extension(format!("{}.plain", stored.extension().and_then(|e| e.to_str()).unwrap_or("")));
        decompress(&stored, &plain, self.compression)
            .map_err(|e| ExecError::Source { source_name: self.shown.clone(), message: format!("cannot decompress it as {}: {e}", self.compression.duckdb_name()) })?;
        self.plain = Some(plain.clone());
        Ok(plain)
    }

    /// The stored bytes, copied into the spool.
    fn stored(&mut self, dir: &Path, rt: &tokio::runtime::Runtime) -> Result<PathBuf, ExecError> {
        match &mut self.place {
            Place::Local(copy) => Ok(copy.clone()),
            Place::S3 { client, key, downloaded } => {
                if let Some(p) = downloaded {
                    return Ok(p.clone());
                }
                let fetched = rt.block_on(client.fetch_pinned(key, dir, self.etag.clone()))?;
                *downloaded = Some(fetched.path.clone());
                Ok(fetched.path)
            }
        }
    }
}

/// Decodes a gzip (every member) or zstd file into a plain one, streaming.
fn decompress(from: &Path, to: &Path, c: Compression) -> std::io::Result<()> {
    let input = std::io::BufReader::new(std::fs::File::open(from)?);
    let mut output = std::io::BufWriter::new(std::fs::File::create(to)?);
    match c {
        Compression::Gzip => std::io::copy(&mut flate2::read::MultiGzDecoder::new(input), &mut output)?,
        Compression::Zstd => std::io::copy(&mut zstd::Decoder::with_buffer(input)?, &mut output)?,
        Compression::None | Compression::Auto => std::io::copy(&mut { input }, &mut output)?,
    };
    std::io::Write::flush(&mut output)
}

/// Where a stage's source file is, for a local connection.
pub fn local_path(plan: &Plan, stage: &StagePlan, spec_dir: &Path) -> Option<PathBuf> {
    match plan.connections.get(&stage.source.connection)? {
        ConnectionPlan::Local { dir } => Some(spec_dir.join(dir).join(&stage.source.key)),
        _ => None,
    }
}
