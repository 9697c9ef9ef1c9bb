//! Spec problems: what is wrong, where (a pointer into the spec), and how to fix it; rendered
//! with miette against the text the value came from.

use std::fmt;

use miette::{Diagnostic, LabeledSpan, NamedSource, Report, SourceSpan};

use super::source::{self, Pointer, Sources, SpanIndex};

/// Which part of a value a problem points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The value.
    Value,
    /// The mapping key naming the value (for unknown or misplaced keys).
    Key,
}

/// One thing wrong with a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Stable machine-readable code, e.g. `spec::unknown_column`.
    pub code: &'static str,
    /// What is wrong, naming the spec path.
    pub message: String,
    /// Where in the spec.
    pub at: Pointer,
    /// Whether to point at the key or the value.
    pub target: Target,
    /// Text under the pointed span.
    pub label: String,
    /// How to fix it, when there is something better to say than the message.
    pub help: Option<String>,
    /// A byte range inside the value's text to point at instead of the whole value
    /// (e.g. one column name inside a rule).
    pub within: Option<(usize, usize)>,
}

impl Problem {
    /// A problem with the value at `at`.
    pub fn new(code: &'static str, at: Pointer, message: impl Into<String>) -> Self {
        Problem {
            code,
            message: message.into(),
            at,
            target: Target::Value,
            label: "here".into(),
            help: None,
            within: None,
        }
    }

    /// Points at the key rather than the value.
    pub fn on_key(mut self) -> Self {
        self.target = Target::Key;
        self
    }

    /// Sets the label text.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Sets the help text.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Sets the help text when there is one.
    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    /// Points at bytes `start..end` of the value's (unquoted) text.
    pub fn within(mut self, start: usize, end: usize) -> Self {
        self.within = Some((start, end));
        self
    }
}

/// A problem placed in its source text, ready for miette.
#[derive(Debug)]
pub struct SpecDiagnostic {
    problem: Problem,
    source: Option<NamedSource<String>>,
    span: Option<SourceSpan>,
}

impl fmt::Display for SpecDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem.message)
    }
}

impl std::error::Error for SpecDiagnostic {}

impl SpecDiagnostic {
    /// As JSON: code, message, help, and where (file, 1-based line and column in characters).
    pub fn to_json(&self) -> serde_json::Value {
        let (mut file, mut line, mut column) = (None, None, None);
        if let (Some(src), Some(span)) = (&self.source, self.span) {
            let text = src.inner();
            let offset = span.offset().min(text.len());
            let before = text.get(..offset).unwrap_or("");
            file = Some(src.name().to_string());
            line = Some(before.matches('\n').count() + 1);
            column = Some(before.rsplit('\n').next().unwrap_or("").chars().count() + 1);
        }
        serde_json::json!({
            "code": self.problem.code,
            "message": self.problem.message,
            "help": self.problem.help,
            "file": file,
            "line": line,
            "column": column,
        })
    }
}

impl Diagnostic for SpecDiagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.problem.code))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.problem.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.span?;
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(self.problem.label.clone()),
            span,
        ))))
    }
}

/// Places each problem in the text its value came from.
pub fn place(problems: &[Problem], sources: &Sources, index: &SpanIndex) -> Vec<SpecDiagnostic> {
    let mut placed: Vec<(usize, usize, SpecDiagnostic)> = problems
        .iter()
        .map(|p| {
            let Some((located, exact)) = index.find(&p.at) else {
                return (usize::MAX, 0, SpecDiagnostic { problem: p.clone(), source: None, span: None });
            };
            let mut loc = match (p.target, located.key) {
                (Target::Key, Some(k)) if exact => k,
                (Target::Key, _) => {
                    // A mapping with no key of its own (the root): point at its first line.
                    let text = &sources.get(located.value.source).text;
                    let first = text[located.value.start..located.value.end].find('\n');
                    let end = first.map_or(located.value.end, |n| located.value.start + n);
                    source::Loc { end, ..located.value }
                }
                _ => located.value,
            };
            if let (Some((s, e)), true) = (p.within, exact) {
                let text = &sources.get(loc.source).text;
                let raw = &text[loc.start..loc.end];
                // Quoted scalars start one byte later; the offsets are into the unquoted text.
                let skip = usize::from(raw.starts_with('"') || raw.starts_with('\''));
                let start = (loc.start + skip + s).min(loc.end);
                let end = (loc.start + skip + e).min(loc.end).max(start);
                if raw.get(skip..).is_some_and(|r| !r.contains('\\')) {
                    loc.start = start;
                    loc.end = end;
                }
            }
            let file = sources.get(loc.source);
            let d = SpecDiagnostic {
                problem: p.clone(),
                source: Some(NamedSource::new(file.name.clone(), file.text.as_ref().clone())),
                span: Some((loc.start, loc.end.saturating_sub(loc.start)).into()),
            };
            (loc.source.0, loc.start, d)
        })
        .collect();
    // In the order a reader meets them: by file, then by place in it.
    placed.sort_by_key(|(source, start, _)| (*source, *start));
    placed.into_iter().map(|(_, _, d)| d).collect()
}

/// Renders diagnostics as text: one block each, in order, without colour when `color` is false.
pub fn render(diags: Vec<SpecDiagnostic>, color: bool, width: usize) -> String {
    use miette::{GraphicalReportHandler, GraphicalTheme};
    let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(width).with_links(false);
    let mut out = String::new();
    for d in diags {
        let report = Report::new(d);
        let _ = handler.render_report(&mut out, report.as_ref());
        out.push('\n');
    }
    out
}

/// "did you mean" for a misspelt name: the closest candidate, if close enough.
pub fn suggest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(&wrong.to_lowercase(), &c.to_lowercase());
        if score > 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}
