//! The job API: enqueueing, reading and following a job, the callbacks of a service
//! that answered `202`, and the admin's endpoints.

use serde_json::{Map, Value, json};

use crate::paths::{json_body, object, ok, param_ref, post, with_errors};
use crate::schemas::{data, reference};

/// `Job` and `QueueStats`.
pub(crate) fn components(components: &mut Value) {
    let time = json!({ "type": "string", "format": "date-time" });
    let maybe_time = json!({ "type": ["string", "null"], "format": "date-time" });
    components["schemas"]["Job"] = json!({
        "type": "object",
        "properties": {
            "id": { "type": "string", "format": "uuid" },
            "type": { "type": "string", "description": "the job type ([jobs.*] in schema.toml) or a built-in kind" },
            "queue": { "type": "string" },
            "state": { "type": "string", "enum": ["scheduled", "available", "running", "retryable", "completed", "dead", "cancelled"] },
            "priority": { "type": "integer", "minimum": -1000, "maximum": 1000 },
            "payload": { "type": "object" },
            "attempt": { "type": "integer", "minimum": 0 },
            "maxAttempts": { "type": "integer", "minimum": 1 },
            "runAt": time,
            "leaseUntil": maybe_time,
            "progress": { "type": ["integer", "null"], "minimum": 0, "maximum": 100 },
            "message": { "type": ["string", "null"] },
            "result": {},
            "lastError": { "type": ["string", "null"] },
            "createdBy": { "type": ["string", "null"] },
            "createdAt": time,
            "updatedAt": time,
            "finishedAt": maybe_time
        },
        "required": ["id", "type", "queue", "state", "priority", "payload", "attempt", "maxAttempts", "runAt", "createdAt", "updatedAt"],
        "additionalProperties": false
    });
    components["schemas"]["WebhookDelivery"] = json!({
        "type": "object",
        "properties": {
            "id": { "type": "string", "format": "uuid" },
            "webhook": { "type": "string" },
            "event": { "type": "integer", "description": "the event's seq in the log" },
            "type": { "type": "string", "description": "`<resource>.<create|update|delete>`" },
            "status": { "type": "string", "enum": ["scheduled", "available", "running", "retryable", "completed", "dead", "cancelled"] },
            "attempts": { "type": "integer" },
            "maxAttempts": { "type": "integer" },
            "lastResponseCode": { "type": ["integer", "null"] },
            "lastDurationMs": { "type": ["integer", "null"] },
            "lastError": { "type": ["string", "null"] },
            "nextAttempt": maybe_time,
            "createdAt": time,
            "finishedAt": maybe_time,
            "history": {
                "type": "array",
                "description": "every attempt, when one delivery is read",
                "items": {
                    "type": "object",
                    "properties": {
                        "attempt": { "type": "integer" },
                        "at": time,
                        "outcome": { "type": "string", "enum": ["completed", "retryable", "dead"] },
                        "responseCode": { "type": ["integer", "null"] },
                        "durationMs": { "type": ["integer", "null"] },
                        "error": { "type": ["string", "null"] }
                    }
                }
            }
        },
        "required": ["id", "webhook", "status", "attempts", "maxAttempts", "createdAt"],
        "additionalProperties": false
    });
    components["schemas"]["QueueStats"] = json!({
        "type": "object",
        "properties": {
            "queue": { "type": "string" },
            "counts": { "type": "object", "additionalProperties": { "type": "integer" } },
            "oldestDue": maybe_time,
            "lagMs": { "type": ["integer", "null"] },
            "completedLastMinute": { "type": "integer" }
        },
        "required": ["queue", "counts", "completedLastMinute"],
        "additionalProperties": false
    });
}

fn job_data() -> Value {
    data(reference("Job"))
}

