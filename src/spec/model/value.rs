//! The spec's values: column types, exact decimal numbers, enum literals and secrets, each with
//! the text it is written as and the schema it is checked by.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value in an enum set or a `one_of` list: an integer or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Literal {
    /// An integer value.
    Int(i64),
    /// A text value.
    Text(String),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
        }
    }
}

/// An exact decimal number, written in YAML as a number or a string (`"0.01"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Number(pub Decimal);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let text = number_or_text(d, "a number")?;
        parse_decimal(&text)
            .map(Number)
            .ok_or_else(|| D::Error::custom(format!("`{text}` is not a decimal number")))
    }
}

/// A YAML number or string, as text (a number keeps the digits YAML wrote); `expected` names
/// what else is wrong.
fn number_or_text<'de, D: Deserializer<'de>>(d: D, expected: &str) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::String(s) => Ok(s),
        other => Err(serde::de::Error::custom(format!("expected {expected}, found {other}"))),
    }
}

/// A column's constant value (`value:`): YAML text, a number (its digits as written) or a
/// boolean, kept as the text every row gets, typed and checked like a CSV field's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constant(pub String);

impl<'de> Deserialize<'de> for Constant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => Ok(Constant(n.to_string())),
            serde_json::Value::String(s) => Ok(Constant(s)),
            serde_json::Value::Bool(b) => Ok(Constant(if b { "t" } else { "f" }.to_string())),
            other => Err(serde::de::Error::custom(format!("expected a text, a number or a boolean, found {other}"))),
        }
    }
}

impl Serialize for Constant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl JsonSchema for Constant {
    fn schema_name() -> Cow<'static, str> {
        "Constant".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The value every row gets, as a CSV field would hold it: a text (often a template, \"{{ run.date }}\"), a number or a boolean.",
            "type": ["string", "number", "boolean"]
        })
    }
}

/// A `min`/`max` limit: a number for a numeric column, a date (`2025-01-31`) or a timestamp
/// (`2025-01-31 09:30:00`) for a date or timestamp column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// A decimal number.
    Number(Number),
    /// A date, as days since 1970-01-01.
    Date(i32),
    /// A timestamp, as microseconds since 1970-01-01 00:00.
    Timestamp(i64),
}

impl Bound {
    /// The number, for a numeric limit.
    pub fn number(self) -> Option<Decimal> {
        match self {
            Bound::Number(n) => Some(n.0),
            _ => None,
        }
    }

    /// The instant in microseconds, for a date or timestamp limit (a date is its midnight).
    pub fn micros(self) -> Option<i64> {
        match self {
            Bound::Date(d) => Some(i64::from(d) * 86_400_000_000),
            Bound::Timestamp(t) => Some(t),
            Bound::Number(_) => None,
        }
    }

    /// What kind of limit it is, for messages.
    pub fn kind(self) -> &'static str {
        match self {
            Bound::Number(_) => "a number",
            Bound::Date(_) => "a date",
            Bound::Timestamp(_) => "a timestamp",
        }
    }
}

impl<'de> Deserialize<'de> for Bound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let text = number_or_text(d, "a number, a date or a timestamp")?;
        if let Some(n) = parse_decimal(&text) {
            return Ok(Bound::Number(Number(n)));
        }
        if let Some(d) = crate::spec::expr::date_literal(&text) {
            return Ok(Bound::Date(d));
        }
        if let Some(t) = crate::spec::expr::timestamp_literal(&text) {
            return Ok(Bound::Timestamp(t));
        }
        Err(D::Error::custom(format!(
            "`{text}` is not a number, a date (2025-01-31) or a timestamp (2025-01-31 09:30:00)"
        )))
    }
}

impl Serialize for Bound {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl JsonSchema for Bound {
    fn schema_name() -> Cow<'static, str> {
        "Bound".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A number for a numeric column (quote it to keep more digits than a double holds); a date `2025-01-31` or a timestamp `2025-01-31 09:30:00` for a date or timestamp column.",
            "type": ["number", "string"]
        })
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Number(n) => n.fmt(f),
            Bound::Date(d) => crate::spec::expr::Value::Date(*d).fmt(f),
            Bound::Timestamp(t) => crate::spec::expr::Value::Timestamp(*t).fmt(f),
        }
    }
}

/// Parses a decimal from plain or scientific notation, exactly.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let t = text.trim();
    Decimal::from_str_exact(t)
        .ok()
        .or_else(|| Decimal::from_scientific(t).ok())
}

