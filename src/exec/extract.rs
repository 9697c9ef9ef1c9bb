//! The extract: reading a stage's CSV with DuckDB: check the header, then either one pass
//! streaming the typed rows to Polars through the Arrow C data interface from its first chunk
//! while each record's number, file and key go to the census (a load into PostgreSQL), or two:
//! a first keeping that census (malformed lines go to DuckDB's reject table, repeated keys are
//! found), then the stream. The one pass asks for the two when a key repeats.

use std::path::Path;

use duckdb::arrow::array::{Array, StructArray};
use duckdb::arrow::record_batch::RecordBatch;
use polars::prelude::DataFrame;

use crate::exec::error::ExecError;
use crate::plan::{ReadFile, StagePlan, duck};

/// A DuckDB database for one run's extracts: in memory, spilling to `temp_dir` past
/// `memory_limit`.
pub struct Reader {
    conn: duckdb::Connection,
    /// The scans of the last stage read.
    scans: std::cell::RefCell<Vec<Scan>>,
    /// DuckDB's memory limit in bytes (`u64::MAX`: none).
    memory_limit: u64,
}

/// One file a stage reads: its plain copy in the spool, how it is shown, its path's captures.
#[derive(Debug, Clone, Copy)]
pub struct FileInput<'a> {
    /// The plain copy DuckDB reads.
    pub path: &'a Path,
    /// The file as the user knows it.
    pub shown: &'a str,
    /// The values of the set pattern's captures (none for one `key`).
    pub captures: &'a [(String, String)],
}

/// One scan of the last stage's first pass (consecutive files whose headers agree), which its
/// later passes repeat in the same order.
#[derive(Debug, Clone)]
struct Scan {
    /// The statement pointing the read view at its files.
    view: String,
    /// Its first file, as the user knows it.
    shown: String,
    /// The records read before this scan (its first is numbered `before + 1`).
    before: u64,
    /// The records it read.
    records: u64,
}

/// A CSV line DuckDB's reader could not split into the header's fields.
#[derive(Debug, Clone)]
pub struct CsvError {
    /// Line in the file (1-based).
    pub line: u64,
    /// Column named in the error, if any.
    pub column: Option<String>,
    /// DuckDB's error type, e.g. TOO MANY COLUMNS.
    pub kind: String,
    /// DuckDB's message.
    pub message: String,
    /// The line's text (cut to 200 characters).
    pub text: Option<String>,
}

impl Reader {
    /// Opens the database.
    pub fn open(temp_dir: &Path, memory_limit: &str) -> Result<Self, ExecError> {
        let conn = duckdb::Connection::open_in_memory().map_err(ExecError::duckdb("open DuckDB"))?;
        conn.execute_batch(&duck::configure(memory_limit, &temp_dir.display().to_string())).map_err(ExecError::duckdb("configure DuckDB"))?;
        let limit = conn.query_row(duck::MEMORY_LIMIT, [], |r| r.get::<_, Option<i64>>(0)).map_err(ExecError::duckdb("read DuckDB's memory limit"))?;
        Ok(Reader { conn, scans: Default::default(), memory_limit: limit.map_or(u64::MAX, |l| l.max(0) as u64) })
    }

