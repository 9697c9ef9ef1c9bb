//! Exact decimal arithmetic for rules, with PostgreSQL's `numeric` semantics: a sum keeps the
//! larger scale, a product the sum of the scales, a quotient at least 16 significant digits
//! (and never fewer places than either operand), `round` halves away from zero. A value holds
//! at most 38 digits and 38 places (the widest column type); a result that needs more is an
//! [`Overflow`], never rounded or wrapped.

use std::cmp::Ordering;
use std::fmt;

/// The largest scale a value keeps, and the most digits it holds.
pub const MAX_DIGITS: u32 = 38;

/// A result that does not fit in 38 digits, or a division by zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The exact result needs more than 38 digits.
    TooManyDigits,
    /// The divisor is zero.
    DivisionByZero,
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Overflow::TooManyDigits => write!(f, "the exact result needs more than {MAX_DIGITS} digits"),
            Overflow::DivisionByZero => f.write_str("division by zero"),
        }
    }
}

/// An exact decimal: `mantissa × 10^-scale`. The scale is the one SQL would show (`1.50 * 2.0`
/// is `3.000`); equal values with different scales compare equal.
#[derive(Debug, Clone, Copy)]
pub struct Dec {
    mantissa: i128,
    scale: u32,
}

const LIMIT: i128 = 10i128.pow(MAX_DIGITS) - 1;

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

fn fits(m: i128) -> Option<i128> {
    (-LIMIT..=LIMIT).contains(&m).then_some(m)
}

impl Dec {
    /// `mantissa × 10^-scale`, if it fits.
    pub fn new(mantissa: i128, scale: u32) -> Result<Dec, Overflow> {
        if scale > MAX_DIGITS || fits(mantissa).is_none() {
            return Err(Overflow::TooManyDigits);
        }
        Ok(Dec { mantissa, scale })
    }

    /// A whole number.
    pub fn int(v: i64) -> Dec {
        Dec { mantissa: i128::from(v), scale: 0 }
    }

    /// A `rust_decimal` value (spec literals), exactly.
    pub fn from_decimal(d: rust_decimal::Decimal) -> Dec {
        Dec { mantissa: d.mantissa(), scale: d.scale() }
    }

    /// The digits without the point.
    pub fn mantissa(self) -> i128 {
        self.mantissa
    }

    /// Digits after the point.
    pub fn scale(self) -> u32 {
        self.scale
    }

    /// Whether it is zero.
    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    /// The same value with trailing zero places removed.
    fn trimmed(self) -> Dec {
        let (mut m, mut s) = (self.mantissa, self.scale);
        while s > 0 && m % 10 == 0 {
            m /= 10;
            s -= 1;
        }
        Dec { mantissa: m, scale: s }
    }

    /// The mantissa at a larger scale.
    fn at(self, scale: u32) -> Option<i128> {
        self.mantissa.checked_mul(pow10(scale.checked_sub(self.scale)?)?).and_then(fits)
    }

    /// Runs `op` on the operands; when it overflows, again on the operands with their trailing
    /// zero places removed (the value is the same, only the shown scale shrinks).
    fn retry(self, other: Dec, op: impl Fn(Dec, Dec) -> Option<Dec>) -> Result<Dec, Overflow> {
        op(self, other).or_else(|| op(self.trimmed(), other.trimmed())).ok_or(Overflow::TooManyDigits)
    }

    /// `self + other`, at the larger scale.
    pub fn checked_add(self, other: Dec) -> Result<Dec, Overflow> {
        self.retry(other, |a, b| {
            let s = a.scale.max(b.scale);
            Some(Dec { mantissa: fits(a.at(s)?.checked_add(b.at(s)?)?)?, scale: s })
        })
    }

    /// `self - other`, at the larger scale.
    pub fn checked_sub(self, other: Dec) -> Result<Dec, Overflow> {
        self.checked_add(other.negated())
    }

    /// `-self`.
    pub fn negated(self) -> Dec {
        Dec { mantissa: -self.mantissa, scale: self.scale }
    }

    /// `|self|`.
    pub fn abs(self) -> Dec {
        Dec { mantissa: self.mantissa.abs(), scale: self.scale }
    }

    /// `self × other`, at the sum of the scales.
    pub fn checked_mul(self, other: Dec) -> Result<Dec, Overflow> {
        self.retry(other, |a, b| {
            let s = a.scale + b.scale;
            (s <= MAX_DIGITS).then_some(())?;
            Some(Dec { mantissa: fits(a.mantissa.checked_mul(b.mantissa)?)?, scale: s })
        })
    }

