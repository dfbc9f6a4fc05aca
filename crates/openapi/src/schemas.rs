//! Component schemas: one read, create, update and list schema per resource, the error
//! shape, the identity payloads, and the shared responses and headers.

use ferrobase_schema::{DefaultValue, Field, FieldType, Resource, Schema};
use serde_json::{Map, Value, json};

use crate::ERROR_CODES;

/// Largest integer JSON carries exactly; the store refuses larger ones.
const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// The JSON schema of one value of `field` (not null).
pub(crate) fn value(field: &Field) -> Value {
    let mut s = Map::new();
    let mut put = |k: &str, v: Value| {
        s.insert(k.to_owned(), v);
    };
    match &field.ty {
        FieldType::String | FieldType::Text => put("type", json!("string")),
        FieldType::Email => {
            put("type", json!("string"));
            put("format", json!("email"));
        }
        FieldType::Url => {
            put("type", json!("string"));
            put("format", json!("uri"));
        }
        FieldType::Uuid => {
            put("type", json!("string"));
            put("format", json!("uuid"));
        }
        FieldType::Datetime => {
            put("type", json!("string"));
            put("format", json!("date-time"));
        }
        FieldType::Date => {
            put("type", json!("string"));
            put("format", json!("date"));
        }
        FieldType::Integer => {
            put("type", json!("integer"));
            put("format", json!("int64"));
            put(
                "minimum",
                json!(field.min.map_or(-MAX_SAFE_INTEGER, |m| m.ceil() as i64)),
            );
            put(
                "maximum",
                json!(field.max.map_or(MAX_SAFE_INTEGER, |m| m.floor() as i64)),
            );
        }
        FieldType::Number => {
            put("type", json!("number"));
            if let Some(m) = field.min {
                put("minimum", json!(m));
            }
            if let Some(m) = field.max {
                put("maximum", json!(m));
            }
        }
        FieldType::Boolean => put("type", json!("boolean")),
        FieldType::Enum(values) => {
            put("type", json!("string"));
            put("enum", json!(values));
        }
        FieldType::Json => {}
        FieldType::Relation(rel) if rel.many => {
            put("type", json!("array"));
            put("items", json!({ "type": "string", "format": "uuid" }));
            put("uniqueItems", json!(true));
            if let Some(n) = field.min_length {
                put("minItems", json!(n));
            }
            if let Some(n) = field.max_length {
                put("maxItems", json!(n));
            }
            put(
                "description",
                json!(format!("ids of {} records", rel.resource)),
            );
        }
        FieldType::Relation(rel) => {
            put("type", json!("string"));
            put("format", json!("uuid"));
            put(
                "description",
                json!(format!("id of a {} record", rel.resource)),
            );
        }
    }
    if field.ty.is_textual() {
        if let Some(n) = field.min_length {
            put("minLength", json!(n));
        }
        if let Some(n) = field.max_length {
            put("maxLength", json!(n));
        }
        if let Some(p) = &field.pattern {
            put("pattern", json!(p.source));
        }
    }
    Value::Object(s)
}

/// `value` that may also be null.
fn nullable(schema: Value) -> Value {
    let Value::Object(mut map) = schema else {
        return schema;
    };
    match map.get("type").cloned() {
        // `json` fields take anything, null included.
        None => Value::Object(map),
        Some(Value::String(t)) => {
            map.insert("type".into(), json!([t, "null"]));
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.push(Value::Null);
            }
            Value::Object(map)
        }
        Some(_) => Value::Object(map),
    }
}

/// Whether a client may send the field (password hashes are read-only too).
fn writable(field: &Field) -> bool {
    !field.read_only
}

fn has_default(field: &Field) -> bool {
    field.default.is_some()
}

fn default_note(field: &Field) -> Option<String> {
    match &field.default {
        Some(DefaultValue::AuthId) => Some("defaults to the caller's user id".into()),
        Some(DefaultValue::Now) => Some("defaults to the current time".into()),
        _ => None,
    }
}

/// The record as clients read it. No property is required: `fields=` projections and
/// field read rules leave properties out.
fn read_schema(resource: &Resource) -> Value {
    let mut props = Map::new();
    props.insert(
        "id".into(),
        json!({ "type": "string", "format": "uuid", "readOnly": true }),
    );
    for field in resource.fields.iter().filter(|f| !f.hidden) {
        let mut v = if field.required || field.is_many() {
            value(field)
        } else {
            nullable(value(field))
        };
        if field.read_only
            && let Value::Object(m) = &mut v
        {
            m.insert("readOnly".into(), json!(true));
        }
        props.insert(field.name.clone(), v);
    }
    props.insert(
        "version".into(),
        json!({ "type": "integer", "minimum": 1, "readOnly": true, "description": "bumped on every write; the record's ETag" }),
    );
    if resource.timestamps {
        for name in ["created_at", "updated_at"] {
            props.insert(
                name.into(),
                json!({ "type": "string", "format": "date-time", "readOnly": true }),
            );
        }
    }
    props.insert(
        "expand".into(),
        json!({
            "type": "object",
            "description": "related records requested with `expand=`, by relation field",
            "additionalProperties": true
        }),
    );
    json!({
        "type": "object",
        "description": format!("A {} record.", resource.name),
        "properties": props,
        "additionalProperties": false,
    })
}