    /// DuckDB's memory limit in bytes (`u64::MAX`: none).
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit
    }

    /// The first pass over a stage's files (one, or a set's in name order): each record's
    /// number, file and typed key kept in the census, the repeated keys found from it. Returns,
    /// per file, the number of records read and its malformed lines; the scans it made are kept
    /// for the later passes, which repeat them in the same order.
    ///
    /// Consecutive files whose headers agree are read in one scan (each file's rows keep their
    /// order); a scan that fails is read again file by file, so its error names its file.
    pub fn stage(&self, stage: &StagePlan, files: &[FileInput<'_>]) -> Result<Vec<(u64, Vec<CsvError>)>, ExecError> {
        self.scans.borrow_mut().clear();
        let (paths, scans) = scans_of(stage, files)?;
        let mut staged = vec![(0, Vec::new()); files.len()];
        for (range, columns) in scans {
            if let Err(e) = self.census(stage, files, &paths, &columns, range.clone(), &mut staged) {
                if range.len() == 1 {
                    return Err(e);
                }
                for i in range {
                    self.census(stage, files, &paths, &columns, i..i + 1, &mut staged)?;
                }
            }
        }
        self.find_repeats(stage, &staged)?;
        Ok(staged)
    }

    /// The repeated keys (and unique values) of the records the census holds (`staged`: each
    /// file's count), in their tables; the number found.
    fn find_repeats(&self, stage: &StagePlan, staged: &[(u64, Vec<CsvError>)]) -> Result<u64, ExecError> {
        let sql = &stage.extract;
        if sql.duplicates.is_empty() {
            return Ok(0);
        }
        let fail = ExecError::duckdb("find repeated keys");
        let passes = crate::plan::extract::passes(staged.iter().map(|(n, _)| n).sum(), sql.records_per_pass);
        self.conn.execute_batch(&sql.one_thread).map_err(&fail)?;
        let found = sql.duplicates.iter().try_fold(0u64, |n, dups| {
            self.conn.execute_batch(&dups.create).map_err(&fail)?;
            (0..passes).try_for_each(|pass| self.conn.execute_batch(&dups.find.pass(passes, pass)).map_err(&fail))?;
            let found = self.conn.query_row(&dups.found, [], |r| r.get::<_, i64>(0)).map_err(&fail)?;
            Ok::<u64, ExecError>(n + found.max(0) as u64)
        });
        let reset = self.conn.execute_batch(&sql.one_thread_reset).map_err(&fail);
        let found = found?;
        reset?;
        Ok(found)
    }

    /// The single pass over a stage's files (`ExtractSql::single`): each scan read once, its
    /// typed rows handed to `each` `batch_rows` at a time (their repeated keys' columns null)
    /// while each batch's record number, file and key are appended to the census from a second
    /// connection; then the repeated keys found from that census, as [`Reader::stage`] does.
    /// Returns what [`Reader::stage`] would have, or [`Streamed::Again`] when a key (or unique
    /// value) repeats or a scan of several files failed: what `each` was given is then to be
    /// undone, and the files read in two passes. The scans are kept for
    /// [`Reader::rejected_fields`].
    pub fn single_pass(
        &self,
        stage: &StagePlan,
        files: &[FileInput<'_>],
        batch_rows: usize,
        mut each: impl FnMut(DataFrame) -> Result<(), ExecError>,
    ) -> Result<Streamed, ExecError> {
        let sql = &stage.extract;
        let one = sql.single.as_ref().ok_or_else(|| ExecError::Internal(format!("stage {} has no single pass: its census is a temporary table", stage.name)))?;
        self.scans.borrow_mut().clear();
        let (paths, scans) = scans_of(stage, files)?;
        let mut staged = vec![(0, Vec::new()); files.len()];
        let fail = ExecError::duckdb("append to the census");
        let second = self.conn.try_clone().map_err(ExecError::duckdb("open a second DuckDB connection"))?;
        let mut pending: Option<DataFrame> = None;
        let mut created = false;
        let mut early = EarlyRepeats::default();
        let mut repeated_early = false;
        for (range, columns) in scans {
            let shown = files[range.start].shown;
            let before: u64 = self.scans.borrow().iter().map(|s| s.records).sum();
            // A scan of several files that DuckDB cannot read (here or as it streams) goes to
            // the two passes, which read its files one by one and name the one that fails.
            let again = || Streamed::Again(format!("reading the files from {shown} in one scan failed"));
            let view = match self.open_scan(stage, files, &paths, &columns, range.clone(), before) {
                Ok(view) => view,
                Err(_) if range.len() > 1 => return Ok(again()),
                Err(e) => return Err(ExecError::csv(shown)(e)),
            };
            if !std::mem::replace(&mut created, true) {
                self.conn.execute_batch(&one.census_empty).map_err(ExecError::duckdb("create the census"))?;
            }
            let mut census = second
                .appender_to_catalog_and_db(&one.census_table, crate::plan::extract::SCRATCH_CATALOG, "main")
                .map_err(&fail)?;
            // An error of `each` (the COPY's) ends the load.
            let mut handed: Result<(), ExecError> = Ok(());
            let streamed = self.ordered_pass(stage, || {
                let mut stmt = self.conn.prepare(&one.select).map_err(ExecError::duckdb("prepare the typed select"))?;
                let arrow = stmt.stream_arrow([]).map_err(ExecError::csv(shown))?;
                // The census's columns' places in the rows (the same in every batch).
                let schema = arrow.get_schema();
                let kept: Vec<usize> = one.census_columns.iter().map(|c| schema.index_of(c)).collect::<Result<_, _>>().map_err(|e| ExecError::Internal(format!("the census's columns: {e}")))?;
                let mut streamed = 0u64;
                // The typed rows end with the file number and the hashes, which Polars is not given.
                let typed: Vec<usize> = (0..schema.fields().len() - 1 - one.hashes).collect();
                for batch in arrow {
                    let batch = batch.map_err(ExecError::csv(shown))?;
                    if one.hashes > 0 && early.repeats(batch.column(typed.len() + 1)) {
                        repeated_early = true;
                        break;
                    }
                    let rows = batch.project(&kept).map_err(|e| ExecError::Internal(format!("the census's columns: {e}")))?;
                    census.append_record_batch(rows).map_err(&fail)?;
                    let batch = batch.project(&typed).map_err(|e| ExecError::Internal(format!("the typed columns: {e}")))?;
                    let df = to_polars(batch)?;
                    streamed += df.height() as u64;
                    if let Err(e) = rebatch(&mut pending, df, batch_rows, &mut each) {
                        handed = Err(e);
                        break;
                    }
                }
                Ok(streamed)
            });
            handed?;
            if repeated_early {
                return Ok(Streamed::Again(format!("a key repeats within its first {} records", early.seen.len() + 1)));
            }
            census.flush().map_err(&fail)?;
            drop(census);
            let streamed = match streamed {
                Ok(n) => n,
                Err(_) if range.len() > 1 => return Ok(again()),
                Err(e) => return Err(e),
            };
            self.malformed(stage, &paths, range.clone(), &mut staged)?;
            self.scans.borrow_mut().push(Scan { view, shown: shown.to_string(), before, records: streamed });
        }
        if let Some(p) = pending.take()
            && p.height() > 0
        {
            each(p)?;
        }
        if created {
            self.count_records(stage, &mut staged)?;
        }
        let total: u64 = staged.iter().map(|(n, _)| n).sum();
        let streamed: u64 = self.scans.borrow().iter().map(|s| s.records).sum();
        if total != streamed {
            return Err(ExecError::Internal(format!("stage {}: {streamed} records streamed but {total} in the census", stage.name)));
        }
        match self.find_repeats(stage, &staged)? {
            0 => Ok(Streamed::Read(staged)),
            n => Ok(Streamed::Again(format!("{n} value(s) of the key or a unique column repeat"))),
        }
    }

    /// Reads the files `range` (whose columns are `columns`) in one scan into the census
    /// (appending after the first scan), adds each one's record count and malformed lines to
    /// `staged`, and keeps the scan.
    fn census(
        &self,
        stage: &StagePlan,
        files: &[FileInput<'_>],
        paths: &[String],
        columns: &[String],
        range: std::ops::Range<usize>,
        staged: &mut [(u64, Vec<CsvError>)],
    ) -> Result<(), ExecError> {
        let sql = &stage.extract;
        let shown = files[range.start].shown;
        let before: u64 = staged.iter().map(|(n, _)| n).sum();
        let view = self.open_scan(stage, files, paths, columns, range.clone(), before).map_err(ExecError::csv(shown))?;
        let census = if self.scans.borrow().is_empty() { &sql.census } else { &sql.census_append };
        self.ordered_pass(stage, || self.conn.execute_batch(census).map_err(ExecError::csv(shown)))?;
        self.malformed(stage, paths, range.clone(), staged)?;
        let records = self.count_records(stage, staged)?.into_iter().filter(|(number, _)| range.contains(number)).map(|(_, n)| n).sum();
        self.scans.borrow_mut().push(Scan { view, shown: shown.to_string(), before, records });
        Ok(())
    }

    /// Points the read view at the files `range` (whose columns are `columns`), numbering their
    /// records from `before + 1`, its reject tables cleared first (DuckDB appends to existing
    /// ones: each read starts clean); the view's statement, kept to read the scan again.
    fn open_scan(
        &self,
        stage: &StagePlan,
        files: &[FileInput<'_>],
        paths: &[String],
        columns: &[String],
        range: std::ops::Range<usize>,
        before: u64,
    ) -> Result<String, duckdb::Error> {
        let sql = &stage.extract;
        let read: Vec<ReadFile<'_>> = range.map(|i| ReadFile { path: &paths[i], number: i, captures: files[i].captures }).collect();
        let view = sql.read.sql(&read, columns, before);
        self.conn.execute_batch(&sql.clear_rejects)?;
        self.conn.execute_batch(&view)?;
        Ok(view)
    }

    /// Adds the malformed lines of the files `range` DuckDB's reader set aside in its last scan
    /// to `staged`.
    fn malformed(&self, stage: &StagePlan, paths: &[String], range: std::ops::Range<usize>, staged: &mut [(u64, Vec<CsvError>)]) -> Result<(), ExecError> {
        let sql = &stage.extract;
        let mut stmt = self.conn.prepare(&sql.malformed).map_err(ExecError::duckdb("read CSV errors"))?;
        let found: Vec<(String, CsvError)> = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    CsvError {
                        line: r.get::<_, i64>(1)? as u64,
                        column: r.get::<_, Option<String>>(2)?,
                        kind: r.get::<_, String>(3)?,
                        message: super::validate::shown(&r.get::<_, String>(4)?),
                        text: r.get::<_, Option<String>>(5)?.map(|t| super::validate::shown(&t)),
                    },
                ))
            })
            .and_then(|m| m.collect::<Result<Vec<_>, _>>())
            .map_err(ExecError::duckdb("read CSV errors"))?;
        for (path, e) in found {
            let i = range
                .clone()
                .find(|&i| paths[i] == path)
                .ok_or_else(|| ExecError::Internal(format!("stage {}: DuckDB names a malformed line of {path}, which it was not given", stage.name)))?;
            // One line can produce several errors; it is one rejected line, reported by its
            // first column's (DuckDB lists a line short of columns once per missing column, in no
            // set order: ordered by column, the first names the count of fields the line has,
            // however many other lines are read with it).
            let malformed = &mut staged[i].1;
            if malformed.last().is_none_or(|last| last.line != e.line) {
                malformed.push(e);
            }
        }
        Ok(())
    }

    /// Sets each file's record count in `staged` from the census; the counts, by file number.
    fn count_records(&self, stage: &StagePlan, staged: &mut [(u64, Vec<CsvError>)]) -> Result<Vec<(usize, u64)>, ExecError> {
        let mut stmt = self.conn.prepare(&stage.extract.count).map_err(ExecError::duckdb("count the records read"))?;
        let counted = stmt
            .query_map([], |r| Ok((r.get::<_, u32>(0)? as usize, r.get::<_, i64>(1)? as u64)))
            .and_then(|m| m.collect::<Result<Vec<_>, _>>())
            .map_err(ExecError::duckdb("count the records read"))?;
        for &(number, n) in &counted {
            if let Some(file) = staged.get_mut(number) {
                file.0 = n;
            }
        }
        Ok(counted)
    }

    /// Streams the typed rows (each with its record number; in no set order), `batch_rows` at a
    /// time, to `each`: the second pass over the last staged scans, each of which must yield as
    /// many records as its first pass counted.
    pub fn typed_batches(
        &self,
        stage: &StagePlan,
        batch_rows: usize,
        mut each: impl FnMut(DataFrame) -> Result<(), ExecError>,
    ) -> Result<(), ExecError> {
        let scans = self.scans.borrow().clone();
        let mut pending: Option<DataFrame> = None;
        for scan in &scans {
            let shown = scan.shown.as_str();
            self.conn.execute_batch(&scan.view).map_err(ExecError::csv(shown))?;
            let streamed = self.ordered_pass(stage, || {
                let mut stmt = self.conn.prepare(&stage.extract.select).map_err(ExecError::duckdb("prepare the typed select"))?;
                // Streamed: DuckDB hands over its result a chunk at a time instead of materialising it.
                let arrow = stmt.stream_arrow([]).map_err(ExecError::csv(shown))?;
                let mut streamed = 0u64;
                for batch in arrow {
                    let df = to_polars(batch.map_err(ExecError::csv(shown))?)?;
                    streamed += df.height() as u64;
                    rebatch(&mut pending, df, batch_rows, &mut each)?;
                }
                Ok(streamed)
            })?;
            if streamed != scan.records {
                return Err(ExecError::Internal(format!(
                    "stage {}: DuckDB read {} records of {shown} the first time and {streamed} the second: the record numbers would not match",
                    stage.name, scan.records
                )));
            }
        }
        if let Some(p) = pending
            && p.height() > 0 {
                each(p)?;
            }
        Ok(())
    }

    /// The fields as read of the given records of the last stage staged: `(record, JSON object
    /// of each file column's text by its header)`. The scans holding them are read a third
    /// time, keeping only these records.
    pub fn rejected_fields(&self, stage: &StagePlan, records: &[u64]) -> Result<Vec<(u64, String)>, ExecError> {
        let sql = &stage.extract;
        let fail = ExecError::duckdb("keep the rejected records");
        self.conn.execute_batch(&sql.rejected_create).map_err(&fail)?;
        {
            let mut app = self.conn.appender(&sql.rejected_table).map_err(&fail)?;
            for r in records {
                app.append_row(duckdb::params![*r]).map_err(&fail)?;
            }
            app.flush().map_err(&fail)?;
        }
        let scans = self.scans.borrow().clone();
        let mut out = Vec::with_capacity(records.len());
        for scan in scans.iter().filter(|s| records.iter().any(|&r| r > s.before && r <= s.before + s.records)) {
            self.conn.execute_batch(&scan.view).map_err(ExecError::csv(&scan.shown))?;
            self.ordered_pass(stage, || {
                let mut stmt = self.conn.prepare(&sql.rejected_fields).map_err(&fail)?;
                let rows = stmt
                    .query_map([], |r| {
                        let mut fields = serde_json::Map::new();
                        for (i, header) in sql.rejected_headers.iter().enumerate() {
                            let v: Option<String> = r.get(i + 1)?;
                            fields.insert(header.clone(), v.map_or(serde_json::Value::Null, serde_json::Value::String));
                        }
                        Ok((r.get::<_, u64>(0)?, serde_json::Value::Object(fields).to_string()))
                    })
                    .map_err(&fail)?;
                for row in rows {
                    out.push(row.map_err(&fail)?);
                }
                Ok(())
            })?;
        }
        Ok(out)
    }

    /// Runs `run` (a pass over the read view, run to its end: DuckDB plans a statement again
    /// when it executes it) as `ExtractSql::ordered_pass` sets, and undoes the setting after.
    fn ordered_pass<T>(&self, stage: &StagePlan, run: impl FnOnce() -> Result<T, ExecError>) -> Result<T, ExecError> {
        let fail = ExecError::duckdb("set how DuckDB plans the extract's joins");
        self.conn.execute_batch(&stage.extract.ordered_pass).map_err(&fail)?;
        let done = run();
        let reset = self.conn.execute_batch(&stage.extract.ordered_pass_reset).map_err(&fail);
        let out = done?;
        reset?;
        Ok(out)
    }

    /// The plan DuckDB makes for the typed select of the first scan the last stage staged, as
    /// it is planned when it runs (`EXPLAIN`): what the tests check the streaming of.
    pub fn explain_select(&self, stage: &StagePlan) -> Result<String, ExecError> {
        let fail = ExecError::duckdb("explain the typed select");
        let view = self.scans.borrow().first().map(|s| s.view.clone()).ok_or_else(|| ExecError::Internal(format!("stage {} was not staged", stage.name)))?;
        self.conn.execute_batch(&view).map_err(&fail)?;
        self.ordered_pass(stage, || {
            let mut stmt = self.conn.prepare(&format!("EXPLAIN {}", stage.extract.select)).map_err(&fail)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(1)).map_err(&fail)?;
            rows.collect::<Result<Vec<_>, _>>().map(|r| r.join("\n")).map_err(&fail)
        })
    }

    /// Holds the next queries' hash tables and sorts to a quarter of the memory limit
    /// (`duck::BOUND_JOINS`), or lets them take what is free (`duck::UNBOUND_JOINS`).
    pub fn bound_joins(&self, bound: bool) -> Result<(), ExecError> {
        let sql = if bound { duck::BOUND_JOINS } else { duck::UNBOUND_JOINS };
        self.conn.execute_batch(sql).map_err(ExecError::duckdb("set how much memory DuckDB's joins may take"))
    }

    /// Creates a lookup relation (`plan::extract::lookup_create`) and, given the file the
    /// target exported and its longest record's bytes, fills it (`lookup_fill`).
    pub fn load_lookup(&self, create: &str, fill: Option<(&crate::plan::sql::FileSql, &Path, u64)>) -> Result<(), ExecError> {
        let fail = ExecError::duckdb("load a lookup exported from the target");
        self.conn.execute_batch(create).map_err(&fail)?;
        if let Some((fill, file, longest)) = fill {
            let limits = crate::plan::extract::read_limits(longest);
            self.conn.execute_batch(&fill.with_file_limits(&file.display().to_string(), limits)).map_err(&fail)?;
        }
        Ok(())
    }

    /// The connection, for appending key sets.
    pub fn connection(&self) -> &duckdb::Connection {
        &self.conn
    }
}

