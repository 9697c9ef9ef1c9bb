//! The checks of a stage's columns: facets that fit the column's type, enum and `one_of` values,
//! references to another stage's column, the key, and the rules (parsed and type-checked).

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;
use rust_decimal::Decimal;

use super::{Checker, identifier_problem, only_one};
use crate::spec::diag::{Problem, suggest};
use crate::spec::expr::{self, BinaryOp, ExprErrorKind, ExprKind, Ty};
use crate::spec::model::{Bound, Column, ColumnType, Literal, LoadMode, Stage};
use crate::spec::source::Pointer;

impl Checker<'_> {
    pub(super) fn columns(&mut self, sname: &str, stage: &Stage, at: &Pointer) {
        let at = at.key("columns");
        if stage.columns.is_empty() {
            self.push(Problem::new("spec::empty", at.clone(), format!("stage `{sname}` has no columns")).label("list the columns to load"));
        }
        let mut headers: HashMap<String, String> = HashMap::new();
        for (cname, col) in &stage.columns {
            let cat = at.key(cname);
            if let Some(p) = identifier_problem(cat.clone(), "column name", cname) {
                self.push(p.on_key());
            }
            if let Some(capture) = &col.from_path {
                self.from_path(sname, stage, cname, col, capture, &cat);
                self.facets(sname, stage, cname, col, &cat);
                continue;
            }
            if col.value.is_some() || col.expr.is_some() {
                self.computed(sname, stage, cname, col, &cat);
                self.facets(sname, stage, cname, col, &cat);
                continue;
            }
            let header = col.from.clone().unwrap_or_else(|| cname.clone());
            if let Some(other) = headers.insert(header.clone(), cname.clone()) {
                self.push(
                    Problem::new("spec::duplicate_header", if col.from.is_some() { cat.key("from") } else { cat.clone() }, format!("columns `{other}` and `{cname}` both read CSV column `{header}`"))
                        .label("read twice")
                        .help("each CSV column maps to one column; compute copies in the database instead"),
                );
            }
            self.facets(sname, stage, cname, col, &cat);
        }
    }

    /// A column that is not read from the CSV: a constant (`value`) or an expression (`expr`)
    /// over the stage's columns that are read.
    fn computed(&mut self, sname: &str, stage: &Stage, cname: &str, col: &Column, at: &Pointer) {
        let own = if col.expr.is_some() { "expr" } else { "value" };
        let others = [("from", col.from.is_some()), ("value", col.value.is_some() && own == "expr")];
        for (other, set) in others {
            if set {
                self.push(
                    Problem::new("spec::column_sources", at.key(other), format!("column `{cname}` of stage `{sname}` has both `{other}` and `{own}`"))
                        .on_key()
                        .label("one of the two")
                        .help("a column takes its value from one place: `from` (a CSV column), `from_path` (a capture of the `files:` pattern), `value` (a constant) or `expr` (computed from the row)"),
                );
                return;
            }
        }
        if let Some(v) = &col.value {
            if let Some(why) = constant_problem(col.ty, &v.0) {
                self.push(
                    Problem::new("spec::bad_value", at.key("value"), format!("column `{cname}` of stage `{sname}`: `{}` {why}", v.0))
                        .label(format!("not a {}", col.ty))
                        .help("write the value as a CSV field of this type would hold it"),
                );
            }
            return;
        }
        let Some(text) = &col.expr else { return };
        let at = at.key("expr");
        let parsed = match expr::parse(text) {
            Ok(e) => e,
            Err(e) => {
                self.push(
                    Problem::new("spec::rule_syntax", at, format!("column `{cname}`: {}", e.message))
                        .label("here")
                        .maybe_help(e.help)
                        .within(e.span.0, e.span.1.max(e.span.0 + 1)),
                );
                return;
            }
        };
        // The columns read (or given by the path or a constant): not the other computed ones.
        let read: IndexMap<String, ColumnType> = stage.columns.iter().filter(|(_, c)| c.expr.is_none()).map(|(k, c)| (k.clone(), c.ty)).collect();
        let mut reads = Vec::new();
        expr::columns_of(&parsed, &mut reads);
        if let Some(other) = reads.iter().find(|r| stage.columns.get(r.as_str()).is_some_and(|c| c.expr.is_some())) {
            self.push(
                Problem::new("spec::computed_reads_computed", at, format!("column `{cname}` is computed from `{other}`, which is computed too"))
                    .label("a computed column")
                    .help(format!("write `{other}`'s expression in its place: a computed column reads the columns that are read")),
            );
            return;
        }
        let ty = match expr::type_of(&parsed, &read) {
            Ok(t) => t,
            Err(e) => {
                let code = if e.kind == ExprErrorKind::UnknownColumn { "spec::unknown_column" } else { "spec::expr_type" };
                self.push(
                    Problem::new(code, at, format!("column `{cname}`: {}", e.message))
                        .label(if e.kind == ExprErrorKind::UnknownColumn { "not a column of this stage" } else { "here" })
                        .maybe_help(e.help)
                        .within(e.span.0, e.span.1),
                );
                return;
            }
        };
        if let Err(e) = expr::digits(&parsed, &read) {
            self.push(Problem::new("spec::expr_type", at, format!("column `{cname}`: {}", e.message)).label("here").maybe_help(e.help).within(e.span.0, e.span.1));
            return;
        }
        if let Some(why) = result_problem(col.ty, ty) {
            self.push(
                Problem::new("spec::expr_type", at, format!("column `{cname}` is {}, but its expression {why}", col.ty))
                    .label("computes another type")
                    .help(result_help(col.ty, ty)),
            );
        }
    }

    /// A column taken from a capture of the stage's `files:` pattern.
    fn from_path(&mut self, sname: &str, stage: &Stage, cname: &str, col: &Column, capture: &str, at: &Pointer) {
        let at = at.key("from_path");
        if let Some(other) = [("value", col.value.is_some()), ("expr", col.expr.is_some())].iter().find(|(_, set)| *set).map(|(k, _)| *k) {
            self.push(
                Problem::new("spec::column_sources", at.clone(), format!("column `{cname}` of stage `{sname}` has both `from_path` and `{other}`"))
                    .on_key()
                    .label("one of the two")
                    .help("a column takes its value from one place: `from` (a CSV column), `from_path` (a capture of the `files:` pattern), `value` (a constant) or `expr` (computed from the row)"),
            );
            return;
        }
        if col.from.is_some() {
            self.push(
                Problem::new("spec::from_and_from_path", at.clone(), format!("column `{cname}` of stage `{sname}` has both `from` and `from_path`"))
                    .label("one of the two")
                    .help("`from` names a CSV column; `from_path` a capture of the `files:` pattern"),
            );
            return;
        }
        let Some(files) = &stage.source.files else {
            self.push(
                Problem::new("spec::from_path_without_files", at, format!("column `{cname}` takes `{capture}` from the path, and stage `{sname}` reads one `key`"))
                    .label("only with `files`")
                    .help("write the source as a `files:` pattern with the capture, e.g. `files: trades/{date}.csv`"),
            );
            return;
        };
        // A pattern that does not compile is reported once, at `files`.
        let Ok(pattern) = crate::spec::pattern::Pattern::new(files) else { return };
        if !pattern.captures().iter().any(|c| c == capture) {
            let names = pattern.captures();
            let help = if names.is_empty() {
                format!("the pattern `{files}` captures nothing: write the part as `{{{capture}}}` in it")
            } else {
                suggest(capture, names.iter().map(String::as_str)).unwrap_or_else(|| format!("its captures are: {}", names.join(", ")))
            };
            self.push(
                Problem::new("spec::unknown_capture", at, format!("column `{cname}` takes `{capture}` from the path, which the `files` pattern of stage `{sname}` does not capture"))
                    .label("no such capture")
                    .help(help),
            );
        }
    }

    pub(super) fn facets(&mut self, sname: &str, stage: &Stage, cname: &str, col: &Column, at: &Pointer) {
        let t = col.ty;
        let only = |facet: &str, types: &str| {
            Problem::new("spec::facet_type", at.key(facet), format!("`{facet}` does not apply to column `{cname}` of type {t}"))
                .on_key()
                .label(format!("only for {types} columns"))
        };
        if !matches!(t, ColumnType::String) {
            for (facet, set) in [("max_length", col.max_length.is_some()), ("min_length", col.min_length.is_some()), ("pattern", col.pattern.is_some())] {
                if set {
                    self.push(only(facet, "string"));
                }
            }
        }
        if !t.is_numeric() && col.multiple_of.is_some() {
            self.push(only("multiple_of", "numeric"));
        }
        for (facet, bound) in [("min", col.min), ("max", col.max), ("exclusive_min", col.exclusive_min), ("exclusive_max", col.exclusive_max)] {
            let Some(b) = bound else { continue };
            let fits = match b {
                Bound::Number(_) => t.is_numeric(),
                Bound::Date(_) => matches!(t, ColumnType::Date | ColumnType::Timestamp),
                Bound::Timestamp(_) => t == ColumnType::Timestamp,
            };
            if !fits && !t.is_numeric() && !t.is_temporal() {
                self.push(only(facet, "numeric, date and timestamp"));
            } else if !fits {
                let example = match t {
                    ColumnType::Date => "a date, e.g. \"2025-01-31\"".to_string(),
                    ColumnType::Timestamp => "a timestamp, e.g. \"2025-01-31 09:30:00\"".to_string(),
                    _ => "a number".to_string(),
                };
                self.push(
                    Problem::new("spec::facet_type", at.key(facet), format!("column `{cname}` is {t}, so {facet} must be {example}, not {} ({b})", b.kind()))
                        .label("another kind of value"),
                );
            }
        }
        if col.format.is_some() && !t.is_temporal() {
            self.push(only("format", "date and timestamp"));
        }
        if let Some(fmt) = &col.format
            && t.is_temporal()
                && let Err(msg) = crate::spec::words::strptime_formats(fmt) {
                    self.push(Problem::new("spec::bad_format", at.key("format"), format!("column `{cname}`: {msg}")).label("this format"));
                }
        if let (Some(lo), Some(hi)) = (col.min_length, col.max_length)
            && lo > hi {
                self.push(Problem::new("spec::empty_range", at.key("min_length"), format!("column `{cname}`: min_length {lo} exceeds max_length {hi}")).label("no text fits"));
            }
        if let Some(0) = col.max_length {
            self.push(Problem::new("spec::bad_value", at.key("max_length"), format!("column `{cname}`: max_length must be at least 1")));
        }
        let lower = col.min.or(col.exclusive_min).and_then(Bound::number);
        let upper = col.max.or(col.exclusive_max).and_then(Bound::number);
        if let (Some(lo), Some(hi)) = (lower, upper) {
            let empty = lo > hi || (lo == hi && (col.exclusive_min.is_some() || col.exclusive_max.is_some()));
            if empty {
                // At the upper limit's key: where it was written, in the spec or a --set.
                let upper_key = if col.max.is_some() { "max" } else { "exclusive_max" };
                let above = if col.min.is_some() { "at least" } else { "more than" };
                let below = if col.max.is_some() { "at most" } else { "less than" };
                self.push(
                    Problem::new("spec::empty_range", at.key(upper_key), format!("column `{cname}`: no value is {above} {lo} and {below} {hi}"))
                        .on_key()
                        .label(format!("empty range: the lower limit is {lo}")),
                );
            }
        }
        if col.min.is_some() && col.exclusive_min.is_some() {
            self.push(only_one(at, cname, "min", "exclusive_min"));
        }
        if col.max.is_some() && col.exclusive_max.is_some() {
            self.push(only_one(at, cname, "max", "exclusive_max"));
        }
        // A limit past what a Decimal holds (about 7.9e28) is past every facet value too.
        if let ColumnType::Decimal { precision, scale } = t
            && let Ok(limit) = Decimal::try_from_i128_with_scale(10i128.pow(u32::from(precision - scale)), 0)
        {
            for (facet, v) in [("min", col.min), ("max", col.max), ("exclusive_min", col.exclusive_min), ("exclusive_max", col.exclusive_max)] {
                if let Some(v) = v.and_then(Bound::number)
                    && v.abs() >= limit {
                        self.push(
                            Problem::new("spec::out_of_range", at.key(facet), format!("column `{cname}`: {facet} {v} does not fit {t}"))
                                .label(format!("{t} holds less than {limit} in magnitude")),
                        );
                    }
            }
        }
        if t.is_integer() {
            let numbers = [("min", col.min.and_then(Bound::number)), ("max", col.max.and_then(Bound::number)), ("multiple_of", col.multiple_of.map(|m| m.0))];
            for (facet, v) in numbers {
                if let Some(v) = v
                    && !v.fract().is_zero() {
                        self.push(Problem::new("spec::facet_type", at.key(facet), format!("column `{cname}` is {t}, so {facet} must be a whole number, not {v}")).label("not whole"));
                    }
            }
        }
        if let (Some(_), ColumnType::Decimal { scale, .. }) = (col.multiple_of, t)
            && scale > 28
        {
            self.push(
                Problem::new("spec::facet_type", at.key("multiple_of"), format!("column `{cname}` is {t}: multiple_of works on decimals with at most 28 places"))
                    .label("too many places"),
            );
        }
        if let Some(m) = col.multiple_of
            && m.0 <= Decimal::ZERO {
                self.push(Problem::new("spec::bad_value", at.key("multiple_of"), format!("column `{cname}`: multiple_of must be greater than 0")).label("not positive"));
            }
        if let Some(pat) = &col.pattern
            && let Err(e) = regex::Regex::new(pat) {
                let msg = e.to_string();
                let last = msg.lines().last().unwrap_or("").trim().to_string();
                self.push(Problem::new("spec::bad_pattern", at.key("pattern"), format!("column `{cname}`: pattern is not a valid regular expression: {last}")).label("this pattern"));
            }
        if col.enum_name.is_some() && col.one_of.is_some() {
            self.push(only_one(at, cname, "enum", "one_of"));
        }
        if let Some(e) = &col.enum_name {
            match self.spec.enums.get(e) {
                None => {
                    let names: Vec<&str> = self.spec.enums.keys().map(String::as_str).collect();
                    self.push(
                        Problem::new("spec::unknown_enum", at.key("enum"), format!("column `{cname}` uses enum `{e}`, which is not defined under `enums`"))
                            .label("no such enum")
                            .help(suggest(e, names.iter().copied()).unwrap_or_else(|| {
                                if names.is_empty() { "define it under `enums:`".to_string() } else { format!("enums are: {}", names.join(", ")) }
                            })),
                    );
                }
                Some(values) => {
                    let values: Vec<Literal> = values.values().cloned().collect();
                    self.literal_types(&values, t, cname, &at.key("enum"), &format!("enum `{e}`"));
                }
            }
        }
        if let Some(values) = &col.one_of {
            if values.is_empty() {
                self.push(Problem::new("spec::empty", at.key("one_of"), format!("column `{cname}`: one_of is empty, so no value fits")));
            }
            self.literal_types(values, t, cname, &at.key("one_of"), "one_of");
        }
        if let Some(r) = &col.references {
            self.reference(sname, stage, cname, col, r, &at.key("references"));
        }
    }

    pub(super) fn literal_types(&mut self, values: &[Literal], t: ColumnType, cname: &str, at: &Pointer, what: &str) {
        let fits = |v: &Literal| match (v, t) {
            (Literal::Int(i), ColumnType::Int32) => i32::try_from(*i).is_ok(),
            (Literal::Int(_), ColumnType::Int64 | ColumnType::Decimal { .. } | ColumnType::Float64) => true,
            (Literal::Text(_), ColumnType::String) => true,
            _ => false,
        };
        if let Some(bad) = values.iter().find(|v| !fits(v)) {
            let hint = match (bad, t) {
                (Literal::Int(i), ColumnType::String) => Some(format!("for a string column, quote the values: '{i}'")),
                (Literal::Text(_), _) if t.is_numeric() => {
                    let a = if t.to_string().starts_with('i') { "an" } else { "a" };
                    Some(format!("for {a} {t} column, write numbers unquoted"))
                }
                _ => None,
            };
            self.push(
                Problem::new("spec::type_mismatch", at.clone(), format!("column `{cname}` is {t}, but {what} holds {bad}"))
                    .label("values of another type")
                    .maybe_help(hint),
            );
        }
    }

    pub(super) fn reference(&mut self, sname: &str, stage: &Stage, cname: &str, col: &Column, r: &str, at: &Pointer) {
        let spec = self.spec;
        let Some((rstage, rcol)) = r.split_once('.') else {
            self.push(
                Problem::new("spec::bad_reference", at.clone(), format!("column `{cname}` references `{r}`; write it as stage.column"))
                    .label("expected stage.column"),
            );
            return;
        };
        let Some(target) = spec.stages.get(rstage) else {
            let names: Vec<&str> = spec.stages.keys().map(String::as_str).collect();
            self.push(
                Problem::new("spec::unknown_stage", at.clone(), format!("column `{cname}` references stage `{rstage}`, which does not exist"))
                    .label("no such stage")
                    .help(suggest(rstage, names.iter().copied()).unwrap_or_else(|| format!("stages are: {}", names.join(", ")))),
            );
            return;
        };
        let Some(tcol) = target.columns.get(rcol) else {
            let names: Vec<&str> = target.columns.keys().map(String::as_str).collect();
            self.push(
                Problem::new("spec::unknown_column", at.clone(), format!("column `{cname}` references `{r}`, but stage `{rstage}` has no column `{rcol}`"))
                    .label("no such column")
                    .help(suggest(rcol, names.iter().copied()).unwrap_or_else(|| format!("its columns are: {}", names.join(", ")))),
            );
            return;
        };
        let single_key = target.target.key.len() == 1 && target.target.key[0] == rcol;
        // A snapshot's or a history's key is unique per date or per version, not alone.
        if matches!(target.target.mode, LoadMode::Snapshot | LoadMode::History) {
            self.push(
                Problem::new("spec::reference_kept_dates", at.clone(), format!("column `{cname}` references `{r}`, but stage `{rstage}` keeps a row per date (`mode: {}`), so `{rcol}` repeats", if target.target.mode == LoadMode::History { "history" } else { "snapshot" }))
                    .label("not unique in its table")
                    .help("reference a stage that keeps one row per key (an upsert), or drop `references`"),
            );
            return;
        }
        if !single_key && !tcol.unique {
            self.push(
                Problem::new("spec::reference_not_unique", at.clone(), format!("column `{cname}` references `{r}`, which is not unique"))
                    .label("a foreign key needs a unique column")
                    .help(format!("make `{rcol}` the key of stage `{rstage}`, or mark it `unique: true`")),
            );
        }
        if tcol.ty != col.ty {
            self.push(
                Problem::new("spec::type_mismatch", at.clone(), format!("column `{cname}` is {} but references `{r}`, which is {}", col.ty, tcol.ty))
                    .label("types differ")
                    .help("give both columns the same type"),
            );
        }
        if stage.target.connection != target.target.connection {
            self.push(
                Problem::new("spec::reference_connection", at.clone(), format!("column `{cname}` references `{r}` in another target connection"))
                    .label("a foreign key stays within one database"),
            );
        }
        if rstage != sname && !self.depends_on(sname, rstage) {
            self.push(
                Problem::new("spec::reference_order", at.clone(), format!("column `{cname}` references stage `{rstage}`, but stage `{sname}` does not need it"))
                    .label("loaded in no particular order")
                    .help(format!("add `needs: [{rstage}]` to stage `{sname}`, so `{rstage}` loads first")),
            );
        }
    }

    pub(super) fn depends_on(&self, from: &str, to: &str) -> bool {
        let mut seen = HashSet::new();
        let mut stack = vec![from];
        while let Some(s) = stack.pop() {
            if !seen.insert(s) {
                continue;
            }
            if let Some(st) = self.spec.stages.get(s) {
                for n in &st.needs {
                    if n == to {
                        return true;
                    }
                    stack.push(n);
                }
            }
        }
        false
    }

    pub(super) fn key(&mut self, sname: &str, stage: &Stage, at: &Pointer) {
        let columns_at = at.key("columns");
        let at = at.key("target");
        let t = &stage.target;
        if t.mode == LoadMode::Upsert && t.key.is_empty() {
            self.push(
                Problem::new("spec::missing_key", at.clone(), format!("stage `{sname}` upserts, so its target needs a `key`"))
                    .on_key()
                    .label("add `key: [column]` here")
                    .help("or choose `mode: append`"),
            );
        }
        self.snapshot(sname, stage, &at, &columns_at);
        let mut seen = HashSet::new();
        for (i, k) in t.key.iter().enumerate() {
            let kat = at.key("key").index(i);
            match stage.columns.get(k) {
                None => {
                    let names: Vec<&str> = stage.columns.keys().map(String::as_str).collect();
                    self.push(
                        Problem::new("spec::unknown_column", kat, format!("key column `{k}` is not a column of stage `{sname}`"))
                            .label("no such column")
                            .help(suggest(k, names.iter().copied()).unwrap_or_else(|| format!("columns are: {}", names.join(", ")))),
                    );
                }
                Some(c) if c.nullable => self.push(
                    Problem::new("spec::nullable_key", kat, format!("key column `{k}` is nullable"))
                        .label("a key cannot be missing")
                        .help(format!("remove `nullable: true` from column `{k}`")),
                ),
                Some(_) => {}
            }
            if !seen.insert(k) {
                self.push(Problem::new("spec::duplicate_column", at.key("key").index(i), format!("key column `{k}` is listed twice")).label("again"));
            }
        }
    }

    /// `mode: snapshot` and its `as_of` date column.
    fn snapshot(&mut self, sname: &str, stage: &Stage, at: &Pointer, columns_at: &Pointer) {
        let t = &stage.target;
        match (&t.as_of, t.mode) {
            (None, LoadMode::Snapshot | LoadMode::History) => {
                let dates: Vec<&str> = stage.columns.iter().filter(|(_, c)| c.ty == ColumnType::Date).map(|(k, _)| k.as_str()).collect();
                self.push(
                    Problem::new("spec::missing_as_of", at.key("mode"), format!("stage `{sname}` keeps each business date's rows, so its target needs `as_of`: the date column of each row"))
                        .label("add `as_of: COLUMN` to the target")
                        .help(match dates.as_slice() {
                            [] => "add a date column, e.g. `business_date: { type: date, value: \"{{ run.date }}\" }`, and name it in `as_of`".to_string(),
                            some => format!("its date columns are: {}", some.join(", ")),
                        }),
                );
            }
            (Some(_), mode) if !matches!(mode, LoadMode::Snapshot | LoadMode::History) => {
                self.push(
                    Problem::new("spec::as_of_without_snapshot", at.key("as_of"), format!("stage `{sname}` has `as_of`, which only `mode: snapshot` and `mode: history` use"))
                        .on_key()
                        .label("only with `mode: snapshot` or `history`")
                        .help("set `mode: snapshot` (each date's rows) or `history` (versions), or remove `as_of`"),
                );
            }
            (Some(d), _) => match stage.columns.get(d) {
                None => {
                    let names: Vec<&str> = stage.columns.keys().map(String::as_str).collect();
                    self.push(
                        Problem::new("spec::unknown_column", at.key("as_of"), format!("`as_of` column `{d}` is not a column of stage `{sname}`"))
                            .label("no such column")
                            .help(suggest(d, names.iter().copied()).unwrap_or_else(|| format!("columns are: {}", names.join(", ")))),
                    );
                }
                Some(c) if c.ty != ColumnType::Date || c.nullable => {
                    self.push(
                        Problem::new("spec::as_of_type", at.key("as_of"), format!("`as_of` column `{d}` must be a date that is never missing; it is {}{}", c.ty, if c.nullable { ", nullable" } else { "" }))
                            .label("not a date column")
                            .help("name a `type: date` column without `nullable: true`; take a timestamp's date with `expr: \"date(ts)\"`"),
                    );
                }
                Some(c) if t.mode == LoadMode::History && c.value.is_none() => {
                    self.push(
                        Problem::new("spec::history_as_of", at.key("as_of"), format!("`as_of` column `{d}` of a history must be the load's date: a `value:`"))
                            .label("not a constant")
                            .help(format!("write it as `{d}: {{ type: date, value: \"{{{{ run.date }}}}\" }}`, and load a past date with `--date`")),
                    );
                }
                Some(_) => {}
            },
            (None, _) => {}
        }
        if t.mode == LoadMode::History && t.key.is_empty() {
            self.push(
                Problem::new("spec::missing_key", at.clone(), format!("stage `{sname}` keeps versions, so its target needs a `key`"))
                    .on_key()
                    .label("add `key: [column]` here")
                    .help("the key names what has versions, e.g. `key: [account_id]`"),
            );
        }
        if t.delete_missing == Some(crate::spec::model::DeleteMissing::Close) && t.mode != LoadMode::History {
            self.push(
                Problem::new("spec::close_without_history", at.key("delete_missing"), format!("stage `{sname}` closes the versions of keys its file lacks, which only `mode: history` has"))
                    .on_key()
                    .label("only with `mode: history`")
                    .help("an upsert deletes them (`hard`) or flags them (`soft`)"),
            );
        }
        if matches!(t.delete_missing, Some(crate::spec::model::DeleteMissing::Hard | crate::spec::model::DeleteMissing::Soft)) && (t.mode != LoadMode::Upsert || t.key.is_empty()) {
            self.push(
                Problem::new("spec::delete_missing_mode", at.key("delete_missing"), format!("stage `{sname}` deletes the keys its file lacks, which needs `mode: upsert` with a `key`"))
                    .on_key()
                    .label("only with an upsert on a key")
                    .help("a snapshot replaces each date's rows already; `mode: replace` the whole table"),
            );
        }
        if t.on_delete.is_some() && !deletes_keys(t, stage) {
            self.push(
                Problem::new("spec::on_delete_without_deletes", at.key("on_delete"), format!("stage `{sname}` has `on_delete`, but its load deletes no key"))
                    .on_key()
                    .label("only where keys are deleted")
                    .help("set `delete_missing: hard` on an upsert, or use `mode: replace` with a `key` and no other `unique` column; or remove `on_delete`"),
            );
        }
        if t.max_delete_ratio.is_some() && t.delete_missing.is_none() {
            self.push(
                Problem::new("spec::max_delete_ratio_alone", at.key("max_delete_ratio"), format!("stage `{sname}` has `max_delete_ratio` but deletes nothing"))
                    .on_key()
                    .label("only with `delete_missing`")
                    .help("set `delete_missing: hard` or `soft`, or remove `max_delete_ratio`"),
            );
        }
        if t.delete_missing.is_some() && stage.source.files.is_some() && stage.source.select != Some(crate::spec::model::Select::All) {
            self.push(
                Problem::new("spec::delete_missing_select_new", at.key("delete_missing"), format!("stage `{sname}` reads only the files of its set it has not loaded, so the keys of the others would be taken as missing"))
                    .on_key()
                    .label("needs every file")
                    .help("set the source's `select: all`: the set then holds every key the table should"),
            );
        }
        if matches!(t.mode, LoadMode::Snapshot | LoadMode::History) {
            for (cname, _) in stage.columns.iter().filter(|(_, c)| c.unique) {
                self.push(
                    Problem::new("spec::unique_in_snapshot", columns_at.key(cname).key("unique"), format!("column `{cname}` is `unique`, but stage `{sname}` keeps every date's rows side by side"))
                        .on_key()
                        .label("unique across every date")
                        .help("a snapshot's key is unique per date: add the column to `key` instead"),
                );
            }
        }
    }

    pub(super) fn rules(&mut self, sname: &str, stage: &Stage, at: &Pointer) {
        let types: IndexMap<String, ColumnType> = stage.columns.iter().map(|(k, c)| (k.clone(), c.ty)).collect();
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, rule) in stage.rules.iter().enumerate() {
            let rat = at.key("rules").index(i);
            if let Some(first) = names.insert(rule.name.as_str(), i) {
                self.push(
                    Problem::new("spec::duplicate_rule", rat.key("name"), format!("stage `{sname}` has two rules named `{}`", rule.name))
                        .label(format!("rules[{first}] has this name too"))
                        .help("rule names identify rejected rows: make them unique"),
                );
            }
            if rule.name.trim().is_empty() {
                self.push(Problem::new("spec::empty", rat.key("name"), "a rule needs a name".to_string()));
            }
            let cat = rat.key("check");
            let parsed = match expr::parse(&rule.check) {
                Ok(e) => e,
                Err(e) => {
                    self.push(
                        Problem::new("spec::rule_syntax", cat, format!("rule `{}`: {}", rule.name, e.message))
                            .label("here")
                            .maybe_help(e.help)
                            .within(e.span.0, e.span.1.max(e.span.0 + 1)),
                    );
                    continue;
                }
            };
            match expr::type_of(&parsed, &types) {
                Err(e) => {
                    let code = match e.kind {
                        ExprErrorKind::UnknownColumn => "spec::unknown_column",
                        ExprErrorKind::Type => "spec::rule_type",
                        ExprErrorKind::Syntax => "spec::rule_syntax",
                    };
                    let label = match e.kind {
                        ExprErrorKind::UnknownColumn => "not a column of this stage",
                        _ => "here",
                    };
                    self.push(
                        Problem::new(code, cat, format!("rule `{}`: {}", rule.name, e.message))
                            .label(label)
                            .maybe_help(e.help)
                            .within(e.span.0, e.span.1),
                    );
                }
                Ok(Ty::Bool) => {
                    let numeric_eq = matches!(&parsed.kind, ExprKind::Binary(BinaryOp::Eq, l, _)
                        if matches!(expr::type_of(l, &types), Ok(Ty::Number(_))));
                    if rule.tolerance.is_some() && !numeric_eq {
                        self.push(
                            Problem::new("spec::tolerance", rat.key("tolerance"), format!("rule `{}` has a tolerance, but it is not an `=` between numbers", rule.name))
                                .on_key()
                                .label("tolerance applies to `a = b` only")
                                .help("remove `tolerance`, or write the rule as `a = b`"),
                        );
                    }
                    if let Some(t) = rule.tolerance
                        && t.0 < Decimal::ZERO {
                            self.push(Problem::new("spec::bad_value", rat.key("tolerance"), format!("rule `{}`: tolerance must not be negative", rule.name)));
                        }
                }
                Ok(other) => {
                    self.push(
                        Problem::new("spec::rule_type", cat, format!("rule `{}` must be a condition (true or false), but it computes {other:?}", rule.name).replace("Number(", "a number (").replace("Text", "text"))
                            .label("not a condition")
                            .help("compare it with something, e.g. `... > 0`"),
                    );
                }
            }
        }
    }
}

