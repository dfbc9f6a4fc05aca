//! `/api/v1/auth/mfa/*` (SPEC §6, MFA): TOTP set up, confirmed with a first code (which
//! hands out ten single-use recovery codes) and turned off with a code or the password;
//! the sign-in's second step. Every code check is throttled per user.

use axum::Extension;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrobase_auth::mfa::{self, MfaTokenError};
use ferrobase_schema::validate::format_datetime;
use serde_json::{Map, Value, json};

use super::session::{blocking_verify_password, sign_in};
use super::{rate_limited, required_string, user_record, user_text};
use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::identity::{Caller, Identity, Via, client_key, cookie, cookie_name};
use crate::records::json_response;
use crate::state::AppState;

/// The project's name in authenticator apps.
const ISSUER: &str = "ferrobase";

fn wrong_code() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "INVALID_CREDENTIALS",
        "the code is not valid (or was used already)",
    )
}

/// A signed-in person (not an API key): second factors are theirs to change.
fn person(identity: &Identity) -> Result<&Caller, ApiError> {
    let caller = identity.caller().ok_or_else(ApiError::unauthorized)?;
    if matches!(caller.via, Via::ApiKey { .. }) {
        return Err(ApiError::forbidden_with(
            "API keys cannot change second factors",
        ));
    }
    Ok(caller)
}

/// Counts a code attempt for `user` from `address`, as login counts passwords: a low
/// limit per user and address, a higher one per user (so nobody locks a user out from
/// one address). `Err` is the 429 once either is spent; `Ok` the keys to forgive.
async fn throttle(state: &AppState, user: &str, address: &str) -> Result<[String; 2], Response> {
    let keys = [format!("mfa:{user}|{address}"), format!("mfa:{user}")];
    let now = state.clock.now().unix_timestamp();
    if let Err(wait) = state.pair_throttle.hit(&keys[0], now).await {
        return Err(rate_limited(wait));
    }
    if let Err(wait) = state.account_throttle.hit(&keys[1], now).await {
        state.pair_throttle.forgive(&keys[0], now).await;
        return Err(rate_limited(wait));
    }
    Ok(keys)
}

async fn forgive(state: &AppState, keys: &[String; 2]) {
    let now = state.clock.now().unix_timestamp();
    state.pair_throttle.forgive(&keys[0], now).await;
    state.account_throttle.forgive(&keys[1], now).await;
}

/// Whether `code` is a valid TOTP code (whose step is then spent) or an unused recovery
/// code (then used up) of `user`'s confirmed TOTP.
async fn spend_code(state: &AppState, user: &str, code: &str) -> Result<bool, ApiError> {
    let sessions = state.store.sessions();
    let Some(row) = sessions.mfa(user.to_owned()).await?.filter(|m| m.confirmed) else {
        return Ok(false);
    };
    if mfa::looks_like_recovery_code(code) {
        let now = format_datetime(state.clock.now());
        let hash = mfa::recovery_hash(&state.recovery_key, user, code);
        return Ok(sessions
            .use_recovery_code(user.to_owned(), hash, now)
            .await?);
    }
    let Some(secret) = mfa::decode_secret(&row.secret) else {
        return Ok(false);
    };
    let unix = u64::try_from(state.clock.now().unix_timestamp()).unwrap_or(0);
    let Some(step) = mfa::check_code(&secret, code, unix) else {
        return Ok(false);
    };
    Ok(sessions
        .use_mfa_step(user.to_owned(), i64::try_from(step).unwrap_or(i64::MAX))
        .await?)
}

fn body_code(body: &mut Map<String, Value>) -> Result<String, ApiError> {
    required_string(body, "code")
}

/// `GET /api/v1/auth/mfa`: the caller's second factors: TOTP `off`, `pending` (set up,
/// not confirmed) or `on`, and how many recovery codes are left.
pub(crate) async fn status(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) -> Result<Response, ApiError> {
    let caller = identity.caller().ok_or_else(ApiError::unauthorized)?;
    let row = state.store.sessions().mfa(caller.id.clone()).await?;
    let (totp, left) = match row {
        None => ("off", 0),
        Some(m) if !m.confirmed => ("pending", 0),
        Some(m) => ("on", m.recovery_left),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": { "totp": totp, "recoveryCodesLeft": left } }),
    ))
}

/// `POST /api/v1/auth/mfa/totp`: a new secret and its `otpauth://` URI, to confirm with
/// a first code. Starting again replaces an unconfirmed secret; a confirmed one must be
/// turned off first.
pub(crate) async fn begin(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) -> Result<Response, ApiError> {
    let caller = person(&identity)?;
    let user = user_record(&state, &caller.id).await?;
    let email = user_text(&state, &user, "email")
        .unwrap_or_default()
        .to_owned();
    let secret = mfa::new_secret();
    let encoded = mfa::encode_secret(&secret);
    let now = format_datetime(state.clock.now());
    let begun = state
        .store
        .sessions()
        .begin_mfa(caller.id.clone(), encoded.clone(), now)
        .await?;
    if !begun {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            "TOTP is on already; turn it off first (DELETE /api/v1/auth/mfa/totp)",
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": {
            "secret": encoded,
            "uri": mfa::otpauth_uri(&secret, ISSUER, &email),
        } }),
    ))
}

