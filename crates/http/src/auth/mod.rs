//! `/api/v1/auth/*`: register, login, refresh, logout, me, password, API keys; and the
//! JWKS document. One file per concern.

pub(crate) mod api_keys;
pub(crate) mod email;
pub(crate) mod mfa;
pub(crate) mod oauth;
pub(crate) mod passkeys;
pub(crate) mod session;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrobase_auth::JwtKeys;
use ferrobase_auth::secrets::{random_token, token_hash};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::{Record, RefreshGrant};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::identity::{Caller, Identity, Via};
use crate::records::{RecordJson, json_response};
use crate::state::AppState;

/// A string member of a JSON body, or a validation error naming it.
pub(crate) fn required_string(
    body: &mut Map<String, Value>,
    key: &str,
) -> Result<String, ApiError> {
    match body.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::validation(
            [(key.to_owned(), vec!["must be a string".to_owned()])].into(),
        )),
        None => Err(ApiError::validation(
            [(key.to_owned(), vec!["is required".to_owned()])].into(),
        )),
    }
}

/// 429 `RATE_LIMITED` with `Retry-After`.
pub(crate) fn rate_limited(retry_after: i64) -> Response {
    let mut res = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        "too many attempts; try again later",
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after.max(1).to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

/// The stored user record `id` (401 once it is gone: its credentials are void).
pub(crate) async fn user_record(state: &AppState, id: &str) -> Result<Record, ApiError> {
    let (res, _) = state.users();
    state
        .store
        .records()
        .get(res, id.to_owned(), None)
        .await?
        .ok_or_else(ApiError::unauthorized)
}

/// A text field of a stored user record (`email`, `password_hash`), by name.
pub(crate) fn user_text<'r>(state: &AppState, record: &'r Record, field: &str) -> Option<&'r str> {
    let (_, users) = state.users();
    users
        .fields
        .iter()
        .position(|f| f.name == field)
        .and_then(|i| record.values[i].as_str())
}

/// A user record as its owner sees it.
pub(crate) fn user_json(state: &AppState, record: &Record, role: &str) -> Result<Value, ApiError> {
    let (res, users) = state.users();
    let me = Identity(Some(Caller {
        id: record.id.clone(),
        role: role.to_owned(),
        user: None,
        via: Via::Bearer,
    }));
    let mask = state.records.readable(res, record, &me);
    let json = RecordJson {
        readable: Some(&mask),
        ..RecordJson::new(users, record)
    };
    serde_json::to_value(&json).map_err(ApiError::internal)
}

/// The role stored in a user record.
pub(crate) fn role_of(state: &AppState, record: &Record) -> String {
    let (_, users) = state.users();
    users
        .fields
        .iter()
        .position(|f| f.name == "role")
        .and_then(|i| record.values[i].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Stores a single-use ticket of `kind` that expires in `ttl_secs` (by the server's clock).
pub(crate) async fn put_ticket(
    state: &AppState,
    kind: &str,
    id: String,
    user_id: Option<String>,
    payload: String,
    ttl_secs: i64,
) -> Result<(), ApiError> {
    let now = state.clock.now();
    state
        .store
        .sessions()
        .put_ticket(
            ferrobase_store::Ticket {
                kind: kind.into(),
                id,
                user_id,
                payload,
                expires_at: format_datetime(now + time::Duration::seconds(ttl_secs)),
            },
            format_datetime(now),
        )
        .await?;
    Ok(())
}

/// 409 unless the user keeps another way to sign in after losing one.
pub(crate) async fn keep_a_way_in(
    state: &AppState,
    user_id: &str,
    message: &str,
) -> Result<(), ApiError> {
    if oauth::sign_in_methods(state, user_id).await? <= 1 {
        return Err(ApiError::new(StatusCode::CONFLICT, "CONFLICT", message));
    }
    Ok(())
}

/// A JSON body that may be absent (no `Content-Type`: empty).
pub(crate) async fn optional_body(
    state: &AppState,
    req: axum::extract::Request,
) -> Result<Map<String, Value>, ApiError> {
    use axum::extract::FromRequest;
    if req.headers().contains_key(header::CONTENT_TYPE) {
        Ok(crate::extract::JsonObject::from_request(req, state)
            .await?
            .0)
    } else {
        Ok(Map::new())
    }
}

/// A new access token and a new refresh token (a new family unless `family` is given).
pub(crate) async fn issue_tokens(
    state: &AppState,
    user: &str,
    role: &str,
) -> Result<(String, String, i64), ApiError> {
    let now = state.clock.now();
    let ttl = i64::try_from(state.settings.auth.access_token_ttl.as_secs()).unwrap_or(900);
    let access = state
        .jwt
        .sign(&JwtKeys::claims(user, role, now.unix_timestamp(), ttl));
    let refresh = random_token();
    state
        .store
        .sessions()
        .insert_refresh(refresh_grant(state, user, &refresh))
        .await?;
    Ok((access, refresh, ttl))
}

/// A refresh-token row for `token`, in a new family.
pub(crate) fn refresh_grant(state: &AppState, user: &str, token: &str) -> RefreshGrant {
    let now = state.clock.now();
    let ttl = time::Duration::try_from(state.settings.auth.refresh_token_ttl)
        .unwrap_or(time::Duration::days(30));
    RefreshGrant {
        id: uuid::Uuid::now_v7().to_string(),
        family: uuid::Uuid::now_v7().to_string(),
        user_id: user.to_owned(),
        token_hash: token_hash(token),
        created_at: format_datetime(now),
        expires_at: format_datetime(now + ttl),
    }
}

/// `{"data":{"user","accessToken","refreshToken","expiresIn"}}`.
pub(crate) fn token_response(
    status: StatusCode,
    user: Value,
    tokens: (String, String, i64),
) -> Response {
    json_response(
        status,
        &json!({ "data": {
            "user": user,
            "accessToken": tokens.0,
            "refreshToken": tokens.1,
            "expiresIn": tokens.2,
        }}),
    )
}

/// `GET /.well-known/jwks.json`: the public keys that verify access tokens.
pub(crate) async fn jwks(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let mut res = json_response(StatusCode::OK, &state.jwt.jwks());
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}
