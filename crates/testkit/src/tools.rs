//! Protocol peers the tests run for real, installed once into `<target>/test-tools/`:
//! a Python venv per pinned package set (the `standardwebhooks` verifier, an SMTP
//! server). Missing tools are a loud skip, or a failure when
//! `FERROBASE_REQUIRE_SERVICES=1`.

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
    static INSTALLED: OnceLock<Mutex<std::collections::HashMap<String, Result<PathBuf, String>>>> =
        OnceLock::new();
    let mut installed = INSTALLED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let result = installed
        .entry(name.to_owned())
        .or_insert_with(|| install(bin, name, packages))
        .clone();
    match result {
        Ok(python) => Some(python),
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

fn install(bin: &str, name: &str, packages: &[&str]) -> Result<PathBuf, String> {
    let root = tools_dir(bin);
    fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    // Serialises test processes installing the same set.
    let lock_path = root.join(format!("{name}.lock"));
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    let dir = root.join(name);
    let python = dir.join("bin").join("python");
    let stamp = packages.join(" ");
    let marker = dir.join(".installed");
    if fs::read_to_string(&marker).is_ok_and(|s| s == stamp) && python.exists() {
        return Ok(python);
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
    }
    checked(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    checked(
        Command::new(&python)
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
    )?;
    fs::write(&marker, stamp).map_err(|e| format!("write {}: {e}", marker.display()))?;
    Ok(python)
}
