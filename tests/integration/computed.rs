//! Columns not read from the CSV, loaded into PostgreSQL: a path capture, a constant, a
//! template and expressions, each typed and checked by its facets like a read column; every
//! expression's SQL (DuckDB) agrees row by row with the rule language's own evaluation.

use std::path::Path;

use crate::run::TestDb;
use crate::util::{Output, etl};

/// The columns, each computed one checked again by a rule: a rule is evaluated in Rust, the
/// columns in DuckDB's SQL, so a row where the two differ is rejected under `computed_agrees`.
fn spec(dir: &Path) -> std::path::PathBuf {
    let head = crate::util::spec_head("computed", dir.display());
    let spec = format!(
        "{head}stages:
  trades:
    source: {{ connection: files, files: \"trades/{{day}}/*.csv\" }}
    target: {{ connection: db, table: trade, key: [trade_id] }}
    columns:
      trade_id: {{ type: int64 }}
      stock_code: {{ type: string }}
      traded_at: {{ type: timestamp }}
      qty: {{ type: int64 }}
      price: {{ type: \"decimal(12,4)\" }}
      fee: {{ type: \"decimal(12,2)\" }}
      score: {{ type: \"decimal(4,2)\" }}
      day: {{ type: date, from_path: day }}
      business_date: {{ type: date, value: \"{{{{ run.date }}}}\", min: \"2025-01-01\" }}
      venue: {{ type: string, value: XSHG, one_of: [XSHG, XSHE] }}
      trade_date: {{ type: date, expr: \"date(traded_at)\" }}
      market: {{ type: string, expr: \"case when substr(stock_code, 1, 1) = '6' then 'SH' else 'SZ' end\", one_of: [SH, SZ] }}
      side: {{ type: string, expr: \"case when qty < 0 then 'sell' else 'buy' end\" }}
      notional: {{ type: \"decimal(24,2)\", expr: \"round(abs(qty) * price, 2) + fee\", min: 0 }}
      gross: {{ type: \"decimal(20,2)\", expr: \"qty * price\" }}
      rounded: {{ type: \"decimal(4,1)\", expr: \"round(score, 1)\" }}
      code: {{ type: string, expr: \"upper(trim(stock_code))\", max_length: 6 }}
    rules:
      - name: computed_agrees
        check: >-
          trade_date = date(traded_at)
          and market = case when substr(stock_code, 1, 1) = '6' then 'SH' else 'SZ' end
          and side = case when qty < 0 then 'sell' else 'buy' end
          and notional = round(abs(qty) * price, 2) + fee
          and gross = qty * price
          and rounded = round(score, 1)
          and code = upper(trim(stock_code))
",
    );
    let path = dir.join("computed.yaml");
    std::fs::write(&path, spec).unwrap();
    path
}

fn run(db: &TestDb, spec: &Path, extra: &[&str]) -> Output {
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    let mut args = vec!["run", spec.to_str().unwrap(), "--date", "2025-12-23", "--force"];
    args.extend_from_slice(extra);
    etl(&args, &[("ETL_TEST_DATABASE_URL", &url), ("SCHEMA", &db.schema)])
}

#[test]
fn computed_columns_load_typed_and_checked_like_read_ones() {
    let dir = tempfile::tempdir().unwrap();
    let header = "trade_id,stock_code,traded_at,qty,price,fee,score\n";
    for (day, name, rows) in [
        (
            "2025-12-22",
            "a.csv",
            "1,600000,2025-12-22 09:30:00,100,10.5000,1.25,99.99\n\
             2,000001,2025-12-22 23:59:59.999999,-200,5.0000,0.50,1.05\n\
             3, ab ,2025-12-23 00:00:00,1,1.0000,0.00,0.00\n\
             4,600001,2025-12-22 10:00:00,1,10.1234,0.00,1.00\n\
             5,600002,2025-12-22 10:00:00,10,1.0000,-20.00,1.00\n\
             6,abcdefghij,2025-12-22 10:00:00,1,1.0000,0.00,1.00\n",
        ),
        ("2025-12-23", "b.csv", "8,600004,2025-12-23 11:00:00,5,2.0000,0.10,-5.55\n"),
    ] {
        std::fs::create_dir_all(dir.path().join("trades").join(day)).unwrap();
        std::fs::write(dir.path().join("trades").join(day).join(name), format!("{header}{rows}")).unwrap();
    }
    let db = TestDb::new("computed");
    let spec = spec(dir.path());
    let out = run(&db, &spec, &[]);
    out.expect_code(4);
    let rows = db.texts(&format!(
        "SELECT concat_ws(' | ', trade_id, day, business_date, venue, trade_date, market, side, notional, gross, rounded, code) \
         FROM {}.trade ORDER BY trade_id",
        db.schema
    ));
    assert_eq!(
        rows,
        [
            "1 | 2025-12-22 | 2025-12-23 | XSHG | 2025-12-22 | SH | buy | 1051.25 | 1050.00 | 100.0 | 600000",
            "2 | 2025-12-22 | 2025-12-23 | XSHG | 2025-12-22 | SZ | sell | 1000.50 | -1000.00 | 1.1 | 000001",
            "3 | 2025-12-22 | 2025-12-23 | XSHG | 2025-12-23 | SZ | buy | 1.00 | 1.00 | 0.0 | AB",
            "8 | 2025-12-23 | 2025-12-23 | XSHG | 2025-12-23 | SH | buy | 10.10 | 10.00 | -5.6 | 600004",
        ],
        "{}",
        out.evidence()
    );
    // Each computed value that breaks a facet or does not fit its type rejects its row, naming
    // the column and the value; none disagrees with the rule language's evaluation.
    let rejects = db.texts(
        "SELECT line || ':' || coalesce(column_name, '') || ':' || rule || ':' || coalesce(value, '') || ':' || message \
         FROM etl_rejects WHERE stage = 'trades' AND run_id = (SELECT max(run_id) FROM etl_runs WHERE spec_name = 'computed') \
         ORDER BY line, rule",
    );
    assert_eq!(rejects.len(), 3, "{rejects:#?}\n{}", out.evidence());
    assert!(rejects[0].starts_with("5:gross:type:10.1234:`10.1234` has more than 2 decimal places"), "{rejects:#?}");
    assert!(rejects[1].starts_with("6:notional:min:-10.00:"), "{rejects:#?}");
    assert!(rejects[2].starts_with("7:code:max_length:ABCDEFGHIJ:"), "{rejects:#?}");

    // A constant is checked like a field: one that breaks `one_of` rejects every row.
    let out = run(&db, &spec, &["--set", "stages.trades.columns.venue.value=XNYS"]);
    let rejected = db.count(
        "SELECT count(*) FROM etl_rejects WHERE stage = 'trades' AND column_name = 'venue' AND rule = 'one_of' AND value = 'XNYS' \
         AND run_id = (SELECT max(run_id) FROM etl_runs WHERE spec_name = 'computed')",
    );
    assert_eq!(rejected, 7, "every row names the constant\n{}", out.evidence());
}
