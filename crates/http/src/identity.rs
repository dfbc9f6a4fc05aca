//! Who is calling: a bearer access token, an API key, or a browser session cookie
//! (whose unsafe requests must also pass the CSRF checks). Anonymous otherwise.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferrobase_auth::TokenError;
use ferrobase_auth::secrets::{
    API_KEY_PREFIX, api_key_id, constant_time_eq, csrf_token, token_hash,
};
use ferrobase_schema::validate::format_datetime;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::AppState;

pub use ferrobase_access::{Caller, Identity, Via};

/// The user id a response was served for, for the request log.
#[derive(Debug, Clone)]
pub struct LoggedUser(pub String);

/// The session cookie's name: `__Host-` (Secure, host-only, path /) unless insecure
/// cookies were explicitly allowed (development over plain HTTP).
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-ferrobase_session"
    } else {
        "ferrobase_session"
    }
}

/// The value of a cookie in the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The client's address: the peer, or for trusted proxies the last untrusted address of
/// `X-Forwarded-For`.
pub fn client_ip(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Option<IpAddr> {
    let peer = peer?.ip();
    let trusted = |ip: &IpAddr| {
        state
            .settings
            .server
            .trusted_proxies
            .iter()
            .any(|n| n.contains(ip))
    };
    if !trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted(ip))
        .or(Some(peer))
}

/// The key of an anonymous client for throttles and limits: its address, or its /64 for
/// IPv6 (one host usually owns a whole /64, so finer keys would be free to multiply).
pub fn client_key(state: &AppState, req: &Request) -> String {
    client_key_of(state, req.headers(), peer(req))
}

/// [`client_key`] from a request's headers and peer address.
pub fn client_key_of(state: &AppState, headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
    match client_ip(state, headers, peer) {
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(ip) => format!("ip:{ip}"),
        None => "ip:unknown".into(),
    }
}

fn invalid(message: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        message,
    )
}

/// The role held in a loaded user record.
fn role_in(user: &Map<String, Value>) -> String {
    user.get("role")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The user record of `id` as a JSON map (without hidden fields), if it exists.
pub async fn load_user(state: &AppState, id: &str) -> Result<Option<Map<String, Value>>, ApiError> {
    Ok(state.records.user_map(id).await?)
}

async fn from_api_key(state: &AppState, key: &str) -> Result<Caller, ApiError> {
    let refused = || invalid("the API key is not valid");
    let id = api_key_id(key).ok_or_else(refused)?;
    let row = state
        .store
        .sessions()
        .api_key(id)
        .await?
        .ok_or_else(refused)?;
    if !constant_time_eq(row.key_hash.as_bytes(), token_hash(key).as_bytes())
        || row.revoked_at.is_some()
    {
        return Err(refused());
    }
    let now = format_datetime(state.clock.now());
    if row
        .expires_at
        .as_ref()
        .is_some_and(|e| e.as_str() <= now.as_str())
    {
        return Err(invalid("the API key has expired"));
    }
    let user = load_user(state, &row.user_id).await?.ok_or_else(refused)?;
    // Record use at most once a minute: not a write per request.
    let stale = format_datetime(state.clock.now() - time::Duration::minutes(1));
    if row
        .last_used_at
        .as_ref()
        .is_none_or(|t| t.as_str() < stale.as_str())
    {
        state
            .store
            .sessions()
            .touch_api_key(row.id.clone(), now, stale)
            .await?;
    }
    Ok(Caller {
        id: row.user_id,
        role: role_in(&user),
        user: Some(user),
        via: Via::ApiKey {
            id: row.id,
            scopes: row.scopes,
        },
    })
}

pub(crate) async fn from_session(
    state: &AppState,
    token: &str,
) -> Result<Option<Caller>, ApiError> {
    let Some(ferrobase_store::LiveSession {
        id: session_id,
        user_id,
    }) = state
        .store
        .sessions()
        .session(token_hash(token), state.clock.now())
        .await?
    else {
        return Ok(None);
    };
    let Some(user) = load_user(state, &user_id).await? else {
        return Ok(None);
    };
    Ok(Some(Caller {
        id: user_id,
        role: role_in(&user),
        user: Some(user),
        via: Via::Cookie { session_id },
    }))
}

/// Cookie-authenticated unsafe requests must carry the session's CSRF token and must not
/// come from another site. `token_required` is false for signing in and out, which must
/// work for a page that lost its token (a reload) while the cookie lives: those still
/// have to be same-site.
fn check_csrf(
    state: &AppState,
    headers: &HeaderMap,
    session_id: &str,
    token_required: bool,
) -> Result<(), ApiError> {
    let refuse = |why: &str| ApiError::forbidden_with(format!("cross-site request refused: {why}"));
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(refuse("Sec-Fetch-Site is not same-origin"));
    }
    if !origin_allowed(state, headers) {
        return Err(refuse("Origin is not this site"));
    }
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !token_required && sent.is_empty() {
        return Ok(());
    }
    // Tokens made with the previous secret stay good until their sessions end.
    let valid = state
        .csrf_keys
        .iter()
        .any(|key| constant_time_eq(sent.as_bytes(), csrf_token(key, session_id).as_bytes()));
    if !valid {
        return Err(refuse("missing or wrong X-CSRF-Token"));
    }
    Ok(())
}

/// Whether the request's `Origin` (when it has one) is this site or an allowed CORS
/// origin: a cookie must not act for a page of another site.
pub(crate) fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let own = origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest == host);
    own || state
        .settings
        .cors
        .allowed_origins
        .iter()
        .any(|o| o == origin)
}

