//! Turning a client's JSON body into validated field values for create and merge-patch
//! update, with per-field messages for everything wrong at once.
//!
//! Unknown fields, server-set fields (`id`, `version`, timestamps, a user's role and
//! password hash) and read-only fields are refused here, which is the mass-assignment
//! protection of every write path.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::model::{DefaultValue, Field, FieldType, Resource};
use crate::validate::validate_value;

/// Messages per field name; empty means valid.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// One change of a merge-patch update.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Replace the value.
    Set(Value),
    /// Clear the field (SQL `NULL`, or no links for a many relation).
    Clear,
    /// Merge a JSON merge-patch object into a `json` field's current value.
    MergeJson(Value),
}

/// What the server knows when filling defaults.
#[derive(Debug, Clone, Copy)]
pub struct WriteContext<'a> {
    /// The caller's user id, for `default = "@auth.id"`.
    pub auth_id: Option<&'a str>,
    /// The current time in canonical datetime form, for `default = "@now"`.
    pub now: &'a str,
}

fn push(errors: &mut FieldErrors, field: &str, message: impl Into<String>) {
    errors
        .entry(field.to_owned())
        .or_default()
        .push(message.into());
}

/// Finds the field a body key names, or records why the key cannot be written.
/// `privileged` (an admin) may also set a user's `role`.
fn writable<'r>(
    resource: &'r Resource,
    key: &str,
    privileged: bool,
    errors: &mut FieldErrors,
) -> Option<(usize, &'r Field)> {
    match resource
        .fields
        .iter()
        .enumerate()
        .find(|(_, f)| f.name == key)
    {
        Some(found) if privileged && resource.is_users() && key == "role" => Some(found),
        Some((_, f)) if f.read_only || (f.builtin && f.name != "email") => {
            push(errors, key, "is read-only");
            None
        }
        Some(found) => Some(found),
        None if resource.is_system_column(key) => {
            push(errors, key, "is set by the server");
            None
        }
        None => {
            push(errors, key, format!("is not a field of {}", resource.name));
            None
        }
    }
}

fn default_value(field: &Field, ctx: &WriteContext<'_>) -> Value {
    match &field.default {
        Some(DefaultValue::Value(v)) => v.clone(),
        Some(DefaultValue::AuthId) => ctx
            .auth_id
            .map_or(Value::Null, |id| Value::String(id.to_owned())),
        Some(DefaultValue::Now) if field.ty == FieldType::Date => {
            Value::String(ctx.now.chars().take(10).collect())
        }
        Some(DefaultValue::Now) => Value::String(ctx.now.to_owned()),
        None => Value::Null,
    }
}

/// Values for a new record, aligned to `resource.fields`, with defaults applied.
pub fn for_create(
    resource: &Resource,
    body: Map<String, Value>,
    ctx: &WriteContext<'_>,
) -> Result<Vec<Value>, FieldErrors> {
    let mut errors = FieldErrors::new();
    let mut values: Vec<Option<Value>> = vec![None; resource.fields.len()];
    for (key, value) in body {
        let Some((i, field)) = writable(resource, &key, false, &mut errors) else {
            continue;
        };
        if value.is_null() {
            values[i] = Some(Value::Null);
            continue;
        }
        match validate_value(field, &value) {
            Ok(v) => values[i] = Some(v),
            Err(messages) => errors.entry(key).or_default().extend(messages),
        }
    }
    let values: Vec<Value> = resource
        .fields
        .iter()
        .zip(values)
        .map(|(field, value)| {
            let value = value.unwrap_or_else(|| default_value(field, ctx));
            if value.is_null() && field.required && !errors.contains_key(&field.name) {
                push(&mut errors, &field.name, "is required");
            }
            value
        })
        .collect();
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

/// Changes of a JSON merge patch (RFC 7386): `null` clears an optional field and is
/// refused on a required one; objects merge into `json` fields. `privileged` callers
/// (admins) may change a user's `role`.
pub fn for_patch(
    resource: &Resource,
    patch: Map<String, Value>,
    privileged: bool,
) -> Result<Vec<(usize, Change)>, FieldErrors> {
    let mut errors = FieldErrors::new();
    let mut changes = Vec::with_capacity(patch.len());
    for (key, value) in patch {
        let Some((i, field)) = writable(resource, &key, privileged, &mut errors) else {
            continue;
        };
        if value.is_null() {
            if field.required {
                push(&mut errors, &key, "is required and cannot be cleared");
            } else {
                changes.push((i, Change::Clear));
            }
            continue;
        }
        if field.ty == FieldType::Json && value.is_object() {
            changes.push((i, Change::MergeJson(value)));
            continue;
        }
        match validate_value(field, &value) {
            Ok(v) => changes.push((i, Change::Set(v))),
            Err(messages) => errors.entry(key).or_default().extend(messages),
        }
    }
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn posts() -> Resource {
        let schema =
            crate::schema_from_str("schema.toml", crate::templates::BLOG_SCHEMA).expect("blog");
        schema.resource("posts").expect("posts").clone()
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    const NOW: &str = "2025-01-01T00:00:00.000000Z";

    #[test]
    fn create_applies_defaults_and_reports_every_field() {
        let posts = posts();
        let ctx = WriteContext {
            auth_id: Some("0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b"),
            now: NOW,
        };
        let values = for_create(
            &posts,
            obj(json!({"title": "Hello", "slug": "hello"})),
            &ctx,
        )
        .expect("valid");
        assert_eq!(values[3], json!("draft"));
        assert_eq!(values[4], json!("0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b"));

        let errors = for_create(
            &posts,
            obj(json!({"title": "H", "slug": "Not A Slug", "id": "x", "votes": 1, "status": "gone"})),
            &WriteContext { auth_id: None, now: NOW },
        )
        .expect_err("invalid");
        assert_eq!(errors["title"], vec!["must be at least 2 characters"]);
        assert_eq!(errors["id"], vec!["is set by the server"]);
        assert_eq!(errors["votes"], vec!["is not a field of posts"]);
        assert!(errors["slug"][0].starts_with("must match the pattern"));
        assert_eq!(errors["status"], vec!["must be one of: draft, published"]);
        assert_eq!(errors["author"], vec!["is required"]);
    }

    #[test]
    fn patch_null_clears_optional_and_refuses_required() {
        let posts = posts();
        let changes =
            for_patch(&posts, obj(json!({"content": null, "title": "New"})), false).expect("valid");
        assert_eq!(
            changes,
            vec![(2, Change::Clear), (0, Change::Set(json!("New")))]
        );
        let errors = for_patch(&posts, obj(json!({"title": null, "version": 3})), false)
            .expect_err("invalid");
        assert_eq!(errors["title"], vec!["is required and cannot be cleared"]);
        assert_eq!(errors["version"], vec!["is set by the server"]);
    }
}
