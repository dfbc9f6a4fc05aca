//! Operations: the record API per resource, identity, batch and the operational
//! endpoints, each with every response it can give.

use ferrobase_schema::Schema;
use serde_json::{Map, Value, json};

use crate::Options;
use crate::schemas::{data, reference};

fn response_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

pub(crate) fn param_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/parameters/{name}") })
}

fn header_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/headers/{name}") })
}

pub(crate) fn json_body(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

/// Responses every API operation may give: rate limits, the boundary's 404/405/413/415,
/// a timeout or an unavailable database, an internal error.
fn common(responses: &mut Map<String, Value>) {
    for (status, name) in [
        ("405", "MethodNotAllowed"),
        ("429", "RateLimited"),
        ("500", "Internal"),
        ("503", "Unavailable"),
    ] {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| response_ref(name));
    }
}

/// Responses of operations that read credentials and a JSON body.
pub(crate) fn with_errors(mut responses: Map<String, Value>, statuses: &[&str]) -> Value {
    for status in statuses {
        let name = match *status {
            "400" => "BadRequest",
            "401" => "Unauthorized",
            "403" => "Forbidden",
            "404" => "NotFound",
            "409" => "Conflict",
            "412" => "PreconditionFailed",
            "413" => "PayloadTooLarge",
            "415" => "UnsupportedMediaType",
            _ => "Unprocessable",
        };
        responses.insert((*status).to_owned(), response_ref(name));
    }
    common(&mut responses);
    Value::Object(responses)
}

pub(crate) fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": json_body(schema) })
}

/// The list parameters and conditional headers, shared by every resource.
pub(crate) fn parameters() -> Value {
    json!({
        "filter": { "name": "filter", "in": "query", "schema": { "type": "string", "maxLength": 4096 },
            "description": "an expression: `status = 'published' && title ~ 'rust'` (SPEC §4)" },
        "sort": { "name": "sort", "in": "query", "schema": { "type": "string" },
            "description": "fields, `-` for descending: `-created_at,title`" },
        "fields": { "name": "fields", "in": "query", "schema": { "type": "string" },
            "description": "keep only these properties: `id,title`" },
        "expand": { "name": "expand", "in": "query", "schema": { "type": "string" },
            "description": "relations to include under `expand`: `author,tags`" },
        "limit": { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 100, "default": 20 } },
        "cursor": { "name": "cursor", "in": "query", "schema": { "type": "string" },
            "description": "`meta.nextCursor` of the previous page" },
        "page": { "name": "page", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 10000 },
            "description": "offset pages instead of cursors" },
        "count": { "name": "count", "in": "query", "schema": { "type": "boolean" },
            "description": "add `meta.total`" },
        "id": { "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } },
        "If-Match": { "name": "If-Match", "in": "header", "schema": { "type": "string" },
            "description": "write only if the record's ETag is one of these (else 412)" },
        "If-None-Match": { "name": "If-None-Match", "in": "header", "schema": { "type": "string" },
            "description": "304 when the ETag still matches" },
        "Idempotency-Key": { "name": "Idempotency-Key", "in": "header",
            "schema": { "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$" },
            "description": "a retried request with the same key gets the first answer (24 h)" }
    })
}

/// One tag per resource, plus the fixed ones.
pub(crate) fn tags(schema: &Schema) -> Value {
    let mut tags: Vec<Value> = schema
        .resources
        .iter()
        .map(|r| json!({ "name": r.name, "description": format!("The {} resource.", r.name) }))
        .collect();
    for (name, description) in [
        ("auth", "Accounts, tokens, sessions and API keys."),
        ("batch", "Several writes in one transaction."),
        (
            "jobs",
            "Durable background jobs: enqueue, follow, report back, administer.",
        ),
        (
            "operations",
            "Health, readiness, keys, metrics and this document.",
        ),
        (
            "realtime",
            "Record events over one WebSocket (each resource also has its own event stream).",
        ),
    ] {
        tags.push(json!({ "name": name, "description": description }));
    }
    Value::Array(tags)
}

