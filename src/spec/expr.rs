//! The rule language: a small SQL-like boolean expression over one row's columns, parsed to an
//! AST with byte spans and type-checked against the stage's columns.

use std::fmt;

use indexmap::IndexMap;
use rust_decimal::Decimal;

use super::model::ColumnType;

/// An expression with the byte range of its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Byte range in the rule's text.
    pub span: (usize, usize),
}

/// The kinds of expression.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A column of the row.
    Column(String),
    /// A number literal, exact.
    Number(Decimal),
    /// A text literal.
    Text(String),
    /// true or false.
    Bool(bool),
    /// null.
    Null,
    /// `-x` or `not x`.
    Unary(UnaryOp, Box<Expr>),
    /// `a op b`.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `x is null` (negated: `x is not null`).
    IsNull(Box<Expr>, bool),
    /// `x in (a, b)` (negated: `not in`).
    InList(Box<Expr>, Vec<Expr>, bool),
    /// A function call.
    Call(Func, Vec<Expr>),
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// Arithmetic negation.
    Neg,
    /// Logical negation.
    Not,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `=`
    Eq,
    /// `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `and`
    And,
    /// `or`
    Or,
}

impl BinaryOp {
    fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
        }
    }
    /// Whether the operator compares two values.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::NotEq | BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq
        )
    }
}

/// Functions a rule may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// Absolute value.
    Abs,
    /// First non-null argument.
    Coalesce,
    /// Length of a text in characters.
    Length,
    /// Round to N decimal places.
    Round,
}

impl Func {
    fn name(self) -> &'static str {
        match self {
            Func::Abs => "abs",
            Func::Coalesce => "coalesce",
            Func::Length => "length",
            Func::Round => "round",
        }
    }
    const ALL: [Func; 4] = [Func::Abs, Func::Coalesce, Func::Length, Func::Round];
}

/// A syntax or type error in a rule, with the byte range it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// What is wrong.
    pub message: String,
    /// Byte range in the rule's text.
    pub span: (usize, usize),
    /// How to fix it.
    pub help: Option<String>,
    /// Which kind of mistake: `syntax`, `unknown_column`, `type`.
    pub kind: ExprErrorKind,
}

/// Kinds of rule errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExprErrorKind {
    /// Not a well-formed expression.
    Syntax,
    /// Names no column of the stage.
    UnknownColumn,
    /// Operands of the wrong type.
    Type,
}

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

fn lex(src: &str) -> Result<Vec<(Tok, (usize, usize))>, ExprError> {
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
            let n = super::model::parse_decimal(text)
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
    toks: Vec<(Tok, (usize, usize))>,
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
                    "and" | "or" | "not" | "is" | "in" => {
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

/// The type of an expression's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// Any number: integer, decimal or float.
    Number(NumKind),
    /// Text.
    Text,
    /// Boolean.
    Bool,
    /// A date.
    Date,
    /// A timestamp.
    Timestamp,
    /// The null literal: fits anywhere.
    Null,
}

/// The kind of a number: decides how the plan computes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumKind {
    /// A whole number.
    Int,
    /// An exact decimal with this many digits after the point.
    Decimal(u32),
    /// A binary float.
    Float,
}

impl Ty {
    /// The type of a column's values.
    pub fn of_column(t: ColumnType) -> Ty {
        match t {
            ColumnType::String => Ty::Text,
            ColumnType::Int32 | ColumnType::Int64 => Ty::Number(NumKind::Int),
            ColumnType::Decimal { scale, .. } => Ty::Number(NumKind::Decimal(u32::from(scale))),
            ColumnType::Float64 => Ty::Number(NumKind::Float),
            ColumnType::Bool => Ty::Bool,
            ColumnType::Date => Ty::Date,
            ColumnType::Timestamp => Ty::Timestamp,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Ty::Number(_) => "a number",
            Ty::Text => "text",
            Ty::Bool => "a boolean",
            Ty::Date => "a date",
            Ty::Timestamp => "a timestamp",
            Ty::Null => "null",
        }
    }
    fn same_family(self, other: Ty) -> bool {
        matches!(
            (self, other),
            (Ty::Number(_), Ty::Number(_))
                | (Ty::Text, Ty::Text)
                | (Ty::Bool, Ty::Bool)
                | (Ty::Date, Ty::Date)
                | (Ty::Timestamp, Ty::Timestamp)
                | (Ty::Date, Ty::Timestamp)
                | (Ty::Timestamp, Ty::Date)
                | (Ty::Null, _)
                | (_, Ty::Null)
        )
    }
}

