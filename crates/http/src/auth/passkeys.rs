//! Passkeys (WebAuthn, SPEC §6): `/api/v1/auth/passkeys/{register,login}/{start,finish}`,
//! and the caller's passkeys listed and removed.
//!
//! Each ceremony's state is a database ticket, taken once and expiring in five minutes, so
//! any node finishes what another began. User verification is required. A passkey signs
//! in alone (discoverable: no email asked, nothing to enumerate), or as the second factor
//! after a password (`mfaToken`). A signature counter that does not go up (a copied
//! authenticator) is refused, atomically across nodes.

use axum::Extension;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::{PasskeyRow, Ticket};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnError,
};

use super::mfa::prove_again;
use super::oauth::account_owner;
use super::{keep_a_way_in, optional_body, put_ticket, required_string, user_record, user_text};
use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::identity::{Identity, client_key, cookie, cookie_name};
use crate::records::json_response;
use crate::state::AppState;

/// How long a ceremony may take.
const CEREMONY_TTL_SECS: i64 = 300;
const TICKET_REGISTER: &str = "passkey-register";
const TICKET_LOGIN: &str = "passkey-login";

/// The relying party of `[auth.passkeys]`, or why there is none.
pub(crate) fn relying_party(
    settings: &ferrobase_schema::settings::PasskeySettings,
) -> Result<Webauthn, String> {
    let mut origins = settings
        .origins
        .iter()
        .map(|o| Url::parse(o).map_err(|_| format!("[auth.passkeys] origins: '{o}' is not a URL")));
    let first = origins.next().ok_or("[auth.passkeys] origins is empty")??;
    let mut builder = webauthn_rs::WebauthnBuilder::new(&settings.rp_id, &first)
        .map_err(|e| format!("[auth.passkeys]: {e}"))?
        .rp_name(&settings.rp_name);
    for origin in origins {
        builder = builder.append_allowed_origin(&origin?);
    }
    builder.build().map_err(|e| format!("[auth.passkeys]: {e}"))
}

#[derive(Serialize, Deserialize)]
struct Registering {
    state: PasskeyRegistration,
    handle: String,
    name: String,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "factor", rename_all = "lowercase")]
enum SigningIn {
    /// Without a password: the credential names its user.
    First { state: DiscoverableAuthentication },
    /// After a password: the user is known and was bound by the mfaToken.
    Second {
        state: PasskeyAuthentication,
        user_id: String,
        cookie: bool,
        /// The password step's token, checked again at the finish (a password change
        /// in between ends the sign-in).
        mfa_token: String,
    },
}

fn webauthn(state: &AppState) -> Result<&Webauthn, ApiError> {
    state.passkeys.as_ref().ok_or_else(|| {
        ApiError::not_found("passkeys are off ([auth.passkeys] enabled = false, or no origin is known: set [server] public_url)")
    })
}

fn refused(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", message)
}

fn ceremony_gone() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
        "the ceremony was finished already or has expired; start again",
    )
}

/// The credential id as the browser's JSON names it (base64url).
fn credential_id(passkey: &Passkey) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(passkey.cred_id())
}

fn credential<T: serde::de::DeserializeOwned>(
    body: &mut serde_json::Map<String, Value>,
) -> Result<T, ApiError> {
    let value = body.remove("credential").ok_or_else(|| {
        ApiError::validation([("credential".to_owned(), vec!["is required".to_owned()])].into())
    })?;
    serde_json::from_value(value).map_err(|e| {
        ApiError::validation(
            [(
                "credential".to_owned(),
                vec![format!("is not a WebAuthn credential: {e}")],
            )]
            .into(),
        )
    })
}

async fn put_ceremony(
    state: &AppState,
    kind: &str,
    user_id: Option<String>,
    payload: String,
) -> Result<String, ApiError> {
    let id = ferrobase_auth::secrets::random_token();
    put_ticket(state, kind, id.clone(), user_id, payload, CEREMONY_TTL_SECS).await?;
    Ok(id)
}

