//! The rule language's syntax tree: expressions with byte spans, their operators and
//! functions, the columns they read, and their canonical text (what `etl plan` shows).

use std::fmt;

use rust_decimal::Decimal;

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
    /// `date 'YYYY-MM-DD'`: days since 1970-01-01.
    Date(i32),
    /// `timestamp 'YYYY-MM-DD HH:MM:SS[.ffffff]'`: microseconds since 1970-01-01 00:00.
    Timestamp(i64),
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
    /// `case when c1 then v1 [when c2 then v2 ...] [else e] end`: the value of the first
    /// condition that is true, else `e` (null without an `else`).
    Case(Vec<(Expr, Expr)>, Option<Box<Expr>>),
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
    pub(super) fn symbol(self) -> &'static str {
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
    /// Round to N decimal places (half away from zero).
    Round,
    /// The date of a timestamp (or a date itself).
    Date,
    /// `substr(text, start[, length])`: characters from `start` (the first is 1); null for a
    /// start below 1 or a negative length.
    Substr,
    /// Text in upper case, character by character.
    Upper,
    /// Text in lower case, character by character.
    Lower,
    /// Text without the spaces at either end.
    Trim,
}

impl Func {
    pub(super) fn name(self) -> &'static str {
        match self {
            Func::Abs => "abs",
            Func::Coalesce => "coalesce",
            Func::Length => "length",
            Func::Round => "round",
            Func::Date => "date",
            Func::Substr => "substr",
            Func::Upper => "upper",
            Func::Lower => "lower",
            Func::Trim => "trim",
        }
    }
    pub(super) const ALL: [Func; 9] =
        [Func::Abs, Func::Coalesce, Func::Length, Func::Round, Func::Date, Func::Substr, Func::Upper, Func::Lower, Func::Trim];
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
        ExprKind::Case(whens, otherwise) => {
            for (c, v) in whens {
                columns_of(c, out);
                columns_of(v, out);
            }
            if let Some(e) = otherwise {
                columns_of(e, out);
            }
        }
        ExprKind::Number(_) | ExprKind::Text(_) | ExprKind::Bool(_) | ExprKind::Null | ExprKind::Date(_) | ExprKind::Timestamp(_) => {}
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
            ExprKind::Date(d) => write!(f, "date '{}'", super::Value::Date(*d)),
            ExprKind::Timestamp(t) => write!(f, "timestamp '{}'", super::Value::Timestamp(*t)),
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
            ExprKind::Case(whens, otherwise) => {
                f.write_str("case")?;
                for (c, v) in whens {
                    write!(f, " when {c} then {v}")?;
                }
                if let Some(e) = otherwise {
                    write!(f, " else {e}")?;
                }
                f.write_str(" end")
            }
        }
    }
}
