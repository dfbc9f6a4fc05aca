//! Sign-in with OAuth 2.0 / OpenID Connect providers (SPEC §6):
//! `GET /api/v1/auth/oauth/{provider}?redirect_to=` → the provider → `…/callback` → the
//! client's `redirect_to?code=` → `POST /api/v1/auth/oauth/exchange {code}` → the usual
//! token pair or cookie session. And the user's linked identities.
//!
//! The sign-in under way is a database ticket (any node finishes what another began),
//! named by a `state` that is signed (forgeries are refused before any lookup), used once
//! (taken by a delete), expires in ten minutes, and is bound to the browser that began it
//! by a cookie whose hash it keeps. The PKCE verifier and the nonce never leave the server.
//! An account is linked by the provider's *verified* email only, and only to a local
//! account whose own address is verified.

use axum::Extension;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrobase_auth::secrets::{constant_time_eq, mac, random_token, token_hash};
use ferrobase_records::Registrant;
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::IdentityRow;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{put_ticket, required_string, user_record, user_text};
use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::identity::{Identity, Via, cookie, cookie_name};
use crate::records::json_response;
use crate::state::AppState;

/// How long a sign-in may stay at the provider.
const STATE_TTL_SECS: i64 = 600;
/// How long the client has to trade the one-time code.
const CODE_TTL_SECS: i64 = 60;
const TICKET_STATE: &str = "oauth";
const TICKET_CODE: &str = "oauth-code";

/// What the server keeps of a sign-in under way.
#[derive(Serialize, Deserialize)]
struct Pending {
    provider: String,
    verifier: String,
    nonce: String,
    redirect_to: String,
    redirect_uri: String,
    /// Hash of the browser's binding cookie.
    binding: String,
    /// The app's own PKCE challenge (S256) for the exchange, when it sent one.
    #[serde(default)]
    app_challenge: Option<String>,
}

/// What the one-time code's exchange must show: the app's PKCE verifier when it sent a
/// challenge, otherwise the binding cookie of the browser that signed in. A code carried
/// to another browser (login CSRF: signing a victim in as the attacker) is worthless.
#[derive(Serialize, Deserialize)]
struct Redeem {
    binding: String,
    #[serde(default)]
    app_challenge: Option<String>,
}

fn binding_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-ferrobase_oauth"
    } else {
        "ferrobase_oauth"
    }
}

fn query_map(uri: &axum::http::Uri) -> Map<String, Value> {
    uri.query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// `{public_url}/api/v1/auth/oauth/{provider}/callback`; without a public URL (never in
/// production) the request's own host, for local development.
fn callback_uri(state: &AppState, headers: &HeaderMap, provider: &str) -> Result<String, ApiError> {
    let base = match &state.settings.server.public_url {
        Some(url) => url.clone(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| {
                    h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b))
                })
                .ok_or_else(|| {
                    ApiError::bad_request("the request has no usable Host; set [server] public_url")
                })?;
            format!("http://{host}")
        }
    };
    Ok(format!("{base}/api/v1/auth/oauth/{provider}/callback"))
}

/// `url` with `pairs` in its query, replacing any parameters of the same names (an
/// allowed page named with `?code=` of the attacker's must not carry it along).
fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    const OURS: [&str; 3] = ["code", "error", "error_description"];
    match url::Url::parse(url) {
        Ok(mut u) => {
            let kept: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| !OURS.contains(&k.as_ref()))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            {
                let mut q = u.query_pairs_mut();
                q.clear().extend_pairs(kept);
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            u.into()
        }
        Err(_) => url.to_owned(),
    }
}

/// A new binding cookie value: random, signed, so that only values this server set are
/// used again (a sibling subdomain cannot plant one).
fn new_binding(state: &AppState) -> String {
    let value = random_token();
    let sig = mac(&state.oauth_key, "binding", &value);
    format!("{value}.{sig}")
}