async fn take_ceremony(
    state: &AppState,
    kind: &str,
    body: &mut serde_json::Map<String, Value>,
) -> Result<Ticket, ApiError> {
    let id = required_string(body, "ceremonyId")?;
    state
        .store
        .sessions()
        .take_ticket(kind.into(), id, format_datetime(state.clock.now()))
        .await?
        .ok_or_else(ceremony_gone)
}

/// Refuses members a body does not have (a typo must not pass unnoticed).
fn no_other_members(body: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    match body.keys().next() {
        Some(key) => Err(ApiError::validation(
            [(
                key.clone(),
                vec!["is not a member of this request".to_owned()],
            )]
            .into(),
        )),
        None => Ok(()),
    }
}

fn options_response(ceremony: String, options: Value) -> Response {
    // `options` is `{"publicKey": {...}}` (and `mediation` for discoverable sign-in).
    let mut data = json!({ "ceremonyId": ceremony });
    if let (Some(data), Value::Object(options)) = (data.as_object_mut(), options) {
        data.extend(options);
    }
    json_response(StatusCode::OK, &json!({ "data": data }))
}

/// `POST /api/v1/auth/passkeys/register/start` `{name?}`: the signed-in caller begins
/// registering a passkey.
pub(crate) async fn register_start(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    req: Request,
) -> Result<Response, ApiError> {
    let rp = webauthn(&state)?;
    let user_id = account_owner(&identity)?;
    let address = client_key(&state, &req);
    let mut body = optional_body(&state, req).await?;
    let name = match body.remove("name") {
        None => "passkey".to_owned(),
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 100 => {
            s.trim().to_owned()
        }
        Some(_) => {
            return Err(ApiError::validation(
                [(
                    "name".to_owned(),
                    vec!["must be text of 1 to 100 characters".to_owned()],
                )]
                .into(),
            ));
        }
    };
    let user = user_record(&state, &user_id).await?;
    // A new factor outlives sessions and password changes: the owner proves it is them
    // (password or TOTP code), so a stolen access token cannot plant one.
    let has_password = user_text(&state, &user, "password_hash").is_some_and(|h| !h.is_empty());
    let totp_on = state
        .store
        .sessions()
        .mfa(user_id.clone())
        .await?
        .is_some_and(|m| m.confirmed);
    if (has_password || totp_on)
        && let Some(refused) = prove_again(&state, &user_id, &address, &mut body).await?
    {
        return Ok(refused);
    }
    no_other_members(&body)?;
    // Where addresses can be verified, an unverified account (anyone may have typed the
    // address) gets no passkey: it would survive the owner's password reset.
    let (_, users) = state.users();
    let unverified = users
        .fields
        .iter()
        .position(|f| f.name == "verified")
        .is_some_and(|i| user.values[i] != Value::Bool(true));
    if unverified
        && (state.settings.email.smtp_url.is_some() || state.settings.auth.require_verified_email)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "EMAIL_NOT_VERIFIED",
            "verify the account's email address before adding a passkey",
        ));
    }
    let email = user_text(&state, &user, "email")
        .unwrap_or(&user_id)
        .to_owned();
    let existing = state.store.sessions().passkeys_of(user_id.clone()).await?;
    // One WebAuthn user handle per user: a random id, not the account id.
    let handle = existing
        .first()
        .map_or_else(|| Uuid::new_v4().to_string(), |p| p.user_handle.clone());
    let uuid = Uuid::parse_str(&handle).map_err(ApiError::internal)?;
    let exclude = existing
        .iter()
        .filter_map(|p| serde_json::from_str::<Passkey>(&p.credential).ok())
        .map(|p| p.cred_id().clone())
        .collect();
    let (options, registration) = rp
        .start_passkey_registration(uuid, &email, &email, Some(exclude))
        .map_err(ApiError::internal)?;
    let payload = serde_json::to_string(&Registering {
        state: registration,
        handle,
        name,
    })
    .map_err(ApiError::internal)?;
    let ceremony = put_ceremony(&state, TICKET_REGISTER, Some(user_id), payload).await?;
    let mut options = serde_json::to_value(&options).map_err(ApiError::internal)?;
    // Sign-in by passkey alone is discoverable: the authenticator must keep the
    // credential (a resident key), or it could not name the account later.
    if let Some(selection) = options
        .pointer_mut("/publicKey/authenticatorSelection")
        .and_then(Value::as_object_mut)
    {
        selection.insert("residentKey".into(), json!("required"));
        selection.insert("requireResidentKey".into(), json!(true));
    }
    Ok(options_response(ceremony, options))
}