/// The key hashes of the single pass's first records: a hash seen twice among them stops the
/// pass at once (a file with repeated keys then costs a few batches, not a whole wasted pass;
/// two keys sharing a hash only send the files to the two passes, which are exact). Past
/// `extract::EARLY_RECORDS` records the census alone finds the repeats, after the stream.
#[derive(Default)]
struct EarlyRepeats {
    /// Hashed again with foldhash's fast hash: they are DuckDB's hashes already, which SipHash
    /// (the standard one) would only slow.
    seen: std::collections::HashSet<u64, foldhash::fast::FixedState>,
}


impl EarlyRepeats {
    /// Whether a hash of `hashes` (a batch's key hashes, UInt64, null for a missing part) was
    /// seen before, among the first `extract::EARLY_RECORDS`.
    fn repeats(&mut self, hashes: &duckdb::arrow::array::ArrayRef) -> bool {
        use duckdb::arrow::array::AsArray;
        use duckdb::arrow::datatypes::UInt64Type;
        if self.seen.len() >= crate::plan::extract::EARLY_RECORDS {
            return false;
        }
        let Some(hashes) = hashes.as_primitive_opt::<UInt64Type>() else { return false };
        hashes.iter().flatten().any(|h| !self.seen.insert(h))
    }
}

/// What [`Reader::single_pass`] made of a stage's files.
#[derive(Debug)]
pub enum Streamed {
    /// Every record read once and none repeats a key: per file, its records and malformed lines.
    Read(Vec<(u64, Vec<CsvError>)>),
    /// Why the files must be read again in two passes (a key repeats, or a scan of several files
    /// failed), after what the pass handed on is undone.
    Again(String),
}