fn resource_paths(name: &str, paths: &mut Map<String, Value>) {
    let etag = json!({ "ETag": header_ref("ETag") });
    let list_params: Vec<Value> = [
        "filter",
        "sort",
        "fields",
        "expand",
        "limit",
        "cursor",
        "page",
        "count",
        "If-None-Match",
    ]
    .iter()
    .map(|p| param_ref(p))
    .collect();
    paths.insert(
        format!("/api/v1/{name}"),
        json!({
            "get": {
                "operationId": format!("list_{name}"),
                "tags": [name],
                "summary": format!("List {name}"),
                "description": "Records the list rule lets the caller see, filtered, sorted and paged by keyset cursors.",
                "parameters": list_params,
                "responses": with_errors(Map::from_iter([
                    ("200".to_owned(), json!({
                        "description": "A page of records.",
                        "headers": etag.clone(),
                        "content": json_body(reference(&format!("{name}List")))
                    })),
                    ("304".to_owned(), json!({ "description": "Not modified (If-None-Match)." })),
                ]), &["400", "401", "403", "404"]),
            },
            "post": {
                "operationId": format!("create_{name}"),
                "tags": [name],
                "summary": format!("Create a {name} record"),
                "parameters": [param_ref("Idempotency-Key")],
                "requestBody": { "required": true, "content": json_body(reference(&format!("{name}Create"))) },
                "responses": with_errors(Map::from_iter([
                    ("201".to_owned(), json!({
                        "description": "Created.",
                        "headers": {
                            "ETag": header_ref("ETag"),
                            "Location": header_ref("Location"),
                            "Idempotent-Replayed": header_ref("Idempotent-Replayed")
                        },
                        "content": json_body(data(reference(name)))
                    })),
                ]), &["400", "401", "403", "404", "409", "413", "415", "422"]),
            }
        }),
    );
    let patch_body = reference(&format!("{name}Update"));
    paths.insert(
        format!("/api/v1/{name}/{{id}}"),
        json!({
            "parameters": [param_ref("id")],
            "get": {
                "operationId": format!("get_{name}"),
                "tags": [name],
                "summary": format!("Read a {name} record"),
                "parameters": [param_ref("If-None-Match")],
                "responses": with_errors(Map::from_iter([
                    ("200".to_owned(), json!({
                        "description": "The record.",
                        "headers": etag.clone(),
                        "content": json_body(data(reference(name)))
                    })),
                    ("304".to_owned(), json!({ "description": "Not modified (If-None-Match).", "headers": etag.clone() })),
                ]), &["400", "401", "403", "404"]),
            },
            "patch": {
                "operationId": format!("update_{name}"),
                "tags": [name],
                "summary": format!("Change a {name} record (JSON merge patch)"),
                "parameters": [param_ref("If-Match")],
                "requestBody": {
                    "required": true,
                    "content": {
                        "application/merge-patch+json": { "schema": patch_body.clone() },
                        "application/json": { "schema": patch_body }
                    }
                },
                "responses": with_errors(Map::from_iter([
                    ("200".to_owned(), json!({
                        "description": "The changed record.",
                        "headers": etag,
                        "content": json_body(data(reference(name)))
                    })),
                ]), &["400", "401", "403", "404", "409", "412", "413", "415"]),
            },
            "delete": {
                "operationId": format!("delete_{name}"),
                "tags": [name],
                "summary": format!("Delete a {name} record"),
                "parameters": [param_ref("If-Match")],
                "responses": with_errors(Map::from_iter([
                    ("204".to_owned(), json!({ "description": "Deleted." })),
                ]), &["400", "401", "403", "404", "409", "412", "422"]),
            }
        }),
    );
}

pub(crate) fn post(
    operation_id: &str,
    tag: &str,
    summary: &str,
    body: Option<Value>,
    success: (&str, Value),
    errors: &[&str],
) -> Value {
    let mut op = json!({
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "responses": with_errors(Map::from_iter([(success.0.to_owned(), success.1)]), errors),
    });
    if let Some(body) = body {
        op["requestBody"] = json!({ "required": true, "content": json_body(body) });
    }
    op
}

pub(crate) fn object(props: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": props, "required": required, "additionalProperties": false })
}

