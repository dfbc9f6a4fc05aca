//! Register, login (tokens or a cookie session), refresh with rotation and reuse
//! detection, logout, me, password change.

use axum::Extension;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrobase_auth::password::check_length;
use ferrobase_auth::secrets::{random_token, token_hash};
use ferrobase_records::Registrant;
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::Rotation;
use serde_json::{Value, json};

use super::{
    issue_tokens, rate_limited, refresh_grant, required_string, role_of, token_response, user_json,
    user_record, user_text,
};
use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::identity::{Identity, Via, client_key, cookie, cookie_name, session_csrf_token};
use crate::records::json_response;
use crate::state::AppState;

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "INVALID_CREDENTIALS",
        "the email or the password is wrong",
    )
}

/// Runs Argon2 on the blocking pool, a bounded number at a time (each takes 19 MiB).
async fn blocking_hash<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&ferrobase_auth::Passwords) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = state
        .hashing
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("shutting down"))?;
    let state = state.clone();
    tokio::task::spawn_blocking(move || work(&state.passwords))
        .await
        .map_err(ApiError::internal)
}

/// Whether `password` is `user`'s password (hashed off the async threads).
pub(crate) async fn blocking_verify_password(
    state: &AppState,
    user: &str,
    password: String,
) -> Result<bool, ApiError> {
    let user = user_record(state, user).await?;
    let stored = user_text(state, &user, "password_hash").map(str::to_owned);
    blocking_hash(state, move |p| p.verify(&password, stored.as_deref()).ok).await
}

pub(crate) async fn hash_password(state: &AppState, password: String) -> Result<String, ApiError> {
    blocking_hash(state, move |p| p.hash(&password)).await
}

/// `POST /api/v1/auth/register`: `{email, password, ...profile}` → 201 with tokens.
pub(crate) async fn register(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let now_unix = state.clock.now().unix_timestamp();
    let ip = client_key(&state, &req);
    if let Err(wait) = state.register_throttle.hit(&ip, now_unix).await {
        return Ok(rate_limited(wait));
    }
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let password = required_string(&mut body, "password")?;
    let mut errors = std::collections::BTreeMap::new();
    if let Err(m) = check_length(&password) {
        errors.insert("password".to_owned(), vec![m]);
    }
    let account = state
        .records
        .plan_account(Registrant::Visitor, body, errors)?;
    let hash = hash_password(&state, password).await?;
    let record = state.records.create_account(account, hash, None).await?;
    let role = role_of(&state, &record);
    let tokens = issue_tokens(&state, &record.id, &role).await?;
    Ok(token_response(
        StatusCode::CREATED,
        user_json(&state, &record, &role)?,
        tokens,
    ))
}

/// `POST /api/v1/auth/login`: `{email, password, session?: "cookie"}`. Unknown email and
/// wrong password answer alike, in body and in time.
pub(crate) async fn login(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let now_unix = state.clock.now().unix_timestamp();
    let ip = client_key(&state, &req);
    let replaced = cookie(
        req.headers(),
        cookie_name(state.settings.auth.cookie_secure),
    );
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let email = required_string(&mut body, "email")?.to_lowercase();
    let password = required_string(&mut body, "password")?;
    let cookie_session = session_choice(&mut body)?;
    if email.len() > 254 || password.len() > ferrobase_auth::password::MAX_PASSWORD_LEN {
        return Err(invalid_credentials());
    }
    // Attempts are counted before the password is checked (so a burst cannot slip past
    // the limit) and forgiven when they succeed: per account and address pair, per
    // account (higher, so one attacker cannot lock an account from one address), and per
    // address.
    let account = format!("account:{email}");
    let pair = format!("{account}|{ip}");
    let counted = [
        (&state.pair_throttle, pair.as_str()),
        (&state.account_throttle, account.as_str()),
        (&state.ip_throttle, ip.as_str()),
    ];
    for (i, (throttle, key)) in counted.iter().enumerate() {
        if let Err(wait) = throttle.hit(key, now_unix).await {
            for (t, k) in &counted[..i] {
                t.forgive(k, now_unix).await;
            }
            return Ok(rate_limited(wait));
        }
    }
    let (res, users) = state.users();
    let user = match state
        .store
        .sessions()
        .user_id_by_email(email.clone())
        .await?
    {
        Some(id) => state.store.records().get(res, id, None).await?,
        None => None,
    };
    let hash_index = users.fields.iter().position(|f| f.name == "password_hash");
    let stored = user
        .as_ref()
        .zip(hash_index)
        .and_then(|(u, i)| u.values[i].as_str().map(str::to_owned));
    let candidate = password.clone();
    let verified = blocking_hash(&state, move |p| p.verify(&candidate, stored.as_deref())).await?;
    let Some(user) = user.filter(|_| verified.ok) else {
        return Err(invalid_credentials());
    };
    for (throttle, key) in counted {
        throttle.forgive(key, now_unix).await;
    }
    // The stored hash as it is after this sign-in (an MFA token is bound to it).
    let mut current_hash = hash_index
        .and_then(|i| user.values[i].as_str())
        .unwrap_or_default()
        .to_owned();
    if verified.needs_rehash {
        let hash = hash_password(&state, password).await?;
        current_hash.clone_from(&hash);
        state.records.set_password_hash(&user.id, hash).await?;
    }
    first_factor_done(&state, &user, cookie_session, replaced, &current_hash).await
}

