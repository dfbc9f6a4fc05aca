//! Recursive-descent parser.
//!
//! Grammar (lowest precedence first):
//!
//! ```text
//! or        := and ( '||' and )*
//! and       := unary ( '&&' unary )*
//! unary     := '!' unary | '(' or ')' | condition
//! condition := operand ( cmp_op operand | 'in' list | 'not' 'in' list )?
//! list      := '(' operand ( ',' operand )* ')'
//! operand   := literal | path | '@auth.' ident | '@body.' ident
//!            | '@now' ( ('+' | '-') duration )?
//! ```

mod operand;

use crate::ast::{CompareOp, Expr, Literal, Operand, Span};
use crate::error::ParseError;
use crate::lexer::{Lexer, Punct, TokKind, Token, truncate};
use crate::{MAX_DEPTH, MAX_EXPR_LEN, MAX_IN_ITEMS, MAX_TERMS};

/// Parses an expression.
///
/// Never panics; any input that is not a valid expression (including input
/// longer than [`MAX_EXPR_LEN`], nested deeper than [`MAX_DEPTH`], with more
/// than [`MAX_TERMS`] terms or an `in` list longer than [`MAX_IN_ITEMS`])
/// yields a [`ParseError`] with the byte offset of the problem.
///
/// ```
/// use ferrobase_query::{parse, Expr};
///
/// let expr = parse("published && @auth.role = 'admin'").expect("valid");
/// assert!(matches!(expr, Expr::And { .. }));
/// assert_eq!(expr.to_string(), "published && @auth.role = 'admin'");
///
/// let err = parse("title =").expect_err("invalid");
/// assert_eq!(err.offset, 7);
/// assert_eq!(err.message, "expected a value after '=' but found end of input");
/// ```
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    if src.len() > MAX_EXPR_LEN {
        return Err(ParseError::new(
            src.floor_char_boundary(MAX_EXPR_LEN),
            format!("expression is longer than {MAX_EXPR_LEN} bytes"),
        ));
    }
    let mut parser = Parser::new(src)?;
    let expr = parser.or(Expect::new("a condition"))?;
    match parser.tok.kind {
        TokKind::Eof => Ok(expr),
        _ => Err(parser.after_condition_error(None)),
    }
}

/// What the parser wanted, for "expected X after 'Y' but found Z" messages.
#[derive(Clone, Copy)]
struct Expect<'a> {
    what: &'static str,
    after: Option<&'a str>,
}

impl<'a> Expect<'a> {
    fn new(what: &'static str) -> Self {
        Self { what, after: None }
    }

    fn after(what: &'static str, after: &'a str) -> Self {
        Self {
            what,
            after: Some(after),
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    lexer: Lexer<'a>,
    /// The current (not yet consumed) token.
    tok: Token<'a>,
    /// End of the last consumed token.
    prev_end: usize,
    depth: usize,
    terms: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Result<Self, ParseError> {
        let mut lexer = Lexer::new(src);
        let tok = lexer.next_token()?;
        Ok(Self {
            src,
            lexer,
            tok,
            prev_end: 0,
            depth: 0,
            terms: 0,
        })
    }

    /// Consumes the current token and returns it.
    fn bump(&mut self) -> Result<Token<'a>, ParseError> {
        let next = self.lexer.next_token()?;
        let tok = std::mem::replace(&mut self.tok, next);
        self.prev_end = tok.span.end;
        Ok(tok)
    }

    fn text(&self, span: Span) -> &'a str {
        self.src.get(span.start..span.end).unwrap_or("")
    }

    fn is_punct(&self, p: Punct) -> bool {
        self.tok.kind == TokKind::Punct(p)
    }

    /// Whether the current token is the bare keyword `word`.
    fn is_keyword(&self, word: &str) -> bool {
        matches!(&self.tok.kind, TokKind::Name { var: false, segments }
            if segments.len() == 1 && segments[0].name == word)
    }

    /// How the current token is described in messages.
    fn found(&self) -> String {
        match self.tok.kind {
            TokKind::Eof => "end of input".to_owned(),
            TokKind::Str(_) => "a string".to_owned(),
            _ => format!("'{}'", truncate(self.text(self.tok.span))),
        }
    }

    fn error_here(&self, message: impl Into<String>) -> ParseError {
        ParseError::new(self.tok.span.start, message)
    }