/// Combines two number kinds for arithmetic: floats win, decimals keep the larger scale
/// (the product's scale is the sum).
pub fn combine(op: BinaryOp, a: NumKind, b: NumKind) -> NumKind {
    use NumKind::*;
    match (a, b) {
        (Float, _) | (_, Float) => Float,
        (Int, Int) if op != BinaryOp::Div => Int,
        _ if op == BinaryOp::Div => Float,
        (Decimal(x), Decimal(y)) if op == BinaryOp::Mul => Decimal(x + y),
        (Decimal(x), Decimal(y)) => Decimal(x.max(y)),
        (Decimal(x), Int) | (Int, Decimal(x)) => Decimal(x),
        (Int, Int) => Int,
    }
}

/// The scale a number literal needs.
pub fn literal_kind(n: Decimal) -> NumKind {
    if n.normalize().scale() == 0 { NumKind::Int } else { NumKind::Decimal(n.normalize().scale()) }
}

/// Type-checks an expression against the stage's columns and returns its type.
pub fn type_of(e: &Expr, columns: &IndexMap<String, ColumnType>) -> Result<Ty, ExprError> {
    let err = |msg: String, span, help: Option<String>| ExprError { message: msg, span, help, kind: ExprErrorKind::Type };
    Ok(match &e.kind {
        ExprKind::Column(name) => match columns.get(name) {
            Some(t) => Ty::of_column(*t),
            None => {
                return Err(ExprError {
                    message: format!("unknown column `{name}`"),
                    span: e.span,
                    help: super::diag::suggest(name, columns.keys().map(String::as_str))
                        .or_else(|| Some(format!("the stage's columns are {}", list(columns.keys())))),
                    kind: ExprErrorKind::UnknownColumn,
                });
            }
        },
        ExprKind::Number(n) => Ty::Number(literal_kind(*n)),
        ExprKind::Text(_) => Ty::Text,
        ExprKind::Bool(_) => Ty::Bool,
        ExprKind::Null => Ty::Null,
        ExprKind::Unary(UnaryOp::Neg, x) => match type_of(x, columns)? {
            t @ (Ty::Number(_) | Ty::Null) => t,
            t => return Err(err(format!("cannot negate {}", t.name()), x.span, None)),
        },
        ExprKind::Unary(UnaryOp::Not, x) => match type_of(x, columns)? {
            Ty::Bool | Ty::Null => Ty::Bool,
            t => return Err(err(format!("`not` needs a boolean, found {}", t.name()), x.span, None)),
        },
        ExprKind::IsNull(x, _) => {
            type_of(x, columns)?;
            Ty::Bool
        }
        ExprKind::InList(x, items, _) => {
            let t = type_of(x, columns)?;
            for i in items {
                let it = type_of(i, columns)?;
                if !t.same_family(it) {
                    return Err(err(format!("cannot compare {} with {}", t.name(), it.name()), i.span, None));
                }
            }
            Ty::Bool
        }
        ExprKind::Binary(op, l, r) => {
            let lt = type_of(l, columns)?;
            let rt = type_of(r, columns)?;
            match op {
                BinaryOp::And | BinaryOp::Or => {
                    for (t, s) in [(lt, l.span), (rt, r.span)] {
                        if !matches!(t, Ty::Bool | Ty::Null) {
                            return Err(err(
                                format!("`{}` joins conditions, but this is {}", op.symbol(), t.name()),
                                s,
                                Some("write a comparison here, e.g. `x > 0`".into()),
                            ));
                        }
                    }
                    Ty::Bool
                }
                _ if op.is_comparison() => {
                    if !lt.same_family(rt) {
                        return Err(err(
                            format!("cannot compare {} with {}", lt.name(), rt.name()),
                            e.span,
                            quote_hint(lt, rt),
                        ));
                    }
                    if matches!(lt, Ty::Bool) && !matches!(op, BinaryOp::Eq | BinaryOp::NotEq) {
                        return Err(err("booleans have no order".into(), e.span, None));
                    }
                    Ty::Bool
                }
                _ => match (lt, rt) {
                    (Ty::Number(a), Ty::Number(b)) => Ty::Number(combine(*op, a, b)),
                    (Ty::Number(a), Ty::Null) | (Ty::Null, Ty::Number(a)) => Ty::Number(a),
                    (Ty::Null, Ty::Null) => Ty::Null,
                    _ => {
                        let (bad, s) = if matches!(lt, Ty::Number(_) | Ty::Null) { (rt, r.span) } else { (lt, l.span) };
                        return Err(err(
                            format!("`{}` needs numbers, but this is {}", op.symbol(), bad.name()),
                            s,
                            None,
                        ));
                    }
                },
            }
        }
        ExprKind::Call(f, args) => {
            let arity_ok = match f {
                Func::Abs | Func::Length => args.len() == 1,
                Func::Round => args.len() == 1 || args.len() == 2,
                Func::Coalesce => !args.is_empty(),
            };
            if !arity_ok {
                return Err(err(format!("wrong number of arguments to `{}`", f.name()), e.span, None));
            }
            let types = args.iter().map(|a| type_of(a, columns)).collect::<Result<Vec<_>, _>>()?;
            match f {
                Func::Abs => match types[0] {
                    t @ (Ty::Number(_) | Ty::Null) => t,
                    t => return Err(err(format!("`abs` needs a number, found {}", t.name()), args[0].span, None)),
                },
                Func::Length => match types[0] {
                    Ty::Text | Ty::Null => Ty::Number(NumKind::Int),
                    t => return Err(err(format!("`length` needs text, found {}", t.name()), args[0].span, None)),
                },
                Func::Round => {
                    let t = types[0];
                    if !matches!(t, Ty::Number(_)) {
                        return Err(err(format!("`round` needs a number, found {}", t.name()), args[0].span, None));
                    }
                    match args.get(1).map(|a| &a.kind) {
                        None => Ty::Number(NumKind::Int),
                        Some(ExprKind::Number(n)) if n.fract().is_zero() && *n >= Decimal::ZERO && *n <= Decimal::from(18) => {
                            let places = u32::try_from(n.mantissa()).unwrap_or(0);
                            match t {
                                Ty::Number(NumKind::Float) => t,
                                _ => Ty::Number(NumKind::Decimal(places)),
                            }
                        }
                        Some(_) => {
                            return Err(err(
                                "`round`'s second argument is a whole number of places, 0 to 18".into(),
                                args[1].span,
                                None,
                            ));
                        }
                    }
                }
                Func::Coalesce => {
                    let mut t = Ty::Null;
                    for (a, at) in args.iter().zip(&types) {
                        if !t.same_family(*at) {
                            return Err(err(format!("`coalesce` mixes {} and {}", t.name(), at.name()), a.span, None));
                        }
                        t = match (t, *at) {
                            (Ty::Null, x) => x,
                            (Ty::Number(a), Ty::Number(b)) => Ty::Number(combine(BinaryOp::Add, a, b)),
                            (x, _) => x,
                        };
                    }
                    t
                }
            }
        }
    })
}

