//! The rule language's parser: text to tokens to an `Expr`, every error with the byte range
//! it is about and a fix where one is known.

use rust_decimal::Decimal;

use super::ast::{BinaryOp, Expr, ExprKind, Func, UnaryOp};
use super::{ExprError, ExprErrorKind};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Number(Decimal),
    Text(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    End,
}

/// A token and the byte range of its text.
type Spanned = (Tok, (usize, usize));

fn lex(src: &str) -> Result<Vec<Spanned>, ExprError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let tok = if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            Tok::Ident(src[start..i].to_string())
        } else if c == b'"' {
            // A quoted identifier, for column names that are keywords.
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += 1;
            }
            if i >= b.len() {
                return Err(syntax("unterminated quoted name", (start, i), None));
            }
            i += 1;
            Tok::Ident(src[start + 1..i - 1].to_string())
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                i += 1;
                if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                    i += 1;
                }
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text = &src[start..i];
            let n = crate::spec::model::parse_decimal(text)
                .ok_or_else(|| syntax(format!("`{text}` is not a number"), (start, i), None))?;
            Tok::Number(n)
        } else if c == b'\'' {
            let mut s = String::new();
            i += 1;
            loop {
                if i >= b.len() {
                    return Err(syntax(
                        "unterminated text literal",
                        (start, i),
                        Some("close it with `'`; write `''` for a quote inside".into()),
                    ));
                }
                if b[i] == b'\'' {
                    if b.get(i + 1) == Some(&b'\'') {
                        s.push('\'');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
                s.push(ch);
                i += ch.len_utf8();
            }
            Tok::Text(s)
        } else {
            let two = src.get(i..i + 2).unwrap_or("");
            let op: Option<&'static str> = match two {
                "<=" => Some("<="),
                ">=" => Some(">="),
                "!=" => Some("!="),
                "<>" => Some("!="),
                "==" => Some("="),
                _ => None,
            };
            if let Some(op) = op {
                i += 2;
                Tok::Op(op)
            } else {
                i += 1;
                match c {
                    b'+' => Tok::Op("+"),
                    b'-' => Tok::Op("-"),
                    b'*' => Tok::Op("*"),
                    b'/' => Tok::Op("/"),
                    b'=' => Tok::Op("="),
                    b'<' => Tok::Op("<"),
                    b'>' => Tok::Op(">"),
                    b'(' => Tok::LParen,
                    b')' => Tok::RParen,
                    b',' => Tok::Comma,
                    _ => {
                        let ch = src[start..].chars().next().unwrap_or('?');
                        return Err(syntax(
                            format!("unexpected character `{ch}`"),
                            (start, start + ch.len_utf8()),
                            None,
                        ));
                    }
                }
            }
        };
        out.push((tok, (start, i)));
    }
    out.push((Tok::End, (src.len(), src.len())));
    Ok(out)
}

fn syntax(msg: impl Into<String>, span: (usize, usize), help: Option<String>) -> ExprError {
    ExprError { message: msg.into(), span, help, kind: ExprErrorKind::Syntax }
}

struct P {
    toks: Vec<Spanned>,
    pos: usize,
}

