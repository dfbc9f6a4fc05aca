//! Subscriptions: `postEvents(filter, after)`, fed by the realtime service exactly as
//! its SSE and WebSocket streams are (the same rule checks, the same resume and reset).

use std::time::Duration;

use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputValue, Object, SubscriptionField, SubscriptionFieldFuture,
    TypeRef,
};
use async_graphql::{Error, Value as GqlValue};
use ferrobase_realtime::{Close, Connection, Out, Start, SubscribeRequest};
use ferrobase_schema::Resource;
use ferrobase_store::ResourceId;
use futures_util::stream;
use serde_json::Value;

use crate::Failure;
use crate::build::EVENT_OP;
use crate::load::{Node, Page, call, coded, problem, services};
use crate::names::Names;

/// One event for the client.
struct Event {
    seq: i64,
    op: String,
    record: Option<Node>,
}

/// `PostEvent { seq op record }`.
pub(crate) fn event_type(names: &Names) -> Object {
    Object::new(&names.event)
        .description("A change to a record the caller may see.")
        .field(
            Field::new("seq", TypeRef::named_nn(TypeRef::INT), |ctx| {
                FieldFuture::from_value(
                    ctx.parent_value
                        .downcast_ref::<Event>()
                        .map(|e| GqlValue::from(e.seq)),
                )
            })
            .description("the event's position in the log: resume after it with `after`"),
        )
        .field(Field::new("op", TypeRef::named_nn(EVENT_OP), |ctx| {
            FieldFuture::from_value(
                ctx.parent_value
                    .downcast_ref::<Event>()
                    .map(|e| GqlValue::Enum(async_graphql::Name::new(&e.op))),
            )
        }))
        .field(
            Field::new("record", TypeRef::named(names.ty.clone()), |ctx| match ctx
                .parent_value
                .downcast_ref::<Event>()
                .and_then(|e| e.record.clone())
            {
                Some(node) => FieldFuture::Value(Some(FieldValue::owned_any(node))),
                None => FieldFuture::from_value(None),
            })
            .description(
                "as a read shows it to the caller (for a delete, as it was); null for a reset",
            ),
        )
}

/// The state of one subscription's stream.
struct Feed {
    conn: Connection,
    res: ResourceId,
    /// Events to hand out before waiting for more.
    pending: std::collections::VecDeque<Result<Event, Error>>,
    /// Events to replay from the log first: `(after, upto]`.
    replay: Option<(i64, i64)>,
    expires: Option<time::OffsetDateTime>,
    problems: crate::Problems,
    done: bool,
}

fn event(res: ResourceId, out: &Out) -> Result<Event, Error> {
    let data: Value = serde_json::from_str(&out.data).map_err(|e| Error::new(e.to_string()))?;
    let op = data
        .get("op")
        .and_then(Value::as_str)
        .unwrap_or("update")
        .to_owned();
    let record = match data.get("record") {
        Some(Value::Object(map)) => Some(Node {
            page: Page::shaped(res, vec![map.clone()]),
            index: 0,
        }),
        _ => None,
    };
    Ok(Event {
        seq: out.seq,
        op,
        record,
    })
}

