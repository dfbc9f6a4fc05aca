//! The one write routine of records, shared by SQLite and PostgreSQL: visibility, the
//! guard, `If-Match`, the changes, relations and their links, the rule re-check, the
//! version, and the event, in that order, inside the caller's transaction. Each database
//! supplies only the statements ([`WriteTx`]), so the two cannot drift apart in what a
//! write checks or in which order.

use std::collections::BTreeMap;
use std::future::Future;

use ferrobase_schema::{OnDelete, Resource, Schema};
use sea_query::Expr;
use serde_json::Value;

use crate::common::apply_changes;
use crate::events::{Draft, EventOp};
use crate::{
    Access, BatchOp, BatchOutcome, Deletion, NewRecord, Record, ResourceId, StoreError, Targets,
    Update,
};

/// The statements one database runs for a write, inside one transaction.
///
/// SQLite implements it with ready futures on its writer thread; PostgreSQL with real
/// round trips on a transaction. The futures carry no `Send` bound: PostgreSQL's are
/// `Send` where the concrete type is known, SQLite's never leave their thread.
pub(crate) trait WriteTx {
    /// The schema the records follow.
    fn schema(&self) -> &Schema;

    /// The record as it stands, held for the rest of the transaction (a row lock on
    /// PostgreSQL; SQLite's one writer holds the whole database).
    fn current(
        &self,
        res: ResourceId,
        id: &str,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>>;

    /// Whether record `id` satisfies `cond` (a rule compiled to SQL).
    fn satisfies(
        &self,
        res: ResourceId,
        id: &str,
        cond: &Expr,
    ) -> impl Future<Output = Result<bool, StoreError>>;

    /// Whether a record of `res` has `id` and, when given, satisfies `cond`.
    fn exists(
        &self,
        res: ResourceId,
        id: &str,
        cond: Option<&Expr>,
    ) -> impl Future<Output = Result<bool, StoreError>>;

    /// Inserts the row of a new record (version 1; many relations are links, not columns).
    fn insert_row(
        &self,
        res: ResourceId,
        id: &str,
        now: &str,
        values: &[Value],
    ) -> impl Future<Output = Result<(), StoreError>>;

    /// Writes the `changed` columns of a record, bumps its version and `updated_at`.
    fn update_row(
        &self,
        res: ResourceId,
        id: &str,
        now: &str,
        values: &[Value],
        changed: &[usize],
    ) -> impl Future<Output = Result<(), StoreError>>;

    /// Ids of the records of `res` whose single relation `field` points at `target`,
    /// held for the rest of the transaction like [`WriteTx::current`].
    fn referencing(
        &self,
        res: ResourceId,
        field: usize,
        target: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>>;

    /// Deletes a record's row; a restricting reference is [`StoreError::Referenced`].
    fn delete_row(&self, res: ResourceId, id: &str)
    -> impl Future<Output = Result<(), StoreError>>;

    /// Writes the links of many-relation `field` (replacing the old ones when `replace`).
    fn write_links(
        &self,
        res: ResourceId,
        field: usize,
        source: &str,
        targets: &Value,
        replace: bool,
    ) -> impl Future<Output = Result<(), StoreError>>;

    /// Appends the write's event; returns its `seq`.
    fn append_event(&self, draft: &Draft) -> impl Future<Output = Result<i64, StoreError>>;

    /// Ends every session and refresh token of a user (their role changed).
    fn revoke_sessions(
        &self,
        user_id: &str,
        now: &str,
    ) -> impl Future<Output = Result<(), StoreError>>;
}

fn resource(schema: &Schema, res: ResourceId) -> Result<&Resource, StoreError> {
    schema
        .resources
        .get(res.0)
        .ok_or_else(|| StoreError::Internal(format!("unknown resource {}", res.0)))
}

/// The record a create stores (version 1, empty many relations as `[]`), its event
/// (whose `at` is the write's time), and which records its relations may point at.
pub(crate) fn new_record(resource: &Resource, record: NewRecord) -> (Record, Draft, Targets) {
    let NewRecord {
        id,
        now,
        mut values,
        targets,
        actor,
    } = record;
    let stamp = resource.timestamps.then(|| now.clone());
    for (i, field) in resource.fields.iter().enumerate() {
        if field.is_many() && values[i].is_null() {
            values[i] = Value::Array(Vec::new());
        }
    }
    let stored = Record {
        id,
        version: 1,
        created_at: stamp.clone(),
        updated_at: stamp,
        values,
    };
    let draft = Draft::new(
        resource,
        EventOp::Create,
        &stored,
        None,
        actor.as_deref(),
        &now,
    );
    (stored, draft, targets)
}

/// Inserts a record; the create rule (`allowed`) judges it as stored, and a refusal
/// rolls the transaction back.
pub(crate) async fn insert<T: WriteTx>(
    tx: &T,
    res: ResourceId,
    record: NewRecord,
    allowed: Option<&Expr>,
) -> Result<Record, StoreError> {
    let resource = resource(tx.schema(), res)?;
    let (stored, draft, targets) = new_record(resource, record);
    check_relations(tx, resource, &targets, stored.values.iter().enumerate()).await?;
    // The row and its event go out together: PostgreSQL receives them in this order in
    // one round trip (the statements of one connection are pipelined), where awaiting
    // each would cost a round trip apiece. When the row is refused (a unique value, say),
    // the event fails after it and the row's error is the one reported; the caller rolls
    // the transaction back on any error.
    let has_links = resource.fields.iter().any(ferrobase_schema::Field::is_many);
    let (inserted, appended) = futures_util::future::join(
        tx.insert_row(res, &stored.id, &draft.at, &stored.values),
        async {
            // Links and the rule re-check must follow the row: then the event waits.
            if has_links || allowed.is_some() {
                Ok(None)
            } else {
                tx.append_event(&draft).await.map(Some)
            }
        },
    )
    .await;
    inserted?;
    let appended = appended?;
    for (i, field) in resource.fields.iter().enumerate() {
        if field.is_many() {
            tx.write_links(res, i, &stored.id, &stored.values[i], false)
                .await?;
        }
    }
    if let Some(cond) = allowed
        && !tx.satisfies(res, &stored.id, cond).await?
    {
        return Err(StoreError::Forbidden);
    }
    if appended.is_none() {
        tx.append_event(&draft).await?;
    }
    Ok(stored)
}

/// Applies an update; `Ok(None)` when no record the caller may see has that id.
pub(crate) async fn update<T: WriteTx>(
    tx: &T,
    res: ResourceId,
    id: &str,
    update: Update,
    access: &Access,
) -> Result<Option<Record>, StoreError> {
    let resource = resource(tx.schema(), res)?;
    let Some(mut record) = tx.current(res, id).await? else {
        return Ok(None);
    };
    if !permits(tx, res, id, access).await? {
        return Ok(None);
    }
    // Authorisation before preconditions: a request refused anyway says so, not 412.
    if let Some(guard) = &update.guard {
        guard(&record)?;
    }
    if update
        .if_match
        .as_ref()
        .is_some_and(|versions| !versions.contains(&record.version))
    {
        return Err(StoreError::VersionMismatch);
    }
    if update.changes.is_empty() {
        return Ok(Some(record));
    }
    let previous = record.clone();
    let changed = apply_changes(resource, &mut record, update.changes);
    check_relations(
        tx,
        resource,
        &update.targets,
        changed.iter().map(|&i| (i, &record.values[i])),
    )
    .await?;
    tx.update_row(res, id, &update.now, &record.values, &changed)
        .await?;
    for &i in changed.iter().filter(|&&i| resource.fields[i].is_many()) {
        tx.write_links(res, i, id, &record.values[i], true).await?;
    }
    // A new role must not wait for old sessions: they end in the same transaction, so
    // the role never changes while sessions carrying the old one live on (the next
    // refresh, or request by cookie, reads the user again).
    if resource.is_users()
        && changed
            .iter()
            .any(|&i| resource.fields[i].builtin && resource.fields[i].name == "role")
    {
        tx.revoke_sessions(id, &update.now).await?;
    }
    // The record must still satisfy the update rule once changed: nobody may update a
    // record into a state they could not have updated (handing a post to someone else,
    // say). A refusal rolls the transaction back.
    if let Some(allowed) = &access.allowed
        && !tx.satisfies(res, id, allowed).await?
    {
        return Err(StoreError::Forbidden);
    }
    updated(
        tx,
        resource,
        &mut record,
        &previous,
        update.actor.as_deref(),
        &update.now,
    )
    .await?;
    Ok(Some(record))
}

/// Gives a record whose row was just updated its new version (and `updated_at`), and
/// appends its update event.
async fn updated<T: WriteTx>(
    tx: &T,
    resource: &Resource,
    record: &mut Record,
    previous: &Record,
    actor: Option<&str>,
    now: &str,
) -> Result<(), StoreError> {
    record.version += 1;
    if resource.timestamps {
        record.updated_at = Some(now.to_owned());
    }
    let draft = Draft::new(
        resource,
        EventOp::Update,
        record,
        Some(previous),
        actor,
        now,
    );
    tx.append_event(&draft).await?;
    Ok(())
}

/// Deletes the row of `previous` and appends its delete event.
async fn deleted<T: WriteTx>(
    tx: &T,
    res: ResourceId,
    previous: &Record,
    actor: Option<&str>,
    now: &str,
) -> Result<(), StoreError> {
    tx.delete_row(res, &previous.id).await?;
    let resource = resource(tx.schema(), res)?;
    let draft = Draft::new(
        resource,
        EventOp::Delete,
        previous,
        Some(previous),
        actor,
        now,
    );
    tx.append_event(&draft).await?;
    Ok(())
}

/// Deletes a record; `Ok(false)` when no record the caller may see has that id.
pub(crate) async fn delete<T: WriteTx>(
    tx: &T,
    res: ResourceId,
    id: &str,
    deletion: &Deletion,
) -> Result<bool, StoreError> {
    let Some(previous) = tx.current(res, id).await? else {
        return Ok(false);
    };
    if !permits(tx, res, id, &deletion.access).await? {
        return Ok(false);
    }
    if deletion
        .if_match
        .as_ref()
        .is_some_and(|versions| !versions.contains(&previous.version))
    {
        return Err(StoreError::VersionMismatch);
    }
    cascade(tx, res, id, deletion).await?;
    deleted(tx, res, &previous, deletion.actor.as_deref(), &deletion.now).await?;
    Ok(true)
}

/// How many levels of `on_delete = "cascade"` one delete follows, on both stores (SQLite's
/// own limit for cascades through foreign keys was 1000 levels).
const MAX_CASCADE_DEPTH: usize = 1000;

/// What deleting record `id` of `res` does to the records that point at it, done here
/// instead of by the database's foreign keys so that each of them gets its event:
/// `on_delete = "set_null"` updates them (new version, an update event), `"cascade"`
/// deletes them (a delete event each, deepest first), through as many levels as the
/// relations go. `"restrict"` is left to the database, which refuses the delete. The
/// foreign keys still cascade as a backstop; after this there is nothing left for them.
async fn cascade<T: WriteTx>(
    tx: &T,
    res: ResourceId,
    id: &str,
    deletion: &Deletion,
) -> Result<(), StoreError> {
    let schema = tx.schema();
    // Which (resource, field) pairs point at each resource, with their action.
    let pointing = |target: &str| -> Vec<(ResourceId, usize, OnDelete)> {
        schema
            .resources
            .iter()
            .enumerate()
            .flat_map(|(r, resource)| {
                resource
                    .fields
                    .iter()
                    .enumerate()
                    .filter_map(move |(f, field)| {
                        let rel = field.relation()?;
                        (!rel.many && rel.resource == target && rel.on_delete != OnDelete::Restrict)
                            .then_some((ResourceId(r), f, rel.on_delete))
                    })
            })
            .collect()
    };
    let mut doomed: Vec<(ResourceId, String)> = Vec::new();
    let mut seen = std::collections::HashSet::from([(res.0, id.to_owned())]);
    let mut nulled: BTreeMap<(usize, String), Vec<usize>> = BTreeMap::new();
    let mut frontier = vec![(res, id.to_owned(), 0)];
    while let Some((parent, parent_id, depth)) = frontier.pop() {
        for (child_res, field, action) in pointing(&resource(schema, parent)?.name) {
            for child in tx.referencing(child_res, field, &parent_id).await? {
                if action == OnDelete::SetNull {
                    nulled.entry((child_res.0, child)).or_default().push(field);
                } else if seen.insert((child_res.0, child.clone())) {
                    if depth + 1 > MAX_CASCADE_DEPTH {
                        return Err(StoreError::CascadeTooDeep);
                    }
                    doomed.push((child_res, child.clone()));
                    frontier.push((child_res, child, depth + 1));
                }
            }
        }
    }
    for ((r, child), fields) in nulled {
        if seen.contains(&(r, child.clone())) {
            continue;
        }
        let child_res = ResourceId(r);
        let Some(previous) = tx.current(child_res, &child).await? else {
            continue;
        };
        let mut record = previous.clone();
        for &f in &fields {
            record.values[f] = Value::Null;
        }
        tx.update_row(child_res, &child, &deletion.now, &record.values, &fields)
            .await?;
        updated(
            tx,
            resource(schema, child_res)?,
            &mut record,
            &previous,
            deletion.actor.as_deref(),
            &deletion.now,
        )
        .await?;
    }
    for (child_res, child) in doomed.iter().rev() {
        if let Some(previous) = tx.current(*child_res, child).await? {
            deleted(
                tx,
                *child_res,
                &previous,
                deletion.actor.as_deref(),
                &deletion.now,
            )
            .await?;
        }
    }
    Ok(())
}

/// One write of a batch, inside the batch's transaction.
pub(crate) async fn batch_op<T: WriteTx>(tx: &T, op: BatchOp) -> Result<BatchOutcome, StoreError> {
    match op {
        BatchOp::Insert {
            res,
            record,
            allowed,
        } => insert(tx, res, record, allowed.as_ref())
            .await
            .map(BatchOutcome::Inserted),
        BatchOp::Update {
            res,
            id,
            update: changes,
            access,
        } => update(tx, res, &id, changes, &access)
            .await?
            .map(BatchOutcome::Updated)
            .ok_or(StoreError::NotFound),
        BatchOp::Delete { res, id, deletion } => match delete(tx, res, &id, &deletion).await? {
            true => Ok(BatchOutcome::Deleted),
            false => Err(StoreError::NotFound),
        },
    }
}

/// Checks an existing record against the access of a write: `Ok(false)` when it is not
/// visible (404), `Forbidden` when visible but not allowed (403).
async fn permits<T: WriteTx>(
    tx: &T,
    res: ResourceId,
    id: &str,
    access: &Access,
) -> Result<bool, StoreError> {
    if let Some(visible) = &access.visible
        && !tx.satisfies(res, id, visible).await?
    {
        return Ok(false);
    }
    if let Some(allowed) = &access.allowed
        && !tx.satisfies(res, id, allowed).await?
    {
        return Err(StoreError::Forbidden);
    }
    Ok(true)
}

/// One relation value to check: field `field` points at record `id` of `target`, which
/// must exist and, when given, meet `cond` (the target's view rule for the writer).
pub(crate) struct RelationCheck<'a> {
    pub field: &'a ferrobase_schema::Field,
    pub target: ResourceId,
    pub target_name: &'a str,
    pub id: &'a str,
    pub cond: Option<&'a Expr>,
}

/// The relation values of `values` to check, in field order.
pub(crate) fn relation_checks<'a>(
    schema: &'a Schema,
    resource: &'a Resource,
    targets: &'a Targets,
    values: impl Iterator<Item = (usize, &'a Value)>,
) -> Result<Vec<RelationCheck<'a>>, StoreError> {
    let mut checks = Vec::new();
    for (i, value) in values {
        let field = &resource.fields[i];
        let Some(rel) = field.relation() else {
            continue;
        };
        let ids: Vec<&str> = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => continue,
        };
        let target = schema
            .resources
            .iter()
            .position(|r| r.name == rel.resource)
            .map(ResourceId)
            .ok_or_else(|| StoreError::Internal(format!("no resource {}", rel.resource)))?;
        for id in ids {
            let cond = targets
                .condition(i)
                .filter(|_| !targets.is_own(&rel.resource, id));
            checks.push(RelationCheck {
                field,
                target,
                target_name: &rel.resource,
                id,
                cond,
            });
        }
    }
    Ok(checks)
}

