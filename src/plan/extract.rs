//! The DuckDB SQL that reads a stage's CSV with DuckDB's own reader and casts each column to
//! its spec type. Every field is read as text first, so a value that does not cast rejects its
//! row (its text kept in `__uncast_<column>`) instead of aborting the file. The file is read
//! through one view that numbers its records: once (a stage loading PostgreSQL), the typed rows
//! streaming while their numbers, files and keys are appended to the census, or twice: a first
//! pass keeps only each record's number, file and typed key (the census: counts, repeated keys,
//! malformed lines), then the typed rows stream from the second, from its first chunk, with
//! each repeat's first record. The same query joins
//! the stage's lookups: the key sets its foreign keys reference (a missing one rejects the row)
//! and the target's current rows (a row equal to its current one is not written again).

use indexmap::IndexMap;

use crate::spec::model::ColumnType;

use super::compiled::{ColumnPlan, ColumnSource, DUCKDB_CATALOG, Dialect, DuplicatesSql, ExtractSql, FILE_NUMBER, Held, Lookups, ReadColumn, ReadCsv, Reference, SinglePassSql, StagePlan, TargetPlan};
use super::sql::{FileSql, PassSql, ident, literal, qualified};

/// The DuckDB database, a file in the run's temporary directory (attached by
/// `duck::configure`), that keeps the censuses of stages loading PostgreSQL: its tables are
/// compressed and written out whole past the memory limit, where a temporary table of the
/// in-memory database kept a part it could not evict that grew with the file (at 100M records
/// the repeated keys' aggregate then ran out of memory: BENCHMARKS.md, "Where the memory past
/// the limit went").
pub const SCRATCH_CATALOG: &str = "__scratch";

/// The records the repeated keys' aggregates take in one pass (each pass a share of the keys'
/// hashes): at 100M records one pass ran out of a 128MB memory limit where 25M a pass did not.
pub const RECORDS_PER_PASS: u64 = 25_000_000;

/// The passes over the census that find the repeated keys of `records` records, `per_pass` a pass.
pub fn passes(records: u64, per_pass: u64) -> u64 {
    records.div_ceil(per_pass.max(1)).max(1)
}

/// Compiles a stage's extract (its lookups already compiled). `census_on_disk`: the census is
/// kept in `SCRATCH_CATALOG`, not in a temporary table (not when the run may hold a DuckDB
/// target's transaction open, which may write to one database only).
pub fn compile(stage: &StagePlan, census_on_disk: bool) -> ExtractSql {
    let reject_tables = [reject_table(stage), reject_scan_table(stage)];
    let census = census_relation(stage, census_on_disk);
    ExtractSql {
        clear_rejects: reject_tables.iter().map(|t| format!("DROP TABLE IF EXISTS {};", ident(t))).collect::<Vec<_>>().join(" "),
        read: read_csv(stage),
        census: census_sql(stage, false, census_on_disk),
        census_on_disk,
        census_append: census_sql(stage, true, census_on_disk),
        duplicates: duplicates_sql(stage, &census),
        records_per_pass: RECORDS_PER_PASS,
        count: format!("SELECT {f}, count(*) FROM {census} GROUP BY {f}", f = ident(FILE_NUMBER)),
        malformed: format!(
            "SELECT s.file_path, e.line, e.column_name, CAST(e.error_type AS VARCHAR), e.error_message, left(e.csv_line, 200) \
             FROM {} AS e JOIN {} AS s USING (scan_id, file_id) ORDER BY e.file_id, e.line, e.column_idx",
            ident(&reject_table(stage)),
            ident(&reject_scan_table(stage))
        ),
        select: select_sql(stage, true),
        single: census_on_disk.then(|| SinglePassSql {
            census_empty: format!("{} AND false", census_sql(stage, false, true)),
            census_table: census_table(stage),
            census_columns: census_columns(stage),
            select: select_sql(stage, false),
            hashes: unique_groups(stage).len(),
        }),
        ordered_pass: "SET threads = 1; SET disabled_optimizers = 'build_side_probe_side'".into(),
        ordered_pass_reset: "RESET threads; RESET disabled_optimizers".into(),
        one_thread: "SET threads = 1".into(),
        one_thread_reset: "RESET threads".into(),
        keys: (stage.target.delete_missing.is_some() || stage.target.history.as_ref().is_some_and(|h| h.close)).then(|| keys_sql(stage, &census)),
        rejected_create: format!("CREATE OR REPLACE TEMP TABLE {} (record UBIGINT)", ident(&rejected_table(stage))),
        rejected_table: rejected_table(stage),
        rejected_headers: rejected_fields(stage).0,
        rejected_fields: rejected_fields(stage).1,
    }
}

/// The table of a stage's rejected record numbers.
fn rejected_table(stage: &StagePlan) -> String {
    format!("__rejected_{}", stage.name)
}

