//! The Polars expressions that check each row: one per column facet (nullability, length,
//! range, enum, pattern, multiple, uniqueness) and one per rule. Each is true for a row that
//! violates it; a check on a null value passes (nullability is its own check), as in SQL.

use indexmap::IndexMap;
use polars::prelude::{DataType, Expr, LiteralValue, Scalar, col, lit};
use rust_decimal::Decimal;

use super::compiled::{Check, Test};
use crate::spec::expr::{self, BinaryOp, Dec, ExprKind, Ty};
use crate::spec::model::{Bound, Column, ColumnType, Literal, Severity, Spec, Stage};

/// Compiles a stage's checks. `tolerance` is `defaults.tolerance`.
pub fn compile(spec: &Spec, stage: &Stage, tolerance: Decimal) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, c) in &stage.columns {
        column_checks(spec, stage, name, c, &mut out);
    }
    let types: IndexMap<String, ColumnType> = stage.columns.iter().map(|(k, c)| (k.clone(), c.ty)).collect();
    for rule in &stage.rules {
        let Ok(parsed) = expr::parse(&rule.check) else { continue };
        let mut reads = Vec::new();
        expr::columns_of(&parsed, &mut reads);
        let tol = rule.tolerance.map_or(tolerance, |t| t.0);
        let numbers = match &parsed.kind {
            ExprKind::Binary(BinaryOp::Eq, l, _) => matches!(expr::type_of(l, &types), Ok(Ty::Number(_))),
            _ => false,
        };
        let (tolerance, condition) = match &parsed.kind {
            ExprKind::Binary(BinaryOp::Eq, l, r) if tol > Decimal::ZERO && numbers => {
                (Some(Dec::from_decimal(tol)), format!("abs({l} - {r}) <= {tol}"))
            }
            _ => (None, parsed.to_string()),
        };
        out.push(Check {
            rule: rule.name.clone(),
            column: None,
            severity: rule.severity,
            message: rule.message.clone().unwrap_or_else(|| format!("rule {} failed: {condition}", rule.name)),
            condition,
            test: Test::Rule { expr: parsed, tolerance },
            reads,
        });
    }
    out
}