/// The answers to `checks` (whether each target is there for the writer) as the write's
/// outcome: every missing target named under its field.
pub(crate) fn relations_found(
    checks: &[RelationCheck<'_>],
    found: impl IntoIterator<Item = bool>,
) -> Result<(), StoreError> {
    let mut problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (check, found) in checks.iter().zip(found) {
        if !found {
            problems
                .entry(check.field.name.clone())
                .or_default()
                .push(format!(
                    "no {} record has id {}",
                    check.target_name, check.id
                ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StoreError::BrokenRelation { fields: problems })
    }
}

/// Refuses relation values that point at no record the writer may see, naming each
/// field.
async fn check_relations<'v, T: WriteTx>(
    tx: &'v T,
    resource: &'v Resource,
    targets: &'v Targets,
    values: impl Iterator<Item = (usize, &'v Value)>,
) -> Result<(), StoreError> {
    let checks = relation_checks(tx.schema(), resource, targets, values)?;
    // Every check goes out at once (before whatever the caller pipelines after them),
    // then the answers are read in order.
    let answers =
        futures_util::future::join_all(checks.iter().map(|c| tx.exists(c.target, c.id, c.cond)))
            .await;
    let found = answers.into_iter().collect::<Result<Vec<bool>, _>>()?;
    relations_found(&checks, found)
}

/// Runs a future that can never wait (SQLite's writes run synchronously on the writer
/// thread) to its end, without an executor.
pub(crate) fn run_ready<T>(
    future: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => Err(StoreError::Internal(
            "a SQLite write waited, which it never does".into(),
        )),
    }
}
