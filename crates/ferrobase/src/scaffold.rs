//! Scaffolding: `ferrobase api add RESOURCE field:type...` and `ferrobase docker`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ferrobase_schema::{SourceFile, parse_schema};

use crate::{EXIT_CONFIG, EXIT_RUNTIME};

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

const TYPES: &[&str] = &[
    "string", "text", "integer", "number", "boolean", "datetime", "date", "enum", "email", "url",
    "uuid", "json", "relation",
];

fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.contains("__")
}

/// One `name:type[!]` argument as a TOML inline table line.
fn field_line(spec: &str) -> Result<(String, String), String> {
    let mut parts = spec.split(':');
    let name = parts.next().unwrap_or_default().trim_end_matches('!');
    let raw_type = parts.next().ok_or_else(|| {
        format!("'{spec}': write fields as name:type, like title:string! (! = required)")
    })?;
    let required = spec.contains('!');
    let ty = raw_type.trim_end_matches('!');
    if !plain_name(name) {
        return Err(format!(
            "'{name}' is not a field name (lower-case letters, digits and _)"
        ));
    }
    if !TYPES.contains(&ty) {
        return Err(format!(
            "'{ty}' is not a field type; one of {}",
            TYPES.join(", ")
        ));
    }
    let mut items = vec![format!("type = \"{ty}\"")];
    match ty {
        "enum" => {
            let values: Vec<String> = parts
                .next()
                .unwrap_or_default()
                .trim_end_matches('!')
                .split('|')
                .filter(|v| !v.is_empty())
                .map(|v| format!("\"{}\"", v.replace('"', "")))
                .collect();
            if values.is_empty() {
                return Err(format!(
                    "'{spec}': enums need values, like status:enum:draft|published"
                ));
            }
            items.push(format!("values = [{}]", values.join(", ")));
        }
        "relation" => {
            let target = parts.next().unwrap_or_default().trim_end_matches('!');
            if !plain_name(target) {
                return Err(format!(
                    "'{spec}': relations name their resource, like author:relation:users (add :many for many)"
                ));
            }
            items.push(format!("resource = \"{target}\""));
            if parts.next().map(|m| m.trim_end_matches('!')) == Some("many") {
                items.push("many = true".into());
            }
        }
        _ => {}
    }
    if required {
        items.push("required = true".into());
    }
    if parts.next().is_some() {
        return Err(format!("'{spec}': too many ':' parts"));
    }
    Ok((
        name.to_owned(),
        format!("{name} = {{ {} }}", items.join(", ")),
    ))
}

/// `ferrobase api add RESOURCE field:type...`: appends a resource to `schema.toml` (kept
/// as it is, comments and all), owned by the user who creates each record, with rules
/// that let owners (and admins) see and change only their own records.
pub fn api_add(dir: &Path, resource: &str, fields: &[String]) -> ExitCode {
    if !plain_name(resource) || resource == "users" {
        return fail(
            EXIT_CONFIG,
            format!(
                "'{resource}' is not a resource name (lower-case letters, digits and _; not users)"
            ),
        );
    }
    let path = dir.join("schema.toml");
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return fail(EXIT_RUNTIME, format!("cannot read {}: {e}", path.display())),
    };
    let mut lines = Vec::new();
    let mut names = Vec::new();
    for spec in fields {
        match field_line(spec) {
            Ok((name, line)) => {
                if names.contains(&name) {
                    return fail(EXIT_CONFIG, format!("field '{name}' is given twice"));
                }
                names.push(name);
                lines.push(line);
            }
            Err(e) => return fail(EXIT_CONFIG, e),
        }
    }
    if lines.is_empty() {
        return fail(
            EXIT_CONFIG,
            "name at least one field, like: ferrobase api add tasks title:string! done:boolean",
        );
    }
    let owned = !names.iter().any(|n| n == "owner");
    if owned {
        lines.push(
            "owner = { type = \"relation\", resource = \"users\", required = true, default = \"@auth.id\", on_delete = \"cascade\", read_only = true }"
                .into(),
        );
    }
    let (read, write, create) = if owned {
        (
            "owner = @auth.id || @auth.role = 'admin'",
            "owner = @auth.id || @auth.role = 'admin'",
            "@auth.id != null && @body.owner = @auth.id",
        )
    } else {
        (
            "@auth.id != null",
            "@auth.role = 'admin'",
            "@auth.id != null",
        )
    };
    let mut block = String::new();
    if !existing.is_empty() && !existing.ends_with("\n\n") {
        block.push_str(if existing.ends_with('\n') {
            "\n"
        } else {
            "\n\n"
        });
    }
    block.push_str(&format!(
        "# Added by `ferrobase api add`: {}. Adjust the rules to your needs.\n[resources.{resource}]\ntimestamps = true\n[resources.{resource}.fields]\n{}\n[resources.{resource}.rules]\nlist = \"{read}\"\nview = \"{read}\"\ncreate = \"{create}\"\nupdate = \"{write}\"\ndelete = \"{write}\"\n",
        if owned {
            "each record belongs to the user who creates it; owners and admins may read and change it"
        } else {
            "signed-in users may read and create; admins may change and delete"
        },
        lines.join("\n"),
    ));
    let text = format!("{existing}{block}");
    // The result must be a valid schema (a resource that exists already, an unknown
    // relation target, ...) before anything is written.
    if let Ok(doc) = existing.parse::<toml_edit::DocumentMut>()
        && doc.get("resources").and_then(|r| r.get(resource)).is_some()
    {
        return fail(
            EXIT_CONFIG,
            format!("resource '{resource}' exists already in schema.toml"),
        );
    }
    if let Err(problems) = parse_schema(&SourceFile::new("schema.toml", &text)) {
        for p in &problems.0 {
            eprintln!("error: {p}");
        }
        return fail(EXIT_CONFIG, "schema.toml was not changed");
    }
    if let Err(e) = std::fs::write(&path, text) {
        return fail(
            EXIT_RUNTIME,
            format!("cannot write {}: {e}", path.display()),
        );
    }
    println!(
        "added resource {resource} to {} ({}); it is served at /api/v1/{resource}",
        path.display(),
        names.join(", ")
    );
    ExitCode::SUCCESS
}

