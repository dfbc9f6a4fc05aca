//! Conformance of the OpenAPI 3.1 document (`GET /api/v1/openapi.json`) with the server
//! that serves it, proved by real tools rather than by reading the document:
//!
//! - `openapi-spec-validator`: the document is valid OpenAPI 3.1;
//! - `schemathesis`: the running server answers every generated request as the
//!   document says (no 5xx, documented statuses, media types, headers and bodies);
//! - `openapi-typescript` + `tsc --strict`: a typed client (`conformance/client.ts`)
//!   compiles against the types generated from it.
//!
//! The tools install themselves once into `<target>/conformance-tools/` (a Python venv
//! and an npm directory, each behind a file lock and a marker naming the pinned
//! versions, so later runs start at once). When they cannot be installed the tests say
//! SKIPPED, unless `FERROBASE_REQUIRE_SERVICES=1` makes that a failure.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferrobase_testkit::{Project, Server};
use serde_json::{Value, json};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");
/// Every field type and constraint, with public rules.
const EVERY_TYPE: &str = include_str!("conformance/every_type.toml");
/// The typed client compiled against the generated types.
const CLIENT_TS: &str = include_str!("conformance/client.ts");

/// Python tools, pinned exactly (both support OpenAPI 3.1). Changing a pin reinstalls.
const PYTHON_PACKAGES: &[&str] = &["schemathesis==4.32.5", "openapi-spec-validator==0.9.0"];
/// npm tools, pinned exactly. TypeScript stays on 5.x: openapi-typescript 7 declares
/// `typescript ^5.x` as its peer.
const NODE_PACKAGES: &[(&str, &str)] = &[("openapi-typescript", "7.13.0"), ("typescript", "5.9.3")];

/// The checks schemathesis runs, chosen one by one rather than `all`:
///
/// - `not_a_server_error`: no input, however malformed, may produce a 5xx.
/// - `status_code_conformance`: every status the server answers is documented for the
///   operation (so the document lists its 400/401/404/409/412/415/... error responses).
/// - `content_type_conformance`: the response media type is one the document declares.
/// - `response_headers_conformance`: documented response headers (`Location`, `ETag`,
///   ...) are present and match their schemas.
/// - `response_schema_conformance`: every body matches its documented schema, errors
///   included.
/// - `negative_data_rejection`: a request that violates the document (a string past
///   `maxLength`, a value outside an enum, an unknown body field, a wrong type) is
///   answered with a 4xx. This is what proves that the constraints the document
///   advertises are the ones the server enforces. Schemathesis only counts inputs as
///   negative when they are invalid as sent on the wire (it discounts serialisation
///   artefacts and extra query parameters), and it takes any of 400, 401, 403, 404,
///   405, 406, 409, 415, 422, 428 and 429 as a rejection.
/// - `missing_required_header`: a documented required header, when left out, is refused.
/// - `unsupported_method`: a method the document does not list for a path is answered
///   `405` with an `Allow` header.
/// - `allow_header_conformance`: an `Allow` header lists exactly the documented methods.
/// - `use_after_free`, `ensure_resource_availability` (stateful phase): a deleted
///   record is gone (404) and a created one can be read back through the links.
/// - `ignored_auth`: an operation the document says needs credentials refuses a
///   request without them; operations that also allow anonymous callers must say so
///   (`security: [{}, {bearerAuth: []}]`), and are then left alone.
///
/// Left out on purpose:
///
/// - `positive_data_acceptance` demands a 2xx for every schema-valid request. A
///   schema cannot say that a relation must name a record that exists, that a unique
///   value is not taken yet, or what an access rule (`@body.author = @auth.id`) allows,
///   so valid-looking requests are rightly refused with 400/403/409 and this check
///   would only report the server being correct.
/// - `object_level_authorization` needs several identities (a Web Fuzzing Commons auth
///   file); with the one token these tests pass it has nothing to compare.
const CHECKS: &[&str] = &[
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
];

/// Test cases per operation and phase: enough to reach every constraint of the schemas
/// below, few enough that both fuzzing tests finish well inside a minute on 2 cores.
const MAX_EXAMPLES: &str = "50";
/// A fixed seed: the same build generates the same requests on every run.
const SEED: &str = "20251201";
/// Longest a tool may run before the test kills it and fails.
const TOOL_DEADLINE: Duration = Duration::from_secs(600);