/// Adds `df` to the rows `pending`, and hands on batches of exactly `batch_rows` (DuckDB's
/// chunks are ~2048 rows), keeping the rest pending.
fn rebatch(pending: &mut Option<DataFrame>, df: DataFrame, batch_rows: usize, each: &mut impl FnMut(DataFrame) -> Result<(), ExecError>) -> Result<(), ExecError> {
    let merged = match pending.take() {
        None => df,
        Some(mut p) => {
            p.vstack_mut_owned(df).map_err(ExecError::polars("collect a batch"))?;
            p
        }
    };
    let mut offset = 0;
    while merged.height() - offset >= batch_rows {
        each(merged.slice(offset as i64, batch_rows))?;
        offset += batch_rows;
    }
    if offset < merged.height() {
        *pending = Some(merged.slice(offset as i64, merged.height() - offset));
    }
    Ok(())
}

/// One scan of [`scans_of`]: the files it reads (their positions) and their header's columns.
type ScanOf = (std::ops::Range<usize>, Vec<String>);

/// The paths DuckDB reads a stage's files at, and its scans: consecutive files whose header
/// columns agree are read in one (a file with a column named `filename`, which would clash with
/// the one a scan of several files adds, alone), each with those columns.
fn scans_of(stage: &StagePlan, files: &[FileInput<'_>]) -> Result<(Vec<String>, Vec<ScanOf>), ExecError> {
    let paths: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    let mut columns = Vec::with_capacity(files.len());
    for f in files {
        columns.push(if stage.csv.header {
            file_columns(stage, f.path, f.shown)?
        } else {
            stage.columns.iter().filter(|c| c.reads_file()).map(|c| c.header.clone()).collect::<Vec<String>>()
        });
    }
    let mut scans = Vec::new();
    let mut start = 0;
    while start < files.len() {
        let alone = columns[start].iter().any(|c| c.eq_ignore_ascii_case("filename"));
        let mut end = start + 1;
        while !alone && end < files.len() && columns[end] == columns[start] {
            end += 1;
        }
        scans.push((start..end, columns[start].clone()));
        start = end;
    }
    Ok((paths, scans))
}

/// How to fix a header that lacks columns: a header that splits on another delimiter into the
/// missing names says which delimiter; a header name that differs only in case or spaces is
/// named, to map with `from:`; else rename.
fn header_help(stage: &StagePlan, header: &[String], missing: &[&str]) -> String {
    let delimiter = stage.csv.delimiter.as_str();
    let line = header.join(delimiter);
    for d in [";", "\t", "|", ",", ":"] {
        if d == delimiter {
            continue;
        }
        let parts: Vec<&str> = line.split(d).map(str::trim).collect();
        if parts.len() > 1 && missing.iter().all(|m| parts.contains(m)) {
            let shown = if d == "\t" { "\\t" } else { d };
            return format!("the header is separated by `{shown}`, not `{delimiter}`: set the stage's `source.csv.delimiter: \"{shown}\"`");
        }
    }
    let near: Vec<String> = missing
        .iter()
        .filter_map(|m| {
            let found = header.iter().find(|h| h.trim().eq_ignore_ascii_case(m.trim()))?;
            Some(format!("`{m}` is written `{found}` in the file: map it with `{m}: {{ from: \"{found}\", ... }}`"))
        })
        .collect();
    if !near.is_empty() {
        return near.join("; ");
    }
    "rename the columns in the file, or point the spec at them with `from:`".into()
}

/// The columns of a file with a header, checked against the spec: every column the spec reads
/// is there, once. A repeated name the spec does not read is renamed (`name_2`, or the first
/// `name_N` the header does not hold) and ignored.
pub fn file_columns(stage: &StagePlan, path: &Path, shown: &str) -> Result<Vec<String>, ExecError> {
    use std::io::Read;
    let mut start = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(HEADER_BYTES).read_to_end(&mut start))
        .map_err(|e| ExecError::Csv { file: shown.to_string(), message: e.to_string() })?;
    columns_of(stage, &start, shown)
}

