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
    /// Run jobs only (no API): claims due jobs, runs schedules, until SIGTERM/SIGINT.
    Worker,
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
    /// Schema migrations: plan, create, apply, status.
    Migrate {
        /// What to do.
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Scaffolding for resources.
    Api {
        /// What to do.
        #[command(subcommand)]
        action: ApiAction,
    },
    /// Print the OpenAPI 3.1 document of the project.
    Openapi,
    /// Print the GraphQL schema of the project (SDL).
    Graphql,
    /// Write a multi-stage Dockerfile and a compose.yaml (app, PostgreSQL, Redis).
    Docker {
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
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

/// `ferrobase migrate ...`.
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Print the SQL pending migrations (and unwritten schema changes) would run.
    Plan,
    /// Write a migration file for the changes in schema.toml.
    Create {
        /// A short name, like add_tags.
        name: String,
    },
    /// Apply pending migrations, each in a transaction.
    Apply {
        /// Allow steps that drop data (dropped fields and resources, type changes).
        #[arg(long)]
        allow_destructive: bool,
    },
    /// List applied and pending migrations.
    Status,
}

/// `ferrobase api ...`.
#[derive(Debug, Subcommand)]
pub enum ApiAction {
    /// Add a resource to schema.toml: `ferrobase api add tasks title:string! done:boolean`.
    Add {
        /// The resource's name.
        resource: String,
        /// Fields as name:type (`!` for required, `owner:relation:users` for relations).
        fields: Vec<String>,
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
