//! Extract and validate against data from the project's generator: every planted invalid row,
//! and only those, is rejected for its planted reason, on its line. The lookups a target would
//! fill are filled here by hand: no current rows, and the accounts the assets stage found valid.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use etl::exec::{self, extract::Reader};
use etl::plan::extract::{lookup_create, lookup_fill};
use etl::spec::LoadOptions;

use crate::util::root;

/// Generates seed-format data into a temporary directory.
pub fn generate(assets: usize, trades: usize, rate: f64, seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_etl-datagen"))
        .args(["--out", dir.path().to_str().unwrap(), "--assets", &assets.to_string(), "--trades", &trades.to_string()])
        .args(["--invalid-rate", &rate.to_string(), "--seed", &seed.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "etl-datagen failed: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// small_etl.yaml with its lake pointed at a local directory.
pub fn small_etl_on(dir: &Path) -> etl::spec::LoadedSpec {
    let opts = LoadOptions {
        sets: vec![format!("connections.lake={{type: local, path: '{}'}}", dir.display())],
        ..Default::default()
    };
    etl::spec::load(&root().join("specs/small_etl.yaml"), &opts).unwrap_or_else(|e| panic!("{}", e.render(false)))
}

/// (file, line) -> reason, from invalid_rows.csv.
fn planted(dir: &Path) -> BTreeMap<(String, u64), String> {
    let text = std::fs::read_to_string(dir.join("invalid_rows.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.splitn(5, ',').collect();
            ((f[0].to_string(), f[1].parse().unwrap()), f[2].to_string())
        })
        .collect()
}

/// The rule each planted reason must trip.
fn rule_for(reason: &str, field: &str) -> &'static str {
    match (reason, field) {
        ("bad_enum", _) => "enum",
        ("negative_money", "assets") => "min",
        ("negative_money", _) => "exclusive_min",
        ("formula_mismatch", "assets") => "total_asset_is_sum",
        ("formula_mismatch", _) => "traded_amount_is_product",
        ("empty_required", _) => "not_null",
        ("bad_timestamp", _) => "type",
        ("duplicate_key", _) => "duplicate_key",
        ("unknown_fk", _) => "references",
        _ => "?",
    }
}

#[test]
fn planted_invalid_rows_are_rejected_for_their_reason_and_nothing_else_is() {
    rejects_as_planted(None);
}

/// The repeated keys found in several passes over the census (each a share of the keys'
/// hashes, as a file of more than `RECORDS_PER_PASS` records is) are exactly those one pass finds.
#[test]
fn repeated_keys_found_in_passes_over_shares_of_their_hashes_are_the_same() {
    // 6 000 trades, 997 a pass: 7 passes.
    rejects_as_planted(Some(997));
}

/// Extracts generated files with planted invalid rows; each must be rejected for its reason and
/// nothing else. `records_per_pass`: the repeated keys' passes take that many records each.
fn rejects_as_planted(records_per_pass: Option<u64>) {
    let data = generate(2_000, 6_000, 0.05, 11);
    let loaded = small_etl_on(data.path());
    let mut plan = etl::plan::compile(&loaded.spec);
    if let Some(n) = records_per_pass {
        for st in &mut plan.stages {
            st.extract.records_per_pass = n;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let reader = Reader::open(tmp.path(), "512MB").unwrap();
    let planted = planted(data.path());
    let mut accounts: Vec<String> = Vec::new();
    for (stage, file) in [("assets", "account_assets.csv"), ("trades", "trades.csv")] {
        let sp = plan.stages.iter().find(|s| s.name == stage).unwrap();
        let path = exec::source::local_path(&plan, sp, Path::new("/")).unwrap();
        let columns: Vec<(String, etl::spec::model::ColumnType)> = sp.columns.iter().map(|c| (c.name.clone(), c.ty)).collect();
        if let Some(current) = &sp.lookups.current {
            reader.load_lookup(&lookup_create(current, &columns), None).unwrap();
        }
        for r in &sp.lookups.references {
            let keys = tmp.path().join("accounts.csv");
            let text: String = accounts.iter().map(|a| format!("\"{}\"\n", a.replace('"', "\"\""))).collect();
            std::fs::write(&keys, text).unwrap();
            let ty = sp.columns.iter().find(|c| c.name == r.column).unwrap().ty;
            let key = [(r.ref_column.clone(), ty)];
            reader.load_lookup(&lookup_create(&r.relation, &key), Some((&lookup_fill(&r.relation, &key), keys.as_path(), longest_line(&keys)))).unwrap();
        }
        let mut valid_rows = 0usize;
        let report = exec::check_stage(&reader, sp, &path, file, None, |df| {
            valid_rows += df.height();
            if stage == "assets" {
                accounts.extend(df.column("account_id").unwrap().str().unwrap().iter().flatten().map(str::to_string));
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(report.balanced());
        let expected: BTreeMap<u64, &str> = planted
            .iter()
            .filter(|((f, _), _)| f == file)
            .map(|((_, line), r)| (*line, rule_for(r, stage)))
            .collect();
        assert!(expected.len() >= 90, "the generator planted too few rows: {}", expected.len());
        let mut got: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for r in &report.rejects {
            got.entry(r.line).or_default().insert(r.rule.clone());
        }
        if stage == "trades" {
            assert!(got.values().any(|rules| rules.contains("duplicate_key")), "no repeated key was planted: the passes are not tested");
        }
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(line, rule)| !got.get(line).is_some_and(|rules| rules.contains(**rule)))
            .map(|(line, rule)| format!("line {line}: expected {rule}, got {:?}", got.get(line)))
            .collect();
        let extra: Vec<String> = got
            .iter()
            .filter(|(line, _)| !expected.contains_key(line))
            .map(|(line, rules)| format!("line {line}: unexpected {rules:?}"))
            .collect();
        assert!(wrong.is_empty() && extra.is_empty(), "stage {stage}:\n{}\n{}\nrejects: {:#?}", wrong.join("\n"), extra.join("\n"), &report.rejects[..report.rejects.len().min(10)]);
        assert_eq!(report.rows_valid as usize, valid_rows);
        assert_eq!(report.rows_rejected as usize, expected.len(), "{stage}");
    }
}

/// Record numbers are file order because DuckDB computes the read view's `row_number() OVER ()`
/// in its streaming window, an operator that keeps its input's order (one thread, in scan
/// order). A blocking window over a parallel scan would number the records in whatever order
/// the threads deliver them: both passes over the view must plan the streaming one. And the
/// typed select streams from its first chunk only if the file is the probe side of its joins:
/// DuckDB estimates a CSV scan at a few dozen rows and, left to itself, builds a hash table of
/// the whole file when a lookup holds more (here 5 000 referenced accounts).
#[test]
fn both_passes_number_the_records_in_one_ordered_stream() {
    let data = generate(2_000, 6_000, 0.05, 11);
    let loaded = small_etl_on(data.path());
    let plan = etl::plan::compile(&loaded.spec);
    let tmp = tempfile::tempdir().unwrap();
    let reader = Reader::open(tmp.path(), "512MB").unwrap();
    let sp = plan.stages.iter().find(|s| s.name == "trades").unwrap();
    let columns: Vec<(String, etl::spec::model::ColumnType)> = sp.columns.iter().map(|c| (c.name.clone(), c.ty)).collect();
    if let Some(current) = &sp.lookups.current {
        reader.load_lookup(&lookup_create(current, &columns), None).unwrap();
    }
    for r in &sp.lookups.references {
        let keys = tmp.path().join("accounts.csv");
        std::fs::write(&keys, (0..5_000).map(|i| format!("A{i}\n")).collect::<String>()).unwrap();
        let key = [(r.ref_column.clone(), sp.columns.iter().find(|c| c.name == r.column).unwrap().ty)];
        reader.load_lookup(&lookup_create(&r.relation, &key), Some((&lookup_fill(&r.relation, &key), keys.as_path(), longest_line(&keys)))).unwrap();
    }
    let path = exec::source::local_path(&plan, sp, Path::new("/")).unwrap();
    let input = exec::extract::FileInput { path: &path, shown: "trades.csv", captures: &[] };
    reader.stage(sp, &[input]).unwrap_or_else(|e| panic!("{e}"));
    let census = sp.extract.census.split_once("AS\n").unwrap().1;
    let mut stmt = reader.connection().prepare(&format!("EXPLAIN {census}")).unwrap();
    let census_plan = stmt.query_map([], |r| r.get::<_, String>(1)).unwrap().map(Result::unwrap).collect::<Vec<_>>().join("\n");
    let select_plan = reader.explain_select(sp).unwrap_or_else(|e| panic!("{e}"));
    for (pass, sql, explained) in [("census", census, census_plan), ("typed select", sp.extract.select.as_str(), select_plan)] {
        // DuckDB names the operator `STREAMING_WINDOW` or, in its box drawing, `Streaming Window`.
        let text = explained.to_uppercase().replace(' ', "_");
        assert!(text.contains("STREAMING_WINDOW"), "the {pass} does not number the records in DuckDB's streaming window:\n{sql}\n{explained}");
        assert!(!text.replace("STREAMING_WINDOW", "").contains("WINDOW"), "the {pass} plans a blocking window too:\n{explained}");
        assert!(!text.contains("JOIN_TYPE:_RIGHT"), "the {pass} builds a hash table of the file (a RIGHT join):\n{explained}");
    }
}

/// Random files whose quoted fields hold line ends (LF, CRLF, CR, doubled quotes) and whose
/// records have blank lines between them, with LF or CRLF line ends: each rejected row is named
/// by the line of the file its record starts on, as an editor numbers them (DuckDB counts a
/// quoted field's lines as one and skips blank lines), and each malformed line likewise.
#[test]
fn each_reject_names_the_line_its_record_starts_on_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "version: 1\nname: lines\nconnections:\n  files: {{ type: local, path: '{d}' }}\n  db: {{ type: duckdb, path: '{d}/t.duckdb' }}\n\
             stages:\n  t:\n    source: {{ connection: files, key: t.csv }}\n    target: {{ connection: db, table: t, key: [id] }}\n\
             \x20   columns:\n      id: {{ type: int64 }}\n      v: {{ type: int32 }}\n      note: {{ type: string, nullable: true }}\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    // Each note as written, and as loaded (None: NULL).
    let notes = [
        ("plain", Some("plain")),
        ("\"two\nlines\"", Some("two\nlines")),
        ("\"crlf\r\ninside\"", Some("crlf\r\ninside")),
        ("\"a \"\"quote\"\"\nand a line\"", Some("a \"quote\"\nand a line")),
        ("", None),
        ("\"cr\ronly\"", Some("cr\ronly")),
        ("\"\n\n\"", Some("\n\n")),
    ];
    let mut seed: u64 = 11;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for case in 0..12 {
        let end = if case % 2 == 0 { "\n" } else { "\r\n" };
        let mut text = format!("id,v,note{end}");
        let mut line = 2;
        let mut expected = Vec::new();
        let mut loaded = Vec::new();
        for id in 1..=30 {
            for _ in 0..next(3).saturating_sub(1) {
                text.push_str(end);
                line += 1;
            }
            let (note, value) = notes[next(notes.len() as u64) as usize];
            let bad = next(4);
            let record = match bad {
                0 => format!("{id},x,{note}"),
                1 => format!("{id},1"),
                _ => format!("{id},{id},{note}"),
            };
            match bad {
                0 => expected.push(format!("{line} v type")),
                1 => expected.push(format!("{line} note csv")),
                _ => loaded.push((id, value.map(str::to_string))),
            }
            // The record's own line ends, inside its quotes: LF, CR, and CRLF as one.
            line += (record.matches('\n').count() + record.matches('\r').count() - record.matches("\r\n").count()) as u64;
            text.push_str(&record);
            text.push_str(end);
            line += 1;
        }
        std::fs::write(dir.path().join("t.csv"), &text).unwrap();
        let _ = std::fs::remove_file(dir.path().join("t.duckdb"));
        let rejects = dir.path().join("rejects.csv");
        let out = crate::util::etl(&["run", spec.to_str().unwrap(), "--rejects-out", rejects.to_str().unwrap()], &[]);
        assert!([0, 4].contains(&out.code), "{}", out.evidence());
        let mut got: Vec<String> = std::fs::read_to_string(&rejects)
            .unwrap()
            .lines()
            .skip(1)
            .filter(|l| l.starts_with("\"t\""))
            .map(|l| {
                let f: Vec<&str> = l.trim_matches('"').split("\",\"").collect();
                format!("{} {} {}", f[2], f[3], f[4])
            })
            .collect();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "case {case}: the file was\n{text:?}\n{}", out.evidence());
        // The valid rows, each note byte for byte (line ends inside it included).
        let db = duckdb::Connection::open(dir.path().join("t.duckdb")).unwrap();
        let rows: Vec<(i64, Option<String>)> =
            db.prepare("SELECT id, note FROM t ORDER BY id").unwrap().query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
        assert_eq!(rows, loaded, "case {case}: the file was\n{text:?}\n{}", out.evidence());
    }
}

/// A lookup the target exported that is larger than DuckDB's memory limit loads: its read was
/// once told any line length, which made DuckDB read the whole file in one buffer (a 1M-row
/// table's 135 MB export ran out of the 128 MB limit, and every load of that stage not reused
/// failed).
#[test]
fn a_lookup_larger_than_duckdbs_memory_limit_loads() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let reader = Reader::open(tmp.path(), "64MB").unwrap();
    let keys = tmp.path().join("keys.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&keys).unwrap());
    for i in 0..1_000_000u32 {
        writeln!(out, "\"key-{i:0>70}\"").unwrap();
    }
    out.flush().unwrap();
    drop(out);
    let bytes = std::fs::metadata(&keys).unwrap().len();
    assert!(bytes > 64 << 20, "the export must be larger than the limit: {bytes} bytes");
    let key = [("k".to_string(), etl::spec::model::ColumnType::String)];
    let relation = "\"__big\"";
    reader
        .load_lookup(&lookup_create(relation, &key), Some((&lookup_fill(relation, &key), keys.as_path(), longest_line(&keys))))
        .unwrap_or_else(|e| panic!("a {bytes}-byte lookup under a 64MB limit: {e}"));
    let n: i64 = reader.connection().query_row("SELECT count(*) FROM \"__big\"", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1_000_000);
}

/// The bytes of a file's longest line, its end included (what a lookup's export counts).
fn longest_line(path: &Path) -> u64 {
    std::fs::read_to_string(path).unwrap().split_inclusive('\n').map(|l| l.len() as u64).max().unwrap_or(0)
}