fn binding_is_ours(state: &AppState, cookie: &str) -> bool {
    cookie.split_once('.').is_some_and(|(value, sig)| {
        constant_time_eq(
            sig.as_bytes(),
            mac(&state.oauth_key, "binding", value).as_bytes(),
        )
    })
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut res = status.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn unknown_provider(name: &str) -> ApiError {
    ApiError::not_found(format!("no OAuth provider '{name}' is configured"))
}

fn state_refused(why: &str) -> ApiError {
    ApiError::bad_request(format!("{why}; start the sign-in again"))
}

/// `GET /api/v1/auth/oauth/{provider}?redirect_to=`: sends the browser to the provider.
pub(crate) async fn start(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    if !state.oauth.has(&provider) {
        return Err(unknown_provider(&provider));
    }
    let query = query_map(req.uri());
    let redirect_to = match query.get("redirect_to") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(ApiError::validation(
                [("redirect_to".to_owned(), vec!["is required".to_owned()])].into(),
            ));
        }
    };
    if !state.settings.auth.redirect_allowed(&redirect_to) {
        return Err(ApiError::validation(
            [(
                "redirect_to".to_owned(),
                vec!["is not in [auth] redirect_allowlist".to_owned()],
            )]
            .into(),
        ));
    }
    let secure = state.settings.auth.cookie_secure;
    let name = binding_cookie_name(secure);
    // One binding per browser: sign-ins begun in two tabs both finish.
    let binding = cookie(req.headers(), name)
        .filter(|b| binding_is_ours(&state, b))
        .unwrap_or_else(|| new_binding(&state));
    let app_challenge = match query.get("code_challenge") {
        None => None,
        Some(Value::String(c))
            if (43..=128).contains(&c.len())
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(c.clone())
        }
        Some(_) => {
            return Err(ApiError::validation(
                [(
                    "code_challenge".to_owned(),
                    vec![
                        "must be a PKCE S256 challenge (43 to 128 base64url characters)".to_owned(),
                    ],
                )]
                .into(),
            ));
        }
    };
    let redirect_uri = callback_uri(&state, req.headers(), &provider)?;
    let id = random_token();
    let signed_state = format!("{id}.{}", mac(&state.oauth_key, "state", &id));
    let pending = Pending {
        provider: provider.clone(),
        verifier: random_token(),
        nonce: random_token(),
        redirect_to,
        redirect_uri: redirect_uri.clone(),
        binding: token_hash(&binding),
        app_challenge,
    };
    let location = state
        .oauth
        .authorize_url(
            &provider,
            ferrobase_oauth::Authorize {
                redirect_uri: &redirect_uri,
                state: &signed_state,
                nonce: &pending.nonce,
                verifier: &pending.verifier,
            },
        )
        .await
        .map_err(|e| provider_down(&provider, &e))?;
    let payload = serde_json::to_string(&pending).map_err(ApiError::internal)?;
    put_ticket(&state, TICKET_STATE, id, None, payload, STATE_TTL_SECS).await?;
    let mut res = redirect(StatusCode::FOUND, &location);
    // SameSite=None lets a provider's form post (Apple) bring it back; it authenticates
    // nothing by itself. Without Secure, browsers refuse None: Lax then.
    let cookie = format!(
        "{name}={binding}; Path=/; HttpOnly; Max-Age={STATE_TTL_SECS}; {}",
        if secure {
            "SameSite=None; Secure"
        } else {
            "SameSite=Lax"
        }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

fn provider_down(provider: &str, e: &ferrobase_oauth::OAuthError) -> ApiError {
    tracing::warn!(
        provider,
        code = e.code(),
        error = e.message(),
        "OAuth provider problem"
    );
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "UNAVAILABLE",
        format!("the provider '{provider}' cannot be reached right now"),
    )
}

