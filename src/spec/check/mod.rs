//! Semantic checks of a spec that the schema cannot express: names that must resolve, types that
//! must agree, cycles, identifiers, rules, cron expressions. Every problem is collected; none stops
//! the others.

use std::collections::HashMap;

use super::diag::{Problem, suggest};
use super::model::{
    Atomicity, Connection, CsvOptions, Every, Literal, LoadMode, Select, Spec, Stage, StageSelection,
};
use super::pattern::Pattern;
use super::source::Pointer;

mod columns;
mod contracts;
mod distribution;

/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
pub const MAX_IDENTIFIER: usize = 63;

/// Whether `s` is a plain SQL identifier: a letter or `_`, then letters, digits or `_`.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
        && s.len() <= MAX_IDENTIFIER
}

fn identifier_problem(at: Pointer, what: &str, name: &str) -> Option<Problem> {
    if is_identifier(name) {
        return None;
    }
    let fixed: String = name
        .chars()
        .map(|c| if c.is_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    let fixed = if fixed.starts_with(|c: char| c.is_numeric()) { format!("_{fixed}") } else { fixed };
    let fixed = if fixed.chars().any(char::is_alphanumeric) { fixed } else { format!("{what}_1") };
    // Cut to the byte limit on a character boundary.
    let mut end = fixed.len().min(MAX_IDENTIFIER);
    while !fixed.is_char_boundary(end) {
        end -= 1;
    }
    let why = if name.len() > MAX_IDENTIFIER {
        format!("longer than {MAX_IDENTIFIER} bytes")
    } else {
        "not a plain SQL identifier".to_string()
    };
    Some(
        Problem::new("spec::bad_identifier", at, format!("{what} `{name}` is {why}"))
            .label(format!("letters (any script), digits and _ only, not starting with a digit, at most {MAX_IDENTIFIER} bytes"))
            .help(format!("rename it, e.g. `{}`", &fixed[..end])),
    )
}

/// A time of day written `HH:MM` or `HH:MM:SS`.
pub fn parse_time_of_day(s: &str) -> Option<chrono::NaiveTime> {
    let s = s.trim();
    chrono::NaiveTime::parse_from_str(s, "%H:%M:%S").or_else(|_| chrono::NaiveTime::parse_from_str(s, "%H:%M")).ok()
}

/// A duration written `30s`, `5m`, `1h 30m` (humantime's forms), more than zero.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    humantime::parse_duration(s.trim()).ok().filter(|d| !d.is_zero())
}

/// Whether `s` is a PostgreSQL time span a stage may set (`30s`, `5min`, `500ms`, `2h`, or
/// milliseconds alone): digits and one unit, nothing else (it is written into `SET LOCAL`).
pub fn is_pg_interval(s: &str) -> bool {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && digits <= 9 && matches!(t[digits..].trim_start(), "" | "us" | "ms" | "s" | "min" | "h" | "d")
}

fn timeout_problem(at: Pointer, value: Option<&str>) -> Option<Problem> {
    let v = value?;
    (!is_pg_interval(v)).then(|| Problem::new("spec::bad_value", at, format!("`{v}` is not a PostgreSQL time span")).label("e.g. 30s, 5min, 500ms"))
}

/// Runs every check and returns every problem found.
pub fn check(spec: &Spec) -> Vec<Problem> {
    let mut c = Checker { spec, problems: Vec::new() };
    c.top();
    c.connections();
    c.enums();
    c.stages();
    c.analytics();
    c.schedules();
    c.notify(&spec.notify, &Pointer::root().key("notify"));
    for (name, s) in &spec.schedules {
        if let Some(hooks) = &s.notify {
            c.notify(hooks, &Pointer::root().key("schedules").key(name).key("notify"));
        }
    }
    c.problems
}

