//! How many times a load into PostgreSQL reads its files: once when no key repeats (each reject
//! placed on its file's line after the stream, once the malformed lines are known), and when a
//! key repeats, what that pass copied emptied (a table created by the run, or the staging table)
//! and the files read again in two passes, which place each repeat; an existing table copied
//! into straight is read in two passes. Either way the table and the rejects are what two passes
//! alone would give.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::run::TestDb;
use crate::util::{Output, etl};
use crate::workers::env_of;

/// The set's files: malformed lines, type and rule failures at known lines, one file with CRLF
/// line ends, one whose header orders the columns otherwise (a scan of its own), one without a
/// last line end.
fn write_set(dir: &Path) {
    let prices = dir.join("prices");
    std::fs::create_dir_all(&prices).unwrap();
    let lf = |lines: &[&str]| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    std::fs::write(prices.join("p0.csv"), lf(&["code,price,qty", "A1,1.00,1", "A2,2.00,2", "A3,3.00,3,extra", "A4,x.00,4", "A5,5.00,5", "A6,-6.00,6", "A7,7.00,7"])).unwrap();
    let crlf: String = ["code,price,qty", "B1,1.50", "B2,2.50,2", "B3,3.50,many", "B4,4.50,4"].iter().map(|l| format!("{l}\r\n")).collect();
    std::fs::write(prices.join("p1.csv"), crlf).unwrap();
    std::fs::write(prices.join("p2.csv"), "qty,code,price\n1,C1,1.25\n2,C2,2.25\n3,C3,-1.00\n4,C4,4.25,x\n5,C5,5.25").unwrap();
}

/// Every reject of the set as planted, as `file:line:rule`.
const PLANTED: [&str; 7] = ["p0.csv:4:csv", "p0.csv:5:type", "p0.csv:7:min", "p1.csv:2:csv", "p1.csv:4:type", "p2.csv:4:min", "p2.csv:5:csv"];

