//! YAML text to a JSON value plus the place of every value, using saphyr's event parser (serde_yaml
//! is unmaintained and never told where a value was). Scalars follow the YAML 1.2 core schema.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};
use serde_json::{Map, Value};

use super::diag::Problem;
use super::source::{Loc, Located, Pointer, SourceId, SpanIndex};

/// A parsed YAML document.
pub struct Parsed {
    /// The document as JSON.
    pub value: Value,
    /// Where each value was written.
    pub index: SpanIndex,
}

/// Parses one YAML document. Problems carry the location in `index` of a partial parse, so
/// callers render them against `text`; a syntax error stops the parse.
pub fn parse(text: &str, source: SourceId) -> Result<Parsed, (Vec<Problem>, SpanIndex)> {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
        text,
        bytes: CharToByte::new(text),
        source,
        index: SpanIndex::default(),
        anchors: HashMap::new(),
        problems: Vec::new(),
        problem_no: 0,
    };
    match b.document() {
        Ok(value) if b.problems.is_empty() => Ok(Parsed { value, index: b.index }),
        Ok(_) => Err((b.problems, b.index)),
        Err(e) => {
            let at = b.loc(e.marker().index(), e.marker().index() + 1);
            let p = b.problem_at(at, "spec::yaml_syntax", format!("the spec is not valid YAML: {}", e.info()));
            b.problems.push(p.label("YAML syntax error here"));
            Err((b.problems, b.index))
        }
    }
}

/// Maps saphyr's character offsets to byte offsets.
struct CharToByte {
    table: Option<Vec<usize>>,
    len: usize,
}

