//! The record scan: a file split into records on its raw bytes (quotes honoured), each record's
//! 128-bit hash and, with keys, the hashes of its unique groups. It gives up wherever DuckDB
//! might split the file otherwise (a quoted field spanning lines, a blank line, irregular
//! quoting, an escape other than the quote, UTF-16, a key that is not text).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::{xxh3_64, xxh3_128_with_secret};

use crate::exec::error::ExecError;
use crate::plan::StagePlan;
use crate::spec::model::{ColumnType, Encoding};

/// Hashes keys that are hashes already: their low 64 bits.
#[derive(Default, Clone, Copy)]
pub(super) struct Prehashed(u64);

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

pub(super) type ByHash<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Prehashed>>;

/// The key records are hashed with: random bytes kept in the cache directory (`record-key`,
/// readable by its owner only), made the first time a cache is used. A record's hash is XXH3-128
/// with this secret, so someone who can write a source file but not read the cache cannot aim
/// a changed record at an unchanged one's hash.
pub struct RecordKey(Vec<u8>);

impl RecordKey {
    /// The size of the secret (XXH3 takes at least 136 bytes).
    const LEN: usize = 192;

    /// The key of the cache directory `dir`, made there if it has none yet.
    pub fn of_cache(dir: &Path) -> std::io::Result<RecordKey> {
        use std::io::Write;
        let path = dir.join("record-key");
        if let Some(key) = Self::read(&path)? {
            return Ok(key);
        }
        std::fs::create_dir_all(dir)?;
        let mut secret = vec![0u8; Self::LEN];
        getrandom::fill(&mut secret).map_err(|e| std::io::Error::other(format!("no random bytes for the record key: {e}")))?;
        // Written under a name of its own (readable by its owner only), then linked in place
        // if no key is there yet: runs (or threads of one run) making one at once all end with
        // whichever was linked first.
        let mut partial = tempfile::Builder::new().prefix(".record-key.").tempfile_in(dir)?;
        partial.write_all(&secret)?;
        partial.as_file().sync_all()?;
        match partial.persist_noclobber(&path) {
            Ok(_) => Ok(RecordKey(secret)),
            // Another run linked its key first (whole: written and synced before it was linked);
            // a name that still reads as missing (a link to nothing) is no key either.
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Self::read(&path)?.ok_or_else(|| Self::not_a_key(&path)),
            Err(e) => Err(e.error),
        }
    }

    /// The key at `path`; None when there is none.
    fn read(path: &Path) -> std::io::Result<Option<RecordKey>> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() == Self::LEN => Ok(Some(RecordKey(bytes))),
            Ok(_) => Err(Self::not_a_key(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn not_a_key(path: &Path) -> std::io::Error {
        std::io::Error::other(format!("{} is not a record key: remove it (the line indexes beside it are then checked in full once)", path.display()))
    }

    /// A record's hash.
    pub fn hash(&self, bytes: &[u8]) -> u128 {
        xxh3_128_with_secret(bytes, &self.0)
    }
}

/// One data record as the scan found it.
pub struct Record<'a> {
    /// Its index among the data records (0 for the first).
    pub index: usize,
    /// The keyed hash of its bytes ([`RecordKey`]).
    pub hash: u128,
    /// Where its bytes start in the file.
    pub at: u64,
    /// Its bytes.
    pub bytes: &'a [u8],
    /// Per unique group (the key, then each unique column): the hash of the group's fields
    /// (None: a field is missing).
    pub groups: &'a [Option<u64>],
    /// With keys, the key's fields as one CSV record (each field quoted), as COPY reads them;
    /// empty when a field is missing.
    pub key: &'a [u8],
}

/// How the records of a file are split.
struct Dialect {
    delimiter: u8,
    quote: u8,
    header: bool,
    /// Field positions of each unique group's columns.
    groups: Vec<Vec<usize>>,
    /// Whether the first group is the target's key.
    keyed: bool,
}

/// Why the scan cannot split a file as DuckDB does (the caller then checks every record).
pub type Unsupported = String;

/// What a scan found besides the records.
pub struct Scanned {
    /// The header record's bytes (empty without a header), its line end's `\r` included.
    pub header: Vec<u8>,
    /// Whether the file's lines end in CRLF (every terminated line does; none does otherwise).
    pub crlf: bool,
}

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
    let keyed = with_keys && !stage.target.key.is_empty();
    Ok(Dialect { delimiter, quote, header: csv.header, groups, keyed })
}