/// The headers of the columns a stage reads from its file, and the statement yielding each
/// rejected record's number and those columns' text, in that order: the file read again
/// through the numbering view, only the rejected records kept.
fn rejected_fields(stage: &StagePlan) -> (Vec<String>, String) {
    let read: Vec<&ColumnPlan> = stage.columns.iter().filter(|c| c.source == ColumnSource::File).collect();
    let columns: String = read.iter().map(|c| format!(", r.{}", ident(&c.name))).collect();
    let sql = format!(
        "SELECT n.record{columns} FROM {} AS r JOIN {} AS n ON n.record = r.{} ORDER BY n.record",
        ident(&read_view(stage)),
        ident(&rejected_table(stage)),
        ident(RECORD)
    );
    (read.iter().map(|c| c.header.clone()).collect(), sql)
}

/// The file's distinct typed keys, written as CSV (see `ExtractSql::keys`), from the census.
fn keys_sql(stage: &StagePlan, census: &str) -> FileSql {
    let keys: Vec<String> = stage.target.key.iter().map(|k| ident(k)).collect();
    let present: Vec<String> = keys.iter().map(|k| format!("{k} IS NOT NULL")).collect();
    FileSql::new(
        format!("COPY (SELECT DISTINCT {} FROM {census} WHERE {}) TO ", keys.join(", "), present.join(" AND ")),
        " (FORMAT csv, HEADER false)",
    )
}

/// The view numbering a stage's CSV records in file order (see `ReadCsv`).
pub fn read_view(stage: &StagePlan) -> String {
    format!("read_{}", stage.name)
}

/// The table keeping, of every record the first pass read, its number, file and the typed
/// values of its key and unique columns.
pub fn census_table(stage: &StagePlan) -> String {
    format!("__census_{}", stage.name)
}

/// The census table as statements name it: in `SCRATCH_CATALOG` when `on_disk`.
fn census_relation(stage: &StagePlan, on_disk: bool) -> String {
    let table = ident(&census_table(stage));
    if on_disk { format!("{}.{table}", ident(SCRATCH_CATALOG)) } else { table }
}

/// The column of the read view that is true when every field read is null: the census asks
/// for it, so DuckDB parses every column of every record in the first pass as in the second
/// (a column left out would not be read, and the two passes could count different records).
pub const FIELDS: &str = "__fields";

/// The first pass over the file(s) the read view numbers: the census (created, or appended to
/// for a later scan of a set's files). It filters on `FIELDS` (never null) rather than keeping
/// it: stored, that BOOLEAN column kept part of the census in memory past DuckDB's limit (after
/// 100M records the limit could not be lowered to 96MB with it, and could without it).
fn census_sql(stage: &StagePlan, append: bool, on_disk: bool) -> String {
    let (from, _) = typed(stage);
    let mut columns: Vec<String> = census_values(stage).iter().map(|c| ident(c)).collect();
    columns.extend(unique_groups(stage).iter().enumerate().map(|(i, (_, cols))| format!("{} AS {}", group_hash(cols, ""), ident(&hash_column(i)))));
    let census = census_relation(stage, on_disk);
    let head = match (append, on_disk) {
        (true, _) => format!("INSERT INTO {census}"),
        (false, true) => format!("CREATE OR REPLACE TABLE {census} AS"),
        (false, false) => format!("CREATE OR REPLACE TEMP TABLE {census} AS"),
    };
    format!("{head}\nSELECT {}\nFROM {from}\nWHERE {} IS NOT NULL", columns.join(", "), ident(FIELDS))
}

/// The column holding the hash of the values of the `i`th group of unique columns (the key
/// first; see `unique_groups`), null when a part is missing: kept in the census, so the repeats
/// are found from fixed-width hashes DuckDB has already computed, not from the values hashed
/// again (a clean load of 1M trades spent 0.43 s of its single pass hashing its keys twice over
/// the census, while the COPY waited to end). In the single pass, the key's hash (`i` = 0) also
/// stops the pass early on a repeat among its first records.
pub fn hash_column(i: usize) -> String {
    format!("__hash_{i}")
}

/// The hash of the values of `cols` (each `prefix`ed), null when one is missing.
fn group_hash(cols: &[String], prefix: &str) -> String {
    let present: Vec<String> = cols.iter().map(|c| format!("{prefix}{} IS NOT NULL", ident(c))).collect();
    let list: Vec<String> = cols.iter().map(|c| format!("{prefix}{}", ident(c))).collect();
    format!("CASE WHEN {} THEN hash({}) END", present.join(" AND "), list.join(", "))
}

/// The records of the single pass whose key hashes are kept (see `hash_column`): 16 bytes each,
/// about 1 MB, a set that stays in the processor's caches (2^20 of them cost a clean load of 1M
/// trades 0.15 s of the reading thread's time, in cache misses). A file whose first repeat comes
/// later has it found from the census, after the stream.
pub const EARLY_RECORDS: usize = 1 << 16;

/// The census's columns: its values (`census_values`), then each group's hash (see
/// `hash_column`).
fn census_columns(stage: &StagePlan) -> Vec<String> {
    let mut columns = census_values(stage);
    columns.extend((0..unique_groups(stage).len()).map(hash_column));
    columns
}

