//! Identity and access over HTTP: the blog example end to end, and the attacks each
//! credential must withstand.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferrobase_auth::JwtKeys;
use ferrobase_schema::settings::Secret;
use ferrobase_testkit::{Backend, Project, Reply, Server};
use serde_json::{Value, json};

/// The store these tests run on; `pg_*.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");

struct User {
    id: String,
    access: String,
    refresh: String,
}

fn register(s: &Server, email: &str, password: &str) -> User {
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": email, "password": password, "name": "Someone"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let d = r.json()["data"].clone();
    User {
        id: d["user"]["id"].as_str().expect("id").to_owned(),
        access: d["accessToken"].as_str().expect("access").to_owned(),
        refresh: d["refreshToken"].as_str().expect("refresh").to_owned(),
    }
}

fn login(s: &Server, email: &str, password: &str) -> User {
    let r = s.post(
        "/api/v1/auth/login",
        &json!({"email": email, "password": password}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let d = r.json()["data"].clone();
    User {
        id: d["user"]["id"].as_str().expect("id").to_owned(),
        access: d["accessToken"].as_str().expect("access").to_owned(),
        refresh: d["refreshToken"].as_str().expect("refresh").to_owned(),
    }
}

fn as_user(s: &Server, token: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
    s.send(|c| {
        let mut rb = c
            .request(method.parse().expect("method"), s.url(path))
            .header("authorization", format!("Bearer {token}"));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        rb
    })
}

fn create_admin(project: &Project, email: &str, password: &str) {
    let out = project.run_with_stdin(
        BIN,
        &["users", "create", "--email", email, "--role", "admin"],
        &format!("{password}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created user"));
}

#[test]
fn the_blog_works_end_to_end() {
    let project = Project::on(crate::backend());
    create_admin(&project, "root@example.com", "admin-password-1");
    let s = project.serve(BIN);
    let alice = register(&s, "Alice@Example.com", "alice-password");
    let bob = register(&s, "bob@example.com", "bob-password-1");
    let me = as_user(&s, &alice.access, "GET", "/api/v1/auth/me", None);
    assert_eq!(me.json()["data"]["email"], "alice@example.com");
    assert_eq!(
        me.json()["data"]["role"],
        "viewer",
        "the schema's default role"
    );
    assert!(me.json()["data"].get("password_hash").is_none());

    // Create: the author defaults to the caller; claiming someone else is refused.
    let r = as_user(
        &s,
        &alice.access,
        "POST",
        "/api/v1/posts",
        Some(json!({"title": "Hello", "slug": "hello"})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let post = r.json()["data"].clone();
    assert_eq!(post["author"], alice.id);
    assert_eq!(post["status"], "draft");
    let path = format!("/api/v1/posts/{}", post["id"].as_str().expect("id"));
    let r = as_user(
        &s,
        &alice.access,
        "POST",
        "/api/v1/posts",
        Some(json!({"title": "Fake", "slug": "fake", "author": bob.id})),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.code(), "FORBIDDEN");
    let r = as_user(
        &s,
        &bob.access,
        "POST",
        "/api/v1/posts",
        Some(json!({"title": "Again", "slug": "hello"})),
    );
    assert_eq!(r.status, 409, "duplicate slug: {}", r.text);
    let r = s.post("/api/v1/posts", &json!({"title": "Anon", "slug": "anon"}));
    assert_eq!(r.status, 401, "{}", r.text);

    // Drafts are invisible to others (404, never 403), listed only for their author.
    assert_eq!(as_user(&s, &bob.access, "GET", &path, None).status, 404);
    assert_eq!(s.get(&path).status, 404);
    assert_eq!(as_user(&s, &alice.access, "GET", &path, None).status, 200);
    let bobs_list = as_user(&s, &bob.access, "GET", "/api/v1/posts", None).json();
    assert_eq!(bobs_list["data"], json!([]));
    let alices_list = as_user(&s, &alice.access, "GET", "/api/v1/posts?count=true", None).json();
    assert_eq!(alices_list["meta"]["total"], 1);

    // Published: everyone sees it; only the author (or an admin) may change it.
    let r = as_user(
        &s,
        &alice.access,
        "PATCH",
        &path,
        Some(json!({"status": "published"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(s.get(&path).status, 200);
    assert_eq!(
        s.get("/api/v1/posts").json()["data"]
            .as_array()
            .expect("data")
            .len(),
        1
    );
    let r = as_user(
        &s,
        &bob.access,
        "PATCH",
        &path,
        Some(json!({"title": "Mine now"})),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(as_user(&s, &bob.access, "DELETE", &path, None).status, 403);
    assert_eq!(s.patch(&path, &json!({"title": "Anon edit"})).status, 401);
    let r = as_user(
        &s,
        &alice.access,
        "PATCH",
        &path,
        Some(json!({"author": bob.id})),
    );
    // Alice may not see Bob's user record (users have no view rule), so she cannot name
    // him in a relation: the same answer as for an id that does not exist.
    assert_eq!(
        r.status, 400,
        "no updating a post into one you could not update: {}",
        r.text
    );
    assert!(r.text.contains("no users record has id"), "{}", r.text);
    let kept = as_user(&s, &alice.access, "GET", &path, None).json();
    assert_eq!(kept["data"]["author"], alice.id, "rolled back");

    // Filters cannot see through relations into records the caller may not read.
    let probe = |token: Option<&str>| {
        let r = s.send(|c| {
            let rb = c
                .get(s.url("/api/v1/posts"))
                .query(&[("filter", "author.email ~ 'alice'"), ("count", "true")]);
            match token {
                Some(t) => rb.header("authorization", format!("Bearer {t}")),
                None => rb,
            }
        });
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["meta"]["total"].clone()
    };
    assert_eq!(
        probe(None),
        0,
        "users are admins-only: their emails cannot be probed"
    );
    assert_eq!(probe(Some(&bob.access)), 0);

    // The admin may edit anything and see every draft.
    let admin = login(&s, "root@example.com", "admin-password-1");
    let r = as_user(
        &s,
        &alice.access,
        "POST",
        "/api/v1/posts",
        Some(json!({"title": "Secret", "slug": "secret"})),
    );
    let draft = format!(
        "/api/v1/posts/{}",
        r.json()["data"]["id"].as_str().expect("id")
    );
    assert_eq!(as_user(&s, &admin.access, "GET", &draft, None).status, 200);
    let r = as_user(
        &s,
        &admin.access,
        "PATCH",
        &draft,
        Some(json!({"title": "Edited by admin"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        as_user(&s, &admin.access, "GET", "/api/v1/users", None).json()["data"]
            .as_array()
            .expect("users")
            .len(),
        3
    );
    assert_eq!(
        as_user(&s, &alice.access, "GET", "/api/v1/users", None).status,
        403
    );
    assert_eq!(
        as_user(&s, &admin.access, "DELETE", &draft, None).status,
        204
    );
    let r = s.send(|c| {
        c.get(s.url("/api/v1/posts"))
            .query(&[("filter", "author.email ~ 'alice'"), ("count", "true")])
            .header("authorization", format!("Bearer {}", admin.access))
    });
    assert_eq!(
        r.json()["meta"]["total"],
        1,
        "the admin may see users, so the filter matches"
    );
}

#[test]
fn roles_cannot_be_escalated_and_only_admins_change_them() {
    let project = Project::on(crate::backend());
    create_admin(&project, "root@example.com", "admin-password-1");
    let s = project.serve(BIN);
    for field in ["role", "verified", "password_hash"] {
        let r = s.post(
            "/api/v1/auth/register",
            &json!({"email": "eve@example.com", "password": "eve-password", field: "admin"}),
        );
        assert_eq!(r.status, 400, "{field}: {}", r.text);
        assert_eq!(
            r.json()["error"]["details"]["fields"][field],
            json!(["is read-only"])
        );
    }
    let eve = register(&s, "eve@example.com", "eve-password");
    let own = format!("/api/v1/users/{}", eve.id);
    let r = as_user(
        &s,
        &eve.access,
        "PATCH",
        &own,
        Some(json!({"role": "admin"})),
    );
    assert_eq!(
        r.status, 403,
        "no update rule on users: admins only: {}",
        r.text
    );
    let admin = login(&s, "root@example.com", "admin-password-1");
    let r = as_user(
        &s,
        &admin.access,
        "PATCH",
        &own,
        Some(json!({"role": "editor"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["data"]["role"], "editor");
    let r = as_user(
        &s,
        &admin.access,
        "PATCH",
        &own,
        Some(json!({"role": "emperor"})),
    );
    assert_eq!(r.status, 400);
    let r = as_user(
        &s,
        &admin.access,
        "PATCH",
        &own,
        Some(json!({"password_hash": "x"})),
    );
    assert_eq!(r.status, 400, "not even admins write hashes");
    // The role change ended eve's sessions: her refresh token is dead.
    let r = s.post(
        "/api/v1/auth/refresh",
        &json!({"refreshToken": eve.refresh}),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    let again = login(&s, "eve@example.com", "eve-password");
    let claims = decode_claims(&again.access);
    assert_eq!(claims["role"], "editor");
}

fn decode_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn forged_none_switched_expired_and_garbage_tokens_are_refused() {
    let s = Project::on(crate::backend()).serve(BIN);
    let alice = register(&s, "alice@example.com", "alice-password");
    assert_eq!(
        as_user(&s, &alice.access, "GET", "/api/v1/auth/me", None).status,
        200
    );
    let parts: Vec<&str> = alice.access.split('.').collect();
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
    let mut claims = decode_claims(&alice.access);
    claims["role"] = json!("admin");

    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    let hs256 = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "HS256", "typ": "JWT", "kid": header["kid"]})),
        b64(&claims),
        parts[2]
    );
    for (what, token) in [
        ("forged payload", forged),
        ("alg none", none),
        ("HS256", hs256),
        ("garbage", "garbage".to_owned()),
        ("empty parts", "..".to_owned()),
    ] {
        let r = as_user(&s, &token, "GET", "/api/v1/auth/me", None);
        assert_eq!(r.status, 401, "{what}: {}", r.text);
        assert_eq!(r.code(), "UNAUTHORIZED", "{what}");
        assert!(r.json()["error"]["requestId"].is_string());
    }
    for header in [
        "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "Bearer",
        "Bearer  ",
        "Token abc",
    ] {
        let r = s.send(|c| {
            c.get(s.url("/api/v1/auth/me"))
                .header("authorization", header)
        });
        assert_eq!(r.status, 401, "{header}");
    }

    // A token signed with this deployment's real key, but issued (by an injected clock)
    // an hour ago with the usual 15 minutes of life.
    let secret = std::fs::read_to_string(s.path("data/.secret")).expect("development secret");
    let keys = JwtKeys::derive(&Secret::new(secret.trim()), None);
    let now = decode_claims(&alice.access)["iat"].as_i64().expect("iat");
    let stale = keys.sign(&JwtKeys::claims(&alice.id, "viewer", now - 3600, 900));
    let r = as_user(&s, &stale, "GET", "/api/v1/auth/me", None);
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "TOKEN_EXPIRED");
    let fresh = keys.sign(&JwtKeys::claims(&alice.id, "viewer", now, 900));
    assert_eq!(
        as_user(&s, &fresh, "GET", "/api/v1/auth/me", None).status,
        200,
        "the same key, in time"
    );

    // JWKS publishes the key that verifies our tokens.
    let jwks = s.get("/.well-known/jwks.json").json();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
}

#[test]
fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let s = Project::on(crate::backend()).serve(BIN);
    let alice = register(&s, "alice@example.com", "alice-password");
    let r = s.post(
        "/api/v1/auth/refresh",
        &json!({"refreshToken": alice.refresh}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let second = r.json()["data"]["refreshToken"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(second, alice.refresh);
    // Presenting the used token again: refused, and the whole family dies with it.
    let r = s.post(
        "/api/v1/auth/refresh",
        &json!({"refreshToken": alice.refresh}),
    );
    assert_eq!(r.status, 401);
    assert!(r.text.contains("already used"), "{}", r.text);
    let r = s.post("/api/v1/auth/refresh", &json!({"refreshToken": second}));
    assert_eq!(
        r.status, 401,
        "the thief's (or owner's) newer token is dead too"
    );
    // Another login is another family, untouched.
    let other = login(&s, "alice@example.com", "alice-password");
    let r = s.post(
        "/api/v1/auth/refresh",
        &json!({"refreshToken": other.refresh}),
    );
    assert_eq!(r.status, 200);
    let third = r.json()["data"]["refreshToken"]
        .as_str()
        .expect("refresh")
        .to_owned();
    // Logout revokes.
    let r = s.send(|c| {
        c.post(s.url("/api/v1/auth/logout"))
            .json(&json!({"refreshToken": third}))
    });
    assert_eq!(r.status, 204);
    assert_eq!(
        s.post("/api/v1/auth/refresh", &json!({"refreshToken": third}))
            .status,
        401
    );
    assert_eq!(
        s.post("/api/v1/auth/refresh", &json!({"refreshToken": "garbage"}))
            .status,
        401
    );
    // A password change ends every session.
    let fresh = login(&s, "alice@example.com", "alice-password");
    let r = as_user(
        &s,
        &fresh.access,
        "POST",
        "/api/v1/auth/password",
        Some(json!({"currentPassword": "wrong-password", "newPassword": "new-password-1"})),
    );
    assert_eq!(r.status, 401);
    let r = as_user(
        &s,
        &fresh.access,
        "POST",
        "/api/v1/auth/password",
        Some(json!({"currentPassword": "alice-password", "newPassword": "new-password-1"})),
    );
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        s.post(
            "/api/v1/auth/refresh",
            &json!({"refreshToken": fresh.refresh})
        )
        .status,
        401
    );
    assert_eq!(
        s.post(
            "/api/v1/auth/login",
            &json!({"email": "alice@example.com", "password": "alice-password"})
        )
        .status,
        401
    );
    login(&s, "alice@example.com", "new-password-1");
}

#[test]
fn login_failures_look_alike_and_are_throttled() {
    let s = Project::on(crate::backend()).serve(BIN);
    register(&s, "alice@example.com", "alice-password");
    let strip = |r: &Reply| {
        let mut v = r.json();
        v["error"]["requestId"] = Value::Null;
        (r.status, v)
    };
    let wrong = s.post(
        "/api/v1/auth/login",
        &json!({"email": "alice@example.com", "password": "not-her-password"}),
    );
    let unknown = s.post(
        "/api/v1/auth/login",
        &json!({"email": "nobody@example.com", "password": "not-her-password"}),
    );
    assert_eq!(wrong.code(), "INVALID_CREDENTIALS");
    assert_eq!(
        strip(&wrong),
        strip(&unknown),
        "identical for unknown email and wrong password"
    );
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": "short@example.com", "password": "1234567"}),
    );
    assert_eq!(
        r.json()["error"]["details"]["fields"]["password"],
        json!(["must be at least 8 characters"])
    );
    // Case-insensitive email: the same account.
    assert_eq!(
        s.post(
            "/api/v1/auth/login",
            &json!({"email": "ALICE@example.com", "password": "alice-password"})
        )
        .status,
        200
    );
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": "ALICE@EXAMPLE.COM", "password": "alice-password"}),
    );
    assert_eq!(r.status, 409, "{}", r.text);

    // One failure was counted above; nine more reach the limit of ten.
    for _ in 0..9 {
        let r = s.post(
            "/api/v1/auth/login",
            &json!({"email": "alice@example.com", "password": "guess-guess"}),
        );
        assert_eq!(r.status, 401);
    }
    let r = s.post(
        "/api/v1/auth/login",
        &json!({"email": "alice@example.com", "password": "alice-password"}),
    );
    assert_eq!(r.status, 429, "even the right password waits: {}", r.text);
    assert_eq!(r.code(), "RATE_LIMITED");
    assert!(
        r.header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v > 0)
    );
}

#[test]
fn api_keys_are_scoped_shown_once_and_revocable() {
    let s = Project::on(crate::backend()).serve(BIN);
    let alice = register(&s, "alice@example.com", "alice-password");
    let r = as_user(
        &s,
        &alice.access,
        "POST",
        "/api/v1/posts",
        Some(json!({"title": "Published", "slug": "published", "status": "published"})),
    );
    assert_eq!(r.status, 201);
    let r = as_user(
        &s,
        &alice.access,
        "POST",
        "/api/v1/auth/api-keys",
        Some(json!({"name": "reader", "scopes": ["posts:read"]})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let key = r.json()["data"]["key"].as_str().expect("key").to_owned();
    let key_id = r.json()["data"]["id"].as_str().expect("id").to_owned();
    assert!(key.starts_with("fbk_"));
    let listed = as_user(&s, &alice.access, "GET", "/api/v1/auth/api-keys", None);
    assert!(!listed.text.contains(&key), "never shown again");
    assert_eq!(listed.json()["data"][0]["scopes"], json!(["posts:read"]));

    assert_eq!(as_user(&s, &key, "GET", "/api/v1/posts", None).status, 200);
    let r = as_user(
        &s,
        &key,
        "POST",
        "/api/v1/posts",
        Some(json!({"title": "Via key", "slug": "via-key"})),
    );
    assert_eq!(r.status, 403, "outside its scope: {}", r.text);
    assert!(r.text.contains("posts:write"));
    assert_eq!(as_user(&s, &key, "GET", "/api/v1/users", None).status, 403);
    assert_eq!(
        as_user(
            &s,
            &key,
            "POST",
            "/api/v1/auth/api-keys",
            Some(json!({"name": "x", "scopes": ["*"]}))
        )
        .status,
        403
    );
    let tampered = format!("{}x", &key[..key.len() - 1]);
    assert_eq!(
        as_user(&s, &tampered, "GET", "/api/v1/posts", None).status,
        401
    );

    let writer = as_user(
        &s,
        &alice.access,
        "POST",
        "/api/v1/auth/api-keys",
        Some(json!({"name": "writer", "scopes": ["posts:write", "posts:read"], "expiresIn": "1h"})),
    );
    let writer = writer.json()["data"]["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let r = as_user(
        &s,
        &writer,
        "POST",
        "/api/v1/posts",
        Some(json!({"title": "Via key", "slug": "via-key"})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json()["data"]["author"],
        alice.id,
        "a key acts as its owner"
    );

    let r = as_user(
        &s,
        &alice.access,
        "DELETE",
        &format!("/api/v1/auth/api-keys/{key_id}"),
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        as_user(&s, &key, "GET", "/api/v1/posts", None).status,
        401,
        "revoked"
    );
    let expired = as_user(
        &s,
        &alice.access,
        "POST",
        "/api/v1/auth/api-keys",
        Some(json!({"name": "old", "scopes": ["*"], "expiresAt": "2020-01-01T00:00:00Z"})),
    );
    let expired = expired.json()["data"]["key"]
        .as_str()
        .expect("key")
        .to_owned();
    assert_eq!(
        as_user(&s, &expired, "GET", "/api/v1/posts", None).status,
        401
    );
    let r = as_user(
        &s,
        &alice.access,
        "POST",
        "/api/v1/auth/api-keys",
        Some(json!({"name": "bad", "scopes": ["nope:read"]})),
    );
    assert_eq!(r.status, 400);
    let r = as_user(
        &s,
        &alice.access,
        "POST",
        "/api/v1/auth/api-keys",
        Some(json!({"name": "forever", "scopes": ["*"], "expiresIn": "100000y"})),
    );
    assert_eq!(r.status, 400, "{}", r.text);
}

#[test]
fn cookie_sessions_need_csrf_for_writes() {
    let s = Project::on(crate::backend()).serve(BIN);
    register(&s, "alice@example.com", "alice-password");
    let r = s.post(
        "/api/v1/auth/login",
        &json!({"email": "alice@example.com", "password": "alice-password", "session": "cookie"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let set_cookie = r.header("set-cookie").expect("cookie").to_owned();
    assert!(
        set_cookie.starts_with("__Host-ferrobase_session="),
        "{set_cookie}"
    );
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attr), "{attr} in {set_cookie}");
    }
    assert!(r.json()["data"].get("accessToken").is_none());
    let csrf = r.json()["data"]["csrfToken"]
        .as_str()
        .expect("csrf")
        .to_owned();
    let cookie = set_cookie.split(';').next().expect("pair").to_owned();

    let me = s.send(|c| c.get(s.url("/api/v1/auth/me")).header("cookie", &cookie));
    assert_eq!(me.status, 200, "reads need no CSRF token");
    let post = |headers: &[(&str, &str)], slug: &str| {
        s.send(|c| {
            let mut rb = c
                .post(s.url("/api/v1/posts"))
                .header("cookie", &cookie)
                .json(&json!({"title": "Cookie post", "slug": slug}));
            for (k, v) in headers {
                rb = rb.header(*k, *v);
            }
            rb
        })
    };
    let r = post(&[], "no-token");
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("X-CSRF-Token"));
    let r = post(&[("x-csrf-token", "forged")], "forged");
    assert_eq!(r.status, 403);
    let r = post(
        &[("x-csrf-token", &csrf), ("sec-fetch-site", "cross-site")],
        "cross-site",
    );
    assert_eq!(r.status, 403);
    let r = post(
        &[("x-csrf-token", &csrf), ("origin", "https://evil.example")],
        "evil-origin",
    );
    assert_eq!(r.status, 403);
    let r = post(
        &[("x-csrf-token", &csrf), ("sec-fetch-site", "same-origin")],
        "good",
    );
    assert_eq!(r.status, 201, "{}", r.text);

    let r = s.send(|c| {
        c.post(s.url("/api/v1/auth/logout"))
            .header("cookie", &cookie)
            .header("sec-fetch-site", "cross-site")
    });
    assert_eq!(r.status, 403, "no logout from another site");
    let r = s.send(|c| {
        c.post(s.url("/api/v1/auth/logout"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
    });
    assert_eq!(r.status, 204);
    let me = s.send(|c| c.get(s.url("/api/v1/auth/me")).header("cookie", &cookie));
    assert_eq!(me.status, 401, "the session is over");
}

/// Logs in with a cookie session; returns the `name=value` cookie and the CSRF token.
fn cookie_login(s: &Server, email: &str, password: &str, cookie: Option<&str>) -> (String, String) {
    let r = s.send(|c| {
        let rb = c
            .post(s.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password, "session": "cookie"}));
        match cookie {
            Some(cookie) => rb
                .header("cookie", cookie)
                .header("sec-fetch-site", "same-origin"),
            None => rb,
        }
    });
    assert_eq!(r.status, 200, "{}", r.text);
    let cookie = r
        .header("set-cookie")
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let csrf = r.json()["data"]["csrfToken"]
        .as_str()
        .expect("csrf")
        .to_owned();
    (cookie, csrf)
}

/// A cookie write with the CSRF token: its status.
fn cookie_post(s: &Server, cookie: &str, csrf: &str, slug: &str) -> u16 {
    s.send(|c| {
        c.post(s.url("/api/v1/posts"))
            .header("cookie", cookie)
            .header("x-csrf-token", csrf)
            .json(&json!({"title": "Cookie post", "slug": slug}))
    })
    .status
}

#[test]
fn a_page_that_lost_its_csrf_token_gets_it_again_and_can_sign_in_and_out() {
    let s = Project::on(crate::backend()).serve(BIN);
    register(&s, "alice@example.com", "alice-password");
    let (cookie, csrf) = cookie_login(&s, "alice@example.com", "alice-password", None);
    // The page reloads: it has the cookie, not the token. /auth/me hands it out again.
    let me = s.send(|c| c.get(s.url("/api/v1/auth/me")).header("cookie", &cookie));
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.header("x-csrf-token"), Some(csrf.as_str()));
    assert_eq!(me.header("cache-control"), Some("no-store"));
    assert_eq!(cookie_post(&s, &cookie, &csrf, "after-reload"), 201);
    // Bearer callers get no such header.
    let bob = register(&s, "bob@example.com", "bob-password");
    let r = as_user(&s, &bob.access, "GET", "/api/v1/auth/me", None);
    assert_eq!(r.header("x-csrf-token"), None);

    // Signing in again while the cookie lives, without the token, replaces the session.
    let (second, csrf2) = cookie_login(&s, "alice@example.com", "alice-password", Some(&cookie));
    assert_ne!(second, cookie);
    let me = s.send(|c| c.get(s.url("/api/v1/auth/me")).header("cookie", &cookie));
    assert_eq!(me.status, 401, "the replaced session is over");
    assert_eq!(cookie_post(&s, &second, &csrf2, "second-session"), 201);
    // Signing out without the token works from this site.
    let r = s.send(|c| {
        c.post(s.url("/api/v1/auth/logout"))
            .header("cookie", &second)
            .header("sec-fetch-site", "same-origin")
    });
    assert_eq!(r.status, 204, "{}", r.text);
    let me = s.send(|c| c.get(s.url("/api/v1/auth/me")).header("cookie", &second));
    assert_eq!(me.status, 401);
}

#[test]
fn rotating_the_secret_keeps_cookie_sessions_working() {
    let project =
        Project::on(crate::backend()).env("FERROBASE_SECRET", "the-old-secret-0123456789abcdef");
    let s = project.serve(BIN);
    register(&s, "alice@example.com", "alice-password");
    let (cookie, csrf) = cookie_login(&s, "alice@example.com", "alice-password", None);
    assert_eq!(cookie_post(&s, &cookie, &csrf, "before"), 201);
    let project = s
        .into_project()
        .env("FERROBASE_SECRET", "the-new-secret-0123456789abcdef")
        .env(
            "FERROBASE_SECRET_PREVIOUS",
            "the-old-secret-0123456789abcdef",
        );
    let s = project.serve(BIN);
    assert_eq!(
        cookie_post(&s, &cookie, &csrf, "after"),
        201,
        "a token made with the previous secret still works"
    );
    // /auth/me hands out the token of the current secret, which works too.
    let me = s.send(|c| c.get(s.url("/api/v1/auth/me")).header("cookie", &cookie));
    let fresh = me.header("x-csrf-token").expect("token").to_owned();
    assert_ne!(fresh, csrf);
    assert_eq!(cookie_post(&s, &cookie, &fresh, "fresh"), 201);
    // Without the previous secret, the old token is refused.
    let project = s.into_project().env("FERROBASE_SECRET_PREVIOUS", "");
    let s = project.serve(BIN);
    assert_eq!(cookie_post(&s, &cookie, &csrf, "gone"), 403);
}

#[test]
fn no_password_token_or_secret_reaches_the_logs() {
    let project = Project::on(crate::backend()).settings("[log]\nlevel = \"debug\"\n");
    create_admin(&project, "root@example.com", "admin-password-1");
    let s = project.serve(BIN);
    let alice = register(&s, "alice@example.com", "alice-password");
    let r = s.post(
        "/api/v1/auth/login",
        &json!({"email": "alice@example.com", "password": "alice-password", "session": "cookie"}),
    );
    let cookie = r
        .header("set-cookie")
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .split('=')
        .nth(1)
        .expect("value")
        .to_owned();
    let key = as_user(
        &s,
        &alice.access,
        "POST",
        "/api/v1/auth/api-keys",
        Some(json!({"name": "k", "scopes": ["*"]})),
    );
    let key = key.json()["data"]["key"].as_str().expect("key").to_owned();
    as_user(&s, &key, "GET", "/api/v1/posts", None);
    s.post(
        "/api/v1/auth/refresh",
        &json!({"refreshToken": alice.refresh}),
    );
    s.post(
        "/api/v1/auth/login",
        &json!({"email": "alice@example.com", "password": "wrong-password-x"}),
    );
    let marker = s.get("/health?marker=done");
    assert_eq!(marker.status, 200);
    s.logs
        .wait_for(ferrobase_testkit::DEADLINE, |l| l["query"] == "marker=done")
        .expect("the last line");
    let secret = std::fs::read_to_string(s.path("data/.secret")).expect("secret");
    let logs = s.logs.text();
    for (what, value) in [
        ("password", "alice-password"),
        ("admin password", "admin-password-1"),
        ("wrong password", "wrong-password-x"),
        ("access token", alice.access.as_str()),
        ("refresh token", alice.refresh.as_str()),
        ("session cookie", cookie.as_str()),
        ("api key", key.as_str()),
        ("secret", secret.trim()),
    ] {
        assert!(!logs.contains(value), "the {what} leaked into the logs");
    }
    assert!(logs.contains(&alice.id), "request lines name the user");
}

const NOTES: &str = r#"
[auth]
roles = ["admin", "user"]
default_role = "user"

[resources.users.fields]
name = { type = "string" }
credits = { type = "integer", write = "@auth.role = 'admin'" }

[resources.notes]
timestamps = true
[resources.notes.fields]
owner    = { type = "relation", resource = "users", required = true, default = "@auth.id", read_only = true }
text     = { type = "text" }
internal = { type = "text", read = "@auth.role = 'admin' || owner = @auth.id", write = "@auth.role = 'admin'" }
pin      = { type = "string", hidden = true }
[resources.notes.rules]
list   = "@auth.id != null"
view   = "@auth.id != null"
create = "@auth.id != null"
update = "owner = @auth.id || @auth.role = 'admin'"
delete = "owner = @auth.id"
"#;

#[test]
fn field_rules_hide_and_protect_single_fields() {
    let project = Project::on(crate::backend()).schema(NOTES);
    create_admin(&project, "root@example.com", "admin-password-1");
    let s = project.serve(BIN);
    let ann = register(&s, "ann@example.com", "ann-password");
    let ben = register(&s, "ben@example.com", "ben-password");
    let admin = login(&s, "root@example.com", "admin-password-1");
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": "cy@example.com", "password": "cy-password", "credits": 1000000}),
    );
    assert_eq!(
        r.status, 401,
        "registering visitors are anonymous to write rules: {}",
        r.text
    );

    // Only admins may write `internal`; nobody reads `pin` back.
    let r = as_user(
        &s,
        &ann.access,
        "POST",
        "/api/v1/notes",
        Some(json!({"text": "hi", "internal": "x"})),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("internal"));
    let r = as_user(
        &s,
        &ann.access,
        "POST",
        "/api/v1/notes",
        Some(json!({"text": "hi", "pin": "1234"})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let note = r.json()["data"].clone();
    assert_eq!(note["owner"], ann.id);
    assert!(note.get("pin").is_none(), "hidden");
    let path = format!("/api/v1/notes/{}", note["id"].as_str().expect("id"));
    let r = as_user(
        &s,
        &admin.access,
        "PATCH",
        &path,
        Some(json!({"internal": "reviewed"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);

    // `internal` is readable by its owner and admins, not by other users.
    let mine = as_user(&s, &ann.access, "GET", &path, None).json();
    assert_eq!(mine["data"]["internal"], "reviewed");
    let theirs = as_user(&s, &ben.access, "GET", &path, None).json();
    assert!(theirs["data"].get("internal").is_none(), "{theirs}");
    assert_eq!(theirs["data"]["text"], "hi");
    let listed = as_user(&s, &ben.access, "GET", "/api/v1/notes", None).json();
    assert!(listed["data"][0].get("internal").is_none());
    let r = as_user(
        &s,
        &ann.access,
        "PATCH",
        &path,
        Some(json!({"internal": "mine"})),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = as_user(
        &s,
        &ann.access,
        "PATCH",
        &path,
        Some(json!({"owner": ben.id})),
    );
    assert_eq!(r.status, 400, "read-only");
    // Rules needing a caller: 401 without one.
    assert_eq!(s.get("/api/v1/notes").status, 401);
    assert_eq!(s.get(&path).status, 401);
    // ben sees the note but may not change it.
    assert_eq!(
        as_user(&s, &ben.access, "PATCH", &path, Some(json!({"text": "x"}))).status,
        403
    );
    assert_eq!(as_user(&s, &ben.access, "DELETE", &path, None).status, 403);
    assert_eq!(as_user(&s, &ann.access, "DELETE", &path, None).status, 204);
}

#[test]
fn a_demoted_admin_loses_admin_rights_at_once() {
    let project = Project::on(crate::backend());
    create_admin(&project, "one@example.com", "admin-password-1");
    create_admin(&project, "two@example.com", "admin-password-2");
    let s = project.serve(BIN);
    let one = login(&s, "one@example.com", "admin-password-1");
    let two = login(&s, "two@example.com", "admin-password-2");
    let own = format!("/api/v1/users/{}", one.id);
    let r = as_user(
        &s,
        &two.access,
        "PATCH",
        &own,
        Some(json!({"role": "viewer"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // `one` still holds an access token that says admin; it no longer counts.
    let r = as_user(
        &s,
        &one.access,
        "PATCH",
        &own,
        Some(json!({"role": "admin"})),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(
        as_user(&s, &one.access, "GET", "/api/v1/users", None).status,
        403
    );
    let r = as_user(
        &s,
        &two.access,
        "DELETE",
        &format!("/api/v1/users/{}", two.id),
        None,
    );
    assert_eq!(r.status, 204);
    let r = as_user(&s, &two.access, "GET", "/api/v1/users", None);
    assert_eq!(r.status, 401, "a deleted admin's token is void");
}

const EDITORS: &str = r#"
[auth]
roles = ["admin", "editor", "user"]
default_role = "user"

[resources.users.fields]
name = { type = "string" }

[resources.pages.fields]
title = { type = "string", required = true }
[resources.pages.rules]
list = "true"
view = "true"
create = "@auth.role = 'editor'"
"#;

/// Roles above the default one are re-checked on every request, like admin: a demoted
/// editor's access token loses editor rights at once. (A token with the default role is
/// not looked up; see docs/architecture.md, "Roles in tokens".)
#[test]
fn a_demoted_editor_loses_editor_rights_at_once() {
    let project = Project::on(crate::backend()).schema(EDITORS);
    create_admin(&project, "root@example.com", "admin-password-1");
    let s = project.serve(BIN);
    let root = login(&s, "root@example.com", "admin-password-1");
    let alice = register(&s, "alice@example.com", "alice-password");
    let path = format!("/api/v1/users/{}", alice.id);
    let r = as_user(
        &s,
        &root.access,
        "PATCH",
        &path,
        Some(json!({"role": "editor"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let editor = login(&s, "alice@example.com", "alice-password");
    let doc = json!({"title": "Draft"});
    let r = as_user(
        &s,
        &editor.access,
        "POST",
        "/api/v1/pages",
        Some(doc.clone()),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let r = as_user(
        &s,
        &root.access,
        "PATCH",
        &path,
        Some(json!({"role": "user"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = as_user(&s, &editor.access, "POST", "/api/v1/pages", Some(doc));
    assert_eq!(r.status, 403, "the token still says editor: {}", r.text);
}

/// A user deleted by an admin: their still-valid access token acting for them is a 401.
#[test]
fn a_deleted_users_token_is_refused_where_it_acts_for_the_user() {
    let project = Project::on(crate::backend());
    create_admin(&project, "root@example.com", "admin-password-1");
    let s = project.serve(BIN);
    let root = login(&s, "root@example.com", "admin-password-1");
    let bob = register(&s, "bob@example.com", "bob-password");
    let r = as_user(
        &s,
        &root.access,
        "DELETE",
        &format!("/api/v1/users/{}", bob.id),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.text);
    let key = Some(json!({"name": "k", "scopes": ["*"]}));
    let r = as_user(&s, &bob.access, "POST", "/api/v1/auth/api-keys", key);
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.json()["error"]["code"], "UNAUTHORIZED");
    for (method, path) in [("GET", "/api/v1/auth/api-keys"), ("GET", "/api/v1/auth/me")] {
        let r = as_user(&s, &bob.access, method, path, None);
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text);
    }
    let r = s.post(
        "/api/v1/auth/refresh",
        &json!({"refreshToken": bob.refresh}),
    );
    assert_eq!(r.status, 401, "{}", r.text);
}

/// A user's API keys draw on the user's quota, so minting keys does not multiply it; and
/// a user holds a bounded number of live keys.
#[test]
fn api_keys_share_their_users_quota_and_minting_is_bounded() {
    let s = Project::on(crate::backend())
        .settings("[rate_limit]\ndefault = \"6/1h\"\n")
        .serve(BIN);
    let alice = register(&s, "alice@example.com", "alice-password");
    let keys: Vec<String> = (0..3)
        .map(|i| {
            let r = as_user(
                &s,
                &alice.access,
                "POST",
                "/api/v1/auth/api-keys",
                Some(json!({"name": format!("k{i}"), "scopes": ["*"]})),
            );
            assert_eq!(r.status, 201, "{}", r.text);
            r.json()["data"]["key"].as_str().expect("key").to_owned()
        })
        .collect();
    // Six requests in all, spread over the token and the three keys, then 429 for each.
    let callers = [
        &alice.access,
        &keys[0],
        &keys[1],
        &keys[2],
        &keys[0],
        &keys[1],
    ];
    for (n, token) in callers.iter().enumerate() {
        let r = as_user(&s, token, "GET", "/api/v1/posts", None);
        assert_eq!(r.status, 200, "request {n}: {}", r.text);
    }
    for token in [&alice.access, &keys[0], &keys[1], &keys[2]] {
        let r = as_user(&s, token, "GET", "/api/v1/posts", None);
        assert_eq!(r.status, 429, "{}", r.text);
        assert_eq!(r.json()["error"]["code"], "RATE_LIMITED");
    }
    // Another user is not affected.
    let bob = register(&s, "bob@example.com", "bob-password");
    assert_eq!(
        as_user(&s, &bob.access, "GET", "/api/v1/posts", None).status,
        200
    );

    // Live keys are bounded (revoking one makes room).
    let mint = |name: &str| {
        as_user(
            &s,
            &bob.access,
            "POST",
            "/api/v1/auth/api-keys",
            Some(json!({"name": name, "scopes": ["posts:read"]})),
        )
    };
    let mut first = None;
    for i in 0..25 {
        let r = mint(&format!("k{i}"));
        assert_eq!(r.status, 201, "{}", r.text);
        first.get_or_insert_with(|| r.json()["data"]["id"].as_str().expect("id").to_owned());
    }
    let r = mint("one-too-many");
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json()["error"]["code"], "UNPROCESSABLE");
    let path = format!("/api/v1/auth/api-keys/{}", first.expect("a key"));
    assert_eq!(as_user(&s, &bob.access, "DELETE", &path, None).status, 204);
    assert_eq!(mint("room-again").status, 201);
}
