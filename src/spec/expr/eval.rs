//! Evaluating a rule on one row: SQL's three-valued logic, exact decimals with PostgreSQL's
//! `numeric` semantics ([`Dec`]), floats only where a float column is involved; and, for a rule
//! that fails, the values of the comparison that failed, so a reject can show both sides.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::ast::{BinaryOp, Expr, ExprKind, Func, UnaryOp};
use super::number::{Dec, Overflow};

/// A value in a rule: a column's value in the row, a literal, or a computed one.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// SQL null.
    Null,
    /// A boolean.
    Bool(bool),
    /// An exact number (integers are decimals of scale 0).
    Num(Dec),
    /// A binary float (float64 columns, and what computes with them).
    Float(f64),
    /// Text: a column's own, or one a function made.
    Text(Cow<'a, str>),
    /// A date, as days since 1970-01-01.
    Date(i32),
    /// A timestamp, as microseconds since 1970-01-01 00:00.
    Timestamp(i64),
}

impl std::fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Num(d) => write!(f, "{d}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => write!(f, "'{s}'"),
            Value::Date(d) => match chrono::DateTime::from_timestamp(i64::from(*d) * 86_400, 0) {
                Some(t) => write!(f, "{}", t.format("%Y-%m-%d")),
                None => write!(f, "day {d}"),
            },
            Value::Timestamp(us) => match chrono::DateTime::from_timestamp_micros(*us) {
                Some(t) => write!(f, "{}", t.naive_utc()),
                None => write!(f, "{us} µs"),
            },
        }
    }
}

