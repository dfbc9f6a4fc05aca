//! The `ferrobase` command: serve a declared schema, scaffold a project, check it.

mod check;
mod cli;
mod init;
mod logging;
mod project;
mod secret;
mod serve;
mod users;

use std::process::ExitCode;

use clap::Parser;

/// Exit code for usage errors and invalid configuration (SPEC §2).
const EXIT_CONFIG: u8 = 2;
/// Exit code for failures at run time.
const EXIT_RUNTIME: u8 = 1;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let dir = cli.dir.clone();
    match cli.command {
        cli::Command::Serve { addr } => serve::run(&dir, addr),
        cli::Command::Init { path, template } => {
            init::run(path.as_deref().unwrap_or(&dir), template)
        }
        cli::Command::Check => check::run(&dir),
        cli::Command::Users {
            action: cli::UsersAction::Create { email, role },
        } => users::create(&dir, &email, &role),
    }
}
