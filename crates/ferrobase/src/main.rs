//! The `ferrobase` command: serve a declared schema, scaffold a project, check it.

mod alloc;
mod check;
mod cli;
mod clock;
mod init;
mod logging;
mod migrate;
mod project;
mod scaffold;
mod secret;
mod serve;
mod users;

use std::process::ExitCode;

use clap::Parser;

/// Exit code for usage errors and invalid configuration (SPEC §2).
const EXIT_CONFIG: u8 = 2;
/// Exit code for failures at run time.
const EXIT_RUNTIME: u8 = 1;

/// `ferrobase openapi`: prints the document `GET /api/v1/openapi.json` serves.
fn openapi(dir: &std::path::Path) -> ExitCode {
    let project = match project::load(dir) {
        Ok(p) => p,
        Err(problems) => {
            project::report(&problems);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let doc = ferrobase_http::openapi_document(&project.schema, &project.settings);
    match serde_json::to_string_pretty(&doc) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `ferrobase graphql`: prints the SDL of the schema `/api/v1/graphql` serves.
fn graphql(dir: &std::path::Path) -> ExitCode {
    let project = match project::load(dir) {
        Ok(p) => p,
        Err(problems) => {
            project::report(&problems);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut options = ferrobase_http::graphql_options(&project.settings);
    // The SDL is the whole schema, whatever introspection is set to.
    options.introspection = true;
    match ferrobase_graphql::Graphql::build(&project.schema, &options, None) {
        Ok(api) => {
            print!("{}", api.sdl());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let dir = cli.dir.clone();
    match cli.command {
        cli::Command::Serve { addr } => serve::run(&dir, addr, serve::Mode::Api),
        cli::Command::Worker => serve::run(&dir, None, serve::Mode::Worker),
        cli::Command::Init { path, template } => {
            init::run(path.as_deref().unwrap_or(&dir), template)
        }
        cli::Command::Check => check::run(&dir),
        cli::Command::Migrate { action } => match action {
            cli::MigrateAction::Plan => migrate::plan(&dir),
            cli::MigrateAction::Create { name } => migrate::create(&dir, &name),
            cli::MigrateAction::Apply { allow_destructive } => {
                migrate::apply(&dir, allow_destructive)
            }
            cli::MigrateAction::Status => migrate::status(&dir),
        },
        cli::Command::Api {
            action: cli::ApiAction::Add { resource, fields },
        } => scaffold::api_add(&dir, &resource, &fields),
        cli::Command::Docker { force } => scaffold::docker(&dir, force),
        cli::Command::Openapi => openapi(&dir),
        cli::Command::Graphql => graphql(&dir),
        cli::Command::Users {
            action: cli::UsersAction::Create { email, role },
        } => users::create(&dir, &email, &role),
    }
}