/// The job paths.
pub(crate) fn paths(paths: &mut Map<String, Value>) {
    let body_errors = ["400", "401", "409", "413", "415"];
    paths.insert(
        "/api/v1/jobs".into(),
        json!({ "post": {
            "operationId": "enqueue_job", "tags": ["jobs"],
            "summary": "Enqueue a job (admins, or an admin's API key with the jobs:write scope)",
            "requestBody": { "required": true, "content": json_body(object(json!({
                "type": { "type": "string", "description": "a job type declared in schema.toml" },
                "payload": { "type": "object" },
                "runAt": { "type": "string", "format": "date-time" },
                "priority": { "type": "integer", "minimum": -1000, "maximum": 1000, "description": "higher runs first" }
            }), &["type"])) },
            "responses": with_errors(Map::from_iter([
                ("201".to_owned(), ok("Enqueued.", job_data())),
                ("200".to_owned(), ok("The job already holding this type's unique key.", job_data())),
            ]), &["400", "401", "403", "413", "415"])
        } }),
    );
    paths.insert(
        "/api/v1/jobs/{id}".into(),
        json!({ "get": {
            "operationId": "get_job", "tags": ["jobs"], "summary": "A job (its creator or an admin)",
            "parameters": [param_ref("id")],
            "responses": with_errors(Map::from_iter([("200".to_owned(), ok("The job.", job_data()))]), &["401", "404"])
        } }),
    );
    paths.insert(
        "/api/v1/jobs/{id}/events".into(),
        json!({ "get": {
            "operationId": "follow_job", "tags": ["jobs"],
            "summary": "Server-Sent Events of the job's changes (`state` events), ending after a final state; Last-Event-ID resumes",
            "parameters": [param_ref("id")],
            "responses": with_errors(Map::from_iter([("200".to_owned(), json!({
                "description": "An event stream.",
                "content": { "text/event-stream": { "schema": { "type": "string" } } }
            }))]), &["401", "404"])
        } }),
    );
    let token_security = json!([{ "jobToken": [] }]);
    for (name, summary, body, required) in [
        (
            "progress",
            "Report progress (extends the lease)",
            json!({
                "progress": { "type": "integer", "minimum": 0, "maximum": 100 },
                "message": { "type": "string", "maxLength": 1000 }
            }),
            &["progress"][..],
        ),
        (
            "complete",
            "Complete the job with an optional result",
            json!({ "result": {} }),
            &[][..],
        ),
        (
            "fail",
            "Fail this attempt (retried unless retry is false or it was the last)",
            json!({ "error": { "type": "string", "minLength": 1 }, "retry": { "type": "boolean" } }),
            &["error"][..],
        ),
    ] {
        let mut op = post(
            &format!("{name}_job"),
            "jobs",
            summary,
            Some(object(body, required)),
            ("200", ok("The job as it now is.", job_data())),
            &body_errors,
        );
        op["parameters"] = json!([param_ref("id")]);
        op["security"] = token_security.clone();
        paths.insert(format!("/api/v1/jobs/{{id}}/{name}"), json!({ "post": op }));
    }
    paths.insert(
        "/api/v1/admin/jobs".into(),
        json!({ "get": {
            "operationId": "list_jobs", "tags": ["jobs"], "summary": "Jobs, newest first (admins)",
            "parameters": [
                { "name": "state", "in": "query", "schema": { "type": "string", "enum": ["scheduled", "available", "running", "retryable", "completed", "dead", "cancelled"] } },
                { "name": "type", "in": "query", "schema": { "type": "string" } },
                { "name": "queue", "in": "query", "schema": { "type": "string" } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 200 } },
                { "name": "cursor", "in": "query", "schema": { "type": "string" } }
            ],
            "responses": with_errors(Map::from_iter([("200".to_owned(), ok("A page of jobs.", json!({
                "type": "object",
                "properties": {
                    "data": { "type": "array", "items": reference("Job") },
                    "meta": { "type": "object", "properties": {
                        "limit": { "type": "integer" },
                        "nextCursor": { "type": ["string", "null"] }
                    } }
                },
                "required": ["data", "meta"]
            })))]), &["400", "401", "403"])
        } }),
    );
    for (name, summary) in [
        (
            "retry",
            "Run a job that is not waiting or running again, now",
        ),
        ("cancel", "Cancel a job that has not ended"),
    ] {
        paths.insert(
            format!("/api/v1/admin/jobs/{{id}}/{name}"),
            json!({ "post": {
                "operationId": format!("{name}_job_admin"), "tags": ["jobs"], "summary": summary,
                "parameters": [param_ref("id")],
                "responses": with_errors(Map::from_iter([("200".to_owned(), ok("The job as it now is.", job_data()))]), &["401", "403", "404", "409"])
            } }),
        );
    }
    paths.insert(
        "/api/v1/admin/jobs/{id}".into(),
        json!({ "delete": {
            "operationId": "delete_job", "tags": ["jobs"], "summary": "Delete a job that is not running",
            "parameters": [param_ref("id")],
            "responses": with_errors(Map::from_iter([("204".to_owned(), json!({ "description": "Deleted." }))]), &["401", "403", "404", "409"])
        } }),
    );
    paths.insert(
        "/api/v1/admin/webhooks/deliveries".into(),
        json!({ "get": {
            "operationId": "list_webhook_deliveries", "tags": ["jobs"], "summary": "Webhook deliveries, newest first (admins)",
            "parameters": [
                { "name": "webhook", "in": "query", "schema": { "type": "string" } },
                { "name": "status", "in": "query", "schema": { "type": "string", "enum": ["scheduled", "available", "running", "retryable", "completed", "dead", "cancelled"] } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 200 } },
                { "name": "cursor", "in": "query", "schema": { "type": "string" } }
            ],
            "responses": with_errors(Map::from_iter([("200".to_owned(), ok("A page of deliveries.", json!({
                "type": "object",
                "properties": {
                    "data": { "type": "array", "items": reference("WebhookDelivery") },
                    "meta": { "type": "object", "properties": {
                        "limit": { "type": "integer" },
                        "nextCursor": { "type": ["string", "null"] }
                    } }
                },
                "required": ["data", "meta"]
            })))]), &["400", "401", "403"])
        } }),
    );
    paths.insert(
        "/api/v1/admin/webhooks/deliveries/{id}".into(),
        json!({ "get": {
            "operationId": "get_webhook_delivery", "tags": ["jobs"],
            "summary": "A delivery with every attempt: when, outcome, response code, duration, error (admins)",
            "parameters": [param_ref("id")],
            "responses": with_errors(Map::from_iter([("200".to_owned(), ok("The delivery.", data(reference("WebhookDelivery"))))]), &["401", "403", "404"])
        } }),
    );
    paths.insert(
        "/api/v1/admin/webhooks/deliveries/{id}/redeliver".into(),
        json!({ "post": {
            "operationId": "redeliver_webhook", "tags": ["jobs"],
            "summary": "Send a delivery again now (enables an endpoint disabled by 410)",
            "parameters": [param_ref("id")],
            "responses": with_errors(Map::from_iter([("200".to_owned(), ok("The delivery as it now is.", data(reference("WebhookDelivery"))))]), &["401", "403", "404", "409"])
        } }),
    );
    paths.insert(
        "/api/v1/admin/queues".into(),
        json!({ "get": {
            "operationId": "queue_stats", "tags": ["jobs"], "summary": "Numbers per queue (admins)",
            "responses": with_errors(Map::from_iter([("200".to_owned(), ok("Per queue.", data(json!({ "type": "array", "items": reference("QueueStats") }))))]), &["401", "403"])
        } }),
    );
}