fn create_schema(resource: &Resource) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for field in resource.fields.iter().filter(|f| writable(f)) {
        let mut v = if field.required {
            value(field)
        } else {
            nullable(value(field))
        };
        if let (Some(note), Value::Object(m)) = (default_note(field), &mut v) {
            m.insert("description".into(), json!(note));
        }
        if let (Some(DefaultValue::Value(d)), Value::Object(m)) = (&field.default, &mut v) {
            m.insert("default".into(), d.clone());
        }
        if field.required && !has_default(field) {
            required.push(field.name.clone());
        }
        props.insert(field.name.clone(), v);
    }
    json!({
        "type": "object",
        "description": format!("A new {} record. Unknown properties are refused.", resource.name),
        "properties": props,
        "required": required,
        "additionalProperties": false,
    })
}

fn update_schema(resource: &Resource) -> Value {
    let mut props = Map::new();
    for field in resource.fields.iter().filter(|f| writable(f)) {
        let v = if field.required {
            value(field)
        } else {
            nullable(value(field))
        };
        props.insert(field.name.clone(), v);
    }
    json!({
        "type": "object",
        "description": format!("A JSON merge patch (RFC 7386) of a {} record: properties left out stay as they are, null clears.", resource.name),
        "properties": props,
        "additionalProperties": false,
    })
}

fn list_schema(resource: &Resource) -> Value {
    json!({
        "type": "object",
        "properties": {
            "data": { "type": "array", "items": reference(&resource.name) },
            "meta": {
                "type": "object",
                "properties": {
                    "limit": { "type": "integer", "minimum": 1, "maximum": 100 },
                    "page": { "type": "integer", "minimum": 1 },
                    "nextCursor": { "type": ["string", "null"], "description": "pass as `cursor` for the next page" },
                    "total": { "type": "integer", "minimum": 0, "description": "with `count=true`" }
                },
                "required": ["limit", "nextCursor"],
                "additionalProperties": false
            },
            "links": {
                "type": "object",
                "properties": {
                    "self": { "type": "string" },
                    "next": { "type": ["string", "null"] }
                },
                "required": ["self", "next"],
                "additionalProperties": false
            }
        },
        "required": ["data", "meta", "links"],
        "additionalProperties": false,
    })
}

/// `{"$ref": "#/components/schemas/NAME"}`.
pub(crate) fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// `{"data": <schema>}`.
pub(crate) fn data(schema: Value) -> Value {
    json!({
        "type": "object",
        "properties": { "data": schema },
        "required": ["data"],
        "additionalProperties": false,
    })
}

/// Every component schema.
pub(crate) fn components(schema: &Schema) -> Value {
    let mut schemas = Map::new();
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": { "type": "string", "enum": ERROR_CODES },
                        "message": { "type": "string" },
                        "details": {
                            "type": "object",
                            "description": "`fields`: messages per invalid field or parameter; `operation`: the failed operation of a batch",
                            "properties": {
                                "fields": {
                                    "type": "object",
                                    "additionalProperties": { "type": "array", "items": { "type": "string" } }
                                },
                                "operation": { "type": "integer", "minimum": 0 }
                            }
                        },
                        "requestId": { "type": "string" }
                    },
                    "required": ["code", "message", "requestId"],
                    "additionalProperties": false
                }
            },
            "required": ["error"],
            "additionalProperties": false,
        }),
    );
    for resource in &schema.resources {
        let name = &resource.name;
        schemas.insert(name.clone(), read_schema(resource));
        schemas.insert(format!("{name}Create"), create_schema(resource));
        schemas.insert(format!("{name}Update"), update_schema(resource));
        schemas.insert(format!("{name}List"), list_schema(resource));
    }
    let users = schema.resource(ferrobase_schema::USERS);
    let mut register = users.map_or_else(|| json!({"type": "object"}), create_schema);
    register["properties"]["password"] =
        json!({ "type": "string", "minLength": 8, "maxLength": 1024, "writeOnly": true });
    if let Some(required) = register["required"].as_array_mut() {
        required.push(json!("password"));
    }
    register["description"] = json!("A new account: email, password and profile fields.");
    schemas.insert("Registration".into(), register);
    schemas.insert(
        "TokenPair".into(),
        data(json!({
            "type": "object",
            "properties": {
                "user": reference(ferrobase_schema::USERS),
                "accessToken": { "type": "string" },
                "refreshToken": { "type": "string" },
                "expiresIn": { "type": "integer", "description": "seconds until the access token expires" }
            },
            "required": ["user", "accessToken", "refreshToken", "expiresIn"],
            "additionalProperties": false
        })),
    );
    schemas.insert(
        "MfaRequired".into(),
        data(json!({
            "type": "object",
            "description": "The password was right and a second factor is on: finish at POST /api/v1/auth/mfa/verify within five minutes",
            "properties": {
                "mfaRequired": { "type": "boolean", "enum": [true] },
                "mfaToken": { "type": "string" }
            },
            "required": ["mfaRequired", "mfaToken"],
            "additionalProperties": false
        })),
    );
    schemas.insert(
        "CookieSession".into(),
        data(json!({
            "type": "object",
            "properties": {
                "user": reference(ferrobase_schema::USERS),
                "csrfToken": { "type": "string", "description": "send as X-CSRF-Token on unsafe requests" }
            },
            "required": ["user", "csrfToken"],
            "additionalProperties": false
        })),
    );
    schemas.insert(
        "ApiKey".into(),
        json!({
            "type": "object",
            "properties": {
                "id": { "type": "string", "format": "uuid" },
                "name": { "type": "string" },
                "scopes": { "type": "array", "items": { "type": "string" } },
                "createdAt": { "type": "string", "format": "date-time" },
                "expiresAt": { "type": ["string", "null"], "format": "date-time" },
                "lastUsedAt": { "type": ["string", "null"], "format": "date-time" },
                "revokedAt": { "type": ["string", "null"], "format": "date-time" },
                "key": { "type": "string", "description": "the secret, shown once when created" }
            },
            "required": ["id", "name", "scopes", "createdAt"],
            "additionalProperties": false
        }),
    );
    schemas.insert(
        "BatchOperation".into(),
        json!({
            "type": "object",
            "properties": {
                "method": { "type": "string", "enum": ["POST", "PATCH", "DELETE"] },
                "path": { "type": "string", "description": "RESOURCE or RESOURCE/ID, optionally starting with /api/v1/" },
                "body": { "type": "object", "description": "the record (POST) or merge patch (PATCH)" },
                "ifMatch": { "type": "string", "description": "an ETag, as in If-Match" }
            },
            "required": ["method", "path"],
            "additionalProperties": false
        }),
    );
    Value::Object(std::iter::once(("schemas".to_owned(), Value::Object(schemas))).collect())
}

