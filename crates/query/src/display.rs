//! Canonical printing of the syntax tree.
//!
//! The printed form of an [`Expr`] parses back to the same tree (ignoring
//! spans): operators are separated by single spaces, strings use single
//! quotes, and parentheses appear only where the tree structure needs them.

use std::fmt::{self, Display, Formatter, Write};

use crate::ast::{CompareOp, Duration, Expr, Literal, Operand, Path, Sign};

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Or { lhs, rhs, .. } => {
                write!(f, "{lhs} || ")?;
                grouped(f, rhs, matches!(**rhs, Expr::Or { .. }))
            }
            Expr::And { lhs, rhs, .. } => {
                grouped(f, lhs, matches!(**lhs, Expr::Or { .. }))?;
                f.write_str(" && ")?;
                grouped(f, rhs, matches!(**rhs, Expr::Or { .. } | Expr::And { .. }))
            }
            Expr::Not { expr, .. } => {
                f.write_char('!')?;
                grouped(
                    f,
                    expr,
                    !matches!(**expr, Expr::Not { .. } | Expr::Truthy(_)),
                )
            }
            Expr::Compare { op, lhs, rhs, .. } => write!(f, "{lhs} {op} {rhs}"),
            Expr::In {
                negated,
                lhs,
                items,
                ..
            } => {
                write!(f, "{lhs} {}in (", if *negated { "not " } else { "" })?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char(')')
            }
            Expr::Truthy(operand) => write!(f, "{operand}"),
        }
    }
}

/// Writes `expr`, in parentheses if `parens`.
fn grouped(f: &mut Formatter<'_>, expr: &Expr, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({expr})")
    } else {
        write!(f, "{expr}")
    }
}

impl Display for Operand {
    /// Prints the operand as written in source, e.g. `@now - 30d`.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Literal { value, .. } => write!(f, "{value}"),
            Operand::Field(path) => write!(f, "{path}"),
            Operand::Auth { field, .. } => write!(f, "@auth.{}", field.name),
            Operand::Body { field, .. } => write!(f, "@body.{}", field.name),
            Operand::Now { .. } => f.write_str("@now"),
            Operand::NowOffset { sign, duration, .. } => {
                let sign = match sign {
                    Sign::Plus => '+',
                    Sign::Minus => '-',
                };
                write!(f, "@now {sign} {duration}")
            }
        }
    }
}

impl Display for Path {
    /// Prints the segments joined by `.`.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_char('.')?;
            }
            f.write_str(&seg.name)?;
        }
        Ok(())
    }
}

impl Display for Duration {
    /// Prints the duration as written in source, e.g. `30d`.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.unit.suffix())
    }
}

impl Display for CompareOp {
    /// Prints the operator as written in source, e.g. `>=`.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Display for Literal {
    /// Prints the literal so it parses back to the same value: strings in
    /// single quotes with escapes, decimals always with a `.`.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::String(s) => write_string(f, s),
            Literal::Integer(i) => write!(f, "{i}"),
            Literal::Number(n) => {
                // `f64`'s Display is the shortest round-tripping decimal and
                // never uses an exponent; it omits `.0` for whole numbers.
                let text = n.to_string();
                f.write_str(&text)?;
                if text.contains('.') {
                    Ok(())
                } else {
                    f.write_str(".0")
                }
            }
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Null => f.write_str("null"),
        }
    }
}

fn write_string(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('\'')?;
    for c in s.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '\'' => f.write_str("\\'")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{:04x}", u32::from(c))?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('\'')
}