/// The fields at `positions` of one record, unquoted, hashed together: None when one is
/// missing, Err when the record's quoting is one DuckDB might read otherwise (a quote inside an
/// unquoted field, or text after a closing quote).
///
/// With `csv`, the fields are also written there as one CSV record in `positions`' order, each
/// quoted (left empty when one is missing).
fn group_hash(record: &[u8], d: &Dialect, positions: &[usize], field: &mut Vec<u8>, joined: &mut Vec<u8>, mut csv: Option<&mut Vec<u8>>) -> Result<Option<u64>, Unsupported> {
    let record = record.strip_suffix(b"\r").unwrap_or(record);
    joined.clear();
    // With `csv`: each position's field, where it starts in `joined`.
    let mut starts: Vec<(usize, usize, usize)> = Vec::new();
    if let Some(out) = csv.as_deref_mut() {
        out.clear();
    }
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
            starts.push((index, joined.len(), field.len()));
            joined.extend_from_slice(field);
        }
        i += 1;
    }
    if let Some(out) = csv {
        for (n, p) in positions.iter().enumerate() {
            let Some(&(_, at, len)) = starts.iter().find(|(index, _, _)| index == p) else { continue };
            if n > 0 {
                out.push(b',');
            }
            out.push(b'"');
            for &b in &joined[at..at + len] {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        }
    }
    Ok(Some(xxh3_64(joined)))
}

