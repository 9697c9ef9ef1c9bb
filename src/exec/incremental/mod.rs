//! Loading only the records that changed since a stage's last load. Each upsert load (and each
//! history load whose lines depend on its date only through `as_of`) leaves a line index of its
//! file in the cache directory: a 128-bit hash of each record's bytes (keyed with the cache's
//! own secret, `scan::RecordKey`) and its line; a history that closes the keys its file lacks
//! keeps each record's key beside it, for the keys that vanish. When a stage's spec, referenced
//! tables and table are as its last load left them but its file is new, the file is scanned
//! here (records split on the raw bytes, quotes honoured): a record whose bytes equal a record
//! of the last file is neither read by DuckDB, checked, compared nor sent. Its row is in the table as it would be loaded again, or it was rejected
//! for the same reasons, which are carried over to its new line. Records whose key (or unique
//! column) repeats within the file, and records that lost to a repeat last time, are always
//! checked. The other records go, in file order, to a smaller file that is loaded the usual way.
//! A file from S3 is scanned as it downloads ([`follow`]); the comparison uses that scan only
//! for exactly the bytes the file then holds.
//!
//! The scan gives up (and every record is checked) on what it cannot split exactly as DuckDB
//! does: a quoted field spanning lines, a blank line, an escape other than the quote, UTF-16,
//! a key that is not text, lines ending in both CRLF and LF, or CR-only line ends. The smaller
//! file ends its lines as the source does.

pub mod index;
pub mod scan;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_128;

use crate::exec::error::ExecError;
use super::validate::Reject;
use crate::plan::StagePlan;
use crate::spec::model::Severity;
use index::{IndexWriter, LastFile, header_record, read_index};
pub use index::{PendingIndex, index_file};
pub use scan::{Record, RecordKey, Unsupported, scan};

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
    let digest = Sha256::digest(format!("{spec}\n{stage}\n{table}\n{}", crate::exec::reuse::fingerprint::BUILD_ID).as_bytes());
    let stem: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{stem}-{}.lines", &source[..source.len().min(32)]))
}

/// The checks whose outcome for a record depends on other records: of the file, or of the
/// table (which this load may change: a value a row held last time may be free now).
const REPEATS: [&str; 3] = ["duplicate_key", "unique", "unique_in_table"];

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
    /// A history closing the keys its file lacks: the keys of the last file's records that no
    /// record of this file equals, but for those an equal record still holds (each a CSV
    /// record). Only these may be missing from this file: every other key of the last file is
    /// on an unchanged line. A changed line may hold one still: the merge sees to that.
    pub vanished: Vec<Vec<u8>>,
    /// Whether the records were compared as the file downloaded (the scan that followed the
    /// download was of the same bytes, against the same line index), not scanned again.
    pub as_downloaded: bool,
    /// Whether the records were often out of the last file's order, so that the last file's
    /// whole index was read to look them up (the comparison's memory holds it then).
    pub reordered: bool,
}

/// A file's records as a scan found them, each looked up in the last load's line index as it
/// passed (what [`changes`] decides from): made from the file, or from its bytes as they
/// download.
pub struct Prescanned {
    /// The line index the records were looked up in.
    compared_with: PathBuf,
    /// Whether the lookups had the whole index read ([`Changes::reordered`]).
    reordered: bool,
    /// Whether the file's header record (its `\r` included) is the last file's.
    same_header: bool,
    /// Per record: the position in the last file of a record with the same bytes ([`NOT_FOUND`]:
    /// none).
    was: Vec<u32>,
    /// Which of the last file's records an equal record of this file holds (a history closing
    /// the keys its file lacks; empty otherwise).
    matched: Vec<bool>,
    /// The last file's keys, when its index kept them.
    last_keys: Option<Vec<Vec<u8>>>,
    /// Per record: its length. Each starts just after the `\n` that ends the one before (the
    /// scan splits on line ends, and a prescan whose records were not so laid out gives up),
    /// the first at `first_start`.
    lens: Vec<u32>,
    /// Where the first record starts.
    first_start: u64,
    /// Per unique group (the key, then each unique column), each record's hash of it, as
    /// [`group_slot`] keeps it (0: a field is missing).
    groups: Vec<Vec<u64>>,
    /// What else the scan found.
    scanned: scan::Scanned,
    /// This file's line index, written as it was scanned.
    index: Option<PendingIndex>,
    /// The bytes scanned.
    pub bytes: u64,
}