/// The census's values: the record number, the file number, the key's and the unique columns'
/// (each once).
fn census_values(stage: &StagePlan) -> Vec<String> {
    let mut columns = vec![RECORD.to_string(), FILE_NUMBER.to_string()];
    for (_, cols) in unique_groups(stage) {
        for c in cols {
            if !columns.contains(&c) {
                columns.push(c);
            }
        }
    }
    columns
}

/// The column holding the 1-based record number of a row within its file.
pub const RECORD: &str = "__record";

/// The name of the column holding a value's text when it did not cast.
pub fn uncast_column(column: &str) -> String {
    format!("__uncast_{column}")
}

/// The DuckDB type of a column.
pub fn duckdb_type(t: ColumnType) -> String {
    match t {
        ColumnType::String => "VARCHAR".into(),
        ColumnType::Int32 => "INTEGER".into(),
        ColumnType::Int64 => "BIGINT".into(),
        ColumnType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
        ColumnType::Float64 => "DOUBLE".into(),
        ColumnType::Bool => "BOOLEAN".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Timestamp => "TIMESTAMP".into(),
    }
}

fn cast(c: &ColumnPlan) -> Option<String> {
    let v = ident(&c.name);
    if c.ty == ColumnType::String {
        return None;
    }
    if !c.formats.is_empty() {
        let fmts: Vec<String> = c.formats.iter().map(|f| literal(f)).collect();
        let parsed = match c.formats.as_slice() {
            // `%.f` (optional fraction) gives two formats. A format that does not match costs
            // DuckDB an error message per value, so the likely one goes first: with a fraction
            // when the value has a point. Either order gives the same result.
            [with, without] if with.contains(".%f") && !without.contains('.') => format!(
                "CASE WHEN {v} LIKE '%.%' THEN coalesce(try_strptime({v}, {a}), try_strptime({v}, {b})) \
                 ELSE coalesce(try_strptime({v}, {b}), try_strptime({v}, {a})) END",
                a = fmts[0],
                b = fmts[1]
            ),
            _ => format!("try_strptime({v}, [{}])", fmts.join(", ")),
        };
        // DuckDB's strptime reads `infinity`, `-infinity` and `epoch` whatever the format, as
        // 1900-01-01 00:00:00: that value from a text without a digit is no date. (The text is
        // looked at only for that value: a regex on every value cost 40 ms a million.)
        let parsed = format!("CASE WHEN {parsed} = TIMESTAMP '1900-01-01 00:00:00' AND NOT regexp_matches({v}, '[0-9]') THEN NULL ELSE {parsed} END");
        return Some(match c.ty {
            ColumnType::Date => in_range(&format!("CAST({parsed} AS DATE)"), c.ty),
            _ => in_range(&parsed, c.ty),
        });
    }
    let cast = format!("TRY_CAST({v} AS {})", duckdb_type(c.ty));
    Some(match c.ty {
        ColumnType::Date | ColumnType::Timestamp => in_range(&cast, c.ty),
        // DuckDB reads some texts with an exponent into a narrow decimal as a value past its
        // digits (`9.30754075e10` into a `decimal(12,2)` as 93075407500.00, which then failed
        // the whole read where it was compared, or would fail the COPY), and refuses a
        // mantissa with more whole digits than the decimal (`54807453841e-1`): such a text is
        // read with all 38 digits at the column's scale (more places are rejected by
        // `places_past`, counted in the text) and narrowed, a cast that checks the digits.
        ColumnType::Decimal { scale, .. } => {
            format!("CASE WHEN contains({v}, 'e') OR contains({v}, 'E') THEN TRY_CAST(TRY_CAST({v} AS DECIMAL(38,{scale})) AS {to}) ELSE {cast} END", to = duckdb_type(c.ty))
        }
        // Spaces around a boolean are read past, as around a number (and as PostgreSQL does).
        ColumnType::Bool => format!("TRY_CAST(trim({v}) AS BOOLEAN)"),
        _ => cast,
    })
}

/// The dates and timestamps a run loads: from the first PostgreSQL holds (4713 BC) to the last
/// the DuckDB target's batches can be written in (262142 AD, chrono's; PostgreSQL's own last is
/// later), as DuckDB writes them. DuckDB reads years past both ends and `infinity` and
/// `-infinity`: such a value would fail the whole COPY into PostgreSQL, or arrive as another
/// date, so it does not cast here, in either target. (DuckDB evaluates the repeated `parsed`
/// once.)
pub const EARLIEST_YEAR: i64 = -4713;
pub const LAST_YEAR: i64 = 262_142;
const EARLIEST: &str = "-4713-11-24";
const LAST: &str = "262142-12-31";

/// A date or timestamp `parsed`, NULL (not cast) outside the range a run loads, or infinite.
fn in_range(parsed: &str, ty: ColumnType) -> String {
    let within = match ty {
        ColumnType::Date => format!("{parsed} BETWEEN DATE '{EARLIEST}' AND DATE '{LAST}'"),
        _ => format!("{parsed} BETWEEN TIMESTAMP '{EARLIEST} 00:00:00' AND TIMESTAMP '{LAST} 23:59:59.999999'"),
    };
    format!("CASE WHEN {within} THEN {parsed} END")
}

