//! Speaks to the OAuth 2.0 / OpenID Connect providers of `[auth.oauth.<name>]` (SPEC §6):
//! discovery of an issuer's endpoints, the authorization URL with PKCE (S256), the code
//! exchange, the ID token checked against the provider's published keys (cached, fetched
//! again for an unknown `kid`), and the user APIs of the plain OAuth 2.0 providers (GitHub,
//! Discord). The sign-in flow around it (state, browser binding, accounts) is the HTTP
//! layer's.
//!
//! Every outbound call has a timeout, follows no redirect and reads a bounded body.
#![forbid(unsafe_code)]

pub mod id_token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ferrobase_schema::settings::{OAuthProvider, ProviderKind};
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

pub use id_token::{Expected, IdClaims, verify_id_token};

/// How long discovered endpoints and keys are trusted before they are fetched again.
const CACHE_TTL: Duration = Duration::from_secs(3600);
/// An unknown `kid` fetches the keys again at most this often (a rotation is rare; a
/// flood of forged tokens must not turn into a flood of requests to the provider).
const KEY_REFRESH_MIN: Duration = Duration::from_secs(10);
/// Largest body read from a provider.
const MAX_BODY: usize = 256 * 1024;

/// What went wrong with a provider, with the stable code the API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthError {
    /// The provider could not be reached or answered something unusable.
    Unavailable(String),
    /// The provider refused the code (expired, used, issued to another client).
    Rejected(String),
    /// The ID token failed a check (signature, issuer, audience, expiry, nonce).
    IdToken(String),
}

impl OAuthError {
    /// The error code of the API.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "PROVIDER_UNAVAILABLE",
            Self::Rejected(_) => "OAUTH_CODE_REJECTED",
            Self::IdToken(_) => "ID_TOKEN_INVALID",
        }
    }

    /// What happened, for the log and the client.
    pub fn message(&self) -> &str {
        match self {
            Self::Unavailable(m) | Self::Rejected(m) | Self::IdToken(m) => m,
        }
    }
}

/// The account a provider vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The provider's stable id of the account.
    pub subject: String,
    /// Its email, if the provider gave one.
    pub email: Option<String>,
    /// Whether the provider says it verified that email.
    pub email_verified: bool,
    /// A display name, if any.
    pub name: Option<String>,
}

/// The PKCE challenge (S256) of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// What one authorization request carries.
#[derive(Debug, Clone, Copy)]
pub struct Authorize<'a> {
    /// Where the provider sends the browser back (the callback).
    pub redirect_uri: &'a str,
    /// The signed state.
    pub state: &'a str,
    /// The nonce the ID token must carry.
    pub nonce: &'a str,
    /// The PKCE verifier (only its challenge is sent).
    pub verifier: &'a str,
}

/// An OpenID provider's discovered metadata (the parts used).
#[derive(Debug, Clone, Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

struct Cached<T> {
    value: T,
    at: Instant,
}

struct Provider {
    config: OAuthProvider,
    metadata: Mutex<Option<Cached<Arc<Metadata>>>>,
    keys: Mutex<Option<Cached<Arc<JwkSet>>>>,
}

