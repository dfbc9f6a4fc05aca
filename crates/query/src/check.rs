//! Type checking: an [`Expr`] checked against a resource of the schema becomes a [`Cond`],
//! the typed form that compiles to SQL ([`crate::sql`]) and evaluates in memory
//! ([`crate::eval`]) with the same meaning.
//!
//! Meaning, in both places (two-valued logic; `null` never makes a condition unknown):
//! - `x = null` / `x != null` test for absence.
//! - Any other comparison involving an absent value is false; `!=`, `!~` and `not in` are
//!   exactly the negation of `=`, `~` and `in`, so they are true then.
//! - `~` is "contains", case-insensitive for ASCII letters; `%` and `_` are plain text.
//! - A path through a many relation is true when any linked record satisfies it.

use ferrobase_schema::{Field, FieldType, Resource, Schema, USERS};

use crate::ast::{CompareOp, Expr, Literal, Operand, Path, Sign, Span};

/// What kind of value a term holds, for deciding which comparisons make sense.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Free text (`string`, `text`, `email`, `url`).
    Text,
    /// One of a fixed set of strings.
    Enum(Vec<String>),
    /// A record id or UUID (compared as lower-case text).
    Id,
    /// 64-bit integer.
    Integer,
    /// Double.
    Number,
    /// Boolean.
    Bool,
    /// Instant (canonical UTC text, fixed width, so text order is time order).
    Datetime,
    /// Calendar date `YYYY-MM-DD`.
    Date,
    /// Arbitrary JSON: only `= null` / `!= null`.
    Json,
}

impl Kind {
    fn of(ty: &FieldType) -> Self {
        match ty {
            FieldType::String | FieldType::Text | FieldType::Email | FieldType::Url => Self::Text,
            FieldType::Enum(values) => Self::Enum(values.clone()),
            FieldType::Uuid | FieldType::Relation(_) => Self::Id,
            FieldType::Integer => Self::Integer,
            FieldType::Number => Self::Number,
            FieldType::Boolean => Self::Bool,
            FieldType::Datetime => Self::Datetime,
            FieldType::Date => Self::Date,
            FieldType::Json => Self::Json,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Enum(_) => "enum",
            Self::Id => "id",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Bool => "boolean",
            Self::Datetime => "datetime",
            Self::Date => "date",
            Self::Json => "json",
        }
    }

    fn is_textual(&self) -> bool {
        matches!(self, Self::Text | Self::Enum(_) | Self::Id)
    }

    fn is_numeric(&self) -> bool {
        matches!(self, Self::Integer | Self::Number)
    }

    fn ordered(&self) -> bool {
        !matches!(self, Self::Bool | Self::Json)
    }

    /// Whether values of the two kinds can be compared with each other.
    fn compatible(&self, other: &Self) -> bool {
        (self.is_textual() && other.is_textual())
            || (self.is_numeric() && other.is_numeric())
            || std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// A constant value.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// Text (also ids, datetimes and dates in canonical form).
    Text(String),
    /// Integer.
    Int(i64),
    /// Double.
    Num(f64),
    /// Boolean.
    Bool(bool),
}

/// One step along a relation.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    /// Resource the step starts from.
    pub from: String,
    /// The relation field followed.
    pub field: String,
    /// Resource it leads to.
    pub to: String,
    /// Whether it is a many relation (a join table).
    pub many: bool,
}

/// A column, possibly reached through relations.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnRef {
    /// Relations followed from the queried resource, in order.
    pub hops: Vec<Hop>,
    /// The column at the end.
    pub column: String,
    /// Its kind.
    pub kind: Kind,
    /// Compared case-insensitively (ASCII), like users' `email`.
    pub nocase: bool,
}

/// A value known only when a request arrives.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// `@auth.<field>` (`id` included).
    Auth(String),
    /// `@body.<field>`.
    Body(String),
    /// `@now` shifted by seconds; `date` when compared with a date.
    Now {
        /// Seconds added to the current time.
        offset: i64,
        /// Render as a date rather than an instant.
        date: bool,
    },
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// A column of the record (or of related records).
    Column(ColumnRef),
    /// A constant, already in the other side's canonical form.
    Value(Scalar),
    /// A request value, with the kind it must have.
    Param(Param, Kind),
}

/// The positive comparison operators; negative ones are [`Cond::Not`] of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `~` (contains, ASCII case-insensitive)
    Contains,
}