impl Prescanned {
    /// Points this file's line index at `path` (the source's digest, known only once it has
    /// downloaded, names the index): None when it was written for another.
    pub fn for_index(mut self, path: Option<&Path>) -> Prescanned {
        if self.index.as_ref().map(PendingIndex::path) != path {
            self.index = None;
        }
        self
    }
}

/// A record of this file that no record of the last file equals.
const NOT_FOUND: u32 = u32::MAX;

/// The last load's line index at `index` (and the cache's record key beside it), read for a
/// comparison: `Err(why)` when it cannot be compared with.
fn last_file(stage: &StagePlan, index: &Path) -> Result<(LastFile, RecordKey), Unsupported> {
    let last = read_index(index).map_err(|why| format!("the last load's line index is unreadable ({why})"))?;
    let key = scan::RecordKey::of_cache(index.parent().unwrap_or(Path::new("."))).map_err(|e| format!("the cache's record key is unreadable ({e})"))?;
    if index::keeps_keys(stage) && last.keys.is_none() {
        return Err("the last load's line index kept no keys, which closing the keys this file lacks needs".into());
    }
    if last.len >= NOT_FOUND as usize {
        return Err(format!("the last file has {} records, more than a comparison numbers", last.len));
    }
    Ok((last, key))
}

/// Scans the bytes `file` gives (named `name` in errors; `header_bytes` its header record, read
/// before) for [`changes`], looking each record up in the last load's line index at
/// `last_index` as it passes and writing this file's index to `next_index`.
pub fn prescan(
    stage: &StagePlan,
    file: impl Read,
    name: &str,
    file_columns: &[String],
    header_bytes: &[u8],
    next_index: Option<&Path>,
    last_index: &Path,
) -> Result<Result<Prescanned, Unsupported>, ExecError> {
    let (mut last, key) = match last_file(stage, last_index) {
        Ok(l) => l,
        Err(why) => return Ok(Err(why)),
    };
    // The cache is an aid: an index that cannot be written leaves the next load to check every
    // record, never fails this one.
    let mut writer = next_index.and_then(|p| IndexWriter::create(stage, p, header_bytes).ok());
    // Kept per record: 4 bytes of the last file's position, 4 of length (its start told by the
    // lengths before it) and 8 per unique group. Of the last file's hashes, a window after the
    // last match (all of them only for a reordered file: `LastFile::find`).
    let (mut was, mut lens, mut first_start, mut last_end) = (Vec::<u32>::new(), Vec::<u32>::new(), 0u64, 0u64);
    let mut matched = vec![false; if index::keeps_keys(stage) { last.len } else { 0 }];
    let (mut cursor, mut misses) = (0usize, 0usize);
    let mut unreadable: Option<Unsupported> = None;
    let mut groups: Vec<Vec<u64>> = Vec::new();
    let mut apart = true;
    let mut bytes = 0u64;
    let counted = CountingReader { inner: file, bytes: &mut bytes };
    let scanned = scan::scan_reader(stage, counted, name, file_columns, true, &key, |r| {
        if let Some(w) = writer.as_mut()
            && w.add(&r).is_err()
        {
            writer = None;
        }
        apart &= (lens.is_empty() || r.at == last_end + 1) && r.bytes.len() < u32::MAX as usize;
        if lens.is_empty() {
            first_start = r.at;
        }
        // Reordered files: past a few misses, look everywhere.
        let found = match last.find(r.hash, cursor, misses > 1_000 && misses * 8 > r.index) {
            Ok(f) => f,
            Err(why) => {
                unreadable.get_or_insert(why);
                None
            }
        };
        match found {
            Some(at) => {
                cursor = at + 1;
                if let Some(m) = matched.get_mut(at) {
                    *m = true;
                }
            }
            None => misses += 1,
        }
        was.push(found.map_or(NOT_FOUND, |at| at as u32));
        lens.push(r.bytes.len() as u32);
        last_end = r.at + r.bytes.len() as u64;
        if groups.is_empty() {
            groups = vec![Vec::new(); r.groups.len()];
        }
        for (g, h) in r.groups.iter().enumerate() {
            groups[g].push(group_slot(*h));
        }
        Ok(())
    })?;
    let scanned = match scanned {
        Ok(s) => s,
        Err(why) => return Ok(Err(why)),
    };
    if !apart {
        return Ok(Err("its records are not one line end apart, or one is longer than 4 GiB".into()));
    }
    if let Some(why) = unreadable {
        return Ok(Err(why));
    }
    let index = writer.and_then(|w| w.flushed().ok());
    Ok(Ok(Prescanned {
        compared_with: last_index.to_path_buf(),
        reordered: last.read_whole(),
        same_header: xxh3_128(header_bytes) == last.header,
        was,
        matched,
        last_keys: last.keys.take(),
        lens,
        first_start,
        groups,
        scanned,
        index,
        bytes,
    }))
}