/// A fraction of a second with a nonzero digit past the sixth: a timestamp keeps microseconds.
pub const FRACTION_PAST_MICROS: &str = r"\.[0-9]{6}[0-9]*[1-9]";

/// Whether a number's text `v` has a nonzero digit past `scale` places that its cast would round
/// away. For a decimal column, one its parse at the wide scale (`wide`: the most places its
/// integer digits leave in 38) cannot see: more places than `wide`, or an exponent moving digits
/// there (`1.000000000000000000000001` or `1e-30` for a `decimal(20,2)`, `1.005` for a
/// `decimal(38,2)`, whose wide scale is its own); only a text longer than `wide` places can be,
/// or with an exponent, is looked at. For an integer column (`wide` None, `scale` 0), any
/// fraction (`1.5`, `15e-1`), in a text with a point or an exponent. Counted in the text: the
/// fraction's digits, less the exponent, less the trailing zeros of all the digits; an exponent
/// too large to read counts as past.
fn places_past(v: &str, scale: u8, wide: Option<u8>) -> String {
    let t = format!("trim({v})");
    let fraction = format!("length(regexp_extract({t}, '\\.([0-9]*)', 1))");
    let exponent = format!("CASE WHEN regexp_matches({t}, '[eE]') THEN TRY_CAST(regexp_extract({t}, '[eE]([+-]?[0-9]+)$', 1) AS BIGINT) ELSE 0 END");
    let digits = format!("replace({}, '.', '')", mantissa(&t));
    let zeros = format!("(length({digits}) - length(rtrim({digits}, '0')))");
    let looked_at = match wide {
        Some(wide) => format!("length({v}) > {}", u32::from(wide) + 1),
        None => format!("contains({v}, '.')"),
    };
    // A zero has no digit past any place, whatever its exponent (`0e-47`).
    format!("(CASE WHEN {looked_at} OR contains({v}, 'e') OR contains({v}, 'E') THEN rtrim({digits}, '0') <> '' AND coalesce({fraction} - {exponent} - {zeros} > {scale}, true) ELSE false END)")
}

/// A number's text `t` up to its exponent, sign dropped: its digits and point.
fn mantissa(t: &str) -> String {
    format!("regexp_extract({t}, '^[+-]?([0-9]*\\.?[0-9]*)', 1)")
}

/// Whether a double column's text `v`, cast to `cast`, left the double's range: infinite though
/// the text does not say infinity (`1e309`), or zero though its digits are not (`1e-400`).
fn double_out_of_range(v: &str, cast: &str) -> String {
    let t = format!("trim({v})");
    format!(
        "(CASE WHEN isinf({cast}) THEN NOT regexp_matches({t}, '^[+-]?inf(inity)?$', 'i') WHEN {cast} = 0 THEN regexp_matches({}, '[1-9]') ELSE false END)",
        mantissa(&t)
    )
}

/// The name of the column holding, for a row whose key (or unique column) repeats an earlier
/// row's, the record number of that first row.
pub fn duplicate_column(what: &str) -> String {
    format!("__duplicate_of_{what}")
}

/// The DuckDB table DuckDB's CSV reader writes malformed lines to.
pub fn reject_table(stage: &StagePlan) -> String {
    format!("csv_errors_{}", stage.name)
}

/// The DuckDB table DuckDB's CSV reader describes its scans in (for the reject table).
pub fn reject_scan_table(stage: &StagePlan) -> String {
    format!("csv_scans_{}", stage.name)
}

/// The name of the column that is true for a row whose `column` value is missing from the table
/// it references.
pub fn missing_column(column: &str) -> String {
    format!("__missing_{column}")
}

/// The column that is true for a row equal to the target's current row with its key.
pub const UNCHANGED: &str = "__unchanged";

/// The relation a PostgreSQL target's referenced key set is copied into for a stage's column.
pub fn reference_relation(stage: &str, column: &str) -> String {
    format!("__ref_{stage}_{column}")
}

/// The share of DuckDB's memory limit (1/this) a PostgreSQL table's current rows may take to be
/// compared in DuckDB with the file's (see [`compared_in_duckdb`]).
pub const CURRENT_SHARE: u64 = 8;

/// Whether a PostgreSQL table's current rows, `bytes` of them (on disk, or as exported), are
/// compared with the file's rows in DuckDB, under its memory limit of `limit` bytes. The
/// comparison joins the file's typed rows with them, and DuckDB builds its hash table on the
/// current rows: held in memory whenever they fit what is free, they left no room for the CSV
/// reader's buffers, and a forced load of 300 000 trades into a table of as many failed out of
/// memory at the default 128MB (at 1M rows, 256MB was needed). Past an eighth of the limit (its
/// hash table takes about twice the CSV's bytes) the rows are not exported, and the merge
/// compares them in PostgreSQL: the same rows end written (each changed row is, an unchanged one
/// is left as it is), with DuckDB's memory what a first load's is, and in no more time (a forced
/// load of 1M trades into as many: 8.4 s, the first load 8.6 s; 7.0 s compared in DuckDB under
/// a 2GB limit).
pub fn compared_in_duckdb(bytes: u64, limit: u64) -> bool {
    bytes <= limit / CURRENT_SHARE
}

