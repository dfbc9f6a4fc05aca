//! The error returned by [`parse`](crate::parse).

use std::fmt;

/// Why an expression could not be parsed, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset of the problem in the source text. Always on a UTF-8
    /// character boundary and at most the source length.
    pub offset: usize,
    /// A human-readable description, e.g.
    /// `expected a value after '=' but found end of input`.
    pub message: String,
}

impl ParseError {
    /// Creates an error at `offset` with `message`.
    pub fn new(offset: usize, message: impl Into<String>) -> Self {
        Self {
            offset,
            message: message.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

impl std::error::Error for ParseError {}
