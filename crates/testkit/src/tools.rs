//! Protocol peers the tests run for real, installed once into `<target>/test-tools/`:
//! a Python venv per pinned package set (the `standardwebhooks` verifier, an SMTP
//! server), an npm package directory per pinned package set (graphql-js, the GraphQL
//! reference implementation, behind [`graphql_check`]). Missing tools are a loud skip,
//! or a failure when `FERROBASE_REQUIRE_SERVICES=1`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// `<target>/test-tools`, from the binary under test (`<target>/<profile>/ferrobase`).
fn tools_dir(bin: &str) -> PathBuf {
    Path::new(bin)
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("test-tools")
}

fn checked(cmd: &mut Command) -> Result<(), String> {
    let what = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The `python` of a venv named `name` holding `packages` (pinned `name==version`),
/// installed on first use; `None` (after saying so) when it cannot be installed and
/// services are not required.
pub fn python(bin: &str, name: &str, packages: &[&str]) -> Option<PathBuf> {
    provided(name, || {
        let dir = locked_install(
            bin,
            name,
            packages,
            |dir| dir.join("bin").join("python").exists(),
            |dir| {
                checked(Command::new("python3").args(["-m", "venv"]).arg(dir))?;
                checked(
                    Command::new(dir.join("bin").join("python"))
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
                        .args(packages),
                )
            },
        )?;
        Ok(dir.join("bin").join("python"))
    })
}

/// The directory `<target>/test-tools/node-<name>` whose `node_modules` holds the npm
/// `packages` (pinned `name@version`), installed on first use with `npm`; scripts
/// placed in it resolve those packages. `None` (after saying so) when `node` or the
/// packages cannot be installed and services are not required.
pub fn node(bin: &str, name: &str, packages: &[&str]) -> Option<PathBuf> {
    let name = format!("node-{name}");
    provided(&name, || {
        locked_install(
            bin,
            &name,
            packages,
            |dir| dir.join("node_modules").is_dir(),
            |dir| {
                checked(Command::new("node").arg("--version"))?;
                checked(
                    Command::new("npm")
                        .args([
                            "install",
                            "--no-audit",
                            "--no-fund",
                            "--no-update-notifier",
                            "--ignore-scripts",
                            "--loglevel=error",
                            "--fetch-retries=2",
                            "--fetch-timeout=60000",
                            "--prefix",
                        ])
                        .arg(dir)
                        .args(packages),
                )
            },
        )
    })
}

/// `install`'s result for `name`, memoised for the process; a failure is a loud skip
/// (`None`), or a panic when `FERROBASE_REQUIRE_SERVICES=1`.
fn provided(name: &str, install: impl FnOnce() -> Result<PathBuf, String>) -> Option<PathBuf> {
    static INSTALLED: OnceLock<Mutex<std::collections::HashMap<String, Result<PathBuf, String>>>> =
        OnceLock::new();
    let mut installed = INSTALLED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let result = installed
        .entry(name.to_owned())
        .or_insert_with(install)
        .clone();
    match result {
        Ok(path) => Some(path),
        Err(why) => {
            assert!(
                !crate::services::required(),
                "{name} could not be installed, and FERROBASE_REQUIRE_SERVICES=1:\n{why}"
            );
            eprintln!("SKIPPED: {name} could not be installed; this test did not run:\n{why}");
            None
        }
    }
}

/// `<target>/test-tools/<name>`, filled by `fill` unless a previous run already
/// installed `packages` there (its marker matches and `ready` says so). A lock file
/// serialises test processes installing the same set; a half-done install (no marker)
/// is removed and done again.
fn locked_install(
    bin: &str,
    name: &str,
    packages: &[&str],
    ready: impl Fn(&Path) -> bool,
    fill: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let root = tools_dir(bin);
    fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    // Serialises test processes installing the same set.
    let lock_path = root.join(format!("{name}.lock"));
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    let dir = root.join(name);
    let stamp = packages.join(" ");
    let marker = dir.join(".installed");
    if fs::read_to_string(&marker).is_ok_and(|s| s == stamp) && ready(&dir) {
        return Ok(dir);
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    fill(&dir)?;
    fs::write(&marker, stamp).map_err(|e| format!("write {}: {e}", marker.display()))?;
    Ok(dir)
}

/// The graphql-js release [`graphql_check`] runs (the reference implementation).
pub const GRAPHQL_JS: &str = "graphql@16.15.0";

/// Writes `text` as `name` into `dir` (next to its node_modules, so the script resolves
/// them) unless it is there already. Written through a temporary file of this write's own
/// and renamed, so a concurrent run (another thread or test process) never sees it
/// half-written.
fn place_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let script = dir.join(name);
    if !fs::read_to_string(&script).is_ok_and(|s| s == text) {
        let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!("{name}.{}-{write}.tmp", std::process::id()));
        fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        fs::rename(&tmp, &script).unwrap_or_else(|e| panic!("rename to {}: {e}", script.display()));
    }
    script
}

