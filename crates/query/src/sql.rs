//! Compiling a [`Cond`] to SQL through sea-query, for SQLite and PostgreSQL.
//!
//! Every value is a bound parameter; every identifier comes from the checked schema.
//! Request values (`@auth`, `@body`, `@now`) are bound at compile time, and comparisons
//! that involve no column are decided here, so the database only sees column tests.
//! Paths through relations become `EXISTS` subqueries (no joins that multiply rows, no
//! N+1 queries).

use sea_query::{Alias, Expr, ExprTrait, Query, SelectStatement, Value};

use crate::check::{ColumnRef, Cond, Kind, Op, Scalar, Term};
use crate::env::Env;
use crate::eval::compare;

/// SQL dialect to compile for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (text datetimes, 0/1 booleans, ASCII `lower`).
    Sqlite,
    /// PostgreSQL (typed timestamps and uuids).
    Postgres,
}

/// Compiles `cond` for rows of `table` (the name the outer query uses for it).
pub fn to_sql(cond: &Cond, env: &Env<'_>, dialect: Dialect, table: &str) -> Expr {
    compile(cond, env, dialect, table).into_expr()
}

/// A compiled condition: decided without the database, or SQL for it.
#[derive(Debug, Clone)]
pub enum Compiled {
    /// Holds (or not) for every row.
    Always(bool),
    /// Depends on the row.
    Sql(Expr),
}

impl Compiled {
    /// The SQL form (`TRUE`/`FALSE` for decided conditions).
    pub fn into_expr(self) -> Expr {
        match self {
            Compiled::Always(b) => truth(b),
            Compiled::Sql(e) => e,
        }
    }
}

/// Like [`to_sql`], but says when the condition was decided with no row to look at
/// (so callers can answer 401/403 without asking the database).
pub fn compile(cond: &Cond, env: &Env<'_>, dialect: Dialect, table: &str) -> Compiled {
    compile_guarded(cond, env, dialect, table, None)
}

/// Compiles a client's filter: every related record it looks at must also satisfy
/// `guard` (the related resource's view rule), so a filter can never reveal what the
/// caller could not read directly.
pub fn compile_guarded(
    cond: &Cond,
    env: &Env<'_>,
    dialect: Dialect,
    table: &str,
    guard: Option<Guard<'_>>,
) -> Compiled {
    let mut c = Compiler {
        env,
        dialect,
        table,
        aliases: 0,
        guard,
    };
    match c.cond(cond) {
        Out::Const(b) => Compiled::Always(b),
        Out::Sql(e) => Compiled::Sql(e),
    }
}

const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";

fn truth(b: bool) -> Expr {
    Expr::cust(if b { "TRUE" } else { "FALSE" })
}

fn col(alias: &str, column: &str) -> Expr {
    Expr::col((Alias::new(alias), Alias::new(column)))
}

/// A side of a comparison once request values are known.
enum Side {
    /// A column expression (with its kind and collation).
    Column(Expr, Kind, bool),
    /// A constant; `None` when absent.
    Constant(Option<Scalar>),
}

/// For a resource reached through a relation and the alias it has in the query, the
/// condition its rows must meet for the caller (its view rule), or `None` for all rows.
pub type Guard<'a> = &'a (dyn Fn(&str, &str) -> Option<Expr> + Sync);

struct Compiler<'a> {
    env: &'a Env<'a>,
    dialect: Dialect,
    table: &'a str,
    aliases: usize,
    guard: Option<Guard<'a>>,
}

/// A compiled condition: decided already, or left to the database.
enum Out {
    Const(bool),
    Sql(Expr),
}

impl Out {
    fn and(self, other: Out) -> Out {
        match (self, other) {
            (Out::Const(false), _) | (_, Out::Const(false)) => Out::Const(false),
            (Out::Const(true), x) | (x, Out::Const(true)) => x,
            (Out::Sql(a), Out::Sql(b)) => Out::Sql(a.and(b)),
        }
    }

    fn or(self, other: Out) -> Out {
        match (self, other) {
            (Out::Const(true), _) | (_, Out::Const(true)) => Out::Const(true),
            (Out::Const(false), x) | (x, Out::Const(false)) => x,
            (Out::Sql(a), Out::Sql(b)) => Out::Sql(a.or(b)),
        }
    }
}