    fn expected(&self, expect: Expect<'_>) -> ParseError {
        let message = match expect.after {
            Some(after) => format!(
                "expected {} after '{}' but found {}",
                expect.what,
                after,
                self.found()
            ),
            None => format!("expected {} but found {}", expect.what, self.found()),
        };
        self.error_here(message)
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here(format!("nesting is deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn or(&mut self, expect: Expect<'a>) -> Result<Expr, ParseError> {
        let start = self.tok.span.start;
        let mut lhs = self.and(expect)?;
        while self.is_punct(Punct::OrOr) {
            let op = self.bump()?;
            let rhs = self.and(Expect::after("a condition", self.text(op.span)))?;
            lhs = Expr::Or {
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                span: Span::new(start, self.prev_end),
            };
        }
        Ok(lhs)
    }

    fn and(&mut self, expect: Expect<'a>) -> Result<Expr, ParseError> {
        let start = self.tok.span.start;
        let mut lhs = self.unary(expect)?;
        while self.is_punct(Punct::AndAnd) {
            let op = self.bump()?;
            let rhs = self.unary(Expect::after("a condition", self.text(op.span)))?;
            lhs = Expr::And {
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                span: Span::new(start, self.prev_end),
            };
        }
        Ok(lhs)
    }

    fn unary(&mut self, expect: Expect<'a>) -> Result<Expr, ParseError> {
        if self.is_punct(Punct::Bang) {
            self.enter()?;
            let bang = self.bump()?;
            let expect = Expect::after("a condition", "!");
            let inner = if self.is_punct(Punct::Bang) || self.is_punct(Punct::LParen) {
                self.unary(expect)?
            } else {
                self.condition(expect, Some(bang.span.start))?
            };
            self.depth -= 1;
            return Ok(Expr::Not {
                expr: Box::new(inner),
                span: Span::new(bang.span.start, self.prev_end),
            });
        }
        if self.is_punct(Punct::LParen) {
            self.enter()?;
            let open = self.bump()?;
            let inner = self.or(Expect::after("a condition", "("))?;
            if !self.is_punct(Punct::RParen) {
                return Err(self.after_condition_error(Some(open.span.start)));
            }
            self.bump()?;
            self.depth -= 1;
            if self.starts_comparison() {
                return Err(self.error_here(
                    "parentheses group conditions, not values; \
                     a parenthesized condition cannot be compared",
                ));
            }
            return Ok(inner);
        }
        self.condition(expect, None)
    }

    /// Whether the current token continues a comparison (`=`, `in`, ...).
    fn starts_comparison(&self) -> bool {
        compare_op(&self.tok.kind).is_some() || self.is_keyword("in") || self.is_keyword("not")
    }

    /// The error for a token that cannot follow a complete condition.
    /// `open_paren` is the offset of the innermost unclosed `(`, if any.
    fn after_condition_error(&self, open_paren: Option<usize>) -> ParseError {
        let word = match &self.tok.kind {
            TokKind::Name {
                var: false,
                segments,
            } if segments.len() == 1 => Some(segments[0].name.to_ascii_lowercase()),
            _ => None,
        };
        match (&self.tok.kind, word.as_deref(), open_paren) {
            (_, Some("and"), _) => self.error_here(format!(
                "unknown operator '{}'; use '&&'",
                self.text(self.tok.span)
            )),
            (_, Some("or"), _) => self.error_here(format!(
                "unknown operator '{}'; use '||'",
                self.text(self.tok.span)
            )),
            _ if self.starts_comparison() => {
                self.error_here("comparisons cannot be chained; join them with '&&'")
            }
            (TokKind::Punct(Punct::Plus | Punct::Minus), _, _) => self.error_here(ARITHMETIC),
            (TokKind::Punct(Punct::RParen), _, None) => {
                self.error_here("unexpected ')' without a matching '('")
            }
            (TokKind::Eof, _, Some(open)) => self.error_here(format!(
                "expected ')' to close the '(' at byte {open} but found end of input"
            )),
            (_, _, Some(_)) => self.expected(Expect::new("'&&', '||' or ')'")),
            (_, _, None) => self.expected(Expect::new("'&&', '||' or end of input")),
        }
    }

    /// Parses a comparison, `in` test or bare condition. `negated_by` is the
    /// offset of a directly preceding `!`, which only applies to a bare value.
    fn condition(
        &mut self,
        expect: Expect<'a>,
        negated_by: Option<usize>,
    ) -> Result<Expr, ParseError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(self.error_here(format!("expression has more than {MAX_TERMS} conditions")));
        }
        let lhs = self.operand(expect)?;
        let start = lhs.span().start;
        if let Some(bang) = negated_by.filter(|_| self.starts_comparison()) {
            return Err(ParseError::new(
                bang,
                "'!' binds tighter than comparisons; to negate a comparison, \
                 wrap it in parentheses, e.g. '!(a = 1)'",
            ));
        }
        if let Some(op) = compare_op(&self.tok.kind) {
            let op_tok = self.bump()?;
            let rhs = self.operand(Expect::after("a value", self.text(op_tok.span)))?;
            return Ok(Expr::Compare {
                op,
                lhs,
                rhs,
                span: Span::new(start, self.prev_end),
            });
        }
        let negated = self.is_keyword("not");
        if negated {
            self.bump()?;
            if !self.is_keyword("in") {
                return Err(self.expected(Expect::after("'in'", "not")));
            }
        }
        if self.is_keyword("in") {
            self.bump()?;
            let items = self.list()?;
            return Ok(Expr::In {
                negated,
                lhs,
                items,
                span: Span::new(start, self.prev_end),
            });
        }
        self.truthy(lhs)
    }