fn column_checks(spec: &Spec, stage: &Stage, name: &str, c: &Column, out: &mut Vec<Check>) {
    let v = || col(name);
    let mut push = |rule: &str, condition: String, violation: Expr, message: String| {
        out.push(Check {
            rule: rule.to_string(),
            column: Some(name.to_string()),
            severity: Severity::Error,
            condition,
            test: Test::Frame(violation.fill_null(lit(false))),
            message,
            reads: vec![name.to_string()],
        });
    };
    if c.ty != ColumnType::String {
        let uncast = super::extract::uncast_column(name);
        push(
            "type",
            format!("{name} is a valid {}", c.ty),
            col(uncast.as_str()).is_not_null(),
            format!("{name} is not a valid {}", c.ty),
        );
    } else {
        // PostgreSQL's text holds no NUL byte: the COPY would fail the whole load on one row.
        // The same file gives the same rejects into DuckDB. (A literal search: a regex costs
        // every text of a first load a regex match.)
        push("type", format!("{name} holds no NUL byte"), v().str().contains_literal(lit("\0")), format!("{name} holds a NUL byte"));
    }
    if !c.nullable {
        let missing = if c.ty == ColumnType::String {
            v().is_null()
        } else {
            v().is_null().and(col(super::extract::uncast_column(name).as_str()).is_null())
        };
        push("not_null", format!("{name} is not null"), missing, format!("{name} is required"));
    }
    if let Some(n) = c.max_length {
        push(
            "max_length",
            format!("length({name}) <= {n}"),
            v().str().len_chars().gt(lit(n)),
            format!("{name} is longer than {n} characters"),
        );
    }
    if let Some(n) = c.min_length {
        push(
            "min_length",
            format!("length({name}) >= {n}"),
            v().str().len_chars().lt(lit(n)),
            format!("{name} is shorter than {n} characters"),
        );
    }
    let typed = |d: Decimal| typed_number(d, c.ty);
    // A limit and the column's value in comparable terms: numbers typed like the column, dates
    // and timestamps as microseconds since the epoch.
    let sides = |b: Bound| match b.micros() {
        Some(us) => (instant(v(), c.ty), lit(us)),
        None => (v(), typed(b.number().unwrap_or_default())),
    };
    if let Some(m) = c.min {
        let (x, m_) = sides(m);
        let what = if m.micros().is_some() { "earlier than" } else { "less than" };
        push("min", format!("{name} >= {m}"), x.lt(m_), format!("{name} is {what} {m}"));
    }
    if let Some(m) = c.exclusive_min {
        let (x, m_) = sides(m);
        let what = if m.micros().is_some() { "later than" } else { "greater than" };
        push("exclusive_min", format!("{name} > {m}"), x.lt_eq(m_), format!("{name} is not {what} {m}"));
    }
    if let Some(m) = c.max {
        let (x, m_) = sides(m);
        let what = if m.micros().is_some() { "later than" } else { "greater than" };
        push("max", format!("{name} <= {m}"), x.gt(m_), format!("{name} is {what} {m}"));
    }
    if let Some(m) = c.exclusive_max {
        let (x, m_) = sides(m);
        let what = if m.micros().is_some() { "earlier than" } else { "less than" };
        push("exclusive_max", format!("{name} < {m}"), x.gt_eq(m_), format!("{name} is not {what} {m}"));
    }
    if let Some(m) = c.multiple_of {
        let violation = match c.ty {
            ColumnType::Decimal { scale, .. } => {
                // Exact: compare in units of the column's scale, as integers.
                // (The spec check allows at most 28 places here, what a Decimal holds.)
                let unit = Decimal::try_from_i128_with_scale(10i128.pow(u32::from(scale)), 0).ok();
                match unit.and_then(|u| Some((u, m.0.checked_mul(u)?))) {
                    // A step finer than the column's scale divides every value.
                    Some((_, steps)) if steps.fract() != Decimal::ZERO => lit(false),
                    Some((unit, steps)) => {
                        let scaled = (v() * number(unit)).cast(DataType::Int128);
                        (scaled % lit_i128(steps.trunc().mantissa())).neq(lit(0))
                    }
                    None => lit(false),
                }
            }
            ColumnType::Float64 => (v() % lit(f64_of(m.0))).neq(lit(0.0)),
            _ => (v() % typed(m.0)).neq(lit(0)),
        };
        push("multiple_of", format!("{name} % {m} = 0"), violation, format!("{name} is not a multiple of {m}"));
    }
    let set = c.enum_name.as_ref().and_then(|e| spec.enums.get(e)).map(|m| m.values().cloned().collect::<Vec<_>>());
    let (rule, values) = match (&c.enum_name, set, &c.one_of) {
        (Some(_), Some(vals), _) => ("enum".to_string(), Some(vals)),
        (_, _, Some(vals)) => ("one_of".to_string(), Some(vals.clone())),
        _ => (String::new(), None),
    };
    if let Some(values) = values {
        let listed: Vec<String> = values.iter().map(ToString::to_string).collect();
        let mut any: Option<Expr> = None;
        for val in &values {
            let lit_v = match val {
                Literal::Int(i) => typed_number(Decimal::from(*i), c.ty),
                Literal::Text(s) => lit(s.clone()),
            };
            let eq = v().eq(lit_v);
            any = Some(match any {
                None => eq,
                Some(a) => a.or(eq),
            });
        }
        let violation = any.map_or(lit(true), |a| a.not());
        push(
            &rule,
            format!("{name} in ({})", listed.join(", ")),
            violation,
            format!("{name} is not one of {}", listed.join(", ")),
        );
    }
    if let Some(p) = &c.pattern {
        let anchored = format!("^(?:{p})$");
        push(
            "pattern",
            format!("{name} matches /{p}/"),
            v().str().contains(lit(anchored), true).not(),
            format!("{name} does not match /{p}/"),
        );
    }
    // Found by the extract's join with the referenced key set; see extract.rs.
    if let Some((table, target)) = c.references.as_ref().and_then(|r| {
        let (s, col) = r.split_once('.')?;
        Some((spec.stages.get(s)?.target.table.clone(), col.to_string()))
    }) {
        push(
            "references",
            format!("{name} exists in {table}.{target}"),
            col(super::extract::missing_column(name).as_str()),
            format!("{name} is not in {table}.{target}"),
        );
    }
    // Repeats are found by DuckDB over the whole file (first occurrence wins); see extract.rs.
    let is_key = stage.target.key.len() == 1 && stage.target.key[0] == name;
    if c.unique && !is_key {
        let dup = super::extract::duplicate_column(name);
        push(
            "unique",
            format!("{name} is unique in the file"),
            col(dup.as_str()).is_not_null(),
            format!("{name} repeats the value of an earlier row"),
        );
        // Found by the extract's join with the values the table holds; see extract.rs.
        if stage.target.mode != crate::spec::model::LoadMode::Replace {
            let table = &stage.target.table;
            push(
                "unique_in_table",
                format!("{name} is not held by another row of {table}"),
                col(super::extract::held_column(name).as_str()).is_not_null(),
                format!("{name} is held by another row of {table}"),
            );
        }
    }
    if !stage.target.key.is_empty() && stage.target.key.last().is_some_and(|k| k == name) {
        let keys = stage.target.key.join(", ");
        let dup = super::extract::duplicate_column("key");
        out.push(Check {
            rule: "duplicate_key".into(),
            column: Some(keys.clone()),
            severity: Severity::Error,
            condition: format!("({keys}) is unique in the file (the key)"),
            test: Test::Frame(col(dup.as_str()).is_not_null()),
            message: format!("key ({keys}) repeats the key of an earlier row"),
            reads: stage.target.key.clone(),
        });
    }
}

