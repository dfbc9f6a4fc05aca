//! Judging an event for subscribers and shaping what each may see.
//!
//! The view rule and the subscriber's filter are judged in memory against the event's
//! record (for a delete, the record as it was) by the evaluator that agrees with their
//! SQL. A rule or filter that follows relations needs other records: those are judged by
//! the database in one statement per event for every subscriber that needs it, the
//! event's record standing in for the table (`RecordStore::judge`). Field read rules
//! then decide the fields; subscribers who may read the same fields share one
//! serialized message.

use std::collections::HashMap;
use std::sync::Arc;

use ferrobase_access::{JsonRecord, Judged, judge_view};
use ferrobase_query::env::Env;
use ferrobase_query::eval::eval;
use ferrobase_records::{RecordJson, Records};
use ferrobase_schema::Resource;
use ferrobase_store::{Record, RecordEvent, ResourceId};
use sea_query::ExprTrait;
use serde_json::{Map, Value};

use crate::metrics::RealtimeMetrics;
use crate::{Out, Sub};

/// Conditions per judging statement.
const PER_STATEMENT: usize = 200;

/// Hands a batch of events to the live subscriptions of `registry`.
pub(crate) async fn deliver(
    records: &Records,
    metrics: &RealtimeMetrics,
    registry: &[Vec<Arc<Sub>>],
    events: &[RecordEvent],
) {
    for event in events {
        let Ok((res, _)) = records.resource(&event.resource) else {
            continue;
        };
        let subs: Vec<&Sub> = registry[res.0]
            .iter()
            .map(Arc::as_ref)
            .filter(|s| s.live_from < event.seq && !s.conn.paused())
            .collect();
        if subs.is_empty() {
            continue;
        }
        let (outs, unjudged) = judge(records, res, event, &subs).await;
        let mut any = false;
        for (sub, out) in subs.iter().zip(outs) {
            if let Some(out) = out {
                any |= sub.conn.offer(sub.serial, out, metrics);
            }
        }
        // Subscribers whose rule the database could not judge are cut off, as if they
        // had fallen behind: they resume from their last seq instead of missing this.
        for i in unjudged {
            subs[i].conn.end(crate::Close::Overflow);
        }
        if any {
            observe_lag(records, metrics, event);
        }
        // Many subscribers judged in memory: let the node's other tasks run.
        tokio::task::yield_now().await;
    }
}

/// The messages `sub` gets for `events` (a replay from the log).
pub(crate) async fn judge_for(
    records: &Records,
    sub: &Sub,
    events: &[RecordEvent],
) -> Result<Vec<Out>, crate::RealtimeError> {
    let mut outs = Vec::new();
    for event in events {
        let Ok((res, _)) = records.resource(&event.resource) else {
            continue;
        };
        if res != sub.res {
            continue;
        }
        let (mut judged, unjudged) = judge(records, res, event, &[sub]).await;
        if !unjudged.is_empty() {
            return Err(crate::RealtimeError::Record(
                ferrobase_records::RecordError::Store(ferrobase_store::StoreError::Unavailable(
                    "the rules of a replayed event could not be judged".into(),
                )),
            ));
        }
        if let Some(Some(out)) = judged.pop() {
            outs.push(out);
        }
    }
    Ok(outs)
}

fn observe_lag(records: &Records, metrics: &RealtimeMetrics, event: &RecordEvent) {
    if let Ok(at) =
        time::OffsetDateTime::parse(&event.at, &time::format_description::well_known::Rfc3339)
    {
        let lag = (records.clock().now() - at).as_seconds_f64();
        metrics.lag.observe(lag.max(0.0));
    }
}

/// The event's record as the store holds records (hidden fields are not in the log).
fn stored(resource: &Resource, event: &RecordEvent, map: &Map<String, Value>) -> Record {
    let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
    Record {
        id: event.id.clone(),
        version: event.version,
        created_at: text("created_at"),
        updated_at: text("updated_at"),
        values: resource
            .fields
            .iter()
            .map(|f| map.get(&f.name).cloned().unwrap_or(Value::Null))
            .collect(),
    }
}

/// What the rules say about an event for one group of subscribers (same caller, same
/// filter).
struct Group {
    who: Arc<crate::Who>,
    admitted: bool,
    sql: Option<sea_query::Expr>,
}

