//! The OpenAPI 3.1 document of a ferrobase schema (SPEC §5, §6): per resource the read,
//! create and update schemas, the list, every response including the one error shape,
//! and the static endpoints. It is built from the same [`Field`] declarations the
//! request validation uses, so the two cannot drift.
#![forbid(unsafe_code)]

mod jobs;
mod paths;
mod realtime;
mod schemas;
mod signin;

use ferrobase_schema::Schema;
use serde_json::{Value, json};

/// What the document depends on besides the schema.
#[derive(Debug, Clone)]
pub struct Options {
    /// Name of the session cookie.
    pub cookie_name: String,
    /// Whether `/metrics` is served on the API's port.
    pub metrics: bool,
    /// The version reported in `info`.
    pub version: String,
    /// The configured OAuth providers' names.
    pub oauth_providers: Vec<String>,
    /// Whether passkeys are on.
    pub passkeys: bool,
}

/// The stable error codes of SPEC §5.
pub const ERROR_CODES: &[&str] = &[
    "BAD_REQUEST",
    "VALIDATION_FAILED",
    "INVALID_FILTER",
    "UNAUTHORIZED",
    "INVALID_CREDENTIALS",
    "TOKEN_EXPIRED",
    "INVALID_TOKEN",
    "EMAIL_NOT_VERIFIED",
    "FORBIDDEN",
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "CONFLICT",
    "PRECONDITION_FAILED",
    "PAYLOAD_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
    "UNPROCESSABLE",
    "IDEMPOTENCY_KEY_REUSED",
    "RATE_LIMITED",
    "INTERNAL",
    "UNAVAILABLE",
];

/// The whole document.
pub fn document(schema: &Schema, options: &Options) -> Value {
    let mut components = schemas::components(schema);
    components["responses"] = schemas::responses();
    components["headers"] = schemas::headers();
    components["parameters"] = paths::parameters();
    jobs::components(&mut components);
    components["securitySchemes"] = json!({
        "bearerAuth": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "An access token from /api/v1/auth/login, register or refresh (EdDSA JWT, 15 minutes)."
        },
        "apiKeyAuth": {
            "type": "http", "scheme": "bearer",
            "description": "An API key (`fbk_...`) from /api/v1/auth/api-keys, limited to its scopes."
        },
        "jobToken": {
            "type": "apiKey", "in": "header", "name": "ferrobase-job-token",
            "description": "The token a job's delivery carried (`ferrobase-job-token`); valid while its attempt holds the job."
        },
        "cookieAuth": {
            "type": "apiKey", "in": "cookie", "name": options.cookie_name,
            "description": "The session cookie set by login with `\"session\": \"cookie\"`; unsafe methods also need the X-CSRF-Token header."
        }
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "ferrobase API",
            "version": options.version,
            "description": "Generated from schema.toml. Every error has the shape of `Error`; rules decide per record who may read and write (a record the caller may not see is 404)."
        },
        "servers": [{ "url": "/" }],
        "security": [{}, { "bearerAuth": [] }, { "apiKeyAuth": [] }, { "cookieAuth": [] }],
        "tags": paths::tags(schema),
        "paths": paths::paths(schema, options),
        "components": components,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blog() -> Value {
        let schema = ferrobase_schema::schema_from_str(
            "schema.toml",
            ferrobase_schema::templates::BLOG_SCHEMA,
        )
        .expect("blog");
        document(
            &schema,
            &Options {
                cookie_name: "__Host-ferrobase_session".into(),
                metrics: true,
                version: "snapshot".into(),
                oauth_providers: vec!["google".into(), "corp".into()],
                passkeys: true,
            },
        )
    }

    #[test]
    fn the_blog_document() {
        // Sorted keys: serde_json's map order depends on which crates of the build
        // turn on `preserve_order`, and the snapshot must not.
        insta::with_settings!({ sort_maps => true }, {
            insta::assert_json_snapshot!("blog", blog());
        });
    }

    #[test]
    fn every_ref_resolves() {
        let doc = blog();
        let mut refs = Vec::new();
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r.clone());
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local ref");
            assert!(doc.pointer(pointer).is_some(), "{r} resolves");
        }
    }
}
