//! `/api/v1/auth/oauth/*`, `/identities` and `/passkeys/*`: sign-in beyond passwords
//! (SPEC §6). OAuth paths appear when providers are configured, passkey paths when
//! passkeys are on.

use serde_json::{Map, Value, json};

use crate::paths::{object, ok, post, with_errors};
use crate::schemas::{data, reference};

fn redirect(description: &str) -> Value {
    json!({
        "description": description,
        "headers": { "Location": { "schema": { "type": "string", "format": "uri" } } }
    })
}

fn bad_gateway() -> Value {
    json!({ "description": "The provider cannot be reached.", "content": { "application/json": { "schema": reference("Error") } } })
}

fn signed_in_or_second_step() -> Value {
    ok(
        "Signed in: tokens, or a cookie session with its CSRF token; or, with TOTP on, the token of the code step.",
        json!({ "anyOf": [reference("TokenPair"), reference("CookieSession"), reference("MfaRequired")] }),
    )
}

/// The OAuth paths, for the configured `providers`.
pub(crate) fn oauth_paths(paths: &mut Map<String, Value>, providers: &[String]) {
    if providers.is_empty() {
        return;
    }
    let provider = json!({
        "name": "provider", "in": "path", "required": true,
        "schema": { "type": "string", "enum": providers }
    });
    let mut start = Map::new();
    start.insert("302".into(), redirect("To the provider's sign-in page (PKCE S256, a signed single-use state, a nonce); sets the cookie that binds the sign-in to this browser."));
    start.insert("502".into(), bad_gateway());
    paths.insert(
        "/api/v1/auth/oauth/{provider}".into(),
        json!({ "get": {
            "operationId": "oauth_start", "tags": ["auth"],
            "summary": "Sign in with a provider: redirects the browser to it",
            "parameters": [provider.clone(), {
                "name": "redirect_to", "in": "query", "required": true,
                "description": "where the browser returns with `?code=` (or `?error=`); an exact URL or an origin of [auth] redirect_allowlist",
                "schema": { "type": "string", "format": "uri" }
            }],
            "responses": with_errors(start, &["400", "404"]),
        } }),
    );
    let callback = |method: &str| {
        let mut responses = Map::new();
        responses.insert("303".into(), redirect("Back to `redirect_to`, with `code` (one use, a minute) or `error` and `error_description`."));
        let mut op = json!({
            "operationId": format!("oauth_callback_{method}"), "tags": ["auth"],
            "summary": "Where the provider returns the browser (not called by clients)",
            "parameters": [provider.clone()],
            "responses": with_errors(responses, &["400", "404"]),
        });
        if method == "get" {
            op["parameters"] = json!([provider.clone(),
                { "name": "state", "in": "query", "schema": { "type": "string" } },
                { "name": "code", "in": "query", "schema": { "type": "string" } },
                { "name": "error", "in": "query", "schema": { "type": "string" } }]);
        } else {
            op["requestBody"] = json!({ "content": { "application/x-www-form-urlencoded": { "schema": {
                "type": "object", "properties": {
                    "state": { "type": "string" }, "code": { "type": "string" }, "error": { "type": "string" }
                } } } } });
        }
        op
    };
    paths.insert(
        "/api/v1/auth/oauth/{provider}/callback".into(),
        json!({ "get": callback("get"), "post": callback("post") }),
    );
    paths.insert(
        "/api/v1/auth/oauth/exchange".into(),
        json!({ "post": post("oauth_exchange", "auth", "Trade the one-time code of a provider sign-in for tokens or a cookie session",
            Some(object(json!({
                "code": { "type": "string" },
                "session": { "type": "string", "enum": ["cookie", "token"] }
            }), &["code"])),
            ("200", signed_in_or_second_step()),
            &["400", "401", "413", "415"]) }),
    );
    paths.insert(
        "/api/v1/auth/identities".into(),
        json!({ "get": {
            "operationId": "list_identities", "tags": ["auth"], "summary": "The caller's linked providers",
            "responses": with_errors(Map::from_iter([("200".to_owned(), ok("Linked providers.",
                data(json!({ "type": "array", "items": object(json!({
                    "provider": { "type": "string" },
                    "email": { "type": ["string", "null"] },
                    "createdAt": { "type": "string", "format": "date-time" }
                }), &["provider", "email", "createdAt"]) }))))]), &["401", "403"])
        } }),
    );
    paths.insert(
        "/api/v1/auth/identities/{provider}".into(),
        json!({ "delete": {
            "operationId": "unlink_identity", "tags": ["auth"],
            "summary": "Unlink a provider (never the last way to sign in: 409)",
            "parameters": [{ "name": "provider", "in": "path", "required": true, "schema": { "type": "string" } }],
            "responses": with_errors(Map::from_iter([("204".to_owned(), json!({ "description": "Unlinked." }))]), &["401", "403", "404", "409"])
        } }),
    );
}

