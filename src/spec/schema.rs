//! The spec's JSON schema (draft 2020-12), generated from the serde types, and the check of a
//! spec tree against it, with errors turned into problems that say what to write instead.

use std::collections::HashSet;

use jsonschema::error::ValidationErrorKind;
use jsonschema::ValidationError;
use serde_json::Value;

use super::diag::{Problem, suggest};
use super::model::{COLUMN_TYPE_PATTERN, Spec};
use super::source::Pointer;

/// The `$id` of the schema, also its path in the repository.
pub const SCHEMA_ID: &str = "https://etl.dev/schemas/etl-spec.schema.json";

/// The schema as JSON.
pub fn schema() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().for_deserialize().into_generator();
    let schema = generator.into_root_schema_for::<Spec>();
    let mut v = schema.to_value();
    if let Value::Object(m) = &mut v {
        m.insert("$id".into(), Value::from(SCHEMA_ID));
        m.insert("title".into(), Value::from("etl spec"));
        m.insert(
            "patternProperties".into(),
            serde_json::json!({ "^x-": { "description": "Extension keys, ignored by etl: a place for YAML anchors shared by stages." } }),
        );
    }
    v
}

/// The schema as the committed file holds it: pretty JSON with a final newline.
pub fn schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).expect("a JSON value always serialises");
    s.push('\n');
    s
}

/// Checks `value` against the schema. Strings that a template or `--set` produced (`coercible`)
/// are read as the number or boolean the schema asks for, as a person would expect of
/// `port: "{{ env.DB_PORT | default(5432) }}"`.
pub fn check(value: &mut Value, coercible: &HashSet<Pointer>) -> Vec<Problem> {
    let schema = schema();
    let validator = jsonschema::draft202012::new(&schema).expect("the generated schema is valid");
    for _ in 0..4 {
        let mut fixes = Vec::new();
        for e in validator.iter_errors(value) {
            collect_coercions(&e, coercible, &mut fixes);
        }
        if fixes.is_empty() {
            break;
        }
        for (ptr, v) in fixes {
            if let Some(slot) = value.pointer_mut(ptr.as_str()) {
                *slot = v;
            }
        }
    }
    let mut problems = Vec::new();
    for e in validator.iter_errors(value) {
        convert(&e, value, &schema, &mut problems);
    }
    split_decimals(value, &mut problems);
    problems.sort_by(|a, b| a.at.cmp(&b.at));
    problems.dedup();
    problems
}

/// `{ type: decimal(12,2) }` unquoted in a flow mapping is read by YAML as `type: decimal(12`
/// and a key `2)`: one problem, saying to quote it, instead of an unknown type and an unknown key.
fn split_decimals(root: &Value, problems: &mut Vec<Problem>) {
    let split: Vec<(Pointer, String, String)> = problems
        .iter()
        .filter(|p| p.code == "spec::unknown_type")
        .filter_map(|p| {
            let parent = p.at.parent()?;
            let Value::Object(map) = lookup(root, &parent)? else { return None };
            let ty = map.get("type")?.as_str()?;
            let open = ty.strip_prefix("decimal(").filter(|r| r.chars().all(|c| c.is_ascii_digit() || c.is_whitespace()))?;
            let rest = map.keys().find(|k| k.trim_end().ends_with(')') && k.trim_end_matches([')', ' ']).trim().chars().all(|c| c.is_ascii_digit()))?;
            Some((parent, format!("decimal({},{})", open.trim(), rest.trim_end_matches([')', ' ']).trim()), rest.clone()))
        })
        .collect();
    for (parent, written, key) in split {
        problems.retain(|p| !(p.at == parent.key("type") || p.at == parent.key(&key)));
        problems.push(
            Problem::new("spec::unquoted_type", parent.key("type"), format!("`{written}` at `{}` must be quoted", parent.key("type")))
                .label("YAML splits an unquoted `decimal(P,S)` at the comma")
                .help(format!("write type: \"{written}\"")),
        );
    }
}

