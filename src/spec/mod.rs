//! The spec layer: read a YAML spec (plus `--env` overlay and `--set` overrides), render its
//! templates, check it against the JSON schema and the semantic rules, and return a typed `Spec`
//! or every problem at once. No I/O beyond reading the spec and overlay files.

pub mod check;
pub mod diag;
pub mod expr;
pub mod model;
pub mod overlay;
pub mod pattern;
pub mod reference;
pub mod schema;
pub mod secret;
pub mod source;
pub mod template;
pub mod words;
pub mod yaml;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use diag::Problem;
pub use model::Spec;
use source::{Pointer, SourceId, Sources, SpanIndex};

/// How to read a spec beyond its file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--env NAME`: merge `configs/NAME.yaml` over the spec.
    pub env_name: Option<String>,
    /// Where `configs/` is; by default found next to the spec's directory.
    pub config_dir: Option<PathBuf>,
    /// `--set path=value` overrides, applied in order after the overlay.
    pub sets: Vec<String>,
    /// Environment variables templates may read.
    pub env: BTreeMap<String, String>,
    /// Offline commands: a secret whose template reads an unset variable is left unset.
    pub secrets_optional: bool,
    /// The business date (`--date`); by default the date of `now` in the spec's `timezone`.
    pub date: Option<chrono::NaiveDate>,
    /// The instant the run's date is taken from when `date` is not given (the command's clock,
    /// or a scheduled firing's time). None: the current time.
    pub now: Option<chrono::DateTime<chrono::Utc>>,
}

impl LoadOptions {
    /// Options that read this process's environment.
    pub fn with_process_env() -> Self {
        LoadOptions { env: std::env::vars().collect(), ..Default::default() }
    }
}

/// A spec that passed every check, with what it was read from.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    /// The typed spec, templates rendered.
    pub spec: Spec,
    /// The spec file.
    pub path: PathBuf,
    /// SHA-256 of the spec file, hex.
    pub hash: String,
    /// Every text read, for later diagnostics.
    pub sources: Sources,
    /// Where every value was written.
    pub index: SpanIndex,
    /// The business date its templates saw as `run.date`.
    pub date: chrono::NaiveDate,
}

/// Why a spec could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read spec {path}: {source}")]
    #[diagnostic(code(spec::read), help("check the path; SPEC defaults to $ETL_SPEC, then specs/small_etl.yaml"))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `--env` overlay could not be found or read.
    #[error("no overlay for --env {env}: looked for {tried}")]
    #[diagnostic(code(spec::overlay), help("create configs/{env}.yaml, or pass --config-dir"))]
    Overlay {
        /// The environment name.
        env: String,
        /// Paths tried.
        tried: String,
    },
    /// The spec has problems; each is placed in its text.
    #[error("{file}: {} problem{} in the spec", problems.len(), if problems.len() == 1 { "" } else { "s" })]
    #[diagnostic(code(spec::invalid))]
    Invalid {
        /// The spec file.
        file: String,
        /// Every problem found.
        problems: Vec<Problem>,
        /// The texts, to render the problems against.
        sources: Sources,
        /// Where values were written.
        index: SpanIndex,
    },
}

impl SpecError {
    /// Renders the error for a person: every problem with its file, line, column and the
    /// offending text labelled.
    pub fn render(&self, color: bool) -> String {
        match self {
            SpecError::Invalid { file, problems, sources, index } => {
                let mut out = diag::render(diag::place(problems, sources, index), color, 100);
                let n = problems.len();
                out.push_str(&format!("{file}: {n} problem{} found\n", if n == 1 { "" } else { "s" }));
                out
            }
            other => {
                let mut out = String::new();
                let handler = miette::GraphicalReportHandler::new_themed(if color {
                    miette::GraphicalTheme::unicode()
                } else {
                    miette::GraphicalTheme::unicode_nocolor()
                });
                let _ = handler.render_report(&mut out, other);
                out
            }
        }
    }
}

impl SpecError {
    /// The problems as JSON, for `validate-spec --output json`: code, message, help, and the
    /// file, line and column each is about.
    pub fn problems_json(&self) -> Vec<serde_json::Value> {
        match self {
            SpecError::Invalid { problems, sources, index, .. } => diag::place(problems, sources, index).iter().map(diag::SpecDiagnostic::to_json).collect(),
            other => {
                let help = miette::Diagnostic::help(other).map(|h| h.to_string());
                let code = miette::Diagnostic::code(other).map(|c| c.to_string());
                vec![serde_json::json!({ "code": code, "message": other.to_string(), "help": help })]
            }
        }
    }
}

