//! Listing the names an expression refers to.

use crate::ast::{Expr, Operand, Path, Span};

/// A name used by an expression, with where it appears.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    /// A record field or relation path; each segment carries its own span.
    Field(Path),
    /// A field of the authenticated user, `@auth.<field>`.
    Auth {
        /// The user field name.
        field: String,
        /// Span of the field name (after `@auth.`).
        span: Span,
    },
    /// A field of the request body, `@body.<field>`.
    Body {
        /// The body field name.
        field: String,
        /// Span of the field name (after `@body.`).
        span: Span,
    },
    /// The current time, `@now` (alone or in `@now ± duration`).
    Now {
        /// Span of the `@now` keyword.
        span: Span,
    },
}

/// Lists every name `expr` uses, in source order, one entry per occurrence,
/// so a caller can check them against a schema and report exact positions.
///
/// ```
/// use ferrobase_query::{parse, references, Reference, Span};
///
/// let expr = parse("owner = @auth.id").expect("valid");
/// let refs = references(&expr);
/// assert!(matches!(&refs[0], Reference::Field(p) if p.dotted() == "owner"));
/// assert_eq!(
///     refs[1],
///     Reference::Auth { field: "id".into(), span: Span::new(14, 16) }
/// );
/// ```
pub fn references(expr: &Expr) -> Vec<Reference> {
    let mut out = Vec::new();
    collect(expr, &mut out);
    out
}

fn collect(expr: &Expr, out: &mut Vec<Reference>) {
    match expr {
        Expr::And { lhs, rhs, .. } | Expr::Or { lhs, rhs, .. } => {
            collect(lhs, out);
            collect(rhs, out);
        }
        Expr::Not { expr, .. } => collect(expr, out),
        Expr::Compare { lhs, rhs, .. } => {
            operand(lhs, out);
            operand(rhs, out);
        }
        Expr::In { lhs, items, .. } => {
            operand(lhs, out);
            for item in items {
                operand(item, out);
            }
        }
        Expr::Truthy(o) => operand(o, out),
    }
}

fn operand(o: &Operand, out: &mut Vec<Reference>) {
    match o {
        Operand::Literal { .. } => {}
        Operand::Field(path) => out.push(Reference::Field(path.clone())),
        Operand::Auth { field, .. } => out.push(Reference::Auth {
            field: field.name.clone(),
            span: field.span,
        }),
        Operand::Body { field, .. } => out.push(Reference::Body {
            field: field.name.clone(),
            span: field.span,
        }),
        Operand::Now { span } => out.push(Reference::Now { span: *span }),
        Operand::NowOffset { span, .. } => out.push(Reference::Now {
            span: Span::new(span.start, span.start + "@now".len()),
        }),
    }
}