/// A date or timestamp column's values as microseconds since the epoch.
fn instant(v: Expr, t: ColumnType) -> Expr {
    let micros = v.cast(DataType::Datetime(polars::prelude::TimeUnit::Microseconds, None)).cast(DataType::Int64);
    match t {
        ColumnType::Date | ColumnType::Timestamp => micros,
        _ => lit(polars::prelude::Null {}),
    }
}

fn f64_of(d: Decimal) -> f64 {
    d.to_string().parse().unwrap_or(f64::NAN)
}

fn lit_i128(v: i128) -> Expr {
    Expr::Literal(LiteralValue::Scalar(Scalar::from(v)))
}

/// An exact number literal: an integer when whole, else a decimal with its own scale.
fn number(d: Decimal) -> Expr {
    let d = d.normalize();
    if d.scale() == 0
        && let Ok(i) = i64::try_from(d.mantissa()) {
            return lit(i);
        }
    Expr::Literal(LiteralValue::Scalar(Scalar::new_decimal(d.mantissa(), 38, d.scale() as usize)))
}

/// A literal typed like the column it is compared with.
fn typed_number(d: Decimal, t: ColumnType) -> Expr {
    match t {
        ColumnType::Int32 => i32::try_from(d.trunc().mantissa()).map_or_else(|_| number(d), lit),
        ColumnType::Int64 => i64::try_from(d.trunc().mantissa()).map_or_else(|_| number(d), lit),
        ColumnType::Float64 => lit(f64_of(d)),
        ColumnType::Decimal { scale, .. } => {
            let mut r = d;
            r.rescale(u32::from(scale).max(d.scale()));
            Expr::Literal(LiteralValue::Scalar(Scalar::new_decimal(r.mantissa(), 38, r.scale() as usize)))
        }
        _ => number(d),
    }
}

#[cfg(test)]
mod tests {
    use polars::prelude::*;

    use crate::spec::expr::{Dec, Value, Verdict, check};
    use crate::spec::{LoadOptions, load_text};

