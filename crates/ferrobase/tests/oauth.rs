//! Sign-in with OpenID Connect through the real binary (SPEC §6), against a real OpenID
//! provider the harness runs locally (npm `oidc-provider`, its development login form
//! standing in for the provider's pages). A test "browser" (a cookie jar that follows
//! redirects and fills in the provider's forms) goes the whole way: ferrobase → provider
//! → callback → the app's page with a one-time code → the token pair. Then each attack on
//! the flow is refused: a tampered state, a replayed state, a state from another browser,
//! a wrong nonce, a code issued to another client, an expired ID token (the server's clock
//! moved by a file), a `redirect_to` outside the allow-list, a replayed one-time code, and
//! an unverified email that matches an existing account. `pg_oauth.rs` runs the same
//! bodies on PostgreSQL.

use ferrobase_testkit::reqwest::blocking::{Client, Response};
use ferrobase_testkit::reqwest::redirect::Policy;
use ferrobase_testkit::tools::{OidcProvider, oidc_provider};
use ferrobase_testkit::{Backend, Project, Reply, Server};
use serde_json::{Value, json};

/// The store these tests run on; `pg_oauth.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");
/// ferrobase's public URL. The server listens on a port of its own choosing; the browser
/// maps this address to it, as a reverse proxy would.
const PUBLIC: &str = "http://ferrobase.test";
/// The client application's page that receives the one-time code.
const APP: &str = "http://app.test/signed-in";

fn accounts() -> Value {
    json!({
        "alice": {"email": "Alice@Example.com", "email_verified": true, "name": "Alice"},
        "mallory": {"email": "victim@example.com", "email_verified": false},
        "bob": {"email": "bob@example.com", "email_verified": true},
        "carol": {"email": "carol@example.com", "email_verified": true},
    })
}

/// Users who may read and change their own record (their email, say).
const SCHEMA: &str = r#"
[resources.users.fields]
name = { type = "string", min_length = 2, max_length = 100 }
[resources.users.rules]
view = "id = @auth.id"
update = "id = @auth.id"
"#;

/// The provider and a ferrobase with two sign-ins at it: `local` (client `ferrobase`) and
/// `twin` (client `other-app`).
fn setup() -> Option<(OidcProvider, Server)> {
    let callbacks = ["local", "twin"].map(|p| format!("{PUBLIC}/api/v1/auth/oauth/{p}/callback"));
    let callbacks: Vec<&str> = callbacks.iter().map(String::as_str).collect();
    let provider = oidc_provider(BIN, &callbacks, &accounts())?;
    let issuer = &provider.issuer;
    let settings = format!(
        r#"[server]
public_url = "{PUBLIC}"

[auth]
redirect_allowlist = ["{APP}", "http://other.test"]

[auth.oauth.local]
issuer = "{issuer}"
client_id = "ferrobase"
client_secret = "env:LOCAL_SECRET"

[auth.oauth.twin]
issuer = "{issuer}"
client_id = "other-app"
client_secret = "other-app-secret-0123456789abcdef0123456789"
"#
    );
    let project = Project::on(crate::backend())
        .env(
            "FERROBASE_SECRET",
            "oauth-test-secret-of-enough-length-0123456789",
        )
        .env(
            "LOCAL_SECRET",
            "ferrobase-secret-0123456789abcdef0123456789",
        )
        .schema(SCHEMA)
        .settings(&settings)
        .file("clock", "0");
    let clock = project.path().join("clock");
    let server = project
        .env("FERROBASE_TEST_CLOCK", clock.to_str().expect("path"))
        .serve(BIN);
    Some((provider, server))
}

/// A browser: its own cookie jar, redirects followed by hand.
struct Browser<'s> {
    client: Client,
    server: &'s Server,
}