/// Whether a stage whose lookups take `bytes` (as exported) has its joins held to a quarter of
/// DuckDB's memory limit (`limit` bytes; `duck::BOUND_JOINS`): past the same eighth. Below it
/// they are not, and a join's hash table is held in memory whenever it fits (a load of trades
/// referencing 1M assets, 11 MB of keys, was a sixth slower with them held).
pub fn lookups_bound_joins(bytes: u64, limit: u64) -> bool {
    !compared_in_duckdb(bytes, limit)
}

/// The relation a PostgreSQL target's current rows are copied into for a stage.
pub fn current_relation(stage: &str) -> String {
    format!("__current_{stage}")
}

/// The relation a PostgreSQL target's values of a unique column are copied into for a stage.
pub fn held_relation(stage: &str, column: &str) -> String {
    format!("__held_{stage}_{column}")
}

/// The name of the column holding, for a row whose `column` value another row of the table
/// holds, that row's key (as text; empty for a table without a key).
pub fn held_column(column: &str) -> String {
    format!("__held_by_{column}")
}

/// A stage's lookups. A PostgreSQL target's are DuckDB temp tables the executor fills from the
/// database; a DuckDB target's are its tables, read in place.
pub fn lookups(stage: &str, target: &TargetPlan, columns: &[ColumnPlan]) -> Lookups {
    let in_target = |table: &str| match target.dialect {
        Dialect::Postgres => qualified(target.schema.as_deref(), table),
        Dialect::Duckdb => format!("{DUCKDB_CATALOG}.main.{}", ident(table)),
    };
    let references = columns
        .iter()
        .filter_map(|c| {
            let (table, ref_column) = c.references.clone()?;
            let relation = match target.dialect {
                Dialect::Postgres => ident(&reference_relation(stage, &c.name)),
                Dialect::Duckdb => in_target(&table),
            };
            Some(Reference { column: c.name.clone(), relation, ref_column, table: in_target(&table) })
        })
        .collect();
    let row_by_row = target.mode == crate::spec::model::LoadMode::Upsert || target.delete_missing.is_some();
    let current = (row_by_row && !target.key.is_empty()).then(|| match target.dialect {
        Dialect::Postgres => ident(&current_relation(stage)),
        Dialect::Duckdb => in_target(&target.table),
    });
    // `replace` empties the table first: nothing is held then.
    let key_alone = |c: &ColumnPlan| target.key.len() == 1 && target.key[0] == c.name;
    let held = columns
        .iter()
        .filter(|c| c.unique && !key_alone(c) && target.mode != crate::spec::model::LoadMode::Replace)
        .map(|c| Held {
            column: c.name.clone(),
            relation: match target.dialect {
                Dialect::Postgres => ident(&held_relation(stage, &c.name)),
                Dialect::Duckdb => in_target(&target.table),
            },
        })
        .collect();
    Lookups { references, current, held }
}

/// Creates a lookup's DuckDB relation, empty.
pub fn lookup_create(relation: &str, columns: &[(String, ColumnType)]) -> String {
    let defs: Vec<String> = columns.iter().map(|(n, t)| format!("{} {}", ident(n), duckdb_type(*t))).collect();
    format!("CREATE OR REPLACE TEMP TABLE {relation} ({})", defs.join(", "))
}

/// The line limit and buffer of DuckDB's read of a file etl or the target wrote (a lookup the
/// target exported, a DuckDB target's spooled rows), fitted to its longest record (`longest`
/// bytes, as the writer counted them): DuckDB refuses a line over 2 MB unless told, and a row may
/// hold longer text; but told a limit past its 2 MB, DuckDB reads 16 such lines at a time, so a
/// limit of any length made it read the whole file at once: a 1M-row table's 135 MB export ran
/// out of its 128 MB (`duck::DEFAULT_MEMORY`) and failed every load of that stage that was not
/// reused. The buffer holds two of the longest lines, and at least 8 MB (DuckDB's own, 32 MB, on
/// each of its threads, took half of a 64 MB limit).
pub fn read_limits(longest: u64) -> (u64, u64) {
    let line = (longest + 2).max(2 << 20);
    (line, (2 * line).max(8 << 20))
}

