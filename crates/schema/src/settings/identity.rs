//! Settings of sign-in beyond passwords (SPEC §6): `[server] public_url`, `[auth]
//! redirect_allowlist`, `[auth.oauth.<name>]` providers and `[auth.passkeys]`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use toml_edit::Item;

use super::{Environment, Loader, Raw, Secret, span_of};

/// The providers that need only a client id and secret.
pub const OAUTH_PRESETS: &[&str] = &[
    "google",
    "github",
    "microsoft",
    "apple",
    "gitlab",
    "discord",
];

/// How a provider is spoken to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenID Connect: endpoints from `{issuer}/.well-known/openid-configuration`, an ID
    /// token verified against the provider's keys. `{tenantid}` in Microsoft's multi-tenant
    /// issuer is the token's `tid`.
    Oidc {
        /// The issuer URL, exactly as the provider's tokens carry it.
        issuer: String,
    },
    /// GitHub (plain OAuth 2.0): the user and its verified emails from its API.
    Github,
    /// Discord (plain OAuth 2.0): the user, with its `verified` flag, from its API.
    Discord,
}

/// One `[auth.oauth.<name>]` provider.
#[derive(Debug, Clone)]
pub struct OAuthProvider {
    /// The name in the URL (`/api/v1/auth/oauth/{name}`) and in the identities list.
    pub name: String,
    /// How it is spoken to.
    pub kind: ProviderKind,
    /// The client id the provider issued.
    pub client_id: String,
    /// The client secret (`env:NAME` reads it from the environment).
    pub client_secret: Secret,
    /// Scopes asked for.
    pub scopes: Vec<String>,
}

/// `[auth.passkeys]`: the WebAuthn relying party.
#[derive(Debug, Clone)]
pub struct PasskeySettings {
    /// The relying party id: the site's registrable domain or host (`example.com`).
    pub rp_id: String,
    /// The name authenticators show.
    pub rp_name: String,
    /// The page origins ceremonies may come from (`https://app.example.com`).
    pub origins: Vec<String>,
}

const OAUTH_KEYS: &[&str] = &[
    "preset",
    "issuer",
    "client_id",
    "client_secret",
    "scopes",
    "tenant",
];
const PASSKEY_KEYS: &[&str] = &["enabled", "rp_id", "rp_name", "origins"];

