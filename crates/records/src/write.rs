//! Creating, updating and deleting records, alone or in a batch: each write is judged by
//! its resource's rules (and each field's write rule), validated, and handed to the
//! store's one write routine; committed writes run the effects.

use std::sync::Arc;

use ferrobase_access::{
    Action, Decision, Identity, Refusal, check_field_writes, decide, refusal, uses_auth,
};
use ferrobase_schema::input::{Change, WriteContext, for_create, for_patch};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::{
    Access, BatchOp, BatchOutcome, Deletion, EventOp, NewRecord, Record, ResourceId, StoreError,
    Targets, Update,
};
use serde_json::{Map, Value};

use crate::{RecordError, Records, Written};

/// One write of a batch, as a transport parsed it.
#[derive(Debug, Clone)]
pub struct BatchWrite {
    /// `Create`, `Update` or `Delete`.
    pub action: Action,
    /// The resource.
    pub res: ResourceId,
    /// The record (update and delete).
    pub id: Option<String>,
    /// The body (create and update).
    pub body: Option<Map<String, Value>>,
    /// Versions an update or delete requires (`If-Match`).
    pub if_match: Option<Vec<i64>>,
}

/// Why a batch wrote nothing: the failing write (when one did) and its error.
#[derive(Debug)]
pub struct BatchFailure {
    /// Position of the write that failed; `None` when the batch as a whole failed.
    pub index: Option<usize>,
    /// What went wrong.
    pub error: RecordError,
}

/// Indexes of the fields a body names (the fields a write touches).
pub(crate) fn fields_in(
    resource: &ferrobase_schema::Resource,
    body: &Map<String, Value>,
) -> Vec<usize> {
    resource
        .fields
        .iter()
        .enumerate()
        .filter(|(_, f)| body.contains_key(&f.name))
        .map(|(i, _)| i)
        .collect()
}

/// The record's values as a body map (`@body` of create rules).
fn values_map(resource: &ferrobase_schema::Resource, values: &[Value]) -> Map<String, Value> {
    resource
        .fields
        .iter()
        .zip(values)
        .map(|(f, v)| (f.name.clone(), v.clone()))
        .collect()
}

impl Records {
    /// Which records the relation fields `fields` may point at for this caller: records
    /// of the target resource that its view rule lets the caller see, so a relation
    /// neither probes for ids nor pins a record the caller cannot see.
    fn relation_targets(
        &self,
        res: ResourceId,
        identity: &Identity,
        fields: impl Iterator<Item = usize>,
        now: time::OffsetDateTime,
    ) -> Targets {
        let resource = self.resource_at(res);
        let mut targets = Targets {
            scoped: Vec::new(),
            own_user: identity.caller().map(|c| c.id.clone()),
        };
        for i in fields {
            let Some(rel) = resource.fields[i].relation() else {
                continue;
            };
            let condition = match self.resource(&rel.resource) {
                Ok((id, target)) => {
                    match decide(self.policy(id), target, Action::View, identity, None, now) {
                        Ok(Decision::All) => continue,
                        Ok(Decision::Where(e)) => e,
                        Ok(Decision::None) | Err(_) => sea_query::Expr::cust("FALSE"),
                    }
                }
                Err(_) => sea_query::Expr::cust("FALSE"),
            };
            targets.scoped.push((i, condition));
        }
        targets
    }

    /// A write's failure as the caller sees it: a rule's refusal found inside the
    /// transaction is 401 or 403 depending on whether the rule needed a caller; a record
    /// that is not there (for the caller) is not found.
    fn write_failure(
        &self,
        res: ResourceId,
        identity: &Identity,
        action: Action,
        error: StoreError,
    ) -> RecordError {
        match error {
            StoreError::Forbidden => {
                RecordError::Refused(refusal(identity, uses_auth(self.policy(res), action)))
            }
            StoreError::NotFound => self.not_found(res),
            StoreError::Rejected(why) => match why.downcast_ref::<Refusal>() {
                Some(refusal) => RecordError::Refused(refusal.clone()),
                None => RecordError::Store(StoreError::Rejected(why)),
            },
            other => RecordError::Store(other),
        }
    }