impl CharToByte {
    fn new(text: &str) -> Self {
        let table = (!text.is_ascii())
            .then(|| text.char_indices().map(|(b, _)| b).chain(std::iter::once(text.len())).collect());
        CharToByte { table, len: text.len() }
    }
    fn get(&self, ch: usize) -> usize {
        match &self.table {
            None => ch.min(self.len),
            Some(t) => t.get(ch).copied().unwrap_or(self.len),
        }
    }
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    text: &'a str,
    bytes: CharToByte,
    source: SourceId,
    index: SpanIndex,
    anchors: HashMap<usize, Value>,
    problems: Vec<Problem>,
    problem_no: usize,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), ScanError> {
        match self.parser.next() {
            Some(r) => r,
            None => Ok((Event::StreamEnd, Span::default())),
        }
    }

    fn loc(&self, start_ch: usize, end_ch: usize) -> Loc {
        Loc { source: self.source, start: self.bytes.get(start_ch), end: self.bytes.get(end_ch) }
    }

    fn span_loc(&self, span: Span) -> Loc {
        self.loc(span.start.index(), span.end.index())
    }

    /// A problem at a location that has no pointer of its own: registered under a synthetic
    /// pointer so the renderer can find it.
    fn problem_at(&mut self, at: Loc, code: &'static str, msg: String) -> Problem {
        self.problem_no += 1;
        let ptr = Pointer::parse(&format!("/\u{0}yaml/{}", self.problem_no));
        self.index.insert(ptr.clone(), Located { key: None, value: at });
        Problem::new(code, ptr, msg)
    }

    fn document(&mut self) -> Result<Value, ScanError> {
        let mut value = None;
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => break,
                Event::DocumentStart(_) => {
                    if value.is_some() {
                        let at = self.span_loc(span);
                        let p = self.problem_at(
                            at,
                            "spec::yaml_documents",
                            "a spec file holds one YAML document; this is a second one".into(),
                        );
                        self.problems.push(p.help("remove the `---` line, or split the file"));
                        return Ok(value.unwrap_or(Value::Null));
                    }
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::DocumentEnd) {
                        value = Some(Value::Null);
                        continue;
                    }
                    value = Some(self.node(ev, span, &Pointer::root(), None)?);
                }
                other => {
                    value = Some(self.node(other, span, &Pointer::root(), None)?);
                }
            }
        }
        Ok(value.unwrap_or(Value::Null))
    }

    fn node(&mut self, ev: Event<'a>, span: Span, at: &Pointer, key: Option<Loc>) -> Result<Value, ScanError> {
        let start = self.span_loc(span);
        let (value, end) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let v = self.scalar(&text, style, tag.as_deref(), start);
                if anchor > 0 {
                    self.anchors.insert(anchor, v.clone());
                }
                (v, start.end)
            }
            Event::Alias(id) => {
                let v = match self.anchors.get(&id) {
                    Some(v) => v.clone(),
                    None => {
                        let p = self.problem_at(start, "spec::yaml_alias", "this alias names no anchor".into());
                        self.problems.push(p);
                        Value::Null
                    }
                };
                (v, start.end)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                let end = loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break self.span_loc(span).end;
                    }
                    let p = at.index(items.len());
                    items.push(self.node(ev, span, &p, None)?);
                };
                let v = Value::Array(items);
                if anchor > 0 {
                    self.anchors.insert(anchor, v.clone());
                }
                (v, end)
            }
            Event::MappingStart(anchor, _) => {
                let mut map = Map::new();
                let mut key_locs: HashMap<String, Loc> = HashMap::new();
                let mut merged: Vec<Map<String, Value>> = Vec::new();
                let end = loop {
                    let (kev, kspan) = self.next()?;
                    if matches!(kev, Event::MappingEnd) {
                        break self.span_loc(kspan).end;
                    }
                    let kloc = self.span_loc(kspan);
                    let k = match kev {
                        Event::Scalar(t, _, _, _) => t.into_owned(),
                        _ => {
                            let p = self.problem_at(
                                kloc,
                                "spec::yaml_key",
                                "mapping keys must be plain text, not a list or a mapping".into(),
                            );
                            self.problems.push(p);
                            // Still consume the complex key and its value.
                            let _ = self.node(kev, kspan, &at.key("?"), None)?;
                            let (vev, vspan) = self.next()?;
                            let _ = self.node(vev, vspan, &at.key("?"), None)?;
                            continue;
                        }
                    };
                    let (vev, vspan) = self.next()?;
                    if k == "<<" {
                        let v = self.node(vev, vspan, &at.key("<<"), Some(kloc))?;
                        match v {
                            Value::Object(m) => merged.push(m),
                            Value::Array(list) if list.iter().all(Value::is_object) => {
                                merged.extend(list.into_iter().filter_map(|v| match v {
                                    Value::Object(m) => Some(m),
                                    _ => None,
                                }))
                            }
                            _ => {
                                let p = self.problem_at(
                                    kloc,
                                    "spec::yaml_merge",
                                    "`<<` merges a mapping (or a list of mappings) into this one".into(),
                                );
                                self.problems.push(p);
                            }
                        }
                        continue;
                    }
                    if let Some(first) = key_locs.get(&k).copied() {
                        let line = self.text[..first.start].matches('\n').count() + 1;
                        let p = self.problem_at(kloc, "spec::duplicate_key", format!("key `{k}` appears twice in this mapping"));
                        self.problems.push(
                            p.label("second occurrence")
                                .help(format!("the first is on line {line}; keep one of them")),
                        );
                        let _ = self.node(vev, vspan, &at.key(&format!("{k}\u{0}dup")), None)?;
                        continue;
                    }
                    key_locs.insert(k.clone(), kloc);
                    let child = at.key(&k);
                    let v = self.node(vev, vspan, &child, Some(kloc))?;
                    map.insert(k, v);
                };
                for m in merged {
                    for (k, v) in m {
                        map.entry(k).or_insert(v);
                    }
                }
                let v = Value::Object(map);
                if anchor > 0 {
                    self.anchors.insert(anchor, v.clone());
                }
                (v, end)
            }
            Event::StreamEnd | Event::DocumentEnd | Event::SequenceEnd | Event::MappingEnd => (Value::Null, start.end),
            Event::StreamStart | Event::DocumentStart(_) | Event::Nothing => (Value::Null, start.end),
        };
        let end = end.max(start.start);
        self.index.insert(at.clone(), Located { key, value: Loc { end, ..start } });
        Ok(value)
    }

    fn scalar(&mut self, text: &str, style: ScalarStyle, tag: Option<&saphyr_parser::Tag>, at: Loc) -> Value {
        if let Some(tag) = tag {
            let known = tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!";
            match (known, tag.suffix.as_str()) {
                (true, "str") => return Value::String(text.to_string()),
                (true, "int" | "float" | "bool" | "null") => {}
                _ => {
                    let p = self.problem_at(
                        at,
                        "spec::yaml_tag",
                        format!("YAML tag `{}{}` is not supported in a spec", tag.handle, tag.suffix),
                    );
                    self.problems.push(p.help("remove the tag; write the value plainly"));
                    return Value::String(text.to_string());
                }
            }
        }
        if style != ScalarStyle::Plain {
            return Value::String(text.to_string());
        }
        resolve_plain(text)
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema. A float that a double cannot hold exactly
/// (more significant digits than 15) is kept as its text, so decimal fields read it exactly.
pub fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let t = text;
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = t.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(u) = t.parse::<u64>() {
            return Value::from(u);
        }
        return Value::String(text.to_string());
    }
    if let Some(h) = t.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(h, 16) {
            return Value::from(i);
        }
    if let Some(o) = t.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(o, 8) {
            return Value::from(i);
        }
    if is_float_literal(t)
        && let Ok(f) = t.parse::<f64>() {
            let significant = digits.split(['e', 'E']).next().unwrap_or("").chars().filter(char::is_ascii_digit);
            let sig: String = significant.collect::<String>();
            let sig = sig.trim_start_matches('0').trim_end_matches('0');
            if f.is_finite() && sig.len() <= 15
                && let Some(n) = serde_json::Number::from_f64(f) {
                    return Value::Number(n);
                }
        }
    Value::String(text.to_string())
}

