//! minijinja templates inside string values: `{{ env.DB_HOST | default('localhost') }}` and
//! `{{ vars.NAME }}`, rendered on the parsed tree so problems keep their place in the file.

use std::collections::{BTreeMap, HashSet};

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use super::diag::Problem;
use super::source::Pointer;

/// What templates can read.
pub struct Context {
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// For the offline commands (`validate-spec`, `plan`): a secret's template that reads an
    /// unset variable renders as unset (empty) instead of failing, so a spec can be checked
    /// without its production secrets.
    pub secrets_optional: bool,
    /// The business date: `run.date`.
    pub date: chrono::NaiveDate,
}

/// Registers the date filters: `strftime(format)`, `add_days(n)`, `previous_business_day`,
/// `next_business_day` (Saturday and Sunday skipped). Each takes a date written `YYYY-MM-DD`
/// (what `run.date` is) and gives one, but `strftime`, which gives the formatted text.
fn date_filters(jinja: &mut Environment<'_>) {
    use minijinja::{Error, ErrorKind};
    fn parse(value: &str) -> Result<chrono::NaiveDate, Error> {
        chrono::NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d")
            .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("`{value}` is not a date (YYYY-MM-DD)")))
    }
    fn business(mut d: chrono::NaiveDate, step: i64) -> chrono::NaiveDate {
        use chrono::Datelike;
        loop {
            d += chrono::Duration::days(step);
            if !matches!(d.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun) {
                return d;
            }
        }
    }
    jinja.add_filter("strftime", |value: String, format: String| -> Result<String, Error> {
        use std::fmt::Write;
        let d = parse(&value)?;
        let mut out = String::new();
        write!(out, "{}", d.format(&format)).map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("`{format}` is not a strftime format")))?;
        Ok(out)
    });
    jinja.add_filter("add_days", |value: String, days: i64| -> Result<String, Error> {
        let d = parse(&value)?;
        d.checked_add_signed(chrono::Duration::days(days))
            .map(|d| d.format("%Y-%m-%d").to_string())
            .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "the date is out of range"))
    });
    jinja.add_filter("previous_business_day", |value: String| -> Result<String, Error> { Ok(business(parse(&value)?, -1).format("%Y-%m-%d").to_string()) });
    jinja.add_filter("next_business_day", |value: String| -> Result<String, Error> { Ok(business(parse(&value)?, 1).format("%Y-%m-%d").to_string()) });
}

/// Whether a string holds template syntax.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// Renders every templated string in `root`, `vars` first (they may read `env`), then the rest
/// (which may read `vars`). Returns the pointers of the values it rendered.
pub fn render(root: &mut Value, ctx: &Context, problems: &mut Vec<Problem>) -> HashSet<Pointer> {
    let mut jinja = Environment::new();
    jinja.set_undefined_behavior(UndefinedBehavior::Strict);
    date_filters(&mut jinja);
    let run = minijinja::context! { date => ctx.date.format("%Y-%m-%d").to_string() };
    let mut rendered = HashSet::new();

    let env_value = minijinja::Value::from(minijinja::value::Serde(&ctx.env));
    let vars_ptr = Pointer::root().key("vars");
    if let Some(vars) = root.get_mut("vars") {
        let c = minijinja::context! { env => env_value.clone(), run => run.clone() };
        walk(vars, &vars_ptr, &jinja, (&c, ctx.secrets_optional), problems, &mut rendered);
    }
    let vars = root.get("vars").cloned().unwrap_or(Value::Object(Default::default()));
    let c = minijinja::context! { env => env_value, run => run, vars => minijinja::Value::from(minijinja::value::Serde(&vars)) };
    if let Value::Object(map) = root {
        for (k, v) in map.iter_mut() {
            if k != "vars" {
                walk(v, &Pointer::root().key(k), &jinja, (&c, ctx.secrets_optional), problems, &mut rendered);
            }
        }
    }
    rendered
}