/// `GET|POST /api/v1/auth/oauth/{provider}/callback`: where the provider returns.
pub(crate) async fn callback(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    if !state.oauth.has(&provider) {
        return Err(unknown_provider(&provider));
    }
    let secure = state.settings.auth.cookie_secure;
    let binding = cookie(req.headers(), binding_cookie_name(secure));
    // `response_mode=form_post` (Apple) answers with a form instead of a query.
    let params = if req.method() == Method::POST {
        let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
            .await
            .map_err(|_| ApiError::bad_request("the callback's form is too large"))?;
        form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect()
    } else {
        query_map(req.uri())
    };
    let param = |k: &str| params.get(k).and_then(Value::as_str).unwrap_or_default();
    let signed = param("state");
    let Some((id, sig)) = signed.split_once('.') else {
        return Err(state_refused("the state is missing or malformed"));
    };
    if !constant_time_eq(
        sig.as_bytes(),
        mac(&state.oauth_key, "state", id).as_bytes(),
    ) {
        return Err(state_refused("the state was not issued by this server"));
    }
    let now = state.clock.now();
    let Some(ticket) = state
        .store
        .sessions()
        .take_ticket(TICKET_STATE.into(), id.to_owned(), format_datetime(now))
        .await?
    else {
        return Err(state_refused(
            "this sign-in was finished already or has expired",
        ));
    };
    let pending: Pending = serde_json::from_str(&ticket.payload).map_err(ApiError::internal)?;
    if pending.provider != provider {
        return Err(state_refused("the state belongs to another provider"));
    }
    let same_browser = binding
        .as_deref()
        .is_some_and(|b| constant_time_eq(token_hash(b).as_bytes(), pending.binding.as_bytes()));
    if !same_browser {
        return Err(state_refused("this sign-in was begun in another browser"));
    }
    // From here on the client's page is known and allowed: failures go back to it.
    let fail = |error: &str, description: &str| {
        Ok(redirect(
            StatusCode::SEE_OTHER,
            &with_query(
                &pending.redirect_to,
                &[("error", error), ("error_description", description)],
            ),
        ))
    };
    if !param("error").is_empty() {
        let error = if param("error") == "access_denied" {
            "access_denied"
        } else {
            "provider_error"
        };
        return fail(error, "the provider did not sign you in");
    }
    let code = param("code");
    if code.is_empty() {
        return fail("provider_error", "the provider sent no code");
    }
    let account = match state
        .oauth
        .finish(
            &provider,
            code,
            &pending.redirect_uri,
            &pending.verifier,
            &pending.nonce,
            now.unix_timestamp(),
        )
        .await
    {
        Ok(account) => account,
        Err(e) => {
            tracing::warn!(
                provider,
                code = e.code(),
                error = e.message(),
                "OAuth sign-in refused"
            );
            let error = match &e {
                ferrobase_oauth::OAuthError::IdToken(_) => "invalid_id_token",
                ferrobase_oauth::OAuthError::Rejected(_) => "invalid_grant",
                ferrobase_oauth::OAuthError::Unavailable(_) => "provider_error",
            };
            return fail(error, "the provider's answer was not accepted; try again");
        }
    };
    let user_id = match account_user(&state, &provider, &account).await? {
        Ok(id) => id,
        Err((error, description)) => return fail(error, description),
    };
    let code = random_token();
    let id = token_hash(&code);
    let redeem = serde_json::to_string(&Redeem {
        binding: pending.binding.clone(),
        app_challenge: pending.app_challenge.clone(),
    })
    .map_err(ApiError::internal)?;
    put_ticket(
        &state,
        TICKET_CODE,
        id,
        Some(user_id),
        redeem,
        CODE_TTL_SECS,
    )
    .await?;
    Ok(redirect(
        StatusCode::SEE_OTHER,
        &with_query(&pending.redirect_to, &[("code", &code)]),
    ))
}

type Refusal = (&'static str, &'static str);

