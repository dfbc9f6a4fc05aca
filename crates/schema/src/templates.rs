//! Files that `ferrobase init` writes and the built-in example `serve` falls back to.

/// The blog example of SPEC §3: served when a directory has no `schema.toml`.
pub const BLOG_SCHEMA: &str = include_str!("../templates/blog.schema.toml");
/// A schema with no resources yet, only comments showing how to add one.
pub const EMPTY_SCHEMA: &str = include_str!("../templates/empty.schema.toml");
/// A commented `ferrobase.toml` with the development defaults.
pub const SETTINGS: &str = include_str!("../templates/ferrobase.toml");
/// `.env.example`: where secrets go.
pub const ENV_EXAMPLE: &str = include_str!("../templates/env.example");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_valid() {
        let blog = crate::schema_from_str("schema.toml", BLOG_SCHEMA).expect("blog parses");
        let posts = blog.resource("posts").expect("posts");
        assert_eq!(posts.fields.len(), 5);
        assert_eq!(posts.indexes.len(), 1);
        assert!(posts.rules.create.is_some());
        let empty = crate::schema_from_str("schema.toml", EMPTY_SCHEMA).expect("empty parses");
        assert_eq!(empty.resources.len(), 1, "only the built-in users");
    }
}