/// Fills a lookup's DuckDB relation from the CSV the target exported (NULL an empty field). A
/// value that does not fit the spec's type, or would be rounded to fit, becomes NULL: it matches
/// nothing, so such a row counts as changed and the database decides.
pub fn lookup_fill(relation: &str, columns: &[(String, ColumnType)]) -> FileSql {
    let text: Vec<String> = columns.iter().map(|(n, _)| format!("{}: 'VARCHAR'", literal(n))).collect();
    let casts: Vec<String> = columns
        .iter()
        .map(|(n, t)| {
            let v = ident(n);
            let to = duckdb_type(*t);
            match t {
                ColumnType::Decimal { precision, scale } => {
                    let wide = 38 - (precision - scale);
                    format!(
                        "CASE WHEN TRY_CAST({v} AS DECIMAL(38,{wide})) = TRY_CAST({v} AS {to}) AND NOT {} THEN TRY_CAST({v} AS {to}) END",
                        places_past(&v, *scale, Some(wide))
                    )
                }
                ColumnType::Int32 | ColumnType::Int64 => format!("CASE WHEN NOT {} THEN TRY_CAST({v} AS {to}) END", places_past(&v, 0, None)),
                ColumnType::Bool => format!("CASE {v} WHEN 't' THEN true WHEN 'f' THEN false END"),
                ColumnType::String => v,
                _ => format!("TRY_CAST({v} AS {to})"),
            }
        })
        .collect();
    FileSql::new(
        format!("INSERT INTO {relation} SELECT {} FROM read_csv(", casts.join(", ")),
        format!(
            ", header = false, delim = ',', quote = '\"', escape = '\"', nullstr = '', allow_quoted_nulls = false, max_line_size = {LINE}, buffer_size = {BUFFER}, columns = {{{}}})",
            text.join(", "),
            LINE = crate::plan::sql::LINE_LIMIT,
            BUFFER = crate::plan::sql::BUFFER_SIZE,
        ),
    )
}

fn read_csv(stage: &StagePlan) -> ReadCsv {
    let csv = &stage.csv;
    let nulls: Vec<String> = csv.null_values.iter().map(|n| literal(n)).collect();
    let columns = stage
        .columns
        .iter()
        .filter_map(|c| match &c.source {
            ColumnSource::File => Some(ReadColumn::File { header: c.header.clone(), name: c.name.clone() }),
            ColumnSource::Path(capture) => Some(ReadColumn::Path { capture: capture.clone(), name: c.name.clone() }),
            ColumnSource::Value(text) => Some(ReadColumn::Value { text: text.clone(), name: c.name.clone() }),
            ColumnSource::Expr(_) => None,
        })
        .collect();
    let options = [
        format!("header = {}", csv.header),
        format!("delim = {}", literal(&csv.delimiter)),
        format!("quote = {}", literal(&csv.quote)),
        format!("escape = {}", literal(&csv.escape)),
        format!("encoding = {}", literal(csv.encoding.duckdb_name())),
        // A compressed source is decoded into the spool first: DuckDB always reads plain text.
        "compression = 'none'".to_string(),
        format!("nullstr = [{}]", nulls.join(", ")),
        "auto_detect = false".to_string(),
    ];
    let tail = [
        "strict_mode = true".to_string(),
        "ignore_errors = true".to_string(),
        "store_rejects = true".to_string(),
        format!("rejects_table = {}", literal(&reject_table(stage))),
        format!("rejects_scan = {}", literal(&reject_scan_table(stage))),
    ];
    ReadCsv {
        view: ident(&read_view(stage)),
        columns,
        options: options.join(", "),
        tail: format!("{})", tail.join(", ")),
    }
}