    /// Validates a body into a new record: defaults, field write rules, and the create
    /// rule compiled with the body.
    fn plan_create(
        &self,
        res: ResourceId,
        identity: &Identity,
        body: Map<String, Value>,
    ) -> Result<(NewRecord, Option<sea_query::Expr>), RecordError> {
        let resource = self.resource_at(res);
        let policy = self.policy(res);
        let clock = self.clock().now();
        let now = format_datetime(clock);
        let ctx = WriteContext {
            auth_id: identity.caller().map(|c| c.id.as_str()),
            now: &now,
        };
        let written = fields_in(resource, &body);
        let values = for_create(resource, body, &ctx).map_err(RecordError::Invalid)?;
        let record_body = values_map(resource, &values);
        let id = uuid::Uuid::now_v7().to_string();
        check_field_writes(
            policy,
            resource,
            written.into_iter(),
            &values,
            &id,
            identity,
            &record_body,
            clock,
        )?;
        let allowed = match decide(
            policy,
            resource,
            Action::Create,
            identity,
            Some(&record_body),
            clock,
        )? {
            Decision::None => {
                return Err(refusal(identity, uses_auth(policy, Action::Create)).into());
            }
            other => other.into_condition(),
        };
        let targets = self.relation_targets(res, identity, 0..values.len(), clock);
        Ok((
            NewRecord {
                id,
                now,
                values,
                targets,
                actor: identity.caller().map(|c| c.id.clone()),
            },
            allowed,
        ))
    }

    /// Everything an update decides before the store runs it: the caller may see
    /// records (`visible`), the patch is valid, the update rule is compiled with the
    /// body. Field write rules are judged on the record as it stands inside the write
    /// transaction.
    fn plan_update(
        &self,
        res: ResourceId,
        identity: &Identity,
        patch: Map<String, Value>,
        if_match: Option<Vec<i64>>,
    ) -> Result<(Update, Access), RecordError> {
        let resource = self.resource_at(res);
        let policy = self.policy(res);
        let clock = self.clock().now();
        let visible =
            decide(policy, resource, Action::View, identity, None, clock)?.into_condition();
        let admin = identity.caller().is_some_and(|c| c.role == "admin");
        let changes = for_patch(resource, patch, admin).map_err(RecordError::Invalid)?;
        let body: Map<String, Value> = changes
            .iter()
            .map(|(i, change)| {
                let value = match change {
                    Change::Set(v) | Change::MergeJson(v) => v.clone(),
                    Change::Clear => Value::Null,
                };
                (resource.fields[*i].name.clone(), value)
            })
            .collect();
        // A caller the update rule refuses outright (scope, admins only) learns it only
        // about records they can see: the refusal waits in the guard, after the
        // visibility check.
        let (allowed, refused) = match decide(
            policy,
            resource,
            Action::Update,
            identity,
            Some(&body),
            clock,
        ) {
            Ok(decision) => (decision.into_condition(), None),
            Err(e) => (None, Some(e)),
        };
        let written: Vec<usize> = changes.iter().map(|(i, _)| *i).collect();
        let changes = if resource.is_users() {
            new_address_unverified(resource, changes)
        } else {
            changes
        };
        let targets = self.relation_targets(res, identity, written.iter().copied(), clock);
        let guard = {
            let (records, identity) = (self.clone(), identity.clone());
            move |current: &Record| {
                if let Some(refused) = &refused {
                    return Err(StoreError::Rejected(Arc::new(refused.clone())));
                }
                check_field_writes(
                    records.policy(res),
                    records.resource_at(res),
                    written.iter().copied(),
                    &current.values,
                    &current.id,
                    &identity,
                    &body,
                    clock,
                )
                .map_err(|e| StoreError::Rejected(Arc::new(e)))
            }
        };
        Ok((
            Update {
                now: format_datetime(clock),
                changes,
                if_match,
                guard: Some(Arc::new(guard)),
                targets,
                actor: identity.caller().map(|c| c.id.clone()),
            },
            Access { visible, allowed },
        ))
    }