/// A checked condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// Both hold.
    And(Box<Cond>, Box<Cond>),
    /// Either holds.
    Or(Box<Cond>, Box<Cond>),
    /// Does not hold.
    Not(Box<Cond>),
    /// A comparison; false when either side is absent.
    Cmp {
        /// Operator.
        op: Op,
        /// Left side.
        lhs: Term,
        /// Right side.
        rhs: Term,
    },
    /// `lhs` equals one of `items`.
    In {
        /// The tested value.
        lhs: Term,
        /// Candidates.
        items: Vec<Term>,
    },
    /// The term is absent.
    IsNull(Term),
}

/// Where an expression is used, which decides the names it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A client's `?filter=`: hidden and read-protected fields are not visible.
    Filter,
    /// A schema rule; `body` says whether `@body` exists (create and update).
    Rule {
        /// Whether `@body.<field>` may be used.
        body: bool,
    },
}

/// Why an expression does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    /// Byte offset in the expression.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

struct Checker<'a> {
    schema: &'a Schema,
    resource: &'a Resource,
    mode: Mode,
}

fn err(span: Span, message: impl Into<String>, hint: Option<String>) -> CheckError {
    CheckError {
        offset: span.start,
        message: message.into(),
        hint,
    }
}

/// Checks `expr` against `resource`.
pub fn check(
    expr: &Expr,
    schema: &Schema,
    resource: &Resource,
    mode: Mode,
) -> Result<Cond, CheckError> {
    Checker {
        schema,
        resource,
        mode,
    }
    .cond(expr)
}

/// Names a client may filter or sort on in `resource`, for messages.
pub fn visible_columns(resource: &Resource) -> Vec<String> {
    let mut names = vec!["id".to_owned()];
    names.extend(
        resource
            .fields
            .iter()
            .filter(|f| visible(f))
            .map(|f| f.name.clone()),
    );
    names.push("version".into());
    if resource.timestamps {
        names.push("created_at".into());
        names.push("updated_at".into());
    }
    names
}

fn visible(field: &Field) -> bool {
    !field.hidden && field.read.as_ref().is_none_or(|r| r.is_public())
}

