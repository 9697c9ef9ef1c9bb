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
use crate::exec::progress::Meter;
use super::reuse::fingerprint;
use crate::plan::{ConnectionPlan, FileSetPlan, Plan, StagePlan, WaitPlan};
use crate::spec::model::{Compression, OnMissing};

/// A stage's located source.
pub struct Source {
    /// The source as the user knows it (`s3://bucket/key` or a path).
    pub shown: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The object's ETag (S3).
    pub etag: Option<String>,
    /// The digest of its content (none when it cannot be told: an object without an ETag). For
    /// an S3 object whose ETag looks like an MD5 but does not match the bytes read, the keyed
    /// form once it is read.
    pub fingerprint: Option<String>,
    /// An S3 object's keyed digest (`fingerprint::s3_keyed`): what a load records when its ETag
    /// is not the MD5 of its bytes.
    keyed: Option<String>,
    /// How the stored file is compressed.
    pub compression: Compression,
    /// Its key or path as the spec names it (relative to the connection's prefix or directory).
    pub key: String,
    /// Where the connection's files are (the file ledger's `origin`): S3's endpoint and bucket,
    /// or the local directory.
    pub origin: String,
    /// The values of the set's pattern's captures in its key.
    pub captures: Vec<(String, String)>,
    /// The SHA-256 of its stored bytes, once copied into the spool.
    pub sha256: Option<String>,
    place: Place,
    /// The decompressed copy, once made.
    plain: Option<PathBuf>,
    /// Counts the bytes of its download (a bar on a terminal).
    pub meter: crate::exec::progress::Meter,
    /// Gets a copy of each chunk of its download as it arrives (the scan of a file whose
    /// changed lines alone may be read: see `incremental::follow`); dropped once downloaded.
    pub tee: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
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
                    keyed: head.keyed,
                    compression: stage.csv.compression,
                    key: stage.source.key.clone(),
                    origin: client.origin(),
                    captures: Vec::new(),
                    sha256: None,
                    place: Place::S3 { client, key: stage.source.key.clone(), downloaded: None },
                    plain: None,
                    meter: Default::default(),
                    tee: None,
                })
            }
            _ => {
                let path = local_path(plan, stage, spec_dir).ok_or_else(|| ExecError::Internal(format!("stage {} has no source", stage.name)))?;
                let shown = path.display().to_string();
                let origin = local_dir(plan, stage, spec_dir).map(|d| d.display().to_string()).unwrap_or_default();
                Source::local(&path, shown, stage.source.key.clone(), origin, Vec::new(), stage.csv.compression, spool)
            }
        }
    }

    /// A local file, copied into `spool` and hashed as it is.
    fn local(path: &Path, shown: String, key: String, origin: String, captures: Vec<(String, String)>, compression: Compression, spool: &Path) -> Result<Source, ExecError> {
        let fail = |e: std::io::Error| ExecError::Source { source_name: shown.clone(), message: e.to_string() };
        let copy = spool.join(spool_name("local", &[&shown]));
        let (digest, sha256) = fingerprint::copy_digests(path, Some(&copy)).map_err(fail)?;
        let bytes = std::fs::metadata(&copy).map_err(fail)?.len();
        Ok(Source {
            shown: shown.clone(),
            bytes,
            etag: None,
            fingerprint: Some(digest),
            keyed: None,
            compression: compression.of(&key),
            key,
            origin,
            captures,
            sha256: Some(sha256),
            place: Place::Local(copy),
            plain: None,
                    meter: Default::default(),
                    tee: None,
        })
    }

    /// Finds every file of a stage's set, in name order (see [`list_set`]), waiting for one as
    /// the set's `wait` says. An empty set is an error naming the pattern and the date, unless
    /// `on_missing: skip` (then none).
    pub fn locate_set(plan: &Plan, stage: &StagePlan, set: &FileSetPlan, date: chrono::NaiveDate, spec_dir: &Path, spool: &Path, rt: &tokio::runtime::Runtime, progress: &crate::exec::progress::Progress) -> Result<Vec<Source>, ExecError> {
        let deadline = set.wait.as_ref().map(deadline);
        let mut looked = 0u32;
        loop {
            let found = list_set(plan, stage, set, spec_dir, spool, rt)?;
            looked += 1;
            if !found.is_empty() {
                return Ok(found);
            }
            let now = chrono::Utc::now();
            match deadline {
                Some(Some(until)) if now < until => {
                    let left = (until - now).to_std().unwrap_or_default();
                    let poll = set.wait.as_ref().map_or(left, |w| w.poll.min(left));
                    progress.step(&stage.name, &format!("no file matches {} yet; looking again in {}s (until {until})", set.pattern.text(), poll.as_secs().max(1)));
                    std::thread::sleep(poll.max(std::time::Duration::from_millis(100)));
                }
                _ => {
                    if set.on_missing == OnMissing::Skip {
                        return Ok(Vec::new());
                    }
                    let waited = match deadline {
                        Some(Some(until)) => format!(" (looked {looked} time(s), until {until})"),
                        Some(None) => " (the wait's `until` has no such time today)".to_string(),
                        None => String::new(),
                    };
                    return Err(ExecError::Missing {
                        stage: stage.name.clone(),
                        pattern: set.pattern.text().to_string(),
                        date: date.format("%Y-%m-%d").to_string(),
                        waited,
                        late: looked > 1,
                    });
                }
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
        self.decode(stored)
    }

    /// The plain text of the stored copy: itself, or (gzip, zstd) a decoded copy beside it.
    fn decode(&mut self, stored: PathBuf) -> Result<PathBuf, ExecError> {
        if self.compression == Compression::None || self.compression == Compression::Auto {
            return Ok(stored);
        }
        let plain = stored.with_extension(format!("{}.plain", stored.extension().and_then(|e| e.to_str()).unwrap_or("")));
        decompress(&stored, &plain, self.compression)
            .map_err(|e| ExecError::Source { source_name: self.shown.clone(), message: format!("cannot decompress it as {}: {e}", self.compression.duckdb_name()) })?;
        self.plain = Some(plain.clone());
        Ok(plain)
    }

    /// Copies the files of a set into the spool, as [`Source::path`] does for one, but `parallel`
    /// at a time: the S3 downloads (each pinned to its listed ETag) concurrently, then the
    /// compressed ones decoded on up to `parallel` threads. The first failing file (in set order)
    /// is the error.
    pub fn fetch_all(files: &mut [&mut Source], dir: &Path, rt: &tokio::runtime::Runtime, parallel: usize, fetched_files: &Meter) -> Result<(), ExecError> {
        use futures_util::StreamExt;
        let parallel = parallel.max(1);
        let downloads: Vec<(usize, s3::S3, String, Option<String>, Meter)> = files
            .iter()
            .enumerate()
            .filter_map(|(i, f)| match &f.place {
                Place::S3 { client, key, downloaded: None } => Some((i, client.clone(), key.clone(), f.etag.clone(), f.meter.clone())),
                _ => None,
            })
            .collect();
        let mut fetched: Vec<(usize, Result<s3::Fetched, ExecError>)> = rt.block_on(
            futures_util::stream::iter(downloads)
                .map(|(i, client, key, etag, meter)| async move { (i, client.fetch_pinned(&key, dir, etag, &meter, None).await) })
                .buffer_unordered(parallel)
                .collect(),
        );
        fetched.sort_by_key(|(i, _)| *i);
        for (i, result) in fetched {
            files[i].downloaded(result?);
        }
        let chunk = files.len().div_ceil(parallel).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = files
                .chunks_mut(chunk)
                .map(|part| {
                    scope.spawn(move || -> Result<(), ExecError> {
                        for f in part.iter_mut() {
                            if f.plain.is_none() {
                                let stored = f.spooled().ok_or_else(|| ExecError::Internal(format!("{} was not downloaded", f.shown)))?;
                                f.decode(stored)?;
                            }
                            fetched_files.add(1);
                        }
                        Ok(())
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| w.join().unwrap_or_else(|_| Err(ExecError::Internal("a decoding thread panicked".into()))))
        })
    }

    /// Whether it is an S3 object not downloaded yet.
    pub fn to_download(&self) -> bool {
        matches!(self.place, Place::S3 { downloaded: None, .. })
    }

    /// Whether `recorded` (a load's source digest) is this source: its digest, or, for an S3
    /// object not read yet, its keyed one (what a load of the same version recorded when its
    /// ETag proved not to be an MD5 of its bytes).
    pub fn is(&self, recorded: &str) -> bool {
        self.fingerprint.as_deref() == Some(recorded) || self.keyed.as_deref() == Some(recorded)
    }

    /// Takes a finished download: its copy, its SHA-256, and its source digest made keyed when
    /// the ETag did not prove to be the MD5 of the bytes.
    fn downloaded(&mut self, f: s3::Fetched) {
        self.sha256 = Some(f.sha256);
        if !f.etag_is_md5 {
            self.fingerprint = self.keyed.clone();
        }
        if let Place::S3 { downloaded, .. } = &mut self.place {
            *downloaded = Some(f.path);
        }
    }

    /// The stored bytes' copy in the spool, if made yet.
    fn spooled(&self) -> Option<PathBuf> {
        match &self.place {
            Place::Local(copy) => Some(copy.clone()),
            Place::S3 { downloaded, .. } => downloaded.clone(),
        }
    }

    /// The stored bytes, copied into the spool.
    fn stored(&mut self, dir: &Path, rt: &tokio::runtime::Runtime) -> Result<PathBuf, ExecError> {
        if let Some(p) = self.spooled() {
            return Ok(p);
        }
        match &self.place {
            Place::Local(copy) => Ok(copy.clone()),
            Place::S3 { client, key, .. } => {
                let fetched = rt.block_on(client.fetch_pinned(key, dir, self.etag.clone(), &self.meter, self.tee.as_ref()));
                // The scan following the download ends with it (or learns it broke off).
                self.tee = None;
                let fetched = fetched?;
                let path = fetched.path.clone();
                self.downloaded(fetched);
                Ok(path)
            }
        }
    }
}

/// When a set's wait ends: its `until` today, in its time zone (None: no such time today, in a
/// clock change's gap).
fn deadline(w: &WaitPlan) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::TimeZone;
    let tz: chrono_tz::Tz = w.timezone.parse().unwrap_or(chrono_tz::UTC);
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    tz.from_local_datetime(&today.and_time(w.until)).earliest().map(|t| t.with_timezone(&chrono::Utc))
}

/// The files of a set now: an S3 listing under the pattern's prefix (ETag and size as listed;
/// each is downloaded, pinned to that ETag, when read), or a walk of the local directory (each
/// file copied into the spool and hashed now). Only keys the pattern matches, in name order.
pub fn list_set(plan: &Plan, stage: &StagePlan, set: &FileSetPlan, spec_dir: &Path, spool: &Path, rt: &tokio::runtime::Runtime) -> Result<Vec<Source>, ExecError> {
    let compression = stage.csv.compression;
    match plan.connections.get(&stage.source.connection) {
        Some(ConnectionPlan::S3(c)) => {
            let client = rt.block_on(s3::S3::connect(c));
            let listed = rt.block_on(client.list(set.pattern.prefix()))?;
            Ok(listed
                .into_iter()
                .filter_map(|o| {
                    let m = set.pattern.matches(&o.key)?;
                    Some(Source {
                        shown: client.shown(&o.key),
                        bytes: o.bytes,
                        fingerprint: fingerprint::s3_object(&client.origin(), &client.key(&o.key), o.etag.as_deref(), o.bytes),
                        keyed: fingerprint::s3_keyed(&client.origin(), &client.key(&o.key), o.etag.as_deref(), o.bytes),
                        etag: o.etag,
                        compression: compression.of(&o.key),
                        key: o.key.clone(),
                        origin: client.origin(),
                        captures: m.captures,
                        sha256: None,
                        place: Place::S3 { client: client.clone(), key: o.key, downloaded: None },
                        plain: None,
                    meter: Default::default(),
                    tee: None,
                    })
                })
                .collect())
        }
        _ => {
            let base = local_dir(plan, stage, spec_dir).ok_or_else(|| ExecError::Internal(format!("stage {} has no source", stage.name)))?;
            let prefix = set.pattern.prefix_dir();
            let root = base.join(prefix);
            let mut keys = Vec::new();
            walk(&root, &mut keys).map_err(|e| ExecError::Source { source_name: root.display().to_string(), message: e.to_string() })?;
            let mut found = Vec::new();
            for path in keys {
                let rel = path.strip_prefix(&root).unwrap_or(&path);
                let rel: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                let key = if prefix.is_empty() { rel.join("/") } else { format!("{}/{}", prefix.trim_end_matches('/'), rel.join("/")) };
                if let Some(m) = set.pattern.matches(&key) {
                    found.push((key, m.captures, path));
                }
            }
            found.sort_by(|a, b| a.0.cmp(&b.0));
            found
                .into_iter()
                .map(|(key, captures, path)| Source::local(&path, path.display().to_string(), key, base.display().to_string(), captures, compression, spool))
                .collect()
        }
    }
}

/// Every file under `dir` (none when it does not exist), following no links to directories.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(&entry.path(), out)?;
        } else if ty.is_file() || (ty.is_symlink() && entry.path().is_file()) {
            out.push(entry.path());
        }
    }
    Ok(())
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