fn is_float_literal(t: &str) -> bool {
    let s = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mant_ok = {
        let mut parts = mantissa.splitn(2, '.');
        let int = parts.next().unwrap_or("");
        let frac = parts.next();
        let int_ok = int.bytes().all(|b| b.is_ascii_digit());
        let frac_ok = frac.is_none_or(|f| f.bytes().all(|b| b.is_ascii_digit()));
        int_ok && frac_ok && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty())) && (frac.is_some() || exp.is_some())
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mant_ok && exp_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        assert_eq!(resolve_plain("12"), Value::from(12));
        assert_eq!(resolve_plain("0.01"), serde_json::json!(0.01));
        assert_eq!(resolve_plain("true"), Value::Bool(true));
        assert_eq!(resolve_plain("~"), Value::Null);
        assert_eq!(resolve_plain("000123"), Value::from(123));
        assert_eq!(resolve_plain("abc"), Value::from("abc"));
        assert_eq!(resolve_plain("123456789012345678.91"), Value::from("123456789012345678.91"));
        assert_eq!(resolve_plain("1e3"), serde_json::json!(1000.0));
        assert_eq!(resolve_plain("yes"), Value::from("yes"));
    }

    #[test]
    fn positions_of_keys_and_values_are_recorded() {
        let text = "a:\n  bb: 1\n  cc: [x, y]\n";
        let p = parse(text, SourceId(0)).ok().unwrap();
        let (l, exact) = p.index.find(&Pointer::root().key("a").key("cc").index(1)).unwrap();
        assert!(exact);
        assert_eq!(&text[l.value.start..l.value.end], "y");
        let (l, _) = p.index.find(&Pointer::root().key("a").key("bb")).unwrap();
        assert_eq!(&text[l.key.unwrap().start..l.key.unwrap().end], "bb");
    }

    #[test]
    fn duplicate_keys_are_problems() {
        let (problems, _) = parse("a: 1\na: 2\n", SourceId(0)).err().unwrap();
        assert_eq!(problems[0].code, "spec::duplicate_key");
    }

    #[test]
    fn anchors_and_merge_keys_work() {
        let p = parse("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n", SourceId(0)).ok().unwrap();
        assert_eq!(p.value["c"], serde_json::json!({"y": 3, "x": 1}));
    }
}
