//! Passkeys through the real binary (SPEC §6), with a software authenticator (1Password's
//! passkey-rs) speaking WebAuthn JSON as a browser would: registration, sign-in by passkey
//! alone and as the second factor after a password, a ceremony begun on one node and
//! finished on another, one finished after its expiry (the clock moved by a file), a
//! replayed ceremony, a copied authenticator refused by its counter, listing and removal.
//! `pg_passkeys.rs` runs the same bodies on PostgreSQL.

use ferrobase_auth::mfa;
use ferrobase_testkit::{Backend, Project, Reply, Server};
use passkey_authenticator::{Authenticator, UiHint, UserCheck, UserValidationMethod};
use passkey_client::{Client, DefaultClientData};
use passkey_crypto::AvailableBackend;
use passkey_types::Passkey as StoredCredential;
use passkey_types::ctap2::{Aaguid, Ctap2Error};
use passkey_types::webauthn as wa;
use serde_json::{Value, json};

/// The store these tests run on; `pg_passkeys.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");
/// The web page's origin the ceremonies run on.
const ORIGIN: &str = "http://localhost:8090";
const PASSWORD: &str = "correct horse battery";

/// The user is present and verified (a real device would ask for a PIN or a finger); an
/// excluded credential is refused as a browser would.
struct Verified;

#[async_trait::async_trait]
impl UserValidationMethod for Verified {
    type PasskeyItem = StoredCredential;

    async fn check_user<'a>(
        &self,
        hint: UiHint<'a, StoredCredential>,
        presence: bool,
        verification: bool,
    ) -> Result<UserCheck, Ctap2Error> {
        if let UiHint::InformExcludedCredentialFound(_) = hint {
            return Err(Ctap2Error::CredentialExcluded);
        }
        Ok(UserCheck {
            presence,
            verification,
        })
    }

    fn is_presence_enabled(&self) -> bool {
        true
    }

    fn is_verification_enabled(&self) -> Option<bool> {
        Some(true)
    }
}

type Device = Client<
    Option<StoredCredential>,
    Verified,
    AvailableBackend,
    public_suffix::PublicSuffixList,
    (),
>;