/// The typed rows as a subquery `typed`: the record number, each column cast to its type, and
/// each value that did not cast (as text). Computed columns (`expr:`) are computed over the
/// others' typed values, in a query around theirs.
fn typed(stage: &StagePlan) -> (String, Vec<String>) {
    let read = ident(&read_view(stage));
    let mut inner = vec![format!("    {}, {}, {}", ident(RECORD), ident(FILE_NUMBER), ident(FIELDS))];
    let mut names = vec![RECORD.to_string()];
    for c in stage.columns.iter().filter(|c| computed(c).is_none()) {
        let v = ident(&c.name);
        names.push(c.name.clone());
        match cast(c) {
            None => inner.push(format!("    {v}")),
            Some(expr) => {
                inner.push(format!("    {expr} AS {v}"));
                // A number the cast would change does not fit: a cast failure too, never a
                // silent change. A decimal with more places than the column keeps, an integer
                // column's value with a fraction (DuckDB rounds both), a double past its range
                // (DuckDB makes it infinite, or zero; PostgreSQL refuses both).
                let lossy = match c.ty {
                    ColumnType::Decimal { precision, scale } => {
                        let wide = 38 - (precision - scale);
                        format!(" OR TRY_CAST({v} AS DECIMAL(38,{wide})) <> {expr} OR {}", places_past(&v, scale, Some(wide)))
                    }
                    // The text of nearly every integer is the integer's own: only another is counted.
                    ColumnType::Int32 | ColumnType::Int64 => format!(" OR (CAST({expr} AS VARCHAR) <> {v} AND {})", places_past(&v, 0, None)),
                    ColumnType::Float64 => format!(" OR {}", double_out_of_range(&v, &expr)),
                    // DuckDB's own timestamp text keeps microseconds and drops further digits.
                    ColumnType::Timestamp if c.formats.is_empty() => format!(" OR (contains({v}, '.') AND regexp_matches({v}, '{FRACTION_PAST_MICROS}'))"),
                    _ => String::new(),
                };
                inner.push(format!("    CASE WHEN {v} IS NOT NULL AND ({expr} IS NULL{lossy}) THEN {v} END AS {}", ident(&uncast_column(&c.name))));
                names.push(uncast_column(&c.name));
            }
        }
    }
    let base = format!("(\n  SELECT\n{}\n  FROM {read}\n)", inner.join(",\n"));
    if stage.columns.iter().all(|c| computed(c).is_none()) {
        return (format!("{base} AS typed"), names);
    }
    let read: IndexMap<String, ColumnType> = stage.columns.iter().filter(|c| computed(c).is_none()).map(|c| (c.name.clone(), c.ty)).collect();
    let mut middle = vec!["    *".to_string()];
    let mut outer = vec![format!("  {}, {}, {}", ident(RECORD), ident(FILE_NUMBER), ident(FIELDS))];
    let mut names = vec![RECORD.to_string()];
    for c in &stage.columns {
        let v = ident(&c.name);
        names.push(c.name.clone());
        let Some(e) = computed(c) else {
            outer.push(format!("  {v}"));
            if cast(c).is_some() {
                outer.push(format!("  {}", ident(&uncast_column(&c.name))));
                names.push(uncast_column(&c.name));
            }
            continue;
        };
        let raw = ident(&computed_column(&c.name));
        middle.push(format!("    {} AS {raw}", super::derive::sql(e, &read)));
        let value = match c.ty {
            ColumnType::String => {
                outer.push(format!("  {raw} AS {v}"));
                continue;
            }
            // A value with more places than the column keeps does not fit: null (and rejected),
            // never rounded.
            ColumnType::Decimal { precision, scale } => {
                let to = format!("TRY_CAST({raw} AS DECIMAL({precision},{scale}))");
                format!("CASE WHEN {raw} = {to} THEN {to} END")
            }
            t => format!("TRY_CAST({raw} AS {})", duckdb_type(t)),
        };
        outer.push(format!("  {value} AS {v}"));
        outer.push(format!("  CASE WHEN {raw} IS NOT NULL AND {value} IS NULL THEN CAST({raw} AS VARCHAR) END AS {}", ident(&uncast_column(&c.name))));
        names.push(uncast_column(&c.name));
    }
    let from = format!(
        "(\nSELECT\n{}\nFROM (\n  SELECT\n{}\n  FROM {base} AS base\n) AS computed\n) AS typed",
        outer.join(",\n"),
        middle.join(",\n")
    );
    (from, names)
}

/// A computed column's expression.
fn computed(c: &ColumnPlan) -> Option<&crate::spec::expr::Expr> {
    match &c.source {
        ColumnSource::Expr(e) => Some(e),
        _ => None,
    }
}

/// The column holding a computed column's value before its cast to the column's type.
pub fn computed_column(column: &str) -> String {
    format!("__computed_{column}")
}

/// The groups of columns whose values must not repeat within the file: the key, then each
/// `unique` column that is not the key by itself. Named for their `__duplicate_of_` column.
fn unique_groups(stage: &StagePlan) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    if !stage.target.key.is_empty() {
        out.push(("key".to_string(), stage.target.key.clone()));
    }
    let key_is = |c: &ColumnPlan| stage.target.key.len() == 1 && stage.target.key[0] == c.name;
    for c in stage.columns.iter().filter(|c| c.unique && !key_is(c)) {
        out.push((c.name.clone(), vec![c.name.clone()]));
    }
    out
}

/// The table listing, for one group of unique columns, each value that repeats and the record
/// of its first occurrence.
pub fn duplicates_table(stage: &StagePlan, what: &str) -> String {
    format!("__dups_{}_{what}", stage.name)
}

/// The statements that find the repeated keys (and unique values) of the file, from the census:
/// per group, a table created empty, then filled in passes (see `passes`), each over a share of
/// the values' hashes (the census's `hash_column`s), so no aggregate holds more than
/// `RECORDS_PER_PASS` records' hashes. A value can repeat only where its hash does, so the
/// hashes that repeat are found first (an aggregate over fixed-width hashes, which DuckDB spills
/// past its memory limit; over the values themselves, long strings, it ran out of 256MB at 30M
/// distinct keys), then the values among the records with those hashes, exactly: a hash shared
/// by two different values only adds records to the second aggregate.
fn duplicates_sql(stage: &StagePlan, census: &str) -> Vec<DuplicatesSql> {
    unique_groups(stage)
        .iter()
        .enumerate()
        .map(|(i, (what, cols))| {
            let list: Vec<String> = cols.iter().map(|c| ident(c)).collect();
            let list = list.join(", ");
            let (table, record, hash) = (ident(&duplicates_table(stage, what)), ident(RECORD), ident(&hash_column(i)));
            DuplicatesSql {
                create: format!("CREATE OR REPLACE TEMP TABLE {table} AS\nSELECT {list}, min({record}) AS \"__first\" FROM {census} WHERE false GROUP BY {list}"),
                find: PassSql::new(
                    vec![
                        format!("INSERT INTO {table}\nSELECT {list}, min({record}) AS \"__first\"\nFROM {census}\nWHERE {hash} IS NOT NULL AND "),
                        format!("\n  AND {hash} IN (SELECT {hash} FROM {census} WHERE {hash} IS NOT NULL AND "),
                        format!(" GROUP BY {hash} HAVING count(*) > 1)\nGROUP BY {list} HAVING count(*) > 1"),
                    ],
                    hash.clone(),
                ),
                found: format!("SELECT count(*) FROM {table}"),
            }
        })
        .collect()
}