impl Compiler<'_> {
    fn cond(&mut self, cond: &Cond) -> Out {
        match cond {
            Cond::And(a, b) => {
                let a = self.cond(a);
                a.and(self.cond(b))
            }
            Cond::Or(a, b) => {
                let a = self.cond(a);
                a.or(self.cond(b))
            }
            // SQL's NOT of an unknown is unknown; our NOT of "false because absent" is true.
            Cond::Not(c) => match self.cond(c) {
                Out::Const(b) => Out::Const(!b),
                Out::Sql(inner) => Out::Sql(self.custom("NOT COALESCE($1, FALSE)", [inner])),
            },
            Cond::IsNull(term) => self.with_columns(&[term], |_, sides| match &sides[0] {
                Side::Constant(v) => Out::Const(v.is_none()),
                Side::Column(e, ..) => Out::Sql(e.clone().is_null()),
            }),
            Cond::Cmp { op, lhs, rhs } => {
                let op = *op;
                self.with_columns(&[lhs, rhs], |c, sides| c.compare(op, &sides[0], &sides[1]))
            }
            Cond::In { lhs, items } => {
                let mut terms: Vec<&Term> = vec![lhs];
                terms.extend(items.iter());
                self.with_columns(&terms, |c, sides| {
                    let Some((first, rest)) = sides.split_first() else {
                        return Out::Const(false);
                    };
                    rest.iter().fold(Out::Const(false), |acc, item| {
                        acc.or(c.compare(Op::Eq, first, item))
                    })
                })
            }
        }
    }

    /// Places the terms' columns (building one `EXISTS` subquery for those reached
    /// through relations) and builds the predicate over them.
    fn with_columns(&mut self, terms: &[&Term], build: impl FnOnce(&Self, &[Side]) -> Out) -> Out {
        let mut sub: Option<SelectStatement> = None;
        let sides: Vec<Side> = terms
            .iter()
            .map(|t| match t {
                Term::Value(v) => Side::Constant(Some(v.clone())),
                Term::Param(p, kind) => Side::Constant(self.env.resolve(p, kind)),
                Term::Column(c) => {
                    let e = self.place(c, &mut sub);
                    Side::Column(e, c.kind.clone(), c.nocase)
                }
            })
            .collect();
        match (build(self, &sides), sub) {
            (Out::Sql(predicate), Some(mut select)) => {
                select.and_where(predicate);
                Out::Sql(Expr::exists(select))
            }
            // A decided predicate inside EXISTS still depends on related rows existing.
            (Out::Const(true), Some(select)) => Out::Sql(Expr::exists(select)),
            (out, _) => out,
        }
    }

    fn next_alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    /// The SQL expression of a column, adding the joins of its path to `sub`.
    fn place(&mut self, c: &ColumnRef, sub: &mut Option<SelectStatement>) -> Expr {
        let mut prev = self.table.to_owned();
        let last = c.hops.len().saturating_sub(1);
        for (i, hop) in c.hops.iter().enumerate() {
            let link =
                |sub: &mut Option<SelectStatement>, table: String, alias: &str, on: Expr| match sub
                {
                    None => {
                        let mut s = Query::select();
                        s.expr(Expr::cust("1"))
                            .from_as(Alias::new(table), Alias::new(alias))
                            .and_where(on);
                        *sub = Some(s);
                    }
                    Some(s) => {
                        s.join_as(
                            sea_query::JoinType::InnerJoin,
                            Alias::new(table),
                            Alias::new(alias),
                            on,
                        );
                    }
                };
            if hop.many {
                let j = self.next_alias("j");
                let join_table = format!("{}__{}", hop.from, hop.field);
                link(
                    sub,
                    join_table,
                    &j,
                    col(&j, "source").equals((Alias::new(prev.as_str()), Alias::new("id"))),
                );
                let a = self.next_alias("r");
                let guard = self.guard.and_then(|g| g(&hop.to, &a));
                if i == last && c.column == "id" && guard.is_none() {
                    return col(&j, "target");
                }
                link(
                    sub,
                    hop.to.clone(),
                    &a,
                    col(&a, "id").equals((Alias::new(j.as_str()), Alias::new("target"))),
                );
                if let (Some(s), Some(g)) = (sub.as_mut(), guard) {
                    s.and_where(g);
                }
                prev = a;
            } else {
                let a = self.next_alias("r");
                link(
                    sub,
                    hop.to.clone(),
                    &a,
                    col(&a, "id")
                        .equals((Alias::new(prev.as_str()), Alias::new(hop.field.as_str()))),
                );
                if let (Some(s), Some(g)) = (sub.as_mut(), self.guard.and_then(|g| g(&hop.to, &a)))
                {
                    s.and_where(g);
                }
                prev = a;
            }
        }
        col(&prev, &c.column)
    }

    fn value(&self, v: &Scalar, kind: Option<&Kind>) -> Expr {
        let value: Value = match v {
            Scalar::Text(s) => s.clone().into(),
            Scalar::Int(i) => (*i).into(),
            Scalar::Num(f) => (*f).into(),
            Scalar::Bool(b) => (*b).into(),
        };
        let e = Expr::val(value);
        match (self.dialect, kind) {
            (Dialect::Postgres, Some(Kind::Datetime)) => e.cast_as("timestamptz"),
            (Dialect::Postgres, Some(Kind::Date)) => e.cast_as("date"),
            (Dialect::Postgres, Some(Kind::Id)) => e.cast_as("uuid"),
            _ => e,
        }
    }

    /// A custom SQL fragment; `$1`, `$2`... (in order) stand for the expressions.
    /// sea-query's SQLite writer expects `?` there instead.
    fn custom<const N: usize>(&self, template: &str, exprs: [Expr; N]) -> Expr {
        let template = match self.dialect {
            Dialect::Postgres => template.to_owned(),
            Dialect::Sqlite => {
                (1..=N).fold(template.to_owned(), |t, i| t.replace(&format!("${i}"), "?"))
            }
        };
        Expr::cust_with_exprs(template, exprs)
    }

    fn fold_case(&self, e: Expr) -> Expr {
        match self.dialect {
            Dialect::Sqlite => self.custom("lower($1)", [e]),
            Dialect::Postgres => self.custom(&format!("translate($1, '{UPPER}', '{LOWER}')"), [e]),
        }
    }

    fn compare(&self, op: Op, a: &Side, b: &Side) -> Out {
        let (l, r) = match (a, b) {
            (Side::Constant(x), Side::Constant(y)) => {
                return Out::Const(match (x, y) {
                    (Some(x), Some(y)) => compare(op, x, y, false),
                    _ => false,
                });
            }
            (_, Side::Constant(None)) | (Side::Constant(None), _) => return Out::Const(false),
            (Side::Column(e, kind, nocase), Side::Constant(Some(v))) => (
                self.case(e.clone(), *nocase, op),
                self.constant(v, kind, *nocase, op),
            ),
            (Side::Constant(Some(v)), Side::Column(e, kind, nocase)) => (
                self.constant(v, kind, *nocase, op),
                self.case(e.clone(), *nocase, op),
            ),
            (Side::Column(x, _, xn), Side::Column(y, _, yn)) => {
                // Fold both sides explicitly: SQLite would otherwise apply only the left
                // column's collation.
                let fold = |e: &Expr| {
                    if *xn || *yn || op == Op::Contains {
                        self.fold_case(e.clone())
                    } else {
                        e.clone()
                    }
                };
                (fold(x), fold(y))
            }
        };
        Out::Sql(match op {
            Op::Eq => l.eq(r),
            Op::Lt => l.lt(r),
            Op::Le => l.lte(r),
            Op::Gt => l.gt(r),
            Op::Ge => l.gte(r),
            Op::Contains => match self.dialect {
                Dialect::Sqlite => self.custom("instr($1, $2) > 0", [l, r]),
                Dialect::Postgres => self.custom("strpos($1, $2) > 0", [l, r]),
            },
        })
    }

    /// A column, case-folded where the comparison ignores ASCII case. SQLite applies a
    /// `NOCASE` column's collation itself; only `~` needs explicit folding there.
    fn case(&self, e: Expr, nocase: bool, op: Op) -> Expr {
        let fold = op == Op::Contains || (nocase && self.dialect == Dialect::Postgres);
        if fold { self.fold_case(e) } else { e }
    }

    fn constant(&self, v: &Scalar, kind: &Kind, nocase: bool, op: Op) -> Expr {
        let fold = op == Op::Contains || (nocase && self.dialect == Dialect::Postgres);
        match v {
            Scalar::Text(s) if fold => Expr::val(s.to_ascii_lowercase()),
            _ => self.value(v, Some(kind)),
        }
    }
}