/// Reads and checks a spec file.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedSpec, SpecError> {
    let text = std::fs::read(path).map_err(|source| SpecError::Read { path: path.to_path_buf(), source })?;
    let text = match String::from_utf8(text) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let mut sources = Sources::default();
            let id = sources.add(path.display().to_string(), lossy);
            let mut index = SpanIndex::default();
            let at = Pointer::parse("/\u{0}utf8");
            index.insert(at.clone(), source::Located { key: None, value: source::Loc { source: id, start: valid, end: valid + 1 } });
            let mut problems = vec![Problem::new("spec::encoding", at, "the spec is not UTF-8 text").label("this byte").help("save the file as UTF-8")];
            let mut secrets = secret::Secrets::default();
            secrets.collect_unparsed(id, &sources);
            secrets.mask(&mut sources, &mut problems);
            return Err(SpecError::Invalid { file: path.display().to_string(), problems, sources, index });
        }
    };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let overlay = match &opts.env_name {
        None => None,
        Some(env) => Some(find_overlay(env, &base_dir, opts.config_dir.as_deref())?),
    };
    load_text(&path.display().to_string(), &text, overlay, opts).map(|mut l| {
        l.path = path.to_path_buf();
        l
    })
}

fn find_overlay(env: &str, spec_dir: &Path, config_dir: Option<&Path>) -> Result<(String, String), SpecError> {
    let file = format!("{env}.yaml");
    let candidates: Vec<PathBuf> = match config_dir {
        Some(d) => vec![d.join(&file)],
        None => {
            let mut v = vec![spec_dir.join("..").join("configs").join(&file), spec_dir.join("configs").join(&file)];
            v.push(PathBuf::from("configs").join(&file));
            v
        }
    };
    for c in &candidates {
        if let Ok(text) = std::fs::read_to_string(c) {
            return Ok((c.display().to_string(), text));
        }
    }
    Err(SpecError::Overlay {
        env: env.to_string(),
        tried: candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

/// Checks a spec given as text; `overlay` is an `--env` file's (name, text).
pub fn load_text(name: &str, text: &str, overlay: Option<(String, String)>, opts: &LoadOptions) -> Result<LoadedSpec, SpecError> {
    let mut sources = Sources::default();
    let id = sources.add(name, text);
    // Every secret, wherever it was written, is masked in what a diagnostic can show.
    let mut secrets = secret::Secrets::default();
    let invalid = |mut problems: Vec<Problem>, mut sources: Sources, index: SpanIndex, secrets: &secret::Secrets| {
        secrets.mask(&mut sources, &mut problems);
        SpecError::Invalid { file: name.to_string(), problems, sources, index }
    };
    let (mut value, mut index) = match yaml::parse(text, id) {
        Ok(p) => (p.value, p.index),
        Err((problems, index)) => {
            secrets.collect(&index, &sources);
            secrets.collect_unparsed(id, &sources);
            return Err(invalid(problems, sources, index, &secrets));
        }
    };
    secrets.collect(&index, &sources);
    if !value.is_object() {
        index.insert(Pointer::root(), source::Located { key: None, value: source::Loc { source: id, start: 0, end: text.len().min(1) } });
        let p = Problem::new("spec::not_a_mapping", Pointer::root(), "a spec is a YAML mapping with `version`, `name`, `connections` and `stages`")
            .label("this is not a mapping");
        secrets.collect_unparsed(id, &sources);
        return Err(invalid(vec![p], sources, index, &secrets));
    }
    let mut problems = Vec::new();
    let mut coercible: HashSet<Pointer> = HashSet::new();
    if let Some((oname, otext)) = overlay {
        let oid = sources.add(oname, otext.clone());
        match yaml::parse(&otext, oid) {
            Ok(p) if p.value.is_object() => {
                secrets.collect(&p.index, &sources);
                overlay::merge(&mut value, &mut index, p.value, &p.index, &Pointer::root())
            }
            Ok(_) | Err(_) => {
                secrets.collect_unparsed(oid, &sources);
                let (ps, oindex) = match yaml::parse(&otext, oid) {
                    Err((ps, i)) => (ps, i),
                    Ok(p) => {
                        let mut i = p.index;
                        let at = Pointer::parse("/\u{0}overlay");
                        i.insert(at.clone(), source::Located { key: None, value: source::Loc { source: oid, start: 0, end: otext.len().min(1) } });
                        (vec![Problem::new("spec::not_a_mapping", at, "an --env overlay is a YAML mapping of spec keys to override")], i)
                    }
                };
                index.extend(oindex);
                problems.extend(ps);
            }
        }
    }
    for arg in &opts.sets {
        match overlay::parse_set(arg) {
            Ok(set) => {
                let sid: SourceId = sources.add(format!("--set {}", set.path), set.value.clone());
                let at = Pointer::root();
                let at = set.path.split('.').fold(at, |p, k| p.key(k));
                secrets.collect_set(&at, sid, &sources);
                if let Some(at) = overlay::apply_set(&mut value, &mut index, &set, sid, &mut problems) {
                    coercible.insert(at);
                }
            }
            Err(msg) => problems.push(Problem::new("spec::set_syntax", Pointer::root(), msg)),
        }
    }
    secrets.collect(&index, &sources);
    // Top-level `x-*` keys hold YAML anchors for reuse; their content was merged where aliased.
    if let Value::Object(m) = &mut value {
        m.retain(|k, _| !k.starts_with("x-"));
    }
    // The business date: given, or today in the spec's time zone (read before templates: a
    // literal there, or UTC).
    let timezone = value.get("timezone").and_then(Value::as_str).and_then(|t| t.parse::<chrono_tz::Tz>().ok()).unwrap_or(chrono_tz::UTC);
    let date = opts.date.unwrap_or_else(|| opts.now.unwrap_or_else(chrono::Utc::now).with_timezone(&timezone).date_naive());
    let ctx = template::Context { env: opts.env.clone(), secrets_optional: opts.secrets_optional, date };
    let template_problems_before = problems.len();
    coercible.extend(template::render(&mut value, &ctx, &mut problems));
    secrets.collect_values(&value);
    let failed_templates: Vec<Pointer> = problems[template_problems_before..].iter().map(|p| p.at.clone()).collect();

    let schema_problems: Vec<Problem> = schema::check(&mut value, &coercible)
        .into_iter()
        .filter(|p| !failed_templates.iter().any(|t| t.contains(&p.at)))
        .collect();
    // Schema problems do not stop the semantic checks where the rest stays checkable: the
    // offending values are set aside and the spec checked without them, so a typo, a wrong type
    // and a wrong column name are all reported in one pass. A semantic problem next to a value
    // set aside (the same mapping, above or below it) may be its consequence, and is not shown.
    let set_aside: Vec<Pointer> = schema_problems.iter().map(|p| p.at.clone()).collect();
    let mut rest = value.clone();
    for at in &set_aside {
        remove_at(&mut rest, at);
    }
    let schema_failed = !schema_problems.is_empty();
    problems.extend(schema_problems);
    if !failed_templates.is_empty() {
        return Err(invalid(problems, sources, index, &secrets));
    }
    let spec: Spec = match serde_path_to_error::deserialize(&rest) {
        Ok(s) => s,
        // A required value was set aside: the schema's problems are the whole story.
        Err(_) if schema_failed => return Err(invalid(problems, sources, index, &secrets)),
        Err(e) => {
            let at = pointer_of(e.path());
            let msg = e.inner().to_string();
            problems.push(Problem::new("spec::bad_value", at.clone(), format!("`{at}`: {msg}")).label("this value"));
            return Err(invalid(problems, sources, index, &secrets));
        }
    };
    let near = |p: &Pointer| {
        set_aside.iter().any(|a| {
            let parent = a.parent().filter(|q| !q.segments().is_empty());
            a.contains(p) || (parent.is_some() && (parent.as_ref() == Some(p) || parent == p.parent()))
        })
    };
    problems.extend(check::check(&spec).into_iter().filter(|p| !near(&p.at)));
    if !problems.is_empty() {
        return Err(invalid(problems, sources, index, &secrets));
    }
    let hash = hex(&Sha256::digest(text.as_bytes()));
    secrets.mask(&mut sources, &mut []);
    Ok(LoadedSpec { spec, path: PathBuf::from(name), hash, sources, index, date })
}

fn remove_at(value: &mut Value, at: &Pointer) {
    let Some(parent) = at.parent() else { return };
    let Some(key) = at.segments().pop() else { return };
    if let Some(Value::Object(m)) = value.pointer_mut(parent.as_str()) {
        m.shift_remove(&key);
    }
}

fn pointer_of(path: &serde_path_to_error::Path) -> Pointer {
    use serde_path_to_error::Segment;
    let mut p = Pointer::root();
    for seg in path.iter() {
        p = match seg {
            Segment::Seq { index } => p.index(*index),
            Segment::Map { key } => p.key(key),
            Segment::Enum { .. } | Segment::Unknown => p,
        };
    }
    p
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