/// The query that yields the record number, each column typed, each value that did not cast
/// (as text), for repeated keys the record of their first occurrence, and the lookups' flags. Its
/// rows stream in no particular order (each carries its record number). Without `repeats`
/// (the single pass, before the repeated keys are known), the repeated keys' columns are null
/// and each row's file number comes last.
fn select_sql(stage: &StagePlan, repeats: bool) -> String {
    let (from, names) = typed(stage);
    let mut outer: Vec<String> = names.iter().map(|n| format!("  typed.{}", ident(n))).collect();
    let mut joins = String::new();
    for (i, (what, cols)) in unique_groups(stage).iter().enumerate() {
        if !repeats {
            outer.push(format!("  CAST(NULL AS BIGINT) AS {}", ident(&duplicate_column(what))));
            continue;
        }
        let alias = format!("__dup{i}");
        let on: Vec<String> = cols.iter().map(|c| format!("{alias}.{0} = typed.{0}", ident(c))).collect();
        joins.push_str(&format!("\nLEFT JOIN {} AS {alias} ON {}", ident(&duplicates_table(stage, what)), on.join(" AND ")));
        outer.push(format!(
            "  CASE WHEN {alias}.\"__first\" < typed.{r} THEN {alias}.\"__first\" END AS {}",
            ident(&duplicate_column(what)),
            r = ident(RECORD)
        ));
    }
    for (i, r) in stage.lookups.references.iter().enumerate() {
        let alias = format!("__ref{i}");
        let v = format!("typed.{}", ident(&r.column));
        let k = format!("{alias}.{}", ident(&r.ref_column));
        joins.push_str(&format!("\nLEFT JOIN {} AS {alias} ON {k} = {v}", r.relation));
        outer.push(format!("  ({v} IS NOT NULL AND {k} IS NULL) AS {}", ident(&missing_column(&r.column))));
    }
    for (i, h) in stage.lookups.held.iter().enumerate() {
        let alias = format!("__held{i}");
        let v = ident(&h.column);
        // Another row: one whose key differs (any row, for a table without a key).
        let other = if stage.target.key.is_empty() {
            String::new()
        } else {
            let same: Vec<String> = stage.target.key.iter().map(|k| format!("{alias}.{0} IS NOT DISTINCT FROM typed.{0}", ident(k))).collect();
            format!(" AND NOT ({})", same.join(" AND "))
        };
        joins.push_str(&format!("\nLEFT JOIN {} AS {alias} ON {alias}.{v} = typed.{v}{other}", h.relation));
        let by = match stage.target.key.as_slice() {
            [] => "''".to_string(),
            keys => {
                let parts: Vec<String> = keys.iter().map(|k| format!("CAST({alias}.{} AS VARCHAR)", ident(k))).collect();
                format!("concat_ws(', ', {})", parts.join(", "))
            }
        };
        outer.push(format!("  CASE WHEN {alias}.{v} IS NOT NULL THEN {by} END AS {}", ident(&held_column(&h.column))));
    }
    if let Some(current) = &stage.lookups.current {
        let on: Vec<String> = stage.target.key.iter().map(|k| format!("__current.{0} = typed.{0}", ident(k))).collect();
        joins.push_str(&format!("\nLEFT JOIN {current} AS __current ON {}", on.join(" AND ")));
        let same: Vec<String> = stage
            .columns
            .iter()
            .filter(|c| !stage.target.key.contains(&c.name))
            .map(|c| format!("__current.{0} IS NOT DISTINCT FROM typed.{0}", ident(&c.name)))
            .chain(std::iter::once(format!("__current.{} IS NOT NULL", ident(&stage.target.key[0]))))
            .collect();
        outer.push(format!("  ({}) AS {}", same.join(" AND "), ident(UNCHANGED)));
    } else {
        outer.push(format!("  false AS {}", ident(UNCHANGED)));
    }
    if !repeats {
        outer.push(format!("  typed.{}", ident(FILE_NUMBER)));
        for (i, (_, cols)) in unique_groups(stage).iter().enumerate() {
            outer.push(format!("  {} AS {}", group_hash(cols, "typed."), ident(&hash_column(i))));
        }
    }
    format!("SELECT\n{}\nFROM {from}{joins}", outer.join(",\n"))
}