    /// A delete as judged for the caller: its view and delete rules and preconditions.
    fn plan_delete(
        &self,
        res: ResourceId,
        identity: &Identity,
        if_match: Option<Vec<i64>>,
    ) -> Result<Deletion, RecordError> {
        let resource = self.resource_at(res);
        let policy = self.policy(res);
        let now = self.clock().now();
        let visible = decide(policy, resource, Action::View, identity, None, now)?.into_condition();
        let allowed =
            decide(policy, resource, Action::Delete, identity, None, now)?.into_condition();
        Ok(Deletion {
            if_match,
            access: Access { visible, allowed },
            actor: identity.caller().map(|c| c.id.clone()),
            now: format_datetime(now),
        })
    }

    /// Creates a record from a body: validated, judged by the create rule (on the record
    /// as it would be stored) and the field write rules.
    pub async fn create(
        &self,
        identity: &Identity,
        res: ResourceId,
        body: Map<String, Value>,
    ) -> Result<Record, RecordError> {
        let (record, allowed) = self.plan_create(res, identity, body)?;
        let stored = self
            .0
            .store
            .records()
            .insert(res, record, allowed)
            .await
            .map_err(|e| self.write_failure(res, identity, Action::Create, e));
        self.settle(res, EventOp::Create, stored.as_ref().map(|r| r.id.clone()))
            .await;
        stored
    }

    /// Applies a merge patch to record `id` (as the client wrote it; anything but a UUID
    /// names no record): not found when the caller cannot see the record, refused
    /// when the update rule (or a field's write rule) refuses, a stale-version error when
    /// `if_match` names a version that is no longer current.
    pub async fn update(
        &self,
        identity: &Identity,
        res: ResourceId,
        id: &str,
        patch: Map<String, Value>,
        if_match: Option<Vec<i64>>,
    ) -> Result<Record, RecordError> {
        let (update, access) = self.plan_update(res, identity, patch, if_match)?;
        let id = self.record_id(res, id)?;
        let updated = match self
            .0
            .store
            .records()
            .update(res, id.clone(), update, access)
            .await
        {
            Ok(Some(record)) => Ok(record),
            Ok(None) => Err(self.not_found(res)),
            Err(e) => Err(self.write_failure(res, identity, Action::Update, e)),
        };
        self.settle(res, EventOp::Update, updated.as_ref().map(|_| id))
            .await;
        updated
    }

