//! PostgreSQL's binary COPY format, written straight from a batch's Arrow buffers: no value
//! passes through text or a float, and nothing is allocated per row. Decimals go out as
//! PostgreSQL's base-10000 NUMERIC digits, computed from the exact 128-bit integer.

use polars::prelude::{ChunkedArray, DataFrame, DataType, PolarsDataType, TimeUnit};
use polars_arrow::array::{Array, BooleanArray, PrimitiveArray, Utf8ViewArray};
use polars_arrow::bitmap::Bitmap;

use crate::exec::error::ExecError;
use crate::plan::StagePlan;

/// The bytes that open a binary COPY stream: signature, flags, header extension length.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The bytes that close it: a tuple with field count -1.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds between the two epochs.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One column's values, borrowed from the batch.
enum Values<'a> {
    Text(&'a Utf8ViewArray),
    Int32(&'a PrimitiveArray<i32>),
    Int64(&'a PrimitiveArray<i64>),
    Float64(&'a PrimitiveArray<f64>),
    Bool(&'a BooleanArray),
    /// Unscaled value and scale.
    Decimal(&'a PrimitiveArray<i128>, usize),
    /// Days since 1970.
    Date(&'a PrimitiveArray<i32>),
    /// Since 1970 in the unit; the factor to microseconds (negative: divide).
    Timestamp(&'a PrimitiveArray<i64>, i64),
}

fn valid(validity: Option<&Bitmap>, row: usize) -> bool {
    validity.is_none_or(|v| v.get_bit(row))
}

impl Values<'_> {
    fn is_valid(&self, row: usize) -> bool {
        match self {
            Values::Text(a) => valid(a.validity(), row),
            Values::Int32(a) | Values::Date(a) => valid(a.validity(), row),
            Values::Int64(a) | Values::Timestamp(a, _) => valid(a.validity(), row),
            Values::Float64(a) => valid(a.validity(), row),
            Values::Bool(a) => valid(a.validity(), row),
            Values::Decimal(a, _) => valid(a.validity(), row),
        }
    }

    fn write(&self, row: usize, out: &mut Vec<u8>) {
        if !self.is_valid(row) {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            return;
        }
        match self {
            Values::Text(a) => {
                let v = a.value(row).as_bytes();
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
            Values::Int32(a) => field(out, &a.value(row).to_be_bytes()),
            Values::Int64(a) => field(out, &a.value(row).to_be_bytes()),
            Values::Float64(a) => field(out, &a.value(row).to_bits().to_be_bytes()),
            Values::Bool(a) => field(out, &[u8::from(a.value(row))]),
            Values::Date(a) => field(out, &(a.value(row) - PG_EPOCH_DAYS).to_be_bytes()),
            Values::Timestamp(a, factor) => {
                let v = a.value(row);
                let micros = if *factor >= 0 { v * factor } else { v.div_euclid(-factor) };
                field(out, &(micros - PG_EPOCH_MICROS).to_be_bytes());
            }
            Values::Decimal(a, scale) => numeric(a.value(row), *scale, out),
        }
    }
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a NUMERIC field: `unscaled × 10^-scale` as base-10000 digits, weight, sign and
/// display scale (PostgreSQL's `numeric_send` layout).
pub fn numeric(unscaled: i128, scale: usize, out: &mut Vec<u8>) {
    // Decimal digits of |unscaled|, most significant first, with the point `scale` from the
    // right; padded with zeros so both the integer and the fraction part fill whole groups of 4.
    let mut digits = [0u8; 48];
    let mut n = 0;
    let mut m = unscaled.unsigned_abs();
    while m > 0 {
        digits[n] = (m % 10) as u8;
        m /= 10;
        n += 1;
    }
    // digits[0..n] is least significant first. Integer digits: n - scale (or none).
    let int_len = n.saturating_sub(scale);
    let int_groups = int_len.div_ceil(4);
    let frac_groups = scale.div_ceil(4);
    // The decimal digit at position p (p = 0 is the first fraction digit, negative p the integer
    // digits from the point leftwards: -1 is the units).
    let digit_at = |p: isize| -> u16 {
        // index into least-significant-first digits: units is index `scale`.
        let idx = scale as isize - 1 - p;
        if idx < 0 || idx as usize >= n { 0 } else { u16::from(digits[idx as usize]) }
    };
    let mut groups = [0u16; 24];
    let mut count = 0;
    for g in 0..int_groups + frac_groups {
        // Group g covers decimal positions starting at p0 (most significant first).
        let p0 = (g as isize - int_groups as isize) * 4;
        let mut v = 0u16;
        for k in 0..4 {
            v = v * 10 + digit_at(p0 + k);
        }
        groups[count] = v;
        count += 1;
    }
    let mut weight = int_groups as i16 - 1;
    let mut first = 0;
    while first < count && groups[first] == 0 {
        first += 1;
        weight -= 1;
    }
    let mut last = count;
    while last > first && groups[last - 1] == 0 {
        last -= 1;
    }
    let ndigits = last - first;
    if ndigits == 0 {
        weight = 0;
    }
    let sign: u16 = if unscaled < 0 && ndigits > 0 { 0x4000 } else { 0 };
    out.extend_from_slice(&((8 + 2 * ndigits) as i32).to_be_bytes());
    out.extend_from_slice(&(ndigits as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as i16).to_be_bytes());
    for g in &groups[first..last] {
        out.extend_from_slice(&g.to_be_bytes());
    }
}

/// The one Arrow array of a rechunked column.
fn only_chunk<T: PolarsDataType>(ca: &ChunkedArray<T>) -> Result<&T::Array, ExecError> {
    let mut chunks = ca.downcast_iter();
    match (chunks.next(), chunks.next()) {
        (Some(a), None) => Ok(a),
        _ => Err(ExecError::Internal(format!("column {} is not one chunk after rechunk", ca.name()))),
    }
}

fn polars(e: polars::error::PolarsError) -> ExecError {
    ExecError::Polars { what: "encode a batch for COPY", message: e.to_string() }
}

/// Appends a batch's rows (the stage's columns, in order) in binary COPY format, without the
/// stream's header and trailer.
pub fn encode(stage: &StagePlan, batch: &DataFrame, out: &mut Vec<u8>) -> Result<(), ExecError> {
    let series: Vec<polars::prelude::Series> = stage
        .columns
        .iter()
        .map(|c| batch.column(&c.name).map(|col| col.as_materialized_series().rechunk()).map_err(polars))
        .collect::<Result<_, _>>()?;
    let mut values = Vec::with_capacity(series.len());
    for s in &series {
        let v = match s.dtype() {
            DataType::String => Values::Text(only_chunk(s.str().map_err(polars)?)?),
            DataType::Int32 => Values::Int32(only_chunk(s.i32().map_err(polars)?)?),
            DataType::Int64 => Values::Int64(only_chunk(s.i64().map_err(polars)?)?),
            DataType::Float64 => Values::Float64(only_chunk(s.f64().map_err(polars)?)?),
            DataType::Boolean => Values::Bool(only_chunk(s.bool().map_err(polars)?)?),
            DataType::Decimal(_, scale) => Values::Decimal(only_chunk(s.decimal().map_err(polars)?.physical())?, *scale),
            DataType::Date => Values::Date(only_chunk(s.date().map_err(polars)?.physical())?),
            DataType::Datetime(unit, _) => {
                let factor = match unit {
                    TimeUnit::Milliseconds => 1000,
                    TimeUnit::Microseconds => 1,
                    TimeUnit::Nanoseconds => -1000,
                };
                Values::Timestamp(only_chunk(s.datetime().map_err(polars)?.physical())?, factor)
            }
            other => return Err(ExecError::Internal(format!("column {} has type {other}, which COPY cannot encode", s.name()))),
        };
        values.push(v);
    }
    let fields = (values.len() as i16).to_be_bytes();
    out.reserve(batch.height() * (2 + values.len() * 12));
    for row in 0..batch.height() {
        out.extend_from_slice(&fields);
        for v in &values {
            v.write(row, out);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::numeric;

    fn enc(unscaled: i128, scale: usize) -> (i16, i16, u16, i16, Vec<u16>) {
        let mut out = Vec::new();
        numeric(unscaled, scale, &mut out);
        let be = |i: usize| u16::from_be_bytes([out[i], out[i + 1]]);
        let len = i32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        let n = be(4) as usize;
        assert_eq!(len, 8 + 2 * n);
        let digits = (0..n).map(|k| be(12 + 2 * k)).collect();
        (n as i16, be(6) as i16, be(8), be(10) as i16, digits)
    }

    #[test]
    fn numeric_digits_match_postgres() {
        // 12345.67 = 1|2345.6700
        assert_eq!(enc(1_234_567, 2), (3, 1, 0, 2, vec![1, 2345, 6700]));
        // 0.00
        assert_eq!(enc(0, 2), (0, 0, 0, 2, vec![]));
        // -0.05 = 0.0500 → weight -1
        assert_eq!(enc(-5, 2), (1, -1, 0x4000, 2, vec![500]));
        // 10000 (scale 0) = 1|0000 → trailing zero group dropped
        assert_eq!(enc(10_000, 0), (1, 1, 0, 0, vec![1]));
        // 123456789012345678.91
        assert_eq!(enc(12_345_678_901_234_567_891, 2), (6, 4, 0, 2, vec![12, 3456, 7890, 1234, 5678, 9100]));
        // 0.00000001 (scale 8) = 0.0000|0001 → weight -2
        assert_eq!(enc(1, 8), (1, -2, 0, 8, vec![1]));
        // The widest decimal(38,0).
        let max = 10i128.pow(38) - 1;
        let (n, w, _, _, d) = enc(max, 0);
        assert_eq!((n, w), (10, 9));
        assert_eq!(d[0], 99);
    }
}
