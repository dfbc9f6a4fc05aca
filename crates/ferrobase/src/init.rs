//! `ferrobase init`: scaffold the files a user owns (SPEC §1).

use std::path::Path;
use std::process::ExitCode;

use ferrobase_schema::templates;

use crate::cli::Template;
use crate::{EXIT_CONFIG, EXIT_RUNTIME};

const GITIGNORE: &str = "# ferrobase\n/data/\n.env\n";

/// Writes the project files; refuses to overwrite any that exist.
pub fn run(dir: &Path, template: Template) -> ExitCode {
    let schema = match template {
        Template::Blog => templates::BLOG_SCHEMA,
        Template::Empty => templates::EMPTY_SCHEMA,
    };
    let files = [
        ("schema.toml", schema),
        ("ferrobase.toml", templates::SETTINGS),
        (".env.example", templates::ENV_EXAMPLE),
        (".gitignore", GITIGNORE),
        ("migrations/.gitkeep", ""),
    ];
    let existing: Vec<&str> = files
        .iter()
        .filter(|(name, _)| dir.join(name).exists())
        .map(|(name, _)| *name)
        .collect();
    if !existing.is_empty() {
        eprintln!(
            "error: {} already exist{} in {}; nothing was written",
            existing.join(", "),
            if existing.len() == 1 { "s" } else { "" },
            dir.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    for (name, text) in files {
        let path = dir.join(name);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text));
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(EXIT_RUNTIME);
        }
    }
    println!("created a ferrobase project in {}", dir.display());
    println!("next: ferrobase serve --dir {}", dir.display());
    ExitCode::SUCCESS
}
