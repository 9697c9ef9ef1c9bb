//! The DuckDB SQL of a computed column (`expr:`) over the typed values of the columns it reads:
//! each operator and function as the rule language defines it (`spec::expr::eval`), integers
//! and number literals given exact decimal types so every sum and product is an exact DECIMAL
//! (`spec::expr::digits` has bounded them within 38 digits), and the result cast to the
//! column's type, a value that does not fit kept as text for its reject.

use indexmap::IndexMap;

use super::sql::{ident, literal};
use crate::spec::expr::{self, BinaryOp, Expr, ExprKind, Func, UnaryOp, Value};
use crate::spec::model::ColumnType;

/// The SQL computing `e`; `columns` are the types of the columns it may read.
pub fn sql(e: &Expr, columns: &IndexMap<String, ColumnType>) -> String {
    let s = |x: &Expr| sql(x, columns);
    match &e.kind {
        ExprKind::Column(c) => match columns.get(c) {
            Some(ColumnType::Int32) => format!("CAST({} AS DECIMAL(10,0))", ident(c)),
            Some(ColumnType::Int64) => format!("CAST({} AS DECIMAL(19,0))", ident(c)),
            _ => ident(c),
        },
        ExprKind::Number(n) => {
            let (p, sc) = expr::literal_digits(*n);
            format!("CAST({} AS DECIMAL({p},{sc}))", n.normalize())
        }
        ExprKind::Text(t) => literal(t),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Null => "NULL".into(),
        ExprKind::Date(d) => format!("DATE '{}'", Value::Date(*d)),
        ExprKind::Timestamp(t) => format!("TIMESTAMP '{}'", Value::Timestamp(*t)),
        ExprKind::Unary(UnaryOp::Neg, x) => format!("(-{})", s(x)),
        ExprKind::Unary(UnaryOp::Not, x) => format!("(NOT {})", s(x)),
        ExprKind::IsNull(x, negated) => format!("({} IS {}NULL)", s(x), if *negated { "NOT " } else { "" }),
        ExprKind::InList(x, items, negated) => {
            let items: Vec<String> = items.iter().map(s).collect();
            format!("({} {}IN ({}))", s(x), if *negated { "NOT " } else { "" }, items.join(", "))
        }
        // DuckDB multiplies two decimals of at most 18 digits in 64 bits (their product typed
        // DECIMAL(18,s)), and a longer product fails the whole read ("Overflow in
        // multiplication"): the left side widened to 38 digits asks for the product's own width
        // (`expr::digits` bounded it within 38).
        ExprKind::Binary(BinaryOp::Mul, l, r) => {
            let left = match (expr::digits(l, columns), expr::digits(r, columns)) {
                (Ok(Some((p1, s1))), Ok(Some((p2, _)))) if p1 + p2 > 18 => format!("CAST({} AS DECIMAL(38,{s1}))", s(l)),
                _ => s(l),
            };
            format!("({left} * {})", s(r))
        }
        ExprKind::Binary(op, l, r) => {
            let symbol = match op {
                BinaryOp::Add => "+",
                BinaryOp::Sub => "-",
                BinaryOp::Mul => "*",
                BinaryOp::Div => "/",
                BinaryOp::Eq => "=",
                BinaryOp::NotEq => "<>",
                BinaryOp::Lt => "<",
                BinaryOp::LtEq => "<=",
                BinaryOp::Gt => ">",
                BinaryOp::GtEq => ">=",
                BinaryOp::And => "AND",
                BinaryOp::Or => "OR",
            };
            format!("({} {symbol} {})", s(l), s(r))
        }
        ExprKind::Call(f, args) => {
            let a: Vec<String> = args.iter().map(s).collect();
            match f {
                Func::Abs => format!("abs({})", a[0]),
                Func::Coalesce => format!("coalesce({})", a.join(", ")),
                Func::Length => format!("CAST(length({}) AS DECIMAL(19,0))", a[0]),
                // Its places are a whole literal (the spec check sees to it).
                Func::Round => match args.get(1).and_then(whole) {
                    Some(places) => format!("round({}, {places})", a[0]),
                    None => format!("round({})", a[0]),
                },
                Func::Date => format!("CAST({} AS DATE)", a[0]),
                Func::Upper => format!("upper({})", a[0]),
                Func::Lower => format!("lower({})", a[0]),
                Func::Trim => format!("trim({})", a[0]),
                Func::Substr => {
                    // The rule language's substr: null for a start below 1 or a negative length
                    // (DuckDB's own counts a negative start from the end). A literal that is in
                    // range needs no guard.
                    let mut guards = Vec::new();
                    let mut bigint = |i: usize, least: i64| match args.get(i).and_then(whole) {
                        Some(n) if n >= least => n.to_string(),
                        _ => {
                            let v = format!("TRY_CAST({} AS BIGINT)", a[i]);
                            guards.push(format!("{v} >= {least}"));
                            v
                        }
                    };
                    let start = bigint(1, 1);
                    let call = match a.len() {
                        3 => format!("substring({}, {start}, {})", a[0], bigint(2, 0)),
                        _ => format!("substring({}, {start})", a[0]),
                    };
                    if guards.is_empty() { call } else { format!("CASE WHEN {} THEN {call} END", guards.join(" AND ")) }
                }
            }
        }
        ExprKind::Case(whens, otherwise) => {
            let mut out = "CASE".to_string();
            for (c, v) in whens {
                out.push_str(&format!(" WHEN {} THEN {}", s(c), s(v)));
            }
            if let Some(o) = otherwise {
                out.push_str(&format!(" ELSE {}", s(o)));
            }
            out.push_str(" END");
            out
        }
    }
}

/// A whole-number literal's value.
fn whole(e: &Expr) -> Option<i64> {
    match &e.kind {
        ExprKind::Number(n) if n.fract().is_zero() => i64::try_from(n.mantissa() / 10i128.pow(n.scale())).ok(),
        _ => None,
    }
}
