//! Parser for ferrobase's expression language.
//!
//! One language serves `?filter=` query parameters and every access rule:
//!
//! ```text
//! published && (author.name ~ 'ann' || @auth.role = 'admin')
//! created > @now - 30d && status not in ('draft', 'deleted')
//! ```
//!
//! [`parse`] turns source text into an [`Expr`] whose nodes carry byte
//! [`Span`]s; [`references`] lists the names an expression uses so they can
//! be checked against a schema; `Display` on [`Expr`] prints a canonical form
//! that parses back to the same tree.
#![forbid(unsafe_code)]

mod ast;
pub mod check;
pub mod cursor;
mod display;
pub mod env;
mod error;
pub mod eval;
mod lexer;
mod parser;
mod refs;
mod schema_check;
pub mod sql;

pub use ast::{CompareOp, Duration, DurationUnit, Expr, Ident, Literal, Operand, Path, Sign, Span};
pub use error::ParseError;
pub use parser::parse;
pub use refs::{Reference, references};
pub use schema_check::{check_rules, webhook_filter};

/// Longest accepted expression, in bytes.
pub const MAX_EXPR_LEN: usize = 4096;

/// Deepest accepted nesting of parentheses and `!` operators.
pub const MAX_DEPTH: usize = 32;

/// Most terms (comparisons, `in` tests and bare conditions) in one expression.
pub const MAX_TERMS: usize = 64;

/// Most items in one `in (...)` list.
pub const MAX_IN_ITEMS: usize = 100;

/// Most segments in a dotted field path such as `post.author.name`.
pub const MAX_PATH_SEGMENTS: usize = 3;