/// Why a constant is not a value of its column's type, if it is not.
fn constant_problem(t: ColumnType, text: &str) -> Option<String> {
    let ok = match t {
        ColumnType::String => true,
        ColumnType::Int32 => text.trim().parse::<i32>().is_ok(),
        ColumnType::Int64 => text.trim().parse::<i64>().is_ok(),
        ColumnType::Decimal { precision, scale } => {
            let Some(d) = crate::spec::model::parse_decimal(text).map(|d| d.normalize()) else { return Some(format!("is not a {t}")) };
            if d.scale() > u32::from(scale) {
                return Some(format!("has more than {scale} decimal places ({t})"));
            }
            let whole = u32::from(precision - scale);
            if d.trunc().abs().to_string().trim_start_matches('0').len() as u32 > whole {
                return Some(format!("has more than {whole} digits before the point ({t})"));
            }
            true
        }
        ColumnType::Float64 => text.trim().parse::<f64>().is_ok(),
        ColumnType::Bool => matches!(text, "t" | "f"),
        // Formats apply to a date or timestamp column's constant too: left to the cast then.
        ColumnType::Date | ColumnType::Timestamp => return None,
    };
    (!ok).then(|| match t {
        ColumnType::Bool => "is not a boolean (write true or false)".to_string(),
        _ => format!("is not a {t}"),
    })
}

