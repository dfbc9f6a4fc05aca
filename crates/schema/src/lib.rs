//! The data model of a ferrobase project: `schema.toml` and `ferrobase.toml` parsed,
//! validated and turned into typed values. Pure: no I/O beyond reading the files.
#![forbid(unsafe_code)]

pub mod diag;
pub mod input;
pub mod jobs;
pub mod migration;
pub mod model;
mod parse;
pub mod settings;
pub mod templates;
pub mod validate;
pub mod webhooks;

pub use diag::{Diagnostic, Diagnostics, SourceFile};
pub use model::*;
pub use parse::{parse_schema, parse_schema_lenient};
pub use settings::Settings;

/// Parses `schema.toml` text that the user knows under `name`.
pub fn schema_from_str(name: &str, text: &str) -> Result<Schema, Diagnostics> {
    parse_schema(&SourceFile::new(name, text))
}