fn walk(
    v: &mut Value,
    at: &Pointer,
    jinja: &Environment<'_>,
    (ctx, optional): (&minijinja::Value, bool),
    problems: &mut Vec<Problem>,
    rendered: &mut HashSet<Pointer>,
) {
    match v {
        Value::String(s) if is_template(s) => match jinja.render_str(s, ctx.clone()) {
            Ok(out) => {
                *s = out;
                rendered.insert(at.clone());
            }
            Err(e) if optional && e.kind() == minijinja::ErrorKind::UndefinedError && super::secret::is_secret(at) => {
                s.clear();
                rendered.insert(at.clone());
            }
            Err(e) => problems.push(problem(at, s, &e)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &at.index(i), jinja, (ctx, optional), problems, rendered);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                walk(item, &at.key(k), jinja, (ctx, optional), problems, rendered);
            }
        }
        _ => {}
    }
}

fn problem(at: &Pointer, template: &str, e: &minijinja::Error) -> Problem {
    let range = e.range();
    let snippet = range.clone().and_then(|r| template.get(r)).map(str::trim).unwrap_or("");
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    let (message, help) = match e.kind() {
        minijinja::ErrorKind::UndefinedError => {
            let what = if snippet.is_empty() { "a value".to_string() } else { format!("`{snippet}`") };
            let help = match snippet.strip_prefix("env.") {
                Some(var) => format!(
                    "environment variable {var} is not set: set it, or give a default: {{{{ env.{var} | default('...') }}}}"
                ),
                None => "define it under `vars:`, or give a default: {{ NAME | default('...') }}".to_string(),
            };
            (format!("template at `{at}` reads {what}, which is not defined"), help)
        }
        minijinja::ErrorKind::SyntaxError => (
            format!("template at `{at}` is not valid{detail}"),
            "templates use minijinja (Jinja2) syntax: {{ env.NAME | default('value') }}".to_string(),
        ),
        _ => (
            format!("template at `{at}` failed{detail}"),
            "templates may read `env.NAME`, `vars.NAME` and `run.date` (filters: strftime, add_days, previous_business_day, next_business_day)".to_string(),
        ),
    };
    let mut p = Problem::new("spec::template", at.clone(), message).label("this template").help(help);
    if let Some(r) = range {
        p = p.within(r.start, r.end);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Context {
        Context {
            env: [("DB_HOST".to_string(), "db.internal".to_string())].into_iter().collect(),
            secrets_optional: false,
            date: chrono::NaiveDate::from_ymd_opt(2025, 12, 19).unwrap(),
        }
    }

    #[test]
    fn the_business_date_formats_and_shifts() {
        let mut v = json!({
            "a": "trades/{{ run.date | strftime('%Y/%m/%d') }}/part-*.csv",
            "b": "{{ run.date | add_days(-1) }}",
            "c": "{{ run.date | previous_business_day }}",
            "d": "{{ run.date | next_business_day }}",
            "e": "{{ '2025-12-22' | previous_business_day }}",
        });
        let mut problems = Vec::new();
        render(&mut v, &ctx(), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        // 2025-12-19 is a Friday.
        assert_eq!(v, json!({ "a": "trades/2025/12/19/part-*.csv", "b": "2025-12-18", "c": "2025-12-18", "d": "2025-12-22", "e": "2025-12-19" }));
    }

    #[test]
    fn env_and_vars_render_with_defaults() {
        let mut v = json!({
            "vars": {"name": "{{ env.NOPE | default('etl_db') }}"},
            "db": {"host": "{{ env.DB_HOST }}", "database": "{{ vars.name }}", "port": 5432}
        });
        let mut problems = Vec::new();
        let done = render(&mut v, &ctx(), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(v["db"]["host"], "db.internal");
        assert_eq!(v["db"]["database"], "etl_db");
        assert_eq!(done.len(), 3);
    }

    #[test]
    fn an_unset_variable_names_itself() {
        let mut v = json!({"db": {"host": "{{ env.DB_HOSTNAME }}"}});
        let mut problems = Vec::new();
        render(&mut v, &ctx(), &mut problems);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].help.as_ref().unwrap().contains("DB_HOSTNAME is not set"), "{problems:?}");
    }
}
