//! The rule language: a small SQL-like boolean expression over one row's columns, in passes as
//! DataFusion's `sql/src/expr/` is split: the syntax tree (`ast`), the parser (`parse`), the
//! type check against the stage's columns (`types`), and the evaluation on a row (`eval`, with
//! exact decimals in `number`); what a computed column may compute (`derive`).

mod ast;
mod derive;
mod eval;
mod number;
mod parse;
mod types;

pub use derive::{MAX_COMPUTED_DIGITS, digits, literal_digits};
pub use eval::{EvalError, Value, Verdict, check, eval};
pub use number::{Dec, MAX_DIGITS, Overflow};
pub use ast::{BinaryOp, Expr, ExprKind, Func, UnaryOp, columns_of};
pub use parse::{date_literal, parse, timestamp_literal};
pub use types::{NumKind, Ty, combine, literal_kind, type_of};

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


#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::ColumnType;
    use indexmap::IndexMap;

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
