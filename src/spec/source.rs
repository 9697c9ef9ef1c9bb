//! The texts a spec is read from (the file, `--env` overlays, `--set` arguments) and where each
//! value of the merged spec sits in them, so every later error can point at a line and column.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Which text a location is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceId(pub usize);

/// One text a spec was read from.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// File name as the user gave it, or `--set` for command-line overrides.
    pub name: String,
    /// The whole text.
    pub text: Arc<String>,
}

/// Every text of one spec load.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    /// Adds a text and returns its id.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> SourceId {
        self.files.push(SourceFile { name: name.into(), text: Arc::new(text.into()) });
        SourceId(self.files.len() - 1)
    }

    /// The text of an id.
    pub fn get(&self, id: SourceId) -> &SourceFile {
        &self.files[id.0]
    }

    /// Every text's id, in the order they were added.
    pub fn ids(&self) -> impl Iterator<Item = SourceId> + use<> {
        (0..self.files.len()).map(SourceId)
    }

    /// Replaces every byte of a range with `*`: the text keeps its length, so every line and
    /// column stays where it was.
    pub fn mask(&mut self, loc: Loc) {
        let Some(file) = self.files.get_mut(loc.source.0) else { return };
        let text = &file.text;
        let (start, end) = (loc.start.min(text.len()), loc.end.min(text.len()));
        if start >= end || !text.is_char_boundary(start) || !text.is_char_boundary(end) {
            return;
        }
        let masked = format!("{}{}{}", &text[..start], "*".repeat(end - start), &text[end..]);
        file.text = Arc::new(masked);
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, loc: Loc) -> (usize, usize) {
        let text = &self.get(loc.source).text;
        let before = &text[..loc.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

/// A byte range in one source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// The text.
    pub source: SourceId,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// Where a value of the spec was written: its key (in a mapping) and its value.
#[derive(Debug, Clone, Copy)]
pub struct Located {
    /// The mapping key, when the value is a mapping entry.
    pub key: Option<Loc>,
    /// The value.
    pub value: Loc,
}

/// A path into the spec, as a JSON pointer (`/stages/assets/columns/cash`).
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Pointer(String);

impl Pointer {
    /// The root of the spec.
    pub fn root() -> Self {
        Pointer(String::new())
    }

    /// Parses a JSON pointer string.
    pub fn parse(s: &str) -> Self {
        Pointer(s.to_string())
    }

    /// This pointer with a mapping key appended.
    pub fn key(&self, k: &str) -> Self {
        let escaped = k.replace('~', "~0").replace('/', "~1");
        Pointer(format!("{}/{}", self.0, escaped))
    }

    /// This pointer with a sequence index appended.
    pub fn index(&self, i: usize) -> Self {
        Pointer(format!("{}/{}", self.0, i))
    }

    /// The JSON pointer text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pointer one level up, or None at the root.
    pub fn parent(&self) -> Option<Self> {
        self.0.rfind('/').map(|i| Pointer(self.0[..i].to_string()))
    }

    /// The unescaped segments.
    pub fn segments(&self) -> Vec<String> {
        if self.0.is_empty() {
            return Vec::new();
        }
        self.0[1..].split('/').map(|s| s.replace("~1", "/").replace("~0", "~")).collect()
    }

    /// Whether `other` is this pointer or below it.
    pub fn contains(&self, other: &Pointer) -> bool {
        other.0 == self.0 || other.0.starts_with(&format!("{}/", self.0))
    }
}

/// Dotted form for messages: `stages.assets.columns.cash`, `stages.trades.rules[0]`.
impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let segs = self.segments();
        if segs.is_empty() {
            return f.write_str("(the spec)");
        }
        for (i, s) in segs.iter().enumerate() {
            if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
                write!(f, "[{s}]")?;
            } else if i == 0 {
                f.write_str(s)?;
            } else {
                write!(f, ".{s}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pointer({:?})", self.0)
    }
}

/// Where every value of the merged spec was written.
#[derive(Debug, Clone, Default)]
pub struct SpanIndex {
    map: HashMap<Pointer, Located>,
}

impl SpanIndex {
    /// Records where the value at `at` was written.
    pub fn insert(&mut self, at: Pointer, located: Located) {
        self.map.insert(at, located);
    }

    /// Every pointer and where its value was written.
    pub fn entries(&self) -> impl Iterator<Item = (&Pointer, &Located)> {
        self.map.iter()
    }

    /// Forgets every location at or below `at` (its value was replaced).
    pub fn remove_subtree(&mut self, at: &Pointer) {
        self.map.retain(|p, _| !at.contains(p));
    }

    /// Copies every entry of `other` in, replacing entries at the same pointers.
    pub fn extend(&mut self, other: SpanIndex) {
        self.map.extend(other.map);
    }

    /// Copies the entries at or below `at` from `other`.
    pub fn copy_subtree(&mut self, other: &SpanIndex, at: &Pointer) {
        for (p, l) in &other.map {
            if at.contains(p) {
                self.map.insert(p.clone(), *l);
            }
        }
    }

    /// Where the value at `at` was written; failing that, where something inside it was (a
    /// mapping a `--set` created, say, has a place only for the value it set), the first in
    /// the text; failing that, its nearest written ancestor (a value that came from an alias or
    /// a default has no place of its own).
    pub fn find(&self, at: &Pointer) -> Option<(Located, bool)> {
        if let Some(l) = self.map.get(at) {
            return Some((*l, true));
        }
        let inside = self.map.iter().filter(|(p, _)| at.contains(p)).map(|(_, l)| *l).min_by_key(|l| (l.value.source.0, l.value.start));
        if let Some(l) = inside {
            return Some((l, false));
        }
        let mut p = at.parent();
        while let Some(cur) = p {
            if let Some(l) = self.map.get(&cur) {
                return Some((*l, false));
            }
            p = cur.parent();
        }
        None
    }
}