/// Where the ferrobase source is, for building the image: this build's source tree when
/// it is still there, else a sibling checkout.
fn default_source() -> String {
    let built_from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    match built_from.canonicalize() {
        Ok(p) if p.join("Cargo.toml").exists() => p.display().to_string(),
        _ => "../ferrobase".to_owned(),
    }
}

const DOCKERFILE: &str = r#"# syntax=docker/dockerfile:1
# Written by `ferrobase docker`. Builds ferrobase from source (the `ferrobase` build
# context, see compose.yaml) and runs it as an unprivileged user with this project's
# schema, settings and migrations.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY --from=ferrobase . .
RUN cargo build --release --locked --bin ferrobase \
 && strip target/release/ferrobase

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 ferrobase \
 && useradd --system --uid 10001 --gid ferrobase --home-dir /app --shell /usr/sbin/nologin ferrobase \
 && mkdir -p /app/data && chown ferrobase:ferrobase /app/data
COPY --from=build /src/target/release/ferrobase /usr/local/bin/ferrobase
WORKDIR /app
COPY --chown=ferrobase:ferrobase schema.toml ./
COPY --chown=ferrobase:ferrobase migrations ./migrations
USER ferrobase
ENV FERROBASE_ENV=production \
    FERROBASE_SERVER__ADDR=0.0.0.0:8090 \
    FERROBASE_LOG__FORMAT=json
EXPOSE 8090
VOLUME ["/app/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8090 && printf 'GET /ready HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
CMD ["sh", "-c", "ferrobase migrate apply && exec ferrobase serve"]
"#;

fn compose(source: &str) -> String {
    format!(
        r#"# Written by `ferrobase docker`: ferrobase on PostgreSQL and Redis.
# Put FERROBASE_SECRET (32+ random bytes: openssl rand -base64 48) and
# POSTGRES_PASSWORD in .env next to this file, then: docker compose up --build
services:
  app:
    build:
      context: .
      additional_contexts:
        ferrobase: {source}
    ports:
      - "8090:8090"
    environment:
      FERROBASE_SECRET: ${{FERROBASE_SECRET:?set FERROBASE_SECRET in .env}}
      DATABASE_URL: postgres://ferrobase:${{POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}}@postgres:5432/ferrobase
      REDIS_URL: redis://redis:6379
    depends_on:
      postgres:
        condition: service_healthy
      redis:
        condition: service_healthy
    restart: unless-stopped

  postgres:
    image: postgres:16-alpine
    environment:
      POSTGRES_USER: ferrobase
      POSTGRES_DB: ferrobase
      POSTGRES_PASSWORD: ${{POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}}
    volumes:
      - pgdata:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U ferrobase -d ferrobase"]
      interval: 5s
      timeout: 3s
      retries: 10
    restart: unless-stopped

  redis:
    image: redis:7-alpine
    command: ["redis-server", "--save", "", "--appendonly", "no"]
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 5s
      timeout: 3s
      retries: 10
    restart: unless-stopped

volumes:
  pgdata:
"#
    )
}

/// `ferrobase docker`: writes `Dockerfile`, `compose.yaml` and `.dockerignore`.
pub fn docker(dir: &Path, force: bool) -> ExitCode {
    let files = [
        ("Dockerfile", DOCKERFILE.to_owned()),
        ("compose.yaml", compose(&default_source())),
        (".dockerignore", "data/\n.env\n*.db\n".to_owned()),
    ];
    if !force && let Some((name, _)) = files.iter().find(|(name, _)| dir.join(name).exists()) {
        return fail(
            EXIT_CONFIG,
            format!("{name} exists already; run with --force to replace it"),
        );
    }
    if let Err(e) = std::fs::create_dir_all(dir.join("migrations")) {
        return fail(EXIT_RUNTIME, format!("cannot create migrations/: {e}"));
    }
    for (name, text) in &files {
        if let Err(e) = std::fs::write(dir.join(name), text) {
            return fail(EXIT_RUNTIME, format!("cannot write {name}: {e}"));
        }
        println!("wrote {}", dir.join(name).display());
    }
    println!(
        "next: put FERROBASE_SECRET and POSTGRES_PASSWORD in .env, then `docker compose up --build`"
    );
    ExitCode::SUCCESS
}
