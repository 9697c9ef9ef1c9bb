//! Line indexes: a file's records' hashes in line order, written as the file is scanned, kept
//! under a temporary name until the load it describes commits, then put in place (the stage's
//! older ones removed); and read back to find the next file's unchanged records.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_128;

use super::scan::{ByHash, Record, RecordKey, scan};
use crate::exec::error::ExecError;
use crate::plan::StagePlan;

/// Version 4: after the magic and the header's hash, each record's hash (with the cache's
/// [`RecordKey`]) alone, its line told by its position. An index of an earlier version (3 also
/// held each record's line, which nothing read; 2 was unkeyed) is not read: that load checks
/// every record once.
const MAGIC: &[u8; 8] = b"ETLLINE4";

/// The bytes of the magic and the header's hash, then of each record.
const START: u64 = 24;
const ENTRY: u64 = 16;

/// Writes a line index to `path` as records come (each record's hash), through a temporary
/// name, and removes the stage's older indexes on `finish`.
pub struct IndexWriter {
    path: PathBuf,
    partial: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    /// A history stage closing the keys its file lacks: each record's key, one CSV record per
    /// line (empty: a field is missing), in a file beside the index ([`keys_path`]).
    keys: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
}

/// Where an index's keys are kept: beside it, `.keys` for `.lines`.
pub fn keys_path(index: &Path) -> PathBuf {
    index.with_extension("keys")
}

/// Whether a stage's line index keeps each record's key: a history that closes the keys its
/// file lacks needs those of the last file's records that vanished.
pub fn keeps_keys(stage: &StagePlan) -> bool {
    stage.target.history.as_ref().is_some_and(|h| h.close) && !stage.target.key.is_empty() && stage.csv.encoding == crate::spec::model::Encoding::Utf8
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
        let keys = if keeps_keys(stage) {
            let at = keys_path(&partial);
            let file = std::fs::File::create(&at).map_err(Self::fail(dir))?;
            Some((at, std::io::BufWriter::with_capacity(1 << 20, file)))
        } else {
            None
        };
        Ok(IndexWriter { path: path.to_path_buf(), partial, out, keys })
    }

    /// Adds the next record.
    pub fn add(&mut self, r: &Record<'_>) -> Result<(), ExecError> {
        let fail = |e: std::io::Error| ExecError::Write { path: self.partial.display().to_string(), message: e.to_string() };
        self.out.write_all(&r.hash.to_le_bytes()).map_err(fail)?;
        if let Some((_, keys)) = self.keys.as_mut() {
            keys.write_all(r.key).map_err(fail)?;
            keys.write_all(b"\n").map_err(fail)?;
        }
        Ok(())
    }

    /// Flushes the index. It stays under its temporary name until the load it describes
    /// commits (`PendingIndex::keep`): a cache never holds the index of a load that did not
    /// happen, and the last load's index stays until then.
    pub fn flushed(mut self) -> Result<PendingIndex, ExecError> {
        self.out.flush().map_err(|e| ExecError::Write { path: self.partial.display().to_string(), message: e.to_string() })?;
        if let Some((at, keys)) = self.keys.as_mut() {
            keys.flush().map_err(|e| ExecError::Write { path: at.display().to_string(), message: e.to_string() })?;
        }
        Ok(PendingIndex { path: std::mem::take(&mut self.path), partial: std::mem::take(&mut self.partial) })
    }
}

