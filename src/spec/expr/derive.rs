//! What a computed column (`expr:`) may compute: the rule language without division, each
//! decimal within the 38 digits DuckDB computes with. Its SQL is then exact and cannot overflow:
//! a decimal never passes through a float, and no value of the columns it reads breaks it.

use indexmap::IndexMap;

use super::ast::{BinaryOp, Expr, ExprKind, Func, UnaryOp};
use super::{ExprError, ExprErrorKind};
use crate::spec::model::ColumnType;

/// The most digits a computed decimal may have.
pub const MAX_COMPUTED_DIGITS: u32 = 38;

/// The digits `(precision, scale)` a number's value in `e` can take (integers as decimals of
/// scale 0: 10 digits for `int32`, 19 for `int64`); `None` for a float, a null or not a number.
/// Refuses a division, and a sub-expression that could need more than 38 digits.
pub fn digits(e: &Expr, columns: &IndexMap<String, ColumnType>) -> Result<Option<(u32, u32)>, ExprError> {
    let sub = |x: &Expr| digits(x, columns);
    let d = match &e.kind {
        ExprKind::Column(c) => match columns.get(c) {
            Some(ColumnType::Int32) => Some((10, 0)),
            Some(ColumnType::Int64) => Some((19, 0)),
            Some(ColumnType::Decimal { precision, scale }) => Some((u32::from(*precision), u32::from(*scale))),
            _ => None,
        },
        ExprKind::Number(n) => Some(literal_digits(*n)),
        ExprKind::Text(_) | ExprKind::Bool(_) | ExprKind::Null | ExprKind::Date(_) | ExprKind::Timestamp(_) => None,
        ExprKind::Unary(UnaryOp::Neg, x) => sub(x)?,
        ExprKind::Unary(UnaryOp::Not, x) | ExprKind::IsNull(x, _) => {
            sub(x)?;
            None
        }
        ExprKind::InList(x, items, _) => {
            sub(x)?;
            for i in items {
                sub(i)?;
            }
            None
        }
        ExprKind::Binary(BinaryOp::Div, _, _) => {
            return Err(ExprError {
                message: format!("`{e}` divides: a computed column cannot divide, as its SQL would compute the quotient in binary floating point"),
                span: e.span,
                help: Some("compute the quotient in the database (a view), or check it with a rule, whose division is exact".into()),
                kind: ExprErrorKind::Type,
            });
        }
        ExprKind::Binary(op @ (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul), l, r) => match (sub(l)?, sub(r)?) {
            (Some((p1, s1)), Some((p2, s2))) if *op == BinaryOp::Mul => Some((p1 + p2, s1 + s2)),
            (Some((p1, s1)), Some((p2, s2))) => {
                let s = s1.max(s2);
                Some(((p1 - s1).max(p2 - s2) + s + 1, s))
            }
            _ => None,
        },
        ExprKind::Binary(_, l, r) => {
            sub(l)?;
            sub(r)?;
            None
        }
        ExprKind::Call(Func::Abs, args) => match args.first() {
            Some(x) => sub(x)?,
            None => None,
        },
        ExprKind::Call(Func::Round, args) => {
            let x = match args.first() {
                Some(x) => sub(x)?,
                None => None,
            };
            let places = match args.get(1).map(|a| &a.kind) {
                Some(ExprKind::Number(n)) => u32::try_from(n.mantissa()).unwrap_or(0),
                _ => 0,
            };
            // Rounding may carry into one more whole digit (9.99 to 10.0).
            x.map(|(p, s)| if places >= s { (p, s) } else { (p - s + places + 1, places) })
        }
        ExprKind::Call(Func::Length, args) => {
            for a in args {
                sub(a)?;
            }
            Some((19, 0))
        }
        ExprKind::Call(Func::Coalesce, args) => widest(args.iter().map(sub).collect::<Result<Vec<_>, _>>()?),
        ExprKind::Call(_, args) => {
            for a in args {
                sub(a)?;
            }
            None
        }
        ExprKind::Case(whens, otherwise) => {
            let mut values = Vec::new();
            for (c, v) in whens {
                sub(c)?;
                values.push(sub(v)?);
            }
            if let Some(o) = otherwise {
                values.push(sub(o)?);
            }
            widest(values)
        }
    };
    if let Some((p, _)) = d
        && p > MAX_COMPUTED_DIGITS
    {
        return Err(ExprError {
            message: format!("`{e}` can reach {p} digits, more than the {MAX_COMPUTED_DIGITS} a computed column computes with"),
            span: e.span,
            help: Some("round a factor first, or give the columns it reads fewer digits".into()),
            kind: ExprErrorKind::Type,
        });
    }
    Ok(d)
}

/// The digits of a number literal: `0.05` is (2, 2), `100` is (3, 0).
pub fn literal_digits(n: rust_decimal::Decimal) -> (u32, u32) {
    let n = n.normalize();
    let whole = n.mantissa().unsigned_abs().to_string().len() as u32;
    (whole.max(n.scale()).max(1), n.scale())
}

/// The type holding every one of several numbers' values (the nulls and floats left out).
fn widest(values: Vec<Option<(u32, u32)>>) -> Option<(u32, u32)> {
    let values: Vec<(u32, u32)> = values.into_iter().flatten().collect();
    let scale = values.iter().map(|(_, s)| *s).max()?;
    let whole = values.iter().map(|(p, s)| p - s).max()?;
    Some((whole + scale, scale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::expr::parse;

    fn cols() -> IndexMap<String, ColumnType> {
        let mut m = IndexMap::new();
        m.insert("cash".into(), ColumnType::Decimal { precision: 20, scale: 2 });
        m.insert("wide".into(), ColumnType::Decimal { precision: 30, scale: 4 });
        m.insert("qty".into(), ColumnType::Int64);
        m.insert("code".into(), ColumnType::String);
        m
    }

    fn of(text: &str) -> Result<Option<(u32, u32)>, ExprError> {
        digits(&parse(text).unwrap(), &cols())
    }

    #[test]
    fn sums_and_products_widen_as_sql_does() {
        assert_eq!(of("cash + 0.005").unwrap(), Some((22, 3)));
        assert_eq!(of("cash * 1000").unwrap(), Some((24, 2)));
        assert_eq!(of("cash * 2").unwrap(), Some((21, 2)));
        assert_eq!(of("round(cash * 1.5, 2)").unwrap(), Some((22, 2)));
        assert_eq!(of("coalesce(cash, qty)").unwrap(), Some((21, 2)));
        assert_eq!(of("length(code) + 1").unwrap(), Some((20, 0)));
        assert_eq!(of("upper(code)").unwrap(), None);
    }

    #[test]
    fn a_division_or_a_product_past_38_digits_is_refused_naming_its_part() {
        let e = of("cash / 2").unwrap_err();
        assert!(e.message.contains("cannot divide"), "{}", e.message);
        assert_eq!(e.span, (0, 8));
        let e = of("cash * qty").unwrap_err();
        assert!(e.message.contains("39 digits"), "{}", e.message);
        let e = of("case when qty > 0 then wide * cash else 0 end").unwrap_err();
        assert!(e.message.contains("50 digits"), "{}", e.message);
        assert_eq!(&"case when qty > 0 then wide * cash else 0 end"[e.span.0..e.span.1], "wide * cash");
    }
}