/// `POST /api/v1/auth/passkeys/register/finish` `{ceremonyId, credential}` → the passkey.
pub(crate) async fn register_finish(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    req: Request,
) -> Result<Response, ApiError> {
    let rp = webauthn(&state)?;
    let user_id = account_owner(&identity)?;
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let credential: RegisterPublicKeyCredential = credential(&mut body)?;
    let ticket = take_ceremony(&state, TICKET_REGISTER, &mut body).await?;
    if ticket.user_id.as_deref() != Some(user_id.as_str()) {
        return Err(ceremony_gone());
    }
    let registering: Registering =
        serde_json::from_str(&ticket.payload).map_err(ApiError::internal)?;
    let passkey = rp
        .finish_passkey_registration(&credential, &registering.state)
        .map_err(|e| {
            ApiError::validation(
                [(
                    "credential".to_owned(),
                    vec![format!("was not accepted: {e}")],
                )]
                .into(),
            )
        })?;
    let id = credential_id(&passkey);
    let now = format_datetime(state.clock.now());
    let row = PasskeyRow {
        id: id.clone(),
        user_id,
        user_handle: registering.handle,
        name: registering.name.clone(),
        credential: serde_json::to_string(&passkey).map_err(ApiError::internal)?,
        counter: 0,
        created_at: now.clone(),
        last_used_at: None,
    };
    // A credential id is registered once, whoever presents it.
    match state.store.sessions().add_passkey(row).await {
        Ok(()) => {}
        Err(ferrobase_store::StoreError::Unique { .. }) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                "this passkey is registered already",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "data": { "id": id, "name": registering.name, "createdAt": now, "lastUsedAt": null } }),
    ))
}

/// `POST /api/v1/auth/passkeys/login/start` `{mfaToken?}`: without a token, a sign-in
/// by passkey alone (the authenticator picks the account); with one, the second factor of
/// a password sign-in.
pub(crate) async fn login_start(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let rp = webauthn(&state)?;
    let mut body = optional_body(&state, req).await?;
    let token = if body.contains_key("mfaToken") {
        Some(required_string(&mut body, "mfaToken")?)
    } else {
        None
    };
    no_other_members(&body)?;
    let (options, signing_in, user_id) = if let Some(token) = token {
        let (pending, _) = super::mfa::pending_sign_in(&state, &token).await?;
        let passkeys: Vec<Passkey> = state
            .store
            .sessions()
            .passkeys_of(pending.user_id.clone())
            .await?
            .iter()
            .filter_map(|p| serde_json::from_str(&p.credential).ok())
            .collect();
        if passkeys.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                "the account has no passkey; use a TOTP or recovery code",
            ));
        }
        let (options, auth) = rp
            .start_passkey_authentication(&passkeys)
            .map_err(ApiError::internal)?;
        let user_id = pending.user_id.clone();
        (
            serde_json::to_value(&options).map_err(ApiError::internal)?,
            SigningIn::Second {
                state: auth,
                user_id: pending.user_id,
                cookie: pending.cookie,
                mfa_token: token,
            },
            Some(user_id),
        )
    } else {
        let (options, auth) = rp
            .start_discoverable_authentication()
            .map_err(ApiError::internal)?;
        (
            serde_json::to_value(&options).map_err(ApiError::internal)?,
            SigningIn::First { state: auth },
            None,
        )
    };
    let payload = serde_json::to_string(&signing_in).map_err(ApiError::internal)?;
    let ceremony = put_ceremony(&state, TICKET_LOGIN, user_id, payload).await?;
    Ok(options_response(ceremony, options))
}