fn spec(dir: &Path, mode: &str) -> std::path::PathBuf {
    let head = crate::util::spec_head("passes", dir.display());
    let path = dir.join(format!("passes_{mode}.yaml"));
    std::fs::write(
        &path,
        format!(
            "{head}stages:
  prices:
    source: {{ connection: files, files: \"prices/*.csv\" }}
    target: {{ connection: db, table: price, key: [code], mode: {mode} }}
    columns:
      code: {{ type: string }}
      price: {{ type: \"decimal(12,2)\", min: 0 }}
      qty: {{ type: int64 }}
"
        ),
    )
    .unwrap();
    path
}

fn run(spec: &Path, db: &TestDb) -> Output {
    run_with(spec, db, &[])
}

fn run_with(spec: &Path, db: &TestDb, more: &[&str]) -> Output {
    let env = env_of(db);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // Batches of two rows: every file streams through several, and rows wait for the next
    // file's to fill one.
    let mut args = vec!["run", spec.to_str().unwrap(), "--output", "json", "-v", "--set", "defaults.batch_size=2"];
    args.extend_from_slice(more);
    etl(&args, &env)
}

/// The last run's rejects as `file:line:rule`, in file and line order.
fn rejects(db: &TestDb) -> Vec<String> {
    db.texts(&format!(
        "SELECT regexp_replace(source, '^.*/', '') || ':' || line || ':' || rule FROM {0}.etl_rejects WHERE run_id = (SELECT max(run_id) FROM {0}.etl_rejects) ORDER BY source, line",
        db.schema
    ))
}

/// What the report says the stage's load did with its valid rows.
fn loaded_counts(report: &serde_json::Value) -> String {
    let (stage, loaded) = (&report["stages"][0], &report["stages"][0]["loaded"]);
    format!("{} inserted, {} updated, {} unchanged of {} valid", loaded["inserted"], loaded["updated"], loaded["unchanged"], stage["rows_valid"])
}

/// The table's rows, count and sums (price in cents, qty).
fn table(db: &TestDb) -> String {
    db.texts(&format!("SELECT count(*) || ' ' || (sum(price) * 100)::bigint || ' ' || sum(qty) FROM {}.price", db.schema))[0].clone()
}

#[test]
fn a_load_reads_its_files_once_unless_a_key_repeats_and_ends_as_two_passes_would() {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path());
    let db = TestDb::new("passes");
    let upsert = spec(dir.path(), "upsert");

    // Read once, into the table the run creates: every reject on its file's line.
    let out = run(&upsert, &db);
    let evidence = out.evidence();
    assert_eq!(out.code, 4, "rows rejected, the rest loaded\n{evidence}");
    assert!(evidence.contains("prices: read in one pass: no key repeats") && !evidence.contains("read again"), "{evidence}");
    // `-v` counts the rows staged so far, batch by batch, to the 9 valid.
    assert!(evidence.contains(" rows (9 so far)"), "{evidence}");
    assert_eq!(rejects(&db), PLANTED, "{evidence}");
    // Each rejected row's fields as read (the scans' record ranges kept by the one pass).
    let kept = db.texts(&format!("SELECT string_agg(regexp_replace(source, '^.*/', '') || ':' || line || '=' || coalesce(record->>'code', '-'), ' ' ORDER BY source, line) FROM {}.etl_rejects WHERE rule <> 'csv'", db.schema));
    assert_eq!(kept, ["p0.csv:5=A4 p0.csv:7=A6 p1.csv:4=B3 p2.csv:4=C3"], "{evidence}");
    assert_eq!(table(&db), "9 3075 29", "{evidence}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{evidence}"));
    let files: Vec<String> = report["stages"][0]["files"]
        .as_array()
        .unwrap_or_else(|| panic!("{evidence}"))
        .iter()
        .map(|f| format!("{}/{}/{}", f["rows_read"], f["rows_valid"], f["rows_rejected"]))
        .collect();
    assert_eq!(files, ["7/4/3", "4/2/2", "5/3/2"], "read/valid/rejected per file\n{evidence}");
    // The stage's source is the set's pattern where its files are.
    assert_eq!(report["stages"][0]["source"], format!("{}/prices/*.csv", dir.path().display()), "{evidence}");
    // Each file's size and SHA-256 are its own (the three differ).
    let digests: Vec<String> = report["stages"][0]["files"].as_array().unwrap().iter().map(|f| format!("{} {}", f["bytes"], f["sha256"].as_str().unwrap_or("-"))).collect();
    let own: Vec<String> = ["p0.csv", "p1.csv", "p2.csv"]
        .iter()
        .map(|n| {
            let bytes = std::fs::read(dir.path().join("prices").join(n)).unwrap();
            format!("{} {}", bytes.len(), Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>())
        })
        .collect();
    assert_eq!(digests, own, "{evidence}");
    // Two rows of sixteen failing their type is the data's fault, not the spec's: no hint.
    assert!(report["stages"][0].get("hints").is_none(), "{evidence}");

    // A new file of the set repeats a key within itself: the one pass, into the staging table,
    // is emptied and the file read twice, which places the repeat.
    std::fs::write(dir.path().join("prices/p3.csv"), "code,price,qty\nD1,1.00,1\nD2,2.00,2\nD1,9.00,9\n").unwrap();
    let out = run(&upsert, &db);
    let evidence = out.evidence();
    assert_eq!(out.code, 4, "{evidence}");
    // (Found among the first records, as they stream.)
    assert!(evidence.contains("prices: read once, then a key repeats within its first 3 records: what was copied is emptied, and the files are read again in two passes"), "{evidence}");
    assert_eq!(rejects(&db), ["p3.csv:4:duplicate_key"], "{evidence}");
    assert_eq!(table(&db), "11 3375 32", "the first D1 kept, nothing twice\n{evidence}");
    // Forced, the whole set is read again, in two passes (p3's key repeats); a set loaded file
    // by file compares its rows with the table's in the merge: every valid row is unchanged.
    let out = run_with(&upsert, &db, &["--force"]);
    let evidence = out.evidence();
    assert_eq!(out.code, 4, "{evidence}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{evidence}"));
    let counts = loaded_counts(&report);
    assert_eq!(counts, "0 inserted, 0 updated, 11 unchanged of 11 valid", "{evidence}");
    assert_eq!(table(&db), "11 3375 32", "{evidence}");

    // The same set with a file repeating a key of the first, into a table the run creates: its
    // COPY FREEZE is emptied and made again; the rejects are those the one pass placed, and the
    // repeat's.
    let again = tempfile::tempdir().unwrap();
    write_set(again.path());
    std::fs::write(again.path().join("prices/p4.csv"), "code,price,qty\nE1,1.00,1\nA2,9.00,9\n").unwrap();
    let fresh = TestDb::new("passes_new");
    let out = run(&spec(again.path(), "upsert"), &fresh);
    let evidence = out.evidence();
    assert_eq!(out.code, 4, "{evidence}");
    assert!(evidence.contains("the table is empty: COPY straight into it") && evidence.contains("read again in two passes"), "{evidence}");
    let mut planted: Vec<String> = PLANTED.iter().map(|s| s.to_string()).collect();
    planted.push("p4.csv:3:duplicate_key".into());
    assert_eq!(rejects(&fresh), planted, "{evidence}");
    let first = fresh.texts(&format!("SELECT message FROM {}.etl_rejects WHERE rule = 'duplicate_key'", fresh.schema));
    assert!(first[0].contains("the first is on line 3 of ") && first[0].ends_with("p0.csv"), "{first:?}\n{evidence}");
    assert_eq!(table(&fresh), "10 3175 30", "the first A2 kept, E1 added, nothing twice\n{evidence}");

    // `mode: replace` empties a table with rows and copies straight into it: that table keeps
    // its constraints, which would fail the COPY at a repeat, so it is read in two passes.
    let one = tempfile::tempdir().unwrap();
    let replace = spec(one.path(), "replace");
    // (Without a key: a keyed `replace` merges through the staging table; `unique` is the repeat.)
    let text = std::fs::read_to_string(&replace)
        .unwrap()
        .replace("files: \"prices/*.csv\"", "key: one.csv")
        .replace("key: [code], ", "")
        .replace("code: { type: string }", "code: { type: string, unique: true }");
    std::fs::write(&replace, text).unwrap();
    std::fs::write(one.path().join("one.csv"), "code,price,qty\nR1,1.00,1\nR2,2.00,2\n").unwrap();
    let mine = TestDb::new("passes_replace");
    run(&replace, &mine).expect_code(0);
    std::fs::write(one.path().join("one.csv"), "code,price,qty\nS1,1.00,1\nS2,2.00,2\nS1,3.00,3\nS3,4.00,4\n").unwrap();
    let out = run(&replace, &mine);
    let evidence = out.evidence();
    assert_eq!(out.code, 4, "{evidence}");
    assert!(evidence.contains("the table is empty: COPY straight into it") && !evidence.contains("read in one pass") && !evidence.contains("read once"), "{evidence}");
    assert_eq!(rejects(&mine), ["one.csv:4:unique"], "{evidence}");
    assert_eq!(table(&mine), "3 700 7", "the file's rows, each once\n{evidence}");

    // A unique column's repeat is found from the census after the stream (only the key's hash is
    // looked at as the rows pass): the table the run created is emptied and loaded again.
    let text = std::fs::read_to_string(spec(one.path(), "upsert"))
        .unwrap()
        .replace("files: \"prices/*.csv\"", "key: refs.csv")
        .replace("qty: { type: int64 }", "qty: { type: int64 }\n      ref: { type: string, unique: true }")
        // (And no rejected row's fields kept: `reject_record_bytes: 0`.)
        .replace("stages:\n", "defaults: { reject_record_bytes: 0 }\nstages:\n");
    let refs = one.path().join("refs.yaml");
    std::fs::write(&refs, text).unwrap();
    std::fs::write(one.path().join("refs.csv"), "code,price,qty,ref\nU1,1.00,1,r1\nU2,2.00,2,r2\nU3,3.00,3,r1\nU4,4.00,4,r4\n").unwrap();
    let created = TestDb::new("passes_unique");
    let out = run(&refs, &created);
    let evidence = out.evidence();
    assert_eq!(out.code, 4, "{evidence}");
    assert!(
        evidence.contains("prices: read once, then 1 value(s) of the key or a unique column repeat: what was copied is emptied, and the files are read again in two passes"),
        "{evidence}"
    );
    assert_eq!(rejects(&created), ["refs.csv:4:unique"], "{evidence}");
    let kept = created.count(&format!("SELECT count(*) FROM {}.etl_rejects WHERE record IS NOT NULL", created.schema));
    assert_eq!(kept, 0, "reject_record_bytes: 0 keeps no fields\n{evidence}");
    assert_eq!(table(&created), "3 700 7", "{evidence}");

    // One file upserted again, forced, with a repeated key: the two passes compare each row
    // with the table's current rows before the COPY, and those equal to it are not written but
    // reported unchanged (the merge never sees them).
    let text = std::fs::read_to_string(spec(one.path(), "upsert")).unwrap().replace("files: \"prices/*.csv\"", "key: up.csv");
    let up = one.path().join("up.yaml");
    std::fs::write(&up, text).unwrap();
    std::fs::write(one.path().join("up.csv"), "code,price,qty\nV1,1.00,1\nV2,2.00,2\nV3,3.00,3\n").unwrap();
    let upserted = TestDb::new("passes_equal");
    run(&up, &upserted).expect_code(0);
    std::fs::write(one.path().join("up.csv"), "code,price,qty\nV1,1.00,1\nV2,2.00,2\nV3,3.00,3\nV1,9.00,9\n").unwrap();
    let out = run_with(&up, &upserted, &["--force"]);
    let evidence = out.evidence();
    assert_eq!(out.code, 4, "{evidence}");
    assert!(evidence.contains("read again in two passes"), "{evidence}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{evidence}"));
    let counts = loaded_counts(&report);
    assert_eq!(counts, "0 inserted, 0 updated, 3 unchanged of 3 valid", "{evidence}");
    assert!(evidence.contains("4 rows validated, 0 written by COPY"), "{evidence}");
    assert_eq!(table(&upserted), "3 600 6", "{evidence}");
}