    /// `self / other`, rounded half away from zero at PostgreSQL's scale for the quotient: enough
    /// places for 16 significant digits, at least either operand's scale, at most 38.
    pub fn checked_div(self, other: Dec) -> Result<Dec, Overflow> {
        if other.is_zero() {
            return Err(Overflow::DivisionByZero);
        }
        let scale = div_scale(self, other);
        // quotient mantissa = self.m × 10^(scale - s1 + s2) / other.m, by long division.
        let shift = scale + other.scale - self.scale;
        let (num, den) = (self.mantissa.unsigned_abs(), other.mantissa.unsigned_abs());
        let (mut q, mut r) = (num / den, num % den);
        for _ in 0..shift {
            let r10 = r.checked_mul(10).ok_or(Overflow::TooManyDigits)?;
            q = q.checked_mul(10).and_then(|q| q.checked_add(r10 / den)).ok_or(Overflow::TooManyDigits)?;
            r = r10 % den;
        }
        // r < den <= 2^127, so 2r fits.
        if 2 * r >= den {
            q = q.checked_add(1).ok_or(Overflow::TooManyDigits)?;
        }
        let m = i128::try_from(q).map_err(|_| Overflow::TooManyDigits)?;
        let negative = (self.mantissa < 0) != (other.mantissa < 0);
        Dec::new(if negative { -m } else { m }, scale)
    }

    /// Rounded to `places` (negative: to tens, hundreds, ...), half away from zero, as
    /// PostgreSQL's `round(numeric, int)`; the result shows `places` places (at least 0).
    pub fn round(self, places: i32) -> Result<Dec, Overflow> {
        let target = u32::try_from(places).unwrap_or(0).min(MAX_DIGITS);
        if i64::from(places) >= i64::from(self.scale) {
            return self.at(target).map(|m| Dec { mantissa: m, scale: target }).ok_or(Overflow::TooManyDigits);
        }
        // Drop `self.scale - places` digits, rounding, then show `target` places.
        let drop = u32::try_from(i64::from(self.scale) - i64::from(places)).map_err(|_| Overflow::TooManyDigits)?;
        let Some(unit) = pow10(drop) else { return Ok(Dec { mantissa: 0, scale: target }) };
        let (q, r) = (self.mantissa / unit, self.mantissa % unit);
        let q = if 2 * r.abs() >= unit { q + self.mantissa.signum() } else { q };
        // q counts units of 10^-places; with places < 0 shift it back up to a whole number.
        let m = if places < 0 { q.checked_mul(pow10(places.unsigned_abs()).ok_or(Overflow::TooManyDigits)?) } else { Some(q) };
        Dec::new(m.ok_or(Overflow::TooManyDigits)?, target)
    }

    /// As a float (a rule mixing a decimal with a float column computes in floats, as SQL).
    pub fn to_f64(self) -> f64 {
        self.to_string().parse().unwrap_or(f64::NAN)
    }
}

/// PostgreSQL's `select_div_scale`: the quotient's weight in base-10000 digits estimated from the
/// operands' leading digits, then 16 significant digits' worth of places.
fn div_scale(a: Dec, b: Dec) -> u32 {
    const MIN_SIG_DIGITS: i64 = 16;
    let (w1, d1) = weight_and_first_digit(a);
    let (w2, d2) = weight_and_first_digit(b);
    let mut qweight = w1 - w2;
    if d1 <= d2 {
        qweight -= 1;
    }
    let scale = (MIN_SIG_DIGITS - qweight * 4).max(i64::from(a.scale)).max(i64::from(b.scale)).max(0);
    u32::try_from(scale.min(i64::from(MAX_DIGITS))).unwrap_or(MAX_DIGITS)
}

/// The position of the first nonzero base-10000 digit (0 for the units group) and that digit;
/// (0, 0) for zero, as PostgreSQL counts it.
fn weight_and_first_digit(d: Dec) -> (i64, u128) {
    let m = d.mantissa.unsigned_abs();
    if m == 0 {
        return (0, 0);
    }
    let digits = i64::from(m.ilog10()) + 1;
    let lead = digits - 1 - i64::from(d.scale); // 10^lead <= |d| < 10^(lead+1)
    let weight = lead.div_euclid(4);
    // The first digit is floor(|d| / 10^(4·weight)) = floor(m / 10^(scale + 4·weight)).
    let shift = i64::from(d.scale) + 4 * weight;
    let first = if shift >= 0 { m / 10u128.pow(shift as u32) } else { m * 10u128.pow((-shift) as u32) };
    (weight, first)
}