struct Checker<'a> {
    spec: &'a Spec,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn push(&mut self, p: Problem) {
        self.problems.push(p);
    }

    fn top(&mut self) {
        let root = Pointer::root();
        if let Some(tz) = &self.spec.timezone
            && tz.parse::<chrono_tz::Tz>().is_err()
        {
            self.push(
                Problem::new("spec::bad_value", root.key("timezone"), format!("`{tz}` is not an IANA time zone"))
                    .label("the business date's time zone")
                    .help(
                        crate::spec::diag::suggest(tz, chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()))
                            .unwrap_or_else(|| "e.g. UTC, Asia/Shanghai, America/New_York".into()),
                    ),
            );
        }
        for (key, value) in [("lock_timeout", &self.spec.defaults.lock_timeout), ("statement_timeout", &self.spec.defaults.statement_timeout)] {
            if let Some(p) = timeout_problem(root.key("defaults").key(key), value.as_deref()) {
                self.push(p);
            }
        }
        if self.spec.version != 1 {
            self.push(
                Problem::new("spec::version", root.key("version"), format!("spec version {} is not supported", self.spec.version))
                    .label("this etl reads version 1")
                    .help("write `version: 1`"),
            );
        }
        let name = &self.spec.name;
        let ok = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && name.len() <= MAX_IDENTIFIER;
        if !ok {
            self.push(
                Problem::new("spec::bad_identifier", root.key("name"), format!("spec name `{name}` must be letters, digits, `_` or `-`"))
                    .label("this name"),
            );
        }
        if self.spec.stages.is_empty() {
            self.push(Problem::new("spec::no_stages", root.key("stages"), "the spec has no stages").label("add a stage here"));
        }
    }

    fn connections(&mut self) {
        for (name, conn) in &self.spec.connections {
            let at = Pointer::root().key("connections").key(name);
            match conn {
                Connection::S3(s3) => {
                    if s3.bucket.trim().is_empty() {
                        self.push(Problem::new("spec::empty", at.key("bucket"), format!("connection `{name}` has an empty bucket")));
                    }
                    if let Some(ep) = &s3.endpoint {
                        let ep = ep.trim();
                        let rest = ep.split_once("://").map(|(scheme, rest)| (Some(scheme), rest)).unwrap_or((None, ep));
                        let bad_scheme = rest.0.is_some_and(|s| s != "http" && s != "https");
                        if ep.is_empty() || bad_scheme || rest.1.is_empty() {
                            self.push(
                                Problem::new("spec::bad_endpoint", at.key("endpoint"), format!("`{ep}` is not an S3 endpoint"))
                                    .label("expected http(s)://host:port or host:port")
                                    .help("e.g. http://127.0.0.1:19000"),
                            );
                        }
                    }
                }
                Connection::Local(l) => {
                    if l.path.trim().is_empty() {
                        self.push(Problem::new("spec::empty", at.key("path"), format!("connection `{name}` has an empty path")));
                    }
                }
                Connection::Postgres(pg) => {
                    // An empty value (a template that rendered nothing) is unset.
                    // Neither url nor host: libpq's defaults apply at connect time (DATABASE_URL,
                    // PGHOST, PGPORT, ..., ~/.pgpass; else localhost:5432), as psql does.
                    let url = pg.url.as_ref().filter(|u| !u.expose().trim().is_empty());
                    if let Some(url) = url {
                        let u = url.expose();
                        if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                            self.push(
                                Problem::new("spec::bad_url", at.key("url"), format!("the url of connection `{name}` must start with postgres://"))
                                    .label("not a postgres URL"),
                            );
                        }
                    }
                    if let Some(schema) = &pg.schema
                        && let Some(p) = identifier_problem(at.key("schema"), "schema", schema) {
                            self.push(p);
                        }
                    if let Some(mode) = &pg.sslmode {
                        const MODES: [&str; 6] = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];
                        if !MODES.contains(&mode.as_str()) {
                            self.push(
                                Problem::new("spec::bad_value", at.key("sslmode"), format!("`{mode}` is not an sslmode"))
                                    .label(format!("one of {}", MODES.join(", ")))
                                    .maybe_help(suggest(mode, MODES)),
                            );
                        }
                    }
                }
                Connection::Duckdb(d) => {
                    if d.path.trim().is_empty() {
                        self.push(Problem::new("spec::empty", at.key("path"), format!("connection `{name}` has an empty path")));
                    }
                }
            }
        }
    }

    fn enums(&mut self) {
        for (name, values) in &self.spec.enums {
            let at = Pointer::root().key("enums").key(name);
            if values.is_empty() {
                self.push(Problem::new("spec::empty", at.clone(), format!("enum `{name}` has no values")).label("add LABEL: value entries"));
            }
            let ints = values.values().filter(|v| matches!(v, Literal::Int(_))).count();
            if ints != 0 && ints != values.len() {
                self.push(
                    Problem::new("spec::enum_mixed", at.clone(), format!("enum `{name}` mixes numbers and text"))
                        .label("all values must be numbers, or all text"),
                );
            }
            let mut seen: HashMap<&Literal, &str> = HashMap::new();
            for (label, v) in values {
                if let Some(first) = seen.insert(v, label) {
                    self.push(
                        Problem::new("spec::enum_duplicate", at.key(label), format!("enum `{name}` gives value {v} to both `{first}` and `{label}`"))
                            .label("same value twice"),
                    );
                }
            }
        }
    }

    fn stages(&mut self) {
        let spec = self.spec;
        let names: Vec<&str> = spec.stages.keys().map(String::as_str).collect();
        let mut tables: HashMap<(String, String), String> = HashMap::new();
        for (sname, stage) in &spec.stages {
            let at = Pointer::root().key("stages").key(sname);
            if let Some(p) = identifier_problem(at.clone(), "stage name", sname) {
                self.push(p.on_key());
            }
            for (key, value) in [("lock_timeout", &stage.lock_timeout), ("statement_timeout", &stage.statement_timeout)] {
                if let Some(p) = timeout_problem(at.key(key), value.as_deref()) {
                    self.push(p);
                }
            }
            for (i, need) in stage.needs.iter().enumerate() {
                if need == sname {
                    self.push(Problem::new("spec::cycle", at.key("needs").index(i), format!("stage `{sname}` needs itself")).label("remove this"));
                } else if !spec.stages.contains_key(need) {
                    self.push(
                        Problem::new("spec::unknown_stage", at.key("needs").index(i), format!("stage `{sname}` needs `{need}`, which is not a stage"))
                            .label("no such stage")
                            .help(suggest(need, names.iter().copied()).unwrap_or_else(|| format!("stages are: {}", names.join(", ")))),
                    );
                }
            }
            self.source(sname, stage, &at);
            if let Some(conn) = self.target_connection(sname, stage, &at) {
                let key = (conn, stage.target.table.clone());
                if let Some(other) = tables.insert(key, sname.clone()) {
                    self.push(
                        Problem::new("spec::duplicate_table", at.key("target").key("table"), format!("stages `{other}` and `{sname}` both load table `{}`", stage.target.table))
                            .label("same table twice")
                            .help("give each stage its own table"),
                    );
                }
            }
            self.columns(sname, stage, &at);
            self.key(sname, stage, &at);
            self.distribution(sname, stage, &at);
            self.rules(sname, stage, &at);
            self.contracts(sname, stage, &at);
        }
        self.cycles();
    }

    fn source(&mut self, sname: &str, stage: &Stage, at: &Pointer) {
        let at = at.key("source");
        let cname = &stage.source.connection;
        match self.spec.connections.get(cname) {
            None => self.unknown_connection(at.key("connection"), cname, "source"),
            Some(Connection::S3(_) | Connection::Local(_)) => {}
            Some(other) => self.push(
                Problem::new("spec::wrong_connection", at.key("connection"), format!("stage `{sname}` reads from `{cname}`, a {} connection", other.kind()))
                    .label("a source must be an s3 or local connection"),
            ),
        }
        self.files(sname, stage, &at);
        if let Some(csv) = &self.spec.defaults.csv {
            self.csv(csv, &Pointer::root().key("defaults").key("csv"));
        }
        if let Some(csv) = &stage.source.csv {
            self.csv(csv, &at.key("csv"));
        }
    }

    /// `key` or `files` (a pattern that compiles), and the keys that only a file set takes.
    fn files(&mut self, sname: &str, stage: &Stage, at: &Pointer) {
        let s = &stage.source;
        match (&s.key, &s.files) {
            (Some(_), Some(_)) => self.push(
                Problem::new("spec::key_and_files", at.key("files"), format!("stage `{sname}` names both a `key` and `files`"))
                    .label("one of the two")
                    .help("`key` reads one file; `files` reads a set of them (a pattern)"),
            ),
            (None, None) => self.push(
                Problem::new("spec::no_source_file", at.clone(), format!("stage `{sname}` names no file to read"))
                    .label("needs `key` or `files`")
                    .help("add `key: path/to/file.csv`, or `files: path/*.csv` for a set of files"),
            ),
            (Some(k), None) if k.trim().is_empty() => {
                self.push(
                    Problem::new("spec::empty", at.key("key"), format!("stage `{sname}` has an empty source key"))
                        .label("names no file")
                        .help("write the file's path in its connection, e.g. `key: trades.csv`"),
                );
            }
            (None, Some(f)) => {
                if let Err(e) = Pattern::new(f) {
                    self.push(
                        Problem::new("spec::bad_pattern", at.key("files"), format!("the `files` pattern of stage `{sname}`: {e}"))
                            .label("not a valid pattern")
                            .help("`*` and `?` match within a path part, `**` across parts, `{a,b}` either, `{name}` captures a part"),
                    );
                }
            }
            _ => {}
        }
        if s.files.is_none() {
            for (key, given) in [("select", s.select.is_some()), ("on_missing", s.on_missing.is_some()), ("wait", s.wait.is_some()), ("atomicity", s.atomicity.is_some())] {
                if given {
                    self.push(
                        Problem::new("spec::needs_files", at.key(key), format!("`{key}` is for a set of files, and stage `{sname}` reads one `key`"))
                            .label("only with `files`")
                            .help("write the key as `files: <the key>` (a pattern without wildcards names one file) to use it"),
                    );
                }
            }
        }
        if s.select == Some(Select::New) && stage.target.mode == LoadMode::Snapshot {
            self.push(
                Problem::new("spec::select_new_snapshot", at.key("select"), format!("stage `{sname}` would replace a date's rows with only the files of it not loaded yet"))
                    .label("`select: new` with `mode: snapshot`")
                    .help("use `select: all` (the default with `mode: snapshot`): each date's rows are then those of all its files"),
            );
        }
        if s.select == Some(Select::New) && stage.target.mode == LoadMode::Replace {
            self.push(
                Problem::new("spec::select_new_replace", at.key("select"), format!("stage `{sname}` would replace its table with only the files it has not loaded yet"))
                    .label("`select: new` with `mode: replace`")
                    .help("use `select: all` (the default with `mode: replace`): the table then holds the whole set"),
            );
        }
        if s.files.is_some() && s.atomicity == Some(Atomicity::File) {
            self.file_atomicity(sname, stage, &at.key("atomicity"));
        }
        if let Some(w) = &s.wait {
            if parse_time_of_day(&w.until).is_none() {
                self.push(
                    Problem::new("spec::bad_value", at.key("wait").key("until"), format!("`{}` is not a time of day", w.until))
                        .label("HH:MM or HH:MM:SS")
                        .help("e.g. `until: \"18:30\"`, in the spec's `timezone`"),
                );
            }
            if let Some(poll) = &w.poll
                && parse_duration(poll).is_none()
            {
                self.push(
                    Problem::new("spec::bad_value", at.key("wait").key("poll"), format!("`{poll}` is not a duration"))
                        .label("a duration such as 30s, 5m or 1h")
                        .help("write a number and a unit: `s`, `m` or `h`, more than zero"),
                );
            }
        }
    }

    /// `atomicity: file`: what a set whose files commit one by one cannot have. Each of these
    /// judges or rewrites the table against the whole set, which no one file's transaction sees.
    fn file_atomicity(&mut self, sname: &str, stage: &Stage, at: &Pointer) {
        let t = &stage.target;
        let mut whole: Vec<String> = Vec::new();
        match t.mode {
            LoadMode::Replace => whole.push("`mode: replace`".into()),
            LoadMode::Snapshot => whole.push("`mode: snapshot`".into()),
            LoadMode::History => whole.push("`mode: history`".into()),
            _ => {}
        }
        if t.delete_missing.is_some() {
            whole.push("`delete_missing`".into());
        }
        if !stage.checks.is_empty() {
            whole.push("`checks`".into());
        }
        if !whole.is_empty() {
            self.push(
                Problem::new(
                    "spec::atomicity_whole_set",
                    at.clone(),
                    format!("stage `{sname}` commits each file on its own, but {} {} the whole set in one transaction", whole.join(" and "), if whole.len() > 1 { "need" } else { "needs" }),
                )
                .on_key()
                .label("`atomicity: file`")
                .help("use `atomicity: stage` (the default), or load into an `append` or `upsert` target without those"),
            );
        }
        if let Some(other) = self.spec.connections.get(&t.connection).filter(|c| !matches!(c, Connection::Postgres(_))) {
            self.push(
                Problem::new("spec::atomicity_connection", at.clone(), format!("stage `{sname}` commits each file on its own, which this version offers on PostgreSQL, and `{}` is a {} connection", t.connection, other.kind()))
                    .on_key()
                    .label("`atomicity: file`")
                    .help("use `atomicity: stage` (the default) for a DuckDB target"),
            );
        }
    }

    fn csv(&mut self, csv: &CsvOptions, at: &Pointer) {
        for (key, v) in [("delimiter", &csv.delimiter), ("quote", &csv.quote), ("escape", &csv.escape)] {
            if let Some(v) = v
                && v.chars().count() != 1 {
                    let p = Problem::new("spec::bad_value", at.key(key), format!("the CSV {key} must be one character, not `{v}`"))
                        .label("one character");
                    if !self.problems.contains(&p) {
                        self.push(p);
                    }
                }
        }
    }

    fn unknown_connection(&mut self, at: Pointer, name: &str, role: &str) {
        let names: Vec<&str> = self.spec.connections.keys().map(String::as_str).collect();
        self.push(
            Problem::new("spec::unknown_connection", at, format!("{role} connection `{name}` is not defined under `connections`"))
                .label("no such connection")
                .help(suggest(name, names.iter().copied()).unwrap_or_else(|| format!("connections are: {}", names.join(", ")))),
        );
    }

    fn target_connection(&mut self, sname: &str, stage: &Stage, at: &Pointer) -> Option<String> {
        let at = at.key("target");
        let t = &stage.target;
        if let Some(p) = identifier_problem(at.key("table"), "table name", &t.table) {
            self.push(p);
        }
        if let Some(sk) = &t.surrogate_key {
            if let Some(p) = identifier_problem(at.key("surrogate_key"), "surrogate key", sk) {
                self.push(p);
            } else if stage.columns.contains_key(sk) {
                self.push(
                    Problem::new("spec::duplicate_column", at.key("surrogate_key"), format!("surrogate key `{sk}` is also a column of stage `{sname}`"))
                        .label("name clash")
                        .help("name the generated key differently, or drop the column"),
                );
            }
        }
        match self.spec.connections.get(&t.connection) {
            None => {
                self.unknown_connection(at.key("connection"), &t.connection, "target");
                None
            }
            Some(Connection::Duckdb(_)) if t.mode == LoadMode::History => {
                self.push(
                    Problem::new("spec::history_duckdb", at.key("connection"), format!("stage `{sname}` keeps versions, which is offered for PostgreSQL targets only"))
                        .label("a duckdb target")
                        .help("load into a postgres connection, or keep each date's rows with `mode: snapshot`"),
                );
                Some(t.connection.clone())
            }
            Some(Connection::Duckdb(_)) if t.delete_missing.is_some() => {
                self.push(
                    Problem::new("spec::delete_missing_duckdb", at.key("delete_missing"), format!("stage `{sname}` deletes the keys its file lacks, which is offered for PostgreSQL targets only"))
                        .on_key()
                        .label("not with a duckdb target")
                        .help("load into a postgres connection, or remove `delete_missing`"),
                );
                Some(t.connection.clone())
            }
            Some(Connection::Duckdb(_)) if t.on_delete.is_some() => {
                self.push(
                    Problem::new("spec::on_delete_duckdb", at.key("on_delete"), format!("stage `{sname}` says what its deletes do to referencing rows, which is offered for PostgreSQL targets only"))
                        .on_key()
                        .label("not with a duckdb target")
                        .help("load into a postgres connection, or remove `on_delete`"),
                );
                Some(t.connection.clone())
            }
            Some(Connection::Postgres(_) | Connection::Duckdb(_)) => Some(t.connection.clone()),
            Some(other) => {
                self.push(
                    Problem::new("spec::wrong_connection", at.key("connection"), format!("stage `{sname}` loads into `{}`, a {} connection", t.connection, other.kind()))
                        .label("a target must be a postgres or duckdb connection"),
                );
                None
            }
        }
    }

    fn cycles(&mut self) {
        // Depth-first search from each stage in spec order; each need that closes a cycle is
        // reported once (a stage already searched is not searched again).
        let stages = &self.spec.stages;
        let mut state: HashMap<&str, u8> = HashMap::new(); // 1 = on stack, 2 = done
        for start in stages.keys() {
            let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
            let mut path: Vec<&str> = Vec::new();
            if state.get(start.as_str()) == Some(&2) {
                continue;
            }
            while let Some((node, i)) = stack.pop() {
                if i == 0 {
                    state.insert(node, 1);
                    path.push(node);
                }
                let needs = stages.get(node).map(|s| s.needs.as_slice()).unwrap_or(&[]);
                if i < needs.len() {
                    stack.push((node, i + 1));
                    let next = needs[i].as_str();
                    if next == node || !stages.contains_key(next) {
                        continue;
                    }
                    match state.get(next) {
                        Some(1) => {
                            let from = path.iter().position(|s| *s == next).unwrap_or(0);
                            let mut cycle: Vec<&str> = path[from..].to_vec();
                            cycle.push(next);
                            let at = Pointer::root().key("stages").key(node).key("needs").index(i);
                            self.problems.push(
                                Problem::new("spec::cycle", at, format!("stages depend on each other in a cycle: {}", cycle.join(" → ")))
                                    .label("this need closes the cycle")
                                    .help("remove one of these needs"),
                            );
                        }
                        None => stack.push((next, 0)),
                        _ => {}
                    }
                } else {
                    state.insert(node, 2);
                    path.pop();
                }
            }
        }
    }

    fn target_connections(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.spec.stages.values() {
            if !out.contains(&s.target.connection) {
                out.push(s.target.connection.clone());
            }
        }
        out
    }

    fn notify(&mut self, hooks: &[crate::spec::model::Notify], at: &Pointer) {
        for (i, n) in hooks.iter().enumerate() {
            if let Some(t) = &n.timeout
                && parse_duration(t).is_none()
            {
                self.push(Problem::new("spec::bad_value", at.index(i).key("timeout"), format!("`{t}` is not a time span")).label("e.g. 10s, 1m"));
            }
        }
    }

    fn analytics(&mut self) {
        let targets = self.target_connections();
        for (name, a) in &self.spec.analytics {
            let at = Pointer::root().key("analytics").key(name);
            if let Some(p) = identifier_problem(at.clone(), "analytics name", name) {
                self.push(p.on_key());
            }
            if a.sql.trim().is_empty() {
                self.push(Problem::new("spec::empty", at.key("sql"), format!("analytics `{name}` has no SQL")));
            }
            for (i, cond) in a.expect.iter().enumerate() {
                if cond.trim().is_empty() {
                    self.push(Problem::new("spec::empty", at.key("expect").index(i), format!("analytics `{name}` expects an empty condition")).label("a condition over the query's columns, e.g. total > 0"));
                }
            }
            match &a.connection {
                Some(c) => match self.spec.connections.get(c) {
                    None => self.unknown_connection(at.key("connection"), c, "analytics"),
                    Some(Connection::Postgres(_) | Connection::Duckdb(_)) => {}
                    Some(other) => self.push(
                        Problem::new("spec::wrong_connection", at.key("connection"), format!("analytics `{name}` runs on `{c}`, a {} connection", other.kind()))
                            .label("analytics run on a postgres or duckdb connection"),
                    ),
                },
                None if targets.len() > 1 => self.push(
                    Problem::new("spec::ambiguous_connection", at.clone(), format!("analytics `{name}` does not say which target to run on"))
                        .on_key()
                        .label(format!("stages load into {}", targets.join(" and ")))
                        .help("add `connection: NAME`"),
                ),
                None => {}
            }
        }
    }

    fn schedules(&mut self) {
        for (name, s) in &self.spec.schedules {
            let at = Pointer::root().key("schedules").key(name);
            if s.workers == Some(super::model::Workers::Distribute) {
                let runs = |stage: &str| match &s.stages {
                    StageSelection::All => true,
                    StageSelection::Only(l) => l.iter().any(|x| x == stage),
                };
                let queued = self.spec.stages.iter().any(|(sname, st)| runs(sname) && st.source.files.is_some() && st.source.atomicity == Some(Atomicity::File));
                if !queued {
                    self.push(
                        Problem::new("spec::distribute_nothing", at.key("workers"), format!("schedule `{name}` hands its files to workers, but none of its stages commits its files one by one"))
                            .label("`workers: distribute`")
                            .help("give the set's source of a stage it runs `atomicity: file`, or remove `workers`"),
                    );
                }
            }
            match (&s.cron, s.every) {
                (Some(_), Some(_)) => self.push(
                    Problem::new("spec::schedule_trigger", at.clone(), format!("schedule `{name}` has both `cron` and `every`"))
                        .on_key()
                        .label("keep one")
                        .help("`cron` for any pattern; `every: day|hour|minute` (with `at` for day) for the simple ones"),
                ),
                (None, None) => self.push(
                    Problem::new("spec::schedule_trigger", at.clone(), format!("schedule `{name}` needs `cron` or `every`"))
                        .on_key()
                        .label("when should it run?")
                        .help("e.g. `cron: \"0 2 * * *\"` or `every: hour`"),
                ),
                (Some(expr), None) => {
                    if let Err(msg) = crate::spec::words::cron_expression(expr) {
                        self.push(Problem::new("spec::bad_cron", at.key("cron"), format!("schedule `{name}`: `{expr}` is not a cron expression: {msg}")).label("min hour day month weekday"));
                    }
                }
                (None, Some(_)) => {}
            }
            if let Some(when) = &s.at {
                if s.every != Some(Every::Day) {
                    self.push(
                        Problem::new("spec::schedule_trigger", at.key("at"), format!("schedule `{name}`: `at` applies to `every: day` only"))
                            .on_key()
                            .label("no time of day for this trigger"),
                    );
                } else if crate::spec::words::parse_at(when).is_none() {
                    self.push(Problem::new("spec::bad_value", at.key("at"), format!("schedule `{name}`: `{when}` is not a time of day")).label("expected HH:MM, e.g. 02:00"));
                }
            }
            if let Some(tz) = &s.timezone
                && tz.parse::<chrono_tz::Tz>().is_err() {
                    self.push(Problem::new("spec::bad_value", at.key("timezone"), format!("schedule `{name}`: `{tz}` is not an IANA time zone")).label("e.g. UTC or Asia/Shanghai"));
                }
            if let Some(n) = s.max_catchup {
                if s.catchup != crate::spec::model::Catchup::All {
                    self.push(
                        Problem::new("spec::catchup", at.key("max_catchup"), format!("schedule `{name}`: `max_catchup` applies to `catchup: all` only"))
                            .on_key()
                            .label("no catch-up to limit")
                            .help("add `catchup: all`, or drop `max_catchup`"),
                    );
                } else if n == 0 {
                    self.push(Problem::new("spec::catchup", at.key("max_catchup"), format!("schedule `{name}`: `max_catchup: 0` makes up nothing")).label("at least 1").help("write `catchup: skip` to make up nothing"));
                }
            }
            if let Some(d) = &s.retry_delay {
                if parse_duration(d).is_none() {
                    self.push(Problem::new("spec::bad_value", at.key("retry_delay"), format!("schedule `{name}`: `{d}` is not a duration")).label("e.g. 30s, 5m"));
                } else if s.retries == 0 {
                    self.push(
                        Problem::new("spec::retries", at.key("retry_delay"), format!("schedule `{name}`: `retry_delay` without `retries`"))
                            .on_key()
                            .label("no retry to wait for")
                            .help("add `retries: N`, or drop `retry_delay`"),
                    );
                }
            }
            if let StageSelection::Only(list) = &s.stages {
                if list.is_empty() {
                    self.push(Problem::new("spec::empty", at.key("stages"), format!("schedule `{name}` runs no stages")).help("write `stages: all` or list stages"));
                }
                for (i, st) in list.iter().enumerate() {
                    if !self.spec.stages.contains_key(st) {
                        let names: Vec<&str> = self.spec.stages.keys().map(String::as_str).collect();
                        self.push(
                            Problem::new("spec::unknown_stage", at.key("stages").index(i), format!("schedule `{name}` runs stage `{st}`, which does not exist"))
                                .label("no such stage")
                                .help(suggest(st, names.iter().copied()).unwrap_or_else(|| format!("stages are: {}", names.join(", ")))),
                        );
                    }
                }
            }
        }
    }
}

fn only_one(at: &Pointer, cname: &str, a: &str, b: &str) -> Problem {
    Problem::new("spec::conflicting_facets", at.key(b), format!("column `{cname}` has both `{a}` and `{b}`"))
        .on_key()
        .label("keep one")
}
