//! The rule language's types: what each expression yields over a stage's columns, and the
//! errors of one that mixes them (a text compared with a number, `not` of a number, ...).

use indexmap::IndexMap;
use rust_decimal::Decimal;

use super::ast::{BinaryOp, Expr, ExprKind, Func, UnaryOp};
use super::{ExprError, ExprErrorKind};
use crate::spec::model::ColumnType;

/// The type of an expression's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// Any number: integer, decimal or float.
    Number(NumKind),
    /// Text.
    Text,
    /// Boolean.
    Bool,
    /// A date.
    Date,
    /// A timestamp.
    Timestamp,
    /// The null literal: fits anywhere.
    Null,
}

/// The kind of a number: decides how the plan computes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumKind {
    /// A whole number.
    Int,
    /// An exact decimal with this many digits after the point.
    Decimal(u32),
    /// A binary float.
    Float,
}

impl Ty {
    /// The type of a column's values.
    pub fn of_column(t: ColumnType) -> Ty {
        match t {
            ColumnType::String => Ty::Text,
            ColumnType::Int32 | ColumnType::Int64 => Ty::Number(NumKind::Int),
            ColumnType::Decimal { scale, .. } => Ty::Number(NumKind::Decimal(u32::from(scale))),
            ColumnType::Float64 => Ty::Number(NumKind::Float),
            ColumnType::Bool => Ty::Bool,
            ColumnType::Date => Ty::Date,
            ColumnType::Timestamp => Ty::Timestamp,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Ty::Number(_) => "a number",
            Ty::Text => "text",
            Ty::Bool => "a boolean",
            Ty::Date => "a date",
            Ty::Timestamp => "a timestamp",
            Ty::Null => "null",
        }
    }
    fn same_family(self, other: Ty) -> bool {
        matches!(
            (self, other),
            (Ty::Number(_), Ty::Number(_))
                | (Ty::Text, Ty::Text)
                | (Ty::Bool, Ty::Bool)
                | (Ty::Date, Ty::Date)
                | (Ty::Timestamp, Ty::Timestamp)
                | (Ty::Date, Ty::Timestamp)
                | (Ty::Timestamp, Ty::Date)
                | (Ty::Null, _)
                | (_, Ty::Null)
        )
    }
}

/// Combines two number kinds for arithmetic as PostgreSQL's `numeric` does: floats win, a sum
/// keeps the larger scale, a product the sum of the scales, a quotient (even of two integers)
/// is a decimal with at least 16 places' worth of significant digits (the exact places depend
/// on the values; see [`super::Dec::div`]).
pub fn combine(op: BinaryOp, a: NumKind, b: NumKind) -> NumKind {
    use NumKind::*;
    let scale = |k: NumKind| if let Decimal(s) = k { s } else { 0 };
    match (a, b) {
        (Float, _) | (_, Float) => Float,
        _ if op == BinaryOp::Div => Decimal(scale(a).max(scale(b)).max(16)),
        (Int, Int) => Int,
        _ if op == BinaryOp::Mul => Decimal(scale(a) + scale(b)),
        _ => Decimal(scale(a).max(scale(b))),
    }
}

/// The scale a number literal needs.
pub fn literal_kind(n: Decimal) -> NumKind {
    if n.normalize().scale() == 0 { NumKind::Int } else { NumKind::Decimal(n.normalize().scale()) }
}

