//! Access rules, compiled once at start-up and applied per request: into the SQL of
//! lists and reads (row-level security, never filtering afterwards), as guards inside
//! the write transaction, and per field for `read`/`write` rules.

use ferrobase_query::check::{Cond, Mode, check};
use ferrobase_query::env::Env;
use ferrobase_query::eval::{Lookup, eval};
use ferrobase_query::sql::{Compiled, Dialect, compile};
use ferrobase_schema::{Resource, Rule, Schema};
use ferrobase_store::Record;
use serde_json::{Map, Value};

use crate::caller::{Caller, Identity};

/// Why the rules refuse a caller outright. Transports answer `Unauthorized` with 401 and
/// `Forbidden` with 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// There is no caller and the rule needs one (401 `UNAUTHORIZED`).
    Unauthorized,
    /// The caller may not do this (403 `FORBIDDEN`); the message says why, when it may
    /// be told (a field, an API key's scopes).
    Forbidden(Option<String>),
}

/// An operation on records, as rules name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `GET /{resource}`
    List,
    /// `GET /{resource}/{id}`
    View,
    /// `POST /{resource}`
    Create,
    /// `PATCH /{resource}/{id}`
    Update,
    /// `DELETE /{resource}/{id}`
    Delete,
}

impl Action {
    fn writes(self) -> bool {
        matches!(self, Action::Create | Action::Update | Action::Delete)
    }
}

/// The compiled rules of one resource.
#[derive(Debug)]
pub struct Policy {
    list: Option<Cond>,
    view: Option<Cond>,
    create: Option<Cond>,
    update: Option<Cond>,
    delete: Option<Cond>,
    /// Per field: the `read` rule, if any.
    read: Vec<Option<Cond>>,
    /// Per field: the `write` rule, if any.
    write: Vec<Option<Cond>>,
    /// The SQL dialect of the store the rules run on.
    pub dialect: Dialect,
}

/// A rule that failed to compile (cannot happen after `check` passed) denies everyone.
fn rule(schema: &Schema, resource: &Resource, rule: Option<&Rule>, body: bool) -> Option<Cond> {
    let rule = rule?;
    let denied = || Cond::Cmp {
        op: ferrobase_query::check::Op::Eq,
        lhs: ferrobase_query::check::Term::Value(ferrobase_query::check::Scalar::Bool(true)),
        rhs: ferrobase_query::check::Term::Value(ferrobase_query::check::Scalar::Bool(false)),
    };
    let cond = ferrobase_query::parse(&rule.source)
        .ok()
        .and_then(|expr| check(&expr, schema, resource, Mode::Rule { body }).ok());
    Some(cond.unwrap_or_else(denied))
}

impl Policy {
    /// Compiles every rule of every resource, in schema order.
    pub fn compile_all(schema: &Schema, dialect: Dialect) -> Vec<Policy> {
        schema
            .resources
            .iter()
            .map(|r| Policy {
                list: rule(schema, r, r.rules.list.as_ref(), false),
                view: rule(schema, r, r.rules.view.as_ref(), false),
                create: rule(schema, r, r.rules.create.as_ref(), true),
                update: rule(schema, r, r.rules.update.as_ref(), true),
                delete: rule(schema, r, r.rules.delete.as_ref(), false),
                read: r
                    .fields
                    .iter()
                    .map(|f| rule(schema, r, f.read.as_ref(), false))
                    .collect(),
                dialect,
                write: r
                    .fields
                    .iter()
                    .map(|f| rule(schema, r, f.write.as_ref(), true))
                    .collect(),
            })
            .collect()
    }

    fn cond(&self, op: Action) -> Option<&Cond> {
        match op {
            Action::List => self.list.as_ref(),
            Action::View => self.view.as_ref(),
            Action::Create => self.create.as_ref(),
            Action::Update => self.update.as_ref(),
            Action::Delete => self.delete.as_ref(),
        }
    }

    /// Whether any rule of this resource needs more of the caller than id and role.
    pub fn needs_user_record(&self) -> bool {
        [
            &self.list,
            &self.view,
            &self.create,
            &self.update,
            &self.delete,
        ]
        .into_iter()
        .chain(self.read.iter())
        .chain(self.write.iter())
        .flatten()
        .any(Cond::needs_user_record)
    }
}

/// What the rules say about one operation for one caller.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Every record qualifies.
    All,
    /// Records satisfying this SQL qualify.
    Where(sea_query::Expr),
    /// No record qualifies for this caller.
    None,
}

