//! Where a CSV file's lines are: DuckDB counts a line per line end outside quotes, and skips blank
//! lines when it numbers records; a reject names the line of the file, the one an editor shows.
//! A file with a quoted field holding a line end, or a blank line, is scanned once (only when a
//! line is to be named) to map the one onto the other.

use std::io::Read;
use std::path::Path;

use crate::plan::CsvDialect;
use crate::spec::model::Encoding;

/// The lines of one file that differ from DuckDB's count: blank lines, and where a quoted line
/// end moves the lines after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    /// DuckDB's lines that are blank (it numbers no record on them), in order.
    blank: Vec<u64>,
    /// `(line, extra)`: from DuckDB's line `line` on, each starts `extra` lines of the file later
    /// (the line ends inside quoted fields before it), in order.
    moved: Vec<(u64, u64)>,
}

/// The bytes of a dialect the scan needs: one byte each, or no scan.
#[derive(Debug, Clone, Copy)]
pub struct Bytes {
    delimiter: u8,
    quote: u8,
    escape: u8,
    /// The file is UTF-16 (little endian): each unit is read as the byte it encodes when ASCII.
    utf16: bool,
}

impl Bytes {
    /// None when the file's lines cannot be told from its bytes alone (a delimiter, quote or
    /// escape outside ASCII): its lines are then DuckDB's.
    pub fn of(csv: &CsvDialect) -> Option<Bytes> {
        let one = |s: &str| match s.as_bytes() {
            [b] if b.is_ascii() => Some(*b),
            _ => None,
        };
        Some(Bytes { delimiter: one(&csv.delimiter)?, quote: one(&csv.quote)?, escape: one(&csv.escape)?, utf16: csv.encoding == Encoding::Utf16 })
    }
}

/// A UTF-16 (little endian) unit as the byte the scan reads: itself when ASCII, else a byte
/// that is no delimiter, quote, escape nor line end.
fn unit(lo: u8, hi: u8) -> u8 {
    if hi == 0 && lo.is_ascii() { lo } else { b'a' }
}

impl Layout {
    /// Scans the file at `path`.
    pub fn scan(path: &Path, bytes: Bytes) -> std::io::Result<Layout> {
        let mut file = std::fs::File::open(path)?;
        let mut scan = Scan::new(bytes);
        let mut buf = vec![0u8; 1 << 20];
        let mut first = true;
        // UTF-16: the units read so far, each as one byte (an odd byte left for the next read).
        let mut units = Vec::new();
        let mut odd: Option<u8> = None;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let at_start = std::mem::take(&mut first);
            if bytes.utf16 {
                units.clear();
                let mut rest = &buf[..n];
                if let Some(lo) = odd.take() {
                    units.push(unit(lo, rest[0]));
                    rest = &rest[1..];
                }
                let pairs = rest.chunks_exact(2);
                odd = pairs.remainder().first().copied();
                units.extend(pairs.map(|p| unit(p[0], p[1])));
                // The byte order mark (FF FE) is no part of the first field.
                let skip = usize::from(at_start && buf[..n].starts_with(b"\xFF\xFE"));
                scan.feed(&units[skip..]);
                continue;
            }
            // A byte order mark is no part of the first field (a quote after it opens one).
            let skip = if at_start && buf[..n].starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 };
            scan.feed(&buf[skip..n]);
        }
        Ok(scan.layout)
    }

    /// The file's line of DuckDB's line `line`.
    pub fn physical(&self, line: u64) -> u64 {
        let i = self.moved.partition_point(|&(l, _)| l <= line);
        line + if i == 0 { 0 } else { self.moved[i - 1].1 }
    }

    /// DuckDB's line of the `n`-th line (from 1) that is not blank nor in `skipped` (DuckDB's
    /// lines, in order).
    pub fn nth_kept(&self, n: u64, skipped: &[u64]) -> u64 {
        let count = |line: u64| (self.blank.partition_point(|&b| b <= line) + skipped.partition_point(|&s| s <= line)) as u64;
        let mut line = n;
        loop {
            let next = n + count(line);
            if next == line {
                return line;
            }
            line = next;
        }
    }

    /// Whether DuckDB's lines are the file's and none is blank.
    pub fn is_plain(&self) -> bool {
        self.blank.is_empty() && self.moved.is_empty()
    }
}

