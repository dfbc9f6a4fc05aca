//! Syntax tree of the expression language.
//!
//! Every node carries the byte [`Span`] of the source text it was parsed
//! from, so callers (schema checks, rule evaluation) can point at the exact
//! position of a problem. Spans are byte offsets into the original string
//! and always fall on UTF-8 character boundaries.

/// A half-open byte range `start..end` into the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// Byte offset of the first byte covered.
    pub start: usize,
    /// Byte offset one past the last byte covered.
    pub end: usize,
}

impl Span {
    /// Creates the span `start..end`.
    pub const fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// The smallest span covering both `self` and `other`.
    pub fn join(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// An identifier (`[A-Za-z_][A-Za-z0-9_]*`) together with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    /// The identifier text.
    pub name: String,
    /// Where the identifier appears in the source.
    pub span: Span,
}

/// A field name or dotted relation path such as `title` or `author.name`.
///
/// A path parsed from source has between 1 and
/// [`MAX_PATH_SEGMENTS`](crate::MAX_PATH_SEGMENTS) segments. A single-segment
/// path is never one of the reserved words `true`, `false`, `null`, `in` or
/// `not` (those parse as keywords instead).
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// The segments in source order, each with its own span.
    pub segments: Vec<Ident>,
    /// Span of the whole path, from the first to the last segment.
    pub span: Span,
}

impl Path {
    /// The path with its segments joined by `.`, e.g. `author.name`.
    pub fn dotted(&self) -> String {
        let names: Vec<&str> = self.segments.iter().map(|s| s.name.as_str()).collect();
        names.join(".")
    }
}

/// A constant value written in the expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A quoted string, with escapes already decoded.
    String(String),
    /// A whole number such as `42` or `-3`.
    Integer(i64),
    /// A decimal number such as `1.5`; always finite.
    Number(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// Direction of a `@now ± duration` offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sign {
    /// `@now + duration`: a moment in the future.
    Plus,
    /// `@now - duration`: a moment in the past.
    Minus,
}

/// Unit of a duration literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DurationUnit {
    /// `s`
    Seconds,
    /// `m`
    Minutes,
    /// `h`
    Hours,
    /// `d`
    Days,
    /// `w`
    Weeks,
}

impl DurationUnit {
    /// Number of seconds in one unit.
    pub const fn seconds(self) -> i64 {
        match self {
            DurationUnit::Seconds => 1,
            DurationUnit::Minutes => 60,
            DurationUnit::Hours => 3_600,
            DurationUnit::Days => 86_400,
            DurationUnit::Weeks => 604_800,
        }
    }

    /// The suffix letter used in source (`s`, `m`, `h`, `d` or `w`).
    pub const fn suffix(self) -> char {
        match self {
            DurationUnit::Seconds => 's',
            DurationUnit::Minutes => 'm',
            DurationUnit::Hours => 'h',
            DurationUnit::Days => 'd',
            DurationUnit::Weeks => 'w',
        }
    }

    /// The unit written with the given suffix letter, if any.
    pub const fn from_suffix(c: char) -> Option<Self> {
        match c {
            's' => Some(DurationUnit::Seconds),
            'm' => Some(DurationUnit::Minutes),
            'h' => Some(DurationUnit::Hours),
            'd' => Some(DurationUnit::Days),
            'w' => Some(DurationUnit::Weeks),
            _ => None,
        }
    }
}

/// A duration literal such as `30d`, only valid after `@now +` / `@now -`.
#[derive(Debug, Clone, PartialEq)]
pub struct Duration {
    /// The whole number of units.
    pub amount: u32,
    /// The unit.
    pub unit: DurationUnit,
    /// Where the duration literal appears in the source.
    pub span: Span,
}

impl Duration {
    /// The total length in seconds (cannot overflow: `amount` is a `u32`).
    pub const fn as_seconds(&self) -> i64 {
        self.amount as i64 * self.unit.seconds()
    }
}

/// A value: one side of a comparison, an `in` list item, or a bare condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A constant.
    Literal {
        /// The value.
        value: Literal,
        /// Span of the literal, including quotes and a leading `-`.
        span: Span,
    },
    /// A field of the record, possibly through relations (`author.name`).
    Field(Path),
    /// A field of the authenticated user: `@auth.id`, `@auth.role`, ...
    Auth {
        /// The user field after `@auth.`.
        field: Ident,
        /// Span of the whole `@auth.field`.
        span: Span,
    },
    /// A field of the request body: `@body.title`.
    Body {
        /// The body field after `@body.`.
        field: Ident,
        /// Span of the whole `@body.field`.
        span: Span,
    },
    /// The current time, `@now`.
    Now {
        /// Span of `@now`.
        span: Span,
    },
    /// The current time shifted by a duration, `@now - 30d`.
    NowOffset {
        /// Whether the duration is added or subtracted.
        sign: Sign,
        /// The duration.
        duration: Duration,
        /// Span from `@now` to the end of the duration.
        span: Span,
    },
}