/// Type-checks an expression against the stage's columns and returns its type.
pub fn type_of(e: &Expr, columns: &IndexMap<String, ColumnType>) -> Result<Ty, ExprError> {
    let err = |msg: String, span, help: Option<String>| ExprError { message: msg, span, help, kind: ExprErrorKind::Type };
    Ok(match &e.kind {
        ExprKind::Column(name) => match columns.get(name) {
            Some(t) => Ty::of_column(*t),
            None => {
                return Err(ExprError {
                    message: format!("unknown column `{name}`"),
                    span: e.span,
                    help: crate::spec::diag::suggest(name, columns.keys().map(String::as_str))
                        .or_else(|| Some(format!("the stage's columns are {}", list(columns.keys())))),
                    kind: ExprErrorKind::UnknownColumn,
                });
            }
        },
        ExprKind::Number(n) => Ty::Number(literal_kind(*n)),
        ExprKind::Text(_) => Ty::Text,
        ExprKind::Bool(_) => Ty::Bool,
        ExprKind::Null => Ty::Null,
        ExprKind::Date(_) => Ty::Date,
        ExprKind::Timestamp(_) => Ty::Timestamp,
        ExprKind::Unary(UnaryOp::Neg, x) => match type_of(x, columns)? {
            t @ (Ty::Number(_) | Ty::Null) => t,
            t => return Err(err(format!("cannot negate {}", t.name()), x.span, None)),
        },
        ExprKind::Unary(UnaryOp::Not, x) => match type_of(x, columns)? {
            Ty::Bool | Ty::Null => Ty::Bool,
            t => return Err(err(format!("`not` needs a boolean, found {}", t.name()), x.span, None)),
        },
        ExprKind::IsNull(x, _) => {
            type_of(x, columns)?;
            Ty::Bool
        }
        ExprKind::InList(x, items, _) => {
            let t = type_of(x, columns)?;
            for i in items {
                let it = type_of(i, columns)?;
                if !t.same_family(it) {
                    return Err(err(format!("cannot compare {} with {}", t.name(), it.name()), i.span, None));
                }
            }
            Ty::Bool
        }
        ExprKind::Binary(op, l, r) => {
            let lt = type_of(l, columns)?;
            let rt = type_of(r, columns)?;
            match op {
                BinaryOp::And | BinaryOp::Or => {
                    for (t, s) in [(lt, l.span), (rt, r.span)] {
                        if !matches!(t, Ty::Bool | Ty::Null) {
                            return Err(err(
                                format!("`{}` joins conditions, but this is {}", op.symbol(), t.name()),
                                s,
                                Some("write a comparison here, e.g. `x > 0`".into()),
                            ));
                        }
                    }
                    Ty::Bool
                }
                _ if op.is_comparison() => {
                    if !lt.same_family(rt) {
                        return Err(err(
                            format!("cannot compare {} with {}", lt.name(), rt.name()),
                            e.span,
                            quote_hint((l, lt), (r, rt)),
                        ));
                    }
                    if matches!(lt, Ty::Bool) && !matches!(op, BinaryOp::Eq | BinaryOp::NotEq) {
                        return Err(err("booleans have no order".into(), e.span, None));
                    }
                    Ty::Bool
                }
                _ => match (lt, rt) {
                    (Ty::Number(a), Ty::Number(b)) => Ty::Number(combine(*op, a, b)),
                    (Ty::Number(a), Ty::Null) | (Ty::Null, Ty::Number(a)) => Ty::Number(a),
                    (Ty::Null, Ty::Null) => Ty::Null,
                    _ => {
                        let (bad, s) = if matches!(lt, Ty::Number(_) | Ty::Null) { (rt, r.span) } else { (lt, l.span) };
                        return Err(err(
                            format!("`{}` needs numbers, but this is {}", op.symbol(), bad.name()),
                            s,
                            None,
                        ));
                    }
                },
            }
        }
        ExprKind::Case(whens, otherwise) => case_type(whens, otherwise.as_deref(), columns)?,
        ExprKind::Call(f, args) => {
            let arity_ok = match f {
                Func::Abs | Func::Length | Func::Date | Func::Upper | Func::Lower | Func::Trim => args.len() == 1,
                Func::Round => args.len() == 1 || args.len() == 2,
                Func::Substr => args.len() == 2 || args.len() == 3,
                Func::Coalesce => !args.is_empty(),
            };
            if !arity_ok {
                return Err(err(format!("wrong number of arguments to `{}`", f.name()), e.span, None));
            }
            let types = args.iter().map(|a| type_of(a, columns)).collect::<Result<Vec<_>, _>>()?;
            match f {
                Func::Abs => match types[0] {
                    t @ (Ty::Number(_) | Ty::Null) => t,
                    t => return Err(err(format!("`abs` needs a number, found {}", t.name()), args[0].span, None)),
                },
                Func::Length => match types[0] {
                    Ty::Text | Ty::Null => Ty::Number(NumKind::Int),
                    t => return Err(err(format!("`length` needs text, found {}", t.name()), args[0].span, None)),
                },
                Func::Round => {
                    let t = types[0];
                    if !matches!(t, Ty::Number(_)) {
                        return Err(err(format!("`round` needs a number, found {}", t.name()), args[0].span, None));
                    }
                    match args.get(1).map(|a| &a.kind) {
                        None => Ty::Number(NumKind::Int),
                        Some(ExprKind::Number(n)) if n.fract().is_zero() && *n >= Decimal::ZERO && *n <= Decimal::from(18) => {
                            let places = u32::try_from(n.mantissa()).unwrap_or(0);
                            match t {
                                Ty::Number(NumKind::Float) => t,
                                _ => Ty::Number(NumKind::Decimal(places)),
                            }
                        }
                        Some(_) => {
                            return Err(err(
                                "`round`'s second argument is a whole number of places, 0 to 18".into(),
                                args[1].span,
                                None,
                            ));
                        }
                    }
                }
                Func::Date => match types[0] {
                    Ty::Date | Ty::Timestamp | Ty::Null => Ty::Date,
                    t => return Err(err(format!("`date` needs a timestamp, found {}", t.name()), args[0].span, None)),
                },
                Func::Upper | Func::Lower | Func::Trim => match types[0] {
                    Ty::Text | Ty::Null => Ty::Text,
                    t => return Err(err(format!("`{}` needs text, found {}", f.name(), t.name()), args[0].span, None)),
                },
                Func::Substr => {
                    if !matches!(types[0], Ty::Text | Ty::Null) {
                        return Err(err(format!("`substr` needs text, found {}", types[0].name()), args[0].span, None));
                    }
                    for (a, t) in args.iter().zip(&types).skip(1) {
                        if !matches!(t, Ty::Number(NumKind::Int) | Ty::Null) {
                            return Err(err(
                                format!("`substr`'s start and length are whole numbers, found {}", t.name()),
                                a.span,
                                Some("write e.g. `substr(code, 1, 3)`: the first character is 1".into()),
                            ));
                        }
                    }
                    Ty::Text
                }
                Func::Coalesce => {
                    let mut t = Ty::Null;
                    for (a, at) in args.iter().zip(&types) {
                        if !t.same_family(*at) {
                            return Err(err(format!("`coalesce` mixes {} and {}", t.name(), at.name()), a.span, None));
                        }
                        t = match (t, *at) {
                            (Ty::Null, x) => x,
                            (Ty::Number(a), Ty::Number(b)) => Ty::Number(combine(BinaryOp::Add, a, b)),
                            (x, _) => x,
                        };
                    }
                    t
                }
            }
        }
    })
}