/// Where a browser stopped: a redirect it was told not to follow, or a page.
struct Stop {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Stop {
    fn of(r: Response) -> Stop {
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Stop {
            status,
            location,
            body: r.text().unwrap_or_default(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A query parameter of a URL.
fn param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `url` with one query parameter replaced.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut u = url::Url::parse(url).expect("url");
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.into()
}

/// `(action, hidden inputs, has a login field)` of the first form of an HTML page.
fn form(html: &str) -> (String, Vec<(String, String)>, bool) {
    let attr = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = tag[start..].find('"')? + start;
        Some(tag[start..end].replace("&amp;", "&"))
    };
    let form_tag = html.split("<form").nth(1).expect("a form on the page");
    let action = attr(form_tag, "action").expect("form action");
    let mut hidden = Vec::new();
    let mut login = false;
    for input in form_tag.split("<input").skip(1) {
        let tag = &input[..input.find('>').unwrap_or(input.len())];
        match (attr(tag, "type").as_deref(), attr(tag, "name")) {
            (Some("hidden"), Some(name)) => {
                hidden.push((name, attr(tag, "value").unwrap_or_default()))
            }
            (_, Some(name)) if name == "login" => login = true,
            _ => {}
        }
    }
    (action, hidden, login)
}

impl<'s> Browser<'s> {
    fn new(server: &'s Server) -> Self {
        let client = Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .expect("client");
        Browser { client, server }
    }

    /// The real address of a URL under ferrobase's public one.
    fn real(&self, url: &str) -> String {
        match url.strip_prefix(PUBLIC) {
            Some(path) => self.server.url(path),
            None => url.to_owned(),
        }
    }

    fn get(&self, url: &str) -> Stop {
        Stop::of(self.client.get(self.real(url)).send().expect("request"))
    }

    /// `GET /api/v1/auth/oauth/{provider}?redirect_to=`: where ferrobase sends the browser.
    fn begin(&self, provider: &str, redirect_to: &str) -> Stop {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("redirect_to", redirect_to)
            .finish();
        self.get(&format!("{PUBLIC}/api/v1/auth/oauth/{provider}?{query}"))
    }

    /// At the provider from `url`: signs in as `account` on its form and follows its
    /// redirects until it sends the browser back to ferrobase (the callback URL).
    fn at_provider(&self, url: &str, account: &str) -> String {
        let mut next = url.to_owned();
        for _ in 0..20 {
            let r = self.client.get(&next).send().expect("provider");
            let base = r.url().clone();
            let stop = Stop::of(r);
            let location = match stop.status {
                300..=399 => stop.location.clone().expect("location"),
                200 => {
                    let (action, hidden, login) = form(&stop.body);
                    let mut fields = hidden;
                    if login {
                        fields.push(("login".into(), account.into()));
                        fields.push(("password".into(), "any".into()));
                    }
                    let target = base.join(&action).expect("action URL");
                    let posted = Stop::of(
                        self.client
                            .post(target)
                            .form(&fields)
                            .send()
                            .expect("form post"),
                    );
                    assert!(
                        (300..400).contains(&posted.status),
                        "the provider's form answered {}: {}",
                        posted.status,
                        posted.body
                    );
                    posted.location.expect("location")
                }
                other => panic!("the provider answered {other}: {}", stop.body),
            };
            let absolute = base.join(&location).expect("location URL").to_string();
            if absolute.starts_with(PUBLIC) {
                return absolute;
            }
            next = absolute;
        }
        panic!("the provider never sent the browser back");
    }

    /// Trades a one-time code for tokens from this browser (its binding cookie goes along).
    fn exchange(&self, code: &str) -> Reply {
        self.exchange_with(&json!({ "code": code }))
    }

    fn exchange_with(&self, body: &Value) -> Reply {
        let r = self
            .client
            .post(self.server.url("/api/v1/auth/oauth/exchange"))
            .json(body)
            .send()
            .expect("exchange");
        Reply {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            text: r.text().expect("body"),
        }
    }

    /// The whole sign-in as `account`, to where ferrobase finally sends the browser.
    fn sign_in(&self, provider: &str, account: &str) -> Stop {
        let start = self.begin(provider, APP);
        assert_eq!(start.status, 302, "{}", start.body);
        let callback = self.at_provider(&start.location.expect("to the provider"), account);
        self.get(&callback)
    }
}

fn app_code(stop: &Stop) -> String {
    assert_eq!(stop.status, 303, "{}", stop.body);
    let location = stop.location.clone().expect("location");
    assert!(location.starts_with(APP), "{location}");
    param(&location, "code").unwrap_or_else(|| panic!("no code in {location}"))
}

fn app_error(stop: &Stop) -> String {
    assert_eq!(stop.status, 303, "{}", stop.body);
    let location = stop.location.clone().expect("location");
    assert!(location.starts_with(APP), "{location}");
    assert_eq!(param(&location, "code"), None, "{location}");
    param(&location, "error").unwrap_or_else(|| panic!("no error in {location}"))
}

fn authed(s: &Server, token: &str, method: &str, path: &str) -> Reply {
    s.send(|c| {
        c.request(method.parse().expect("method"), s.url(path))
            .bearer_auth(token)
    })
}

fn access_token(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["data"]["accessToken"]
        .as_str()
        .expect("access token")
        .to_owned()
}

#[test]
fn sign_in_through_the_provider_and_link_a_second_one() {
    let Some((_provider, s)) = setup() else {
        return;
    };
    let browser = Browser::new(&s);
    let start = browser.begin("local", APP);
    assert_eq!(start.status, 302, "{}", start.body);
    let to_provider = start.location.clone().expect("location");
    // PKCE S256, a signed state and a nonce; the verifier never leaves the server.
    assert_eq!(
        param(&to_provider, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(param(&to_provider, "code_challenge").is_some_and(|c| c.len() == 43));
    assert!(param(&to_provider, "nonce").is_some());
    assert!(param(&to_provider, "state").is_some_and(|s| s.contains('.')));
    assert_eq!(
        param(&to_provider, "redirect_uri").as_deref(),
        Some(format!("{PUBLIC}/api/v1/auth/oauth/local/callback").as_str())
    );
    let callback = browser.at_provider(&to_provider, "alice");
    let landed = browser.get(&callback);
    let code = app_code(&landed);

    // Only the browser that signed in can trade the code (a code carried to another
    // browser would sign its user in as alice: login CSRF).
    let r = Browser::new(&s).exchange(&code);
    assert_eq!(r.status, 401, "{}", r.text);
    let code = app_code(&browser.sign_in("local", "alice"));
    // The code is traded once for the usual pair; no token ever travelled in a URL.
    let r = browser.exchange(&code);
    let token = access_token(&r);
    assert!(r.json()["data"]["refreshToken"].is_string());
    let me = authed(&s, &token, "GET", "/api/v1/auth/me").json()["data"].clone();
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(
        me["verified"], true,
        "the provider verified the address: {me}"
    );
    let user_id = me["id"].as_str().expect("id").to_owned();
    let r = browser.exchange(&code);
    assert_eq!(r.status, 401, "a code is used once: {}", r.text);

    // Signing in again finds the same account through the link.
    let again = Browser::new(&s);
    let code = app_code(&again.sign_in("local", "alice"));
    let token = access_token(&again.exchange(&code));
    let me = authed(&s, &token, "GET", "/api/v1/auth/me").json()["data"].clone();
    assert_eq!(me["id"], user_id.as_str());

    // A second provider with the same verified email links to the same account.
    let code = app_code(&again.sign_in("twin", "alice"));
    let token = access_token(&again.exchange(&code));
    let me = authed(&s, &token, "GET", "/api/v1/auth/me").json()["data"].clone();
    assert_eq!(me["id"], user_id.as_str());
    let r = authed(&s, &token, "GET", "/api/v1/auth/identities");
    assert_eq!(r.status, 200, "{}", r.text);
    let providers: Vec<String> = r.json()["data"]
        .as_array()
        .expect("list")
        .iter()
        .map(|i| i["provider"].as_str().expect("provider").to_owned())
        .collect();
    assert_eq!(providers, ["local", "twin"]);

    // Unlinking: one may go, the last way to sign in may not (no password was set).
    let r = authed(&s, &token, "DELETE", "/api/v1/auth/identities/twin");
    assert_eq!(r.status, 204, "{}", r.text);
    let r = authed(&s, &token, "DELETE", "/api/v1/auth/identities/local");
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.code(), "CONFLICT");
    let r = authed(&s, &token, "DELETE", "/api/v1/auth/identities/twin");
    assert_eq!(r.status, 404, "{}", r.text);

    // With TOTP on, a provider sign-in is a first factor like a password: the exchange
    // asks for the code step.
    let r = authed(&s, &token, "POST", "/api/v1/auth/mfa/totp");
    assert_eq!(r.status, 200, "{}", r.text);
    let secret =
        ferrobase_auth::mfa::decode_secret(r.json()["data"]["secret"].as_str().expect("secret"))
            .expect("base32");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let r = s.send(|c| {
        c.post(s.url("/api/v1/auth/mfa/totp/confirm"))
            .bearer_auth(&token)
            .json(&json!({"code": ferrobase_auth::mfa::code_at(&secret, now)}))
    });
    assert_eq!(r.status, 200, "{}", r.text);
    let code = app_code(&again.sign_in("local", "alice"));
    let r = again.exchange_with(&json!({"code": code, "session": "cookie"}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["data"]["mfaRequired"], true, "{}", r.text);
    assert!(
        r.header("set-cookie").is_none(),
        "no session before the code"
    );
    let r = s.post(
        "/api/v1/auth/mfa/verify",
        &json!({
            "mfaToken": r.json()["data"]["mfaToken"],
            "code": ferrobase_auth::mfa::code_at(&secret, now + 30),
        }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json()["data"]["csrfToken"].is_string(),
        "a cookie session: {}",
        r.text
    );
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.contains("HttpOnly"))
    );

    // The account has no password: a password login cannot get in.
    let r = s.post(
        "/api/v1/auth/login",
        &json!({"email": "alice@example.com", "password": "anything at all"}),
    );
    assert_eq!(r.status, 401, "{}", r.text);
}

#[test]
fn tampered_replayed_and_foreign_states_are_refused() {
    let Some((_provider, s)) = setup() else {
        return;
    };
    let browser = Browser::new(&s);
    let start = browser.begin("local", APP);
    let callback = browser.at_provider(&start.location.expect("location"), "alice");

    // A state whose signature does not match is refused before anything else.
    let state = param(&callback, "state").expect("state");
    let (id, sig) = state.split_once('.').expect("signed");
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = with_param(&callback, "state", &format!("{id}.{flipped}{}", &sig[1..]));
    let r = browser.get(&tampered);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "BAD_REQUEST");
    let forged = with_param(&callback, "state", &format!("x{id}.{sig}"));
    assert_eq!(browser.get(&forged).status, 400);

    // Another browser (no binding cookie) cannot finish it, and that spends it.
    let thief = Browser::new(&s);
    let r = thief.get(&callback);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("another browser"), "{}", r.body);
    let r = browser.get(&callback);
    assert_eq!(r.status, 400, "a state is used once: {}", r.body);

    // Replayed: the first use signs in, the second is refused.
    let start = browser.begin("local", APP);
    let callback = browser.at_provider(&start.location.expect("location"), "alice");
    app_code(&browser.get(&callback));
    let r = browser.get(&callback);
    assert_eq!(r.status, 400, "{}", r.body);

    // A state of one provider presented at another's callback.
    let start = browser.begin("local", APP);
    let callback = browser.at_provider(&start.location.expect("location"), "alice");
    let elsewhere = callback.replace("/oauth/local/callback", "/oauth/twin/callback");
    assert_eq!(browser.get(&elsewhere).status, 400);

    // An unknown provider is a 404.
    assert_eq!(browser.begin("nowhere", APP).status, 404);
}

#[test]
fn wrong_nonce_other_audience_and_expired_id_tokens_are_refused() {
    let Some((_provider, s)) = setup() else {
        return;
    };
    // The nonce in the request to the provider is swapped: the ID token carries it, and
    // it is not the one the server keeps.
    let browser = Browser::new(&s);
    let start = browser.begin("local", APP);
    let to_provider = with_param(
        &start.location.expect("location"),
        "nonce",
        "an-attackers-nonce",
    );
    let callback = browser.at_provider(&to_provider, "alice");
    assert_eq!(app_error(&browser.get(&callback)), "invalid_id_token");

    // The request names another client: the code is that client's, and neither the
    // provider nor the server lets it sign in here.
    let start = browser.begin("local", APP);
    let to_provider = with_param(&start.location.expect("location"), "client_id", "other-app");
    let callback = browser.at_provider(&to_provider, "alice");
    assert_eq!(app_error(&browser.get(&callback)), "invalid_grant");

    // The ID token (30 s, plus a minute of tolerated skew) has expired by the time the
    // server looks at it: the server's clock is two minutes on.
    let start = browser.begin("local", APP);
    let callback = browser.at_provider(&start.location.expect("location"), "alice");
    std::fs::write(s.dir().join("clock"), "120").expect("clock");
    assert_eq!(app_error(&browser.get(&callback)), "invalid_id_token");
    std::fs::write(s.dir().join("clock"), "0").expect("clock");

    // None of it linked anything: the first sign-in that passes makes the one link.
    let code = app_code(&browser.sign_in("local", "alice"));
    let token = access_token(&browser.exchange(&code));
    let r = authed(&s, &token, "GET", "/api/v1/auth/identities");
    assert_eq!(r.json()["data"].as_array().map(Vec::len), Some(1));
}

#[test]
fn redirects_and_unverified_emails_cannot_take_accounts() {
    let Some((_provider, s)) = setup() else {
        return;
    };
    let browser = Browser::new(&s);
    // Only allow-listed pages: an exact URL, or an allowed origin.
    for bad in [
        "http://evil.test/signed-in",
        "http://app.test/other-page",
        "http://app.test.evil.test/signed-in",
        "javascript:alert(1)",
        "/relative",
    ] {
        let r = browser.begin("local", bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "VALIDATION_FAILED", "{bad}");
    }
    let r = browser.begin("local", "http://other.test/anywhere?x=1");
    assert_eq!(r.status, 302, "an allowed origin: {}", r.body);
    let r = browser.get(&format!("{PUBLIC}/api/v1/auth/oauth/local"));
    assert_eq!(r.status, 400, "redirect_to is required: {}", r.body);

    // A password account holds victim@example.com. Mallory's provider account claims the
    // same address without having verified it: no link, no sign-in, no new account.
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": "victim@example.com", "password": "correct horse battery"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let victim = r.json()["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let stop = Browser::new(&s).sign_in("local", "mallory");
    assert_eq!(app_error(&stop), "email_not_verified");
    let r = authed(&s, &victim, "GET", "/api/v1/auth/identities");
    assert_eq!(r.json()["data"], json!([]));

    // Bob's provider verified bob@example.com, but the local account of that address never
    // verified it (anyone may have registered it): not joined either.
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": "bob@example.com", "password": "someone else's password"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let stop = Browser::new(&s).sign_in("local", "bob");
    assert_eq!(app_error(&stop), "account_exists");

    // A forged or unknown exchange code gets nothing.
    let r = browser.exchange("not-a-code");
    assert_eq!(r.status, 401, "{}", r.text);
    let r = s.post("/api/v1/auth/oauth/exchange", &json!({}));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "VALIDATION_FAILED");
    let r = s.post(
        "/api/v1/auth/oauth/exchange",
        &json!({"code": "x", "codeVerifier": "typo"}),
    );
    assert_eq!(r.status, 400, "unknown members are refused: {}", r.text);
}

#[test]
fn an_app_on_another_site_proves_the_code_with_pkce() {
    let Some((_provider, s)) = setup() else {
        return;
    };
    use base64::Engine as _;
    use sha2::Digest as _;
    let verifier = "an-app-verifier-of-enough-length-0123456789abcdefgh";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let browser = Browser::new(&s);
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("redirect_to", "http://other.test/cb?code=ATTACKER&keep=1")
        .append_pair("code_challenge", &challenge)
        .finish();
    let start = browser.get(&format!("{PUBLIC}/api/v1/auth/oauth/local?{query}"));
    assert_eq!(start.status, 302, "{}", start.body);
    let callback = browser.at_provider(&start.location.expect("location"), "carol");
    let landed = browser.get(&callback);
    assert_eq!(landed.status, 303, "{}", landed.body);
    let location = landed.location.expect("location");
    // The app's own parameters stay; a `code` planted in redirect_to does not.
    let url = url::Url::parse(&location).expect("url");
    let codes: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(codes.len(), 1, "{location}");
    assert_ne!(codes[0], "ATTACKER");
    assert_eq!(param(&location, "keep").as_deref(), Some("1"));
    // The app (another client: no cookie of the browser) shows the verifier.
    let app = Browser::new(&s);
    let r = app.exchange_with(
        &json!({"code": codes[0], "code_verifier": "a-wrong-verifier-0123456789abcdefghijklmnop"}),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    let code = app_code_at(&browser, "carol", &query);
    let r = app.exchange_with(&json!({"code": code}));
    assert_eq!(
        r.status, 401,
        "the challenge's verifier is required: {}",
        r.text
    );
    let code = app_code_at(&browser, "carol", &query);
    let r = app.exchange_with(&json!({"code": code, "code_verifier": verifier}));
    let token = access_token(&r);

    // Carol changes her address: it is no longer verified, so the old verification
    // cannot vouch for it (a provider account with the new address is not joined).
    let me = authed(&s, &token, "GET", "/api/v1/auth/me").json()["data"].clone();
    assert_eq!(me["verified"], true, "{me}");
    let r = s.send(|c| {
        c.patch(s.url(&format!("/api/v1/users/{}", me["id"].as_str().expect("id"))))
            .bearer_auth(&token)
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"email":"Bob@Example.com"}"#)
    });
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["data"]["email"], "bob@example.com");
    assert_eq!(r.json()["data"]["verified"], false, "{}", r.text);
    let stop = Browser::new(&s).sign_in("local", "bob");
    assert_eq!(app_error(&stop), "account_exists");
}

/// A sign-in at `query` (a start URL's query) as `account`, to the code on the app's page.
fn app_code_at(browser: &Browser<'_>, account: &str, query: &str) -> String {
    let start = browser.get(&format!("{PUBLIC}/api/v1/auth/oauth/local?{query}"));
    let callback = browser.at_provider(&start.location.expect("location"), account);
    let landed = browser.get(&callback);
    param(&landed.location.expect("location"), "code").expect("code")
}