/// `/api/v1/auth/mfa/*`: TOTP and the sign-in's second step.
fn mfa_paths(paths: &mut Map<String, Value>) {
    let code = json!({ "type": "string", "description": "a 6-digit TOTP code, or a recovery code (xxxxx-xxxxx)" });
    let mut begin = post(
        "begin_totp",
        "auth",
        "Set up TOTP: a new secret and its otpauth:// URI, to confirm with a first code",
        None,
        (
            "200",
            ok(
                "The secret (base32) and the URI an authenticator app scans.",
                data(object(
                    json!({ "secret": { "type": "string" }, "uri": { "type": "string" } }),
                    &["secret", "uri"],
                )),
            ),
        ),
        &["401", "403", "409"],
    );
    begin.as_object_mut().map(|o| o.remove("requestBody"));
    let mut disable = post(
        "disable_totp",
        "auth",
        "Turn TOTP off, with a current code or the password",
        Some(object(
            json!({ "code": code.clone(), "password": { "type": "string" } }),
            &[],
        )),
        ("204", json!({ "description": "TOTP is off." })),
        &["400", "401", "403", "404", "413", "415"],
    );
    disable["operationId"] = json!("disable_totp");
    paths.insert(
        "/api/v1/auth/mfa/totp".into(),
        json!({ "post": begin, "delete": disable }),
    );
    paths.insert(
        "/api/v1/auth/mfa".into(),
        json!({ "get": {
            "operationId": "mfa_status", "tags": ["auth"], "summary": "The caller's second factors",
            "responses": with_errors(Map::from_iter([("200".to_owned(), ok("TOTP's state and the recovery codes left.",
                data(object(json!({
                    "totp": { "type": "string", "enum": ["off", "pending", "on"] },
                    "recoveryCodesLeft": { "type": "integer", "minimum": 0 }
                }), &["totp", "recoveryCodesLeft"]))))]), &["401", "403"])
        } }),
    );
    paths.insert(
        "/api/v1/auth/mfa/totp/confirm".into(),
        json!({ "post": post("confirm_totp", "auth", "Turn TOTP on with a first code; answers the ten recovery codes (shown once)",
            Some(object(json!({ "code": code.clone() }), &["code"])),
            ("200", ok("TOTP is on.", data(object(json!({ "recoveryCodes": {
                "type": "array", "items": { "type": "string" }, "minItems": 10, "maxItems": 10
            } }), &["recoveryCodes"])))),
            &["400", "401", "403", "404", "409", "413", "415"]) }),
    );
    paths.insert(
        "/api/v1/auth/mfa/verify".into(),
        json!({ "post": post("verify_mfa", "auth", "Finish a sign-in with a TOTP code or a recovery code",
            Some(object(json!({ "mfaToken": { "type": "string" }, "code": code }), &["mfaToken", "code"])),
            ("200", ok("Signed in: tokens, or a cookie session with its CSRF token.",
                json!({ "anyOf": [reference("TokenPair"), reference("CookieSession")] }))),
            &["400", "401", "413", "415"]) }),
    );
}

