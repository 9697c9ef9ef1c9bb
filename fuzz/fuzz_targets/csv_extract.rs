//! Any bytes as a CSV file, read and validated by the real extract (DuckDB) and row checks
//! (Polars) with the bad-input corpus's spec: every row ends valid or rejected
//! (`rows read = valid + rejected`), or the file is refused with an error; never a panic.
//! Build with `cargo +nightly fuzz run --features engine csv_extract`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

struct Setup {
    dir: tempfile::TempDir,
    plan: etl::plan::Plan,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let spec = format!(
            "version: 1\nname: fuzz\nconnections:\n  here: {{ type: local, path: '{}' }}\n  out: {{ type: duckdb, path: out.duckdb }}\n\
             stages:\n  assets:\n    source: {{ connection: here, key: in.csv }}\n    target: {{ connection: out, table: asset, key: [account_id] }}\n\
             \x20   columns:\n      account_id: {{ type: string, max_length: 40 }}\n      cash: {{ type: \"decimal(20,2)\", min: 0 }}\n\
             \x20     updated_at: {{ type: timestamp, format: \"%Y-%m-%dT%H:%M:%S%.f\" }}\n      note: {{ type: string, nullable: true }}\n",
            dir.path().display()
        );
        let loaded = etl::spec::load_text("fuzz.yaml", &spec, None, &Default::default()).unwrap_or_else(|e| panic!("{}", e.render(false)));
        let plan = etl::plan::compile(&loaded.spec);
        Setup { dir, plan }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    let path = s.dir.path().join("in.csv");
    std::fs::write(&path, data).unwrap();
    let stage = &s.plan.stages[0];
    let reader = etl::exec::read::Reader::open(s.dir.path(), "256MB").unwrap();
    if let Some(current) = &stage.lookups.current {
        let columns: Vec<_> = stage.columns.iter().map(|c| (c.name.clone(), c.ty)).collect();
        reader.load_lookup(&etl::plan::extract::lookup_sql(current, &columns, None)).unwrap();
    }
    match etl::exec::check_stage(&reader, stage, &path, "in.csv", None, |_| Ok(())) {
        Ok(report) => assert!(report.balanced(), "unbalanced: {report:?}"),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