/// Per subscriber, the message it gets for `event`, if any, and the subscribers whose
/// rule the database failed to judge. Subscribers with the same caller and filter are
/// judged once; those with the same caller share one message.
async fn judge(
    records: &Records,
    res: ResourceId,
    event: &RecordEvent,
    subs: &[&Sub],
) -> (Vec<Option<Out>>, Vec<usize>) {
    let mut outs: Vec<Option<Out>> = vec![None; subs.len()];
    let Some(map) = event.record.as_object() else {
        return (outs, Vec::new());
    };
    let resource = records.resource_at(res);
    let policy = records.policy(res);
    let now = records.clock().now();
    let mut groups: Vec<Group> = Vec::new();
    let mut by_key: HashMap<(Arc<str>, Option<Arc<str>>), usize> = HashMap::new();
    let mut group_of: Vec<Option<usize>> = vec![None; subs.len()];
    for (i, sub) in subs.iter().enumerate() {
        if sub.record_id.as_ref().is_some_and(|id| *id != event.id) {
            continue;
        }
        let who = sub.conn.who();
        let key = (who.key.clone(), sub.filter_text.clone());
        if let Some(&g) = by_key.get(&key) {
            group_of[i] = Some(g);
            continue;
        }
        let rule = judge_view(policy, resource, &who.identity, who.auth.as_ref(), map, now);
        let filter = match &sub.filter {
            None => Judged::Admit,
            Some(cond) if cond.follows_relations() => {
                Judged::Sql(records.compile_filter(&who.identity, res, cond, now))
            }
            Some(cond) => {
                let env = Env {
                    auth: who.auth.as_ref(),
                    body: None,
                    now,
                };
                if eval(cond, &env, &JsonRecord(map), &resource.name, &event.id) {
                    Judged::Admit
                } else {
                    Judged::Deny
                }
            }
        };
        let (admitted, sql) = match (rule, filter) {
            (Judged::Deny, _) | (_, Judged::Deny) => (false, None),
            (Judged::Admit, Judged::Admit) => (true, None),
            (Judged::Admit, Judged::Sql(e)) | (Judged::Sql(e), Judged::Admit) => (false, Some(e)),
            (Judged::Sql(a), Judged::Sql(b)) => (false, Some(a.and(b))),
        };
        groups.push(Group { who, admitted, sql });
        by_key.insert(key, groups.len() - 1);
        group_of[i] = Some(groups.len() - 1);
    }
    let record = stored(resource, event, map);
    // One statement per event for every group whose conditions follow relations.
    let in_sql: Vec<usize> = (0..groups.len())
        .filter(|&g| groups[g].sql.is_some())
        .collect();
    let mut failed: Vec<usize> = Vec::new();
    for chunk in in_sql.chunks(PER_STATEMENT) {
        let conds = chunk
            .iter()
            .filter_map(|&g| groups[g].sql.clone())
            .collect();
        match records
            .store()
            .records()
            .judge(res, record.clone(), conds)
            .await
        {
            Ok(answers) => {
                for (&g, yes) in chunk.iter().zip(answers) {
                    groups[g].admitted = yes;
                }
            }
            // Fail closed: a subscriber whose rule cannot be judged gets nothing now
            // and is told to resume once the database answers again.
            Err(e) => {
                tracing::warn!(error = %e, seq = event.seq, "cannot judge a realtime event");
                failed.extend(chunk.iter().copied());
            }
        }
    }
    let unjudged: Vec<usize> = (0..subs.len())
        .filter(|&i| group_of[i].is_some_and(|g| failed.contains(&g)))
        .collect();
    // Callers who may read the same fields share one message.
    let mut shaped: HashMap<Arc<str>, Arc<str>> = HashMap::new();
    for (i, sub) in subs.iter().enumerate() {
        let Some(g) = group_of[i] else { continue };
        let group = &groups[g];
        if !group.admitted {
            continue;
        }
        let data = shaped
            .entry(group.who.key.clone())
            .or_insert_with(|| {
                let mask = records.readable_in_event(res, &record, &group.who.identity);
                let json = RecordJson {
                    readable: Some(&mask),
                    ..RecordJson::new(resource, &record)
                };
                let record = serde_json::to_string(&json).unwrap_or_else(|_| "{}".into());
                Arc::from(format!(
                    "{{\"op\":\"{}\",\"record\":{record}}}",
                    event.op.as_str()
                ))
            })
            .clone();
        outs[i] = Some(Out {
            seq: event.seq,
            subscription: sub.name.clone(),
            data,
        });
    }
    (outs, unjudged)
}