/// `session` of a sign-in body: `"cookie"` for a cookie session, `"token"` (the default)
/// for a token pair.
pub(crate) fn session_choice(body: &mut serde_json::Map<String, Value>) -> Result<bool, ApiError> {
    match body.remove("session") {
        None => Ok(false),
        Some(Value::String(s)) if s == "cookie" => Ok(true),
        Some(Value::String(s)) if s == "token" => Ok(false),
        Some(_) => Err(ApiError::validation(
            [(
                "session".to_owned(),
                vec!["must be \"cookie\" or \"token\"".to_owned()],
            )]
            .into(),
        )),
    }
}

/// A first factor (password, provider, passkey) succeeded: with TOTP on, only a
/// short-lived token for the code step (`POST /api/v1/auth/mfa/verify`), bound to the
/// current password hash; otherwise the sign-in itself.
pub(crate) async fn first_factor_done(
    state: &AppState,
    user: &ferrobase_store::Record,
    cookie_session: bool,
    replaced: Option<String>,
    current_hash: &str,
) -> Result<Response, ApiError> {
    verified_if_required(state, user)?;
    if let Some(mfa) = state.store.sessions().mfa(user.id.clone()).await?
        && mfa.confirmed
    {
        let pending = ferrobase_auth::mfa::PendingSignIn {
            user_id: user.id.clone(),
            cookie: cookie_session,
            expires: state.clock.now().unix_timestamp() + ferrobase_auth::mfa::MFA_TOKEN_TTL_SECS,
            binding: ferrobase_auth::mfa::binding(current_hash, &mfa.secret),
        };
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "data": { "mfaRequired": true, "mfaToken": state.mfa_tokens.issue(&pending) } }),
        ));
    }
    sign_in(state, user, cookie_session, replaced).await
}

/// With `[auth] require_verified_email`, 403 for an account whose address is not
/// verified, whatever the factor it signs in with.
fn verified_if_required(state: &AppState, user: &ferrobase_store::Record) -> Result<(), ApiError> {
    let (_, users) = state.users();
    if state.settings.auth.require_verified_email
        && users
            .fields
            .iter()
            .position(|f| f.name == "verified")
            .is_some_and(|i| user.values[i] != Value::Bool(true))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "EMAIL_NOT_VERIFIED",
            "confirm your email address first (POST /api/v1/auth/verify-email/request sends the link again)",
        ));
    }
    Ok(())
}

/// The end of every sign-in: a token pair, or a cookie session (replacing the one the
/// browser held) with its CSRF token.
pub(crate) async fn sign_in(
    state: &AppState,
    user: &ferrobase_store::Record,
    cookie_session: bool,
    replaced: Option<String>,
) -> Result<Response, ApiError> {
    verified_if_required(state, user)?;
    let now = format_datetime(state.clock.now());
    let role = role_of(state, user);
    let user_value = user_json(state, user, &role)?;
    if !cookie_session {
        let tokens = issue_tokens(state, &user.id, &role).await?;
        return Ok(token_response(StatusCode::OK, user_value, tokens));
    }
    // Signing in again in the same browser replaces the session the cookie holds.
    if let Some(old) = replaced {
        state
            .store
            .sessions()
            .revoke_session(token_hash(&old), now.clone())
            .await?;
    }
    let token = random_token();
    let session_id = uuid::Uuid::now_v7().to_string();
    let ttl = state.settings.auth.refresh_token_ttl;
    let created_at = state.clock.now();
    let expires_at = created_at + time::Duration::try_from(ttl).unwrap_or(time::Duration::days(30));
    state
        .store
        .sessions()
        .insert_session(ferrobase_store::SessionRow {
            id: session_id.clone(),
            user_id: user.id.clone(),
            token_hash: token_hash(&token),
            created_at,
            expires_at,
        })
        .await?;
    let csrf = session_csrf_token(state, &session_id);
    let mut response = json_response(
        StatusCode::OK,
        &json!({ "data": { "user": user_value, "csrfToken": csrf } }),
    );
    let secure = state.settings.auth.cookie_secure;
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        cookie_name(secure),
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// `POST /api/v1/auth/refresh`: `{refreshToken}` → a new pair; the presented token is
/// dead from now on, and presenting a dead one ends its whole family.
pub(crate) async fn refresh(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let presented = required_string(&mut body, "refreshToken")?;
    let next = random_token();
    let grant = refresh_grant(&state, "", &next);
    let refused = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message);
    let user_id = match state
        .store
        .sessions()
        .rotate_refresh(token_hash(&presented), grant)
        .await?
    {
        Rotation::Rotated { user_id } => user_id,
        Rotation::Reused { user_id } => {
            tracing::warn!(user_id = %user_id, "refresh token reuse; the token family was revoked");
            return Err(refused(
                "this refresh token was already used; every token of its login has been revoked",
            ));
        }
        Rotation::Expired => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "TOKEN_EXPIRED",
                "the refresh token has expired; log in again",
            ));
        }
        Rotation::Unknown => return Err(refused("the refresh token is not valid")),
    };
    // The user is read again: a deleted user gets nothing, a changed role applies now.
    let (res, _) = state.users();
    let Some(user) = state
        .store
        .records()
        .get(res, user_id.clone(), None)
        .await?
    else {
        return Err(refused("the refresh token is not valid"));
    };
    let role = role_of(&state, &user);
    let ttl = i64::try_from(state.settings.auth.access_token_ttl.as_secs()).unwrap_or(900);
    let now = state.clock.now().unix_timestamp();
    let access = state
        .jwt
        .sign(&ferrobase_auth::JwtKeys::claims(&user.id, &role, now, ttl));
    Ok(token_response(
        StatusCode::OK,
        user_json(&state, &user, &role)?,
        (access, next, ttl),
    ))
}