impl Decision {
    /// The condition to add to a query (`None` when unrestricted).
    pub fn into_condition(self) -> Option<sea_query::Expr> {
        match self {
            Decision::All => None,
            Decision::Where(e) => Some(e),
            Decision::None => Some(sea_query::Expr::cust("FALSE")),
        }
    }
}

/// The caller as rules see it (`@auth`).
pub fn auth_map(caller: &Caller) -> Map<String, Value> {
    let mut map = caller.user.clone().unwrap_or_default();
    map.insert("id".into(), Value::String(caller.id.clone()));
    map.insert("role".into(), Value::String(caller.role.clone()));
    map
}

/// The refusal for a caller the rules refuse outright: 401 when there is no caller and
/// the rule looks at one, else 403.
pub fn refusal(identity: &Identity, uses_auth: bool) -> Refusal {
    match identity.caller() {
        None if uses_auth => Refusal::Unauthorized,
        None | Some(_) => Refusal::Forbidden(None),
    }
}

/// Applies a resource's rule for `op`: the scope of the caller's API key, then the rule
/// (absent: admins only), compiled with the caller, the body and the time.
pub fn decide(
    policy: &Policy,
    resource: &Resource,
    op: Action,
    identity: &Identity,
    body: Option<&Map<String, Value>>,
    env_now: time::OffsetDateTime,
) -> Result<Decision, Refusal> {
    decide_as(
        policy,
        resource,
        op,
        identity,
        body,
        env_now,
        &resource.name,
    )
}

/// [`decide`] for rows that the query calls `table` (an alias in a subquery).
pub fn decide_as(
    policy: &Policy,
    resource: &Resource,
    op: Action,
    identity: &Identity,
    body: Option<&Map<String, Value>>,
    env_now: time::OffsetDateTime,
    table: &str,
) -> Result<Decision, Refusal> {
    if let Some(caller) = identity.caller()
        && !caller.scope_allows(&resource.name, op.writes())
    {
        return Err(Refusal::Forbidden(Some(format!(
            "this API key's scopes do not include {}:{}",
            resource.name,
            if op.writes() { "write" } else { "read" }
        ))));
    }
    let Some(cond) = policy.cond(op) else {
        // No rule: admins only.
        return match identity.caller() {
            Some(c) if c.role == "admin" => Ok(Decision::All),
            Some(_) => Err(Refusal::Forbidden(None)),
            None => Err(Refusal::Unauthorized),
        };
    };
    let auth = identity.caller().map(auth_map);
    let env = Env {
        auth: auth.as_ref(),
        body,
        now: env_now,
    };
    Ok(match compile(cond, &env, policy.dialect, table) {
        Compiled::Always(true) => Decision::All,
        Compiled::Always(false) if identity.caller().is_none() && cond.uses_auth() => {
            return Err(Refusal::Unauthorized);
        }
        Compiled::Always(false) => Decision::None,
        Compiled::Sql(e) => Decision::Where(e),
    })
}

/// Whether the rule of `op` looks at the caller (for choosing 401 over 403).
pub fn uses_auth(policy: &Policy, op: Action) -> bool {
    policy.cond(op).is_some_and(Cond::uses_auth)
}

/// One record's own values, for judging field rules in memory.
struct OwnFields<'a> {
    resource: &'a Resource,
    values: &'a [Value],
    id: &'a str,
}

impl Lookup for OwnFields<'_> {
    fn value(&self, _resource: &str, _id: &str, column: &str) -> Option<Value> {
        if column == "id" {
            return Some(Value::String(self.id.to_owned()));
        }
        let i = self.resource.fields.iter().position(|f| f.name == column)?;
        self.values.get(i).cloned()
    }

    fn follow(&self, _hop: &ferrobase_query::check::Hop, _id: &str) -> Vec<String> {
        // Field rules cannot follow relations (`ferrobase check` refuses them).
        Vec::new()
    }
}

/// Per field, whether the caller may read it in `record` (hidden fields never).
pub fn readable(
    policy: &Policy,
    resource: &Resource,
    record: &Record,
    identity: &Identity,
    now: time::OffsetDateTime,
) -> Vec<bool> {
    // Built only for read rules to judge: lists call this once per record.
    let auth = if policy.read.iter().any(Option::is_some) {
        identity.caller().map(auth_map)
    } else {
        None
    };
    let env = Env {
        auth: auth.as_ref(),
        body: None,
        now,
    };
    let own = OwnFields {
        resource,
        values: &record.values,
        id: &record.id,
    };
    resource
        .fields
        .iter()
        .zip(&policy.read)
        .map(|(field, rule)| {
            !field.hidden
                && rule
                    .as_ref()
                    .is_none_or(|c| eval(c, &env, &own, &resource.name, &record.id))
        })
        .collect()
}

