//! Secrets in the texts a spec is read from: every value the schema types as a secret (a
//! connection's `url`, `password`, `secret_access_key` and `session_token`, a webhook's `url`,
//! the spec's or a schedule's) is masked in the texts diagnostics quote, wherever it was written
//! (the spec, an `--env` overlay, a `--set`, a YAML anchor under an `x-*` key, a variable a
//! template takes it from), and in the problems' own words. A diagnostic still points at the
//! line and column of a secret; it never shows it.

use serde_json::Value;

use super::diag::Problem;
use super::source::{Loc, Pointer, SourceId, Sources, SpanIndex};

/// The connection fields whose values are secrets (`spec::model::Secret`; a unit test holds this
/// list to the schema).
pub const FIELDS: [&str; 4] = ["url", "password", "secret_access_key", "session_token"];

/// Shorter texts are masked where they were written, but not looked for in a problem's words,
/// which they would garble.
const SHORTEST_WORD: usize = 4;

/// Whether the value at `at` is a secret: a secret field of a connection, or of a mapping under
/// an `x-*` key (where anchors for connections are kept).
pub fn is_secret(at: &Pointer) -> bool {
    let segments = at.segments();
    match segments.as_slice() {
        [top, _, field] if top == "connections" => FIELDS.contains(&field.as_str()),
        // A webhook's URL: `notify[i].url`, or a schedule's `schedules.S.notify[i].url`.
        [top, _, field] if top == "notify" => field == "url",
        [top, _, notify, _, field] if top == "schedules" && notify == "notify" => field == "url",
        [top, .., field] if top.starts_with("x-") => FIELDS.contains(&field.as_str()),
        _ => false,
    }
}

/// The `--set` argument as it may be shown: its value hidden when its path names a secret.
pub fn shown_set(arg: &str) -> String {
    match FIELDS.iter().filter_map(|f| arg.find(f).map(|i| i + f.len())).min() {
        Some(end) => format!("{}…", &arg[..end]),
        None => arg.to_string(),
    }
}

/// Where secrets were written, and what they are.
#[derive(Debug, Default)]
pub struct Secrets {
    places: Vec<Loc>,
    words: Vec<String>,
}

impl Secrets {
    /// Records every secret an index places (call it for each text's own index, before a
    /// merge replaces its entries).
    pub fn collect(&mut self, index: &SpanIndex, sources: &Sources) {
        for (at, located) in index.entries() {
            if is_secret(at) {
                self.place(located.value, sources);
            }
        }
    }

    /// Records the secrets of a `--set`: its whole text when its path is a secret, else those
    /// its value spells out (a mapping given whole is placed as one value, not by its fields).
    pub fn collect_set(&mut self, path: &Pointer, source: SourceId, sources: &Sources) {
        if is_secret(path) {
            let len = sources.get(source).text.len();
            self.place(Loc { source, start: 0, end: len }, sources);
        } else {
            self.collect_unparsed(source, sources);
        }
    }

