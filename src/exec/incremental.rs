//! Loading only the records that changed since a stage's last load. Each upsert load leaves a
//! line index of its file in the cache directory: a 128-bit hash of each record's bytes and its
//! line. When a stage's spec, referenced tables and table are as its last load left them but its
//! file is new, the file is scanned here (records split on the raw bytes, quotes honoured): a
//! record whose bytes equal a record of the last file is neither read by DuckDB, checked,
//! compared nor sent. Its row is in the table as it would be loaded again, or it was rejected
//! for the same reasons, which are carried over to its new line. Records whose key (or unique
//! column) repeats within the file, and records that lost to a repeat last time, are always
//! checked. The other records go, in file order, to a smaller file that is loaded the usual way.
//!
//! The scan gives up (and every record is checked) on what it cannot split exactly as DuckDB
//! does: a quoted field spanning lines, a blank line, an escape other than the quote, UTF-16,
//! or a key that is not text.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use super::ExecError;
use super::validate::Reject;
use crate::plan::StagePlan;
use crate::spec::model::{ColumnType, Encoding};

/// Where line indexes are kept: `$ETL_CACHE_DIR`, else `$XDG_CACHE_HOME/etl`, else
/// `$HOME/.cache/etl`; in its `line-index` folder. None when none is set.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = var("ETL_CACHE_DIR").or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("etl"))).or_else(|| var("HOME").map(|d| d.join(".cache/etl")))?;
    Some(base.join("line-index"))
}

/// The index file of `source` (a source digest) for a stage's table. One stage's table keeps
/// one index: files share a stem per spec, stage and table.
pub fn index_path(dir: &Path, spec: &str, stage: &str, table: &str, source: &str) -> PathBuf {
    let digest = Sha256::digest(format!("{spec}\n{stage}\n{table}\n{}", env!("CARGO_PKG_VERSION")).as_bytes());
    let stem: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{stem}-{}.lines", &source[..source.len().min(32)]))
}

const MAGIC: &[u8; 8] = b"ETLLINE2";

/// Hashes keys that are hashes already: their low 64 bits.
#[derive(Default, Clone, Copy)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type ByHash<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Prehashed>>;

/// One data record as the scan found it.
pub struct Record<'a> {
    /// Its index among the data records (0 for the first).
    pub index: usize,
    /// The hash of its bytes.
    pub hash: u128,
    /// Where its bytes start in the file.
    pub at: u64,
    /// Its bytes.
    pub bytes: &'a [u8],
    /// Per unique group (the key, then each unique column): the hash of the group's fields
    /// (None: a field is missing).
    pub groups: &'a [Option<u64>],
}

/// How the records of a file are split.
struct Dialect {
    delimiter: u8,
    quote: u8,
    header: bool,
    /// Field positions of each unique group's columns.
    groups: Vec<Vec<usize>>,
}

/// Why the scan cannot split a file as DuckDB does (the caller then checks every record).
pub type Unsupported = String;

fn dialect(stage: &StagePlan, file_columns: &[String], with_keys: bool) -> Result<Dialect, Unsupported> {
    let csv = &stage.csv;
    let single = |s: &str, what: &str| -> Result<u8, Unsupported> {
        match s.as_bytes() {
            [b] => Ok(*b),
            _ => Err(format!("the {what} is not one byte")),
        }
    };
    if csv.encoding == Encoding::Utf16 {
        return Err("the file is UTF-16".into());
    }
    let (delimiter, quote) = (single(&csv.delimiter, "delimiter")?, single(&csv.quote, "quote")?);
    if csv.escape != csv.quote {
        return Err("the escape is not the quote".into());
    }
    let mut groups = Vec::new();
    if with_keys {
        let position = |name: &str| -> Result<usize, Unsupported> {
            let c = stage.columns.iter().find(|c| c.name == name).ok_or_else(|| format!("no column {name}"))?;
            if c.ty != ColumnType::String {
                return Err(format!("{name} is not text: its values compare after a cast"));
            }
            file_columns.iter().position(|h| *h == c.header).ok_or_else(|| format!("no column {} in the header", c.header))
        };
        if !stage.target.key.is_empty() {
            groups.push(stage.target.key.iter().map(|k| position(k)).collect::<Result<Vec<_>, _>>()?);
        }
        let key_is = |name: &str| stage.target.key.len() == 1 && stage.target.key[0] == name;
        for c in stage.columns.iter().filter(|c| c.unique && !key_is(&c.name)) {
            groups.push(vec![position(&c.name)?]);
        }
    }
    Ok(Dialect { delimiter, quote, header: csv.header, groups })
}

