//! The spec's words for times: strftime-style formats (as the seed wrote them) turned into
//! DuckDB's strptime formats, cron expressions checked with the scheduler's own parser, `HH:MM`
//! times of day, and `every: day|hour|minute` as cron. The checker and the compiler both use them.

use super::model::Every;

/// Translates a strftime-style format (chrono's, as the seed wrote them) into the DuckDB
/// strptime formats that accept the same texts. `%.f` (optional fractional seconds) becomes two
/// formats, with and without `.%f`.
pub fn strptime_formats(format: &str) -> Result<Vec<String>, String> {
    const SUPPORTED: &str = "YmdHMSjbBaAyIpzZeFT%";
    let mut with = String::new();
    let mut without = String::new();
    let mut optional_fraction = false;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            with.push(c);
            without.push(c);
            continue;
        }
        match chars.next() {
            Some('.') => match chars.next() {
                Some('f') => {
                    optional_fraction = true;
                    with.push_str(".%f");
                }
                other => return Err(format!("`%.{}` is not supported; use `%.f` for optional fractional seconds", other.map(String::from).unwrap_or_default())),
            },
            Some('f') => {
                with.push_str("%f");
                without.push_str("%f");
            }
            Some('F') => {
                with.push_str("%Y-%m-%d");
                without.push_str("%Y-%m-%d");
            }
            Some('T') => {
                with.push_str("%H:%M:%S");
                without.push_str("%H:%M:%S");
            }
            Some(d) if SUPPORTED.contains(d) => {
                with.push('%');
                with.push(d);
                without.push('%');
                without.push(d);
            }
            Some(d) => return Err(format!("format specifier `%{d}` is not supported; use %Y %m %d %H %M %S %.f %z and literal text")),
            None => return Err("the format ends with a lone `%`".into()),
        }
    }
    Ok(if optional_fraction { vec![with, without] } else { vec![with] })
}

/// Checks a cron expression with the scheduler's own parser (croner) and returns it with a
/// seconds field, as tokio-cron-scheduler takes it.
pub fn cron_expression(expr: &str) -> Result<String, String> {
    let e = expr.trim();
    let fields = e.split_whitespace().count();
    let six = match fields {
        5 => format!("0 {e}"),
        6 => e.to_string(),
        n => return Err(format!("it has {n} fields; write 5 (min hour day month weekday) or 6 (with seconds first)")),
    };
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(&six)
        .map(|_| six)
        .map_err(|e| e.to_string())
}

/// Parses `HH:MM`.
pub fn parse_at(at: &str) -> Option<(u32, u32)> {
    let (h, m) = at.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && at.trim().len() <= 5).then_some((h, m))
}

/// The six-field cron expression of `every` (and `at`).
pub fn every_cron(every: Every, at: Option<&str>) -> String {
    match every {
        Every::Minute => "0 * * * * *".into(),
        Every::Hour => "0 0 * * * *".into(),
        Every::Day => {
            let (h, m) = at.and_then(parse_at).unwrap_or((0, 0));
            format!("0 {m} {h} * * *")
        }
    }
}

/// `every` (and `at`) in a person's words, as `etl schedule list` shows a trigger.
pub fn every_words(every: Every, at: Option<&str>) -> String {
    match every {
        Every::Day => format!("every day at {}", at.unwrap_or("00:00")),
        Every::Hour => "every hour".into(),
        Every::Minute => "every minute".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chrono_formats_become_duckdb_formats() {
        assert_eq!(
            strptime_formats("%Y-%m-%dT%H:%M:%S%.f").unwrap(),
            vec!["%Y-%m-%dT%H:%M:%S.%f".to_string(), "%Y-%m-%dT%H:%M:%S".to_string()]
        );
        assert!(strptime_formats("%Q").is_err());
    }

    #[test]
    fn cron_takes_five_or_six_fields() {
        assert_eq!(cron_expression("0 2 * * *").unwrap(), "0 0 2 * * *");
        assert!(cron_expression("61 2 * * *").is_err());
        assert!(cron_expression("* * *").is_err());
        assert_eq!(every_cron(Every::Day, Some("02:30")), "0 30 2 * * *");
        assert_eq!(parse_at("24:00"), None);
    }
}
