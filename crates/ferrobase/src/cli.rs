//! Command-line interface (SPEC §2).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// ferrobase: a backend in one binary.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Project directory (holds schema.toml, ferrobase.toml, .env and data/).
    #[arg(long, global = true, default_value = ".")]
    pub dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API. Without a schema.toml, serves the built-in blog example.
    Serve {
        /// Listen address (overrides [server] addr and PORT).
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
    /// Scaffold a project: schema.toml, ferrobase.toml, .env.example, .gitignore.
    Init {
        /// Where to create it (defaults to --dir).
        path: Option<PathBuf>,
        /// Starting schema.
        #[arg(long, value_enum, default_value_t = Template::Blog)]
        template: Template,
    },
    /// Validate schema.toml and settings; report every problem with its location.
    Check,
    /// Manage users (bootstrap an admin).
    Users {
        /// What to do.
        #[command(subcommand)]
        action: UsersAction,
    },
}

/// `ferrobase users ...`.
#[derive(Debug, Subcommand)]
pub enum UsersAction {
    /// Create a user; the password is read from standard input, never an argument.
    Create {
        /// The user's email address.
        #[arg(long)]
        email: String,
        /// The user's role (one of `[auth] roles`).
        #[arg(long, default_value = "admin")]
        role: String,
    },
}

/// Schemas `init` can start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Template {
    /// Users and posts with access rules.
    Blog,
    /// No resources yet.
    Empty,
}