    /// Deletes record `id` (as the client wrote it): not found when the caller cannot see
    /// it, refused when the
    /// delete rule refuses, a stale-version error when `if_match` is stale.
    pub async fn delete(
        &self,
        identity: &Identity,
        res: ResourceId,
        id: &str,
        if_match: Option<Vec<i64>>,
    ) -> Result<(), RecordError> {
        let deletion = self.plan_delete(res, identity, if_match)?;
        let id = self.record_id(res, id)?;
        let deleted = match self
            .0
            .store
            .records()
            .delete(res, id.clone(), deletion)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.not_found(res)),
            Err(e) => Err(self.write_failure(res, identity, Action::Delete, e)),
        };
        self.settle(res, EventOp::Delete, deleted.as_ref().map(|()| id))
            .await;
        deleted
    }

    /// Runs every write in one transaction, all or nothing; each is judged exactly as
    /// the single request would be.
    pub async fn batch(
        &self,
        identity: &Identity,
        writes: &[BatchWrite],
    ) -> Result<Vec<BatchOutcome>, BatchFailure> {
        let at = |index: usize| {
            move |error: RecordError| BatchFailure {
                index: Some(index),
                error,
            }
        };
        let mut ops = Vec::with_capacity(writes.len());
        for (i, w) in writes.iter().enumerate() {
            let op = match w.action {
                Action::Create => {
                    // As for a single create: callers no body could admit are refused
                    // before the body is judged.
                    self.refuse_early(w.res, identity, Action::Create)
                        .and_then(|()| {
                            self.plan_create(w.res, identity, w.body.clone().unwrap_or_default())
                        })
                        .map(|(record, allowed)| BatchOp::Insert {
                            res: w.res,
                            record,
                            allowed,
                        })
                }
                Action::Update => self
                    .plan_update(
                        w.res,
                        identity,
                        w.body.clone().unwrap_or_default(),
                        w.if_match.clone(),
                    )
                    .map(|(update, access)| BatchOp::Update {
                        res: w.res,
                        id: w.id.clone().unwrap_or_default(),
                        update,
                        access,
                    }),
                _ => self
                    .plan_delete(w.res, identity, w.if_match.clone())
                    .map(|deletion| BatchOp::Delete {
                        res: w.res,
                        id: w.id.clone().unwrap_or_default(),
                        deletion,
                    }),
            };
            ops.push(op.map_err(at(i))?);
        }
        match self.0.store.records().batch(ops).await {
            Ok(outcomes) => {
                let written = writes
                    .iter()
                    .zip(&outcomes)
                    .map(|(w, outcome)| match outcome {
                        BatchOutcome::Inserted(r) => Written {
                            resource: w.res,
                            op: EventOp::Create,
                            id: r.id.clone(),
                        },
                        BatchOutcome::Updated(r) => Written {
                            resource: w.res,
                            op: EventOp::Update,
                            id: r.id.clone(),
                        },
                        BatchOutcome::Deleted => Written {
                            resource: w.res,
                            op: EventOp::Delete,
                            id: w.id.clone().unwrap_or_default(),
                        },
                    })
                    .collect();
                self.after_commit(written).await;
                Ok(outcomes)
            }
            Err(e) => {
                if may_have_committed(&e.error) {
                    let maybe = writes
                        .iter()
                        .map(|w| Written {
                            resource: w.res,
                            op: match w.action {
                                Action::Create => EventOp::Create,
                                Action::Update => EventOp::Update,
                                _ => EventOp::Delete,
                            },
                            id: w.id.clone().unwrap_or_default(),
                        })
                        .collect();
                    self.after_commit(maybe).await;
                }
                Err(match e.index {
                    Some(i) => {
                        let w = &writes[i];
                        BatchFailure {
                            index: Some(i),
                            error: self.write_failure(w.res, identity, w.action, e.error),
                        }
                    }
                    None => BatchFailure {
                        index: None,
                        error: RecordError::Store(e.error),
                    },
                })
            }
        }
    }

    /// Runs the effects of a single write: after it committed, and also after a failure
    /// that may have followed a commit (the database went away while committing).
    pub(crate) async fn settle(
        &self,
        res: ResourceId,
        op: EventOp,
        outcome: Result<String, &RecordError>,
    ) {
        match outcome {
            Ok(id) => {
                self.after_commit(vec![Written {
                    resource: res,
                    op,
                    id,
                }])
                .await;
            }
            Err(RecordError::Store(e)) if may_have_committed(e) => {
                self.after_commit(vec![Written {
                    resource: res,
                    op,
                    id: String::new(),
                }])
                .await;
            }
            Err(_) => {}
        }
    }
}

/// Whether a write that failed this way may still have committed.
fn may_have_committed(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(_) | StoreError::Internal(_))
}

/// A user's new email address is lowercased (one account per address, as at
/// registration) and is not verified: the old address's verification must not vouch for
/// it (sign-in with a provider links by verified address). An admin who sets `verified`
/// in the same patch decides it.
fn new_address_unverified(
    users: &ferrobase_schema::Resource,
    mut changes: Vec<(usize, Change)>,
) -> Vec<(usize, Change)> {
    let field = |name: &str| users.fields.iter().position(|f| f.name == name);
    let (Some(email), Some(verified)) = (field("email"), field("verified")) else {
        return changes;
    };
    let mut new_address = false;
    for (i, change) in &mut changes {
        if *i == email
            && let Change::Set(Value::String(address)) = change
        {
            *address = address.to_lowercase();
            new_address = true;
        }
    }
    if new_address && !changes.iter().any(|(i, _)| *i == verified) {
        changes.push((verified, Change::Set(Value::Bool(false))));
    }
    changes
}
