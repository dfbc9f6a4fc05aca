//! `ferrobase check`: validate schema and settings without starting anything.

use std::path::Path;
use std::process::ExitCode;

use crate::{EXIT_CONFIG, project};

/// Runs the check; exit code 2 when anything is wrong.
pub fn run(dir: &Path) -> ExitCode {
    match project::load(dir) {
        Ok(p) => {
            let names: Vec<&str> = p.schema.resources.iter().map(|r| r.name.as_str()).collect();
            let which = if p.builtin_schema {
                "built-in blog schema (no schema.toml here)"
            } else {
                "schema.toml"
            };
            println!(
                "ok: {which} and settings are valid; resources: {}",
                names.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            project::report(&problems);
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
