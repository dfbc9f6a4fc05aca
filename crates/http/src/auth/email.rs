//! The email flows: `POST /api/v1/auth/verify-email/{request,confirm}` and
//! `/password-reset/{request,confirm}`. Requests answer `202` at once, whatever the
//! address (the work happens after the answer, so neither the body nor the time says
//! whether an account exists); tokens are random, single use, stored hashed and expire
//! (24 h verification, 1 h reset); a reset ends every session and refresh token.

use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use ferrobase_auth::password::check_length;
use ferrobase_auth::secrets::{random_token, token_hash};
use ferrobase_jobs::Template;
use ferrobase_schema::validate::format_datetime;
use serde_json::{Value, json};

use super::{rate_limited, required_string};
use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::identity::client_key;
use crate::records::json_response;
use crate::state::AppState;

/// How long a verification link works.
const VERIFY_TTL: time::Duration = time::Duration::hours(24);
/// How long a reset link works.
const RESET_TTL: time::Duration = time::Duration::hours(1);

fn invalid_token() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "INVALID_TOKEN",
        "the link is not valid: it was used already, has expired, or was never issued",
    )
}

fn no_more(body: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    match body.keys().next() {
        Some(key) => Err(ApiError::validation(
            [(key.clone(), vec!["is not a field of this call".to_owned()])].into(),
        )),
        None => Ok(()),
    }
}

/// The address of a request, after the throttles (per client and per address).
async fn requested_address(
    state: &AppState,
    req: Request,
) -> Result<Result<String, Response>, ApiError> {
    let now = state.clock.now().unix_timestamp();
    let ip = client_key(state, &req);
    if let Err(wait) = state.email_throttle.hit(&format!("ip:{ip}"), now).await {
        return Ok(Err(rate_limited(wait)));
    }
    let JsonObject(mut body) = JsonObject::from_request(req, state).await?;
    let email = required_string(&mut body, "email")?.trim().to_lowercase();
    no_more(&body)?;
    if let Err(wait) = state
        .email_throttle
        .hit(&format!("address:{email}"), now)
        .await
    {
        return Ok(Err(rate_limited(wait)));
    }
    Ok(Ok(email))
}

fn accepted() -> Response {
    json_response(
        StatusCode::ACCEPTED,
        &json!({"data": {"message": "if an account has this address, a mail is on its way"}}),
    )
}

/// Makes a token for `purpose` and mails its link, when the address has an account
/// (and, for `verify`, is not verified yet). Runs after the answer went out.
async fn mail_link(state: AppState, email: String, template: Template) -> Result<(), ApiError> {
    let Some(jobs) = state.jobs.clone() else {
        return Ok(());
    };
    let Some(user_id) = state
        .store
        .sessions()
        .user_id_by_email(email.clone())
        .await?
    else {
        return Ok(());
    };
    let (purpose, ttl, page) = match template {
        Template::Verify => ("verify", VERIFY_TTL, "verify-email"),
        Template::Reset => ("reset", RESET_TTL, "reset-password"),
    };
    if template == Template::Verify {
        let (res, users) = state.users();
        let verified = users.fields.iter().position(|f| f.name == "verified");
        let user = state
            .store
            .records()
            .get(res, user_id.clone(), None)
            .await?;
        if user
            .zip(verified)
            .is_some_and(|(u, i)| u.values[i] == Value::Bool(true))
        {
            return Ok(());
        }
    }
    let token = random_token();
    let now = state.clock.now();
    state
        .store
        .sessions()
        .create_email_token(
            token_hash(&token),
            user_id,
            purpose.to_owned(),
            format_datetime(now),
            format_datetime(now + ttl),
        )
        .await?;
    jobs.send_account_mail(template, &email, page, &token)
        .await?;
    Ok(())
}

async fn request(state: AppState, req: Request, template: Template) -> Result<Response, ApiError> {
    let email = match requested_address(&state, req).await? {
        Ok(email) => email,
        Err(refused) => return Ok(refused),
    };
    tokio::spawn(async move {
        if let Err(e) = mail_link(state, email, template).await {
            tracing::error!(error = ?e, "cannot send an account mail");
        }
    });
    Ok(accepted())
}

/// `POST /api/v1/auth/verify-email/request`: `{email}` → 202.
pub(crate) async fn verify_request(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    request(state, req, Template::Verify).await
}

/// `POST /api/v1/auth/password-reset/request`: `{email}` → 202.
pub(crate) async fn reset_request(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    request(state, req, Template::Reset).await
}

/// `POST /api/v1/auth/verify-email/confirm`: `{token}` → the address is verified.
pub(crate) async fn verify_confirm(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let token = required_string(&mut body, "token")?;
    no_more(&body)?;
    let now = format_datetime(state.clock.now());
    let user = state
        .store
        .sessions()
        .use_email_token(token_hash(&token), "verify".to_owned(), now)
        .await?
        .ok_or_else(invalid_token)?;
    if !state.records.mark_verified(&user).await? {
        return Err(invalid_token());
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": {"verified": true}}),
    ))
}

/// `POST /api/v1/auth/password-reset/confirm`: `{token, password}` → the new password;
/// every session and refresh token of the user ends.
pub(crate) async fn reset_confirm(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let token = required_string(&mut body, "token")?;
    let password = required_string(&mut body, "password")?;
    no_more(&body)?;
    if let Err(m) = check_length(&password) {
        return Err(ApiError::validation(
            [("password".to_owned(), vec![m])].into(),
        ));
    }
    let now = format_datetime(state.clock.now());
    let user = state
        .store
        .sessions()
        .use_email_token(token_hash(&token), "reset".to_owned(), now.clone())
        .await?
        .ok_or_else(invalid_token)?;
    let hash = super::session::hash_password(&state, password).await?;
    state.records.set_password_hash(&user, hash).await?;
    state
        .store
        .sessions()
        .revoke_user(user.clone(), now)
        .await?;
    // Whoever holds the address owns the account now: passkeys someone else may have
    // added (to an account made in the owner's name) go with the old password.
    for passkey in state.store.sessions().passkeys_of(user.clone()).await? {
        state
            .store
            .sessions()
            .delete_passkey(user.clone(), passkey.id)
            .await?;
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": {"reset": true}}),
    ))
}