/// `POST /api/v1/auth/passkeys/login/finish` `{ceremonyId, credential, session?}` → the
/// token pair or cookie session.
pub(crate) async fn login_finish(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let rp = webauthn(&state)?;
    let replaced = cookie(
        req.headers(),
        cookie_name(state.settings.auth.cookie_secure),
    );
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let credential: PublicKeyCredential = credential(&mut body)?;
    let session_choice = super::session::session_choice(&mut body)?;
    let ticket = take_ceremony(&state, TICKET_LOGIN, &mut body).await?;
    let signing_in: SigningIn =
        serde_json::from_str(&ticket.payload).map_err(ApiError::internal)?;
    let cred_id = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(credential.get_credential_id())
    };
    let (row, result, cookie_session) = match signing_in {
        SigningIn::First { state: auth } => {
            let (handle, _) = rp
                .identify_discoverable_authentication(&credential)
                .map_err(|_| refused("the passkey names no account"))?;
            let row = state
                .store
                .sessions()
                .passkeys_by_handle(handle.to_string())
                .await?
                .into_iter()
                .find(|p| p.id == cred_id)
                .ok_or_else(|| refused("this passkey is not registered"))?;
            let passkey: Passkey =
                serde_json::from_str(&row.credential).map_err(ApiError::internal)?;
            let result = rp.finish_discoverable_authentication_v2(&credential, auth, &passkey);
            (row, result, session_choice)
        }
        SigningIn::Second {
            state: auth,
            user_id,
            cookie,
            mfa_token,
        } => {
            let (pending, _) = super::mfa::pending_sign_in(&state, &mfa_token).await?;
            if pending.user_id != user_id {
                return Err(ceremony_gone());
            }
            let row = state
                .store
                .sessions()
                .passkeys_of(user_id)
                .await?
                .into_iter()
                .find(|p| p.id == cred_id)
                .ok_or_else(|| refused("this passkey is not one of the account's"))?;
            (
                row,
                rp.finish_passkey_authentication(&credential, &auth),
                cookie,
            )
        }
    };
    let result = result.map_err(|e| match e {
        WebauthnError::CredentialPossibleCompromise => {
            tracing::warn!(passkey = %row.id, user_id = %row.user_id, "passkey counter went backwards: a copied authenticator?");
            refused("the passkey's signature counter did not increase: it may have been copied")
        }
        _ => refused("the passkey's signature was not accepted"),
    })?;
    let mut passkey: Passkey = serde_json::from_str(&row.credential).map_err(ApiError::internal)?;
    passkey.update_credential(&result);
    let counter = i64::from(result.counter());
    let used = state
        .store
        .sessions()
        .use_passkey(
            row.id.clone(),
            serde_json::to_string(&passkey).map_err(ApiError::internal)?,
            counter,
            format_datetime(state.clock.now()),
        )
        .await?;
    if !used {
        tracing::warn!(passkey = %row.id, user_id = %row.user_id, "passkey counter replayed");
        return Err(refused(
            "the passkey's signature counter did not increase: it may have been copied",
        ));
    }
    let user = user_record(&state, &row.user_id).await?;
    // A passkey with user verification is two factors in one (the device and its PIN or
    // biometric): no TOTP code is asked after it.
    super::session::sign_in(&state, &user, cookie_session, replaced).await
}

/// `GET /api/v1/auth/passkeys`: the caller's passkeys.
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) -> Result<Response, ApiError> {
    let user = account_owner(&identity)?;
    let rows = state.store.sessions().passkeys_of(user).await?;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|p| json!({"id": p.id, "name": p.name, "createdAt": p.created_at, "lastUsedAt": p.last_used_at}))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "data": data })))
}

/// `DELETE /api/v1/auth/passkeys/{id}`: removes a passkey, unless it is the last way the
/// user can sign in.
pub(crate) async fn remove(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let user = account_owner(&identity)?;
    let mine = state.store.sessions().passkeys_of(user.clone()).await?;
    if !mine.iter().any(|p| p.id == id) {
        return Err(ApiError::not_found("no such passkey"));
    }
    keep_a_way_in(
        &state,
        &user,
        "this is the last way to sign in to the account; set a password or link a provider first",
    )
    .await?;
    state.store.sessions().delete_passkey(user, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