fn auth_paths(paths: &mut Map<String, Value>) {
    let users = ferrobase_schema::USERS;
    let body_errors = ["400", "401", "413", "415"];
    paths.insert(
        "/api/v1/auth/register".into(),
        json!({ "post": post("register", "auth", "Create an account and sign in",
            Some(reference("Registration")),
            ("201", ok("Signed in.", reference("TokenPair"))),
            &["400", "409", "413", "415"]) }),
    );
    paths.insert(
        "/api/v1/auth/login".into(),
        json!({ "post": post("login", "auth", "Sign in with email and password",
            Some(object(json!({
                "email": { "type": "string" },
                "password": { "type": "string" },
                "session": { "type": "string", "enum": ["cookie"], "description": "set a cookie session instead of returning tokens" }
            }), &["email", "password"])),
            ("200", ok("Signed in: tokens, or a cookie session with its CSRF token; or, with a second factor on, the token of the code step.",
                json!({ "anyOf": [reference("TokenPair"), reference("CookieSession"), reference("MfaRequired")] }))),
            &body_errors) }),
    );
    mfa_paths(paths);
    paths.insert(
        "/api/v1/auth/refresh".into(),
        json!({ "post": post("refresh", "auth", "Trade a refresh token for a new pair (the old one dies; reuse revokes the family)",
            Some(object(json!({ "refreshToken": { "type": "string" } }), &["refreshToken"])),
            ("200", ok("A new pair.", reference("TokenPair"))),
            &body_errors) }),
    );
    let mut logout = post(
        "logout",
        "auth",
        "End the presented refresh token's family and/or the cookie session",
        None,
        ("204", json!({ "description": "Signed out." })),
        &body_errors,
    );
    logout["requestBody"] = json!({
        "required": false,
        "content": json_body(object(json!({ "refreshToken": { "type": "string" } }), &[]))
    });
    paths.insert("/api/v1/auth/logout".into(), json!({ "post": logout }));
    let mut me = ok("The caller's user record.", data(reference(users)));
    me["headers"] = json!({ "X-CSRF-Token": {
        "description": "For a cookie session: its CSRF token again (for a page that lost it)",
        "schema": { "type": "string" }
    } });
    paths.insert(
        "/api/v1/auth/me".into(),
        json!({ "get": {
            "operationId": "me", "tags": ["auth"], "summary": "The caller",
            "responses": with_errors(Map::from_iter([("200".to_owned(), me)]), &["401", "403"])
        } }),
    );
    paths.insert(
        "/api/v1/auth/password".into(),
        json!({ "post": post("change_password", "auth", "Change the password (ends every session)",
            Some(object(json!({
                "currentPassword": { "type": "string" },
                "newPassword": { "type": "string", "minLength": 8, "maxLength": 1024 }
            }), &["currentPassword", "newPassword"])),
            ("204", json!({ "description": "Changed." })),
            &["400", "401", "403", "413", "415"]) }),
    );
    let accepted = json!({ "description": "Accepted: a mail is sent when the address has an account (the answer is the same either way)." });
    for (path, id, summary) in [
        (
            "/api/v1/auth/verify-email/request",
            "request_verification",
            "Mail a link that verifies the address",
        ),
        (
            "/api/v1/auth/password-reset/request",
            "request_password_reset",
            "Mail a link that resets the password",
        ),
    ] {
        let mut op = post(
            id,
            "auth",
            summary,
            Some(object(json!({ "email": { "type": "string" } }), &["email"])),
            ("202", accepted.clone()),
            &["400", "413", "415"],
        );
        op["security"] = json!([{}]);
        paths.insert(path.into(), json!({ "post": op }));
    }
    let mut verify = post(
        "confirm_verification",
        "auth",
        "Verify the address with the mailed token (once)",
        Some(object(json!({ "token": { "type": "string" } }), &["token"])),
        (
            "200",
            ok(
                "Verified.",
                json!({ "type": "object", "properties": { "data": { "type": "object" } } }),
            ),
        ),
        &["400", "413", "415"],
    );
    verify["security"] = json!([{}]);
    paths.insert(
        "/api/v1/auth/verify-email/confirm".into(),
        json!({ "post": verify }),
    );
    let mut reset = post(
        "confirm_password_reset",
        "auth",
        "Set a new password with the mailed token (once; ends every session)",
        Some(object(
            json!({
                "token": { "type": "string" },
                "password": { "type": "string", "minLength": 8, "maxLength": 1024 }
            }),
            &["token", "password"],
        )),
        (
            "200",
            ok(
                "Reset.",
                json!({ "type": "object", "properties": { "data": { "type": "object" } } }),
            ),
        ),
        &["400", "413", "415"],
    );
    reset["security"] = json!([{}]);
    paths.insert(
        "/api/v1/auth/password-reset/confirm".into(),
        json!({ "post": reset }),
    );
    paths.insert(
        "/api/v1/auth/api-keys".into(),
        json!({
            "get": {
                "operationId": "list_api_keys", "tags": ["auth"], "summary": "The caller's API keys",
                "responses": with_errors(Map::from_iter([("200".to_owned(),
                    ok("The keys, without their secrets.", data(json!({ "type": "array", "items": reference("ApiKey") }))))]), &["401", "403"])
            },
            "post": post("create_api_key", "auth", "Create an API key (its secret is shown once)",
                Some(object(json!({
                    "name": { "type": "string", "minLength": 1, "maxLength": 100 },
                    "scopes": { "type": "array", "items": { "type": "string" }, "description": "`posts:read`, `posts:write` or `*`" },
                    "expiresAt": { "type": "string", "format": "date-time" },
                    "expiresIn": { "type": "string", "description": "a duration like 30d" }
                }), &["name", "scopes"])),
                ("201", ok("The key, with its secret.", data(reference("ApiKey")))),
                &["400", "401", "403", "413", "415"])
        }),
    );
    paths.insert(
        "/api/v1/auth/api-keys/{id}".into(),
        json!({ "delete": {
            "operationId": "revoke_api_key", "tags": ["auth"], "summary": "Revoke an API key",
            "parameters": [param_ref("id")],
            "responses": with_errors(Map::from_iter([("204".to_owned(), json!({ "description": "Revoked." }))]), &["400", "401", "403", "404"])
        } }),
    );
}