/// The scan's state between the chunks of a file.
struct Scan {
    bytes: Bytes,
    layout: Layout,
    /// DuckDB's line being read (from 1).
    line: u64,
    /// Line ends inside quoted fields so far.
    extra: u64,
    /// Nothing read on this line yet.
    empty: bool,
    /// The next byte starts a field.
    field_start: bool,
    quoted: bool,
    /// Inside quotes, the last byte was a quote (closing, or the first of a doubled one).
    quote_seen: bool,
    /// Inside quotes, the last byte was the escape (another than the quote).
    escaped: bool,
    /// The last byte was a CR: an LF right after it ends no other line.
    after_cr: bool,
    /// The first line (the header, or the first record) has a delimiter outside quotes: in a
    /// file of one column DuckDB reads a blank line as a record (a NULL), else it skips it.
    columns: bool,
}

impl Scan {
    fn new(bytes: Bytes) -> Scan {
        Scan {
            bytes,
            layout: Layout::default(),
            line: 1,
            extra: 0,
            empty: true,
            field_start: true,
            quoted: false,
            quote_seen: false,
            escaped: false,
            after_cr: false,
            columns: false,
        }
    }

    /// Reads the next bytes: runs of bytes that are neither a quote nor a line end are skipped
    /// with `memchr` (only their last byte matters: a delimiter starts a field), the others are
    /// stepped through.
    fn feed(&mut self, chunk: &[u8]) {
        let Bytes { delimiter, quote, escape, .. } = self.bytes;
        let mut i = 0;
        while i < chunk.len() {
            if self.after_cr || self.quote_seen || self.escaped || (self.quoted && escape != quote) || self.line == 1 {
                self.step(chunk[i]);
                i += 1;
                continue;
            }
            let rest = &chunk[i..];
            let n = memchr::memchr3(quote, b'\n', b'\r', rest).unwrap_or(rest.len());
            if n > 0 && !self.quoted {
                self.empty = false;
                self.field_start = rest[n - 1] == delimiter;
            }
            if let Some(&b) = rest.get(n) {
                self.step(b);
            }
            i += n + 1;
        }
    }

    /// Reads one byte.
    fn step(&mut self, b: u8) {
        let Bytes { delimiter, quote, escape, .. } = self.bytes;
        let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
        if after_cr && b == b'\n' {
            return;
        }
        if self.quoted && self.quote_seen {
            self.quote_seen = false;
            if b == quote && escape == quote {
                return;
            }
            // The quote closed the field: this byte is outside it.
            self.quoted = false;
        }
        if self.quoted {
            if self.escaped {
                self.escaped = false;
            } else if b == quote {
                self.quote_seen = true;
                return;
            } else if b == escape {
                self.escaped = true;
            }
            if b == b'\n' || b == b'\r' {
                self.extra += 1;
            }
            return;
        }
        if b == b'\n' || b == b'\r' {
            if self.empty && self.columns {
                self.layout.blank.push(self.line);
            }
            self.line += 1;
            if self.extra > self.layout.moved.last().map_or(0, |m| m.1) {
                self.layout.moved.push((self.line, self.extra));
            }
            self.empty = true;
            self.field_start = true;
            return;
        }
        self.empty = false;
        if b == quote && self.field_start {
            self.quoted = true;
        }
        self.field_start = b == delimiter;
        if self.line == 1 && b == delimiter {
            self.columns = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(text: &[u8], bytes: Bytes) -> Layout {
        // Fed whole, a byte at a time, and stepped through every byte: the same layout.
        let mut whole = Scan::new(bytes);
        whole.feed(text);
        let mut bytewise = Scan::new(bytes);
        for b in text {
            bytewise.feed(std::slice::from_ref(b));
        }
        let mut stepped = Scan::new(bytes);
        for &b in text {
            stepped.step(b);
        }
        assert_eq!((&whole.layout, &bytewise.layout), (&stepped.layout, &stepped.layout), "{:?}", String::from_utf8_lossy(text));
        whole.layout
    }

    const RFC: Bytes = Bytes { delimiter: b',', quote: b'"', escape: b'"', utf16: false };

    #[test]
    fn quoted_line_ends_move_the_lines_after_them_and_blank_lines_are_kept_apart() {
        // DuckDB's lines: 1 the header, 2 a record on the file's lines 2-3, 3 blank (the file's 4),
        // 4 a record (5), 5 a record on 6-8, 6 the last (9), without a line end.
        let text = b"h1,h2\r\n1,\"a\r\nb\"\r\n\r\n2,\"x\"\"y\"\n\"3\n\n\",z\n4,w";
        let l = scanned(text, RFC);
        assert_eq!(l.blank, vec![3]);
        assert_eq!((1..=6).map(|line| l.physical(line)).collect::<Vec<_>>(), vec![1, 2, 4, 5, 6, 9]);
        // The header and the four records: the 1st to 5th lines kept.
        assert_eq!((1..=5).map(|n| l.physical(l.nth_kept(n, &[]))).collect::<Vec<_>>(), vec![1, 2, 5, 6, 9]);
        // DuckDB's line 5 set aside as malformed: the 4th kept line is then its 6th.
        assert_eq!(l.nth_kept(4, &[5]), 6);
    }

    /// Random texts over the bytes that matter: skipping with `memchr` ends as stepping through.
    #[test]
    fn the_skipping_scan_ends_as_stepping_through_every_byte() {
        let alphabet = b"ab,\"\n\r\\";
        let mut seed: u64 = 7;
        for case in 0..3000 {
            let len = case % 40;
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    alphabet[(seed >> 33) as usize % alphabet.len()]
                })
                .collect();
            scanned(&text, RFC);
            scanned(&text, Bytes { escape: b'\\', ..RFC });
        }
    }