    /// For a text that could not be parsed (so no index places its values): the value after
    /// each secret field's name, to the end of its line or flow item.
    pub fn collect_unparsed(&mut self, source: SourceId, sources: &Sources) {
        let text = sources.get(source).text.clone();
        let fields = FIELDS.join("|");
        let pattern = format!(r#"(?:^|[\s{{,])(?:{fields})\s*:[ \t]*("(?:[^"\\\n]|\\.)*"?|'(?:[^'\n]|'')*'?|[^,}}\n]*)"#);
        let re = regex::Regex::new(&pattern).expect("a valid pattern");
        for c in re.captures_iter(&text) {
            if let Some(m) = c.get(1).filter(|m| !m.as_str().trim().is_empty()) {
                self.place(Loc { source, start: m.start(), end: m.end() }, sources);
            }
        }
    }

    /// Records the values the merged spec holds at secret paths (a template may have put them
    /// there, from a variable written elsewhere): they are looked for in the texts and in the
    /// problems' words.
    pub fn collect_values(&mut self, value: &Value) {
        self.collect_values_at(value, &Pointer::root());
    }

    fn collect_values_at(&mut self, value: &Value, at: &Pointer) {
        if is_secret(at) {
            self.word(match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        match value {
            Value::Object(m) => m.iter().for_each(|(k, v)| self.collect_values_at(v, &at.key(k))),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| self.collect_values_at(v, &at.index(i))),
            _ => {}
        }
    }

    fn place(&mut self, loc: Loc, sources: &Sources) {
        let text = &sources.get(loc.source).text;
        if let Some(raw) = text.get(loc.start..loc.end) {
            let bare = raw.trim().trim_matches(['"', '\'']).to_string();
            self.word(bare);
            self.places.push(loc);
        }
    }

    fn word(&mut self, w: String) {
        if w.chars().count() >= SHORTEST_WORD && !self.words.contains(&w) {
            self.words.push(w);
        }
    }

    /// Masks every recorded secret in the texts (each byte becomes `*`, so every line and column
    /// stays where it was), wherever else its value is written too (a variable a template put in
    /// a secret field: `vars: {pw: ...}`), and in the problems' words.
    pub fn mask(&self, sources: &mut Sources, problems: &mut [Problem]) {
        for loc in &self.places {
            sources.mask(*loc);
        }
        let ids: Vec<SourceId> = sources.ids().collect();
        for source in ids {
            let text = sources.get(source).text.clone();
            for w in &self.words {
                for (start, _) in text.match_indices(w.as_str()) {
                    sources.mask(Loc { source, start, end: start + w.len() });
                }
            }
        }
        // Longest first: a secret that contains another is hidden whole.
        let mut words: Vec<&String> = self.words.iter().collect();
        words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        let hide = |s: &mut String| {
            for w in &words {
                if s.contains(w.as_str()) {
                    *s = s.replace(w.as_str(), "******");
                }
            }
        };
        for p in problems {
            hide(&mut p.message);
            hide(&mut p.label);
            if let Some(h) = p.help.as_mut() {
                hide(h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema's secrets are exactly `FIELDS`: a new secret field must be added there.
    #[test]
    fn the_secret_fields_are_the_schemas() {
        let schema = crate::spec::schema::schema();
        let text = serde_json::to_string(&schema).unwrap();
        fn walk(v: &Value, found: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::Object(props)) = m.get("properties") {
                        for (name, p) in props {
                            if p.to_string().contains("#/$defs/Secret") && !found.contains(name) {
                                found.push(name.clone());
                            }
                        }
                    }
                    m.values().for_each(|x| walk(x, found));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, found)),
                _ => {}
            }
        }
        let mut found: Vec<String> = Vec::new();
        walk(&schema, &mut found);
        found.sort();
        let mut want: Vec<String> = FIELDS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(found, want, "{text}");
    }

    #[test]
    fn secrets_are_found_in_unparsed_text_and_set_arguments_are_cut() {
        let mut sources = Sources::default();
        let text = "db: { type: postgres, password: \"p4ss-word\", port: 1 }\nurl: 'postgres://u:pw@h/d'\nname: x\n";
        let id = sources.add("s.yaml", text);
        let mut s = Secrets::default();
        s.collect_unparsed(id, &sources);
        s.mask(&mut sources, &mut []);
        let masked = sources.get(id).text.to_string();
        assert!(!masked.contains("p4ss-word") && !masked.contains("u:pw@h"), "{masked}");
        assert!(masked.contains("port: 1 }") && masked.contains("name: x"), "{masked}");
        assert_eq!(masked.len(), text.len());
        assert_eq!(shown_set("connections.db.password=hunter22"), "connections.db.password…");
        assert_eq!(shown_set("defaults.batch_size=5"), "defaults.batch_size=5");
    }
}