fn operations_paths(paths: &mut Map<String, Value>, options: &Options) {
    let plain = |id: &str, summary: &str, ok_desc: &str, schema: Value| {
        let mut responses = Map::new();
        responses.insert("200".into(), ok(ok_desc, schema));
        common(&mut responses);
        json!({ "get": { "operationId": id, "tags": ["operations"], "summary": summary, "security": [{}], "responses": responses } })
    };
    paths.insert(
        "/health".into(),
        plain(
            "health",
            "Liveness",
            "The process serves.",
            object(json!({ "status": { "type": "string" } }), &["status"]),
        ),
    );
    paths.insert(
        "/ready".into(),
        plain(
            "ready",
            "Readiness: the database (and Redis) answer, shutdown has not begun",
            "Ready.",
            object(
                json!({ "status": { "type": "string" }, "checks": { "type": "object", "additionalProperties": { "type": "string" } } }),
                &["status", "checks"],
            ),
        ),
    );
    paths.insert(
        "/.well-known/jwks.json".into(),
        plain(
            "jwks",
            "Public keys of the access tokens",
            "A JSON Web Key Set.",
            object(
                json!({ "keys": { "type": "array", "items": { "type": "object" } } }),
                &["keys"],
            ),
        ),
    );
    paths.insert(
        "/api/v1/openapi.json".into(),
        plain(
            "openapi",
            "This document",
            "The OpenAPI 3.1 document.",
            json!({ "type": "object" }),
        ),
    );
    let mut docs = Map::new();
    docs.insert(
        "200".into(),
        json!({ "description": "The API reference page.", "content": { "text/html": { "schema": { "type": "string" } } } }),
    );
    common(&mut docs);
    paths.insert(
        "/docs".into(),
        json!({ "get": { "operationId": "docs", "tags": ["operations"], "summary": "API reference page (works offline)", "security": [{}], "responses": docs } }),
    );
    if options.metrics {
        let mut responses = Map::new();
        responses.insert(
            "200".into(),
            json!({ "description": "Prometheus metrics.", "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } }),
        );
        responses.insert("401".into(), response_ref("Unauthorized"));
        common(&mut responses);
        paths.insert(
            "/metrics".into(),
            json!({ "get": { "operationId": "metrics", "tags": ["operations"], "summary": "Prometheus metrics (protected by [metrics] token when set)", "responses": responses } }),
        );
    }
}

/// Every path.
pub(crate) fn paths(schema: &Schema, options: &Options) -> Value {
    let mut paths = Map::new();
    crate::jobs::paths(&mut paths);
    for resource in &schema.resources {
        resource_paths(&resource.name, &mut paths);
        crate::realtime::resource_events(&resource.name, &mut paths);
    }
    crate::realtime::websocket(&mut paths);
    paths.insert(
        "/api/v1/batch".into(),
        json!({ "post": {
            "operationId": "batch",
            "tags": ["batch"],
            "summary": "Up to 100 writes in one transaction, all or nothing",
            "description": "Each operation is judged by its own resource's rules; when one fails nothing is written and `details.operation` names it.",
            "parameters": [param_ref("Idempotency-Key")],
            "requestBody": { "required": true, "content": json_body(object(json!({
                "operations": { "type": "array", "minItems": 1, "maxItems": 100, "items": reference("BatchOperation") }
            }), &["operations"])) },
            "responses": with_errors(Map::from_iter([("200".to_owned(), ok("Results in order.", data(json!({
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "status": { "type": "integer", "enum": [200, 201, 204] },
                        "data": { "type": "object" }
                    },
                    "required": ["status"],
                    "additionalProperties": false
                }
            }))))]), &["400", "401", "403", "404", "409", "412", "413", "415", "422"]),
        } }),
    );
    auth_paths(&mut paths);
    crate::signin::oauth_paths(&mut paths, &options.oauth_providers);
    if options.passkeys {
        crate::signin::passkey_paths(&mut paths);
    }
    operations_paths(&mut paths, options);
    Value::Object(paths)
}