/// The passkey paths.
pub(crate) fn passkey_paths(paths: &mut Map<String, Value>) {
    let options = |what: &str| {
        ok(
            what,
            data(json!({
                "type": "object",
                "properties": {
                    "ceremonyId": { "type": "string" },
                    "publicKey": { "type": "object", "description": "the WebAuthn options for navigator.credentials" },
                    "mediation": { "type": "string" }
                },
                "required": ["ceremonyId", "publicKey"]
            })),
        )
    };
    let passkey = object(
        json!({
            "id": { "type": "string", "description": "the credential id (base64url)" },
            "name": { "type": "string" },
            "createdAt": { "type": "string", "format": "date-time" },
            "lastUsedAt": { "type": ["string", "null"], "format": "date-time" }
        }),
        &["id", "name", "createdAt", "lastUsedAt"],
    );
    let credential = json!({ "type": "object", "description": "the credential's JSON, as PublicKeyCredential.toJSON() gives it" });
    let mut register = post(
        "passkey_register_start",
        "auth",
        "Begin registering a passkey for the caller",
        Some(object(
            json!({ "name": { "type": "string", "minLength": 1, "maxLength": 100 } }),
            &[],
        )),
        (
            "200",
            options(
                "The creation options (user verification and a discoverable credential required).",
            ),
        ),
        &["400", "401", "403", "404", "413", "415"],
    );
    register["requestBody"]["required"] = json!(false);
    paths.insert(
        "/api/v1/auth/passkeys/register/start".into(),
        json!({ "post": register }),
    );
    paths.insert(
        "/api/v1/auth/passkeys/register/finish".into(),
        json!({ "post": post("passkey_register_finish", "auth", "Finish registering: the authenticator's credential",
            Some(object(json!({ "ceremonyId": { "type": "string" }, "credential": credential.clone() }), &["ceremonyId", "credential"])),
            ("201", ok("The passkey.", data(passkey.clone()))),
            &["400", "401", "403", "404", "409", "413", "415"]) }),
    );
    let mut login = post(
        "passkey_login_start",
        "auth",
        "Begin a sign-in by passkey: alone (the authenticator names the account), or with an mfaToken as the second factor",
        Some(object(json!({ "mfaToken": { "type": "string" } }), &[])),
        (
            "200",
            options("The request options (user verification required)."),
        ),
        &["400", "401", "404", "409", "413", "415"],
    );
    login["requestBody"]["required"] = json!(false);
    paths.insert(
        "/api/v1/auth/passkeys/login/start".into(),
        json!({ "post": login }),
    );
    paths.insert(
        "/api/v1/auth/passkeys/login/finish".into(),
        json!({ "post": post("passkey_login_finish", "auth", "Finish a sign-in by passkey",
            Some(object(json!({
                "ceremonyId": { "type": "string" },
                "credential": credential,
                "session": { "type": "string", "enum": ["cookie", "token"] }
            }), &["ceremonyId", "credential"])),
            ("200", ok("Signed in: tokens, or a cookie session with its CSRF token.",
                json!({ "anyOf": [reference("TokenPair"), reference("CookieSession")] }))),
            &["400", "401", "404", "413", "415"]) }),
    );
    paths.insert(
        "/api/v1/auth/passkeys".into(),
        json!({ "get": {
            "operationId": "list_passkeys", "tags": ["auth"], "summary": "The caller's passkeys",
            "responses": with_errors(Map::from_iter([("200".to_owned(), ok("Passkeys.",
                data(json!({ "type": "array", "items": passkey }))))]), &["401", "403"])
        } }),
    );
    paths.insert(
        "/api/v1/auth/passkeys/{id}".into(),
        json!({ "delete": {
            "operationId": "delete_passkey", "tags": ["auth"],
            "summary": "Remove a passkey (never the last way to sign in: 409)",
            "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
            "responses": with_errors(Map::from_iter([("204".to_owned(), json!({ "description": "Removed." }))]), &["401", "403", "404", "409"])
        } }),
    );
}
