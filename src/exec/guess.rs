//! `etl init`'s reading of a sample: the CSV dialect DuckDB's sniffer finds, then every column
//! read as text and each type proposed conservatively from what all of its sampled values are
//! (a code such as `000051` stays text; decimals get a precision and scale wide enough for the
//! sample; timestamps the one format every value has), with the evidence for each choice.

use super::error::ExecError;
use super::extract::Reader;

/// What a sample of a CSV file shows.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The field delimiter.
    pub delimiter: String,
    /// The quote character.
    pub quote: String,
    /// Rows sampled.
    pub rows: u64,
    /// Each column, in file order.
    pub columns: Vec<Guess>,
}

/// One column's proposed type.
#[derive(Debug, Clone)]
pub struct Guess {
    /// Its header.
    pub header: String,
    /// The spec type: `string`, `int64`, `decimal(P,S)`, `date`, `timestamp`, `bool`.
    pub ty: String,
    /// A date or timestamp's format.
    pub format: Option<String>,
    /// Whether a sampled value is empty.
    pub nullable: bool,
    /// Whether every sampled value is there and different from the others.
    pub unique: bool,
    /// Why: what the sampled values are.
    pub evidence: String,
}

/// Timestamp layouts tried (strftime, as the spec and DuckDB both write them): each with or
/// without fractional seconds.
const TIMESTAMPS: [&str; 2] = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"];

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl Reader {
    /// Reads up to `limit` rows of the CSV file at `path` and proposes each column's type.
    pub fn guess(&self, path: &std::path::Path, limit: u64) -> Result<Sample, ExecError> {
        let fail = ExecError::duckdb("read the sample");
        let file = literal(&path.display().to_string());
        let (delimiter, quote, escape, header): (String, String, String, bool) = self
            .connection()
            .query_row(&format!("SELECT Delimiter, Quote, Escape, HasHeader FROM sniff_csv({file}, sample_size = 20480)"), [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(&fail)?;
        // The sniffer says `(empty)` where the sample shows none: the CSV defaults then.
        let none = |v: &str| v.is_empty() || v == "(empty)";
        let quote = if none(&quote) { "\"".to_string() } else { quote };
        let escape = if none(&escape) { quote.clone() } else { escape };
        self.connection()
            .execute_batch(&format!(
                "CREATE OR REPLACE TEMP TABLE __sample AS SELECT * FROM read_csv({file}, delim = {}, quote = {}, escape = {}, header = {header}, all_varchar = true, auto_detect = false, nullstr = '') LIMIT {limit}",
                literal(&delimiter),
                literal(&quote),
                literal(&escape)
            ))
            .or_else(|_| {
                // Columns DuckDB must find by itself (auto_detect = false needs them named).
                self.connection().execute_batch(&format!(
                    "CREATE OR REPLACE TEMP TABLE __sample AS SELECT * FROM read_csv({file}, delim = {}, quote = {}, escape = {}, header = {header}, all_varchar = true, nullstr = '') LIMIT {limit}",
                    literal(&delimiter),
                    literal(&quote),
                    literal(&escape)
                ))
            })
            .map_err(&fail)?;
        let mut stmt = self.connection().prepare("SELECT column_name FROM (DESCRIBE __sample)").map_err(&fail)?;
        let headers: Vec<String> = stmt.query_map([], |r| r.get(0)).map_err(&fail)?.collect::<Result<_, _>>().map_err(&fail)?;
        let rows: u64 = self.connection().query_row("SELECT count(*) FROM __sample", [], |r| r.get(0)).map_err(&fail)?;
        let mut columns = Vec::new();
        for h in headers {
            columns.push(self.guess_column(&h, rows)?);
        }
        Ok(Sample { delimiter, quote, rows, columns })
    }

    fn guess_column(&self, header: &str, rows: u64) -> Result<Guess, ExecError> {
        let fail = ExecError::duckdb("read the sample");
        let c = ident(header);
        let int = format!("regexp_full_match({c}, '-?(0|[1-9][0-9]*)')");
        let dec = format!("regexp_full_match({c}, '-?(0|[1-9][0-9]*)\\.[0-9]+')");
        // Per layout: the values it reads (with or without a fraction), and those with one.
        let ts: Vec<String> = TIMESTAMPS
            .iter()
            .map(|f| {
                let (plain, frac) = (literal(f), literal(&format!("{f}.%f")));
                format!(
                    "count(*) FILTER (WHERE try_strptime({c}, {plain}) IS NOT NULL OR try_strptime({c}, {frac}) IS NOT NULL), count(*) FILTER (WHERE try_strptime({c}, {frac}) IS NOT NULL)"
                )
            })
            .collect();
        let sql = format!(
            "SELECT count({c}), count(DISTINCT {c}), count(*) FILTER (WHERE {int}), count(*) FILTER (WHERE {dec}), \
             coalesce(max(length(split_part(ltrim({c}, '-'), '.', 1))) FILTER (WHERE {int} OR {dec}), 0), \
             coalesce(max(length(split_part({c}, '.', 2))) FILTER (WHERE {dec}), 0), \
             count(*) FILTER (WHERE try_strptime({c}, '%Y-%m-%d') IS NOT NULL AND length({c}) = 10), \
             count(*) FILTER (WHERE lower({c}) IN ('true', 'false')), {} FROM __sample",
            ts.join(", ")
        );
        let stmt_row = self.connection().query_row(&sql, [], |r| {
            let mut v: Vec<u64> = Vec::new();
            for i in 0..8 + 2 * TIMESTAMPS.len() {
                v.push(r.get(i)?);
            }
            Ok(v)
        });
        let v = stmt_row.map_err(&fail)?;
        let (n, distinct, ints, decs, int_digits, scale, dates, bools) = (v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
        let all = |k: u64| n > 0 && k == n;
        let share = |what: &str| format!("{n} of {rows} sampled values {what}");
        let (ty, format, evidence) = if n == 0 {
            ("string".to_string(), None, format!("every one of {rows} sampled values is empty"))
        } else if all(ints) && int_digits <= 18 {
            ("int64".into(), None, share("are whole numbers without leading zeros"))
        } else if all(ints + decs) && int_digits + scale <= 36 {
            // Room for values larger than the sample's: two more integer digits, at least 18.
            let precision = (int_digits + scale + 2).max(18).min(38);
            (format!("decimal({precision},{scale})"), None, share(&format!("are decimals with at most {int_digits} integer digits and {scale} places")))
        } else if let Some((f, fractions)) = TIMESTAMPS.iter().zip(v[8..].chunks(2)).find(|(_, k)| all(k[0])).map(|(f, k)| (*f, k[1])) {
            let format = if fractions > 0 { format!("{f}%.f") } else { f.to_string() };
            ("timestamp".into(), Some(format.clone()), share(&format!("are timestamps in the format {format}")))
        } else if all(dates) {
            ("date".into(), Some("%Y-%m-%d".to_string()), share("are dates (%Y-%m-%d)"))
        } else if all(bools) {
            ("bool".into(), None, share("are true or false"))
        } else {
            let why = if ints + decs > 0 { "are text (some numbers have leading zeros or other characters: kept as written)" } else { "are text" };
            ("string".into(), None, share(why))
        };
        let evidence = if n < rows && n > 0 { format!("{evidence}; {} {} empty", rows - n, if rows - n == 1 { "is" } else { "are" }) } else { evidence };
        Ok(Guess { header: header.to_string(), ty, format, nullable: n < rows, unique: n == rows && distinct == rows && rows > 0, evidence })
    }
}
