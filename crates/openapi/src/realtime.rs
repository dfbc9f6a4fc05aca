//! Realtime in the document (SPEC §10): each resource's Server-Sent Events stream and the
//! WebSocket endpoint. The streams' messages are described in prose: OpenAPI has no
//! schema for the events of a stream.

use serde_json::{Map, Value, json};

use crate::paths::{param_ref, with_errors};

/// `GET /api/v1/{resource}/events` for `name`.
pub(crate) fn resource_events(name: &str, paths: &mut Map<String, Value>) {
    paths.insert(
        format!("/api/v1/{name}/events"),
        json!({ "get": {
            "operationId": format!("events_{name}"),
            "tags": [name],
            "summary": format!("Follow {name} as Server-Sent Events"),
            "description": "Every create, update and delete the caller's view rule admits (a delete judged on the record as it was) and the filter passes, in log order: `id:` is the event's seq, `data:` is `{\"op\", \"record\"}` with the record shaped like a REST read for the caller. Named control events: `reset` (the position is older than the log keeps: refetch, then go on), `expired` (the credential ended: sign in again and reconnect), `shutdown` (the node stops: reconnect). A comment line every heartbeat; an `id:` without data when a filtered stream's position moved. `Last-Event-ID` (or `after`) resumes with nothing lost or repeated.",
            "parameters": [
                param_ref("filter"),
                { "name": "after", "in": "query", "required": false,
                  "description": "Resume after this seq (`Last-Event-ID` wins when both are sent).",
                  "schema": { "type": "integer", "minimum": 0 } },
                { "name": "Last-Event-ID", "in": "header", "required": false,
                  "description": "The last event id received: resume after it.",
                  "schema": { "type": "string", "pattern": "^[0-9]+$" } }
            ],
            "responses": with_errors(Map::from_iter([("200".to_owned(), json!({
                "description": "An event stream that lasts until the client, the credential or the node ends it.",
                "content": { "text/event-stream": { "schema": { "type": "string" } } }
            }))]), &["400", "401", "403", "404"])
        } }),
    );
}

/// `GET /api/v1/realtime`, the WebSocket protocol.
pub(crate) fn websocket(paths: &mut Map<String, Value>) {
    paths.insert(
        "/api/v1/realtime".into(),
        json!({ "get": {
            "operationId": "realtime",
            "tags": ["realtime"],
            "summary": "Subscriptions over one WebSocket",
            "description": "Upgrade to WebSocket, then JSON text messages. Client: `{\"type\":\"auth\",\"token\"}`, `{\"type\":\"subscribe\",\"id\",\"resource\",\"filter\"?,\"recordId\"?,\"after\"?}`, `{\"type\":\"unsubscribe\",\"id\"}`, `{\"type\":\"ping\"}`. Server: `ack` (the subscription is live), `event` (`subscription`, `seq`, `op`, `record`), `reset` (with the `seq` to resume after), `error` (`id`?, `code`, `message`, `details`?: the REST codes; the connection stays open), `shutdown`, ping frames. A cookie session opens it only from this site or an allowed origin.",
            "responses": with_errors(Map::from_iter([("101".to_owned(), json!({
                "description": "Switched to the WebSocket protocol."
            }))]), &["400", "401", "403"])
        } }),
    );
}
