//! `/api/v1/auth/api-keys`: scoped, expiring keys, shown once, stored hashed.

use axum::Extension;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrobase_auth::secrets::{new_api_key, token_hash};
use ferrobase_schema::settings::parse_duration;
use ferrobase_schema::validate::{format_datetime, normalize_datetime, normalize_uuid};
use ferrobase_store::ApiKeyRow;
use serde_json::{Value, json};

use super::required_string;
use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::identity::{Caller, Identity, Via};
use crate::records::json_response;
use crate::state::AppState;

/// The caller managing their keys: a user that still exists (an access token outlives a
/// deleted user by up to its lifetime, and acting for a user that is gone is a 401, not
/// a database error).
async fn owner<'a>(state: &AppState, identity: &'a Identity) -> Result<&'a Caller, ApiError> {
    let caller = identity.caller().ok_or_else(ApiError::unauthorized)?;
    if matches!(caller.via, Via::ApiKey { .. }) {
        return Err(ApiError::forbidden_with(
            "API keys cannot manage API keys; use a session or an access token",
        ));
    }
    let (users, _) = state.users();
    if state
        .store
        .records()
        .get(users, caller.id.clone(), None)
        .await?
        .is_none()
    {
        return Err(ApiError::unauthorized());
    }
    Ok(caller)
}

/// Live (unrevoked, unexpired) keys a user may hold at once.
const MAX_LIVE_KEYS: usize = 25;

fn key_json(row: &ApiKeyRow) -> Value {
    json!({
        "id": row.id, "name": row.name, "scopes": row.scopes,
        "createdAt": row.created_at, "expiresAt": row.expires_at,
        "lastUsedAt": row.last_used_at, "revokedAt": row.revoked_at,
    })
}

fn field_error(key: &str, message: &str) -> ApiError {
    ApiError::validation([(key.to_owned(), vec![message.to_owned()])].into())
}

/// `POST`: `{name, scopes, expiresAt? | expiresIn?}` → 201 with the key, shown this once.
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    req: Request,
) -> Result<Response, ApiError> {
    let caller = owner(&state, &identity).await?.clone();
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let name = required_string(&mut body, "name")?;
    if name.is_empty() || name.chars().count() > 100 {
        return Err(field_error("name", "must be 1 to 100 characters"));
    }
    let scopes: Vec<String> = match body.remove("scopes") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| field_error("scopes", "must be strings"))?,
        _ => {
            return Err(field_error(
                "scopes",
                "must be a non-empty array such as [\"posts:read\"]",
            ));
        }
    };
    if scopes.iter().any(|s| s == "jobs:write") && caller.role != "admin" {
        return Err(ApiError::forbidden_with(
            "only admins may hold keys with the jobs:write scope",
        ));
    }
    for scope in &scopes {
        let valid = scope == "*"
            || scope == "jobs:write"
            || scope.split_once(':').is_some_and(|(r, a)| {
                state.schema.resource(r).is_some() && matches!(a, "read" | "write")
            });
        if !valid {
            return Err(field_error(
                "scopes",
                &format!("'{scope}' is not <resource>:read, <resource>:write, jobs:write or *"),
            ));
        }
    }
    let now = state.clock.now();
    let expires_at = match (body.remove("expiresAt"), body.remove("expiresIn")) {
        (Some(Value::String(at)), None) => Some(
            normalize_datetime(&at)
                .ok_or_else(|| field_error("expiresAt", "must be an RFC 3339 date-time"))?,
        ),
        (None, Some(Value::String(d))) => {
            let d = parse_duration(&d).map_err(|m| field_error("expiresIn", &m))?;
            let at = time::Duration::try_from(d)
                .ok()
                .filter(|d| *d <= time::Duration::days(3650))
                .and_then(|d| now.checked_add(d))
                .ok_or_else(|| field_error("expiresIn", "must be at most 10 years"))?;
            Some(format_datetime(at))
        }
        (None, None) => None,
        _ => {
            return Err(field_error(
                "expiresAt",
                "give expiresAt (a date-time) or expiresIn (like 30d), not both",
            ));
        }
    };
    if let Some(key) = body.keys().next() {
        return Err(field_error(key, "is not a field of API keys"));
    }
    let now_text = format_datetime(now);
    let live = state
        .store
        .sessions()
        .api_keys_of(caller.id.clone())
        .await?
        .iter()
        .filter(|k| k.revoked_at.is_none() && k.expires_at.as_ref().is_none_or(|at| *at > now_text))
        .count();
    if live >= MAX_LIVE_KEYS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNPROCESSABLE",
            format!("a user may hold at most {MAX_LIVE_KEYS} live API keys; revoke one first"),
        ));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let key = new_api_key(&id);
    let row = ApiKeyRow {
        id,
        user_id: caller.id,
        name,
        key_hash: token_hash(&key),
        scopes,
        created_at: format_datetime(now),
        expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    match state.store.sessions().insert_api_key(row.clone()).await {
        Err(ferrobase_store::StoreError::BrokenRelation { .. }) => {
            // The user was deleted since the check above.
            return Err(ApiError::unauthorized());
        }
        other => other?,
    }
    let mut data = key_json(&row);
    data["key"] = Value::String(key);
    Ok(json_response(StatusCode::CREATED, &json!({ "data": data })))
}

/// `GET`: the caller's keys, without their secrets.
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) -> Result<Response, ApiError> {
    let caller = owner(&state, &identity).await?;
    let rows = state
        .store
        .sessions()
        .api_keys_of(caller.id.clone())
        .await?;
    let data: Vec<Value> = rows.iter().map(key_json).collect();
    Ok(json_response(StatusCode::OK, &json!({ "data": data })))
}

/// `DELETE /{id}`: revokes one of the caller's keys.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = owner(&state, &identity).await?;
    let id = normalize_uuid(&id).ok_or_else(|| ApiError::not_found("no such API key"))?;
    let now = format_datetime(state.clock.now());
    if state
        .store
        .sessions()
        .revoke_api_key(caller.id.clone(), id, now)
        .await?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found("no such API key"))
    }
}