/// How much of a file's start its header is looked for in.
pub const HEADER_BYTES: u64 = 4 << 20;

/// [`file_columns`] of a file's first bytes (its first [`HEADER_BYTES`], or all of a smaller
/// file).
pub fn columns_of(stage: &StagePlan, start: &[u8], shown: &str) -> Result<Vec<String>, ExecError> {
    let csv_error = |message: String| ExecError::Csv { file: shown.to_string(), message };
    let mut header = header_fields(start, &stage.csv).map_err(csv_error)?;
    let blank = header.iter().all(|h| h.trim().is_empty());
    let reads = |h: &str| stage.columns.iter().any(|c| c.reads_file() && c.header == h);
    // A repeated name's new one is free in the whole header, later columns' names included.
    let named = header.clone();
    let mut seen: Vec<String> = Vec::new();
    for (i, name) in header.iter_mut().enumerate() {
        if name.is_empty() {
            *name = format!("column{}", i + 1);
        }
        if let Some(first) = seen.iter().position(|s| s == name) {
            if reads(name) {
                return Err(csv_error(format!(
                    "the header names `{name}` twice (columns {} and {}), so which one to read is unclear; rename one",
                    first + 1,
                    i + 1
                )));
            }
            let mut n = 2;
            while seen.contains(&format!("{name}_{n}")) || named.contains(&format!("{name}_{n}")) {
                n += 1;
            }
            *name = format!("{name}_{n}");
        }
        seen.push(name.clone());
    }
    let missing: Vec<&str> =
        stage.columns.iter().filter(|c| c.reads_file()).map(|c| c.header.as_str()).filter(|h| !header.iter().any(|x| x == h)).collect();
    if !missing.is_empty() {
        let help = if blank {
            "remove the blank line before the header: the header is the file's first line".to_string()
        } else {
            header_help(stage, &header, &missing)
        };
        let found = if blank { "a blank line".to_string() } else { header.join(", ") };
        return Err(ExecError::Header { file: shown.to_string(), missing: missing.join(", "), found, help });
    }
    Ok(header)
}