impl Operand {
    /// The source span of this operand.
    pub fn span(&self) -> Span {
        match self {
            Operand::Field(path) => path.span,
            Operand::Literal { span, .. }
            | Operand::Auth { span, .. }
            | Operand::Body { span, .. }
            | Operand::Now { span }
            | Operand::NowOffset { span, .. } => *span,
        }
    }

    fn clear_spans(&mut self) {
        match self {
            Operand::Field(path) => clear_path(path),
            Operand::Literal { span, .. } | Operand::Now { span } => *span = Span::default(),
            Operand::Auth { field, span } | Operand::Body { field, span } => {
                field.span = Span::default();
                *span = Span::default();
            }
            Operand::NowOffset { duration, span, .. } => {
                duration.span = Span::default();
                *span = Span::default();
            }
        }
    }
}

fn clear_path(path: &mut Path) {
    path.span = Span::default();
    for seg in &mut path.segments {
        seg.span = Span::default();
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `~`: contains, case-insensitive.
    Contains,
    /// `!~`: does not contain, case-insensitive.
    NotContains,
}

impl CompareOp {
    /// The operator as written in source.
    pub const fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Contains => "~",
            CompareOp::NotContains => "!~",
        }
    }
}

/// A boolean expression: a filter or an access rule.
///
/// `&&` and `||` are left-associative, so `a && b && c` parses as
/// `And(And(a, b), c)`. Parentheses do not produce nodes of their own.
///
/// `Display` prints a canonical form that [`parse`](crate::parse) turns back
/// into the same tree (ignoring spans), for any tree `parse` can produce.
/// The canonical form adds spaces around operators, so it can be slightly
/// longer than the source; an input close to
/// [`MAX_EXPR_LEN`](crate::MAX_EXPR_LEN) may print over the limit.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `lhs && rhs`
    And {
        /// Left side.
        lhs: Box<Expr>,
        /// Right side.
        rhs: Box<Expr>,
        /// Span from the start of `lhs` to the end of `rhs`.
        span: Span,
    },
    /// `lhs || rhs`
    Or {
        /// Left side.
        lhs: Box<Expr>,
        /// Right side.
        rhs: Box<Expr>,
        /// Span from the start of `lhs` to the end of `rhs`.
        span: Span,
    },
    /// `!expr`
    Not {
        /// The negated condition.
        expr: Box<Expr>,
        /// Span from the `!` to the end of the operand.
        span: Span,
    },
    /// `lhs op rhs`
    Compare {
        /// The operator.
        op: CompareOp,
        /// Left value.
        lhs: Operand,
        /// Right value.
        rhs: Operand,
        /// Span of the whole comparison.
        span: Span,
    },
    /// `lhs in (items...)` or `lhs not in (items...)`
    In {
        /// `true` for `not in`.
        negated: bool,
        /// The value looked up.
        lhs: Operand,
        /// The list (1 to [`MAX_IN_ITEMS`](crate::MAX_IN_ITEMS) items).
        items: Vec<Operand>,
        /// Span from `lhs` to the closing parenthesis.
        span: Span,
    },
    /// A value used as a condition on its own: a boolean field path,
    /// `@auth.<field>`, `@body.<field>`, `true` or `false`.
    Truthy(Operand),
}

impl Expr {
    /// The source span of this expression.
    pub fn span(&self) -> Span {
        match self {
            Expr::And { span, .. }
            | Expr::Or { span, .. }
            | Expr::Not { span, .. }
            | Expr::Compare { span, .. }
            | Expr::In { span, .. } => *span,
            Expr::Truthy(operand) => operand.span(),
        }
    }

    /// A copy of this expression with every span set to `Span::default()`,
    /// for comparing trees regardless of where they were parsed from.
    pub fn without_spans(&self) -> Expr {
        let mut copy = self.clone();
        copy.clear_spans();
        copy
    }

    fn clear_spans(&mut self) {
        match self {
            Expr::And { lhs, rhs, span } | Expr::Or { lhs, rhs, span } => {
                lhs.clear_spans();
                rhs.clear_spans();
                *span = Span::default();
            }
            Expr::Not { expr, span } => {
                expr.clear_spans();
                *span = Span::default();
            }
            Expr::Compare { lhs, rhs, span, .. } => {
                lhs.clear_spans();
                rhs.clear_spans();
                *span = Span::default();
            }
            Expr::In {
                lhs, items, span, ..
            } => {
                lhs.clear_spans();
                items.iter_mut().for_each(Operand::clear_spans);
                *span = Span::default();
            }
            Expr::Truthy(operand) => operand.clear_spans(),
        }
    }
}