fn lookup<'v>(root: &'v Value, at: &Pointer) -> Option<&'v Value> {
    at.segments().iter().try_fold(root, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn collect_coercions(e: &ValidationError<'_>, coercible: &HashSet<Pointer>, out: &mut Vec<(Pointer, Value)>) {
    match e.kind() {
        ValidationErrorKind::Type { .. } => {
            let ptr = Pointer::parse(e.instance_path().as_str());
            if let (true, Value::String(s)) = (coercible.contains(&ptr), e.instance().as_ref()) {
                let t = s.trim();
                // A template that renders empty means "not set" (e.g. a port left to DATABASE_URL).
                let v = if t.is_empty() {
                    Some(Value::Null)
                } else if let Ok(i) = t.parse::<i64>() {
                    Some(Value::from(i))
                } else if let Some(n) = t.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                    Some(Value::Number(n))
                } else {
                    match t {
                        "true" => Some(Value::Bool(true)),
                        "false" => Some(Value::Bool(false)),
                        _ => None,
                    }
                };
                if let Some(v) = v {
                    out.push((ptr, v));
                }
            }
        }
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            for branch in context {
                for e in branch {
                    collect_coercions(e, coercible, out);
                }
            }
        }
        _ => {}
    }
}

fn convert(e: &ValidationError<'_>, root: &Value, schema: &Value, out: &mut Vec<Problem>) {
    let at = Pointer::parse(e.instance_path().as_str());
    let instance = e.instance();
    match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed = allowed_keys(schema, e.evaluation_path().as_str());
            for k in unexpected {
                let help = suggest(k, allowed.iter().map(String::as_str))
                    .or_else(|| (!allowed.is_empty()).then(|| format!("allowed keys here: {}", allowed.join(", "))));
                let place = if at.segments().is_empty() { "at the top level".to_string() } else { format!("in `{at}`") };
                out.push(
                    Problem::new("spec::unknown_key", at.key(k), format!("unknown key `{k}` {place}"))
                        .on_key()
                        .label("not a key of this mapping")
                        .maybe_help(help),
                );
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or("?");
            let place = if at.segments().is_empty() { "the spec".to_string() } else { format!("`{at}`") };
            out.push(
                Problem::new("spec::missing_key", at.clone(), format!("{place} is missing the required key `{name}`"))
                    .on_key()
                    .label(format!("add `{name}:` here")),
            );
        }
        ValidationErrorKind::Type { kind } => {
            let expected = describe_kind(kind, instance);
            let mut problem = Problem::new("spec::wrong_type", at.clone(), format!("`{at}` must be {expected}, not {}", describe_value(instance)))
                .label(format!("expected {expected}"));
            // YAML reads `NULL`, `null`, `~` and nothing at all as null, where a text was meant.
            if instance.is_null() && expected.starts_with("text") {
                problem = problem.help("YAML reads NULL, null, ~ and an empty value as null: quote it to mean the text (\"NULL\")");
            }
            out.push(problem);
        }
        ValidationErrorKind::Enum { options } => {
            let opts: Vec<String> = options.as_array().map(|a| a.iter().map(plain).collect()).unwrap_or_default();
            let got = plain(instance);
            let help = suggest(&got, opts.iter().map(String::as_str)).unwrap_or_else(|| format!("write one of: {}", opts.join(", ")));
            out.push(
                Problem::new("spec::bad_value", at.clone(), format!("`{at}` cannot be `{got}`"))
                    .label(format!("one of {}", opts.join(", ")))
                    .help(help),
            );
        }
        ValidationErrorKind::Constant { expected_value } => {
            out.push(
                Problem::new(
                    "spec::bad_value",
                    at.clone(),
                    format!("`{at}` must be {}", plain(expected_value)),
                )
                .label("this value"),
            );
        }
        ValidationErrorKind::Pattern { pattern } if pattern == COLUMN_TYPE_PATTERN => {
            let got = plain(instance);
            let names = ["string", "int32", "int64", "decimal(20,2)", "float64", "bool", "date", "timestamp"];
            let aliases = [("str", "string"), ("text", "string"), ("varchar", "string"), ("int", "int32"), ("integer", "int32"),
                ("bigint", "int64"), ("long", "int64"), ("numeric", "decimal(20,2)"), ("decimal", "decimal(20,2)"),
                ("float", "float64"), ("double", "float64"), ("boolean", "bool"), ("datetime", "timestamp")];
            let lower = got.to_lowercase();
            let help = aliases
                .iter()
                .find(|(a, _)| *a == lower)
                .map(|(_, t)| format!("did you mean `{t}`?"))
                .or_else(|| suggest(&got, names))
                .unwrap_or_else(|| format!("types are: {}", names.join(", ")));
            out.push(
                Problem::new("spec::unknown_type", at.clone(), format!("unknown column type `{got}` at `{at}`"))
                    .label("not a column type")
                    .help(help),
            );
        }
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            narrow(&at, instance, context, root, schema, out);
        }
        ValidationErrorKind::Pattern { .. } if at.segments().last().is_some_and(|k| k == "multiple_of" || k == "tolerance") => {
            out.push(
                Problem::new("spec::bad_value", at.clone(), format!("`{at}` must be a decimal number, not {}", describe_value(instance)))
                    .label("not a number")
                    .help("write a number, e.g. 0.01 (quote it to keep more digits than a double holds: \"0.01\")"),
            );
        }
        ValidationErrorKind::Minimum { limit } => {
            out.push(Problem::new("spec::out_of_range", at.clone(), format!("`{at}` must be at least {limit}")).label("too small"));
        }
        ValidationErrorKind::Maximum { limit } => {
            out.push(Problem::new("spec::out_of_range", at.clone(), format!("`{at}` must be at most {limit}")).label("too large"));
        }
        _ => {
            out.push(Problem::new("spec::schema", at.clone(), format!("`{at}`: {e}")).label("here"));
        }
    }
}

