//! A stage's contracts (`checks:`), compiled: the bounds each compares and the statement each
//! reads its observed value with, run in the stage's transaction after the merge.

use rust_decimal::Decimal;

use super::compiled::{ContractKind, ContractPlan, TargetPlan};
use super::sql::ident;

/// The last row count of a stage's load for an earlier business date, by the same spec into the
/// same table: a load that committed, or a run that found it unchanged (`$1` spec, `$2` stage,
/// `$3` table, `$4` the run's date).
pub const LAST_ROW_COUNT: &str = "SELECT s.rows_read FROM etl_run_stages s JOIN etl_runs r ON r.run_id = s.run_id
          WHERE r.spec_name = $1 AND s.stage = $2 AND s.target_table = $3 AND s.status IN ('succeeded', 'rejected')
            AND s.replay_of IS NULL AND r.business_date < $4::date
          ORDER BY r.business_date DESC, s.finished_at DESC
          LIMIT 1";

/// Compiles a stage's contracts.
pub fn compile(st: &crate::spec::model::Stage, t: &TargetPlan) -> Vec<ContractPlan> {
    st.checks
        .iter()
        .filter_map(|c| {
            let kind = if let Some(r) = &c.row_count {
                ContractKind::RowCount { min: r.min, max: r.max, change_from_last: r.change_from_last.as_ref().map(|ch| (ch.max_ratio, LAST_ROW_COUNT.to_string())) }
            } else if let Some(tot) = &c.totals {
                ContractKind::Totals {
                    column: tot.column.clone(),
                    of: tot.of,
                    equals: tot.equals.map(|n| n.0),
                    manifest: tot.manifest.as_ref().map(|m| (st.source.connection.clone(), m.file.clone(), m.path.clone())),
                    trailer: tot.trailer,
                    unresolved: tot.manifest.as_ref().map(|m| format!("the manifest {} is read when the run starts", m.file)),
                    tolerance: tot.tolerance.map_or(Decimal::ZERO, |n| n.0),
                }
            } else if let Some(f) = &c.freshness {
                let secs = crate::spec::check::parse_duration(&f.max_age).map_or(0, |d| d.as_secs());
                let col = ident(&f.column);
                ContractKind::Freshness {
                    column: f.column.clone(),
                    max_age: (secs, f.max_age.clone()),
                    newest: format!(
                        "SELECT max({col})::text, coalesce(max({col})::timestamp < $1::date::timestamp - interval '{secs} seconds', true) FROM {}",
                        t.qualified
                    ),
                }
            } else {
                let sql = c.sql.as_deref()?.trim().trim_end_matches(';').trim();
                ContractKind::Sql { query: format!("SELECT count(*) OVER (), row_to_json(r)::text FROM (\n{sql}\n) AS r LIMIT 20") }
            };
            Some(ContractPlan { name: c.name.clone(), severity: c.severity, kind })
        })
        .collect()
}