/// Why an expression's result cannot fill a column of type `t`, if it cannot.
fn result_problem(t: ColumnType, ty: Ty) -> Option<String> {
    use crate::spec::expr::NumKind;
    match (t, ty) {
        (_, Ty::Null) => None,
        (ColumnType::String, Ty::Text) | (ColumnType::Bool, Ty::Bool) | (ColumnType::Date, Ty::Date) => None,
        (ColumnType::Timestamp, Ty::Timestamp | Ty::Date) => None,
        (ColumnType::Float64, Ty::Number(_)) => None,
        (ColumnType::Int32 | ColumnType::Int64, Ty::Number(NumKind::Int)) => None,
        (ColumnType::Int32 | ColumnType::Int64, Ty::Number(NumKind::Decimal(0))) => None,
        (ColumnType::Int32 | ColumnType::Int64, Ty::Number(_)) => Some("computes a number with decimal places".into()),
        (ColumnType::Decimal { .. }, Ty::Number(NumKind::Float)) => Some("computes a float, which a decimal column cannot hold exactly".into()),
        (ColumnType::Decimal { .. }, Ty::Number(_)) => None,
        (_, other) => Some(format!("computes {}", match other {
            Ty::Number(_) => "a number",
            Ty::Text => "text",
            Ty::Bool => "a boolean",
            Ty::Date => "a date",
            Ty::Timestamp => "a timestamp",
            Ty::Null => "null",
        })),
    }
}

fn result_help(t: ColumnType, ty: Ty) -> String {
    match (t, ty) {
        (ColumnType::Int32 | ColumnType::Int64, Ty::Number(_)) => "round it to a whole number, e.g. `round(x)`, or make the column a decimal".into(),
        (ColumnType::Date, Ty::Timestamp) => "take its date: `date(...)`".into(),
        (ColumnType::Decimal { .. }, _) => "compute it from decimal columns, or make the column a float64".into(),
        _ => format!("make the column's type fit the expression, or the expression give a {t}"),
    }
}

/// Whether a stage's load deletes the table's keys its file lacks, row by row: an upsert with
/// `delete_missing: hard`, or a `mode: replace` on a key with no other `unique` column (one
/// with such a column is emptied first instead).
pub(super) fn deletes_keys(t: &crate::spec::model::Target, stage: &crate::spec::model::Stage) -> bool {
    match t.mode {
        LoadMode::Upsert => t.delete_missing == Some(crate::spec::model::DeleteMissing::Hard),
        LoadMode::Replace => !t.key.is_empty() && !stage.columns.iter().any(|(n, c)| c.unique && !(t.key.len() == 1 && &t.key[0] == n)),
        _ => false,
    }
}