#[test]
fn openapi_document_is_valid_and_schemathesis_finds_nothing_on_the_blog() {
    let Some(python) = python_tools() else { return };
    let project = Project::new().env("FERROBASE_RATE_LIMIT__ENABLED", "false");
    let printed = project.run(BIN, &["openapi"]);
    assert!(
        printed.status.success(),
        "`ferrobase openapi` failed ({}):\n{}",
        printed.status,
        String::from_utf8_lossy(&printed.stderr)
    );
    let server = project.serve(BIN);
    let token = register(&server);
    let work = tempfile::tempdir().expect("temporary directory");
    let served = fetch_document(&server, work.path());
    let cli = work.path().join("printed.json");
    fs::write(&cli, &printed.stdout).expect("write the printed document");
    validate(python, &served);
    validate(python, &cli);
    schemathesis(python, &server, &served, &token, work);
}

#[test]
fn schemathesis_finds_nothing_on_every_field_type() {
    let Some(python) = python_tools() else { return };
    let server = Project::new()
        .schema(EVERY_TYPE)
        .env("FERROBASE_RATE_LIMIT__ENABLED", "false")
        .serve(BIN);
    let token = register(&server);
    let work = tempfile::tempdir().expect("temporary directory");
    let document = fetch_document(&server, work.path());
    validate(python, &document);
    schemathesis(python, &server, &document, &token, work);
}

#[test]
fn typescript_types_from_the_document_compile() {
    let Some(node) = node_tools() else { return };
    let server = Project::new().serve(BIN);
    let work = tempfile::tempdir().expect("temporary directory");
    let document = fetch_document(&server, work.path());
    drop(server);

    let types = work.path().join("openapi.ts");
    // `--default-non-nullable false`: a property with a `default` stays optional. The
    // generator cannot tell request schemas from response ones, and a create body may
    // leave out any field the server fills in.
    let generated = run_tool(
        Command::new(node.join("openapi-typescript"))
            .arg(&document)
            .args(["--default-non-nullable", "false", "--output"])
            .arg(&types)
            .current_dir(work.path()),
    );
    if !(generated.status.success() && types.exists()) {
        fail(
            work,
            &format!(
                "openapi-typescript could not generate types from the document:\n{}",
                output_text(&generated)
            ),
        );
    }

    fs::write(work.path().join("client.ts"), CLIENT_TS).expect("write client.ts");
    let compiled = run_tool(
        Command::new(node.join("tsc"))
            .args([
                "--noEmit",
                "--strict",
                "--target",
                "es2022",
                "--module",
                "esnext",
                "--moduleResolution",
                "bundler",
                "--skipLibCheck",
                "--pretty",
                "false",
                "client.ts",
            ])
            .current_dir(work.path()),
    );
    if !compiled.status.success() {
        fail(
            work,
            &format!(
                "tests/conformance/client.ts does not compile against the types generated \
                 from the document (openapi.ts):\n{}",
                output_text(&compiled)
            ),
        );
    }
}

/// Registers a user and returns its access token.
fn register(server: &Server) -> String {
    let r = server.post(
        "/api/v1/auth/register",
        &json!({"email": "conformance@example.com", "password": "conformance-password"}),
    );
    assert_eq!(r.status, 201, "register: {}", r.text);
    r.json()["data"]["accessToken"]
        .as_str()
        .expect("data.accessToken")
        .to_owned()
}

/// Fetches the document into `dir/openapi.json` after checking it is OpenAPI 3.1.
fn fetch_document(server: &Server, dir: &Path) -> PathBuf {
    let r = server.get("/api/v1/openapi.json");
    assert_eq!(
        r.status, 200,
        "GET /api/v1/openapi.json: {} {}",
        r.status, r.text
    );
    let document: Value = r.json();
    let version = document["openapi"].as_str().unwrap_or_default();
    assert!(
        version.starts_with("3.1."),
        "the document must be OpenAPI 3.1, it says {version:?}"
    );
    let path = dir.join("openapi.json");
    fs::write(&path, &r.text).expect("write the document");
    path
}