/// Sets a file's trailer aside: when its last line starts with `prefix`, the file (a copy in
/// the spool) is cut before it and the line returned (without its line end). None when the last
/// line is a row.
pub fn strip_trailer(path: &Path, prefix: &str) -> Result<Option<String>, ExecError> {
    use std::io::{Read, Seek, SeekFrom};
    let fail = |e: std::io::Error| ExecError::Source { source_name: path.display().to_string(), message: e.to_string() };
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(fail)?;
    let len = f.metadata().map_err(fail)?.len();
    // A trailer is short: the last 64 KiB hold it.
    let start = len.saturating_sub(65536);
    f.seek(SeekFrom::Start(start)).map_err(fail)?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).map_err(fail)?;
    let body = tail.strip_suffix(b"\r\n").or_else(|| tail.strip_suffix(b"\n")).or_else(|| tail.strip_suffix(b"\r")).unwrap_or(&tail);
    let at = body.iter().rposition(|b| *b == b'\n' || *b == b'\r').map_or(0, |i| i + 1);
    if at == 0 && start > 0 {
        return Ok(None);
    }
    let line = &body[at..];
    if !line.starts_with(prefix.as_bytes()) {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(line).into_owned();
    f.set_len(start + at as u64).map_err(fail)?;
    Ok(Some(text))
}

