//! The property of the `csv_extract` fuzz target, shared with the test that replays its found
//! inputs (`tests/integration/fuzzed.rs`). Any bytes as a CSV file, read and validated by the
//! real extract (DuckDB) and row checks (Polars) with a small upsert spec: every row ends valid
//! or rejected (`rows read = valid + rejected`), or the file is refused with an error; never a
//! panic. And the incremental path agrees with it: the input is the last loaded file and the new
//! one, split at the first 0xFF byte (without one, both are the input). Every record is checked
//! in the new file, and the result is compared with checking only the records that differ from
//! the last file's, the others' outcome carried over from it: they must agree. A file the record
//! scan accepts has as many records as DuckDB reads. The single pass a load into PostgreSQL
//! makes ends as the two passes do (the same counts and rejects, each on the same line with the
//! same fields), or, exactly when a key repeats, asks for the two passes. No input ends in an
//! internal error.

/// A small upsert spec on a local file, compiled, and one DuckDB for every input (opening one
/// per input would leave little time to fuzz): each read replaces the stage's tables.
pub struct Harness {
    dir: tempfile::TempDir,
    plan: etl::plan::Plan,
    reader: etl::exec::extract::Reader,
}

impl Harness {
    /// The spec, its plan and the DuckDB, in a temporary directory of their own.
    pub fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let spec = format!(
            "version: 1\nname: fuzz\nconnections:\n  here: {{ type: local, path: '{}' }}\n  out: {{ type: postgres, url: 'postgres://fuzz@127.0.0.1:1/fuzz' }}\n\
             stages:\n  assets:\n    source: {{ connection: here, key: in.csv }}\n    target: {{ connection: out, table: asset, key: [account_id] }}\n\
             \x20   columns:\n      account_id: {{ type: string, max_length: 40 }}\n      cash: {{ type: \"decimal(20,2)\", min: 0 }}\n\
             \x20     updated_at: {{ type: timestamp, format: \"%Y-%m-%dT%H:%M:%S%.f\" }}\n      note: {{ type: string, nullable: true }}\n",
            dir.path().display()
        );
        let loaded = etl::spec::load_text("fuzz.yaml", &spec, None, &Default::default()).unwrap_or_else(|e| panic!("{}", e.render(false)));
        // A PostgreSQL target (never connected): its lookups are DuckDB tables the harness fills.
        let plan = etl::plan::compile(&loaded.spec);
        let reader = etl::exec::extract::Reader::open(dir.path(), "256MB").unwrap();
        let stage = &plan.stages[0];
        if let Some(current) = &stage.lookups.current {
            let columns: Vec<_> = stage.columns.iter().map(|c| (c.name.clone(), c.ty)).collect();
            reader.load_lookup(&etl::plan::extract::lookup_create(current, &columns), None).unwrap();
        }
        Harness { dir, plan, reader }
    }

    /// Checks every record of the file at `path`: the report, or None when the file is refused.
    fn full(&self, path: &std::path::Path) -> Option<etl::exec::StageReport> {
        let stage = &self.plan.stages[0];
        match etl::exec::check_stage(&self.reader, stage, path, "in.csv", None, |_| Ok(())) {
            Ok(report) => {
                assert!(report.balanced(), "unbalanced: {report:?}");
                Some(report)
            }
            Err(e) => {
                // Refused with a reason; never an internal fault (e.g. the two passes of the
                // extract counting different records).
                assert!(!matches!(e, etl::exec::ExecError::Internal(_)), "internal error: {e}");
                None
            }
        }
    }

    /// Checks one input.
    pub fn check(&self, data: &[u8]) {
        let stage = &self.plan.stages[0];
        let (last, new) = match data.iter().position(|&b| b == 0xff) {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, data),
        };
        let (last_path, path) = (self.dir.path().join("last.csv"), self.dir.path().join("in.csv"));
        std::fs::write(&last_path, last).unwrap();
        std::fs::write(&path, new).unwrap();
        let once = etl::exec::check_stage_once(&self.reader, stage, &path, "in.csv", |_| Ok(()));
        let Some(all) = self.full(&path) else {
            if let Err(e) = once {
                assert!(!matches!(e, etl::exec::ExecError::Internal(_)), "internal error in the single pass: {e}");
            }
            return;
        };
        let repeats = all.rejects.iter().any(|r| r.rule == "duplicate_key");
        match once {
            Ok(etl::exec::Checked::Report(one)) => {
                assert!(!repeats, "the single pass stood although a key repeats");
                assert_eq!(outcome(&one), outcome(&all), "the single pass differs from the two passes");
            }
            Ok(etl::exec::Checked::Again(why)) => assert!(repeats, "the single pass asked for two passes ({why}) where no key repeats"),
            Err(e) => panic!("the two passes read the file, the single pass failed: {e}"),
        }
        let Ok(columns) = etl::exec::extract::file_columns(stage, &path, "in.csv") else { return };
        // The key line indexes beside them are hashed with.
        let key = etl::exec::incremental::RecordKey::of_cache(self.dir.path()).unwrap();
        if let Ok(Ok(_)) = etl::exec::incremental::scan(stage, &path, &columns, true, &key, |_| Ok(())) {
            let mut records = 0u64;
            let _ = etl::exec::incremental::scan(stage, &path, &columns, true, &key, |_| {
                records += 1;
                Ok(())
            });
            assert_eq!(records, all.rows_read, "the scan and DuckDB count different records");
        }
        let Some(before) = self.full(&last_path) else { return };
        let Ok(last_columns) = etl::exec::extract::file_columns(stage, &last_path, "last.csv") else { return };
        let index = self.dir.path().join("last.lines");
        let _ = std::fs::remove_file(&index);
        match etl::exec::incremental::index_file(stage, &last_path, &last_columns, &index).unwrap() {
            Ok(pending) => pending.keep().unwrap(),
            Err(_) => return,
        }
        let Ok(Ok(changes)) = etl::exec::incremental::changes(stage, &path, &columns, &index, &before.rejects, self.dir.path(), None, None) else { return };
        let only = etl::exec::check_stage(&self.reader, stage, &path, "in.csv", Some(&changes), |_| Ok(())).expect("the changed records of a file read whole are read");
        assert_eq!(outcome(&only), outcome(&all), "checking only the changed records differs from checking all");
    }
}

fn outcome(r: &etl::exec::StageReport) -> (u64, u64, u64, u64, Vec<String>) {
    let mut rejects: Vec<String> = r.rejects.iter().map(|j| format!("{j:?}")).collect();
    rejects.sort();
    (r.rows_read, r.rows_valid, r.rows_rejected, r.rows_warned, rejects)
}
