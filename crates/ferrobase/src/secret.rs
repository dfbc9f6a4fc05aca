//! The deployment secret: `FERROBASE_SECRET`, or in development and tests a random one
//! generated once and kept in the data directory (never in production).

use std::io::Write;
use std::path::Path;

use ferrobase_schema::settings::{Environment, Secret};

const FILE: &str = ".secret";

/// The secret to use, creating and storing one when development has none.
pub fn resolve(data_dir: &Path, env: Environment, given: Option<Secret>) -> Result<Secret, String> {
    if let Some(secret) = given {
        return Ok(secret);
    }
    if env == Environment::Production {
        return Err("FERROBASE_SECRET must be set in production".into());
    }
    let path = data_dir.join(FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let text = text.trim();
        if text.len() >= 32 {
            return Ok(Secret::new(text));
        }
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness available: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(&path)
        .and_then(|mut f| f.write_all(hex.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a development secret");
    Ok(Secret::new(hex))
}