/// The shared error responses.
pub(crate) fn responses() -> Value {
    let error = |description: &str| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": reference("Error") } }
        })
    };
    let mut map = Map::new();
    for (name, description) in [
        (
            "BadRequest",
            "The request is malformed or invalid (VALIDATION_FAILED lists each field).",
        ),
        (
            "Unauthorized",
            "No credentials, or credentials that are not accepted.",
        ),
        (
            "Forbidden",
            "The caller is known, but the rules (or an API key's scopes) refuse this.",
        ),
        (
            "NotFound",
            "No such resource or route, or a record the caller may not see.",
        ),
        (
            "MethodNotAllowed",
            "The path exists but not with this method.",
        ),
        (
            "Conflict",
            "A unique value is taken, the record is still referenced, or the same Idempotency-Key is in flight.",
        ),
        (
            "PreconditionFailed",
            "If-Match names a version that is no longer current.",
        ),
        (
            "PayloadTooLarge",
            "The body is larger than the server accepts.",
        ),
        ("UnsupportedMediaType", "The body is not JSON."),
        (
            "Unprocessable",
            "The request is well-formed but cannot be carried out (IDEMPOTENCY_KEY_REUSED, UNPROCESSABLE).",
        ),
        (
            "Internal",
            "An internal error; details are in the server log under the request id.",
        ),
        (
            "Unavailable",
            "Not ready, shutting down, the database is unavailable, or the request took too long.",
        ),
    ] {
        map.insert(name.into(), error(description));
    }
    map.insert(
        "RateLimited".into(),
        json!({
            "description": "Too many requests: the client's quota for this route class is spent.",
            "headers": {
                "Retry-After": { "$ref": "#/components/headers/Retry-After" },
                "RateLimit-Limit": { "$ref": "#/components/headers/RateLimit-Limit" },
                "RateLimit-Remaining": { "$ref": "#/components/headers/RateLimit-Remaining" },
                "RateLimit-Reset": { "$ref": "#/components/headers/RateLimit-Reset" }
            },
            "content": { "application/json": { "schema": reference("Error") } }
        }),
    );
    Value::Object(map)
}

/// The shared response headers.
pub(crate) fn headers() -> Value {
    json!({
        "ETag": { "description": "the record's version (a strong tag), or a hash of a list page (weak)", "schema": { "type": "string" } },
        "Location": { "description": "the new record's URL", "schema": { "type": "string" } },
        "Retry-After": { "description": "seconds to wait", "schema": { "type": "integer", "minimum": 1 } },
        "RateLimit-Limit": { "description": "requests allowed per window", "schema": { "type": "integer" } },
        "RateLimit-Remaining": { "description": "requests left in the window", "schema": { "type": "integer" } },
        "RateLimit-Reset": { "description": "seconds until the quota is whole again", "schema": { "type": "integer" } },
        "Idempotent-Replayed": { "description": "`true` when the answer is the stored one of an earlier request with the same Idempotency-Key", "schema": { "type": "string" } }
    })
}
