//! Layers over the spec file: `--env NAME` overlays (configs/NAME.yaml, merged key by key) and
//! `--set path=value` overrides, each keeping the place its values were written.

use serde_json::Value;

use super::diag::Problem;
use super::source::{Located, Loc, Pointer, SourceId, SpanIndex};
use super::yaml;

/// Merges `overlay` into `base`: mappings merge key by key; anything else is replaced.
/// The index keeps `base`'s places except where `overlay` replaced a value.
pub fn merge(base: &mut Value, base_index: &mut SpanIndex, overlay: Value, overlay_index: &SpanIndex, at: &Pointer) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                let child = at.key(&k);
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge(existing, base_index, v, overlay_index, &child);
                    }
                    _ => {
                        base_index.remove_subtree(&child);
                        base_index.copy_subtree(overlay_index, &child);
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => {
            base_index.remove_subtree(at);
            base_index.copy_subtree(overlay_index, at);
            *b = o;
        }
    }
}

/// One `--set path=value` argument, split.
pub struct SetArg {
    /// The dotted path, e.g. `stages.assets.source.key`.
    pub path: String,
    /// The value's text, read as YAML (`500` is a number, `[a, b]` a list, `'500'` text).
    pub value: String,
}

/// Splits `path=value`.
pub fn parse_set(arg: &str) -> Result<SetArg, String> {
    let (path, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("`--set {}` needs the form path=value, e.g. --set defaults.batch_size=5000", super::secret::shown_set(arg)))?;
    let path = path.trim();
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!("`--set {}`: `{path}` is not a dotted path such as stages.assets.source.key", super::secret::shown_set(arg)));
    }
    Ok(SetArg { path: path.to_string(), value: value.to_string() })
}

/// Applies one `--set` whose value text is source `source`: the value replaces whatever was at
/// the path, creating mappings on the way.
pub fn apply_set(
    root: &mut Value,
    index: &mut SpanIndex,
    set: &SetArg,
    source: SourceId,
    problems: &mut Vec<Problem>,
) -> Option<Pointer> {
    // Problems inside a list or mapping given with --set point at the whole --set value.
    let value = match yaml::parse(&set.value, source) {
        Ok(p) => p.value,
        // Not YAML (e.g. an unbalanced quote): take the text as it is.
        Err(_) => Value::String(set.value.clone()),
    };
    let mut at = Pointer::root();
    let mut cur = root;
    let segs: Vec<&str> = set.path.split('.').collect();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        if let (true, Ok(n)) = (cur.is_array(), seg.parse::<usize>()) {
            let items = cur.as_array_mut().expect("checked above");
            at = at.index(n);
            if n >= items.len() {
                problems.push(
                    Problem::new("spec::set_path", Pointer::root(), format!("`--set {}`: `{seg}` is past the end of a list of {}", set.path, items.len()))
                        .help("--set replaces existing list items; set the whole list instead: --set path='[a, b]'"),
                );
                return None;
            }
            if last {
                items[n] = value;
                break;
            }
            cur = &mut items[n];
            continue;
        }
        if !cur.is_object() {
            problems.push(Problem::new(
                "spec::set_path",
                at.clone(),
                format!("`--set {}`: `{at}` is not a mapping, so it has no key `{seg}`", set.path),
            ));
            return None;
        }
        at = at.key(seg);
        let map = cur.as_object_mut().expect("checked above");
        if last {
            map.insert((*seg).to_string(), value);
            break;
        }
        cur = map.entry((*seg).to_string()).or_insert_with(|| Value::Object(Default::default()));
    }
    index.remove_subtree(&at);
    let whole = Loc { source, start: 0, end: set.value.len() };
    index.insert(at.clone(), Located { key: None, value: whole });
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_replaces_leaves_and_merges_mappings() {
        let mut base = json!({"a": {"x": 1, "y": 2}, "b": [1, 2]});
        let mut idx = SpanIndex::default();
        merge(&mut base, &mut idx, json!({"a": {"y": 3}, "b": [9]}), &SpanIndex::default(), &Pointer::root());
        assert_eq!(base, json!({"a": {"x": 1, "y": 3}, "b": [9]}));
    }

    #[test]
    fn set_creates_paths_and_reads_yaml_scalars() {
        let mut v = json!({"defaults": {}});
        let mut idx = SpanIndex::default();
        let mut problems = Vec::new();
        let set = parse_set("defaults.batch_size=500").unwrap();
        apply_set(&mut v, &mut idx, &set, SourceId(1), &mut problems);
        let set = parse_set("stages.a.source.key='001.csv'").unwrap();
        apply_set(&mut v, &mut idx, &set, SourceId(2), &mut problems);
        assert!(problems.is_empty());
        assert_eq!(v, json!({"defaults": {"batch_size": 500}, "stages": {"a": {"source": {"key": "001.csv"}}}}));
        assert!(parse_set("novalue").is_err());
    }
}