/// Splits `path` into records (quotes honoured) and hands each data record to `each`; with
/// keys, also the hashes of its unique groups. Returns the header record's bytes (empty without
/// a header) and the line ends, or `Ok(Err(why))` when the file cannot be split exactly as
/// DuckDB does: also when its lines end in both CRLF and LF, or a carriage return stands
/// anywhere but at a line's end (CR-only line ends).
pub fn scan(
    stage: &StagePlan,
    path: &Path,
    file_columns: &[String],
    with_keys: bool,
    key: &RecordKey,
    each: impl FnMut(Record<'_>) -> Result<(), ExecError>,
) -> Result<Result<Scanned, Unsupported>, ExecError> {
    let file = std::fs::File::open(path).map_err(|e| ExecError::Source { source_name: path.display().to_string(), message: e.to_string() })?;
    scan_reader(stage, file, &path.display().to_string(), file_columns, with_keys, key, each)
}

/// [`scan`] of the bytes `file` gives (named `name` in errors): a file, or a download as it
/// arrives.
pub fn scan_reader(
    stage: &StagePlan,
    mut file: impl Read,
    name: &str,
    file_columns: &[String],
    with_keys: bool,
    key: &RecordKey,
    mut each: impl FnMut(Record<'_>) -> Result<(), ExecError>,
) -> Result<Result<Scanned, Unsupported>, ExecError> {
    let d = match dialect(stage, file_columns, with_keys) {
        Ok(d) => d,
        Err(why) => return Ok(Err(why)),
    };
    let fail = |e: std::io::Error| ExecError::Source { source_name: name.to_string(), message: e.to_string() };
    let mut header = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let (mut filled, mut base, mut first, mut eof, mut index) = (0usize, 0u64, true, false, 0usize);
    let (mut field, mut joined, mut groups, mut key_csv) = (Vec::new(), Vec::new(), vec![None; d.groups.len()], Vec::new());
    // Whether the lines seen so far end in CRLF (None before the first line end).
    let mut crlf: Option<bool> = None;
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
                // A quote in a quoted field: doubled (a quote), or closing. One that ends the
                // bytes read so far is taken as closing: nothing follows it, so the search ends
                // there, and a record without its end yet is scanned again from its start once
                // more bytes are read (or ends the file).
                let next = buf[..filled].get(at + 1).copied();
                match next {
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
            let cr_end = record.last() == Some(&b'\r');
            if memchr::memchr(b'\r', &record[..record.len() - usize::from(cr_end)]).is_some() {
                return Ok(Err("a carriage return stands inside a line (CR-only line ends?)".into()));
            }
            // A line the file ends without a line end has no terminator to compare.
            if end < filled {
                match crlf {
                    None => crlf = Some(cr_end),
                    Some(c) if c != cr_end => return Ok(Err("the file's lines end in both CRLF and LF".into())),
                    Some(_) => {}
                }
            }
            if first && d.header {
                header = record.to_vec();
            } else if record.is_empty() || record == b"\r" {
                return Ok(Err("the file has a blank line".into()));
            } else {
                for (g, positions) in d.groups.iter().enumerate() {
                    let csv = (g == 0 && d.keyed).then_some(&mut key_csv);
                    groups[g] = match group_hash(record, &d, positions, &mut field, &mut joined, csv) {
                        Ok(h) => h,
                        Err(why) => return Ok(Err(why)),
                    };
                }
                if d.keyed && groups[0].is_none() {
                    key_csv.clear();
                }
                each(Record { index, hash: key.hash(record), at: base + pos as u64, bytes: record, groups: &groups, key: &key_csv })?;
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
    Ok(Ok(Scanned { header, crlf: crlf.unwrap_or(false) }))
}


#[cfg(test)]
pub(super) mod tests {
    use super::RecordKey;

    #[test]
    fn a_cache_makes_its_record_key_once_for_its_owner_and_another_cache_has_another() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = RecordKey::of_cache(a.path()).unwrap();
        let again = RecordKey::of_cache(a.path()).unwrap();
        assert_eq!(first.hash(b"1,x,2"), again.hash(b"1,x,2"), "the key is kept");
        assert_ne!(first.hash(b"1,x,2"), RecordKey::of_cache(b.path()).unwrap().hash(b"1,x,2"), "each cache has its own");
        assert_ne!(first.hash(b"1,x,2"), xxhash_rust::xxh3::xxh3_128(b"1,x,2"), "keyed, not plain XXH3");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(a.path().join("record-key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
        }
        std::fs::write(a.path().join("record-key"), b"short").unwrap();
        assert!(RecordKey::of_cache(a.path()).is_err(), "a damaged key is an error, not silently replaced");
        // A key that cannot be read (here a directory: root reads any file) is an error too, not
        // taken for a missing one.
        let c = tempfile::tempdir().unwrap();
        std::fs::create_dir(c.path().join("record-key")).unwrap();
        let e = RecordKey::of_cache(c.path()).err().expect("an unreadable key replaced");
        assert_eq!(e.kind(), std::io::ErrorKind::IsADirectory, "the read's own error, not taken for a missing key: {e}");
        // A link to nothing reads as missing, yet holds the name: an error, not a new key
        // linked over and over (it recursed until the stack overflowed).
        #[cfg(unix)]
        {
            let d = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(d.path().join("gone"), d.path().join("record-key")).unwrap();
            let e = RecordKey::of_cache(d.path()).err().expect("a dangling link taken for a key");
            assert!(e.to_string().contains("is not a record key: remove it"), "{e}");
        }
    }

    /// Two runs making a cache's key at once both end with the one linked first: the loser of
    /// the race reads the winner's, never fails, never keeps its own.
    #[test]
    fn runs_making_a_caches_record_key_at_once_all_end_with_one_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let start = std::sync::Barrier::new(8);
            let hashes: Vec<u128> = std::thread::scope(|s| {
                let made: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            RecordKey::of_cache(dir.path()).map(|k| k.hash(b"1,x,2"))
                        })
                    })
                    .collect();
                made.into_iter().map(|t| t.join().unwrap().unwrap_or_else(|e| panic!("a run making the key at once failed: {e}"))).collect()
            });
            assert!(hashes.iter().all(|h| *h == hashes[0]), "the runs ended with different keys: {hashes:?}");
            assert_eq!(RecordKey::of_cache(dir.path()).unwrap().hash(b"1,x,2"), hashes[0], "the key kept is another");
            let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(left, vec![std::ffi::OsString::from("record-key")], "a partial key was left behind");
        }
    }

    /// The hasher of the last file's hashes (a reordered file's lookups) spreads distinct
    /// 128-bit hashes: each keeps its low 64 bits, so a million lookups stay a million, not a
    /// million times the table.
    #[test]
    fn the_prehashed_hasher_keeps_a_128_bit_hashs_low_bits() {
        use std::hash::BuildHasher;
        let build = std::hash::BuildHasherDefault::<super::Prehashed>::default();
        for n in [1u128, 0xdead_beef, u128::MAX - 7, (5u128 << 64) | 9] {
            assert_eq!(build.hash_one(n), n as u64, "{n:#x}");
        }
        assert_eq!(build.hash_one(42u64), 42);
    }

    /// A stage reading `f.csv` (`id,code,n`): the key `id`, a unique text column `code`.
    pub(in crate::exec::incremental) fn stage() -> crate::plan::StagePlan {
        stage_of("[id]", "{ type: string }")
    }

    /// A stage reading `f.csv` (`id,code,n`) with `key` and the column `id` as given, `code`
    /// unique.
    fn stage_of(key: &str, id: &str) -> crate::plan::StagePlan {
        let text = format!(
            r#"
version: 1
name: t
connections:
  f: {{ type: local, path: . }}
  d: {{ type: postgres, url: "postgres://u@h/db" }}
stages:
  s:
    source: {{ connection: f, key: f.csv }}
    target: {{ connection: d, table: s, key: {key} }}
    columns:
      id: {id}
      code: {{ type: string, unique: true }}
      n: {{ type: int32 }}
"#
        );
        let loaded = crate::spec::load_text("t.yaml", &text, None, &Default::default()).unwrap_or_else(|e| panic!("{}", e.render(false)));
        crate::plan::compile(&loaded.spec).stages.remove(0)
    }

    /// Each group whose values must not repeat is kept once: the key, then each unique column
    /// but a key of that column alone (a unique column in a key of several is a group of its own).
    #[test]
    fn the_key_and_each_unique_column_are_one_group_each() {
        let columns: Vec<String> = ["id", "code", "n"].map(String::from).to_vec();
        let groups = |stage: &crate::plan::StagePlan| super::dialect(stage, &columns, true).map(|d| d.groups);
        assert_eq!(groups(&stage_of("[id]", "{ type: string, unique: true }")), Ok(vec![vec![0], vec![1]]), "a unique key column alone");
        assert_eq!(groups(&stage_of("[id, code]", "{ type: string, unique: true }")), Ok(vec![vec![0, 1], vec![0], vec![1]]), "unique columns of a key of two");
        assert_eq!(groups(&stage()), Ok(vec![vec![0], vec![1]]));
    }

    /// Gives its bytes at most `chunk` at a time, as a download arrives.
    struct Trickle<'a> {
        bytes: &'a [u8],
        chunk: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.chunk.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// A record longer than the scan's first buffer (1 MiB) is read in a few reads: the buffer
    /// doubles as it fills, so a long line is not searched again for every few bytes that arrive.
    #[test]
    fn a_record_longer_than_the_buffer_is_read_in_a_few_reads() {
        struct Counted<'a>(Trickle<'a>, usize);
        impl std::io::Read for Counted<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.1 += 1;
                self.0.read(buf)
            }
        }
        let long = "x".repeat((1 << 20) + (1 << 13));
        let text = format!("id,code,n\n1,{long},2\n3,y,4\n");
        let key = RecordKey(vec![7; RecordKey::LEN]);
        let columns: Vec<String> = ["id", "code", "n"].map(String::from).to_vec();
        let mut file = Counted(Trickle { bytes: text.as_bytes(), chunk: usize::MAX }, 0);
        let mut lens = Vec::new();
        super::scan_reader(&stage(), &mut file, "f.csv", &columns, true, &key, |r| {
            lens.push(r.bytes.len());
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(lens, [long.len() + 4, 5]);
        assert!(file.1 <= 8, "{} reads of a file of {} bytes", file.1, text.len());
    }

    /// One record as the scan gave it: where it starts, its bytes, its groups' hashes, its key.
    type Seen = (u64, String, Vec<Option<u64>>, String);

    /// The records, header and line ends the scan finds in `bytes` read `chunk` bytes at a time.
    fn split(bytes: &str, chunk: usize) -> Result<(Vec<Seen>, String, bool), String> {
        let key = RecordKey(vec![7; RecordKey::LEN]);
        let columns: Vec<String> = ["id", "code", "n"].map(String::from).to_vec();
        let mut seen = Vec::new();
        let scanned = super::scan_reader(&stage(), Trickle { bytes: bytes.as_bytes(), chunk }, "f.csv", &columns, true, &key, |r| {
            assert_eq!(r.index, seen.len(), "records are numbered in order");
            assert_eq!(r.hash, key.hash(r.bytes));
            seen.push((r.at, String::from_utf8(r.bytes.to_vec()).unwrap(), r.groups.to_vec(), String::from_utf8(r.key.to_vec()).unwrap()));
            Ok(())
        })
        .unwrap()?;
        Ok((seen, String::from_utf8(scanned.header).unwrap(), scanned.crlf))
    }

    /// The scan of `bytes`, the same however its bytes arrive (one at a time, in odd pieces,
    /// all at once): a quote or a line end at the end of what has arrived is decided only once
    /// the next bytes are there.
    fn split_alike(bytes: &str) -> Result<(Vec<Seen>, String, bool), String> {
        let whole = split(bytes, usize::MAX);
        for chunk in [1, 2, 3, 5, 8] {
            assert_eq!(split(bytes, chunk), whole, "{bytes:?} read {chunk} bytes at a time");
        }
        whole
    }

    #[test]
    fn a_file_splits_into_the_same_records_however_its_bytes_arrive() {
        let records = |r: Result<(Vec<Seen>, String, bool), String>| -> Vec<(u64, String)> { r.unwrap().0.into_iter().map(|(at, bytes, _, _)| (at, bytes)).collect() };
        let lf = split_alike("id,code,n\na,x,1\nb,y,2\n");
        assert_eq!(records(lf.clone()), [(10, "a,x,1".into()), (16, "b,y,2".into())]);
        assert_eq!((lf.as_ref().unwrap().1.as_str(), lf.as_ref().unwrap().2), ("id,code,n", false));
        // The last line without a line end is a record all the same.
        assert_eq!(records(split_alike("id,code,n\na,x,1\nb,y,2")), records(lf));
        // CRLF: each record keeps its `\r`; a last line without a line end does not count.
        for text in ["id,code,n\r\na,x,1\r\nb,y,2\r\n", "id,code,n\r\na,x,1\r\nb,y,2"] {
            let crlf = split_alike(text).unwrap();
            assert_eq!((crlf.1.as_str(), crlf.2), ("id,code,n\r", true), "{text:?}");
            assert_eq!(crlf.0[0].1, "a,x,1\r");
        }
        // Quoted fields: a delimiter, an escaped quote, a line end's `\r` inside or after them;
        // the last field quoted, at a line end and at the end of the file.
        let quoted = split_alike("id,code,n\n\"a\"\"b\",\"x,y\",1\n\"c\",\"z\",\"2\"\nc2,z2,\"3\"").unwrap();
        assert_eq!(quoted.0.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(), ["\"a\"\"b\",\"x,y\",1", "\"c\",\"z\",\"2\"", "c2,z2,\"3\""]);
        assert_eq!(quoted.0[0].3, "\"a\"\"b\"", "the key as COPY reads it: quoted, its quote doubled");
        let crlf_quoted = split_alike("id,code,n\r\na,x,\"1\"\r\n\"b\",\"y\",2\r\n").unwrap();
        assert_eq!((crlf_quoted.0.len(), crlf_quoted.2), (2, true));
        // The groups (the key, then `code`) hash a field's value, not its quoting; each group its
        // own field.
        let groups = split_alike("id,code,n\nc,z,2\n\"c\",\"z\",\"2\"\nz,c,2\nd,\"z\",3\n").unwrap().0;
        let g: Vec<&Vec<Option<u64>>> = groups.iter().map(|s| &s.2).collect();
        assert_eq!(g[0].len(), 2, "a group for the key and one for the unique column");
        assert_eq!(g[0], g[1], "quoted or not, the same values");
        assert_ne!(g[0][0], g[2][0]);
        assert_ne!(g[0][1], g[2][1]);
        assert_eq!(g[3][1], g[0][1], "the same code on another key");
        assert_ne!(g[3][0], g[0][0]);
        assert!(groups.iter().all(|s| s.2.iter().all(Option::is_some)));
        // A record short of the unique column: its group is missing, and so is its key.
        let short = split_alike("id,code,n\na\n\"b\",x,1\n").unwrap().0;
        assert_eq!((short[0].2[1], short[0].2[0].is_some()), (None, true));

        // Files the scan cannot split as DuckDB would: it says why, whatever the pieces.
        for (text, why) in [
            ("id,code,n\r\na,x,1\nb,y,2\r\n", "both CRLF and LF"),
            ("id,code,n\na,x,1\r\nb,y,2\n", "both CRLF and LF"),
            ("id,code,n\na\rb,x,1\n", "carriage return"),
            ("id,code,n\r\na,x,1\rb,y,2\r\n", "carriage return"),
            ("id,code,n\n\"a\nb\",x,1\n", "spans lines"),
            ("id,code,n\n\"a\"b,x,1\n", "text follows a closing quote"),
            ("id,code,n\n\"a\"\rb,x,1\n", "text follows a closing quote"),
            ("id,code,n\na\"b,x,1\n", "a quote inside an unquoted field"),
            ("id,code,n\na,x,1\n\nb,y,2\n", "a blank line"),
            ("id,code,n\na,x,1\n\"b,y,2", "never closed"),
        ] {
            match split_alike(text) {
                Err(e) => assert!(e.contains(why), "{text:?}: {e}"),
                Ok(r) => panic!("{text:?} split: {r:?}"),
            }
        }
    }
}