/// `POST /api/v1/auth/mfa/totp/confirm` `{code}`: turns TOTP on and answers the ten
/// recovery codes (shown once; stored hashed).
pub(crate) async fn confirm(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    req: Request,
) -> Result<Response, ApiError> {
    let caller = person(&identity)?;
    let address = client_key(&state, &req);
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let code = body_code(&mut body)?;
    let sessions = state.store.sessions();
    let Some(row) = sessions.mfa(caller.id.clone()).await? else {
        return Err(ApiError::not_found(
            "no TOTP set up; start with POST /api/v1/auth/mfa/totp",
        ));
    };
    if row.confirmed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            "TOTP is on already",
        ));
    }
    let key = match throttle(&state, &caller.id, &address).await {
        Ok(key) => key,
        Err(refused) => return Ok(refused),
    };
    let unix = u64::try_from(state.clock.now().unix_timestamp()).unwrap_or(0);
    let step = mfa::decode_secret(&row.secret).and_then(|s| mfa::check_code(&s, &code, unix));
    let Some(step) = step else {
        return Err(wrong_code());
    };
    let codes = mfa::new_recovery_codes();
    let hashes = codes
        .iter()
        .map(|c| mfa::recovery_hash(&state.recovery_key, &caller.id, c))
        .collect();
    let confirmed = sessions
        .confirm_mfa(
            caller.id.clone(),
            row.secret.clone(),
            i64::try_from(step).unwrap_or(i64::MAX),
            hashes,
        )
        .await?;
    if !confirmed {
        return Err(wrong_code());
    }
    forgive(&state, &key).await;
    // Whatever signed in with the password alone (sessions, refresh tokens) ends: from
    // now on a sign-in takes a code. API keys stay: they are credentials of their own.
    sessions
        .revoke_user(caller.id.clone(), format_datetime(state.clock.now()))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": { "recoveryCodes": codes } }),
    ))
}

/// `DELETE /api/v1/auth/mfa/totp` `{code}` or `{password}`: turns TOTP off.
pub(crate) async fn disable(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    req: Request,
) -> Result<Response, ApiError> {
    let caller = person(&identity)?;
    let address = client_key(&state, &req);
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    if let Some(refused) = prove_again(&state, &caller.id, &address, &mut body).await? {
        return Ok(refused);
    }
    if !state.store.sessions().delete_mfa(caller.id.clone()).await? {
        return Err(ApiError::not_found("TOTP is not on"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/auth/mfa/verify` `{mfaToken, code}`: the sign-in's second step, with a
/// TOTP code or a recovery code; answers as the sign-in would have.
pub(crate) async fn verify(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let replaced = cookie(
        req.headers(),
        cookie_name(state.settings.auth.cookie_secure),
    );
    let address = client_key(&state, &req);
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let token = required_string(&mut body, "mfaToken")?;
    let code = body_code(&mut body)?;
    let (pending, user) = pending_sign_in(&state, &token).await?;
    let key = match throttle(&state, &pending.user_id, &address).await {
        Ok(key) => key,
        Err(refused) => return Ok(refused),
    };
    if !spend_code(&state, &pending.user_id, &code).await? {
        return Err(wrong_code());
    }
    forgive(&state, &key).await;
    sign_in(&state, &user, pending.cookie, replaced).await
}

/// The sign-in an `mfaToken` carries, and its user, while its password and second factor
/// are still those of the password step (changing either ends sign-ins half done).
pub(crate) async fn pending_sign_in(
    state: &AppState,
    token: &str,
) -> Result<(mfa::PendingSignIn, ferrobase_store::Record), ApiError> {
    let now = state.clock.now().unix_timestamp();
    let pending = state.mfa_tokens.verify(token, now).map_err(|e| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            if e == MfaTokenError::Expired {
                "TOKEN_EXPIRED"
            } else {
                "UNAUTHORIZED"
            },
            match e {
                MfaTokenError::Expired => "the sign-in took too long; sign in again",
                MfaTokenError::Invalid => "the mfaToken is not valid",
            },
        )
    })?;
    // The password and the TOTP secret must be those of the password step: changing
    // either ends sign-ins half done.
    let user = user_record(state, &pending.user_id).await?;
    let password_hash = user_text(state, &user, "password_hash").unwrap_or_default();
    let secret = state
        .store
        .sessions()
        .mfa(pending.user_id.clone())
        .await?
        .filter(|m| m.confirmed)
        .map(|m| m.secret)
        .unwrap_or_default();
    if mfa::binding(password_hash, &secret) != pending.binding {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the password or the second factor changed since; sign in again",
        ));
    }
    Ok((pending, user))
}

/// A signed-in caller proves again that they are the account's owner, with `password`
/// or a current TOTP (or recovery) `code`, before a change that adds or removes a
/// factor; throttled like the code step. `Some` is the answer to give instead (429).
pub(crate) async fn prove_again(
    state: &AppState,
    user: &str,
    address: &str,
    body: &mut Map<String, Value>,
) -> Result<Option<Response>, ApiError> {
    let key = match throttle(state, user, address).await {
        Ok(key) => key,
        Err(refused) => return Ok(Some(refused)),
    };
    let proven = match (body.remove("code"), body.remove("password")) {
        (Some(Value::String(code)), None) => spend_code(state, user, &code).await?,
        (None, Some(Value::String(password))) => {
            blocking_verify_password(state, user, password).await?
        }
        _ => {
            return Err(ApiError::validation(
                [(
                    "code".to_owned(),
                    vec!["send a current code or the password (one of code, password)".to_owned()],
                )]
                .into(),
            ));
        }
    };
    if !proven {
        return Err(wrong_code());
    }
    forgive(state, &key).await;
    Ok(None)
}
