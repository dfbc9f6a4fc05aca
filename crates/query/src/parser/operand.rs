//! Parsing of operands: literals, field paths and `@` variables.

use super::{Expect, Parser};
use crate::MAX_PATH_SEGMENTS;
use crate::ast::{Duration, Ident, Literal, Operand, Path, Sign, Span};
use crate::error::ParseError;
use crate::lexer::{Punct, TokKind, truncate};

impl<'a> Parser<'a> {
    /// Parses one value; `expect` describes it for the error message.
    pub(super) fn operand(&mut self, expect: Expect<'a>) -> Result<Operand, ParseError> {
        let span = self.tok.span;
        match &mut self.tok.kind {
            TokKind::Str(s) => {
                let value = Literal::String(std::mem::take(s));
                self.bump()?;
                Ok(literal(value, span))
            }
            TokKind::Number(text) => {
                let text: &'a str = text;
                let value = self.number(text, false, span)?;
                self.bump()?;
                Ok(literal(value, span))
            }
            TokKind::Punct(Punct::Minus) => {
                self.bump()?;
                let TokKind::Number(text) = self.tok.kind else {
                    if matches!(self.tok.kind, TokKind::Duration { .. }) {
                        return Err(duration_misplaced(self.tok.span));
                    }
                    return Err(self.expected(Expect::after("a number", "-")));
                };
                let value = self.number(text, true, span)?;
                let number = self.bump()?;
                Ok(literal(value, span.join(number.span)))
            }
            TokKind::Duration { .. } => Err(duration_misplaced(span)),
            TokKind::Name {
                var: false,
                segments,
            } => {
                let keyword = match segments.as_slice() {
                    [one] => match one.name.as_str() {
                        "true" => Some(Literal::Bool(true)),
                        "false" => Some(Literal::Bool(false)),
                        "null" => Some(Literal::Null),
                        "in" | "not" => return Err(self.expected(expect)),
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(extra) = segments.get(MAX_PATH_SEGMENTS) {
                    return Err(ParseError::new(
                        extra.span.start,
                        format!("a field path can have at most {MAX_PATH_SEGMENTS} segments"),
                    ));
                }
                let segments = std::mem::take(segments);
                self.bump()?;
                Ok(match keyword {
                    Some(value) => literal(value, span),
                    None => Operand::Field(Path { segments, span }),
                })
            }
            TokKind::Name {
                var: true,
                segments,
            } => {
                let segments = std::mem::take(segments);
                self.bump()?;
                self.variable(segments, span)
            }
            TokKind::Eof | TokKind::Punct(_) => Err(self.expected(expect)),
        }
    }

    /// Parses the rest of `@auth.x`, `@body.x`, `@now` or `@now ± duration`
    /// whose name token (spanning `span`) was just consumed.
    fn variable(&mut self, segments: Vec<Ident>, span: Span) -> Result<Operand, ParseError> {
        let mut segments = segments.into_iter();
        let var = segments.next().map(|v| v.name).unwrap_or_default();
        let field = segments.next();
        if let Some(extra) = segments.next() {
            return Err(ParseError::new(
                extra.span.start,
                format!("'@{var}' takes a single field name, e.g. '@{var}.id'"),
            ));
        }
        match (var.as_str(), field) {
            ("auth", Some(field)) => Ok(Operand::Auth { field, span }),
            ("body", Some(field)) => Ok(Operand::Body { field, span }),
            ("auth" | "body", None) => Err(ParseError::new(
                span.end,
                format!("expected '.' and a field name after '@{var}', e.g. '@{var}.id'"),
            )),
            ("now", Some(field)) => Err(ParseError::new(field.span.start, "'@now' has no fields")),
            ("now", None) => self.now_offset(span),
            (other, _) => Err(ParseError::new(
                span.start,
                format!("unknown variable '@{other}'; expected '@auth', '@body' or '@now'"),
            )),
        }
    }

    /// Parses an optional `± duration` after `@now` (already consumed).
    fn now_offset(&mut self, now: Span) -> Result<Operand, ParseError> {
        let sign = match self.tok.kind {
            TokKind::Punct(Punct::Plus) => Sign::Plus,
            TokKind::Punct(Punct::Minus) => Sign::Minus,
            _ => return Ok(Operand::Now { span: now }),
        };
        let sign_tok = self.bump()?;
        let TokKind::Duration { amount, unit } = self.tok.kind else {
            let after = format!("@now {}", self.text(sign_tok.span));
            return Err(self.error_here(format!(
                "expected a duration such as '30d' after '{after}' but found {} \
                 (units: s, m, h, d, w)",
                self.found()
            )));
        };
        let Ok(amount) = amount.parse::<u32>() else {
            return Err(self.error_here(format!(
                "duration '{}' is too large",
                truncate(self.text(self.tok.span))
            )));
        };
        let dur = self.bump()?;
        Ok(Operand::NowOffset {
            sign,
            duration: Duration {
                amount,
                unit,
                span: dur.span,
            },
            span: now.join(dur.span),
        })
    }

    /// Converts number text (with a `-` sign when `negative`) to a literal.
    fn number(&self, text: &str, negative: bool, span: Span) -> Result<Literal, ParseError> {
        let sign = if negative { "-" } else { "" };
        if text.contains('.') {
            let value: f64 = text
                .parse()
                .map_err(|_| ParseError::new(span.start, "invalid number"))?;
            if !value.is_finite() {
                return Err(ParseError::new(span.start, "number is out of range"));
            }
            Ok(Literal::Number(if negative { -value } else { value }))
        } else {
            format!("{sign}{text}")
                .parse::<i64>()
                .map(Literal::Integer)
                .map_err(|_| {
                    ParseError::new(
                        span.start,
                        format!(
                            "integer '{sign}{}' is out of range for a 64-bit integer",
                            truncate(text)
                        ),
                    )
                })
        }
    }
}

fn literal(value: Literal, span: Span) -> Operand {
    Operand::Literal { value, span }
}

fn duration_misplaced(span: Span) -> ParseError {
    ParseError::new(
        span.start,
        "a duration can only be used as '@now + <duration>' or '@now - <duration>'",
    )
}
