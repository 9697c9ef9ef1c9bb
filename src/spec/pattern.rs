//! File-set patterns (`source.files`): globs over keys or paths (`*`, `?`, `**`, `{a,b}`) with
//! named captures (`{date}`), compiled to an anchored regular expression, and the literal prefix
//! a listing starts from. Pure: the executor lists, this only matches.

use std::fmt;

use regex::Regex;

/// A compiled `files:` pattern.
#[derive(Clone)]
pub struct Pattern {
    text: String,
    regex: Regex,
    prefix: String,
    captures: Vec<String>,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

/// One file a pattern matched, with its captures in the pattern's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// The key or path, relative to the connection's prefix or directory.
    pub key: String,
    /// `(name, value)` of each capture.
    pub captures: Vec<(String, String)>,
}

impl Pattern {
    /// Compiles a pattern; the error says what is wrong with it.
    pub fn new(text: &str) -> Result<Pattern, String> {
        if text.trim().is_empty() {
            return Err("the pattern is empty".into());
        }
        let mut captures = Vec::new();
        let body = translate(text, &mut captures, false)?;
        let regex = Regex::new(&format!("^{body}$")).map_err(|e| format!("cannot be compiled: {e}"))?;
        let special = text.find(['*', '?', '{']).unwrap_or(text.len());
        Ok(Pattern { text: text.to_string(), regex, prefix: text[..special].to_string(), captures })
    }

    /// The pattern as written (after templating).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text every match starts with: where a listing begins.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The directory part of the prefix (up to its last `/`), for a local walk.
    pub fn prefix_dir(&self) -> &str {
        self.prefix.rfind('/').map_or("", |i| &self.prefix[..i])
    }

    /// Whether the pattern has no wildcard: it names at most one file.
    pub fn is_literal(&self) -> bool {
        self.prefix.len() == self.text.len()
    }

    /// The names of its captures, in order.
    pub fn captures(&self) -> &[String] {
        &self.captures
    }

    /// The match of one key, if it matches.
    pub fn matches(&self, key: &str) -> Option<Matched> {
        let c = self.regex.captures(key)?;
        let captures = self.captures.iter().map(|n| (n.clone(), c.name(n).map_or(String::new(), |m| m.as_str().to_string()))).collect();
        Some(Matched { key: key.to_string(), captures })
    }
}

/// Translates glob text into regex text; `inside` within `{a,b}` alternatives (no captures).
fn translate(text: &str, captures: &mut Vec<String>, inside: bool) -> Result<String, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                let at_start = i == 0 || chars[i - 1] == '/';
                let slash_after = chars.get(i + 2) == Some(&'/');
                if at_start && slash_after {
                    // `**/`: any number of directories, none included.
                    out.push_str("(?:[^/]*/)*");
                    i += 3;
                } else {
                    out.push_str(".*");
                    i += 2;
                }
                continue;
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '{' => {
                let close = chars[i + 1..].iter().position(|&c| c == '}').map(|p| i + 1 + p).ok_or_else(|| format!("the `{{` at character {} is never closed", i + 1))?;
                let inner: String = chars[i + 1..close].iter().collect();
                if inner.contains('{') {
                    return Err(format!("`{{{inner}}}`: braces cannot nest"));
                }
                if inner.contains(',') {
                    let alts: Vec<String> = inner.split(',').map(|a| translate(a, captures, true)).collect::<Result<_, _>>()?;
                    out.push_str(&format!("(?:{})", alts.join("|")));
                } else if inside {
                    return Err(format!("`{{{inner}}}`: a capture cannot be inside `{{a,b}}`"));
                } else if super::check::is_identifier(&inner) {
                    if captures.contains(&inner) {
                        return Err(format!("the capture `{{{inner}}}` appears twice; name each capture once"));
                    }
                    captures.push(inner.clone());
                    out.push_str(&format!("(?P<{inner}>[^/]+?)"));
                } else {
                    return Err(format!(
                        "`{{{inner}}}` is neither a capture (`{{name}}`: letters, digits and _) nor alternatives (`{{a,b}}`)"
                    ));
                }
                i = close + 1;
                continue;
            }
            '}' => return Err(format!("the `}}` at character {} closes nothing", i + 1)),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(p: &str, of: &[&'a str]) -> Vec<&'a str> {
        let p = Pattern::new(p).unwrap();
        of.iter().copied().filter(|k| p.matches(k).is_some()).collect()
    }

    #[test]
    fn globs_match_keys_as_a_shell_would() {
        let all = ["t/2025/12/22/part-1.csv.gz", "t/2025/12/22/part-10.csv", "t/2025/12/22/x/part-2.csv", "t/2025/12/23/part-1.csv", "t/part-1.csv"];
        assert_eq!(keys("t/2025/12/22/part-*.csv*", &all), ["t/2025/12/22/part-1.csv.gz", "t/2025/12/22/part-10.csv"]);
        assert_eq!(keys("t/2025/12/22/part-?.csv.gz", &all), ["t/2025/12/22/part-1.csv.gz"]);
        assert_eq!(keys("t/**/part-1.csv", &all), ["t/2025/12/23/part-1.csv", "t/part-1.csv"]);
        assert_eq!(keys("t/**", &all).len(), 5);
        assert_eq!(keys("t/2025/12/{22,23}/part-1.csv*", &all), ["t/2025/12/22/part-1.csv.gz", "t/2025/12/23/part-1.csv"]);
        assert_eq!(keys("t/part-1.csv", &all), ["t/part-1.csv"]);
        assert_eq!(keys("t/part-1.csv", &["t/part-1xcsv"]), Vec::<&str>::new(), "a dot is a dot");
    }

    #[test]
    fn captures_take_one_path_part_each() {
        let p = Pattern::new("trades/{date}/part-{part}.csv.gz").unwrap();
        assert_eq!(p.captures(), ["date", "part"]);
        assert_eq!(p.prefix(), "trades/");
        let m = p.matches("trades/2025-12-22/part-0001.csv.gz").unwrap();
        assert_eq!(m.captures, [("date".to_string(), "2025-12-22".to_string()), ("part".to_string(), "0001".to_string())]);
        assert!(p.matches("trades/2025/12/part-1.csv.gz").is_none(), "a capture does not cross a /");
        assert!(p.matches("trades//part-1.csv.gz").is_none(), "a capture is never empty");
    }

    #[test]
    fn prefixes_and_literal_patterns() {
        let p = Pattern::new("assets/2025-12-22.csv").unwrap();
        assert!(p.is_literal());
        assert_eq!(p.prefix_dir(), "assets");
        let p = Pattern::new("a/b/c*.csv").unwrap();
        assert_eq!((p.prefix(), p.prefix_dir()), ("a/b/c", "a/b"));
        assert!(!p.is_literal());
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        for (p, says) in [
            ("", "empty"),
            ("a/{date", "never closed"),
            ("a/}b", "closes nothing"),
            ("a/{1x}.csv", "neither a capture"),
            ("a/{d}/{d}.csv", "twice"),
            ("a/{x,{y}}.csv", "nest"),
        ] {
            let e = Pattern::new(p).unwrap_err();
            assert!(e.contains(says), "{p:?}: {e}");
        }
    }
}