#[expect(
    clippy::too_many_arguments,
    reason = "the record, the caller and the body are all part of the judgement"
)]
/// Refuses a write that touches a field whose `write` rule denies the caller. `values`
/// are the record's values as they stand (before an update, or the new record).
pub fn check_field_writes(
    policy: &Policy,
    resource: &Resource,
    fields: impl Iterator<Item = usize>,
    values: &[Value],
    id: &str,
    identity: &Identity,
    body: &Map<String, Value>,
    now: time::OffsetDateTime,
) -> Result<(), Refusal> {
    let auth = identity.caller().map(auth_map);
    let env = Env {
        auth: auth.as_ref(),
        body: Some(body),
        now,
    };
    let own = OwnFields {
        resource,
        values,
        id,
    };
    for i in fields {
        if let Some(rule) = &policy.write[i]
            && !eval(rule, &env, &own, &resource.name, id)
        {
            if identity.caller().is_none() && rule.uses_auth() {
                return Err(Refusal::Unauthorized);
            }
            return Err(Refusal::Forbidden(Some(format!(
                "you may not write the field '{}'",
                resource.fields[i].name
            ))));
        }
    }
    Ok(())
}

/// A record held in memory as JSON (an event's record), for rules to judge: its own
/// fields only; conditions that follow relations are judged in SQL instead.
pub struct JsonRecord<'a>(pub &'a Map<String, Value>);

impl Lookup for JsonRecord<'_> {
    fn value(&self, _resource: &str, _id: &str, column: &str) -> Option<Value> {
        self.0.get(column).cloned()
    }

    fn follow(&self, _hop: &ferrobase_query::check::Hop, _id: &str) -> Vec<String> {
        Vec::new()
    }
}

/// Whether `cond` reads a hidden field of the record itself.
fn reads_hidden(resource: &Resource, cond: &Cond) -> bool {
    cond.reads_own_column(|column| resource.fields.iter().any(|f| f.hidden && f.name == column))
}

/// Per field, whether the caller may read it in an event's `record`, which lacks the
/// hidden fields: a field whose read rule looks at a hidden field is not shown (it would
/// be judged on a missing value; REST, which has it, decides such fields).
pub fn readable_in_event(
    policy: &Policy,
    resource: &Resource,
    record: &Record,
    identity: &Identity,
    now: time::OffsetDateTime,
) -> Vec<bool> {
    let mut mask = readable(policy, resource, record, identity, now);
    for (readable, rule) in mask.iter_mut().zip(&policy.read) {
        if rule.as_ref().is_some_and(|c| reads_hidden(resource, c)) {
            *readable = false;
        }
    }
    mask
}

/// What a rule says about one record held in memory.
#[derive(Debug, Clone)]
pub enum Judged {
    /// The caller may see the record.
    Admit,
    /// The caller may not.
    Deny,
    /// The rule follows relations: the database decides with this condition, compiled
    /// for the resource's table (see `RecordStore::judge`).
    Sql(sea_query::Expr),
}

/// The view rule for `record` (an event's record; for a delete, the record as it was),
/// judged in memory when the rule looks only at the record itself and the caller, with
/// exactly the meaning of its SQL. `auth` is [`auth_map`] of the caller, built once per
/// subscriber rather than per event.
pub fn judge_view(
    policy: &Policy,
    resource: &Resource,
    identity: &Identity,
    auth: Option<&Map<String, Value>>,
    record: &Map<String, Value>,
    now: time::OffsetDateTime,
) -> Judged {
    if let Some(caller) = identity.caller()
        && !caller.scope_allows(&resource.name, false)
    {
        return Judged::Deny;
    }
    let Some(cond) = policy.view.as_ref() else {
        return match identity.caller() {
            Some(c) if c.role == "admin" => Judged::Admit,
            _ => Judged::Deny,
        };
    };
    let env = Env {
        auth,
        body: None,
        now,
    };
    // Events do not carry hidden fields: a rule that reads one is judged by the
    // database, which has them.
    if cond.follows_relations() || reads_hidden(resource, cond) {
        return match compile(cond, &env, policy.dialect, &resource.name) {
            Compiled::Always(true) => Judged::Admit,
            Compiled::Always(false) => Judged::Deny,
            Compiled::Sql(e) => Judged::Sql(e),
        };
    }
    let id = record.get("id").and_then(Value::as_str).unwrap_or_default();
    if eval(cond, &env, &JsonRecord(record), &resource.name, id) {
        Judged::Admit
    } else {
        Judged::Deny
    }
}