/// A record's hash of a unique group as [`Prescanned`] keeps it: 0 when a field is missing,
/// and a hash that is 0 taken as 1. Two groups then compare equal only if their hashes do or are
/// 0 and 1: the comparison takes both as repeated, which only has both records checked.
fn group_slot(h: Option<u64>) -> u64 {
    h.map_or(0, |h| h.max(1))
}

/// A scan following a download: started before the download, given each chunk as it arrives
/// (`Source::tee`); joined by the load, which uses it only if the file it then reads has the
/// same bytes (count) and header columns.
pub type Following = std::thread::JoinHandle<Result<Result<(Prescanned, Vec<String>), Unsupported>, ExecError>>;

/// Starts the scan of a download of `stage`'s file (its chunks sent to the returned sender, the
/// download ending when the sender is dropped), comparing it with the last load's line index
/// `last_index` and writing its own to `next_index`. The header's columns are read from the
/// file's first bytes, as `extract::file_columns` does.
pub fn follow(stage: StagePlan, name: String, next_index: Option<PathBuf>, last_index: PathBuf) -> (std::sync::mpsc::SyncSender<Vec<u8>>, Following) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(64);
    let handle = std::thread::spawn(move || {
        if next_index.is_none() {
            return Ok(Err("no line index is written".to_string()));
        }
        // The file's first bytes: its header.
        let limit = crate::exec::extract::HEADER_BYTES as usize;
        let mut start: Vec<u8> = Vec::new();
        while start.len() < limit {
            match rx.recv() {
                Ok(chunk) => start.extend_from_slice(&chunk),
                Err(_) => break,
            }
        }
        let columns = match crate::exec::extract::columns_of(&stage, &start[..start.len().min(limit)], &name) {
            Ok(c) => c,
            Err(e) => return Ok(Err(format!("its header cannot be read ({e})"))),
        };
        let header: Vec<u8> = if stage.csv.header {
            let first = &start[..start.len().min(limit)];
            first[..memchr::memchr(b'\n', first).unwrap_or(first.len())].to_vec()
        } else {
            Vec::new()
        };
        let rest = Chunks { rx, chunk: Vec::new(), at: 0 };
        let file = std::io::Cursor::new(start).chain(rest);
        Ok(prescan(&stage, file, &name, &columns, &header, next_index.as_deref(), &last_index)?.map(|p| (p, columns)))
    });
    (tx, handle)
}

/// The chunks of a download as one stream of bytes.
struct Chunks {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.at = 0;
                }
                // The download ended.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Counts the bytes read through it.
struct CountingReader<'a, R> {
    inner: R,
    bytes: &'a mut u64,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.bytes += n as u64;
        Ok(n)
    }
}