/// The fields at `positions` of one record, unquoted, hashed together: None when one is
/// missing, Err when the record's quoting is one DuckDB might read otherwise (a quote inside an
/// unquoted field, or text after a closing quote).
fn group_hash(record: &[u8], d: &Dialect, positions: &[usize], field: &mut Vec<u8>, joined: &mut Vec<u8>) -> Result<Option<u64>, Unsupported> {
    let record = record.strip_suffix(b"\r").unwrap_or(record);
    joined.clear();
    let Some(&last) = positions.iter().max() else { return Ok(None) };
    let mut i = 0;
    for index in 0..=last {
        if i > record.len() {
            return Ok(None);
        }
        field.clear();
        if record.get(i) == Some(&d.quote) {
            i += 1;
            loop {
                match record.get(i) {
                    None => return Err("a quote is never closed".into()),
                    Some(&b) if b == d.quote => {
                        if record.get(i + 1) == Some(&d.quote) {
                            field.push(d.quote);
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    Some(&b) => {
                        field.push(b);
                        i += 1;
                    }
                }
            }
            if i < record.len() && record[i] != d.delimiter {
                return Err("text follows a closing quote".into());
            }
        } else {
            while i < record.len() && record[i] != d.delimiter {
                if record[i] == d.quote {
                    return Err("a quote inside an unquoted field".into());
                }
                field.push(record[i]);
                i += 1;
            }
        }
        if positions.contains(&index) {
            joined.extend_from_slice(&(field.len() as u64).to_le_bytes());
            joined.extend_from_slice(field);
        }
        i += 1;
    }
    Ok(Some(xxh3_64(joined)))
}

/// Splits `path` into records (quotes honoured) and hands each data record to `each`; with
/// keys, also the hashes of its unique groups. Returns the header record's bytes (empty without
/// a header), or `Ok(Err(why))` when the file cannot be split exactly as DuckDB does.
pub fn scan(
    stage: &StagePlan,
    path: &Path,
    file_columns: &[String],
    with_keys: bool,
    mut each: impl FnMut(Record<'_>) -> Result<(), ExecError>,
) -> Result<Result<Vec<u8>, Unsupported>, ExecError> {
    let d = match dialect(stage, file_columns, with_keys) {
        Ok(d) => d,
        Err(why) => return Ok(Err(why)),
    };
    let fail = |e: std::io::Error| ExecError::Source { source_name: path.display().to_string(), message: e.to_string() };
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let mut header = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let (mut filled, mut base, mut first, mut eof, mut index) = (0usize, 0u64, true, false, 0usize);
    let (mut field, mut joined, mut groups) = (Vec::new(), Vec::new(), vec![None; d.groups.len()]);
    loop {
        if !eof {
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let n = file.read(&mut buf[filled..]).map_err(fail)?;
            eof = n == 0;
            filled += n;
        }
        let mut pos = 0;
        loop {
            // The next record end outside quotes. Quoting must be regular (a quote opens a field
            // and closes it before a delimiter or the line's end): anything else DuckDB might
            // split otherwise, so the scan gives up.
            let mut i = pos;
            let mut quoted = false;
            let end = loop {
                let Some(k) = memchr::memchr2(d.quote, b'\n', &buf[i..filled]) else { break None };
                let at = i + k;
                if buf[at] == b'\n' {
                    if quoted {
                        return Ok(Err("a quoted field spans lines".into()));
                    }
                    break Some(at);
                }
                if !quoted {
                    if at != pos && buf[at - 1] != d.delimiter {
                        return Ok(Err("a quote inside an unquoted field".into()));
                    }
                    quoted = true;
                    i = at + 1;
                    continue;
                }
                // A quote in a quoted field: doubled (a quote), or closing.
                let next = buf[..filled].get(at + 1).copied();
                match next {
                    None if !eof => break None,
                    Some(q) if q == d.quote => i = at + 2,
                    None => {
                        quoted = false;
                        i = at + 1;
                    }
                    Some(n) if n == d.delimiter || n == b'\n' => {
                        quoted = false;
                        i = at + 1;
                    }
                    Some(b'\r') => match buf[..filled].get(at + 2) {
                        None if !eof => break None,
                        None | Some(b'\n') => {
                            quoted = false;
                            i = at + 1;
                        }
                        Some(_) => return Ok(Err("text follows a closing quote".into())),
                    },
                    Some(_) => return Ok(Err("text follows a closing quote".into())),
                }
            };
            let end = match end {
                Some(e) => e,
                None if eof && pos < filled => filled,
                None => break,
            };
            let record = &buf[pos..end];
            if first && d.header {
                header = record.to_vec();
            } else if record.is_empty() || record == b"\r" {
                return Ok(Err("the file has a blank line".into()));
            } else {
                for (g, positions) in d.groups.iter().enumerate() {
                    groups[g] = match group_hash(record, &d, positions, &mut field, &mut joined) {
                        Ok(h) => h,
                        Err(why) => return Ok(Err(why)),
                    };
                }
                each(Record { index, hash: xxh3_128(record), at: base + pos as u64, bytes: record, groups: &groups })?;
                index += 1;
            }
            first = false;
            pos = (end + 1).min(filled);
            if end == filled {
                break;
            }
        }
        if eof && pos >= filled {
            break;
        }
        buf.copy_within(pos..filled, 0);
        base += pos as u64;
        filled -= pos;
    }
    Ok(Ok(header))
}

/// Writes a line index to `path` as records come (each record's hash and line), through a
/// temporary name, and removes the stage's older indexes on `finish`.
pub struct IndexWriter {
    path: PathBuf,
    partial: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    header: u64,
}

impl IndexWriter {
    fn fail(dir: &Path) -> impl Fn(std::io::Error) -> ExecError + '_ {
        move |e| ExecError::Write { path: dir.display().to_string(), message: e.to_string() }
    }

    /// Starts the index of a file whose header record is `header_bytes` (read before the scan).
    pub fn create(stage: &StagePlan, path: &Path, header_bytes: &[u8]) -> Result<IndexWriter, ExecError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(Self::fail(dir))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let partial = dir.join(format!(".{name}.{}.partial", std::process::id()));
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&partial).map_err(Self::fail(dir))?);
        out.write_all(MAGIC).map_err(Self::fail(dir))?;
        out.write_all(&xxh3_128(header_bytes).to_le_bytes()).map_err(Self::fail(dir))?;
        Ok(IndexWriter { path: path.to_path_buf(), partial, out, header: u64::from(stage.csv.header) })
    }

    /// Adds one record.
    pub fn add(&mut self, r: &Record<'_>) -> Result<(), ExecError> {
        let mut entry = [0u8; 24];
        entry[..16].copy_from_slice(&r.hash.to_le_bytes());
        entry[16..].copy_from_slice(&(r.index as u64 + 1 + self.header).to_le_bytes());
        self.out.write_all(&entry).map_err(|e| ExecError::Write { path: self.partial.display().to_string(), message: e.to_string() })
    }

    /// Flushes the index. It stays under its temporary name until the load it describes
    /// commits (`PendingIndex::keep`): a cache never holds the index of a load that did not
    /// happen, and the last load's index stays until then.
    pub fn flushed(mut self) -> Result<PendingIndex, ExecError> {
        self.out.flush().map_err(|e| ExecError::Write { path: self.partial.display().to_string(), message: e.to_string() })?;
        Ok(PendingIndex { path: std::mem::take(&mut self.path), partial: std::mem::take(&mut self.partial) })
    }
}