impl Feed {
    async fn next(mut self) -> Option<(Result<Event, Error>, Feed)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some((item, self));
            }
            if self.done {
                return None;
            }
            if let Some((after, upto)) = self.replay {
                match self.conn.replay(None, after, upto).await {
                    Ok(Some((outs, next))) => {
                        self.replay = (next < upto).then_some((next, upto));
                        let res = self.res;
                        self.pending.extend(outs.iter().map(|o| event(res, o)));
                    }
                    Ok(None) => self.replay = None,
                    Err(e) => {
                        self.done = true;
                        let e = (self.problems)(Failure::Realtime(e));
                        self.pending.push_back(Err(coded_owned(e)));
                    }
                }
                continue;
            }
            let left = self
                .expires
                .map(|at| {
                    Duration::try_from(at - time::OffsetDateTime::now_utc())
                        .unwrap_or(Duration::ZERO)
                })
                .unwrap_or(Duration::MAX);
            let next = tokio::select! {
                next = self.conn.next() => next,
                () = tokio::time::sleep(left.min(Duration::from_secs(86_400 * 365))) => {
                    self.done = true;
                    return Some((
                        Err(coded(
                            "TOKEN_EXPIRED",
                            "the access token has expired: subscribe again with a fresh one",
                        )),
                        self,
                    ));
                }
            };
            match next {
                Ok(out) => {
                    let item = event(self.res, &out);
                    return Some((item, self));
                }
                Err(close) => {
                    self.done = true;
                    let message = match close {
                        Close::Overflow => {
                            "the subscription fell too far behind and was ended: subscribe again with `after` set to the last seq received"
                        }
                        Close::Shutdown => {
                            "the server is shutting down: subscribe again (on another node) with `after` set to the last seq received"
                        }
                    };
                    return Some((Err(coded("UNAVAILABLE", message)), self));
                }
            }
        }
    }
}

fn coded_owned(p: crate::Problem) -> Error {
    use async_graphql::ErrorExtensions;
    Error::new(p.message).extend_with(|_, ext| ext.set("code", p.code.as_str()))
}

/// `postEvents(filter: String, after: Int): PostEvent!`.
pub(crate) fn field(resource: &Resource, res: ResourceId, names: &Names) -> SubscriptionField {
    let name = resource.name.clone();
    SubscriptionField::new(
        names.events.clone(),
        TypeRef::named_nn(names.event.clone()),
        move |ctx| {
            let name = name.clone();
            SubscriptionFieldFuture::new(async move {
                let services = services(&ctx)?;
                let call = call(&ctx)?;
                let Some(realtime) = &services.realtime else {
                    return Err(coded("UNAVAILABLE", "realtime is not running on this node"));
                };
                let filter = match ctx.args.get("filter") {
                    Some(v) if !v.is_null() => Some(v.string()?.to_owned()),
                    _ => None,
                };
                let after = match ctx.args.get("after") {
                    Some(v) if !v.is_null() => Some(v.i64()?),
                    _ => None,
                };
                if after.is_some_and(|a| a < 0) {
                    return Err(problem(
                        services,
                        Failure::Record(ferrobase_records::RecordError::Invalid(
                            [(
                                "after".to_owned(),
                                vec!["must be a seq, 0 or more".to_owned()],
                            )]
                            .into(),
                        )),
                    ));
                }
                let fail = |e| problem(services, Failure::Realtime(e));
                let mut conn = realtime
                    .connect(call.identity.clone(), call.expires, &call.client, "graphql")
                    .map_err(fail)?;
                let subscribed = conn
                    .subscribe(SubscribeRequest {
                        name: None,
                        resource: name,
                        filter,
                        record_id: None,
                        after,
                    })
                    .await
                    .map_err(fail)?;
                let mut feed = Feed {
                    conn,
                    res,
                    pending: Default::default(),
                    replay: None,
                    expires: call.expires,
                    problems: services.problems.clone(),
                    done: false,
                };
                match subscribed.start {
                    Start::Live => {}
                    Start::Replay { after, upto } => feed.replay = Some((after, upto)),
                    Start::Reset { at } => feed.pending.push_back(Ok(Event {
                        seq: at,
                        op: "reset".to_owned(),
                        record: None,
                    })),
                }
                Ok(stream::unfold(feed, Feed::next))
            })
        },
    )
    .argument(
        InputValue::new("filter", TypeRef::named(TypeRef::STRING))
            .description("only events whose record matches this filter"),
    )
    .argument(
        InputValue::new("after", TypeRef::named(TypeRef::INT)).description(
            "resume after this seq (a `reset` event when it is older than the log keeps)",
        ),
    )
    .description(format!(
        "Changes to {} records the caller may see, as they happen",
        resource.name
    ))
}

impl<'a> From<Event> for FieldValue<'a> {
    fn from(event: Event) -> Self {
        FieldValue::owned_any(event)
    }
}