    /// Compiles the checks of a small stage and runs them on a real DataFrame: each row below
    /// breaks exactly the check named in its `expect` column.
    #[test]
    fn compiled_checks_flag_exactly_the_broken_rows() {
        let spec = r#"
version: 1
name: t
connections:
  f: { type: local, path: . }
  d: { type: duckdb, path: t.duckdb }
enums:
  kind: { A: 1, B: 2 }
defaults: { tolerance: 0.01 }
stages:
  s:
    source: { connection: f, key: s.csv }
    target: { connection: d, table: s, key: [id] }
    columns:
      id: { type: string, max_length: 3, pattern: "[a-z]+" }
      kind: { type: int32, enum: kind }
      cash: { type: "decimal(20,2)", min: 0, multiple_of: "0.05" }
      fee: { type: "decimal(20,2)" }
      total: { type: "decimal(20,2)" }
      qty: { type: int64, exclusive_min: 0, multiple_of: 100 }
    rules:
      - { name: total_is_sum, check: "total = cash + fee" }
"#;
        let loaded = load_text("t.yaml", spec, None, &LoadOptions::default()).unwrap_or_else(|e| panic!("{}", e.render(false)));
        let plan = crate::plan::compile(&loaded.spec);
        let checks = &plan.stages[0].checks;

        let rows: [(&str, i32, &str, &str, &str, i64, &str); 9] = [
            ("abc", 1, "10.00", "1.00", "11.00", 100, ""),
            ("abc", 1, "10.00", "1.00", "11.00", 100, "duplicate_key"),
            ("abcd", 1, "10.00", "1.00", "11.00", 100, "max_length"),
            ("ab1", 2, "10.00", "1.00", "11.00", 100, "pattern"),
            ("x", 3, "10.00", "1.00", "11.00", 100, "enum"),
            ("y", 1, "-0.05", "1.00", "0.95", 100, "min"),
            ("z", 1, "10.01", "1.00", "11.01", 100, "multiple_of"),
            ("w", 1, "10.00", "1.00", "11.02", 200, "total_is_sum"),
            ("v", 1, "10.00", "1.00", "11.01", 150, "multiple_of"),
        ];
        type Row<'a> = (&'a str, i32, &'a str, &'a str, &'a str, i64, &'a str);
        let col_of = |f: &dyn Fn(&Row<'_>) -> String| -> Vec<String> { rows.iter().map(f).collect() };
        let dec = |name: &str, v: Vec<String>| Series::new(name.into(), v).cast(&DataType::Decimal(20, 2)).unwrap();
        let df = DataFrame::new_infer_height(vec![
            Series::new("id".into(), col_of(&|r| r.0.to_string())).into(),
            Series::new("kind".into(), rows.iter().map(|r| r.1).collect::<Vec<i32>>()).into(),
            dec("cash", col_of(&|r| r.2.to_string())).into(),
            dec("fee", col_of(&|r| r.3.to_string())).into(),
            dec("total", col_of(&|r| r.4.to_string())).into(),
            Series::new("qty".into(), rows.iter().map(|r| r.5).collect::<Vec<i64>>()).into(),
            // What the extract SQL computes: no cast failures, row 1 repeats row 0's key.
            Series::new("__duplicate_of_key".into(), (0..rows.len()).map(|i| (i == 1).then_some(1i64)).collect::<Vec<_>>()).into(),
        ])
        .unwrap();
        // Facets run on the frame; rules on each row (with the row's values as the executor
        // reads them).
        let frame_test = |c: &super::Check| match &c.test {
            super::Test::Frame(e) => e.clone(),
            super::Test::Rule { .. } => lit(false),
        };
        let exprs: Vec<Expr> = checks.iter().enumerate().map(|(i, c)| frame_test(c).alias(format!("c{i}"))).collect();
        let mut df = df;
        for c in ["kind", "cash", "fee", "total", "qty"] {
            df.with_column(Series::full_null(format!("__uncast_{c}").into(), rows.len(), &DataType::String).into()).unwrap();
        }
        let out = df.lazy().select(exprs).collect().unwrap_or_else(|e| panic!("checks did not evaluate: {e}"));
        for (row, r) in rows.iter().enumerate() {
            let dec = |s: &str| Value::Num(Dec::from_decimal(s.parse().unwrap()));
            let values = [("cash", dec(r.2)), ("fee", dec(r.3)), ("total", dec(r.4))];
            let value_of = |name: &str| values.iter().find(|(n, _)| *n == name).map_or(Value::Null, |(_, v)| v.clone());
            let failed: Vec<&str> = checks
                .iter()
                .enumerate()
                .filter(|(i, c)| match &c.test {
                    super::Test::Rule { expr, tolerance } => !matches!(check(expr, *tolerance, &value_of), Verdict::Pass),
                    super::Test::Frame(_) => out.column(&format!("c{i}")).unwrap().bool().unwrap().get(row) == Some(true),
                })
                .map(|(_, c)| c.rule.as_str())
                .collect();
            let expected: Vec<&str> = if r.6.is_empty() { vec![] } else { vec![r.6] };
            assert_eq!(failed, expected, "row {row} {r:?}");
        }
    }
}