/// The user a provider's account signs in: linked before, linked now by a verified email
/// to an account whose address is verified, or a new account.
async fn account_user(
    state: &AppState,
    provider: &str,
    account: &ferrobase_oauth::Account,
) -> Result<Result<String, Refusal>, ApiError> {
    if let Some(id) = state
        .store
        .sessions()
        .identity_user(provider.to_owned(), account.subject.clone())
        .await?
    {
        return Ok(Ok(id));
    }
    let Some(email) = account
        .email
        .as_ref()
        .filter(|_| account.email_verified)
        // ASCII case only: Unicode folding makes other addresses equal (K and the Kelvin
        // sign), and an address must match exactly to be linked.
        .map(|e| e.to_ascii_lowercase())
    else {
        return Ok(Err((
            "email_not_verified",
            "the provider did not give a verified email address",
        )));
    };
    let now = format_datetime(state.clock.now());
    let link = |user_id: String| IdentityRow {
        provider: provider.to_owned(),
        subject: account.subject.clone(),
        user_id,
        email: Some(email.clone()),
        created_at: now.clone(),
    };
    let user_id = match state
        .store
        .sessions()
        .user_id_by_email(email.clone())
        .await?
    {
        Some(existing) => {
            // An unverified local account may have been made by anyone who typed this
            // address: joining it would hand the provider's owner an account someone
            // else holds the password of.
            let record = user_record(state, &existing).await?;
            let (_, users) = state.users();
            let verified = users
                .fields
                .iter()
                .position(|f| f.name == "verified")
                .is_some_and(|i| record.values[i] == Value::Bool(true));
            if !verified {
                return Ok(Err((
                    "account_exists",
                    "an account with this email exists and its address is not verified; sign in to it with its password and verify the address first",
                )));
            }
            existing
        }
        None => {
            let (_, users) = state.users();
            let mut body = Map::new();
            body.insert("email".into(), Value::String(email.clone()));
            let mut planned = None;
            if let Some(name) = &account.name
                && users.fields.iter().any(|f| f.name == "name")
            {
                let mut named = body.clone();
                named.insert("name".into(), Value::String(name.clone()));
                // A name the schema refuses (too long, say) is left out, not fatal.
                planned = state
                    .records
                    .plan_account(Registrant::Visitor, named, Default::default())
                    .ok();
            }
            let planned = match planned {
                Some(p) => Ok(p),
                None => state
                    .records
                    .plan_account(Registrant::Visitor, body, Default::default()),
            };
            let Ok(planned) = planned else {
                return Ok(Err((
                    "profile_incomplete",
                    "the account needs fields the provider does not give; register with a password instead",
                )));
            };
            // No password: the account signs in through its providers and passkeys until
            // one is set (password reset).
            let record = match state
                .records
                .create_account(planned, String::new(), None)
                .await
            {
                Ok(record) => record,
                // Created by a concurrent sign-in of the same person.
                Err(ferrobase_records::RecordError::Store(
                    ferrobase_store::StoreError::Unique { .. },
                )) => {
                    return Ok(Err((
                        "account_exists",
                        "the account was just created; sign in again",
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            state.records.mark_verified(&record.id).await?;
            record.id
        }
    };
    if !state
        .store
        .sessions()
        .link_identity(link(user_id.clone()))
        .await?
    {
        // Linked by a concurrent callback: whoever won is the account.
        if let Some(id) = state
            .store
            .sessions()
            .identity_user(provider.to_owned(), account.subject.clone())
            .await?
        {
            return Ok(Ok(id));
        }
    }
    Ok(Ok(user_id))
}

/// `POST /api/v1/auth/oauth/exchange`: `{code, session?}` → the token pair (or cookie
/// session), or `mfaRequired` when the account has a second factor.
pub(crate) async fn exchange(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let secure = state.settings.auth.cookie_secure;
    let replaced = cookie(req.headers(), cookie_name(secure));
    let binding = cookie(req.headers(), binding_cookie_name(secure));
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let code = required_string(&mut body, "code")?;
    let verifier = match body.remove("code_verifier") {
        None => None,
        Some(Value::String(v)) => Some(v),
        Some(_) => {
            return Err(ApiError::validation(
                [(
                    "code_verifier".to_owned(),
                    vec!["must be a string".to_owned()],
                )]
                .into(),
            ));
        }
    };
    let cookie_session = super::session::session_choice(&mut body)?;
    if let Some(key) = body.keys().next() {
        return Err(ApiError::validation(
            [(
                key.clone(),
                vec!["is not a member of the exchange".to_owned()],
            )]
            .into(),
        ));
    }
    let now = format_datetime(state.clock.now());
    let ticket = state
        .store
        .sessions()
        .take_ticket(TICKET_CODE.into(), token_hash(&code), now)
        .await?;
    let refused = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message);
    let Some((user_id, payload)) = ticket.and_then(|t| t.user_id.map(|u| (u, t.payload))) else {
        return Err(refused(
            "the code is not valid: it was used, has expired or was never issued",
        ));
    };
    let redeem: Redeem = serde_json::from_str(&payload).map_err(ApiError::internal)?;
    let shown = match (&redeem.app_challenge, verifier) {
        (Some(challenge), Some(verifier)) => constant_time_eq(
            ferrobase_oauth::pkce_challenge(&verifier).as_bytes(),
            challenge.as_bytes(),
        ),
        (Some(_), None) => false,
        (None, _) => binding
            .as_deref()
            .is_some_and(|b| constant_time_eq(token_hash(b).as_bytes(), redeem.binding.as_bytes())),
    };
    if !shown {
        return Err(refused(if redeem.app_challenge.is_some() {
            "the code_verifier does not match the code_challenge the sign-in began with"
        } else {
            "the code belongs to another browser's sign-in (or send the code_verifier of a code_challenge)"
        }));
    }
    let user = user_record(&state, &user_id).await?;
    let hash = user_text(&state, &user, "password_hash")
        .unwrap_or_default()
        .to_owned();
    super::session::first_factor_done(&state, &user, cookie_session, replaced, &hash).await
}

/// The ways a user can sign in: a password, linked providers, passkeys.
pub(crate) async fn sign_in_methods(state: &AppState, user_id: &str) -> Result<usize, ApiError> {
    let user = user_record(state, user_id).await?;
    let password =
        usize::from(user_text(state, &user, "password_hash").is_some_and(|h| !h.is_empty()));
    let identities = state
        .store
        .sessions()
        .identities(user_id.to_owned())
        .await?
        .len();
    let passkeys = state
        .store
        .sessions()
        .passkeys_of(user_id.to_owned())
        .await?
        .len();
    Ok(password + identities + passkeys)
}

/// A signed-in caller managing their own sign-in methods (not an API key).
pub(crate) fn account_owner(identity: &Identity) -> Result<String, ApiError> {
    let caller = identity.caller().ok_or_else(ApiError::unauthorized)?;
    if matches!(caller.via, Via::ApiKey { .. }) {
        return Err(ApiError::forbidden_with(
            "API keys cannot manage sign-in methods",
        ));
    }
    Ok(caller.id.clone())
}

/// `GET /api/v1/auth/identities`: the caller's linked providers.
pub(crate) async fn identities(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) -> Result<Response, ApiError> {
    let user = account_owner(&identity)?;
    let rows = state.store.sessions().identities(user).await?;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|r| json!({"provider": r.provider, "email": r.email, "createdAt": r.created_at}))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "data": data })))
}

/// `DELETE /api/v1/auth/identities/{provider}`: unlinks a provider, unless it is the
/// last way the user can sign in.
pub(crate) async fn unlink(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(provider): Path<String>,
) -> Result<Response, ApiError> {
    let user = account_owner(&identity)?;
    let linked = state.store.sessions().identities(user.clone()).await?;
    if !linked.iter().any(|r| r.provider == provider) {
        return Err(ApiError::not_found(format!(
            "no identity from '{provider}' is linked"
        )));
    }
    // What is left after unlinking (every account at this provider goes) must still let
    // the owner in.
    let at_provider = linked.iter().filter(|r| r.provider == provider).count();
    if sign_in_methods(&state, &user).await? <= at_provider {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            "this is the last way to sign in to the account; set a password or add a passkey first",
        ));
    }
    state
        .store
        .sessions()
        .unlink_identity(user, provider)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