/// Explains a value that fits none of a union's shapes: for a tagged union (connections), the
/// errors of the branch its `type` chose; otherwise what each shape wanted.
fn narrow(
    at: &Pointer,
    instance: &Value,
    context: &[Vec<ValidationError<'static>>],
    root: &Value,
    schema: &Value,
    out: &mut Vec<Problem>,
) {
    let tag_ptr = at.key("type");
    if let Some(obj) = instance.as_object() {
        let tag_errors = |branch: &Vec<ValidationError<'static>>| {
            branch.iter().any(|e| {
                let p = Pointer::parse(e.instance_path().as_str());
                p == tag_ptr || (p == *at && matches!(e.kind(), ValidationErrorKind::Required { property } if property == "type"))
            })
        };
        let kinds: Vec<String> = context
            .iter()
            .flat_map(|b| b.iter())
            .filter_map(|e| match e.kind() {
                ValidationErrorKind::Constant { expected_value } if Pointer::parse(e.instance_path().as_str()) == tag_ptr => {
                    expected_value.as_str().map(str::to_string)
                }
                _ => None,
            })
            .collect();
        if obj.contains_key("type") || context.iter().all(tag_errors) {
            let matching: Vec<&Vec<ValidationError<'static>>> = context.iter().filter(|b| !tag_errors(b)).collect();
            if let [branch] = matching.as_slice() {
                for e in branch.iter() {
                    convert(e, root, schema, out);
                }
                return;
            }
            if matching.is_empty() && !kinds.is_empty() {
                match obj.get("type") {
                    Some(t) => {
                        let got = plain(t);
                        out.push(
                            Problem::new("spec::bad_value", tag_ptr, format!("unknown connection type `{got}` at `{at}`"))
                                .label(format!("one of {}", kinds.join(", ")))
                                .help(suggest(&got, kinds.iter().map(String::as_str)).unwrap_or_else(|| format!("write one of: {}", kinds.join(", ")))),
                        );
                    }
                    None => out.push(
                        Problem::new("spec::missing_key", at.clone(), format!("`{at}` is missing the required key `type`"))
                            .on_key()
                            .label("add `type:` here")
                            .help(format!("type is one of: {}", kinds.join(", "))),
                    ),
                }
                return;
            }
        }
    }
    // Untagged, and one shape fits at this level (every error of it lies inside the value: a
    // mapping where the other shapes wanted text): that shape's errors, each at its own place.
    let inside = |branch: &&Vec<ValidationError<'static>>| !branch.is_empty() && branch.iter().all(|e| Pointer::parse(e.instance_path().as_str()) != *at);
    if let [branch] = context.iter().filter(inside).collect::<Vec<_>>().as_slice() {
        for e in branch.iter() {
            convert(e, root, schema, out);
        }
        return;
    }
    // Untagged: say what each shape wanted.
    let wants: Vec<String> = context
        .iter()
        .filter_map(|branch| {
            branch.first().map(|e| match e.kind() {
                ValidationErrorKind::Constant { expected_value } => format!("`{}`", plain(expected_value)),
                ValidationErrorKind::Type { kind } => describe_kind(kind, instance),
                _ => e.to_string(),
            })
        })
        .collect();
    let consts: Vec<String> = context
        .iter()
        .filter_map(|b| match b.first().map(|e| e.kind()) {
            Some(ValidationErrorKind::Constant { expected_value }) if b.len() == 1 => Some(plain(expected_value)),
            _ => None,
        })
        .collect();
    if consts.len() == context.len() && !consts.is_empty() {
        let got = plain(instance);
        out.push(
            Problem::new("spec::bad_value", at.clone(), format!("`{at}` cannot be `{got}`"))
                .label(format!("one of {}", consts.join(", ")))
                .help(suggest(&got, consts.iter().map(String::as_str)).unwrap_or_else(|| format!("write one of: {}", consts.join(", ")))),
        );
        return;
    }
    out.push(
        Problem::new("spec::wrong_type", at.clone(), format!("`{at}` must be {}, not {}", wants.join(" or "), describe_value(instance)))
            .label("this value"),
    );
}