/// `openapi-spec-validator` against the OpenAPI 3.1 meta-schema, every error reported.
fn validate(python: &Path, document: &Path) {
    let out = run_tool(
        Command::new(python.join("openapi-spec-validator"))
            .args(["--schema", "3.1", "--validation-errors", "all"])
            .arg(document),
    );
    assert!(
        out.status.success(),
        "{} is not a valid OpenAPI 3.1 document:\n{}",
        document.display(),
        output_text(&out)
    );
}

/// Runs schemathesis against the server; fails with its report when it finds anything.
fn schemathesis(python: &Path, server: &Server, document: &Path, token: &str, work: TempDir) {
    let origin = server.url("");
    let started = Instant::now();
    let out = run_tool(
        Command::new(python.join("st"))
            .arg("run")
            .arg(document)
            // The document's own `servers` path is appended to the origin, so paths and
            // base path may be split either way.
            .args(["--origin", &origin])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--checks", &CHECKS.join(",")])
            .args(["--max-examples", MAX_EXAMPLES])
            .args(["--seed", SEED])
            // No example database: a run depends on the seed and this build, not on
            // what an earlier run remembered.
            .args(["--generation-database", "none"])
            // One worker: requests in a fixed order, so the seed fixes the run.
            .args(["--workers", "1"])
            .args(["--request-timeout", "10"])
            // Realtime streams last until the client ends them (and the WebSocket
            // endpoint needs an upgrade): `realtime.rs` tests them with real clients.
            .args([
                "--exclude-path-regex",
                "^/api/v1/[a-z][a-z0-9_]*/events$|^/api/v1/realtime$",
            ])
            .arg("--no-color")
            .current_dir(work.path())
            .env("NO_COLOR", "1"),
    );
    let report = output_text(&out);
    if !out.status.success() {
        fail(
            work,
            &format!(
                "schemathesis found the server and its document disagreeing:\n{report}\n\
                 server output (last lines):\n{}",
                tail(&server.logs.text(), 40)
            ),
        );
    }
    println!(
        "schemathesis ran in {:.1}s:\n{report}",
        started.elapsed().as_secs_f64()
    );
}

/// Fails the test with `message`, keeping `work` (the document, generated files) for a
/// look.
fn fail(work: TempDir, message: &str) -> ! {
    let kept = work.keep();
    panic!(
        "{message}\n(the document and generated files are kept in {})",
        kept.display()
    );
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------
// Tool installation.

/// Whether a missing tool is a failure rather than a skip.
fn required() -> bool {
    std::env::var("FERROBASE_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Says why a tool is missing: a failure when required, otherwise a loud skip.
fn unavailable(what: &str, why: &str) {
    assert!(
        !required(),
        "{what} could not be installed, and FERROBASE_REQUIRE_SERVICES=1:\n{why}"
    );
    // Straight to the process's stderr, past the test harness's capture: a skip is
    // seen in the output of a passing run too.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {what} could not be installed; this test did not run:\n{why}"
    );
}

/// `<target>/conformance-tools`: the binary under test lives in `<target>/<profile>/`.
fn tools_dir() -> PathBuf {
    let target = Path::new(BIN).parent().and_then(Path::parent).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        Path::to_path_buf,
    );
    target.join("conformance-tools")
}

/// The `bin` directory of the Python venv with schemathesis and the validator.
fn python_tools() -> Option<&'static Path> {
    static TOOLS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match TOOLS.get_or_init(|| install("python", &PYTHON_PACKAGES.join(" "), install_python)) {
        Ok(bin) => Some(bin),
        Err(why) => {
            unavailable("schemathesis and openapi-spec-validator (Python)", why);
            None
        }
    }
}

/// The `node_modules/.bin` directory with openapi-typescript and tsc.
fn node_tools() -> Option<&'static Path> {
    static TOOLS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let stamp = NODE_PACKAGES
        .iter()
        .map(|(name, version)| format!("{name}@{version}"))
        .collect::<Vec<_>>()
        .join(" ");
    match TOOLS.get_or_init(|| install("node", &stamp, install_node)) {
        Ok(bin) => Some(bin),
        Err(why) => {
            unavailable("openapi-typescript and typescript (npm)", why);
            None
        }
    }
}