    /// A UTF-16 file (little endian, its byte order mark first, a character outside ASCII in a
    /// quoted field) has the layout its UTF-8 text has.
    #[test]
    fn a_utf16_file_has_the_layout_of_its_text() {
        let text = "h1,h2\r\n1,\"a\r\nb\u{e9}\"\r\n\r\n2,\"x\u{1F44D}\"\n\"3\n\n\",z\n4,w";
        let path = std::env::temp_dir().join(format!("etl-layout-utf16-{}.csv", std::process::id()));
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        std::fs::write(&path, &bytes).unwrap();
        let layout = Layout::scan(&path, Bytes { utf16: true, ..RFC }).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(layout, scanned(text.as_bytes(), RFC));
        assert!(!layout.is_plain());
    }

    /// A byte order mark before a quoted header: the quote opens the first field (here one
    /// column, whose name holds the delimiter, so a blank line is a record). Without one, the
    /// first bytes are the header's (its only delimiter among them: two columns, so a blank
    /// line is set apart).
    #[test]
    fn a_byte_order_mark_is_no_part_of_the_first_field() {
        let path = std::env::temp_dir().join(format!("etl-layout-bom-{}.csv", std::process::id()));
        std::fs::write(&path, b"\xEF\xBB\xBF\"a,b\"\n1\n\n2\n").unwrap();
        let layout = Layout::scan(&path, RFC).unwrap();
        assert!(layout.is_plain(), "{layout:?}");
        std::fs::write(&path, b"a,bc\n1,2\n\n3,4\n").unwrap();
        let layout = Layout::scan(&path, RFC).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(layout.blank, vec![3], "{layout:?}");
    }

    #[test]
    fn a_quote_inside_a_field_or_escaped_opens_nothing() {
        let text = b"a,b\nx\"y,1\n\"p\\\"\nq\",2\n3,4\n";
        let backslash = Bytes { escape: b'\\', ..RFC };
        let l = scanned(text, backslash);
        assert_eq!((l.blank.clone(), l.moved.clone()), (vec![], vec![(4, 1)]));
        // With the quote its own escape, `\"` closes the field and the line end is outside it.
        let l = scanned(text, RFC);
        assert_eq!((l.physical(3), l.physical(4), l.physical(5)), (3, 4, 5));
        assert!(scanned(b"a,b\n1,2\n", RFC).is_plain());
        // One column: a blank line is a record (DuckDB reads a NULL), so nothing is set apart;
        // a delimiter inside the header's quotes makes no second column.
        assert!(scanned(b"a\n1\n\n2\n", RFC).is_plain());
        assert!(scanned(b"\"a,b\"\n1\n\n2\n", RFC).is_plain());
        assert_eq!(scanned(b"a,b\n1,2\n\n2,3\n", RFC).blank, vec![3]);
        assert!(scanned(b"a,b\r1,2\r", RFC).is_plain());
    }
}