/// The types a value should have had; "empty" (null, for optional keys) only when it was null.
fn describe_kind(kind: &jsonschema::error::TypeKind, instance: &Value) -> String {
    let names: Vec<String> = match kind {
        jsonschema::error::TypeKind::Single(t) => vec![t.to_string()],
        jsonschema::error::TypeKind::Multiple(ts) => ts.iter().map(|t| t.to_string()).collect(),
    };
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| n != "null" || instance.is_null())
        .map(|n| describe_type(&n))
        .collect();
    names.join(" or ")
}

/// The keys the schema allows where an `additionalProperties` error was raised, found by walking
/// the error's evaluation path (which includes the `$ref`s it followed).
fn allowed_keys(schema: &Value, evaluation_path: &str) -> Vec<String> {
    let mut node = schema;
    let segs: Vec<String> = Pointer::parse(evaluation_path).segments();
    let n = segs.len().saturating_sub(1); // drop the final "additionalProperties"
    for seg in &segs[..n] {
        if seg == "$ref" {
            let Some(r) = node.get("$ref").and_then(Value::as_str) else { return Vec::new() };
            let Some(target) = r.strip_prefix('#').and_then(|p| schema.pointer(p)) else { return Vec::new() };
            node = target;
            continue;
        }
        node = match node {
            Value::Object(m) => match m.get(seg) {
                Some(v) => v,
                None => return Vec::new(),
            },
            Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(v) => v,
                None => return Vec::new(),
            },
            _ => return Vec::new(),
        };
    }
    node.get("properties")
        .and_then(Value::as_object)
        .map(|m| m.keys().filter(|k| *k != "type" || !node.get("required").is_some_and(|r| r.to_string().contains("\"type\""))).cloned().collect())
        .unwrap_or_default()
}

fn describe_type(t: &str) -> String {
    match t {
        "object" => "a mapping".into(),
        "array" => "a list".into(),
        "string" => "text".into(),
        "integer" => "a whole number".into(),
        "number" => "a number".into(),
        "boolean" => "true or false".into(),
        "null" => "empty".into(),
        other => other.into(),
    }
}

fn describe_value(v: &Value) -> String {
    match v {
        Value::Null => "empty".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the text `{s}`"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