impl PartialEq for Dec {
    fn eq(&self, other: &Dec) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Dec {}

impl PartialOrd for Dec {
    fn partial_cmp(&self, other: &Dec) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Dec {
    /// By value: whole parts first, then the fractions at the larger scale (which always fits).
    fn cmp(&self, other: &Dec) -> Ordering {
        let split = |d: &Dec| {
            let unit = pow10(d.scale).unwrap_or(i128::MAX);
            (d.mantissa / unit, d.mantissa % unit)
        };
        let ((i1, f1), (i2, f2)) = (split(self), split(other));
        let s = self.scale.max(other.scale);
        let scale_up = |f: i128, from: u32| f * pow10(s - from).unwrap_or(1);
        i1.cmp(&i2).then_with(|| scale_up(f1, self.scale).cmp(&scale_up(f2, other.scale)))
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let s = self.scale as usize;
        if s == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = s + 1);
        let (int, frac) = padded.split_at(padded.len() - s);
        write!(f, "{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Dec {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        Dec::new(format!("{int}{frac}").parse().unwrap(), frac.len() as u32).unwrap()
    }

    /// Each line: PostgreSQL's own answer (`SELECT a op b` on numeric literals, PostgreSQL 15).
    #[test]
    fn arithmetic_is_postgresqls_numeric() {
        let cases = [
            ("15.50", '/', "100", "0.15500000000000000000"),
            ("1", '/', "3", "0.33333333333333333333"),
            ("2", '/', "3", "0.66666666666666666667"),
            ("-2", '/', "3", "-0.66666666666666666667"),
            ("10.00", '/', "4", "2.5000000000000000"),
            ("123456789012.34", '/', "1.5", "82304526008.22666667"),
            ("1", '/', "7", "0.14285714285714285714"),
            ("100", '/', "7", "14.2857142857142857"),
            ("0.001", '/', "1000000", "0.0000000010000000000000000000"),
            ("0", '/', "5", "0.00000000000000000000"),
            ("15.50", '*', "0.01", "0.1550"),
            ("1.50", '*', "2.0", "3.000"),
            ("100.00", '*', "0.845", "84.50000"),
            ("0.1", '+', "0.2", "0.3"),
            ("1.005", '-', "2", "-0.995"),
        ];
        for (a, op, b, want) in cases {
            let got = match op {
                '/' => d(a).checked_div(d(b)),
                '*' => d(a).checked_mul(d(b)),
                '+' => d(a).checked_add(d(b)),
                _ => d(a).checked_sub(d(b)),
            }
            .unwrap();
            assert_eq!(got.to_string(), want, "{a} {op} {b}");
        }
    }

    #[test]
    fn round_halves_away_from_zero() {
        for (v, places, want) in [
            ("84.505", 2, "84.51"),
            ("-84.505", 2, "-84.51"),
            ("9.945", 2, "9.95"),
            ("2.5", 0, "3"),
            ("-2.5", 0, "-3"),
            ("1234.5", -2, "1200"),
            ("1250", -2, "1300"),
            ("1.5", 3, "1.500"),
        ] {
            assert_eq!(d(v).round(places).unwrap().to_string(), want, "round({v}, {places})");
        }
    }

    #[test]
    fn the_issues_rule_holds_for_correct_rows() {
        // total = round(amount * (1 - discount / 100), 2)
        for (amount, discount, total) in [("100.00", "15.50", "84.50"), ("10.00", "0.50", "9.95")] {
            let one = Dec::int(1);
            let side = d(amount).checked_mul(one.checked_sub(d(discount).checked_div(Dec::int(100)).unwrap()).unwrap()).unwrap().round(2).unwrap();
            assert_eq!(side, d(total), "{amount}, {discount}");
        }
    }

    #[test]
    fn overflow_is_an_error_never_a_wrap() {
        let big = d("99999999999999999999999999999999999999");
        assert_eq!(big.checked_add(Dec::int(1)), Err(Overflow::TooManyDigits));
        assert_eq!(big.checked_mul(Dec::int(2)), Err(Overflow::TooManyDigits));
        assert_eq!(Dec::int(1).checked_div(d("0.00")), Err(Overflow::DivisionByZero));
        // Trailing zeros give way before an overflow is declared.
        let a = d("10000000000.0000000000000000000000000");
        assert_eq!(a.checked_mul(a).unwrap(), d("100000000000000000000"));
    }

    #[test]
    fn equal_values_compare_equal_whatever_their_scale() {
        assert_eq!(d("84.50"), d("84.5000"));
        assert!(d("-0.5") < d("0.25"));
        assert!(d("-1.5") < d("-1.25"));
        assert!(d("12345678901234567890.5") > d("12345678901234567890.25"));
    }
}
