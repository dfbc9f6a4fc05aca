//! Loading a project directory: `.env`, `ferrobase.toml`, `schema.toml` (or the built-in
//! example), each validated, every problem collected before anything starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferrobase_schema::templates::BLOG_SCHEMA;
use ferrobase_schema::{Diagnostic, Schema, Settings, SourceFile, parse_schema_lenient};

/// A loaded, valid project.
pub struct Project {
    /// The project directory.
    pub dir: PathBuf,
    /// Validated settings.
    pub settings: Settings,
    /// Validated schema.
    pub schema: Schema,
    /// Whether the schema is the built-in example (no schema.toml in the directory).
    pub builtin_schema: bool,
    /// The persisted GraphQL documents of `graphql/*.graphql`.
    pub graphql_documents: ferrobase_graphql::Persisted,
}

/// A `.env` problem, described without the line's content: it may hold a secret.
fn dotenv_problem(e: &dotenvy::Error) -> Diagnostic {
    let message = match e {
        dotenvy::Error::LineParse(_, index) => {
            format!(
                "cannot be parsed at character {index}; write KEY=VALUE lines (value not shown)"
            )
        }
        dotenvy::Error::Io(io) => format!("cannot be read: {io}"),
        _ => "cannot be read".to_owned(),
    };
    Diagnostic {
        file: ".env".into(),
        line: 0,
        column: 0,
        message,
        hint: None,
    }
}

/// The process environment with `.env` values underneath it.
fn environment(dir: &Path, problems: &mut Vec<Diagnostic>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let dotenv = dir.join(".env");
    if dotenv.exists() {
        match dotenvy::from_path_iter(&dotenv) {
            Ok(iter) => {
                for item in iter {
                    match item {
                        Ok((k, v)) => {
                            env.insert(k, v);
                        }
                        Err(e) => problems.push(dotenv_problem(&e)),
                    }
                }
            }
            Err(e) => problems.push(dotenv_problem(&e)),
        }
    }
    env.extend(std::env::vars());
    env
}

fn read(path: &Path, name: &str, problems: &mut Vec<Diagnostic>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            problems.push(Diagnostic {
                file: name.into(),
                line: 0,
                column: 0,
                message: format!("cannot be read: {e}"),
                hint: None,
            });
            None
        }
    }
}

/// Loads and validates everything; on failure, every problem found.
pub fn load(dir: &Path) -> Result<Project, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let env = environment(dir, &mut problems);
    let settings_text = read(&dir.join("ferrobase.toml"), "ferrobase.toml", &mut problems);
    let settings_src = SourceFile::new("ferrobase.toml", settings_text.unwrap_or_default());
    let settings = Settings::load(&settings_src, &env).map_err(|d| problems.extend(d.0));

    let schema_text = read(&dir.join("schema.toml"), "schema.toml", &mut problems);
    let builtin_schema = schema_text.is_none();
    let schema_src = match schema_text {
        Some(text) => SourceFile::new("schema.toml", text),
        None => SourceFile::new("built-in blog schema", BLOG_SCHEMA),
    };
    let (schema, schema_problems) = parse_schema_lenient(&schema_src);
    problems.extend(schema_problems);
    problems.extend(ferrobase_query::check_rules(&schema, &schema_src));
    if problems.is_empty()
        && let Err(conflicts) =
            ferrobase_graphql::Graphql::build(&schema, &ferrobase_graphql::Options::default(), None)
    {
        problems.extend(conflicts.lines().map(|message| Diagnostic {
            file: "schema.toml".into(),
            line: 0,
            column: 0,
            message: message.to_owned(),
            hint: Some("graphql_name = \"Name\" on the resource sets its GraphQL type name".into()),
        }));
    }
    let only = settings.as_ref().is_ok_and(|s| s.graphql.persisted_only);
    let graphql_documents = ferrobase_graphql::Persisted::load(&dir.join("graphql"), only)
        .map_err(|message| {
            problems.push(Diagnostic {
                file: "graphql/".into(),
                line: 0,
                column: 0,
                message,
                hint: None,
            });
        })
        .unwrap_or_default();
    match settings {
        Ok(settings) if problems.is_empty() => Ok(Project {
            dir: dir.to_path_buf(),
            settings,
            schema,
            builtin_schema,
            graphql_documents,
        }),
        _ => Err(problems),
    }
}

/// Prints problems the way `check` and `serve` both report them.
pub fn report(problems: &[Diagnostic]) {
    for p in problems {
        eprintln!("error: {p}");
    }
    let n = problems.len();
    eprintln!(
        "{n} problem{} found; nothing was started",
        if n == 1 { "" } else { "s" }
    );
}