impl P {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }
    fn span(&self) -> (usize, usize) {
        self.toks[self.pos].1
    }
    fn bump(&mut self) -> (Tok, (usize, usize)) {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }
    fn keyword_at(&self, off: usize, kw: &str) -> bool {
        matches!(self.toks.get(self.pos + off), Some((Tok::Ident(s), _)) if s.eq_ignore_ascii_case(kw))
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut l = self.and()?;
        while self.keyword("or") {
            self.bump();
            let r = self.and()?;
            l = bin(BinaryOp::Or, l, r);
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut l = self.not()?;
        while self.keyword("and") {
            self.bump();
            let r = self.not()?;
            l = bin(BinaryOp::And, l, r);
        }
        Ok(l)
    }
    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.keyword("not") {
            let (_, s) = self.bump();
            let e = self.not()?;
            let span = (s.0, e.span.1);
            return Ok(Expr { kind: ExprKind::Unary(UnaryOp::Not, Box::new(e)), span });
        }
        self.cmp()
    }
    fn cmp(&mut self) -> Result<Expr, ExprError> {
        let l = self.add()?;
        if self.keyword("is") {
            self.bump();
            let negated = if self.keyword("not") {
                self.bump();
                true
            } else {
                false
            };
            if !self.keyword("null") {
                return Err(syntax("expected `null` after `is`", self.span(), None));
            }
            let (_, s) = self.bump();
            let span = (l.span.0, s.1);
            return Ok(Expr { kind: ExprKind::IsNull(Box::new(l), negated), span });
        }
        let negated_in = self.keyword("not") && self.keyword_at(1, "in");
        if self.keyword("in") || negated_in {
            if negated_in {
                self.bump();
            }
            self.bump();
            if *self.peek() != Tok::LParen {
                return Err(syntax("expected `(` after `in`", self.span(), None));
            }
            self.bump();
            let mut items = Vec::new();
            loop {
                items.push(self.add()?);
                match self.bump() {
                    (Tok::Comma, _) => continue,
                    (Tok::RParen, s) => {
                        let span = (l.span.0, s.1);
                        return Ok(Expr { kind: ExprKind::InList(Box::new(l), items, negated_in), span });
                    }
                    (_, s) => return Err(syntax("expected `,` or `)` in the list", s, None)),
                }
            }
        }
        let op = match self.peek() {
            Tok::Op("=") => BinaryOp::Eq,
            Tok::Op("!=") => BinaryOp::NotEq,
            Tok::Op("<") => BinaryOp::Lt,
            Tok::Op("<=") => BinaryOp::LtEq,
            Tok::Op(">") => BinaryOp::Gt,
            Tok::Op(">=") => BinaryOp::GtEq,
            _ => return Ok(l),
        };
        self.bump();
        let r = self.add()?;
        Ok(bin(op, l, r))
    }
    fn add(&mut self) -> Result<Expr, ExprError> {
        let mut l = self.mul()?;
        loop {
            let op = match self.peek() {
                Tok::Op("+") => BinaryOp::Add,
                Tok::Op("-") => BinaryOp::Sub,
                _ => return Ok(l),
            };
            self.bump();
            let r = self.mul()?;
            l = bin(op, l, r);
        }
    }
    fn mul(&mut self) -> Result<Expr, ExprError> {
        let mut l = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Op("*") => BinaryOp::Mul,
                Tok::Op("/") => BinaryOp::Div,
                _ => return Ok(l),
            };
            self.bump();
            let r = self.unary()?;
            l = bin(op, l, r);
        }
    }
    fn unary(&mut self) -> Result<Expr, ExprError> {
        if *self.peek() == Tok::Op("-") {
            let (_, s) = self.bump();
            let e = self.unary()?;
            let span = (s.0, e.span.1);
            if let ExprKind::Number(n) = e.kind {
                return Ok(Expr { kind: ExprKind::Number(-n), span });
            }
            return Ok(Expr { kind: ExprKind::Unary(UnaryOp::Neg, Box::new(e)), span });
        }
        self.primary()
    }
    fn primary(&mut self) -> Result<Expr, ExprError> {
        let (tok, span) = self.bump();
        let kind = match tok {
            Tok::Number(n) => ExprKind::Number(n),
            Tok::Text(s) => ExprKind::Text(s),
            Tok::LParen => {
                let e = self.or()?;
                match self.bump() {
                    (Tok::RParen, s) => return Ok(Expr { kind: e.kind, span: (span.0, s.1) }),
                    (_, s) => return Err(syntax("expected `)`", s, Some("parentheses must balance".into()))),
                }
            }
            Tok::Ident(name) => {
                let lower = name.to_ascii_lowercase();
                match lower.as_str() {
                    "true" => ExprKind::Bool(true),
                    "false" => ExprKind::Bool(false),
                    "null" => ExprKind::Null,
                    "date" | "timestamp" if matches!(self.peek(), Tok::Text(_)) => {
                        let (Tok::Text(text), s) = self.bump() else { unreachable!("peeked a text") };
                        let full = (span.0, s.1);
                        let kind = if lower == "date" { date_literal(&text).map(ExprKind::Date) } else { timestamp_literal(&text).map(ExprKind::Timestamp) };
                        return kind.map(|kind| Expr { kind, span: full }).ok_or_else(|| {
                            let example = if lower == "date" { "date '2025-01-31'" } else { "timestamp '2025-01-31 09:30:00'" };
                            syntax(format!("`{text}` is not a {lower}"), full, Some(format!("write it as {example}")))
                        });
                    }
                    "case" => return self.case(span),
                    "and" | "or" | "not" | "is" | "in" | "when" | "then" | "else" | "end" => {
                        return Err(syntax(format!("expected a value, found `{name}`"), span, None));
                    }
                    _ if *self.peek() == Tok::LParen => {
                        let func = Func::ALL.into_iter().find(|f| f.name() == lower).ok_or_else(|| {
                            let names: Vec<&str> = Func::ALL.iter().map(|f| f.name()).collect();
                            syntax(
                                format!("unknown function `{name}`"),
                                span,
                                Some(format!("functions are {}", names.join(", "))),
                            )
                        })?;
                        self.bump();
                        let mut args = Vec::new();
                        if *self.peek() == Tok::RParen {
                            let (_, s) = self.bump();
                            return Ok(Expr { kind: ExprKind::Call(func, args), span: (span.0, s.1) });
                        }
                        loop {
                            args.push(self.or()?);
                            match self.bump() {
                                (Tok::Comma, _) => continue,
                                (Tok::RParen, s) => {
                                    return Ok(Expr { kind: ExprKind::Call(func, args), span: (span.0, s.1) });
                                }
                                (_, s) => return Err(syntax("expected `,` or `)` after an argument", s, None)),
                            }
                        }
                    }
                    _ => ExprKind::Column(name),
                }
            }
            Tok::End => return Err(syntax("the expression ends too early", span, None)),
            Tok::Op(op) => return Err(syntax(format!("expected a value, found `{op}`"), span, None)),
            Tok::RParen => return Err(syntax("expected a value, found `)`", span, None)),
            Tok::Comma => return Err(syntax("expected a value, found `,`", span, None)),
        };
        Ok(Expr { kind, span })
    }
}