/// Removes an index file still under its temporary name (none once it was handed on or kept).
fn discard(partial: &Path) {
    if !partial.as_os_str().is_empty() {
        let _ = std::fs::remove_file(partial);
    }
}

impl Drop for IndexWriter {
    fn drop(&mut self) {
        // Unfinished: never left for a later run to read.
        discard(&self.partial);
    }
}

/// A written line index waiting for its load to commit; removed if dropped instead.
pub struct PendingIndex {
    path: PathBuf,
    partial: PathBuf,
}

impl PendingIndex {
    /// Puts the index in place and removes the stage's older ones.
    pub fn keep(mut self) -> Result<(), ExecError> {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let fail = |e: std::io::Error| ExecError::Write { path: dir.display().to_string(), message: e.to_string() };
        std::fs::rename(&self.partial, &self.path).map_err(fail)?;
        self.partial = PathBuf::new();
        let name = self.path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let stem = name.split('-').next().unwrap_or_default();
        for entry in std::fs::read_dir(&dir).map_err(fail)?.flatten() {
            let other = entry.file_name();
            let other = other.to_string_lossy();
            if other != name.as_str() && other.starts_with(stem) && other.ends_with(".lines") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

impl Drop for PendingIndex {
    fn drop(&mut self) {
        discard(&self.partial);
    }
}

/// A line index as read: the hash of the last file's header, and each record's hash in line
/// order (the record at position i is on line i + 1 + header).
struct LastFile {
    header: u128,
    hashes: Vec<u128>,
    /// Hash → position, built the first time a record is not found near where the last one was.
    by_hash: Option<ByHash<u128, usize>>,
}

fn read_index(path: &Path) -> Result<LastFile, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() < 24 || &bytes[..8] != MAGIC || (bytes.len() - 24) % 24 != 0 {
        return Err("not a line index".into());
    }
    let header = u128::from_le_bytes(bytes[8..24].try_into().expect("16 bytes"));
    let hashes = bytes[24..].chunks_exact(24).map(|e| u128::from_le_bytes(e[..16].try_into().expect("16 bytes"))).collect();
    Ok(LastFile { header, hashes, by_hash: None })
}

impl LastFile {
    /// The position of a record whose hash is `h`, looked for first just after `cursor` (where
    /// the last match was: files mostly keep their order), then, once records are often not
    /// found nearby (`anywhere`), in the whole file. A record not found is checked as a changed
    /// one. Which of two equal records it finds does not matter: they differ only in
    /// cross-record checks, which are checked again (see `REPEATS`).
    fn find(&mut self, h: u128, cursor: usize, anywhere: bool) -> Option<usize> {
        if let Some(k) = self.hashes.get(cursor..(cursor + 8).min(self.hashes.len())).and_then(|w| w.iter().position(|x| *x == h)) {
            return Some(cursor + k);
        }
        if !anywhere {
            return None;
        }
        let map = self.by_hash.get_or_insert_with(|| {
            let mut m = ByHash::with_capacity_and_hasher(self.hashes.len(), Default::default());
            for (i, x) in self.hashes.iter().enumerate() {
                m.entry(*x).or_insert(i);
            }
            m
        });
        map.get(&h).copied()
    }
}

/// The header record of a file (what the index's header hash is of).
fn header_record(stage: &StagePlan, path: &Path) -> Result<Vec<u8>, ExecError> {
    if !stage.csv.header {
        return Ok(Vec::new());
    }
    let fail = |e: std::io::Error| ExecError::Source { source_name: path.display().to_string(), message: e.to_string() };
    let mut buf = Vec::new();
    std::fs::File::open(path).and_then(|f| f.take(4 << 20).read_to_end(&mut buf)).map_err(fail)?;
    let end = memchr::memchr(b'\n', &buf).unwrap_or(buf.len());
    Ok(buf[..end].to_vec())
}

/// The checks whose outcome for a record depends on other records of the file.
const REPEATS: [&str; 2] = ["duplicate_key", "unique"];

/// A file split into the records unchanged since the last load and the others.
pub struct Changes {
    /// The smaller file holding the header and the changed records, in file order.
    pub path: PathBuf,
    /// The line in the whole file of each data line of the smaller one.
    pub lines: Vec<u64>,
    /// Unchanged records.
    pub same: u64,
    /// Of them, rows that passed every check (in the table already).
    pub valid: u64,
    /// Of them, rows rejected.
    pub rejected: u64,
    /// Of them, valid rows flagged by `warn` rules.
    pub warned: u64,
    /// Their rejects, at their new lines.
    pub rejects: Vec<Reject>,
    /// This file's line index, to keep once the load commits.
    pub index: Option<PendingIndex>,
}

/// Compares the file at `path` with the last load's (its index at `index`, its rejects
/// `previous`), writes the changed records to a file in `dir`, and this file's index to
/// `next_index`. `Ok(Err(why))` when the records cannot be told apart here.
#[allow(clippy::too_many_arguments)]
pub fn changes(
    stage: &StagePlan,
    path: &Path,
    file_columns: &[String],
    index: &Path,
    previous: &[Reject],
    dir: &Path,
    next_index: Option<&Path>,
) -> Result<Result<Changes, Unsupported>, ExecError> {
    let mut last = match read_index(index) {
        Ok(m) => m,
        Err(why) => return Ok(Err(format!("the last load's line index is unreadable ({why})"))),
    };
    let header_bytes = header_record(stage, path)?;
    if xxh3_128(&header_bytes) != last.header {
        return Ok(Err("the header differs from the last file's".into()));
    }
    // The cache is an aid: an index that cannot be written leaves the next load to check every
    // record, never fails this one.
    let mut writer = next_index.and_then(|p| IndexWriter::create(stage, p, &header_bytes).ok());
    // Per record: its hash, where it is, its groups' hashes.
    let mut records: Vec<(u128, u64, u32)> = Vec::new();
    let mut groups: Vec<Vec<Option<u64>>> = Vec::new();
    let scanned = scan(stage, path, file_columns, true, |r| {
        if let Some(w) = writer.as_mut()
            && w.add(&r).is_err()
        {
            writer = None;
        }
        records.push((r.hash, r.at, r.bytes.len() as u32));
        if groups.is_empty() {
            groups = vec![Vec::new(); r.groups.len()];
        }
        for (g, h) in r.groups.iter().enumerate() {
            groups[g].push(*h);
        }
        Ok(())
    })?;
    let header_bytes = match scanned {
        Ok(h) => h,
        Err(why) => return Ok(Err(why)),
    };
    let index = writer.and_then(|w| w.flushed().ok());
    let header = u64::from(stage.csv.header);
    let mut by_line: HashMap<u64, Vec<&Reject>> = HashMap::new();
    for r in previous {
        by_line.entry(r.line).or_default().push(r);
    }
    let lost = |line: u64| by_line.get(&line).is_some_and(|rs| rs.iter().any(|r| REPEATS.contains(&r.rule.as_str())));
    // Keys that occur more than once, per group: found by sorting, so memory is read in order.
    let repeats: Vec<HashSet<u64>> = groups
        .iter()
        .map(|keys| {
            let mut sorted: Vec<u64> = keys.iter().flatten().copied().collect();
            sorted.sort_unstable();
            sorted.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect()
        })
        .collect();
    let repeated = |r: usize| groups.iter().zip(&repeats).any(|(keys, rep)| keys[r].is_some_and(|k| rep.contains(&k)));
    let mut out = Changes {
        path: dir.join(format!("etl-changed-{}-{}.csv", std::process::id(), stage.name)),
        lines: Vec::new(),
        same: 0,
        valid: 0,
        rejected: 0,
        warned: 0,
        rejects: Vec::new(),
        index,
    };
    let mut changed: Vec<usize> = Vec::new();
    let (mut cursor, mut misses) = (0, 0usize);
    for (r, (h, _, _)) in records.iter().enumerate() {
        let line = r as u64 + 1 + header;
        // Reordered files: past a few misses, look everywhere.
        let found = last.find(*h, cursor, misses > 1_000 && misses * 8 > r);
        match found {
            Some(at) => cursor = at + 1,
            None => misses += 1,
        }
        match found.map(|at| at as u64 + 1 + header) {
            Some(was) if !repeated(r) && !lost(was) => {
                out.same += 1;
                let rejects = by_line.get(&was).map(Vec::as_slice).unwrap_or_default();
                if rejects.iter().any(|j| j.severity == crate::spec::model::Severity::Error) {
                    out.rejected += 1;
                } else if !rejects.is_empty() {
                    out.warned += 1;
                }
                out.rejects.extend(rejects.iter().map(|j| Reject { line, ..(*j).clone() }));
            }
            _ => changed.push(r),
        }
    }
    out.valid = out.same - out.rejected;
    // The changed records, copied in file order.
    let fail_in = |e: std::io::Error| ExecError::Source { source_name: path.display().to_string(), message: e.to_string() };
    let fail_out = |e: std::io::Error| ExecError::Write { path: dir.display().to_string(), message: e.to_string() };
    let mut input = std::fs::File::open(path).map_err(fail_in)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out.path).map_err(fail_out)?);
    if stage.csv.header {
        w.write_all(&header_bytes).map_err(fail_out)?;
        w.write_all(b"\n").map_err(fail_out)?;
    }
    let mut bytes = Vec::new();
    for r in changed {
        use std::io::Seek;
        let (_, at, len) = records[r];
        input.seek(std::io::SeekFrom::Start(at)).map_err(fail_in)?;
        bytes.resize(len as usize, 0);
        input.read_exact(&mut bytes).map_err(fail_in)?;
        w.write_all(&bytes).map_err(fail_out)?;
        w.write_all(b"\n").map_err(fail_out)?;
        out.lines.push(r as u64 + 1 + header);
    }
    w.flush().map_err(fail_out)?;
    Ok(Ok(out))
}

/// Scans the file at `path` and writes its line index for `index` (for a load that checked
/// every record). None when the file cannot be split here.
pub fn index_file(stage: &StagePlan, path: &Path, file_columns: &[String], index: &Path) -> Result<Option<PendingIndex>, ExecError> {
    let mut writer = IndexWriter::create(stage, index, &header_record(stage, path)?)?;
    match scan(stage, path, file_columns, false, |r| writer.add(&r))? {
        Ok(_) => writer.flushed().map(Some),
        Err(_) => Ok(None),
    }
}