/// Installs one tool set into `<tools>/<name>` unless its marker already names `stamp`.
/// The `OnceLock`s above serialise tests in this process; the file lock serialises
/// processes (parallel `cargo test` runs, test runners with one process per test).
fn install(
    name: &str,
    stamp: &str,
    installer: fn(&Path) -> Result<PathBuf, String>,
) -> Result<PathBuf, String> {
    let root = tools_dir();
    fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    let lock_path = root.join(format!("{name}.lock"));
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    let dir = root.join(name);
    let marker = dir.join(".installed");
    if fs::read_to_string(&marker).is_ok_and(|s| s == stamp) {
        return installer_bin(name, &dir);
    }
    let started = Instant::now();
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
    }
    let bin = installer(&dir)?;
    fs::write(&marker, stamp).map_err(|e| format!("write {}: {e}", marker.display()))?;
    eprintln!(
        "conformance: installed {stamp} into {} in {:.1}s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(bin)
}

/// Where the executables of an installed tool set are.
fn installer_bin(name: &str, dir: &Path) -> Result<PathBuf, String> {
    let bin = match name {
        "python" => dir.join("bin"),
        _ => dir.join("node_modules").join(".bin"),
    };
    if bin.is_dir() {
        Ok(bin)
    } else {
        Err(format!("{} is missing", bin.display()))
    }
}

/// A venv with the pinned Python packages; checks that `st` runs.
fn install_python(dir: &Path) -> Result<PathBuf, String> {
    checked(Command::new("python3").args(["-m", "venv"]).arg(dir))?;
    let bin = dir.join("bin");
    checked(
        Command::new(bin.join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
                "--retries",
                "2",
                "--timeout",
                "60",
            ])
            .args(PYTHON_PACKAGES),
    )?;
    let version = checked(Command::new(bin.join("st")).arg("--version"))?;
    let expected = PYTHON_PACKAGES[0].trim_start_matches("schemathesis==");
    if !String::from_utf8_lossy(&version.stdout).contains(expected) {
        return Err(format!("st --version says {}", output_text(&version)));
    }
    checked(Command::new(bin.join("openapi-spec-validator")).arg("--version"))?;
    Ok(bin)
}

/// An npm directory with the pinned packages; checks that both commands run.
fn install_node(dir: &Path) -> Result<PathBuf, String> {
    fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let dependencies: serde_json::Map<String, Value> = NODE_PACKAGES
        .iter()
        .map(|(name, version)| ((*name).to_owned(), json!(version)))
        .collect();
    let manifest = json!({
        "name": "ferrobase-conformance-tools",
        "private": true,
        "dependencies": dependencies,
    });
    fs::write(dir.join("package.json"), manifest.to_string())
        .map_err(|e| format!("write package.json: {e}"))?;
    checked(
        Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
                "--loglevel=error",
                "--fetch-retries=2",
            ])
            .current_dir(dir),
    )?;
    let bin = dir.join("node_modules").join(".bin");
    checked(Command::new(bin.join("openapi-typescript")).arg("--version"))?;
    checked(Command::new(bin.join("tsc")).arg("--version"))?;
    Ok(bin)
}

/// Runs an installation step; its output is the error when it fails.
fn checked(cmd: &mut Command) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let out = bounded(cmd).map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} failed ({}):\n{}",
            out.status,
            output_text(&out)
        ))
    }
}

/// Runs an installed tool; a tool that cannot even start is a broken install.
fn run_tool(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    bounded(cmd).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Runs `cmd` to completion with its output captured; a watchdog kills it at
/// [`TOOL_DEADLINE`] (the run then fails on its status instead of hanging the suite).
fn bounded(cmd: &mut Command) -> std::io::Result<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    let pid = child.id().to_string();
    let guard = std::thread::spawn(move || {
        if watchdog.recv_timeout(TOOL_DEADLINE).is_err() {
            eprintln!("conformance: process {pid} passed its deadline; killing it");
            let _ = Command::new("kill").arg("-KILL").arg(&pid).status();
        }
    });
    let out = child.wait_with_output();
    let _ = done.send(());
    let _ = guard.join();
    out
}

/// Standard output and error of a finished command, as text.
fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