/// Why a rule could not be computed for a row: an overflow or a division by zero, in the
/// sub-expression `at` (its canonical text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError {
    /// The sub-expression that failed.
    pub at: String,
    /// What went wrong.
    pub why: Overflow,
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` cannot be computed: {}", self.at, self.why)
    }
}

/// A rule's outcome for one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// True or null (a null passes, as in an SQL CHECK).
    Pass,
    /// False; `sides` shows the comparison that failed (`` `a` is 1.00, `b` is 2.00 ``).
    Fail {
        /// The failed comparison's two sides and their values, when a comparison failed.
        sides: Option<String>,
    },
    /// Could not be computed: the row is rejected under the rule.
    Error(EvalError),
}

/// Checks a rule on a row: `column` gives each column's value. With a `tolerance`, a rule
/// `a = b` between numbers holds when `|a - b| <= tolerance`.
pub fn check<'a>(rule: &'a Expr, tolerance: Option<Dec>, column: &dyn Fn(&str) -> Value<'a>) -> Verdict {
    let tolerant = match (&rule.kind, tolerance) {
        (ExprKind::Binary(BinaryOp::Eq, l, r), Some(t)) if !t.is_zero() => Some((l, r, t)),
        _ => None,
    };
    if let Some((l, r, t)) = tolerant {
        let sides = (eval(l, column), eval(r, column));
        let (a, b) = match sides {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return Verdict::Error(e),
        };
        let apart = match (&a, &b) {
            (Value::Num(x), Value::Num(y)) => match x.checked_sub(*y) {
                Ok(d) => Value::Num(d.abs()),
                Err(why) => return Verdict::Error(EvalError { at: format!("{l} - {r}"), why }),
            },
            (Value::Null, _) | (_, Value::Null) => return Verdict::Pass,
            (x, y) => match (float(x), float(y)) {
                (Some(x), Some(y)) => Value::Float((x - y).abs()),
                // Not numbers after all: compare exactly.
                _ => return verdict(eval(rule, column), rule, column),
            },
        };
        let within = compare(&apart, &Value::Num(t)).is_some_and(|o| o != Ordering::Greater);
        return if within {
            Verdict::Pass
        } else {
            Verdict::Fail { sides: Some(format!("`{l}` is {a}, `{r}` is {b}: {apart} apart, more than the tolerance {t}")) }
        };
    }
    verdict(eval(rule, column), rule, column)
}

fn verdict<'a>(result: Result<Value<'a>, EvalError>, rule: &'a Expr, column: &dyn Fn(&str) -> Value<'a>) -> Verdict {
    match result {
        Ok(Value::Bool(false)) => Verdict::Fail { sides: failed_comparison(rule, column) },
        Ok(_) => Verdict::Pass,
        Err(e) => Verdict::Error(e),
    }
}

/// The comparison that made a false rule false: the rule itself, or the first false part of
/// an `and`, shown with both sides' values.
fn failed_comparison<'a>(e: &'a Expr, column: &dyn Fn(&str) -> Value<'a>) -> Option<String> {
    match &e.kind {
        ExprKind::Binary(BinaryOp::And, l, r) => {
            if eval(l, column) == Ok(Value::Bool(false)) {
                failed_comparison(l, column)
            } else {
                failed_comparison(r, column)
            }
        }
        ExprKind::Binary(op, l, r) if op.is_comparison() => {
            let (a, b) = (eval(l, column).ok()?, eval(r, column).ok()?);
            Some(format!("`{l}` is {a}, `{r}` is {b}"))
        }
        _ => None,
    }
}

/// Evaluates an expression on a row.
pub fn eval<'a>(e: &'a Expr, column: &dyn Fn(&str) -> Value<'a>) -> Result<Value<'a>, EvalError> {
    let fail = |why: Overflow| EvalError { at: e.to_string(), why };
    Ok(match &e.kind {
        ExprKind::Column(c) => column(c),
        ExprKind::Number(n) => Value::Num(Dec::from_decimal(*n)),
        ExprKind::Text(s) => Value::Text(Cow::Borrowed(s)),
        ExprKind::Bool(b) => Value::Bool(*b),
        ExprKind::Null => Value::Null,
        ExprKind::Date(d) => Value::Date(*d),
        ExprKind::Timestamp(t) => Value::Timestamp(*t),
        ExprKind::Unary(UnaryOp::Neg, x) => match eval(x, column)? {
            Value::Num(d) => Value::Num(d.negated()),
            Value::Float(f) => Value::Float(-f),
            _ => Value::Null,
        },
        ExprKind::Unary(UnaryOp::Not, x) => match eval(x, column)? {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Null,
        },
        ExprKind::IsNull(x, negated) => Value::Bool((eval(x, column)? == Value::Null) != *negated),
        ExprKind::InList(x, items, negated) => {
            let v = eval(x, column)?;
            let mut found = Some(false);
            for i in items {
                match compare(&v, &eval(i, column)?) {
                    Some(Ordering::Equal) => {
                        found = Some(true);
                        break;
                    }
                    None => found = None,
                    Some(_) => {}
                }
            }
            // x in (...) is null when nothing matched and a null was compared.
            match found {
                Some(f) => Value::Bool(f != *negated),
                None => Value::Null,
            }
        }
        ExprKind::Binary(BinaryOp::And, l, r) => match (eval(l, column)?, eval(r, column)?) {
            (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(false),
            (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
            _ => Value::Null,
        },
        ExprKind::Binary(BinaryOp::Or, l, r) => match (eval(l, column)?, eval(r, column)?) {
            (Value::Bool(true), _) | (_, Value::Bool(true)) => Value::Bool(true),
            (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
            _ => Value::Null,
        },
        ExprKind::Binary(op, l, r) if op.is_comparison() => {
            let (a, b) = (eval(l, column)?, eval(r, column)?);
            match compare(&a, &b) {
                None => Value::Null,
                Some(o) => Value::Bool(match op {
                    BinaryOp::Eq => o == Ordering::Equal,
                    BinaryOp::NotEq => o != Ordering::Equal,
                    BinaryOp::Lt => o == Ordering::Less,
                    BinaryOp::LtEq => o != Ordering::Greater,
                    BinaryOp::Gt => o == Ordering::Greater,
                    _ => o != Ordering::Less,
                }),
            }
        }
        ExprKind::Binary(op, l, r) => match (eval(l, column)?, eval(r, column)?) {
            (Value::Num(a), Value::Num(b)) => Value::Num(
                match op {
                    BinaryOp::Add => a.checked_add(b),
                    BinaryOp::Sub => a.checked_sub(b),
                    BinaryOp::Mul => a.checked_mul(b),
                    _ => a.checked_div(b),
                }
                .map_err(fail)?,
            ),
            (a, b) => match (float(&a), float(&b)) {
                (Some(a), Some(b)) => Value::Float(match op {
                    BinaryOp::Add => a + b,
                    BinaryOp::Sub => a - b,
                    BinaryOp::Mul => a * b,
                    _ => a / b,
                }),
                _ => Value::Null,
            },
        },
        ExprKind::Case(whens, otherwise) => {
            for (c, v) in whens {
                if eval(c, column)? == Value::Bool(true) {
                    return eval(v, column);
                }
            }
            match otherwise {
                Some(e) => eval(e, column)?,
                None => Value::Null,
            }
        }
        ExprKind::Call(f, args) => {
            let arg = |i: usize| args.get(i).map_or(Ok(Value::Null), |a| eval(a, column));
            match f {
                Func::Abs => match arg(0)? {
                    Value::Num(d) => Value::Num(d.abs()),
                    Value::Float(x) => Value::Float(x.abs()),
                    _ => Value::Null,
                },
                Func::Length => match arg(0)? {
                    Value::Text(s) => Value::Num(Dec::int(s.chars().count() as i64)),
                    _ => Value::Null,
                },
                Func::Date => match arg(0)? {
                    Value::Date(d) => Value::Date(d),
                    Value::Timestamp(us) => match i32::try_from(us.div_euclid(86_400_000_000)) {
                        Ok(d) => Value::Date(d),
                        Err(_) => return Err(fail(Overflow::TooManyDigits)),
                    },
                    _ => Value::Null,
                },
                Func::Upper | Func::Lower => match arg(0)? {
                    Value::Text(s) => Value::Text(Cow::Owned(change_case(&s, *f == Func::Upper))),
                    _ => Value::Null,
                },
                Func::Trim => match arg(0)? {
                    Value::Text(Cow::Borrowed(s)) => Value::Text(Cow::Borrowed(s.trim_matches(' '))),
                    Value::Text(Cow::Owned(s)) => Value::Text(Cow::Owned(s.trim_matches(' ').to_string())),
                    _ => Value::Null,
                },
                Func::Substr => {
                    let whole = |v: Value<'_>| match v {
                        Value::Num(n) if n.scale() == 0 => Some(i64::try_from(n.mantissa()).unwrap_or(i64::MAX)),
                        _ => None,
                    };
                    let text = arg(0)?;
                    let start = whole(arg(1)?);
                    let length = if args.len() == 3 { whole(arg(2)?) } else { Some(i64::MAX) };
                    match (text, start, length) {
                        (Value::Text(s), Some(start), Some(length)) if start >= 1 && length >= 0 => {
                            let skip = usize::try_from(start - 1).unwrap_or(usize::MAX);
                            let take = usize::try_from(length).unwrap_or(usize::MAX);
                            Value::Text(Cow::Owned(s.chars().skip(skip).take(take).collect()))
                        }
                        _ => Value::Null,
                    }
                }
                Func::Coalesce => {
                    for a in args {
                        let v = eval(a, column)?;
                        if v != Value::Null {
                            return Ok(v);
                        }
                    }
                    Value::Null
                }
                Func::Round => {
                    let places = match arg(1)? {
                        Value::Num(p) if p.scale() == 0 => i32::try_from(p.mantissa()).unwrap_or(i32::MAX),
                        Value::Null if args.len() == 1 => 0,
                        _ => return Ok(Value::Null),
                    };
                    match arg(0)? {
                        Value::Num(d) => Value::Num(d.round(places).map_err(fail)?),
                        Value::Float(x) => {
                            let unit = 10f64.powi(places);
                            Value::Float((x * unit).round() / unit)
                        }
                        _ => Value::Null,
                    }
                }
            }
        }
    })
}

/// Upper or lower case, one character for one (a character whose case takes two, as `ß` in
/// upper case, is kept), as DuckDB's `upper` and `lower` do.
fn change_case(s: &str, upper: bool) -> String {
    s.chars()
        .map(|c| {
            let mut it: Box<dyn Iterator<Item = char>> = if upper { Box::new(c.to_uppercase()) } else { Box::new(c.to_lowercase()) };
            match (it.next(), it.next()) {
                (Some(one), None) => one,
                _ => c,
            }
        })
        .collect()
}

fn float(v: &Value<'_>) -> Option<f64> {
    match *v {
        Value::Num(d) => Some(d.to_f64()),
        Value::Float(f) => Some(f),
        _ => None,
    }
}

/// SQL comparison: None when either side is null. Floats order NaN above every number and
/// equal to itself, as PostgreSQL does.
fn compare(a: &Value<'_>, b: &Value<'_>) -> Option<Ordering> {
    let micros = |d: i32| i64::from(d) * 86_400_000_000;
    match (a, b) {
        (Value::Num(x), Value::Num(y)) => Some(x.cmp(y)),
        (Value::Text(x), Value::Text(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Date(x), Value::Date(y)) => Some(x.cmp(y)),
        (Value::Timestamp(x), Value::Timestamp(y)) => Some(x.cmp(y)),
        (Value::Date(x), Value::Timestamp(y)) => Some(micros(*x).cmp(y)),
        (Value::Timestamp(x), Value::Date(y)) => Some(x.cmp(&micros(*y))),
        (x, y) => {
            let (x, y) = (float(x)?, float(y)?);
            Some(match (x.is_nan(), y.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::expr::parse;

    fn row<'a>(values: &'a [(&'a str, Value<'a>)]) -> impl Fn(&str) -> Value<'a> + 'a {
        move |name| values.iter().find(|(n, _)| *n == name).map_or(Value::Null, |(_, v)| v.clone())
    }

    fn dec(s: &str) -> Value<'static> {
        let d: rust_decimal::Decimal = s.parse().unwrap();
        Value::Num(Dec::from_decimal(d))
    }

    #[test]
    fn a_discounted_total_passes_for_correct_rows_and_shows_both_sides_when_wrong() {
        let rule = parse("total = round(amount * (1 - discount / 100), 2)").unwrap();
        for (amount, discount, total) in [("100.00", "15.50", "84.50"), ("10.00", "0.50", "9.95")] {
            let values = [("amount", dec(amount)), ("discount", dec(discount)), ("total", dec(total))];
            assert_eq!(check(&rule, None, &row(&values)), Verdict::Pass, "{amount} {discount} {total}");
        }
        let values = [("amount", dec("100.00")), ("discount", dec("15.50")), ("total", dec("84.55"))];
        assert_eq!(
            check(&rule, None, &row(&values)),
            Verdict::Fail { sides: Some("`total` is 84.55, `round((amount * (1 - (discount / 100))), 2)` is 84.50".into()) }
        );
    }

    #[test]
    fn nulls_pass_and_three_valued_logic_holds() {
        let rule = parse("a > 0 and b > 0").unwrap();
        let values = [("a", Value::Null), ("b", dec("1"))];
        assert_eq!(check(&rule, None, &row(&values)), Verdict::Pass);
        let values = [("a", Value::Null), ("b", dec("-1"))];
        assert_eq!(check(&rule, None, &row(&values)), Verdict::Fail { sides: Some("`b` is -1, `0` is 0".into()) });
        let rule = parse("a in (1, null)").unwrap();
        let values = [("a", dec("2"))];
        assert_eq!(check(&rule, None, &row(&values)), Verdict::Pass, "2 in (1, null) is null");
    }

    #[test]
    fn an_overflow_or_a_division_by_zero_is_an_error_naming_the_part() {
        let rule = parse("a / b > 0").unwrap();
        let values = [("a", dec("1")), ("b", dec("0.00"))];
        assert_eq!(
            check(&rule, None, &row(&values)),
            Verdict::Error(EvalError { at: "(a / b)".into(), why: Overflow::DivisionByZero })
        );
        let rule = parse("a * a > 0").unwrap();
        let values = [("a", dec("12345678901234567890.5"))];
        assert!(matches!(check(&rule, None, &row(&values)), Verdict::Error(EvalError { why: Overflow::TooManyDigits, .. })));
    }

    #[test]
    fn a_tolerance_allows_that_much_difference_and_no_more() {
        let rule = parse("total = cash + fee").unwrap();
        let t = Some(Dec::from_decimal("0.01".parse().unwrap()));
        let ok = [("total", dec("11.01")), ("cash", dec("10.00")), ("fee", dec("1.00"))];
        assert_eq!(check(&rule, t, &row(&ok)), Verdict::Pass);
        let bad = [("total", dec("11.02")), ("cash", dec("10.00")), ("fee", dec("1.00"))];
        assert!(matches!(check(&rule, t, &row(&bad)), Verdict::Fail { sides: Some(s) } if s.contains("0.02 apart")));
    }

    #[test]
    fn floats_and_decimals_mix_as_in_sql() {
        let rule = parse("price * qty = 7.5").unwrap();
        let values = [("price", Value::Float(2.5)), ("qty", dec("3"))];
        assert_eq!(check(&rule, None, &row(&values)), Verdict::Pass);
    }

    fn owned(v: Value<'_>) -> Value<'static> {
        match v {
            Value::Text(t) => Value::Text(Cow::Owned(t.into_owned())),
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Num(n) => Value::Num(n),
            Value::Float(f) => Value::Float(f),
            Value::Date(d) => Value::Date(d),
            Value::Timestamp(t) => Value::Timestamp(t),
        }
    }

    fn text(v: Value<'_>) -> String {
        match v {
            Value::Text(t) => t.into_owned(),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn text_functions_work_character_by_character() {
        let values = [("code", Value::Text(" Straße ab ".into()))];
        let at = |e: &str| owned(eval(&parse(e).unwrap(), &row(&values)).unwrap());
        assert_eq!(text(at("trim(code)")), "Straße ab");
        assert_eq!(text(at("upper(trim(code))")), "STRAßE AB", "ß has no one-character upper case: kept");
        assert_eq!(text(at("lower(code)")), " straße ab ");
        assert_eq!(text(at("substr(code, 2, 6)")), "Straße");
        assert_eq!(text(at("substr(code, 9)")), "ab ");
        assert_eq!(text(at("substr(code, 20, 2)")), "");
        assert_eq!(at("substr(code, 0, 2)"), Value::Null, "a start below 1 is null");
        assert_eq!(at("substr(code, 1, -1)"), Value::Null, "a negative length is null");
        assert_eq!(at("length(substr(code, 2, 6))"), dec("6"));
    }

    #[test]
    fn date_of_a_timestamp_is_its_day_before_and_after_1970() {
        let ts = |t: &str| Value::Timestamp(crate::spec::expr::timestamp_literal(t).unwrap());
        let values = [("late", ts("2025-12-22 23:59:59.999999")), ("early", ts("1969-12-31 23:00:00"))];
        let at = |e: &str| owned(eval(&parse(e).unwrap(), &row(&values)).unwrap());
        assert_eq!(at("date(late)").to_string(), "2025-12-22");
        assert_eq!(at("date(early)").to_string(), "1969-12-31");
        assert_eq!(at("date(late) = date '2025-12-22'"), Value::Bool(true));
    }

    #[test]
    fn case_takes_the_first_true_arm_else_its_else_else_null() {
        let rule = parse("case when qty < 0 then 'sell' when qty = 0 then 'none' else 'buy' end").unwrap();
        assert_eq!(rule.to_string(), "case when (qty < 0) then 'sell' when (qty = 0) then 'none' else 'buy' end");
        for (qty, side) in [("-5", "sell"), ("0", "none"), ("3", "buy")] {
            let values = [("qty", dec(qty))];
            assert_eq!(text(eval(&rule, &row(&values)).unwrap()), side);
        }
        let values = [("qty", Value::Null)];
        assert_eq!(text(eval(&rule, &row(&values)).unwrap()), "buy", "a null condition is not true");
        let no_else = parse("case when qty > 0 then qty end").unwrap();
        assert_eq!(eval(&no_else, &row(&[("qty", dec("-1"))])).unwrap(), Value::Null);
    }

    #[test]
    fn case_mistakes_are_syntax_errors_at_the_place() {
        let e = parse("case qty when 1 then 2 end").unwrap_err();
        assert!(e.message.contains("expected `when`"), "{}", e.message);
        let e = parse("case when qty > 0 'a' end").unwrap_err();
        assert!(e.message.contains("expected `then`"), "{}", e.message);
        let e = parse("case when qty > 0 then 'a'").unwrap_err();
        assert!(e.message.contains("expected `end`"), "{}", e.message);
    }
}