impl P {
    /// After `case`: its `when ... then ...` arms, an optional `else`, and `end`.
    fn case(&mut self, start: (usize, usize)) -> Result<Expr, ExprError> {
        let mut whens = Vec::new();
        while self.keyword("when") {
            self.bump();
            let condition = self.or()?;
            if !self.keyword("then") {
                return Err(syntax("expected `then` after the condition", self.span(), Some("write `case when CONDITION then VALUE ... end`".into())));
            }
            self.bump();
            whens.push((condition, self.or()?));
        }
        if whens.is_empty() {
            return Err(syntax("expected `when` after `case`", self.span(), Some("write `case when CONDITION then VALUE else VALUE end`".into())));
        }
        let otherwise = if self.keyword("else") {
            self.bump();
            Some(Box::new(self.or()?))
        } else {
            None
        };
        if !self.keyword("end") {
            return Err(syntax("expected `end` to close the `case`", self.span(), Some("close it with `end`".into())));
        }
        let (_, s) = self.bump();
        Ok(Expr { kind: ExprKind::Case(whens, otherwise), span: (start.0, s.1) })
    }
}

/// `YYYY-MM-DD` as days since 1970-01-01.
pub fn date_literal(text: &str) -> Option<i32> {
    let d = chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()?;
    i32::try_from(d.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days()).ok()
}

/// `YYYY-MM-DD[ T]HH:MM[:SS[.f]]` (or a date: its midnight) as microseconds since the epoch.
pub fn timestamp_literal(text: &str) -> Option<i64> {
    let t = text.trim();
    let formats = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"];
    let parsed = formats
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(t, f).ok())
        .or_else(|| chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))?;
    Some(parsed.and_utc().timestamp_micros())
}

fn bin(op: BinaryOp, l: Expr, r: Expr) -> Expr {
    let span = (l.span.0, r.span.1);
    Expr { kind: ExprKind::Binary(op, Box::new(l), Box::new(r)), span }
}

/// Parses a rule's text.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    let toks = lex(src)?;
    let mut p = P { toks, pos: 0 };
    let e = p.or()?;
    if *p.peek() != Tok::End {
        let hint = matches!(p.peek(), Tok::Op("=")).then(|| "compare once per rule; join comparisons with `and`".to_string());
        return Err(syntax("unexpected text after the expression", p.span(), hint));
    }
    Ok(e)
}