/// The configured providers and one HTTP client to reach them.
#[derive(Clone)]
pub struct Providers {
    http: reqwest::Client,
    by_name: Arc<HashMap<String, Arc<Provider>>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("names", &self.by_name.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl Providers {
    /// The providers of `[auth.oauth]`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS roots).
    pub fn new(config: &[OAuthProvider]) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("ferrobase/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("the OAuth HTTP client: {e}"))?;
        let by_name = config
            .iter()
            .map(|p| {
                let provider = Provider {
                    config: p.clone(),
                    metadata: Mutex::new(None),
                    keys: Mutex::new(None),
                };
                (p.name.clone(), Arc::new(provider))
            })
            .collect();
        Ok(Self {
            http,
            by_name: Arc::new(by_name),
        })
    }

    /// No providers at all (OAuth sign-in off).
    pub fn none() -> Self {
        Self {
            http: reqwest::Client::new(),
            by_name: Arc::new(HashMap::new()),
        }
    }

    /// Whether `name` is a configured provider.
    pub fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The configured providers' names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    fn provider(&self, name: &str) -> Result<&Arc<Provider>, OAuthError> {
        self.by_name
            .get(name)
            .ok_or_else(|| OAuthError::Unavailable(format!("no provider '{name}'")))
    }

    /// Where to send the browser to sign in at `name`.
    ///
    /// # Errors
    /// When the provider's endpoints cannot be discovered.
    pub async fn authorize_url(
        &self,
        name: &str,
        req: Authorize<'_>,
    ) -> Result<String, OAuthError> {
        let provider = self.provider(name)?;
        let endpoint = match &provider.config.kind {
            ProviderKind::Oidc { .. } => self
                .metadata(provider)
                .await?
                .authorization_endpoint
                .clone(),
            ProviderKind::Github => "https://github.com/login/oauth/authorize".to_owned(),
            ProviderKind::Discord => "https://discord.com/oauth2/authorize".to_owned(),
        };
        let mut url = url::Url::parse(&endpoint).map_err(|_| {
            OAuthError::Unavailable("the authorization endpoint is not a URL".into())
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &provider.config.client_id)
                .append_pair("redirect_uri", req.redirect_uri)
                .append_pair("scope", &provider.config.scopes.join(" "))
                .append_pair("state", req.state)
                .append_pair("code_challenge", &pkce_challenge(req.verifier))
                .append_pair("code_challenge_method", "S256");
            if let ProviderKind::Oidc { issuer } = &provider.config.kind {
                q.append_pair("nonce", req.nonce);
                // Apple sends the name and email scopes' answer only by form post.
                if issuer == "https://appleid.apple.com" {
                    q.append_pair("response_mode", "form_post");
                }
            }
        }
        Ok(url.into())
    }

    /// Trades the code for the account it signs in: the code exchange with the PKCE
    /// verifier, then the ID token's checks (OpenID) or the user API (GitHub, Discord).
    ///
    /// # Errors
    /// See [`OAuthError`].
    pub async fn finish(
        &self,
        name: &str,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        nonce: &str,
        now: i64,
    ) -> Result<Account, OAuthError> {
        let provider = self.provider(name)?;
        let config = &provider.config;
        let (token_endpoint, basic, metadata) = match &config.kind {
            ProviderKind::Oidc { .. } => {
                let m = self.metadata(provider).await?;
                // client_secret_basic is the default (RFC 8414); post only when it is the
                // one the provider takes.
                let basic =
                    m.token_endpoint_auth_methods_supported
                        .as_ref()
                        .is_none_or(|methods| {
                            methods.iter().any(|x| x == "client_secret_basic")
                                || !methods.iter().any(|x| x == "client_secret_post")
                        });
                (m.token_endpoint.clone(), basic, Some(m))
            }
            ProviderKind::Github => (
                "https://github.com/login/oauth/access_token".to_owned(),
                false,
                None,
            ),
            ProviderKind::Discord => (
                "https://discord.com/api/oauth2/token".to_owned(),
                false,
                None,
            ),
        };
        let secret = String::from_utf8_lossy(config.client_secret.expose()).into_owned();
        let (body, authorization) = token_request(
            &config.client_id,
            &secret,
            code,
            redirect_uri,
            verifier,
            basic,
        );
        let mut request = self
            .http
            .post(&token_endpoint)
            .header("accept", "application/json")
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = request.body(body).send().await.map_err(|e| {
            OAuthError::Unavailable(format!("the token endpoint: {}", without_url(&e)))
        })?;
        let status = response.status();
        let body = read_body(response).await?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorAnswer>(&body) {
                Ok(e) if status.is_client_error() => OAuthError::Rejected(format!(
                    "the provider refused the code: {}{}",
                    e.error,
                    e.error_description
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                )),
                _ => OAuthError::Unavailable(format!("the token endpoint answered {status}")),
            });
        }
        // GitHub answers errors with 200 and an `error` member.
        if let Ok(e) = serde_json::from_slice::<ErrorAnswer>(&body) {
            return Err(OAuthError::Rejected(format!(
                "the provider refused the code: {}",
                e.error
            )));
        }
        let tokens: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            OAuthError::Unavailable("the token endpoint's answer is not a token".into())
        })?;
        match &config.kind {
            ProviderKind::Oidc { .. } => {
                let metadata =
                    metadata.ok_or_else(|| OAuthError::Unavailable("no metadata".into()))?;
                let id_token = tokens
                    .id_token
                    .ok_or_else(|| OAuthError::IdToken("the provider sent no ID token".into()))?;
                let claims = self
                    .checked_id_token(provider, &metadata, &id_token, nonce, now)
                    .await?;
                let mut account = Account {
                    subject: claims.sub.clone(),
                    email: claims.email.clone(),
                    email_verified: claims.email_verified(),
                    name: claims.name.clone(),
                };
                // Providers may keep the scope claims out of the ID token (OpenID Core
                // 5.4): then they come from the userinfo endpoint, for the same subject.
                if account.email.is_none()
                    && let Some(userinfo) = &metadata.userinfo_endpoint
                {
                    let info: IdClaims = self.get_json(userinfo, &tokens.access_token).await?;
                    if info.sub != claims.sub {
                        return Err(OAuthError::IdToken(
                            "userinfo is about another subject".into(),
                        ));
                    }
                    account.email = info.email.clone();
                    account.email_verified = info.email_verified();
                    account.name = account.name.or(info.name);
                }
                Ok(account)
            }
            ProviderKind::Github => self.github_account(&tokens.access_token).await,
            ProviderKind::Discord => self.discord_account(&tokens.access_token).await,
        }
    }

    async fn checked_id_token(
        &self,
        provider: &Provider,
        metadata: &Metadata,
        token: &str,
        nonce: &str,
        now: i64,
    ) -> Result<IdClaims, OAuthError> {
        let expected = Expected {
            issuer: &metadata.issuer,
            client_id: &provider.config.client_id,
            nonce,
            now,
        };
        let keys = self.keys(provider, metadata, false).await?;
        match verify_id_token(token, &keys, &expected) {
            Err(id_token::Failure::UnknownKey) => {
                // A rotation at the provider: fetch its keys again (rate limited).
                let keys = self.keys(provider, metadata, true).await?;
                verify_id_token(token, &keys, &expected)
                    .map_err(|f| OAuthError::IdToken(f.to_string()))
            }
            other => other.map_err(|f| OAuthError::IdToken(f.to_string())),
        }
    }

    async fn metadata(&self, provider: &Provider) -> Result<Arc<Metadata>, OAuthError> {
        let ProviderKind::Oidc { issuer } = &provider.config.kind else {
            return Err(OAuthError::Unavailable("not an OpenID provider".into()));
        };
        let mut cached = provider.metadata.lock().await;
        if let Some(c) = cached.as_ref()
            && c.at.elapsed() < CACHE_TTL
        {
            return Ok(c.value.clone());
        }
        let url = format!("{issuer}/.well-known/openid-configuration");
        let metadata: Metadata = self.get_json(&url, "").await?;
        // OpenID Discovery 4.3: the issuer must be the one asked for. Microsoft's
        // multi-tenant documents name a `{tenantid}` template instead.
        let templated = metadata.issuer.contains("{tenantid}")
            && ["/common/", "/organizations/", "/consumers/"]
                .iter()
                .any(|t| issuer.contains(t));
        if metadata.issuer.trim_end_matches('/') != issuer && !templated {
            return Err(OAuthError::Unavailable(format!(
                "the discovery document names issuer {} instead of {issuer}",
                metadata.issuer
            )));
        }
        let loopback_http = issuer.starts_with("http://");
        for endpoint in [
            &metadata.authorization_endpoint,
            &metadata.token_endpoint,
            &metadata.jwks_uri,
        ]
        .into_iter()
        .chain(metadata.userinfo_endpoint.as_ref())
        {
            let ok = endpoint.starts_with("https://")
                || (loopback_http
                    && endpoint.starts_with("http://")
                    && same_host(endpoint, issuer));
            if !ok {
                return Err(OAuthError::Unavailable(format!(
                    "the discovery document names an endpoint that is not https: {endpoint}"
                )));
            }
        }
        let metadata = Arc::new(metadata);
        *cached = Some(Cached {
            value: metadata.clone(),
            at: Instant::now(),
        });
        Ok(metadata)
    }

    async fn keys(
        &self,
        provider: &Provider,
        metadata: &Metadata,
        refresh: bool,
    ) -> Result<Arc<JwkSet>, OAuthError> {
        let mut cached = provider.keys.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = c.at.elapsed() < CACHE_TTL;
            if (fresh && !refresh) || (refresh && c.at.elapsed() < KEY_REFRESH_MIN) {
                return Ok(c.value.clone());
            }
        }
        let keys: JwkSet = match self.get_json(&metadata.jwks_uri, "").await {
            Ok(keys) => keys,
            // The provider's keys rotate rarely: while it cannot be reached, the keys
            // known before still verify the tokens they signed.
            Err(e) => match cached.as_ref() {
                Some(stale) => {
                    tracing::warn!(
                        error = e.message(),
                        "OAuth keys not refreshed; using the known ones"
                    );
                    return Ok(stale.value.clone());
                }
                None => return Err(e),
            },
        };
        let keys = Arc::new(keys);
        *cached = Some(Cached {
            value: keys.clone(),
            at: Instant::now(),
        });
        Ok(keys)
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        bearer: &str,
    ) -> Result<T, OAuthError> {
        let mut request = self.http.get(url).header("accept", "application/json");
        if !bearer.is_empty() {
            request = request.header("authorization", format!("Bearer {bearer}"));
        }
        let response = request
            .send()
            .await
            .map_err(|e| OAuthError::Unavailable(format!("{url}: {}", without_url(&e))))?;
        let status = response.status();
        if !status.is_success() {
            return Err(OAuthError::Unavailable(format!("{url} answered {status}")));
        }
        let body = read_body(response).await?;
        serde_json::from_slice(&body)
            .map_err(|e| OAuthError::Unavailable(format!("{url} answered unusable JSON: {e}")))
    }

    async fn github_account(&self, token: &str) -> Result<Account, OAuthError> {
        #[derive(Deserialize)]
        struct User {
            id: i64,
            #[serde(default)]
            name: Option<String>,
            login: String,
        }
        #[derive(Deserialize)]
        struct Email {
            email: String,
            primary: bool,
            verified: bool,
        }
        let user: User = self.get_json("https://api.github.com/user", token).await?;
        let emails: Vec<Email> = self
            .get_json("https://api.github.com/user/emails", token)
            .await?;
        // The primary address if it is verified, else any verified one.
        let email = emails
            .iter()
            .filter(|e| e.verified)
            .max_by_key(|e| e.primary)
            .map(|e| e.email.clone());
        Ok(Account {
            subject: user.id.to_string(),
            email_verified: email.is_some(),
            email,
            name: user.name.or(Some(user.login)),
        })
    }

    async fn discord_account(&self, token: &str) -> Result<Account, OAuthError> {
        #[derive(Deserialize)]
        struct User {
            id: String,
            username: String,
            #[serde(default)]
            global_name: Option<String>,
            #[serde(default)]
            email: Option<String>,
            #[serde(default)]
            verified: Option<bool>,
        }
        let user: User = self
            .get_json("https://discord.com/api/users/@me", token)
            .await?;
        Ok(Account {
            subject: user.id,
            email_verified: user.verified == Some(true) && user.email.is_some(),
            email: user.email,
            name: user.global_name.or(Some(user.username)),
        })
    }
}

/// The token request's form, and its `Authorization` header for client_secret_basic (the
/// id and secret form-encoded first, RFC 6749 2.3.1); otherwise they go in the form.
fn token_request(
    client_id: &str,
    secret: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
    basic: bool,
) -> (String, Option<String>) {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_verifier", verifier);
    if basic {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let pair = format!("{}:{}", enc(client_id), enc(secret));
        (
            form.finish(),
            Some(format!("Basic {}", STANDARD.encode(pair))),
        )
    } else {
        form.append_pair("client_id", client_id)
            .append_pair("client_secret", secret);
        (form.finish(), None)
    }
}

fn same_host(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.host_str() == b.host_str(),
        _ => false,
    }
}

/// A transport error without the URL (which may carry a code).
fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else if e.is_redirect() {
        "redirected elsewhere".into()
    } else {
        "the request failed".into()
    }
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, OAuthError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| OAuthError::Unavailable(format!("reading the answer: {}", without_url(&e))))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(OAuthError::Unavailable(
                "the provider's answer is too large".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
