//! Helpers shared by the test modules.

use ferrobase_query::{Expr, parse};

/// Parses `src`, panicking with the error if it is invalid.
pub fn p(src: &str) -> Expr {
    parse(src).unwrap_or_else(|e| panic!("{src:?} should parse but failed: {e}"))
}

/// Parses `src`, expecting failure; returns `(offset, message)`.
pub fn err(src: &str) -> (usize, String) {
    match parse(src) {
        Ok(expr) => panic!("{src:?} should fail but parsed as {expr:?}"),
        Err(e) => (e.offset, e.message),
    }
}

/// Fully parenthesized structure of `expr`, to check grouping.
pub fn sexp(expr: &Expr) -> String {
    match expr {
        Expr::And { lhs, rhs, .. } => format!("(and {} {})", sexp(lhs), sexp(rhs)),
        Expr::Or { lhs, rhs, .. } => format!("(or {} {})", sexp(lhs), sexp(rhs)),
        Expr::Not { expr, .. } => format!("(not {})", sexp(expr)),
        Expr::Compare { op, lhs, rhs, .. } => format!("({op} {lhs} {rhs})"),
        Expr::In {
            negated,
            lhs,
            items,
            ..
        } => {
            let items: Vec<String> = items.iter().map(ToString::to_string).collect();
            let op = if *negated { "not-in" } else { "in" };
            format!("({op} {lhs} [{}])", items.join(" "))
        }
        Expr::Truthy(operand) => operand.to_string(),
    }
}

/// Shorthand: parse and return the [`sexp`] form.
pub fn s(src: &str) -> String {
    sexp(&p(src))
}