/// The type of `case when ... then v1 ... else e end`: its conditions are booleans, its values
/// of one family (numbers combine as a sum does).
fn case_type(whens: &[(Expr, Expr)], otherwise: Option<&Expr>, columns: &IndexMap<String, ColumnType>) -> Result<Ty, ExprError> {
    let err = |msg: String, span, help: Option<String>| ExprError { message: msg, span, help, kind: ExprErrorKind::Type };
    let mut t = Ty::Null;
    for (c, _) in whens {
        let ct = type_of(c, columns)?;
        if !matches!(ct, Ty::Bool | Ty::Null) {
            return Err(err(
                format!("`when` needs a condition, but this is {}", ct.name()),
                c.span,
                Some("write a comparison here, e.g. `x > 0`".into()),
            ));
        }
    }
    for v in whens.iter().map(|(_, v)| v).chain(otherwise) {
        let vt = type_of(v, columns)?;
        if !t.same_family(vt) {
            return Err(err(format!("`case` gives {} here and {} before", vt.name(), t.name()), v.span, None));
        }
        t = match (t, vt) {
            (Ty::Null, x) => x,
            (Ty::Number(a), Ty::Number(b)) => Ty::Number(combine(BinaryOp::Add, a, b)),
            (Ty::Date, Ty::Timestamp) => Ty::Timestamp,
            (x, _) => x,
        };
    }
    Ok(t)
}

/// How to fix a comparison of mismatched types, in the user's own terms.
fn quote_hint((l, a): (&Expr, Ty), (r, b): (&Expr, Ty)) -> Option<String> {
    let (text_side, other) = match (a, b) {
        (Ty::Text, _) => (l, b),
        (_, Ty::Text) => (r, a),
        _ => return None,
    };
    let other_side = if std::ptr::eq(text_side, l) { r } else { l };
    Some(match (other, &text_side.kind, &other_side.kind) {
        (Ty::Date, ExprKind::Text(t), _) => format!("write the date as a date literal: date '{t}'"),
        (Ty::Date, _, _) => "compare a date with a date literal, e.g. date '2025-01-31'".into(),
        (Ty::Timestamp, ExprKind::Text(t), _) => format!("write the timestamp as a timestamp literal: timestamp '{t}'"),
        (Ty::Timestamp, _, _) => "compare a timestamp with a timestamp literal, e.g. timestamp '2025-01-31 09:30:00'".into(),
        (Ty::Number(_), ExprKind::Text(t), _) if t.trim().parse::<f64>().is_ok() => {
            format!("`{other_side}` is a number: write the number without quotes, {}", t.trim())
        }
        (Ty::Number(_), _, ExprKind::Number(n)) => format!("`{text_side}` is text: compare it with a quoted text, '{n}'"),
        (Ty::Number(_), _, _) => format!("`{text_side}` is text and `{other_side}` a number: compare text with a quoted text literal"),
        _ => return None,
    })
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names.map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

