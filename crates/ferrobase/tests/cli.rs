//! The command line: check, serve refusing bad configuration, init, exit codes.

use ferrobase_testkit::Project;

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");

/// A schema with several mistakes on known lines.
const BROKEN: &str = r#"[auth]
roles = ["admin", "user"]

[resources.posts]
timestamps = true
colour = "blue"
[resources.posts.fields]
title  = { type = "strng", required = true }
body   = { type = "text", min = 3 }
author = { type = "relation", resource = "userz" }
slug   = { type = "string", pattern = "([a-z" }
[resources.posts.indexes]
by_x = ["nothing"]
[resources.posts.rules]
list = "status = 'published'"
view = "title = "
create = "@body.nope = @auth.id"
"#;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_reports_every_mistake_with_its_location_and_exits_2() {
    let project = Project::new().schema(BROKEN);
    let out = project.run(BIN, &["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let expected = [
        "schema.toml:6:1: unknown key 'colour' in [resources.posts]",
        "schema.toml:8:19: unknown field type 'strng'",
        "did you mean 'string'?",
        "schema.toml:9:33: field 'posts.body': min applies to integer and number fields",
        "schema.toml:11:39: field 'posts.slug': invalid pattern",
        "schema.toml:13:9: index 'by_x' names unknown field 'nothing'",
        "schema.toml:10:42: field 'posts.author' relates to unknown resource 'userz'",
        "schema.toml:16:17: rule 'view' of posts: expected a value after '='",
        "schema.toml:17:17: rule 'create' of posts: @body.nope: unknown field 'nope' in posts",
    ];
    for line in expected {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    // Rules are checked even when fields are broken; `title` (broken) is not reported
    // again, `status` (never declared) is.
    assert!(
        err.contains("schema.toml:15:9: rule 'list' of posts: unknown field 'status'"),
        "{err}"
    );
    assert!(err.contains("problems found"), "{err}");
}

#[test]
fn serve_refuses_an_invalid_schema_the_same_way() {
    let project = Project::new().schema(BROKEN);
    let check = stderr(&project.run(BIN, &["check"]));
    let out = project.run(BIN, &["serve", "--addr", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out), check, "serve and check report identically");
    assert!(!project.path().join("data").exists(), "nothing was created");
}

#[test]
fn settings_problems_are_reported_together_with_schema_problems() {
    let project = Project::new()
        .schema("[resources.a.fields]\nx = { type = \"integer\", max = \"ten\" }\n")
        .settings("[server]\naddr = \"localhost\"\nbody_limit = \"huge\"\n[lg]\nlevel = \"info\"\n")
        .env("FERROBASE_RATE_LIMIT__ENABLED", "maybe");
    let out = project.run(BIN, &["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for line in [
        "ferrobase.toml:2:8: server.addr",
        "ferrobase.toml:3:14: server.body_limit",
        "ferrobase.toml:4:2: unknown section [lg]",
        "environment: FERROBASE_RATE_LIMIT__ENABLED: must be true or false",
        "schema.toml:2:31: field 'a.x': max must be a number",
        "5 problems found",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
}

#[test]
fn production_with_a_short_secret_exits_2_without_echoing_it() {
    let secret = "tiny-secret-value";
    for command in [&["check"][..], &["serve", "--addr", "127.0.0.1:0"][..]] {
        let project = Project::new()
            .env("FERROBASE_ENV", "production")
            .env("FERROBASE_SECRET", secret);
        let out = project.run(BIN, command);
        let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
        assert_eq!(out.status.code(), Some(2), "{command:?}: {all}");
        assert!(
            all.contains("FERROBASE_SECRET: is 17 bytes; production needs at least 32"),
            "{all}"
        );
        assert!(!all.contains(secret), "the secret was echoed: {all}");
    }
    // Missing entirely, and the other production guards, all at once.
    let project = Project::new()
        .env("FERROBASE_ENV", "production")
        .settings("[cors]\nallowed_origins = [\"*\"]\n[auth]\ncookie_secure = false\n[server]\ndebug_errors = true\n");
    let out = project.run(BIN, &["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2));
    for part in [
        "FERROBASE_SECRET: must be set",
        "cors.allowed_origins",
        "auth.cookie_secure",
        "server.debug_errors",
    ] {
        assert!(err.contains(part), "missing {part}: {err}");
    }
}

#[test]
fn init_scaffolds_valid_projects_and_never_overwrites() {
    for template in ["blog", "empty"] {
        let project = Project::new();
        let out = project.run(BIN, &["init", "--template", template]);
        assert!(out.status.success(), "{}", stderr(&out));
        for file in [
            "schema.toml",
            "ferrobase.toml",
            ".env.example",
            ".gitignore",
            "migrations/.gitkeep",
        ] {
            assert!(project.path().join(file).exists(), "{template}: {file}");
        }
        let check = project.run(BIN, &["check"]);
        assert!(check.status.success(), "{template}: {}", stderr(&check));
        let stdout = String::from_utf8_lossy(&check.stdout);
        assert!(stdout.starts_with("ok: schema.toml"), "{stdout}");
        if template == "blog" {
            assert!(stdout.contains("users, posts"), "{stdout}");
        }
        let again = project.run(BIN, &["init"]);
        assert_eq!(again.status.code(), Some(2));
        assert!(stderr(&again).contains("already exist"));
    }
    // A positional directory works too, and is created.
    let project = Project::new();
    let target = project.path().join("nested/app");
    let out = project.run(BIN, &["init", target.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(target.join("schema.toml").exists());
}

#[test]
fn check_accepts_the_builtin_example_and_usage_errors_exit_2() {
    let project = Project::new();
    let out = project.run(BIN, &["check"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("built-in blog schema"));
    let out = project.run(BIN, &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_refuses_what_would_fail_at_run_time() {
    let project = Project::new()
        .schema(
            "[resources.sqlite_stat.fields]\nx = { type = \"text\" }\n[resources.notes.fields]\nstamp = { type = \"string\", required = true, read_only = true }\n",
        )
        .settings("[server]\nrequest_timeout = \"0s\"\n[database]\nurl = \"mysql://db/app\"\n");
    let out = project.run(BIN, &["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for part in [
        "resource name 'sqlite_stat' is reserved",
        "field 'notes.stamp' is required and read-only but has no default",
        "server.request_timeout: must be longer than zero",
        "database.url: must start with sqlite:// or postgres://",
    ] {
        assert!(err.contains(part), "missing {part}: {err}");
    }
}

#[test]
fn a_broken_env_file_is_reported_without_its_content() {
    let project = Project::new().file(".env", "FERROBASE_SECRET=\"hunter2 unterminated\n");
    let out = project.run(BIN, &["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(".env: cannot be parsed"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn oauth_and_passkey_settings_report_every_problem() {
    let project = Project::new().settings(
        r#"[auth]
redirect_allowlist = ["not a url"]

[auth.oauth.google]
client_id = "id"

[auth.oauth.corp]
issuer = "http://login.corp.example"
client_id = "id"
client_secret = "env:CORP_SECRET"
colour = "blue"

[auth.oauth.what]
preset = "myspace"
client_id = "id"
client_secret = "s"

[auth.oauth.github]
issuer = "https://github.com"
client_id = "id"
client_secret = "s"

[auth.passkeys]
origins = ["https://app.example.com/login"]
"#,
    );
    let out = project.run(BIN, &["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for line in [
        "auth.redirect_allowlist: 'not a url' is not an absolute URL",
        "auth.oauth.google: client_secret is required",
        "auth.oauth.corp: an http:// issuer is accepted only on a loopback address outside production",
        "auth.oauth.corp: client_secret names CORP_SECRET, which is not set",
        "auth.oauth.corp: unknown key 'colour'",
        "auth.oauth.what: unknown preset 'myspace'",
        "auth.oauth.github: GitHub and Discord are not OpenID providers",
        "auth.passkeys: origins must list origins",
        "8 problems found",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }

    // A loopback http issuer is fine for development, refused in production (where OAuth
    // also needs the public URL its callbacks are built from).
    let local = "[auth.oauth.dev]\nissuer = \"http://127.0.0.1:9000\"\nclient_id = \"id\"\nclient_secret = \"s\"\n";
    let out = Project::new().settings(local).run(BIN, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = Project::new()
        .settings(local)
        .env("FERROBASE_ENV", "production")
        .env(
            "FERROBASE_SECRET",
            "a-production-secret-of-enough-length-000",
        )
        .run(BIN, &["check"]);
    let err = stderr(&out);
    assert!(
        err.contains("auth.oauth.dev: an http:// issuer is accepted only"),
        "{err}"
    );
}