fn quote_hint(a: Ty, b: Ty) -> Option<String> {
    match (a, b) {
        (Ty::Text, Ty::Number(_)) | (Ty::Number(_), Ty::Text) => {
            Some("a string column compares with a quoted text literal, e.g. `'48'`".into())
        }
        _ => None,
    }
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names.map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// Every column an expression reads.
pub fn columns_of(e: &Expr, out: &mut Vec<String>) {
    match &e.kind {
        ExprKind::Column(c) => {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
        ExprKind::Unary(_, x) | ExprKind::IsNull(x, _) => columns_of(x, out),
        ExprKind::Binary(_, l, r) => {
            columns_of(l, out);
            columns_of(r, out);
        }
        ExprKind::InList(x, items, _) => {
            columns_of(x, out);
            items.iter().for_each(|i| columns_of(i, out));
        }
        ExprKind::Call(_, args) => args.iter().for_each(|a| columns_of(a, out)),
        ExprKind::Number(_) | ExprKind::Text(_) | ExprKind::Bool(_) | ExprKind::Null => {}
    }
}

/// Canonical text, fully parenthesised where precedence matters: what `etl plan` shows.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Column(c) => write!(f, "{c}"),
            ExprKind::Number(n) => write!(f, "{n}"),
            ExprKind::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            ExprKind::Bool(b) => write!(f, "{b}"),
            ExprKind::Null => f.write_str("null"),
            ExprKind::Unary(UnaryOp::Neg, x) => write!(f, "-({x})"),
            ExprKind::Unary(UnaryOp::Not, x) => write!(f, "not ({x})"),
            ExprKind::IsNull(x, false) => write!(f, "{x} is null"),
            ExprKind::IsNull(x, true) => write!(f, "{x} is not null"),
            ExprKind::InList(x, items, neg) => {
                let items: Vec<String> = items.iter().map(ToString::to_string).collect();
                write!(f, "{x} {}in ({})", if *neg { "not " } else { "" }, items.join(", "))
            }
            ExprKind::Binary(op, l, r) => write!(f, "({l} {} {r})", op.symbol()),
            ExprKind::Call(func, args) => {
                let args: Vec<String> = args.iter().map(ToString::to_string).collect();
                write!(f, "{}({})", func.name(), args.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> IndexMap<String, ColumnType> {
        let mut m = IndexMap::new();
        m.insert("cash".into(), ColumnType::Decimal { precision: 20, scale: 2 });
        m.insert("total".into(), ColumnType::Decimal { precision: 20, scale: 2 });
        m.insert("qty".into(), ColumnType::Int64);
        m.insert("code".into(), ColumnType::String);
        m
    }

    #[test]
    fn precedence_is_sql_like() {
        let e = parse("total = cash + qty * 2 and not code is null").unwrap();
        assert_eq!(e.to_string(), "((total = (cash + (qty * 2))) and not (code is null))");
    }

    #[test]
    fn types_are_checked() {
        let e = parse("code > 5").unwrap();
        let err = type_of(&e, &cols()).unwrap_err();
        assert_eq!(err.kind, ExprErrorKind::Type);
        let e = parse("cash * qty").unwrap();
        assert_eq!(type_of(&e, &cols()).unwrap(), Ty::Number(NumKind::Decimal(2)));
    }

    #[test]
    fn unknown_columns_suggest_the_nearest() {
        let e = parse("totl = cash").unwrap();
        let err = type_of(&e, &cols()).unwrap_err();
        assert_eq!(err.kind, ExprErrorKind::UnknownColumn);
        assert_eq!(err.span, (0, 4));
        assert_eq!(err.help.as_deref(), Some("did you mean `total`?"));
    }

    #[test]
    fn syntax_errors_point_at_the_token() {
        let err = parse("cash + ").unwrap_err();
        assert_eq!(err.span, (7, 7));
        let err = parse("cash = 'abc").unwrap_err();
        assert!(err.message.contains("unterminated"));
        let err = parse("a in (1, 2) and b not in ('x')").unwrap();
        assert!(matches!(err.kind, ExprKind::Binary(BinaryOp::And, _, _)));
    }
}