/// The bytes of one small object (a manifest) on a source connection: downloaded into `dir`
/// (s3) or read (local), with the name it is shown by. Missing or unreadable: a source error.
pub fn read_object(plan: &Plan, connection: &str, key: &str, spec_dir: &Path, dir: &Path, rt: &tokio::runtime::Runtime) -> Result<(String, Vec<u8>), ExecError> {
    match plan.connections.get(connection) {
        Some(ConnectionPlan::S3(c)) => {
            let client = rt.block_on(s3::S3::connect(c));
            let fetched = rt.block_on(client.fetch(key, dir))?;
            let bytes = std::fs::read(&fetched.path).map_err(|e| ExecError::Source { source_name: fetched.shown.clone(), message: e.to_string() })?;
            let _ = std::fs::remove_file(&fetched.path);
            Ok((fetched.shown, bytes))
        }
        Some(ConnectionPlan::Local { dir: local }) => {
            let path = spec_dir.join(local).join(key);
            let shown = path.display().to_string();
            let bytes = std::fs::read(&path).map_err(|e| ExecError::Source { source_name: shown.clone(), message: e.to_string() })?;
            Ok((shown, bytes))
        }
        _ => Err(ExecError::Internal(format!("connection {connection} holds no files"))),
    }
}

/// Where a stage's source file is, for a local connection.
pub fn local_path(plan: &Plan, stage: &StagePlan, spec_dir: &Path) -> Option<PathBuf> {
    local_dir(plan, stage, spec_dir).map(|d| d.join(&stage.source.key))
}

/// The directory of a stage's local connection.
fn local_dir(plan: &Plan, stage: &StagePlan, spec_dir: &Path) -> Option<PathBuf> {
    match plan.connections.get(&stage.source.connection)? {
        ConnectionPlan::Local { dir } => Some(spec_dir.join(dir)),
        _ => None,
    }
}