/// The OpenID provider the OAuth tests sign in at (npm `oidc-provider`).
pub const OIDC_PROVIDER_JS: &str = "oidc-provider@9.13.3";

/// A running OpenID provider; stopped when dropped.
pub struct OidcProvider {
    child: std::process::Child,
    /// Its issuer URL (`http://127.0.0.1:<port>`).
    pub issuer: String,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a real OpenID provider on a free loopback port with two confidential clients,
/// `ferrobase` and `other-app` (secret: the id + `-secret-0123456789abcdef0123456789`),
/// both redirecting to any of `redirect_uris`, and the accounts `accounts` (id → claims such as
/// `email`, `email_verified`, `name`). `None` (skipped loudly) when Node or the package
/// cannot be had, unless services are required.
pub fn oidc_provider(
    bin: &str,
    redirect_uris: &[&str],
    accounts: &serde_json::Value,
) -> Option<OidcProvider> {
    use std::io::BufRead;
    use std::process::Stdio;
    const SCRIPT: &str = include_str!("oidc_provider.mjs");
    let dir = node(bin, "oidc-provider", &[OIDC_PROVIDER_JS])?;
    let script = place_script(&dir, "oidc_provider.mjs", SCRIPT);
    let mut child = Command::new("node")
        .arg(&script)
        .current_dir(&dir)
        .env(
            "OIDC_REDIRECT_URIS",
            serde_json::json!(redirect_uris).to_string(),
        )
        .env("OIDC_ACCOUNTS", accounts.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("node {}: {e}", script.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    // The first line it prints says where it listens (it prints nothing else).
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let Some(issuer) = first.strip_prefix("listening ") else {
        let _ = child.kill();
        panic!("the OpenID provider did not start: {first:?}");
    };
    let issuer = issuer.trim().to_owned();
    // Whatever it prints later is read (and dropped): a closed pipe would end it.
    std::thread::spawn(move || lines.for_each(drop));
    Some(OidcProvider { issuer, child })
}

/// What graphql-js makes of a schema and of documents against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphqlCheck {
    /// `printSchema(buildSchema(sdl))`, or why the SDL is not a valid schema: the
    /// error `buildSchema` threw, or `validateSchema`'s errors (each message followed
    /// by its location in the SDL).
    pub schema: Result<String, String>,
    /// Per document, in order: the messages of `validate(schema, parse(document))`, or
    /// the one syntax error `parse` threw; empty when the document is valid. Empty (no
    /// entries at all) when the schema is not valid.
    pub documents: Vec<Vec<String>>,
}

/// Checks `sdl` and `documents` with graphql-js ([`GRAPHQL_JS`], installed with
/// [`node`] on first use) in one `node` run. `None` (after saying so) when graphql-js
/// cannot be installed and services are not required.
///
/// # Panics
/// When the check itself fails to run (node crashes, its output is not the expected
/// JSON): a harness bug, not a finding about the SDL.
pub fn graphql_check(bin: &str, sdl: &str, documents: &[&str]) -> Option<GraphqlCheck> {
    use std::io::Write;
    use std::process::Stdio;
    const SCRIPT: &str = include_str!("graphql_check.mjs");
    let dir = node(bin, "graphql", &[GRAPHQL_JS])?;
    let script = place_script(&dir, "graphql_check.mjs", SCRIPT);
    let input = serde_json::json!({ "sdl": sdl, "documents": documents }).to_string();
    let mut child = Command::new("node")
        .arg(&script)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("node {}: {e}", script.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("node output");
    writer
        .join()
        .expect("stdin writer")
        .expect("write the input to node");
    assert!(
        out.status.success(),
        "node {} failed ({}):\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "graphql_check.mjs printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let schema = match (text(&v["schema"]), text(&v["schemaError"])) {
        (Some(printed), None) => Ok(printed),
        (None, Some(error)) => Err(error),
        _ => panic!("graphql_check.mjs: neither a schema nor an error: {v}"),
    };
    let documents = v["documents"]
        .as_array()
        .unwrap_or_else(|| panic!("graphql_check.mjs: no documents: {v}"))
        .iter()
        .map(|errors| {
            errors
                .as_array()
                .unwrap_or_else(|| panic!("graphql_check.mjs: errors not a list: {v}"))
                .iter()
                .map(|e| text(e).unwrap_or_else(|| e.to_string()))
                .collect()
        })
        .collect();
    Some(GraphqlCheck { schema, documents })
}