/// Whether `host` names this machine (`localhost`, `127.0.0.1`, `[::1]`).
fn loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An origin (`scheme://host[:port]`) of an absolute URL.
fn origin_of(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

impl Loader<'_> {
    /// `[server] public_url`: the address users reach this deployment at.
    pub(super) fn public_url(&mut self) -> Option<String> {
        self.get("server", "public_url", None, |v| {
            let text = v.string()?;
            if text.is_empty() {
                return Ok(None);
            }
            let url =
                url::Url::parse(&text).map_err(|_| format!("'{text}' is not an absolute URL"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err("must be an http:// or https:// URL".into());
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err("must not carry a query or a fragment".into());
            }
            Ok(Some(text.trim_end_matches('/').to_owned()))
        })
    }

    /// `[auth] redirect_allowlist`: exact URLs or origins a sign-in may return to.
    pub(super) fn redirect_allowlist(&mut self) -> Vec<String> {
        self.get("auth", "redirect_allowlist", Vec::new(), |v| {
            let entries = v.list()?;
            for entry in &entries {
                let url = url::Url::parse(entry).map_err(|_| {
                    format!("'{entry}' is not an absolute URL or origin (https://app.example.com)")
                })?;
                if !matches!(url.scheme(), "http" | "https") || url.fragment().is_some() {
                    return Err(format!(
                        "'{entry}' must be an http(s) URL without a fragment"
                    ));
                }
            }
            Ok(entries)
        })
    }

    /// `[auth.oauth.<name>]` tables, every problem of every provider reported.
    pub(super) fn oauth(
        &mut self,
        env: &BTreeMap<String, String>,
        environment: Environment,
    ) -> Vec<OAuthProvider> {
        let Some(Raw::File(item)) = self.values.get(&("auth".to_owned(), "oauth".to_owned()))
        else {
            if self
                .values
                .contains_key(&("auth".to_owned(), "oauth".to_owned()))
            {
                self.problem("auth", "oauth", "providers are declared in ferrobase.toml");
            }
            return Vec::new();
        };
        let item: &Item = item;
        let Some(table) = item.as_table_like() else {
            self.problem(
                "auth",
                "oauth",
                "must be a table of [auth.oauth.<name>] providers",
            );
            return Vec::new();
        };
        let file = self.file;
        let mut providers = Vec::new();
        let mut diags = Vec::new();
        for (name, provider) in table.iter() {
            let at = |item: Option<&Item>| item.and_then(span_of).or_else(|| span_of(provider));
            let mut problem = |span, message: String| {
                diags.push(file.diagnostic(span, format!("auth.oauth.{name}: {message}"), None));
            };
            let name_ok = !name.is_empty()
                && name.len() <= 40
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !name_ok {
                problem(
                    at(None),
                    "the name must be 1 to 40 characters of a-z, 0-9, '_' or '-'".into(),
                );
                continue;
            }
            let Some(keys) = provider.as_table_like() else {
                problem(at(None), "must be a table".into());
                continue;
            };
            for (key, value) in keys.iter() {
                if !OAUTH_KEYS.contains(&key) {
                    problem(
                        at(Some(value)),
                        format!("unknown key '{key}'; keys: {}", OAUTH_KEYS.join(", ")),
                    );
                }
            }
            let text = |key: &str| keys.get(key).and_then(Item::as_str).map(str::to_owned);
            for key in ["preset", "issuer", "client_id", "client_secret", "tenant"] {
                if keys.get(key).is_some_and(|v| v.as_str().is_none()) {
                    problem(at(keys.get(key)), format!("{key} must be a string"));
                }
            }
            // A provider named after a preset is that preset (an issuer then points it at
            // a self-hosted instance, such as a GitLab of one's own).
            let preset =
                text("preset").or_else(|| OAUTH_PRESETS.contains(&name).then(|| name.to_owned()));
            let issuer = text("issuer");
            let kind = match (preset.as_deref(), issuer) {
                (Some(p), _) if !OAUTH_PRESETS.contains(&p) => {
                    problem(
                        at(keys.get("preset")),
                        format!(
                            "unknown preset '{p}'; presets: {}",
                            OAUTH_PRESETS.join(", ")
                        ),
                    );
                    None
                }
                (Some("github"), None) => Some(ProviderKind::Github),
                (Some("discord"), None) => Some(ProviderKind::Discord),
                (Some("google"), None) => Some(ProviderKind::Oidc {
                    issuer: "https://accounts.google.com".into(),
                }),
                (Some("apple"), None) => Some(ProviderKind::Oidc {
                    issuer: "https://appleid.apple.com".into(),
                }),
                (Some("gitlab"), None) => Some(ProviderKind::Oidc {
                    issuer: "https://gitlab.com".into(),
                }),
                (Some("microsoft"), None) => {
                    let tenant = text("tenant").unwrap_or_else(|| "common".into());
                    let tenant_ok = !tenant.is_empty()
                        && tenant
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                    if !tenant_ok {
                        problem(
                            at(keys.get("tenant")),
                            format!("'{tenant}' is not a tenant"),
                        );
                    }
                    Some(ProviderKind::Oidc {
                        issuer: format!("https://login.microsoftonline.com/{tenant}/v2.0"),
                    })
                }
                (Some("github" | "discord"), Some(_)) => {
                    problem(
                        at(keys.get("issuer")),
                        "GitHub and Discord are not OpenID providers; leave out issuer".into(),
                    );
                    None
                }
                // An issuer given with an OpenID preset: a self-hosted GitLab, say.
                (_, Some(issuer)) => match url::Url::parse(&issuer) {
                    Ok(url)
                        if url.scheme() == "https"
                            && url.host_str().is_some()
                            && url.query().is_none() =>
                    {
                        Some(ProviderKind::Oidc {
                            issuer: issuer.trim_end_matches('/').to_owned(),
                        })
                    }
                    Ok(url)
                        if url.scheme() == "http"
                            && url.host_str().is_some_and(loopback)
                            && environment != Environment::Production =>
                    {
                        Some(ProviderKind::Oidc {
                            issuer: issuer.trim_end_matches('/').to_owned(),
                        })
                    }
                    Ok(url) if url.scheme() == "http" => {
                        problem(
                            at(keys.get("issuer")),
                            "an http:// issuer is accepted only on a loopback address outside production; use https://".into(),
                        );
                        None
                    }
                    _ => {
                        problem(
                            at(keys.get("issuer")),
                            format!("'{issuer}' is not an https:// issuer URL"),
                        );
                        None
                    }
                },
                (Some(_), None) | (None, None) => {
                    problem(
                        at(None),
                        format!(
                            "needs an issuer (any OpenID provider) or a preset ({})",
                            OAUTH_PRESETS.join(", ")
                        ),
                    );
                    None
                }
            };
            let client_id = text("client_id").filter(|s| !s.is_empty());
            if client_id.is_none() {
                problem(at(keys.get("client_id")), "client_id is required".into());
            }
            let secret = match text("client_secret") {
                None => {
                    problem(
                        at(keys.get("client_secret")),
                        "client_secret is required".into(),
                    );
                    None
                }
                Some(s) => match s.strip_prefix("env:") {
                    Some(var) => match env.get(var).filter(|v| !v.is_empty()) {
                        Some(v) => Some(Secret::new(v.clone())),
                        None => {
                            problem(
                                at(keys.get("client_secret")),
                                format!("client_secret names {var}, which is not set"),
                            );
                            None
                        }
                    },
                    None if s.is_empty() => {
                        problem(
                            at(keys.get("client_secret")),
                            "client_secret is empty".into(),
                        );
                        None
                    }
                    None => Some(Secret::new(s)),
                },
            };
            let scopes = match keys.get("scopes") {
                None => None,
                Some(v) => match v.as_array().and_then(|a| {
                    a.iter()
                        .map(|s| s.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                }) {
                    Some(list) if list.iter().all(|s| !s.is_empty() && !s.contains(' ')) => {
                        Some(list)
                    }
                    _ => {
                        problem(at(Some(v)), "scopes must be a list of scope names".into());
                        None
                    }
                },
            };
            if let (Some(kind), Some(client_id), Some(client_secret)) = (kind, client_id, secret) {
                let scopes = scopes.unwrap_or_else(|| {
                    let defaults: &[&str] = match kind {
                        ProviderKind::Oidc { .. } => &["openid", "email", "profile"],
                        ProviderKind::Github => &["read:user", "user:email"],
                        ProviderKind::Discord => &["identify", "email"],
                    };
                    defaults.iter().map(|s| (*s).to_owned()).collect()
                });
                if matches!(kind, ProviderKind::Oidc { .. })
                    && !scopes.iter().any(|s| s == "openid")
                {
                    problem(
                        at(keys.get("scopes")),
                        "an OpenID provider needs the 'openid' scope".into(),
                    );
                    continue;
                }
                providers.push(OAuthProvider {
                    name: name.to_owned(),
                    kind,
                    client_id,
                    client_secret,
                    scopes,
                });
            }
        }
        self.diags.extend(diags);
        providers
    }

    /// `[auth.passkeys]`; `None` when passkeys are off or no origin can be known.
    pub(super) fn passkeys(
        &mut self,
        public_url: Option<&str>,
        addr: std::net::SocketAddr,
        environment: Environment,
    ) -> Option<PasskeySettings> {
        let item = match self.values.get(&("auth".to_owned(), "passkeys".to_owned())) {
            Some(Raw::File(item)) => Some(*item),
            Some(Raw::Env { .. }) => {
                self.problem("auth", "passkeys", "is declared in ferrobase.toml");
                return None;
            }
            None => None,
        };
        let table = match item.map(|i| (i, i.as_table_like())) {
            Some((_, Some(t))) => Some(t),
            Some((_, None)) => {
                self.problem("auth", "passkeys", "must be a table: [auth.passkeys]");
                return None;
            }
            None => None,
        };
        let file = self.file;
        let mut diags = Vec::new();
        let mut problem = |item: Option<&Item>, message: String| {
            diags.push(file.diagnostic(
                item.and_then(span_of),
                format!("auth.passkeys: {message}"),
                None,
            ));
        };
        let mut enabled = true;
        let mut rp_id = None;
        let mut rp_name = None;
        let mut origins = None;
        if let Some(table) = table {
            for (key, value) in table.iter() {
                match key {
                    "enabled" => match value.as_bool() {
                        Some(b) => enabled = b,
                        None => problem(Some(value), "enabled must be true or false".into()),
                    },
                    "rp_id" => match value.as_str() {
                        Some(s)
                            if !s.is_empty()
                                && s.bytes().all(|b| {
                                    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
                                }) =>
                        {
                            rp_id = Some(s.to_ascii_lowercase());
                        }
                        _ => problem(
                            Some(value),
                            "rp_id must be a host name such as example.com".into(),
                        ),
                    },
                    "rp_name" => match value.as_str() {
                        Some(s) if !s.is_empty() => rp_name = Some(s.to_owned()),
                        _ => problem(Some(value), "rp_name must be a non-empty string".into()),
                    },
                    "origins" => {
                        let list = value.as_array().and_then(|a| {
                            a.iter()
                                .map(|s| s.as_str().map(str::to_owned))
                                .collect::<Option<Vec<_>>>()
                        });
                        match list {
                            Some(list)
                                if !list.is_empty()
                                    && list.iter().all(|o| {
                                        url::Url::parse(o)
                                            .is_ok_and(|u| origin_of(&u) == o.trim_end_matches('/'))
                                    }) =>
                            {
                                origins = Some(list);
                            }
                            _ => problem(
                                Some(value),
                                "origins must list origins such as https://app.example.com".into(),
                            ),
                        }
                    }
                    other => problem(
                        Some(value),
                        format!("unknown key '{other}'; keys: {}", PASSKEY_KEYS.join(", ")),
                    ),
                }
            }
        }
        self.diags.extend(diags);
        if !enabled {
            return None;
        }
        let public = public_url.and_then(|u| url::Url::parse(u).ok());
        // Without a public URL, development serves passkeys to the browser on this
        // machine (`localhost` is a secure context for WebAuthn).
        let local = (environment != Environment::Production)
            .then(|| url::Url::parse(&format!("http://localhost:{}", addr.port())).ok());
        let base = public.or_else(|| local.flatten());
        let rp_id =
            rp_id.or_else(|| base.as_ref().and_then(|u| u.host_str().map(str::to_owned)))?;
        let origins = origins
            .map(|o| {
                o.into_iter()
                    .map(|s| s.trim_end_matches('/').to_owned())
                    .collect()
            })
            .or_else(|| base.as_ref().map(|u| vec![origin_of(u)]))?;
        Some(PasskeySettings {
            rp_name: rp_name.unwrap_or_else(|| rp_id.clone()),
            rp_id,
            origins,
        })
    }
}