/// The decimal places a number's text needs once its trailing zeros go (`1.50` 1, `1.5e1` 0,
/// `1e-30` 30): what a text too long or too small for [`parse_decimal`] holds. None if the text
/// is not `[+-]digits[.digits][e[+-]digits]`.
pub fn decimal_places(text: &str) -> Option<i64> {
    let t = text.trim();
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
        None => (t, 0),
    };
    let (int, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && fraction.is_empty()) || !digits(int) || !digits(fraction) {
        return None;
    }
    let all = format!("{int}{fraction}");
    let zeros = all.len() - all.trim_end_matches('0').len();
    Some((fraction.len() as i64).saturating_sub(exponent).saturating_sub(zeros as i64).max(0))
}

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl JsonSchema for Number {
    fn schema_name() -> Cow<'static, str> {
        "Number".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A decimal number; quote it (\"123456789012345678.91\") to keep more digits than a double holds.",
            "type": ["number", "string"],
            "pattern": "^\\s*[-+]?(\\d+\\.?\\d*|\\.\\d+)([eE][-+]?\\d+)?\\s*$"
        })
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.normalize().fmt(f)
    }
}

/// A secret string (password, key): its Debug and Display never show it.
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"******\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("******")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("******")
    }
}

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// Text, kept exactly as written.
    String,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// Exact decimal with `precision` digits, `scale` of them after the point.
    Decimal {
        /// Total digits, 1 to 38.
        precision: u8,
        /// Digits after the point, 0 to precision.
        scale: u8,
    },
    /// Double-precision float (not for money).
    Float64,
    /// true/false.
    Bool,
    /// Calendar date.
    Date,
    /// Date and time without zone.
    Timestamp,
}

impl ColumnType {
    /// Whether ordering and arithmetic apply.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ColumnType::Int32 | ColumnType::Int64 | ColumnType::Decimal { .. } | ColumnType::Float64
        )
    }
    /// Whether the type is an integer.
    pub fn is_integer(self) -> bool {
        matches!(self, ColumnType::Int32 | ColumnType::Int64)
    }
    /// Whether the type is a date or timestamp.
    pub fn is_temporal(self) -> bool {
        matches!(self, ColumnType::Date | ColumnType::Timestamp)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::String => f.write_str("string"),
            ColumnType::Int32 => f.write_str("int32"),
            ColumnType::Int64 => f.write_str("int64"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::Float64 => f.write_str("float64"),
            ColumnType::Bool => f.write_str("bool"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
        }
    }
}

/// The regular expression the schema gives for a column type.
pub const COLUMN_TYPE_PATTERN: &str =
    r"^(string|int32|int64|float64|bool|date|timestamp|decimal\(\s*[0-9]+\s*,\s*[0-9]+\s*\))$";

impl FromStr for ColumnType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        Ok(match t {
            "string" => ColumnType::String,
            "int32" => ColumnType::Int32,
            "int64" => ColumnType::Int64,
            "float64" => ColumnType::Float64,
            "bool" => ColumnType::Bool,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            _ => {
                let inner = t
                    .strip_prefix("decimal(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("unknown type `{t}`"))?;
                let (p, s) = inner
                    .split_once(',')
                    .ok_or_else(|| format!("`{t}` needs a precision and a scale: decimal(20,2)"))?;
                let precision: u8 = p.trim().parse().map_err(|_| format!("bad precision in `{t}`"))?;
                let scale: u8 = s.trim().parse().map_err(|_| format!("bad scale in `{t}`"))?;
                if !(1..=38).contains(&precision) {
                    return Err(format!("precision of `{t}` must be 1 to 38"));
                }
                if scale > precision {
                    return Err(format!("scale of `{t}` must not exceed its precision {precision}"));
                }
                ColumnType::Decimal { precision, scale }
            }
        })
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for ColumnType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl JsonSchema for ColumnType {
    fn schema_name() -> Cow<'static, str> {
        "ColumnType".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`string`, `int32`, `int64`, `decimal(P,S)`, `float64`, `bool`, `date` or `timestamp`.",
            "type": "string",
            "pattern": COLUMN_TYPE_PATTERN
        })
    }
}

#[cfg(test)]
mod tests {
    use super::decimal_places;

    #[test]
    fn decimal_places_are_counted_in_the_text() {
        for (text, places) in [
            ("1.50", Some(1)),
            ("1.500", Some(1)),
            ("  -1.005 ", Some(3)),
            ("+12", Some(0)),
            ("100e-2", Some(0)),
            ("1.5e1", Some(0)),
            ("1.2345E1", Some(3)),
            ("1e-30", Some(30)),
            (".5", Some(1)),
            ("5.", Some(0)),
            ("1.000000000000000000000000000001", Some(30)),
            ("0.000", Some(0)),
            ("", None),
            (".", None),
            ("1.5e", None),
            ("1,5", None),
            ("NaN", None),
        ] {
            assert_eq!(decimal_places(text), places, "`{text}`");
        }
    }
}