impl Checker<'_> {
    fn cond(&self, expr: &Expr) -> Result<Cond, CheckError> {
        Ok(match expr {
            Expr::And { lhs, rhs, .. } => {
                Cond::And(Box::new(self.cond(lhs)?), Box::new(self.cond(rhs)?))
            }
            Expr::Or { lhs, rhs, .. } => {
                Cond::Or(Box::new(self.cond(lhs)?), Box::new(self.cond(rhs)?))
            }
            Expr::Not { expr, .. } => Cond::Not(Box::new(self.cond(expr)?)),
            Expr::Truthy(operand) => {
                let term = self.term(operand, None)?;
                let constant = matches!(term, Term::Value(Scalar::Bool(_)));
                if !constant && self.kind(&term) != Some(Kind::Bool) {
                    return Err(err(
                        operand.span(),
                        format!(
                            "'{operand}' is not a boolean, so it cannot stand alone as a condition"
                        ),
                        Some("compare it, for example with = or !=".into()),
                    ));
                }
                Cond::Cmp {
                    op: Op::Eq,
                    lhs: term,
                    rhs: Term::Value(Scalar::Bool(true)),
                }
            }
            Expr::Compare { op, lhs, rhs, .. } => self.compare(*op, lhs, rhs)?,
            Expr::In {
                negated,
                lhs,
                items,
                ..
            } => {
                let left = self.term(lhs, None)?;
                let kind = self.kind(&left);
                if matches!(kind, Some(Kind::Json)) {
                    return Err(err(
                        lhs.span(),
                        "json fields can only be compared with null",
                        None,
                    ));
                }
                let mut terms = Vec::with_capacity(items.len());
                for item in items {
                    if matches!(
                        item,
                        Operand::Literal {
                            value: Literal::Null,
                            ..
                        }
                    ) {
                        return Err(err(
                            item.span(),
                            "null cannot be in a list; use = null",
                            None,
                        ));
                    }
                    let term = self.term(item, kind.as_ref())?;
                    self.compatible(&left, &term, item.span())?;
                    terms.push(term);
                }
                let cond = Cond::In {
                    lhs: left,
                    items: terms,
                };
                if *negated {
                    Cond::Not(Box::new(cond))
                } else {
                    cond
                }
            }
        })
    }

    fn compare(&self, op: CompareOp, lhs: &Operand, rhs: &Operand) -> Result<Cond, CheckError> {
        let is_null = |o: &Operand| {
            matches!(
                o,
                Operand::Literal {
                    value: Literal::Null,
                    ..
                }
            )
        };
        if is_null(lhs) || is_null(rhs) {
            let other = if is_null(lhs) { rhs } else { lhs };
            if is_null(other) {
                return Err(err(
                    other.span(),
                    "comparing null with null is always the same; remove it",
                    None,
                ));
            }
            let term = self.term(other, None)?;
            return match op {
                CompareOp::Eq => Ok(Cond::IsNull(term)),
                CompareOp::Ne => Ok(Cond::Not(Box::new(Cond::IsNull(term)))),
                _ => Err(err(
                    rhs.span(),
                    format!(
                        "'{}' cannot compare with null; use = null or != null",
                        op.as_str()
                    ),
                    None,
                )),
            };
        }
        // Type the side that names a column first, so literals take its form.
        let (first, second, swapped) = if matches!(lhs, Operand::Literal { .. }) {
            (rhs, lhs, true)
        } else {
            (lhs, rhs, false)
        };
        let a = self.term(first, None)?;
        let b = self.term(second, self.kind(&a).as_ref())?;
        self.compatible(&a, &b, second.span())?;
        let (lhs, rhs) = if swapped { (b, a) } else { (a, b) };
        let kind = self.kind(&lhs).or_else(|| self.kind(&rhs));
        let (positive, negate) = match op {
            CompareOp::Eq => (Op::Eq, false),
            CompareOp::Ne => (Op::Eq, true),
            CompareOp::Lt => (Op::Lt, false),
            CompareOp::Le => (Op::Le, false),
            CompareOp::Gt => (Op::Gt, false),
            CompareOp::Ge => (Op::Ge, false),
            CompareOp::Contains => (Op::Contains, false),
            CompareOp::NotContains => (Op::Contains, true),
        };
        if let Some(kind) = &kind {
            let ok = match positive {
                Op::Eq => !matches!(kind, Kind::Json),
                Op::Contains => matches!(kind, Kind::Text | Kind::Enum(_)),
                _ => kind.ordered(),
            };
            if !ok {
                return Err(err(
                    first.span(),
                    format!("'{}' does not apply to {} values", op.as_str(), kind.name()),
                    Some(match kind {
                        Kind::Json => "json fields can only be compared with null".into(),
                        Kind::Bool => "booleans support = and !=".into(),
                        _ => "~ and !~ apply to text".into(),
                    }),
                ));
            }
        }
        let cond = Cond::Cmp {
            op: positive,
            lhs,
            rhs,
        };
        Ok(if negate {
            Cond::Not(Box::new(cond))
        } else {
            cond
        })
    }

    fn compatible(&self, a: &Term, b: &Term, span: Span) -> Result<(), CheckError> {
        match (self.kind(a), self.kind(b)) {
            (Some(x), Some(y)) if !x.compatible(&y) => Err(err(
                span,
                format!("cannot compare {} with {}", x.name(), y.name()),
                None,
            )),
            _ => Ok(()),
        }
    }

    /// The kind of a term; `None` for constants, which adapt to the other side.
    fn kind(&self, term: &Term) -> Option<Kind> {
        match term {
            Term::Column(c) => Some(c.kind.clone()),
            Term::Param(_, kind) => Some(kind.clone()),
            Term::Value(_) => None,
        }
    }

    /// Types an operand; `expect` is the other side's kind, which literals convert to.
    fn term(&self, operand: &Operand, expect: Option<&Kind>) -> Result<Term, CheckError> {
        match operand {
            Operand::Field(path) => Ok(Term::Column(self.path(path)?)),
            Operand::Literal { value, span } => literal(value, expect, *span).map(Term::Value),
            Operand::Now { .. } => Ok(Term::Param(
                Param::Now {
                    offset: 0,
                    date: expect == Some(&Kind::Date),
                },
                now_kind(expect),
            )),
            Operand::NowOffset { sign, duration, .. } => {
                let secs = duration.as_seconds();
                let offset = if *sign == Sign::Minus { -secs } else { secs };
                Ok(Term::Param(
                    Param::Now {
                        offset,
                        date: expect == Some(&Kind::Date),
                    },
                    now_kind(expect),
                ))
            }
            Operand::Auth { field, span } => {
                let name = field.name.as_str();
                let kind = if name == "id" {
                    Kind::Id
                } else {
                    let users = self.schema.resource(USERS);
                    match users.and_then(|u| u.field(name)).filter(|f| !f.hidden) {
                        Some(f) if !f.is_many() => Kind::of(&f.ty),
                        _ => {
                            let names: Vec<String> = std::iter::once("id".to_owned())
                                .chain(
                                    users
                                        .into_iter()
                                        .flat_map(|u| u.fields.iter())
                                        .filter(|f| !f.hidden && !f.is_many())
                                        .map(|f| f.name.clone()),
                                )
                                .collect();
                            return Err(err(
                                field.span,
                                format!("@auth has no field '{name}'"),
                                Some(format!("@auth fields: {}", names.join(", "))),
                            ));
                        }
                    }
                };
                let _ = span;
                Ok(Term::Param(Param::Auth(name.to_owned()), kind))
            }
            Operand::Body { field, .. } => {
                if !matches!(self.mode, Mode::Rule { body: true }) {
                    return Err(err(
                        field.span,
                        "@body is only available in create and update rules",
                        None,
                    ));
                }
                match self.resource.field(&field.name) {
                    Some(f) if !f.is_many() => Ok(Term::Param(
                        Param::Body(field.name.clone()),
                        Kind::of(&f.ty),
                    )),
                    Some(_) => Err(err(
                        field.span,
                        format!(
                            "@body.{} is a many relation and cannot be compared",
                            field.name
                        ),
                        None,
                    )),
                    None => Err(err(
                        field.span,
                        format!(
                            "@body.{}: unknown field '{}' in {}",
                            field.name, field.name, self.resource.name
                        ),
                        Some(format!(
                            "fields of {}: {}",
                            self.resource.name,
                            self.resource
                                .fields
                                .iter()
                                .map(|f| f.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    )),
                }
            }
        }
    }

    fn path(&self, path: &Path) -> Result<ColumnRef, CheckError> {
        let mut current = self.resource;
        let mut hops = Vec::new();
        let last = path.segments.len() - 1;
        for (i, segment) in path.segments.iter().enumerate() {
            let name = segment.name.as_str();
            if i == last && current.is_system_column(name) {
                let kind = match name {
                    "id" => Kind::Id,
                    "version" => Kind::Integer,
                    _ => Kind::Datetime,
                };
                return Ok(ColumnRef {
                    hops,
                    column: name.to_owned(),
                    kind,
                    nocase: false,
                });
            }
            let field = current
                .field(name)
                .filter(|f| self.mode != Mode::Filter || visible(f))
                .ok_or_else(|| {
                    let names = match self.mode {
                        Mode::Filter => visible_columns(current),
                        Mode::Rule { .. } => {
                            let mut n = vec!["id".to_owned()];
                            n.extend(current.fields.iter().map(|f| f.name.clone()));
                            n.push("version".into());
                            if current.timestamps {
                                n.extend(["created_at".to_owned(), "updated_at".to_owned()]);
                            }
                            n
                        }
                    };
                    err(
                        segment.span,
                        format!("unknown field '{name}' in {}", current.name),
                        Some(format!("fields of {}: {}", current.name, names.join(", "))),
                    )
                })?;
            let relation = field.relation();
            if i == last {
                return Ok(match relation {
                    // A many relation on its own means the ids of the linked records.
                    Some(rel) if rel.many => {
                        hops.push(Hop {
                            from: current.name.clone(),
                            field: field.name.clone(),
                            to: rel.resource.clone(),
                            many: true,
                        });
                        ColumnRef {
                            hops,
                            column: "id".into(),
                            kind: Kind::Id,
                            nocase: false,
                        }
                    }
                    _ => ColumnRef {
                        hops,
                        column: field.name.clone(),
                        kind: Kind::of(&field.ty),
                        nocase: field.case_insensitive,
                    },
                });
            }
            let Some(rel) = relation else {
                return Err(err(
                    segment.span,
                    format!(
                        "'{name}' is not a relation, so '{}' cannot be followed",
                        path.dotted()
                    ),
                    None,
                ));
            };
            let target = self.schema.resource(&rel.resource).ok_or_else(|| {
                err(
                    segment.span,
                    format!("unknown resource '{}'", rel.resource),
                    None,
                )
            })?;
            hops.push(Hop {
                from: current.name.clone(),
                field: field.name.clone(),
                to: target.name.clone(),
                many: rel.many,
            });
            current = target;
        }
        Err(err(path.span, "empty path", None))
    }
}

fn now_kind(expect: Option<&Kind>) -> Kind {
    if expect == Some(&Kind::Date) {
        Kind::Date
    } else {
        Kind::Datetime
    }
}

/// Converts a literal to the canonical form of the kind it is compared with.
fn literal(value: &Literal, expect: Option<&Kind>, span: Span) -> Result<Scalar, CheckError> {
    let mismatch = |what: &str| Err(err(span, format!("expected {what} here"), None));
    Ok(match (value, expect) {
        (Literal::Null, _) => return Err(err(span, "null can only be used with = and !=", None)),
        (Literal::String(s), Some(Kind::Datetime)) => {
            match ferrobase_schema::validate::normalize_datetime(s) {
                Some(v) => Scalar::Text(v),
                None => return mismatch("an RFC 3339 date-time such as '2025-01-31T12:00:00Z'"),
            }
        }
        (Literal::String(s), Some(Kind::Date)) => {
            let ok = s.len() == 10
                && ferrobase_schema::validate::normalize_datetime(&format!("{s}T00:00:00Z"))
                    .is_some();
            if !ok {
                return mismatch("a date such as '2025-01-31'");
            }
            Scalar::Text(s.clone())
        }
        (Literal::String(s), Some(Kind::Id)) => match ferrobase_schema::validate::normalize_uuid(s)
        {
            Some(v) => Scalar::Text(v),
            None => return mismatch("a record id (a UUID)"),
        },
        (Literal::String(s), Some(Kind::Enum(values))) => {
            if !values.contains(s) {
                return Err(err(
                    span,
                    format!("'{s}' is not one of: {}", values.join(", ")),
                    None,
                ));
            }
            Scalar::Text(s.clone())
        }
        (Literal::String(s), Some(Kind::Text) | None) => Scalar::Text(s.clone()),
        (Literal::Integer(i), Some(Kind::Integer | Kind::Number) | None) => Scalar::Int(*i),
        (Literal::Number(f), Some(Kind::Number) | None) => Scalar::Num(*f),
        (Literal::Number(f), Some(Kind::Integer)) => Scalar::Num(*f),
        (Literal::Bool(b), Some(Kind::Bool) | None) => Scalar::Bool(*b),
        (_, Some(kind)) => return mismatch(&format!("a {} value", kind.name())),
    })
}

impl Cond {
    /// Every term of the condition.
    fn terms<'a>(&'a self, out: &mut Vec<&'a Term>) {
        match self {
            Cond::And(a, b) | Cond::Or(a, b) => {
                a.terms(out);
                b.terms(out);
            }
            Cond::Not(c) => c.terms(out),
            Cond::Cmp { lhs, rhs, .. } => {
                out.push(lhs);
                out.push(rhs);
            }
            Cond::In { lhs, items } => {
                out.push(lhs);
                out.extend(items.iter());
            }
            Cond::IsNull(t) => out.push(t),
        }
    }

    /// Whether some `@now ± duration` of the condition lands, at `now`, outside the years
    /// a store can hold (a filter asking for that is a client error, not an empty page).
    pub fn reaches_beyond_dates(&self, now: time::OffsetDateTime) -> bool {
        let mut terms = Vec::new();
        self.terms(&mut terms);
        terms.iter().any(|t| match t {
            Term::Param(Param::Now { offset, .. }, _) => now
                .checked_add(time::Duration::seconds(*offset))
                .is_none_or(|at| !ferrobase_schema::validate::in_range(at)),
            _ => false,
        })
    }

    /// Whether the condition looks at the caller (`@auth`), so an anonymous caller
    /// refused by it should be asked for credentials (401) rather than told no (403).
    pub fn uses_auth(&self) -> bool {
        let mut terms = Vec::new();
        self.terms(&mut terms);
        terms
            .iter()
            .any(|t| matches!(t, Term::Param(Param::Auth(_), _)))
    }

    /// Whether it needs user fields other than `id` and `role` (which tokens carry).
    pub fn needs_user_record(&self) -> bool {
        let mut terms = Vec::new();
        self.terms(&mut terms);
        terms
            .iter()
            .any(|t| matches!(t, Term::Param(Param::Auth(f), _) if f != "id" && f != "role"))
    }

    /// Whether it reads a column of the record itself (not through a relation) that
    /// `pred` picks (realtime: a hidden field, which events do not carry).
    pub fn reads_own_column(&self, pred: impl Fn(&str) -> bool) -> bool {
        let mut terms = Vec::new();
        self.terms(&mut terms);
        terms
            .iter()
            .any(|t| matches!(t, Term::Column(c) if c.hops.is_empty() && pred(&c.column)))
    }

    /// Whether it follows relations (field rules may not: they are judged per record in
    /// memory).
    pub fn follows_relations(&self) -> bool {
        let mut terms = Vec::new();
        self.terms(&mut terms);
        terms
            .iter()
            .any(|t| matches!(t, Term::Column(c) if !c.hops.is_empty()))
    }
}
