//! In-memory evaluation of a [`Cond`], with exactly the meaning of its SQL (see
//! [`crate::check`]): used where no database is asked, such as checking realtime events.

use std::cmp::Ordering;

use serde_json::Value;

use crate::check::{ColumnRef, Cond, Hop, Op, Scalar, Term};
use crate::env::{Env, scalar};

/// Access to records for evaluation.
pub trait Lookup {
    /// The stored value of `column` of record `id` in `resource` (`None` when unknown).
    fn value(&self, resource: &str, id: &str, column: &str) -> Option<Value>;
    /// Ids of the records reached from record `id` (of `hop.from`) through `hop`.
    fn follow(&self, hop: &Hop, id: &str) -> Vec<String>;
}

/// Whether record `id` of `resource` satisfies `cond`.
pub fn eval(cond: &Cond, env: &Env<'_>, lookup: &dyn Lookup, resource: &str, id: &str) -> bool {
    let at = Record {
        lookup,
        resource,
        id,
    };
    at.cond(cond, env)
}

struct Record<'a> {
    lookup: &'a dyn Lookup,
    resource: &'a str,
    id: &'a str,
}

/// A term's possible values: one for a plain column or constant, any number for a
/// path through relations ("any" semantics); `None` entries are absent values.
type Values = Vec<(Option<Scalar>, bool)>;

impl Record<'_> {
    fn cond(&self, cond: &Cond, env: &Env<'_>) -> bool {
        match cond {
            Cond::And(a, b) => self.cond(a, env) && self.cond(b, env),
            Cond::Or(a, b) => self.cond(a, env) || self.cond(b, env),
            Cond::Not(c) => !self.cond(c, env),
            Cond::IsNull(t) => self.values(t, env).iter().any(|(v, _)| v.is_none()),
            Cond::Cmp { op, lhs, rhs } => {
                let (l, r) = (self.values(lhs, env), self.values(rhs, env));
                l.iter().any(|(a, a_nocase)| {
                    r.iter().any(|(b, b_nocase)| match (a, b) {
                        (Some(a), Some(b)) => compare(*op, a, b, *a_nocase || *b_nocase),
                        _ => false,
                    })
                })
            }
            Cond::In { lhs, items } => {
                let l = self.values(lhs, env);
                items.iter().any(|item| {
                    let r = self.values(item, env);
                    l.iter().any(|(a, nocase)| {
                        r.iter().any(|(b, _)| match (a, b) {
                            (Some(a), Some(b)) => compare(Op::Eq, a, b, *nocase),
                            _ => false,
                        })
                    })
                })
            }
        }
    }

    fn values(&self, term: &Term, env: &Env<'_>) -> Values {
        match term {
            Term::Value(v) => vec![(Some(v.clone()), false)],
            Term::Param(p, kind) => vec![(env.resolve(p, kind), false)],
            Term::Column(col) => self.column(col),
        }
    }

    fn column(&self, col: &ColumnRef) -> Values {
        let mut at: Vec<(String, String)> = vec![(self.resource.to_owned(), self.id.to_owned())];
        for hop in &col.hops {
            at = at
                .iter()
                .flat_map(|(_, id)| self.lookup.follow(hop, id))
                .map(|id| (hop.to.clone(), id))
                .collect();
        }
        at.iter()
            .map(|(resource, id)| {
                let v = self.lookup.value(resource, id, &col.column);
                (v.as_ref().and_then(|v| scalar(v, &col.kind)), col.nocase)
            })
            .collect()
    }
}

/// Compares two present scalars the way SQLite does for our stored forms.
pub(crate) fn compare(op: Op, a: &Scalar, b: &Scalar, nocase: bool) -> bool {
    if op == Op::Contains {
        return match (a, b) {
            (Scalar::Text(a), Scalar::Text(b)) => {
                a.to_ascii_lowercase().contains(&b.to_ascii_lowercase())
            }
            _ => false,
        };
    }
    let Some(ord) = order(a, b, nocase) else {
        return false;
    };
    match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Contains => false,
    }
}

fn order(a: &Scalar, b: &Scalar, nocase: bool) -> Option<Ordering> {
    Some(match (a, b) {
        (Scalar::Text(a), Scalar::Text(b)) if nocase => {
            a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase())
        }
        (Scalar::Text(a), Scalar::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
        (Scalar::Int(a), Scalar::Int(b)) => a.cmp(b),
        (Scalar::Num(a), Scalar::Num(b)) => a.partial_cmp(b)?,
        (Scalar::Int(i), Scalar::Num(f)) => int_float(*i, *f),
        (Scalar::Num(f), Scalar::Int(i)) => int_float(*i, *f).reverse(),
        (Scalar::Bool(a), Scalar::Bool(b)) => a.cmp(b),
        _ => return None,
    })
}

/// Exact comparison of an integer with a double (no rounding of large integers).
fn int_float(i: i64, f: f64) -> Ordering {
    if f >= 9_223_372_036_854_775_808.0 {
        return Ordering::Less;
    }
    if f < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    let whole = f.trunc() as i64;
    match i.cmp(&whole) {
        Ordering::Equal if f.fract() > 0.0 => Ordering::Less,
        Ordering::Equal if f.fract() < 0.0 => Ordering::Greater,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_doubles_compare_exactly() {
        assert_eq!(int_float(3, 3.5), Ordering::Less);
        assert_eq!(int_float(-3, -3.5), Ordering::Greater);
        assert_eq!(
            int_float(9_007_199_254_740_993, 9_007_199_254_740_992.0),
            Ordering::Greater
        );
        assert_eq!(int_float(i64::MAX, 9.3e18), Ordering::Less);
    }

    #[test]
    fn contains_is_ascii_case_insensitive_and_literal() {
        let t = |s: &str| Scalar::Text(s.to_owned());
        assert!(compare(Op::Contains, &t("Hello World"), &t("o w"), false));
        assert!(!compare(Op::Contains, &t("100 percent"), &t("%"), false));
        assert!(compare(Op::Contains, &t("100%"), &t("0%"), false));
        assert!(
            !compare(Op::Contains, &t("ÄB"), &t("äb"), false),
            "only ASCII folds"
        );
    }
}
