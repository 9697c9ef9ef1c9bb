//! The spec reference in Markdown, generated from the JSON schema so the README cannot drift from
//! the code (a test compares them).

use std::fmt::Write;

use serde_json::Value;

/// Renders the reference: one section per object type, a row per key.
pub fn markdown(schema: &Value) -> String {
    let mut out = String::new();
    let defs = schema.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default();
    section(&mut out, "Spec (top level)", schema);
    for (name, def) in &defs {
        if def.get("properties").is_some() {
            section(&mut out, name, def);
        } else if let Some(variants) = def.get("oneOf").and_then(Value::as_array) {
            let tagged = variants.iter().all(|v| v.pointer("/properties/type/const").is_some());
            if tagged {
                let _ = writeln!(out, "### {name}\n\n{}\n", describe(def));
                for v in variants {
                    let kind = v.pointer("/properties/type/const").and_then(Value::as_str).unwrap_or("?");
                    section(&mut out, &format!("{name}: `type: {kind}`"), v);
                }
            } else {
                let _ = writeln!(out, "### {name}\n\n{}\n", describe(def));
                for v in variants {
                    if let Some(c) = v.get("const") {
                        let _ = writeln!(out, "- `{}`: {}", plain(c), describe(v));
                    }
                }
                out.push('\n');
            }
        } else {
            let _ = writeln!(out, "### {name}\n\n{} ({})\n", describe(def), type_of(def));
        }
    }
    out
}

fn section(out: &mut String, title: &str, node: &Value) {
    let _ = writeln!(out, "### {title}\n");
    let d = describe(node);
    if !d.is_empty() {
        let _ = writeln!(out, "{d}\n");
    }
    let required: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let _ = writeln!(out, "| key | type | required | meaning |\n|---|---|---|---|");
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            if k == "type" && v.get("const").is_some() {
                continue;
            }
            let req = if required.contains(&k.as_str()) { "yes" } else { "" };
            let _ = writeln!(out, "| `{k}` | {} | {req} | {} |", type_of(v), describe(v).replace('\n', " ").replace('|', "\\|"));
        }
    }
    out.push('\n');
}

fn describe(v: &Value) -> String {
    v.get("description").and_then(Value::as_str).unwrap_or("").trim().to_string()
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn type_of(v: &Value) -> String {
    if let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("[{name}](#{})", name.to_lowercase());
    }
    if let Some(any) = v.get("anyOf").or_else(|| v.get("oneOf")).and_then(Value::as_array) {
        let parts: Vec<String> = any
            .iter()
            .filter(|x| x.get("type") != Some(&Value::from("null")))
            .map(|x| match x.get("const") {
                Some(c) => format!("`{}`", plain(c)),
                None => type_of(x),
            })
            .collect();
        return parts.join(" or ");
    }
    if let Some(e) = v.get("enum").and_then(Value::as_array) {
        return e.iter().map(|x| format!("`{}`", plain(x))).collect::<Vec<_>>().join(" or ");
    }
    let types: Vec<String> = match v.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").map(String::from).collect(),
        _ => vec![],
    };
    let named: Vec<String> = types
        .iter()
        .map(|t| match t.as_str() {
            "array" => format!("list of {}", v.get("items").map_or("values".to_string(), type_of)),
            "object" => match v.get("additionalProperties") {
                Some(ap) if ap.is_object() => format!("map of name → {}", type_of(ap)),
                _ => "mapping".to_string(),
            },
            "integer" => "integer".to_string(),
            other => other.to_string(),
        })
        .collect();
    if named.is_empty() { "any".into() } else { named.join(" or ") }
}