/// Splits a file's first record (its header), from the file's first bytes, into fields: a
/// byte-order mark dropped, quotes and escapes honored, in the spec's encoding.
fn header_fields(buf: &[u8], csv: &crate::plan::CsvDialect) -> Result<Vec<String>, String> {
    use crate::spec::model::Encoding;
    if buf.is_empty() {
        return Err("the file is empty: there is no header line".into());
    }
    let text: String = match csv.encoding {
        Encoding::Utf8 => String::from_utf8_lossy(buf.strip_prefix(b"\xef\xbb\xbf").unwrap_or(buf)).into_owned(),
        Encoding::Latin1 => buf.iter().map(|&b| char::from(b)).collect(),
        Encoding::Utf16 => {
            let (big, body) = match buf {
                [0xfe, 0xff, rest @ ..] => (true, rest),
                [0xff, 0xfe, rest @ ..] => (false, rest),
                rest => (false, rest),
            };
            let units = body.chunks_exact(2).map(|p| if big { u16::from_be_bytes([p[0], p[1]]) } else { u16::from_le_bytes([p[0], p[1]]) });
            char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
        }
    };
    let one = |s: &str| s.chars().next().unwrap_or('\0');
    let (delim, quote, escape) = (one(&csv.delimiter), one(&csv.quote), one(&csv.escape));
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    loop {
        let Some(c) = chars.next() else {
            if quoted {
                return Err("the header line opens a quote that is never closed".into());
            }
            fields.push(field);
            break;
        };
        if quoted {
            if c == escape && chars.peek() == Some(&quote) {
                field.push(quote);
                chars.next();
            } else if c == quote {
                quoted = false;
            } else {
                field.push(c);
            }
        } else if c == quote {
            quoted = true;
        } else if c == delim {
            fields.push(std::mem::take(&mut field));
        } else if c == '\n' || c == '\r' {
            fields.push(field);
            break;
        } else {
            field.push(c);
        }
    }
    Ok(fields)
}