/// Removes an index file still under its temporary name (none once it was handed on or kept).
fn discard(partial: &Path) {
    if !partial.as_os_str().is_empty() {
        let _ = std::fs::remove_file(partial);
        let _ = std::fs::remove_file(keys_path(partial));
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
    /// Where it goes when kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Puts the index in place and removes the stage's older ones.
    pub fn keep(mut self) -> Result<(), ExecError> {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let fail = |e: std::io::Error| ExecError::Write { path: dir.display().to_string(), message: e.to_string() };
        // The keys first: an index in place never lacks the keys it was written with (a stale
        // keys file beside an index without keys is removed).
        if keys_path(&self.partial).is_file() {
            std::fs::rename(keys_path(&self.partial), keys_path(&self.path)).map_err(fail)?;
        } else {
            let _ = std::fs::remove_file(keys_path(&self.path));
        }
        std::fs::rename(&self.partial, &self.path).map_err(fail)?;
        self.partial = PathBuf::new();
        let name = self.path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let stem = name.split('-').next().unwrap_or_default();
        for entry in std::fs::read_dir(&dir).map_err(fail)?.flatten() {
            let other = entry.file_name();
            let other = other.to_string_lossy();
            let own_keys = other.strip_suffix(".keys").is_some_and(|n| name.strip_suffix(".lines") == Some(n));
            if other != name.as_str() && !own_keys && other.starts_with(stem) && (other.ends_with(".lines") || other.ends_with(".keys")) {
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
/// order (the record at position i is on line i + 1 + header), read as the lookups move through
/// it: files mostly keep their order, so only a window after the last match is held, and the
/// whole index only once records are often not found there (a reordered file).
pub(super) struct LastFile {
    pub(super) header: u128,
    /// Its records.
    pub(super) len: usize,
    /// Each record's key as [`IndexWriter`] kept it, when it kept them (`keeps_keys`).
    pub(super) keys: Option<Vec<Vec<u8>>>,
    path: PathBuf,
    /// The index, positioned after the records read so far.
    input: std::io::BufReader<std::fs::File>,
    /// The hashes of positions `first..first + window.len()`.
    window: std::collections::VecDeque<u128>,
    first: usize,
    /// Every hash, and hash → position: read the first time a record is not found near where
    /// the last one was.
    all: Option<(Vec<u128>, ByHash<u128, usize>)>,
}

/// The index at `path`, its header read and its length checked; its records are read by
/// [`LastFile::find`].
pub(super) fn read_index(path: &Path) -> Result<LastFile, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let bytes = file.metadata().map_err(|e| e.to_string())?.len();
    let mut input = std::io::BufReader::with_capacity(1 << 20, file);
    let mut start = [0u8; START as usize];
    if bytes < START || (bytes - START) % ENTRY != 0 || input.read_exact(&mut start).is_err() || &start[..8] != MAGIC {
        return Err("not a line index".into());
    }
    let header = u128::from_le_bytes(start[8..].try_into().expect("16 bytes"));
    let len = ((bytes - START) / ENTRY) as usize;
    let keys = match std::fs::read(keys_path(path)) {
        Ok(k) => {
            let mut lines: Vec<Vec<u8>> = k.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
            // The last record's line end leaves an empty piece after it.
            if lines.last().is_some_and(Vec::is_empty) {
                lines.pop();
            }
            if lines.len() != len {
                return Err(format!("its keys hold {} records, the index {len}", lines.len()));
            }
            Some(lines)
        }
        Err(_) => None,
    };
    Ok(LastFile { header, len, keys, path: path.to_path_buf(), input, window: Default::default(), first: 0, all: None })
}

/// The next record's hash in an index.
fn next_hash(input: &mut impl Read) -> std::io::Result<u128> {
    let mut entry = [0u8; ENTRY as usize];
    input.read_exact(&mut entry)?;
    Ok(u128::from_le_bytes(entry))
}

impl LastFile {
    /// The position of a record whose hash is `h`, looked for first just after `cursor` (where
    /// the last match was: files mostly keep their order), then, once records are often not
    /// found nearby (`anywhere`), in the whole file. A record not found is checked as a changed
    /// one. Which of two equal records it finds does not matter: they differ only in
    /// cross-record checks, which are checked again (see `REPEATS`). `Err` when the index
    /// cannot be read (the comparison then gives up).
    pub(super) fn find(&mut self, h: u128, cursor: usize, anywhere: bool) -> Result<Option<usize>, String> {
        let end = (cursor + 8).min(self.len);
        // In order so far (`cursor` never moved back): the window moves on to `cursor..end`,
        // what is before it never looked at again.
        if self.all.is_none() && cursor >= self.first {
            let drop = (cursor - self.first).min(self.window.len());
            self.window.drain(..drop);
            self.first += drop;
            while self.first + self.window.len() < end {
                let h = next_hash(&mut self.input).map_err(|e| format!("the last load's line index is unreadable ({e})"))?;
                self.window.push_back(h);
            }
            if let Some(k) = self.window.iter().skip(cursor - self.first).take(end.saturating_sub(cursor)).position(|x| *x == h) {
                return Ok(Some(cursor + k));
            }
            if !anywhere {
                return Ok(None);
            }
        }
        if self.all.is_none() {
            self.all = Some(self.read_all()?);
        }
        let Some((all, map)) = &self.all else { return Ok(None) };
        if let Some(k) = all.get(cursor..end).and_then(|w| w.iter().position(|x| *x == h)) {
            return Ok(Some(cursor + k));
        }
        Ok(if anywhere { map.get(&h).copied() } else { None })
    }

    /// Whether lookups had the whole index read (records out of the last file's order).
    pub(super) fn read_whole(&self) -> bool {
        self.all.is_some()
    }

    /// Every hash of the index, and hash → (first) position.
    fn read_all(&self) -> Result<(Vec<u128>, ByHash<u128, usize>), String> {
        let fail = |e: std::io::Error| format!("the last load's line index is unreadable ({e})");
        let mut input = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&self.path).map_err(fail)?);
        input.read_exact(&mut [0u8; START as usize]).map_err(fail)?;
        let mut all = Vec::with_capacity(self.len);
        let mut map = ByHash::with_capacity_and_hasher(self.len, Default::default());
        for i in 0..self.len {
            let h = next_hash(&mut input).map_err(fail)?;
            all.push(h);
            map.entry(h).or_insert(i);
        }
        Ok((all, map))
    }
}

/// The header record of a file (what the index's header hash is of).
pub(super) fn header_record(stage: &StagePlan, path: &Path) -> Result<Vec<u8>, ExecError> {
    if !stage.csv.header {
        return Ok(Vec::new());
    }
    let fail = |e: std::io::Error| ExecError::Source { source_name: path.display().to_string(), message: e.to_string() };
    let mut buf = Vec::new();
    std::fs::File::open(path).and_then(|f| f.take(4 << 20).read_to_end(&mut buf)).map_err(fail)?;
    let end = memchr::memchr(b'\n', &buf).unwrap_or(buf.len());
    Ok(buf[..end].to_vec())
}

/// Scans the file at `path` and writes its line index for `index` (for a load that checked
/// every record). `Err` says why when the file cannot be split here.
pub fn index_file(stage: &StagePlan, path: &Path, file_columns: &[String], index: &Path) -> Result<Result<PendingIndex, String>, ExecError> {
    let dir = index.parent().unwrap_or(Path::new("."));
    let key = RecordKey::of_cache(dir).map_err(|e| ExecError::Write { path: dir.display().to_string(), message: e.to_string() })?;
    let mut writer = IndexWriter::create(stage, index, &header_record(stage, path)?)?;
    match scan(stage, path, file_columns, keeps_keys(stage), &key, |r| writer.add(&r))? {
        Ok(_) => writer.flushed().map(Ok),
        Err(why) => Ok(Err(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::{MAGIC, read_index};

    /// An index of `n` records whose hashes are 1000, 1001, ...
    fn index_of(n: u64) -> Vec<u8> {
        let mut whole = MAGIC.to_vec();
        whole.extend_from_slice(&[7u8; 16]);
        for i in 0..n {
            whole.extend_from_slice(&u128::from(1000 + i).to_le_bytes());
        }
        whole
    }

    /// A record is found just after the last match, or anywhere once asked; an index that can
    /// no longer be read as far as a lookup needs is an error, never a record taken as changed.
    #[test]
    fn the_last_index_is_read_as_far_as_lookups_need_and_whole_for_a_reordered_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lines");
        std::fs::write(&path, index_of(50)).unwrap();
        let mut last = read_index(&path).unwrap();
        assert_eq!(last.len, 50);
        let h = |i: u128| 1000 + i;
        assert_eq!(last.find(h(0), 0, false), Ok(Some(0)));
        assert_eq!(last.find(h(1), 1, false), Ok(Some(1)));
        assert_eq!(last.find(h(9), 2, false), Ok(Some(9)), "within the 8 after the last match");
        assert_eq!(last.find(h(20), 10, false), Ok(None), "past them, only when asked to look anywhere");
        assert_eq!(last.window.len(), 8, "the window holds what lookups near the last match need");
        assert!(last.all.is_none(), "the whole index read for lookups never asked to look anywhere");
        assert_eq!(last.find(h(20), 10, true), Ok(Some(20)));
        assert_eq!(last.find(h(3), 21, true), Ok(Some(3)), "an earlier record, once the whole index is read");
        assert_eq!(last.find(h(22), 21, false), Ok(Some(22)));
        assert_eq!(last.find(9, 21, true), Ok(None));
        // Cut after it was opened (past what its reader buffers, 1 MiB): the lookup that needs
        // the missing records fails.
        std::fs::write(&path, index_of(100_000)).unwrap();
        let mut cut = read_index(&path).unwrap();
        assert_eq!(cut.find(h(5), 0, false), Ok(Some(5)));
        std::fs::write(&path, &index_of(100_000)[..24 + 16 * 60_000]).unwrap();
        assert!(cut.find(h(90_000), 90_000, false).is_err(), "a cut index taken for one without the record");
    }

    /// An index whose load did not commit is dropped, never left in the cache, and the last
    /// load's index stays; one kept replaces the stage's older ones.
    #[test]
    fn an_index_whose_load_did_not_commit_leaves_nothing_and_the_last_one_stays() {
        let stage = crate::exec::incremental::scan::tests::stage();
        let columns: Vec<String> = ["id", "code", "n"].map(String::from).to_vec();
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("now.csv");
        std::fs::write(&csv, "id,code,n\na,x,1\nb,y,2\n").unwrap();
        let cache = dir.path().join("line-index");
        // The cache's record key and another stage's index aside.
        let others = ["record-key", "t-1.keys", "t-1.lines"];
        let names = || -> Vec<String> {
            let mut n: Vec<String> = std::fs::read_dir(&cache).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !others.contains(&n.as_str())).collect();
            n.sort();
            n
        };
        super::index_file(&stage, &csv, &columns, &cache.join("s-1.lines")).unwrap().unwrap().keep().unwrap();
        assert_eq!(names(), ["s-1.lines"]);
        for other in &others[1..] {
            std::fs::write(cache.join(other), "another stage's").unwrap();
        }
        let pending = super::index_file(&stage, &csv, &columns, &cache.join("s-2.lines")).unwrap().unwrap();
        assert_eq!(names().len(), 2, "the pending index is written under its temporary name: {:?}", names());
        drop(pending);
        assert_eq!(names(), ["s-1.lines"], "a load that did not commit left its index behind");
        super::index_file(&stage, &csv, &columns, &cache.join("s-3.lines")).unwrap().unwrap().keep().unwrap();
        assert_eq!(names(), ["s-3.lines"], "the older index stays beside the one kept");
        for other in others {
            assert!(cache.join(other).is_file(), "{other} removed with the stage's older index");
        }
    }

    #[test]
    fn a_damaged_line_index_is_refused_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lines");
        let mut whole = MAGIC.to_vec();
        whole.extend_from_slice(&[7u8; 16]);
        whole.extend_from_slice(&[1u8; 16]);
        std::fs::write(&path, &whole).unwrap();
        let read = read_index(&path).unwrap_or_else(|e| panic!("a whole index is read: {e}"));
        assert_eq!((read.header, read.len), (u128::from_le_bytes([7u8; 16]), 1));
        // The index of a file of a header and no records is whole too: the next file is compared
        // with it (every record new), not checked as if it had none.
        std::fs::write(&path, index_of(0)).unwrap();
        let read = read_index(&path).unwrap_or_else(|e| panic!("the index of a file without records is read: {e}"));
        assert_eq!(read.len, 0);
        for (what, bytes) in [
            ("cut inside its header", &whole[..10]),
            ("another file's start", &b"NOTLINES0123456789abcdef"[..]),
            ("cut inside a record", &whole[..whole.len() - 5]),
        ] {
            std::fs::write(&path, bytes).unwrap();
            assert!(read_index(&path).is_err(), "{what}: taken for a line index");
        }
    }
}