/// An authenticator holding `credential` (none: a new one), counting its signatures.
fn device(credential: Option<StoredCredential>) -> Device {
    let mut authenticator =
        Authenticator::new(Aaguid::new_empty(), credential, Verified, AvailableBackend);
    authenticator.set_make_credentials_with_signature_counter(true);
    Client::new(authenticator).allows_insecure_localhost(true)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// `navigator.credentials.create()`: the server's options in, the credential JSON out.
fn create(device: &mut Device, options: &Value) -> Value {
    let options: wa::CredentialCreationOptions =
        serde_json::from_value(json!({"publicKey": options["publicKey"]})).expect("options");
    let origin = url::Url::parse(ORIGIN).expect("origin");
    let credential = block_on(device.register(origin, options, DefaultClientData))
        .expect("the authenticator creates a credential");
    serde_json::to_value(&credential).expect("json")
}

/// `navigator.credentials.get()`.
fn get(device: &mut Device, options: &Value) -> Value {
    let options: wa::CredentialRequestOptions =
        serde_json::from_value(json!({"publicKey": options["publicKey"]})).expect("options");
    let origin = url::Url::parse(ORIGIN).expect("origin");
    let credential = block_on(device.authenticate(origin, options, DefaultClientData))
        .expect("the authenticator signs");
    serde_json::to_value(&credential).expect("json")
}

fn project() -> Project {
    let p = Project::on(crate::backend())
        .env(
            "FERROBASE_SECRET",
            "passkey-test-secret-of-enough-length-0123456789",
        )
        .settings(&format!(
            "[auth.passkeys]\nrp_id = \"localhost\"\nrp_name = \"Ferrobase tests\"\norigins = [\"{ORIGIN}\"]\n"
        ))
        .file("clock", "0");
    let clock = p.path().join("clock");
    p.env("FERROBASE_TEST_CLOCK", clock.to_str().expect("path"))
}

fn send(s: &Server, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> Reply {
    s.send(|c| {
        let mut rb = c.request(method.parse().expect("method"), s.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        rb
    })
}

fn register_user(s: &Server, email: &str) -> String {
    let r = send(
        s,
        None,
        "POST",
        "/api/v1/auth/register",
        Some(json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// Registers a passkey for the user of `token` on `device`; its id.
fn add_passkey(s: &Server, token: &str, device: &mut Device, name: &str) -> String {
    let r = send(
        s,
        Some(token),
        "POST",
        "/api/v1/auth/passkeys/register/start",
        Some(json!({"name": name, "password": PASSWORD})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let start = r.json()["data"].clone();
    assert_eq!(
        start["publicKey"]["authenticatorSelection"]["userVerification"], "required",
        "user verification is required: {start}"
    );
    assert_eq!(
        start["publicKey"]["authenticatorSelection"]["residentKey"], "required",
        "discoverable, so that it can sign in alone: {start}"
    );
    let credential = create(device, &start);
    let r = send(
        s,
        Some(token),
        "POST",
        "/api/v1/auth/passkeys/register/finish",
        Some(json!({"ceremonyId": start["ceremonyId"], "credential": credential})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["data"]["name"], name);
    r.json()["data"]["id"].as_str().expect("id").to_owned()
}

fn login_start(s: &Server, body: Option<Value>) -> Value {
    let r = send(s, None, "POST", "/api/v1/auth/passkeys/login/start", body);
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["data"].clone()
}

fn login_finish(s: &Server, start: &Value, credential: &Value) -> Reply {
    send(
        s,
        None,
        "POST",
        "/api/v1/auth/passkeys/login/finish",
        Some(json!({"ceremonyId": start["ceremonyId"], "credential": credential})),
    )
}

fn me(s: &Server, token: &str) -> Value {
    let r = send(s, Some(token), "GET", "/api/v1/auth/me", None);
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["data"].clone()
}

#[test]
fn register_then_sign_in_by_passkey_alone_across_nodes() {
    let a = project().serve(BIN);
    let token = register_user(&a, "pia@example.com");
    let mut phone = device(None);
    let id = add_passkey(&a, &token, &mut phone, "phone");

    // The same authenticator cannot be registered twice (excludeCredentials).
    let r = send(
        &a,
        Some(&token),
        "POST",
        "/api/v1/auth/passkeys/register/start",
        Some(json!({"password": PASSWORD})),
    );
    let excluded = r.json()["data"]["publicKey"]["excludeCredentials"].clone();
    assert_eq!(excluded[0]["id"], id, "{excluded}");

    // Adding a factor takes the password again: a stolen access token cannot plant one.
    for (body, status) in [
        (None, 400),
        (Some(json!({"password": "not the password"})), 401),
    ] {
        let r = send(
            &a,
            Some(&token),
            "POST",
            "/api/v1/auth/passkeys/register/start",
            body,
        );
        assert_eq!(r.status, status, "{}", r.text);
    }

    // Sign in with nothing but the passkey: the authenticator names the account.
    let start = login_start(&a, None);
    assert_eq!(
        start["publicKey"]["allowCredentials"]
            .as_array()
            .map_or(0, Vec::len),
        0,
        "a discoverable sign-in names no one: {start}"
    );
    assert_eq!(start["publicKey"]["userVerification"], "required");
    let assertion = get(&mut phone, &start);
    let r = login_finish(&a, &start, &assertion);
    assert_eq!(r.status, 200, "{}", r.text);
    let access = r.json()["data"]["accessToken"]
        .as_str()
        .expect("access token")
        .to_owned();
    assert_eq!(me(&a, &access)["email"], "pia@example.com");

    // The same ceremony cannot be finished twice.
    let again = login_finish(&a, &start, &assertion);
    assert_eq!(again.status, 400, "{}", again.text);

    // Begun on node A, finished on node B: the state is in the database.
    let b = a.another(BIN);
    let start = login_start(&a, None);
    let assertion = get(&mut phone, &start);
    let r = login_finish(&b, &start, &assertion);
    assert_eq!(r.status, 200, "{}", r.text);

    // Begun on A, finished on B after its five minutes: refused.
    let start = login_start(&a, None);
    let assertion = get(&mut phone, &start);
    std::fs::write(a.dir().join("clock"), "301").expect("clock");
    let r = login_finish(&b, &start, &assertion);
    assert_eq!(r.status, 400, "{}", r.text);
    std::fs::write(a.dir().join("clock"), "0").expect("clock");

    // Listed with its last use; removed (the password still signs in).
    let r = send(&a, Some(&token), "GET", "/api/v1/auth/passkeys", None);
    assert_eq!(r.status, 200, "{}", r.text);
    let list = r.json()["data"].clone();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["name"], "phone");
    assert!(list[0]["lastUsedAt"].is_string(), "{list}");
    let r = send(
        &a,
        Some(&token),
        "DELETE",
        &format!("/api/v1/auth/passkeys/{id}"),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.text);
    let start = login_start(&a, None);
    let assertion = get(&mut phone, &start);
    let r = login_finish(&a, &start, &assertion);
    assert_eq!(
        r.status, 401,
        "a removed passkey signs no one in: {}",
        r.text
    );
    assert_eq!(r.code(), "INVALID_CREDENTIALS");
}

#[test]
fn a_copied_authenticator_is_refused_by_its_counter() {
    let s = project().serve(BIN);
    let token = register_user(&s, "cole@example.com");
    let mut original = device(None);
    add_passkey(&s, &token, &mut original, "key");
    let sign_in = |d: &mut Device| {
        let start = login_start(&s, None);
        let assertion = get(d, &start);
        login_finish(&s, &start, &assertion)
    };
    assert_eq!(sign_in(&mut original).status, 200);

    // A copy of the authenticator as it is now; the original signs in again first.
    let mut copy = device(original.authenticator().store().clone());
    assert_eq!(sign_in(&mut original).status, 200);
    let r = sign_in(&mut copy);
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.code(), "INVALID_CREDENTIALS");
    assert!(r.text.contains("counter"), "{}", r.text);
    // The original goes on working.
    assert_eq!(sign_in(&mut original).status, 200);

    // A credential the server never registered is refused too.
    let stranger_token = register_user(&s, "stranger@example.com");
    let mut stranger = device(None);
    let id = add_passkey(&s, &stranger_token, &mut stranger, "x");
    let r = send(
        &s,
        Some(&stranger_token),
        "DELETE",
        &format!("/api/v1/auth/passkeys/{id}"),
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(sign_in(&mut stranger).status, 401);
    // Someone else's passkey cannot be removed.
    let theirs =
        send(&s, Some(&token), "GET", "/api/v1/auth/passkeys", None).json()["data"][0]["id"]
            .as_str()
            .expect("id")
            .to_owned();
    let r = send(
        &s,
        Some(&stranger_token),
        "DELETE",
        &format!("/api/v1/auth/passkeys/{theirs}"),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text);
}

#[test]
fn a_passkey_as_the_second_factor_after_a_password() {
    let s = project().serve(BIN);
    let token = register_user(&s, "sam@example.com");
    let mut key = device(None);
    add_passkey(&s, &token, &mut key, "key");
    // TOTP on: a password sign-in then needs a second factor.
    let r = send(&s, Some(&token), "POST", "/api/v1/auth/mfa/totp", None);
    assert_eq!(r.status, 200, "{}", r.text);
    let secret =
        mfa::decode_secret(r.json()["data"]["secret"].as_str().expect("secret")).expect("base32");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let r = send(
        &s,
        Some(&token),
        "POST",
        "/api/v1/auth/mfa/totp/confirm",
        Some(json!({"code": mfa::code_at(&secret, now)})),
    );
    assert_eq!(r.status, 200, "{}", r.text);

    let r = send(
        &s,
        None,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"email": "sam@example.com", "password": PASSWORD})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["data"]["mfaRequired"], true);
    let mfa_token = r.json()["data"]["mfaToken"]
        .as_str()
        .expect("mfa token")
        .to_owned();
    // The second step names the user's own passkeys.
    let start = login_start(&s, Some(json!({"mfaToken": mfa_token})));
    assert_eq!(
        start["publicKey"]["allowCredentials"]
            .as_array()
            .map_or(0, Vec::len),
        1,
        "{start}"
    );
    let assertion = get(&mut key, &start);
    let r = login_finish(&s, &start, &assertion);
    assert_eq!(r.status, 200, "{}", r.text);
    let access = r.json()["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(me(&s, &access)["email"], "sam@example.com");

    // Someone else's passkey cannot finish sam's second step.
    let other = register_user(&s, "eve@example.com");
    let mut eves = device(None);
    add_passkey(&s, &other, &mut eves, "eve");
    let start = login_start(&s, Some(json!({"mfaToken": mfa_token})));
    let r = send(
        &s,
        None,
        "POST",
        "/api/v1/auth/passkeys/login/start",
        Some(json!({"mfaToken": "forged.token"})),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    // Eve's authenticator holds no credential sam's allow-list names: it cannot sign.
    let options: wa::CredentialRequestOptions =
        serde_json::from_value(json!({"publicKey": start["publicKey"]})).expect("options");
    let refused = block_on(eves.authenticate(
        url::Url::parse(ORIGIN).expect("origin"),
        options,
        DefaultClientData,
    ));
    assert!(refused.is_err());
    // And her authenticator signing sam's very challenge (no allow-list given to it)
    // does not finish sam's sign-in: the credential is not one of his.
    let mut open = start.clone();
    open["publicKey"]["allowCredentials"] = json!([]);
    let eve_assertion = get(&mut eves, &open);
    let r = login_finish(&s, &start, &eve_assertion);
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("not one of the account's"), "{}", r.text);

    // A password change between the start and the finish ends the half-done sign-in.
    let r = send(
        &s,
        None,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"email": "sam@example.com", "password": PASSWORD})),
    );
    let mfa_token = r.json()["data"]["mfaToken"]
        .as_str()
        .expect("mfa token")
        .to_owned();
    let start = login_start(&s, Some(json!({"mfaToken": mfa_token})));
    let r = send(
        &s,
        Some(&access),
        "POST",
        "/api/v1/auth/password",
        Some(json!({"currentPassword": PASSWORD, "newPassword": "another long password"})),
    );
    assert_eq!(r.status, 204, "{}", r.text);
    let assertion = get(&mut key, &start);
    let r = login_finish(&s, &start, &assertion);
    assert_eq!(r.status, 401, "{}", r.text);

    // Malformed credentials are a validation error, never a 500.
    let start = login_start(&s, None);
    let r = login_finish(&s, &start, &json!({"id": "nope"}));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "VALIDATION_FAILED");
}
