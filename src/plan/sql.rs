//! SQL text, quoted in one place: identifiers and literals (DuckDB and PostgreSQL agree), a
//! statement with the values it binds, and a statement that reads a file only known at run time.
//! Identifiers that reach here passed the spec's identifier check and are still always quoted;
//! values are bound, never spliced (STYLE habit 7).

use std::fmt;

/// Quotes an identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a text literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A table's name, in its schema when it has one.
pub fn qualified(schema: Option<&str>, table: &str) -> String {
    match schema {
        Some(s) => format!("{}.{}", ident(s), ident(table)),
        None => ident(table),
    }
}

/// A value a statement binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// A text.
    Text(String),
    /// An array of texts.
    Texts(Vec<String>),
}

/// A statement and the values it binds, in order (`$1`, `$2`, ... or `?`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The statement.
    pub sql: String,
    /// Its parameters.
    pub binds: Vec<Bind>,
}

impl Query {
    /// A statement binding texts.
    pub fn new(sql: &str, binds: &[&str]) -> Query {
        Query { sql: sql.to_string(), binds: binds.iter().map(|b| Bind::Text((*b).to_string())).collect() }
    }

    /// The texts it binds (an array bind is skipped).
    pub fn texts(&self) -> Vec<&str> {
        self.binds.iter().filter_map(|b| if let Bind::Text(t) = b { Some(t.as_str()) } else { None }).collect()
    }
}

/// How `etl plan` shows a statement: its text, then what it binds.
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};", self.sql)?;
        if !self.binds.is_empty() {
            let shown: Vec<String> = self
                .binds
                .iter()
                .enumerate()
                .map(|(i, b)| match b {
                    Bind::Text(t) => format!("${} = {}", i + 1, literal(t)),
                    Bind::Texts(ts) => format!("${} = ARRAY[{}]", i + 1, ts.iter().map(|t| literal(t)).collect::<Vec<_>>().join(", ")),
                })
                .collect();
            write!(f, "  -- {}", shown.join(", "))?;
        }
        Ok(())
    }
}

/// A statement that reads a file whose path is only known at run time (a downloaded object, an
/// exported lookup, a batch): the path goes in as a quoted literal where the file belongs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSql {
    before: String,
    after: String,
}

impl FileSql {
    /// The statement `before` 'path' `after`.
    pub fn new(before: impl Into<String>, after: impl Into<String>) -> FileSql {
        FileSql { before: before.into(), after: after.into() }
    }

    /// The statement reading `path`.
    pub fn with_file(&self, path: &str) -> String {
        format!("{}{}{}", self.before, literal(path), self.after)
    }

    /// The statement reading `path` with its `LINE_LIMIT` and `BUFFER_SIZE`
    /// (`extract::read_limits`: a lookup's read, a DuckDB target's spooled rows).
    pub fn with_file_limits(&self, path: &str, (line, buffer): (u64, u64)) -> String {
        // The limits go into the statement's own text, never into the path's.
        let after = self.after.replace(LINE_LIMIT, &line.to_string()).replace(BUFFER_SIZE, &buffer.to_string());
        format!("{}{}{after}", self.before, literal(path))
    }
}

/// Where a read of a file etl or the target wrote says its line limit, known once the file is
/// written (`etl plan` shows it so).
pub const LINE_LIMIT: &str = "{longest line}";

/// Where such a read says its buffer's size (see `LINE_LIMIT`).
pub const BUFFER_SIZE: &str = "{buffer}";

/// How `etl plan` shows it: `'{file}'` where the path goes.
impl fmt::Display for FileSql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}'{{file}}'{}", self.before, self.after)
    }
}

/// A statement run in passes over a share of the hashes each, their number only known at run
/// time: `filter` (`hash(...)`) goes in as `filter % passes = pass` between each two `parts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassSql {
    parts: Vec<String>,
    hashed: String,
}

impl PassSql {
    /// The statement `parts[0]` filter `parts[1]` filter ... of the hash `hashed`.
    pub fn new(parts: Vec<String>, hashed: impl Into<String>) -> PassSql {
        PassSql { parts, hashed: hashed.into() }
    }

    /// The statement of pass `pass` (from 0) of `passes`.
    pub fn pass(&self, passes: u64, pass: u64) -> String {
        self.parts.join(&format!("{} % {passes} = {pass}", self.hashed))
    }
}

/// How `etl plan` shows it: `{passes}` and `{pass}` where the numbers go.
impl fmt::Display for PassSql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.parts.join(&format!("{} % {{passes}} = {{pass}}", self.hashed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_quotes_and_a_file_goes_in_as_a_literal() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(qualified(Some("s"), "t"), "\"s\".\"t\"");
        let read = FileSql::new("SELECT * FROM read_csv(", ", header = true)");
        assert_eq!(read.with_file("/tmp/o'k.csv"), "SELECT * FROM read_csv('/tmp/o''k.csv', header = true)");
        assert_eq!(read.to_string(), "SELECT * FROM read_csv('{file}', header = true)");
        let limited = FileSql::new("SELECT * FROM read_csv(", format!(", max_line_size = {LINE_LIMIT}, buffer_size = {BUFFER_SIZE})"));
        assert_eq!(
            limited.with_file_limits("/tmp/{buffer}/a.csv", (3, 8)),
            "SELECT * FROM read_csv('/tmp/{buffer}/a.csv', max_line_size = 3, buffer_size = 8)"
        );
        assert_eq!(Query::new("SELECT $1", &["x"]).to_string(), "SELECT $1;  -- $1 = 'x'");
    }
}