/// The CSRF token of a cookie session (always made with the current secret).
pub(crate) fn session_csrf_token(state: &AppState, session_id: &str) -> String {
    csrf_token(&state.csrf_keys[0], session_id)
}

/// The credential a long-lived connection (a realtime stream) was opened with, to check
/// again while it lasts: a logout, a revoked key or session, a role change or a deleted
/// user must end what it may see.
#[derive(Debug, Clone)]
pub enum Credential {
    /// No credential: anonymous.
    None,
    /// `Authorization: Bearer` (an access token or an API key), or a realtime `auth`
    /// message's token.
    Bearer(String),
    /// The session cookie's value.
    Cookie(String),
}

impl Credential {
    /// The credential a request carries (the one [`authenticate`] used).
    pub fn of(state: &AppState, headers: &HeaderMap) -> Self {
        if let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
        {
            return Credential::Bearer(token.trim().to_owned());
        }
        match cookie(headers, cookie_name(state.settings.auth.cookie_secure)) {
            Some(token) => Credential::Cookie(token),
            None => Credential::None,
        }
    }

    /// Who the credential names now (`None`: nobody any more, or anonymous).
    pub async fn caller(&self, state: &AppState) -> Result<Option<Caller>, ApiError> {
        match self {
            Credential::None => Ok(None),
            Credential::Bearer(token) => Ok(Some(bearer_caller(state, token).await?.0)),
            Credential::Cookie(token) => from_session(state, token).await,
        }
    }
}

/// When the request's credential stops being good (unix seconds): the access token's
/// `exp`. Realtime streams end with an `expired` event then.
#[derive(Debug, Clone, Copy)]
pub struct CredentialExpiry(pub i64);

/// The caller a bearer credential (an access token or an API key) names, and when it
/// expires. Used for `Authorization` headers and for realtime's `auth` messages.
pub async fn bearer_caller(
    state: &AppState,
    token: &str,
) -> Result<(Caller, Option<i64>), ApiError> {
    if token.starts_with(API_KEY_PREFIX) {
        return from_api_key(state, token).await.map(|c| (c, None));
    }
    let now = state.clock.now().unix_timestamp();
    let claims = state.jwt.verify(token, now).map_err(|e| match e {
        TokenError::Expired => ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "TOKEN_EXPIRED",
            "the access token has expired; refresh it",
        ),
        TokenError::Invalid => invalid("the access token is not valid"),
    })?;
    // Rights above the default role are confirmed against the database on every
    // request: a demoted or deleted admin or editor must not keep them for the rest
    // of the token's life. A token with the default role (most traffic) is not looked
    // up: what it grants, every new user has; its holder's sessions end with a role
    // change, so it lasts at most `access_token_ttl` after one.
    if claims.role != state.schema.auth.default_role {
        let user = load_user(state, &claims.sub)
            .await?
            .ok_or_else(|| invalid("the access token is not valid"))?;
        let role = role_in(&user);
        return Ok((
            Caller {
                id: claims.sub,
                role,
                user: Some(user),
                via: Via::Bearer,
            },
            Some(claims.exp),
        ));
    }
    Ok((
        Caller {
            id: claims.sub,
            role: claims.role,
            user: None,
            via: Via::Bearer,
        },
        Some(claims.exp),
    ))
}

async fn identify(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
) -> Result<(Option<Caller>, Option<i64>), ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| invalid("the Authorization header is not valid"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("use Authorization: Bearer <token>"))?;
        let (caller, expires) = bearer_caller(state, token).await?;
        return Ok((Some(caller), expires));
    }
    let name = cookie_name(state.settings.auth.cookie_secure);
    let Some(token) = cookie(headers, name) else {
        return Ok((None, None));
    };
    let Some(caller) = from_session(state, &token).await? else {
        // A stale cookie is no credential at all: the caller is anonymous.
        return Ok((None, None));
    };
    let unsafe_method = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if let Via::Cookie { session_id } = &caller.via
        && unsafe_method
    {
        // Sign-in steps carry their own proof (a password, a code, a provider's state);
        // a provider's form post back (Apple) cannot carry a CSRF token.
        let signing_in_or_out = matches!(
            path,
            "/api/v1/auth/login"
                | "/api/v1/auth/logout"
                | "/api/v1/auth/register"
                | "/api/v1/auth/mfa/verify"
                | "/api/v1/auth/oauth/exchange"
                | "/api/v1/auth/passkeys/login/start"
                | "/api/v1/auth/passkeys/login/finish"
        ) || (path.starts_with("/api/v1/auth/oauth/")
            && path.ends_with("/callback"));
        check_csrf(state, headers, session_id, !signing_in_or_out)?;
    }
    Ok((Some(caller), None))
}

/// Middleware: resolves the identity of every API request (401 for bad credentials),
/// then applies the rate limit.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let identified = identify(&state, req.headers(), req.method(), req.uri().path()).await;
    match identified {
        Ok((caller, expires)) => {
            let user = caller.as_ref().map(|c| c.id.clone());
            req.extensions_mut().insert(Identity(caller));
            if let Some(at) = expires {
                req.extensions_mut().insert(CredentialExpiry(at));
            }
            // Rate limiting runs here rather than as a layer of its own: who the caller
            // is decides whose quota the request counts against, and one middleware
            // fewer is one boxed future fewer per request.
            let mut res = crate::ratelimit::rate_limit(&state, req, next).await;
            if let Some(id) = user {
                res.extensions_mut().insert(LoggedUser(id));
            }
            res
        }
        Err(e) => {
            let key = client_key(&state, &req);
            if let Some(refused) = crate::ratelimit::charge_failed_authentication(&state, key).await
            {
                return refused;
            }
            e.into_response()
        }
    }
}

/// The peer address, when the server was started with connection info.
pub fn peer(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}