/// `POST /api/v1/auth/logout`: ends the presented refresh token's family and/or the
/// cookie session.
pub(crate) async fn logout(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let now = format_datetime(state.clock.now());
    let secure = state.settings.auth.cookie_secure;
    let session = cookie(req.headers(), cookie_name(secure));
    let has_body = req.headers().contains_key(header::CONTENT_TYPE);
    if has_body {
        let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
        if body.contains_key("refreshToken") {
            let token = required_string(&mut body, "refreshToken")?;
            state
                .store
                .sessions()
                .revoke_refresh(token_hash(&token), now.clone())
                .await?;
        }
        if let Some(key) = body.keys().next() {
            return Err(ApiError::validation(
                [(key.clone(), vec!["is not a field of logout".to_owned()])].into(),
            ));
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(token) = session {
        state
            .store
            .sessions()
            .revoke_session(token_hash(&token), now)
            .await?;
        let clear = format!(
            "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
            cookie_name(secure),
            if secure { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&clear) {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    Ok(response)
}

/// `GET /api/v1/auth/me`: the caller's own record.
pub(crate) async fn me(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) -> Result<Response, ApiError> {
    let caller = identity.caller().ok_or_else(ApiError::unauthorized)?;
    let (res, _) = state.users();
    let user = state
        .store
        .records()
        .get(res, caller.id.clone(), None)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let role = role_of(&state, &user);
    let mut response = json_response(
        StatusCode::OK,
        &json!({ "data": user_json(&state, &user, &role)? }),
    );
    // A page that lost its CSRF token (a reload) gets it again here. A header, not a body
    // field: only this origin's scripts can read it (CORS does not expose it).
    if let Via::Cookie { session_id } = &caller.via
        && let Ok(value) = HeaderValue::from_str(&session_csrf_token(&state, session_id))
    {
        response.headers_mut().insert("x-csrf-token", value);
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

/// `POST /api/v1/auth/password`: `{currentPassword, newPassword}`; ends every session and
/// refresh token of the user.
pub(crate) async fn change_password(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    req: Request,
) -> Result<Response, ApiError> {
    let caller = identity.caller().ok_or_else(ApiError::unauthorized)?;
    if matches!(caller.via, Via::ApiKey { .. }) {
        return Err(ApiError::forbidden_with("API keys cannot change passwords"));
    }
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let current = required_string(&mut body, "currentPassword")?;
    let new = required_string(&mut body, "newPassword")?;
    check_length(&new)
        .map_err(|m| ApiError::validation([("newPassword".to_owned(), vec![m])].into()))?;
    let user = user_record(&state, &caller.id).await?;
    let stored = user_text(&state, &user, "password_hash").map(str::to_owned);
    let attempts = format!("password-change:{}", caller.id);
    let now_unix = state.clock.now().unix_timestamp();
    if let Err(wait) = state.pair_throttle.hit(&attempts, now_unix).await {
        return Ok(rate_limited(wait));
    }
    let ok = blocking_hash(&state, move |p| p.verify(&current, stored.as_deref()).ok).await?;
    if !ok {
        return Err(invalid_credentials());
    }
    state.pair_throttle.forgive(&attempts, now_unix).await;
    let hash = hash_password(&state, new).await?;
    let now = format_datetime(state.clock.now());
    state.records.set_password_hash(&caller.id, hash).await?;
    state
        .store
        .sessions()
        .revoke_user(caller.id.clone(), now)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
