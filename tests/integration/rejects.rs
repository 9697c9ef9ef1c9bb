//! Rejects keep their record: each rejected row's fields as read (every column the stage reads
//! from the file, by its CSV header) are stored with its rejects in `etl_rejects.record`, also
//! when a later load carries the reject over from an unchanged line.

use crate::run::TestDb;
use crate::util::etl;

#[test]
fn a_rejected_row_keeps_its_fields_as_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("rejrecord");
    let head = crate::util::spec_head("rejrecord", dir.path().display());
    let text = format!(
        "{head}stages:
  trades:
    source: {{ connection: files, key: trades.csv }}
    target: {{ connection: db, table: trade, key: [trade_id] }}
    columns:
      trade_id: {{ type: string }}
      amount: {{ type: \"decimal(20,2)\", min: 0, from: Amount }}
      note: {{ type: string, nullable: true }}
    rules:
      - {{ name: small, check: \"amount < 100\", severity: warn }}
",
    );
    let spec = dir.path().join("rejrecord.yaml");
    std::fs::write(&spec, text).unwrap();
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    let run = || etl(&["run", spec.to_str().unwrap(), "-v"], &[("ETL_TEST_DATABASE_URL", &url), ("SCHEMA", &db.schema)]);
    let records = || {
        db.texts(
            "SELECT line::text || ' ' || rule || ' ' || coalesce(record::text, '-') FROM etl_rejects
              WHERE run_id = (SELECT max(run_id) FROM etl_runs WHERE spec_name = 'rejrecord') ORDER BY line, rule",
        )
    };
    // Line 3: a negative amount (rejected); line 4: not a number (rejected), with an extra
    // column the spec does not read; line 5: too big for the warn rule (loaded); line 6: ragged.
    std::fs::write(dir.path().join("trades.csv"), "trade_id,Amount,note,extra\n1,1.00,a,x\n2,-5.00,\"with, comma\",x\n3,abc,,x\n4,500.00,big,x\n5,1.00\n").unwrap();
    let out = run();
    out.expect_code(4);
    let kept = records();
    assert_eq!(
        kept,
        [
            r#"3 min {"note": "with, comma", "Amount": "-5.00", "trade_id": "2"}"#,
            r#"4 type {"note": null, "Amount": "abc", "trade_id": "3"}"#,
            "5 small -",
            "6 csv -",
        ],
        "{}",
        out.evidence()
    );

    // A line appended: only the changed lines are read, the unchanged rejects carried over, each
    // with its record.
    std::fs::write(dir.path().join("trades.csv"), "trade_id,Amount,note,extra\n1,1.00,a,x\n2,-5.00,\"with, comma\",x\n3,abc,,x\n4,500.00,big,x\n5,1.00\n6,2.00,new,x\n").unwrap();
    let out = run();
    out.expect_code(4);
    assert!(out.stderr.contains("lines unchanged"), "the changed-lines path\n{}", out.evidence());
    assert_eq!(records(), kept, "{}", out.evidence());
}

#[test]
fn etl_rejects_lists_shows_and_exports_the_rejected_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("rejcli");
    let head = crate::util::spec_head("rejcli", dir.path().display());
    let text = format!(
        "{head}stages:
  accounts:
    source: {{ connection: files, key: accounts.csv }}
    target: {{ connection: db, table: account, key: [account_id] }}
    columns:
      account_id: {{ type: string }}
      cash: {{ type: \"decimal(20,2)\", min: 0 }}
  trades:
    needs: [accounts]
    source: {{ connection: files, key: trades.csv }}
    target: {{ connection: db, table: trade, key: [trade_id] }}
    columns:
      trade_id: {{ type: string }}
      account_id: {{ type: string, references: accounts.account_id }}
      amount: {{ type: \"decimal(20,2)\", from: Amount }}
",
    );
    let spec = dir.path().join("rejcli.yaml");
    std::fs::write(&spec, text).unwrap();
    std::fs::write(dir.path().join("accounts.csv"), "account_id,cash\nA,1.00\nB,-1.00\n").unwrap();
    std::fs::write(dir.path().join("trades.csv"), "trade_id,account_id,Amount\nt1,A,5.00\nt2,B,\"1,5\"\nt3,Z,2.00\n").unwrap();
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    let env = [("ETL_TEST_DATABASE_URL", url.as_str()), ("SCHEMA", db.schema.as_str())];
    etl(&["run", spec.to_str().unwrap()], &env).expect_code(4);

    let out = etl(&["rejects", "list", spec.to_str().unwrap()], &env);
    out.expect_code(0);
    for expected in ["accounts", "min", "-1.00", "trades", "references", "type", "1,5", "4 rejects"] {
        assert!(out.stdout.contains(expected), "`{expected}` missing\n{}", out.evidence());
    }
    let out = etl(&["rejects", "show", spec.to_str().unwrap(), "--stage", "trades", "--line", "3"], &env);
    out.expect_code(0);
    assert!(out.stdout.contains("trades line 3") && out.stdout.contains("    Amount: 1,5") && out.stdout.contains("    account_id: B"), "{}", out.evidence());
    let out = etl(&["rejects", "list", spec.to_str().unwrap(), "--rule", "references", "--output", "json"], &env);
    out.expect_code(0);
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    let lines: Vec<i64> = listed.as_array().unwrap().iter().map(|r| r["line"].as_i64().unwrap()).collect();
    assert_eq!(lines, [3, 4], "B (rejected in accounts) and Z are not accounts\n{}", out.evidence());

    // Several stages' rejects: export needs one named.
    etl(&["rejects", "export", spec.to_str().unwrap()], &env).expect_code(2);
    let file = dir.path().join("corrections.csv");
    let out = etl(&["rejects", "export", spec.to_str().unwrap(), "--stage", "trades", "--out", file.to_str().unwrap()], &env);
    out.expect_code(0);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "\"trade_id\",\"account_id\",\"Amount\"\n\"t2\",\"B\",\"1,5\"\n\"t3\",\"Z\",\"2.00\"\n",
        "each rejected row once, with the stage's headers\n{}",
        out.evidence()
    );
}

/// `etl rejects replay`: after a rule is widened, the rows it rejected are checked again and those
/// that pass now load, their rejects marked with the replay's run; the others stay rejected. Per
/// stage and date, rows read = rows loaded (the load's and the replays') + rows still rejected.
#[test]
fn a_replay_loads_exactly_the_rejected_rows_that_pass_now() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("replay");
    let head = crate::util::spec_head("replay", dir.path().display());
    let write_spec = |limit: &str| {
        let text = format!(
            "{head}defaults:
  csv: {{ delimiter: \";\", null_values: [\"NULL\"] }}
stages:
  trades:
    source: {{ connection: files, key: trades.csv }}
    target: {{ connection: db, table: trade, key: [trade_id] }}
    columns:
      trade_id: {{ type: string }}
      amount: {{ type: \"decimal(20,2)\", min: 0 }}
      note: {{ type: string, nullable: true }}
      business_date: {{ type: date, value: \"{{{{ run.date }}}}\" }}
    rules:
      - {{ name: small, check: \"amount < {limit}\" }}
    # A contract of the whole load (it reads 5 rows): a replay, which reads a few rejected rows
    # again, is no such load and is not held to it.
    checks:
      - {{ name: whole_file, row_count: {{ min: 3 }} }}
",
        );
        std::fs::write(dir.path().join("replay.yaml"), text).unwrap();
    };
    let spec = dir.path().join("replay.yaml");
    let spec = spec.to_str().unwrap();
    write_spec("100");
    // t2 and t3 break `small`, t4 `min`, t5 does not cast; t2's note is NULL, t3's empty.
    std::fs::write(dir.path().join("trades.csv"), "trade_id;amount;note\nt1;5.00;a\nt2;150.00;NULL\nt3;250.00;\nt4;-1.00;d\nt5;abc;e\n").unwrap();
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    let env = [("ETL_TEST_DATABASE_URL", url.as_str()), ("SCHEMA", db.schema.as_str())];
    let out = etl(&["run", spec, "--date", "2025-12-19"], &env);
    out.expect_code(4);
    let table = || db.texts(&format!("SELECT trade_id || ' ' || amount::text || ' ' || coalesce(note, 'NULL') FROM {}.trade ORDER BY 1", db.schema));
    assert_eq!(table(), ["t1 5.00 a"]);
    let first = db.texts("SELECT max(run_id)::text FROM etl_runs WHERE spec_name = 'replay'")[0].clone();

    // The rule widened: replaying its rejects loads t2 (150 < 200), not t3 (250).
    write_spec("200");
    let out = etl(&["rejects", "replay", spec, "--rule", "small"], &env);
    out.expect_code(4);
    assert!(out.stdout.contains("replayed 2 rejected rows of run") && out.stdout.contains("1 loaded, 1 still rejected"), "{}", out.evidence());
    assert_eq!(table(), ["t1 5.00 a", "t2 150.00 NULL"], "t2 loaded, its NULL note a null\n{}", out.evidence());
    let dates = db.texts(&format!("SELECT DISTINCT business_date::text FROM {}.trade", db.schema));
    assert_eq!(dates, ["2025-12-19"], "the replayed row has its load's business date, not today's\n{}", out.evidence());
    let marks = db.texts(&format!("SELECT line::text || ' ' || rule || ' ' || (replayed_by IS NOT NULL)::text FROM etl_rejects WHERE run_id = {first} ORDER BY line, rule"));
    assert_eq!(marks, ["3 small true", "4 small false", "5 min false", "6 type false"], "{}", out.evidence());
    let replay_run = db.texts("SELECT replay_of::text || ' ' || rows_read::text || ' ' || rows_inserted::text || ' ' || rows_rejected::text || ' ' || (SELECT business_date::text FROM etl_runs r WHERE r.run_id = s.run_id) FROM etl_run_stages s WHERE run_id = (SELECT max(run_id) FROM etl_runs WHERE spec_name = 'replay')");
    assert_eq!(replay_run, [format!("{first} 2 1 1 2025-12-19")], "the replay's record names the run, counts its rows, keeps the date\n{}", out.evidence());
    // Read = loaded + still rejected, over the load and its replays: 5 = (1 + 1) + 3.
    let outstanding = db.count(&format!("SELECT count(DISTINCT line) FROM etl_rejects WHERE severity = 'error' AND replayed_by IS NULL AND run_id = {first}"));
    let loaded = db.count(&format!("SELECT sum(rows_inserted + rows_updated)::bigint FROM etl_run_stages s JOIN etl_runs r USING (run_id) WHERE r.spec_name = 'replay' AND run_id >= {first}"));
    assert_eq!((loaded, outstanding), (2, 3));

    // Again, every pending row: none passes; nothing changes, nothing marked.
    let out = etl(&["rejects", "replay", spec], &env);
    out.expect_code(4);
    assert!(out.stdout.contains("replayed 3 rejected rows") && out.stdout.contains("0 loaded, 3 still rejected"), "{}", out.evidence());
    assert_eq!(table(), ["t1 5.00 a", "t2 150.00 NULL"]);

    // The file loaded again: not skipped (the table changed), and it ends as a forced load does.
    let out = etl(&["run", spec, "--date", "2025-12-19"], &env);
    out.expect_code(4);
    assert!(!out.stdout.contains("unchanged since run"), "{}", out.evidence());
    assert_eq!(table(), ["t1 5.00 a", "t2 150.00 NULL"], "{}", out.evidence());

    // Corrected by hand: the rejected rows exported, t4's and t5's amounts fixed, t3 left as it
    // was; replayed from the file, t4 and t5 load and their rejects are marked, t3's are not.
    let last = db.texts("SELECT max(run_id)::text FROM etl_runs WHERE spec_name = 'replay'")[0].clone();
    let file = dir.path().join("corrections.csv");
    etl(&["rejects", "export", spec, "--out", file.to_str().unwrap()], &env).expect_code(0);
    let exported = std::fs::read_to_string(&file).unwrap();
    assert_eq!(exported, "\"trade_id\",\"amount\",\"note\"\n\"t3\",\"250.00\",\"\"\n\"t4\",\"-1.00\",\"d\"\n\"t5\",\"abc\",\"e\"\n");
    std::fs::write(&file, exported.replace("\"-1.00\"", "\"1.00\"").replace("\"abc\"", "\"2.00\"")).unwrap();
    let out = etl(&["rejects", "replay", spec, "--from-file", file.to_str().unwrap()], &env);
    out.expect_code(4);
    assert!(out.stdout.contains("replayed 3 corrected rows") && out.stdout.contains("2 rejected rows loaded by key"), "{}", out.evidence());
    assert_eq!(table(), ["t1 5.00 a", "t2 150.00 NULL", "t4 1.00 d", "t5 2.00 e"], "{}", out.evidence());
    let marks = db.texts(&format!("SELECT line::text || ' ' || (replayed_by IS NOT NULL)::text FROM etl_rejects WHERE run_id = {last} ORDER BY line, rule"));
    assert_eq!(marks, ["4 false", "5 true", "6 true"], "{}", out.evidence());
}
