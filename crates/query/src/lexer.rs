//! Turns source text into tokens, one at a time.

use crate::ast::{DurationUnit, Ident, Span};
use crate::error::ParseError;

/// Operators and punctuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Punct {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Tilde,
    NotTilde,
    Bang,
    AndAnd,
    OrOr,
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokKind<'a> {
    /// End of input.
    Eof,
    /// A string literal, escapes decoded.
    Str(String),
    /// Unsigned digits, optionally with a `.digits` fraction.
    Number(&'a str),
    /// Unsigned digits followed directly by a unit letter.
    Duration {
        amount: &'a str,
        unit: DurationUnit,
    },
    /// `a`, `a.b.c`, `@auth`, `@auth.id`: the first segment of a variable
    /// holds its name without `@` but its span includes the `@`.
    Name {
        var: bool,
        segments: Vec<Ident>,
    },
    Punct(Punct),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token<'a> {
    pub kind: TokKind<'a>,
    pub span: Span,
}

pub(crate) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Self { src, pos: 0 }
    }

    fn byte(&self, at: usize) -> Option<u8> {
        self.src.as_bytes().get(at).copied()
    }

    fn err<T>(&self, offset: usize, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError::new(offset, message))
    }

    /// Lexes the next token; returns `Eof` forever once the input is used up.
    pub fn next_token(&mut self) -> Result<Token<'a>, ParseError> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.byte(self.pos) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(b) = self.byte(start) else {
            return Ok(Token {
                kind: TokKind::Eof,
                span: Span::new(start, start),
            });
        };
        let kind = match b {
            b'\'' | b'"' => TokKind::Str(self.string(b)?),
            b'0'..=b'9' => self.number()?,
            b'@' => {
                if !self.byte(start + 1).is_some_and(is_ident_start) {
                    return self.err(
                        start,
                        "expected a name after '@', such as '@auth.id' or '@now'",
                    );
                }
                self.pos += 1;
                self.name(true)?
            }
            _ if is_ident_start(b) => self.name(false)?,
            _ => TokKind::Punct(self.punct(b)?),
        };
        Ok(Token {
            kind,
            span: Span::new(start, self.pos),
        })
    }

    fn ident(&mut self) -> &'a str {
        let start = self.pos;
        while self.byte(self.pos).is_some_and(is_ident_continue) {
            self.pos += 1;
        }
        &self.src[start..self.pos]
    }

    /// Lexes `ident(.ident)*`; `self.pos` is at the first identifier (after
    /// any `@`).
    fn name(&mut self, var: bool) -> Result<TokKind<'a>, ParseError> {
        let first_start = if var { self.pos - 1 } else { self.pos };
        let first = self.ident();
        let mut segments = vec![Ident {
            name: first.to_owned(),
            span: Span::new(first_start, self.pos),
        }];
        while self.byte(self.pos) == Some(b'.') {
            let seg_start = self.pos + 1;
            if !self.byte(seg_start).is_some_and(is_ident_start) {
                return self.err(seg_start, "expected a field name after '.'");
            }
            self.pos = seg_start;
            let seg = self.ident();
            segments.push(Ident {
                name: seg.to_owned(),
                span: Span::new(seg_start, self.pos),
            });
        }
        Ok(TokKind::Name { var, segments })
    }

    fn number(&mut self) -> Result<TokKind<'a>, ParseError> {
        let start = self.pos;
        while self.byte(self.pos).is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let mut decimal = false;
        if self.byte(self.pos) == Some(b'.') {
            if !self.byte(self.pos + 1).is_some_and(|b| b.is_ascii_digit()) {
                return self.err(self.pos + 1, "expected a digit after '.' in a number");
            }
            decimal = true;
            self.pos += 1;
            while self.byte(self.pos).is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
        }
        let digits_end = self.pos;
        if !self.byte(self.pos).is_some_and(is_ident_continue) {
            return Ok(TokKind::Number(&self.src[start..digits_end]));
        }
        let suffix = self.ident();
        let unit = match suffix.as_bytes() {
            [c] => DurationUnit::from_suffix(char::from(*c)),
            _ => None,
        };
        match unit {
            Some(_) if decimal => self.err(
                start,
                "a duration must be a whole number of units, e.g. '90m' instead of '1.5h'",
            ),
            Some(unit) => Ok(TokKind::Duration {
                amount: &self.src[start..digits_end],
                unit,
            }),
            None => self.err(
                start,
                format!(
                    "'{}' is not a valid number or duration (duration units are s, m, h, d, w)",
                    truncate(&self.src[start..self.pos])
                ),
            ),
        }
    }

    /// Lexes a string literal delimited by `quote`, decoding escapes.
    fn string(&mut self, quote: u8) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = &self.src[self.pos..];
            let Some(stop) = rest.find(|c| c == char::from(quote) || c == '\\') else {
                return self.err(start, "unterminated string starting here");
            };
            out.push_str(&rest[..stop]);
            self.pos += stop;
            if self.byte(self.pos) == Some(quote) {
                self.pos += 1;
                return Ok(out);
            }
            out.push(self.escape(start)?);
        }
    }

    /// Decodes the escape sequence at `self.pos` (which is a backslash).
    fn escape(&mut self, string_start: usize) -> Result<char, ParseError> {
        let at = self.pos;
        let Some(c) = self.src[at + 1..].chars().next() else {
            return self.err(string_start, "unterminated string starting here");
        };
        self.pos = at + 1 + c.len_utf8();
        match c {
            '\\' => Ok('\\'),
            '\'' => Ok('\''),
            '"' => Ok('"'),
            'n' => Ok('\n'),
            't' => Ok('\t'),
            'u' => {
                let hex = self
                    .src
                    .get(at + 2..at + 6)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
                let Some(hex) = hex else {
                    return self.err(at, "expected 4 hex digits after '\\u', e.g. '\\u00e9'");
                };
                self.pos = at + 6;
                u32::from_str_radix(hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .map_or_else(
                        || {
                            self.err(
                                at,
                                format!("'\\u{hex}' is not a valid character (it is a surrogate)"),
                            )
                        },
                        Ok,
                    )
            }
            other => self.err(
                at,
                format!(
                    "unknown escape '\\{}'; valid escapes are \\\\ \\' \\\" \\n \\t \\uXXXX",
                    other.escape_debug()
                ),
            ),
        }
    }

    fn punct(&mut self, b: u8) -> Result<Punct, ParseError> {
        let start = self.pos;
        let next = self.byte(start + 1);
        let (punct, len) = match (b, next) {
            (b'=', Some(b'=')) => return self.err(start, "unknown operator '=='; use '='"),
            (b'=', Some(b'<')) => return self.err(start, "unknown operator '=<'; use '<='"),
            (b'=', Some(b'>')) => return self.err(start, "unknown operator '=>'; use '>='"),
            (b'=', Some(b'~')) => return self.err(start, "unknown operator '=~'; use '~'"),
            (b'=', Some(b'!')) => return self.err(start, "unknown operator '=!'; use '!='"),
            (b'=', _) => (Punct::Eq, 1),
            (b'!', Some(b'=')) if self.byte(start + 2) == Some(b'=') => {
                return self.err(start, "unknown operator '!=='; use '!='");
            }
            (b'!', Some(b'=')) => (Punct::Ne, 2),
            (b'!', Some(b'~')) => (Punct::NotTilde, 2),
            (b'!', _) => (Punct::Bang, 1),
            (b'>', Some(b'=')) => (Punct::Ge, 2),
            (b'>', _) => (Punct::Gt, 1),
            (b'<', Some(b'=')) => (Punct::Le, 2),
            (b'<', Some(b'>')) => return self.err(start, "unknown operator '<>'; use '!='"),
            (b'<', _) => (Punct::Lt, 1),
            (b'~', _) => (Punct::Tilde, 1),
            (b'&', Some(b'&')) => (Punct::AndAnd, 2),
            (b'&', _) => return self.err(start, "'&' is not an operator; use '&&'"),
            (b'|', Some(b'|')) => (Punct::OrOr, 2),
            (b'|', _) => return self.err(start, "'|' is not an operator; use '||'"),
            (b'(', _) => (Punct::LParen, 1),
            (b')', _) => (Punct::RParen, 1),
            (b',', _) => (Punct::Comma, 1),
            (b'+', _) => (Punct::Plus, 1),
            (b'-', _) => (Punct::Minus, 1),
            (b'.', Some(b'0'..=b'9')) => {
                return self.err(start, "a number needs a digit before '.', e.g. '0.5'");
            }
            (b'[', _) => {
                return self.err(
                    start,
                    "unexpected '['; 'in' lists use parentheses, e.g. 'x in (1, 2)'",
                );
            }
            _ => {
                let c = self.src[start..].chars().next().unwrap_or('\0');
                return self.err(
                    start,
                    format!("unexpected character '{}'", c.escape_debug()),
                );
            }
        };
        self.pos += len;
        Ok(punct)
    }
}

/// Shortens `text` for quoting in an error message.
pub(crate) fn truncate(text: &str) -> String {
    const MAX_CHARS: usize = 32;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}