/// Compares the file at `path` with the last load's (its index at `index`, its rejects
/// `previous`), writes the changed records to a file in `dir`, and this file's index to
/// `next_index`. `Ok(Err(why))` when the records cannot be told apart here.
pub fn changes(
    stage: &StagePlan,
    path: &Path,
    file_columns: &[String],
    index: &Path,
    previous: &[Reject],
    dir: &Path,
    next_index: Option<&Path>,
    prescanned: Option<Prescanned>,
) -> Result<Result<Changes, Unsupported>, ExecError> {
    let closing = index::keeps_keys(stage);
    // The file's records: as scanned while it downloaded (against this same index), or now.
    let followed = prescanned.filter(|p| p.compared_with == index);
    let as_downloaded = followed.is_some();
    let pre = match followed {
        Some(p) => p,
        None => {
            let header_bytes = header_record(stage, path)?;
            let file = std::fs::File::open(path).map_err(|e| ExecError::Source { source_name: path.display().to_string(), message: e.to_string() })?;
            match prescan(stage, file, &path.display().to_string(), file_columns, &header_bytes, next_index, index)? {
                Ok(p) => p,
                Err(why) => return Ok(Err(why)),
            }
        }
    };
    if !pre.same_header {
        return Ok(Err("the header differs from the last file's".into()));
    }
    let Prescanned { was, matched, last_keys, lens, first_start, groups, scanned, index, reordered, .. } = pre;
    let header_bytes = scanned.header;
    // The smaller file ends every line as the source does (DuckDB refuses a file that mixes
    // them): a last line the source left without a line end gets the file's own.
    let line_end: &[u8] = if scanned.crlf { b"\r\n" } else { b"\n" };
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
            let mut sorted: Vec<u64> = keys.iter().copied().filter(|k| *k != 0).collect();
            sorted.sort_unstable();
            sorted.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect()
        })
        .collect();
    let repeated = |r: usize| groups.iter().zip(&repeats).any(|(keys, rep)| keys[r] != 0 && rep.contains(&keys[r]));
    let mut out = Changes {
        path: dir.join(format!("etl-changed-{}-{}.csv", std::process::id(), stage.name)),
        lines: Vec::new(),
        same: 0,
        valid: 0,
        rejected: 0,
        warned: 0,
        rejects: Vec::new(),
        index,
        vanished: Vec::new(),
        as_downloaded,
        reordered,
    };
    let mut changed: Vec<usize> = Vec::new();
    for (r, &at) in was.iter().enumerate() {
        let line = r as u64 + 1 + header;
        match (at != NOT_FOUND).then(|| u64::from(at) + 1 + header) {
            Some(was) if !repeated(r) && !lost(was) => {
                out.same += 1;
                let rejects = by_line.get(&was).map(Vec::as_slice).unwrap_or_default();
                if rejects.iter().any(|j| j.severity == Severity::Error) {
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
    if let Some(keys) = last_keys.as_ref().filter(|_| closing) {
        let kept: HashSet<&[u8]> = keys.iter().zip(&matched).filter(|(_, m)| **m).map(|(k, _)| k.as_slice()).collect();
        let gone: HashSet<&[u8]> = keys.iter().zip(&matched).filter(|(k, m)| !**m && !k.is_empty() && !kept.contains(k.as_slice())).map(|(k, _)| k.as_slice()).collect();
        out.vanished = gone.into_iter().map(<[u8]>::to_vec).collect();
        out.vanished.sort_unstable();
    }
    // The changed records, copied in file order.
    let fail_in = |e: std::io::Error| ExecError::Source { source_name: path.display().to_string(), message: e.to_string() };
    let fail_out = |e: std::io::Error| ExecError::Write { path: dir.display().to_string(), message: e.to_string() };
    let mut input = std::fs::File::open(path).map_err(fail_in)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out.path).map_err(fail_out)?);
    if stage.csv.header {
        w.write_all(header_bytes.strip_suffix(b"\r").unwrap_or(&header_bytes)).map_err(fail_out)?;
        w.write_all(line_end).map_err(fail_out)?;
    }
    let mut bytes = Vec::new();
    // Where record `next` starts, moved on through the lengths (`changed` is in file order).
    let (mut at, mut next) = (first_start, 0usize);
    for r in changed {
        use std::io::Seek;
        while next < r {
            at += u64::from(lens[next]) + 1;
            next += 1;
        }
        input.seek(std::io::SeekFrom::Start(at)).map_err(fail_in)?;
        bytes.resize(lens[r] as usize, 0);
        input.read_exact(&mut bytes).map_err(fail_in)?;
        let body = bytes.strip_suffix(b"\r").unwrap_or(&bytes);
        w.write_all(body).map_err(fail_out)?;
        w.write_all(line_end).map_err(fail_out)?;
        out.lines.push(r as u64 + 1 + header);
    }
    w.flush().map_err(fail_out)?;
    Ok(Ok(out))
}


#[cfg(test)]
mod tests {
    use std::io::Read;

    /// The smaller file holds exactly the changed and new records, as the source wrote them and
    /// in its order, each ended as the source ends its lines (a last line without one gets it);
    /// `lines` maps each to its line in the whole file.
    #[test]
    fn the_smaller_file_holds_exactly_the_changed_records_each_ended_as_the_source_ends_lines() {
        let stage = super::scan::tests::stage();
        let columns: Vec<String> = ["id", "code", "n"].map(String::from).to_vec();
        let cases = [
            ("id,code,n\na,x,1\nb,y,2\nc,z,3\n", "id,code,n\na,x,1\nb,y,9\nc,z,3\nd,w,4", "id,code,n\nb,y,9\nd,w,4\n", vec![3, 5], 2),
            ("id,code,n\r\na,x,1\r\nb,y,2\r\n", "id,code,n\r\na,x,1\r\nb,y,\"9\"\r\nc,z,3\r\n", "id,code,n\r\nb,y,\"9\"\r\nc,z,3\r\n", vec![3, 4], 1),
            ("id,code,n\na,x,1\n", "id,code,n\nq,x,1\na,r,1\n", "id,code,n\nq,x,1\na,r,1\n", vec![2, 3], 0),
            // Records lacking the unique field (ragged) do not repeat each other's value.
            ("id,code,n\na,x,1\nb\nc\n", "id,code,n\na,x,1\nb\nc\nd,w,4\n", "id,code,n\nd,w,4\n", vec![5], 3),
        ];
        for (last, now, want, lines, same) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (last_path, now_path, index) = (dir.path().join("last.csv"), dir.path().join("now.csv"), dir.path().join("s-last.lines"));
            std::fs::write(&last_path, last).unwrap();
            std::fs::write(&now_path, now).unwrap();
            super::index_file(&stage, &last_path, &columns, &index).unwrap().unwrap().keep().unwrap();
            let c = super::changes(&stage, &now_path, &columns, &index, &[], dir.path(), None, None).unwrap().unwrap_or_else(|why| panic!("{now:?}: {why}"));
            assert_eq!(std::fs::read_to_string(&c.path).unwrap(), want, "{last:?} then {now:?}");
            assert_eq!((c.lines, c.same), (lines, same), "{now:?}");
        }
    }

    /// The last file's index is read whole only for a file whose records are often out of its
    /// order: a few changed records at the start are looked up near where they were.
    #[test]
    fn the_last_files_index_is_read_whole_only_for_a_reordered_file() {
        let stage = super::scan::tests::stage();
        let columns: Vec<String> = ["id", "code", "n"].map(String::from).to_vec();
        let rows: Vec<String> = (0..3000).map(|i| format!("k{i},c{i},{i}")).collect();
        let file = |rows: &[String]| format!("id,code,n\n{}\n", rows.join("\n"));
        let dir = tempfile::tempdir().unwrap();
        let (last, now, index) = (dir.path().join("last.csv"), dir.path().join("now.csv"), dir.path().join("s-last.lines"));
        std::fs::write(&last, file(&rows)).unwrap();
        super::index_file(&stage, &last, &columns, &index).unwrap().unwrap().keep().unwrap();
        let compare = |rows: &[String]| {
            std::fs::write(&now, file(rows)).unwrap();
            super::changes(&stage, &now, &columns, &index, &[], dir.path(), None, None).unwrap().unwrap_or_else(|why| panic!("{why}"))
        };
        let mut changed = rows.clone();
        changed[0] = "k0,c0,changed".into();
        changed[1] = "k1,c1,changed".into();
        let c = compare(&changed);
        assert_eq!((c.same, c.reordered), (2998, false), "two changed records at the start");
        let mut reversed = rows.clone();
        reversed.reverse();
        // A changed record after the threshold: every record after it is still looked up in
        // the whole index (the lookups past the threshold do not stop at the next miss).
        reversed[2000] = "k999,c999,changed".into();
        let c = compare(&reversed);
        assert!(c.reordered, "a reversed file looked up without the whole index");
        assert_eq!(c.same, 1998, "a reversed file's records (the first 1 001 before the threshold, and one changed, missed) not all found once the whole index was read");
    }

    /// A download's chunks read back as one stream, whatever the reader's buffer: every byte once,
    /// in order, empty chunks skipped, and the end once the sender is gone.
    #[test]
    fn a_downloads_chunks_read_as_one_stream() {
        let chunks: [&[u8]; 5] = [b"id,n\n", b"", b"a,1", b"\nb,2\n", b"c"];
        let whole: Vec<u8> = chunks.concat();
        for size in [1, 2, 3, 7, 64] {
            let (tx, rx) = std::sync::mpsc::sync_channel(8);
            for c in chunks {
                tx.send(c.to_vec()).unwrap();
            }
            drop(tx);
            let mut r = super::Chunks { rx, chunk: Vec::new(), at: 0 };
            let (mut out, mut buf) = (Vec::new(), vec![0u8; size]);
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(out, whole, "read {size} bytes at a time");
            assert_eq!(r.read(&mut buf).unwrap(), 0, "the end stays the end");
        }
    }
}