    /// Accepts `operand` as a condition on its own, if it can be one.
    fn truthy(&self, operand: Operand) -> Result<Expr, ParseError> {
        let noun = match &operand {
            Operand::Field(_)
            | Operand::Auth { .. }
            | Operand::Body { .. }
            | Operand::Literal {
                value: Literal::Bool(_),
                ..
            } => return Ok(Expr::Truthy(operand)),
            Operand::Literal { value, .. } => match value {
                Literal::String(_) => "a string",
                Literal::Null => "'null'",
                _ => "a number",
            },
            Operand::Now { .. } | Operand::NowOffset { .. } => "a time",
        };
        let ends_condition = matches!(
            self.tok.kind,
            TokKind::Eof | TokKind::Punct(Punct::AndAnd | Punct::OrOr | Punct::RParen)
        );
        if matches!(self.tok.kind, TokKind::Punct(Punct::Plus | Punct::Minus)) {
            Err(self.error_here(ARITHMETIC))
        } else if ends_condition {
            Err(ParseError::new(
                operand.span().start,
                format!(
                    "{noun} is not a condition on its own; \
                     compare it with an operator such as '='"
                ),
            ))
        } else {
            let after = self.text(operand.span());
            let after = truncate(after);
            Err(self.error_here(format!(
                "expected an operator such as '=' after '{after}' but found {}",
                self.found()
            )))
        }
    }

    fn list(&mut self) -> Result<Vec<Operand>, ParseError> {
        if !self.is_punct(Punct::LParen) {
            return Err(self.expected(Expect::after("'('", "in")));
        }
        self.bump()?;
        if self.is_punct(Punct::RParen) {
            return Err(self.error_here("an 'in' list needs at least one value"));
        }
        let mut items = Vec::new();
        let mut after = "(";
        loop {
            if items.len() == MAX_IN_ITEMS {
                return Err(self.error_here(format!(
                    "an 'in' list can have at most {MAX_IN_ITEMS} items"
                )));
            }
            items.push(self.operand(Expect::after("a value", after))?);
            if self.is_punct(Punct::Comma) {
                self.bump()?;
                after = ",";
            } else if self.is_punct(Punct::RParen) {
                self.bump()?;
                return Ok(items);
            } else {
                return Err(self.expected(Expect::new("',' or ')' in the 'in' list")));
            }
        }
    }
}

const ARITHMETIC: &str =
    "arithmetic is only supported as '@now + <duration>' or '@now - <duration>'";

fn compare_op(kind: &TokKind<'_>) -> Option<CompareOp> {
    Some(match kind {
        TokKind::Punct(Punct::Eq) => CompareOp::Eq,
        TokKind::Punct(Punct::Ne) => CompareOp::Ne,
        TokKind::Punct(Punct::Gt) => CompareOp::Gt,
        TokKind::Punct(Punct::Ge) => CompareOp::Ge,
        TokKind::Punct(Punct::Lt) => CompareOp::Lt,
        TokKind::Punct(Punct::Le) => CompareOp::Le,
        TokKind::Punct(Punct::Tilde) => CompareOp::Contains,
        TokKind::Punct(Punct::NotTilde) => CompareOp::NotContains,
        _ => None?,
    })
}
