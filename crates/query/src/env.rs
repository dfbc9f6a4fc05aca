//! The request values an expression may use: the caller, the body, the time.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::check::{Kind, Param, Scalar};

/// Values known when a request arrives.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// The authenticated user's record (with `id` and `role`), if any.
    pub auth: Option<&'a Map<String, Value>>,
    /// The incoming body of a create or update.
    pub body: Option<&'a Map<String, Value>>,
    /// The current time.
    pub now: OffsetDateTime,
}

impl<'a> Env<'a> {
    /// An anonymous request with no body at `now`.
    pub fn anonymous(now: OffsetDateTime) -> Self {
        Self {
            auth: None,
            body: None,
            now,
        }
    }

    /// The value of a request parameter in the canonical form of `kind`; `None` when
    /// absent (anonymous caller, field not in the body, null).
    pub fn resolve(&self, param: &Param, kind: &Kind) -> Option<Scalar> {
        match param {
            Param::Auth(field) => scalar(self.auth?.get(field)?, kind),
            Param::Body(field) => scalar(self.body?.get(field)?, kind),
            Param::Now { offset, date } => {
                let at = self.now.checked_add(time::Duration::seconds(*offset))?;
                // Beyond what a store holds: no stored value can be compared with it.
                if !ferrobase_schema::validate::in_range(at) {
                    return None;
                }
                let text = ferrobase_schema::validate::format_datetime(at);
                Some(Scalar::Text(if *date {
                    text[..10].to_owned()
                } else {
                    text
                }))
            }
        }
    }
}

/// A stored (canonical) JSON value as a scalar of `kind`; `None` for null and for values
/// that do not fit the kind.
pub fn scalar(value: &Value, kind: &Kind) -> Option<Scalar> {
    match (kind, value) {
        (_, Value::Null) => None,
        (Kind::Bool, Value::Bool(b)) => Some(Scalar::Bool(*b)),
        (Kind::Integer | Kind::Number, Value::Number(n)) => n
            .as_i64()
            .map(Scalar::Int)
            .or_else(|| n.as_f64().map(Scalar::Num)),
        (Kind::Text | Kind::Enum(_) | Kind::Id | Kind::Datetime | Kind::Date, Value::String(s)) => {
            Some(Scalar::Text(s.clone()))
        }
        // Only presence matters for json (the checker allows nothing but null tests).
        (Kind::Json, v) => Some(Scalar::Text(v.to_string())),
        _ => None,
    }
}
