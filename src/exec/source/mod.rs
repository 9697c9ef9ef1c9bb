//! Where each stage's rows come from. Every source is located before any stage loads (an S3
//! object by HEAD, a local file by reading it for its digest), so a missing object fails the run
//! with nothing loaded; an S3 object is downloaded only when its stage needs the rows, pinned to
//! the ETag HEAD saw.

pub mod s3;

use std::path::{Path, PathBuf};

use crate::exec::error::ExecError;
use super::reuse::fingerprint;
use crate::plan::{ConnectionPlan, Plan, StagePlan};

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
    place: Place,
}

enum Place {
    Local(PathBuf),
    S3 { client: s3::S3, key: String, downloaded: Option<PathBuf> },
}

impl Source {
    /// Finds the stage's source: HEAD for an S3 object, the file's digest for a local one.
    pub fn locate(plan: &Plan, stage: &StagePlan, spec_dir: &Path, rt: &tokio::runtime::Runtime) -> Result<Source, ExecError> {
        match plan.connections.get(&stage.source.connection) {
            Some(ConnectionPlan::S3(c)) => {
                let client = rt.block_on(s3::S3::connect(c));
                let head = rt.block_on(client.head(&stage.source.key))?;
                Ok(Source {
                    shown: head.shown,
                    bytes: head.bytes,
                    etag: head.etag,
                    fingerprint: head.fingerprint,
                    place: Place::S3 { client, key: stage.source.key.clone(), downloaded: None },
                })
            }
            _ => {
                let path = local_path(plan, stage, spec_dir).ok_or_else(|| ExecError::Internal(format!("stage {} has no source", stage.name)))?;
                let shown = path.display().to_string();
                let fail = |e: std::io::Error| ExecError::Source { source_name: shown.clone(), message: e.to_string() };
                let bytes = std::fs::metadata(&path).map_err(fail)?.len();
                let digest = fingerprint::local_file(&path).map_err(fail)?;
                Ok(Source { shown: shown.clone(), bytes, etag: None, fingerprint: Some(digest), place: Place::Local(path) })
            }
        }
    }

    /// The source as a local file: an S3 object is downloaded into `dir` the first time (the
    /// version HEAD saw, or an error if it changed since).
    pub fn path(&mut self, dir: &Path, rt: &tokio::runtime::Runtime) -> Result<PathBuf, ExecError> {
        match &mut self.place {
            Place::Local(p) => Ok(p.clone()),
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

/// Where a stage's source file is, for a local connection.
pub fn local_path(plan: &Plan, stage: &StagePlan, spec_dir: &Path) -> Option<PathBuf> {
    match plan.connections.get(&stage.source.connection)? {
        ConnectionPlan::Local { dir } => Some(spec_dir.join(dir).join(&stage.source.key)),
        _ => None,
    }
}
