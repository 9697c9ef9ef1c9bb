//! The CSV the engine writes itself: batches for DuckDB's COPY and rejects for PostgreSQL's (RFC
//! 4180, text always quoted so an empty text is not NULL).

/// Appends a CSV field in double quotes, doubling the quotes inside.
pub fn push_quoted(out: &mut Vec<u8>, v: &str) {
    out.push(b'"');
    for b in v.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Appends one CSV record (None is an empty unquoted field, text is always quoted).
pub fn write_record(out: &mut Vec<u8>, fields: &[Option<String>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if let Some(v) = f {
            push_quoted(out, v);
        }
    }
    out.push(b'\n');
}
