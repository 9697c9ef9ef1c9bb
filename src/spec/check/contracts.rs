//! The checks of a stage's contracts (`checks:`): one kind each, names unique, the columns they
//! read of a type they can read, bounds that can hold, and a PostgreSQL target to run them on.

use std::collections::HashSet;

use super::{Checker, parse_duration};
use crate::spec::diag::{Problem, suggest};
use crate::spec::model::{ColumnType, Connection, Stage, TotalOf};
use crate::spec::source::Pointer;

impl Checker<'_> {
    pub(super) fn contracts(&mut self, sname: &str, stage: &Stage, at: &Pointer) {
        if stage.checks.is_empty() {
            return;
        }
        let at = at.key("checks");
        if !matches!(self.spec.connections.get(&stage.target.connection), Some(Connection::Postgres(_))) {
            self.push(
                Problem::new("spec::checks_duckdb", at.clone(), format!("stage `{sname}` has `checks`, which run on PostgreSQL targets only"))
                    .on_key()
                    .label("not with this target")
                    .help("load into a postgres connection, or check the DuckDB table with an analytics query"),
            );
            return;
        }
        let columns: Vec<&str> = stage.columns.keys().map(String::as_str).collect();
        let mut names = HashSet::new();
        for (i, c) in stage.checks.iter().enumerate() {
            let cat = at.index(i);
            if !names.insert(c.name.as_str()) {
                self.push(Problem::new("spec::duplicate_check", cat.key("name"), format!("stage `{sname}` has two checks named `{}`", c.name)).label("named twice"));
            }
            let kinds = [c.row_count.is_some(), c.totals.is_some(), c.freshness.is_some(), c.sql.is_some()].iter().filter(|k| **k).count();
            if kinds != 1 {
                self.push(
                    Problem::new("spec::check_kind", cat.clone(), format!("check `{}` of stage `{sname}` has {kinds} kinds", c.name))
                        .label("exactly one of these")
                        .help("give a check one of `row_count`, `totals`, `freshness` or `sql`; write two checks for two"),
                );
            }
            let column_type = |checker: &mut Checker<'_>, name: &str, at: Pointer| -> Option<ColumnType> {
                match stage.columns.get(name) {
                    Some(col) => Some(col.ty),
                    None => {
                        checker.push(
                            Problem::new("spec::unknown_column", at, format!("check `{}` reads column `{name}`, which stage `{sname}` does not have", c.name))
                                .label("no such column")
                                .help(suggest(name, columns.iter().copied()).unwrap_or_else(|| format!("columns are: {}", columns.join(", ")))),
                        );
                        None
                    }
                }
            };
            if let Some(r) = &c.row_count
                && r.change_from_last.is_some()
                && let Some(first) = self.target_connections().first()
                && first != &stage.target.connection
            {
                self.push(
                    Problem::new("spec::change_from_last_records", cat.key("row_count").key("change_from_last"), format!("check `{}` compares with the last load's count, which the run records keep on connection `{first}`, not on this stage's `{}`", c.name, stage.target.connection))
                        .on_key()
                        .label("cannot be read here")
                        .help("give the stage the first target connection, or bound the count with `min` and `max`"),
                );
            }
            if let Some(r) = &c.row_count {
                if let (Some(min), Some(max)) = (r.min, r.max)
                    && min > max
                {
                    self.push(Problem::new("spec::bad_bounds", cat.key("row_count"), format!("check `{}` wants at least {min} rows and at most {max}", c.name)).label("no count is both"));
                }
                if r.min.is_none() && r.max.is_none() && r.change_from_last.is_none() {
                    self.push(Problem::new("spec::empty", cat.key("row_count"), format!("check `{}` bounds nothing", c.name)).label("add `min`, `max` or `change_from_last`"));
                }
            }
            if let Some(t) = &c.totals
                && [t.equals.is_some(), t.manifest.is_some(), t.trailer.is_some()].iter().filter(|g| **g).count() != 1
            {
                self.push(
                    Problem::new("spec::totals_control", cat.key("totals"), format!("check `{}` needs one control value", c.name))
                        .label("`equals`, `manifest` or `trailer`")
                        .help("give the value (`equals: 1234.56`, or a template) or where the sender states it (`manifest: { file, path }`, `trailer: FIELD`), one of them"),
                );
            }
            if let Some(t) = &c.totals
                && t.trailer.is_some()
                && stage.source.trailer.is_none()
            {
                self.push(
                    Problem::new("spec::totals_trailer", cat.key("totals").key("trailer"), format!("check `{}` reads the trailer line, but the stage's source has none", c.name))
                        .on_key()
                        .label("no `source.trailer`")
                        .help("say how the trailer line starts: `source: { ..., trailer: \"TRL\" }`"),
                );
            }
            if let Some(t) = &c.totals
                && let Some(ty) = column_type(self, &t.column, cat.key("totals").key("column"))
                && t.of == TotalOf::Sum
                && !matches!(ty, ColumnType::Int32 | ColumnType::Int64 | ColumnType::Decimal { .. })
            {
                self.push(
                    Problem::new("spec::bad_type", cat.key("totals").key("column"), format!("check `{}` sums column `{}`, which is not an integer or decimal", c.name, t.column))
                        .label("cannot be summed exactly")
                        .help("sum an integer or decimal column, or count it with `of: count`"),
                );
            }
            if let Some(f) = &c.freshness {
                if let Some(ty) = column_type(self, &f.column, cat.key("freshness").key("column"))
                    && !ty.is_temporal()
                {
                    self.push(Problem::new("spec::bad_type", cat.key("freshness").key("column"), format!("check `{}` looks at column `{}`, which is not a date or timestamp", c.name, f.column)).label("not a date"));
                }
                if parse_duration(&f.max_age).is_none() {
                    self.push(Problem::new("spec::bad_value", cat.key("freshness").key("max_age"), format!("`{}` is not a time span", f.max_age)).label("e.g. 1d, 36h, 90min"));
                }
            }
            if let Some(sql) = &c.sql
                && sql.trim().is_empty()
            {
                self.push(Problem::new("spec::empty", cat.key("sql"), format!("check `{}` has an empty query", c.name)).label("a query returning the offending rows"));
            }
        }
    }
}