/// Moves an arrow-rs record batch into a Polars DataFrame without copying the buffers: both
/// speak the Arrow C data interface, whose structs they define with the same layout.
pub fn to_polars(batch: RecordBatch) -> Result<DataFrame, ExecError> {
    let array = StructArray::from(batch);
    let (ffi_array, ffi_schema) =
        duckdb::arrow::ffi::to_ffi(&array.to_data()).map_err(|e| ExecError::Internal(format!("export Arrow batch: {e}")))?;
    // SAFETY: FFI_ArrowArray/FFI_ArrowSchema and polars-arrow's ArrowArray/ArrowSchema are both
    // #[repr(C)] definitions of the C data interface's structs; ownership (and the release
    // callback) moves with the value, so each is released exactly once.
    let (schema, array) = unsafe {
        let schema: polars_arrow::ffi::ArrowSchema = std::mem::transmute(ffi_schema);
        let array: polars_arrow::ffi::ArrowArray = std::mem::transmute(ffi_array);
        (schema, array)
    };
    let field = unsafe { polars_arrow::ffi::import_field_from_c(&schema) }
        .map_err(|e| ExecError::Internal(format!("import Arrow schema: {e}")))?;
    let imported = unsafe { polars_arrow::ffi::import_array_from_c(array, field.dtype().clone()) }
        .map_err(|e| ExecError::Internal(format!("import Arrow batch: {e}")))?;
    let structs = imported
        .as_any()
        .downcast_ref::<polars_arrow::array::StructArray>()
        .ok_or_else(|| ExecError::Internal("an Arrow batch is not a struct array".into()))?
        .clone();
    DataFrame::try_from(structs).map_err(ExecError::polars("build a DataFrame"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A headerless set's stage loading PostgreSQL (never connected: the lookup of the table's
    /// rows is made here, empty), compiled, with a DuckDB in `dir`.
    fn headerless(dir: &Path) -> (crate::plan::Plan, Reader) {
        let spec = format!(
            "version: 1\nname: t\nconnections:\n  here: {{ type: local, path: '{}' }}\n  out: {{ type: postgres, url: 'postgres://t@127.0.0.1:1/t' }}\n\
             stages:\n  prices:\n    source: {{ connection: here, files: \"p*.csv\", csv: {{ header: false }} }}\n\
             \x20   target: {{ connection: out, table: price, key: [code] }}\n    columns:\n      code: {{ type: string }}\n      price: {{ type: \"decimal(12,2)\" }}\n",
            dir.display()
        );
        let loaded = crate::spec::load_text("t.yaml", &spec, None, &Default::default()).unwrap_or_else(|e| panic!("{}", e.render(false)));
        let plan = crate::plan::compile(&loaded.spec);
        let reader = Reader::open(dir, "128MB").unwrap();
        let stage = &plan.stages[0];
        if let Some(current) = &stage.lookups.current {
            let columns: Vec<_> = stage.columns.iter().map(|c| (c.name.clone(), c.ty)).collect();
            reader.load_lookup(&crate::plan::extract::lookup_create(current, &columns), None).unwrap();
        }
        (plan, reader)
    }

    /// A header's names: quoted ones (a doubled quote is one, a delimiter inside is text), a
    /// byte-order mark dropped, the line's end not part of the last name.
    #[test]
    fn a_header_is_split_as_the_csv_reader_splits_it() {
        let dir = tempfile::tempdir().unwrap();
        let (plan, _) = headerless(dir.path());
        let csv = &plan.stages[0].csv;
        let split = |text: &str| header_fields(text.as_bytes(), csv).unwrap();
        assert_eq!(split("code,price\r\n1,2\n"), ["code", "price"]);
        assert_eq!(split("\u{feff}\"code\",\"pri,ce\",\"say \"\"hi\"\"\"\n"), ["code", "pri,ce", "say \"hi\""]);
        assert_eq!(split("a,,c"), ["a", "", "c"]);
        assert!(header_fields(b"\"code,price\n", csv).unwrap_err().contains("never closed"));
    }

    /// A scan of several files that DuckDB cannot read sends them to the two passes (its rows
    /// handed on are undone by the load), which read them one by one and name the file that
    /// fails; a scan of one file that fails is that file's error at once.
    #[test]
    fn a_scan_of_several_files_that_fails_is_read_again_file_by_file_naming_the_one_that_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (plan, reader) = headerless(dir.path());
        let stage = &plan.stages[0];
        assert!(stage.extract.single.is_some(), "a PostgreSQL target's stage has a single pass");
        let (p1, p2) = (dir.path().join("p1.csv"), dir.path().join("p2.csv"));
        std::fs::write(&p1, "A,1.00\nB,2.00\n").unwrap();
        // p2.csv is named but gone (deleted after it was listed).
        let files = [FileInput { path: &p1, shown: "p1.csv", captures: &[] }, FileInput { path: &p2, shown: "p2.csv", captures: &[] }];
        match reader.single_pass(stage, &files, 1000, |_| Ok(())) {
            Ok(Streamed::Again(why)) => assert!(why.contains("reading the files from p1.csv in one scan failed"), "{why}"),
            other => panic!("a scan of a missing file: {other:?}"),
        }
        let e = reader.stage(stage, &files).unwrap_err().to_string();
        assert!(e.contains("p2.csv") && !e.contains("p1.csv"), "the two passes name the file that fails: {e}");
        match reader.single_pass(stage, &files[1..], 1000, |_| Ok(())) {
            Err(e) => assert!(e.to_string().contains("p2.csv"), "{e}"),
            other => panic!("one missing file: {other:?}"),
        }
        // Both there: read once.
        std::fs::write(&p2, "C,3.00\n").unwrap();
        let mut rows = 0;
        match reader.single_pass(stage, &files, 1000, |df| {
            rows += df.height();
            Ok(())
        }) {
            Ok(Streamed::Read(staged)) => assert_eq!(staged.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [2, 1]),
            other => panic!("{other:?}"),
        }
        assert_eq!(rows, 3);
    }
}
