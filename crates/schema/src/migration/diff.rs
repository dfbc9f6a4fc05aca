//! The differ: the steps from the state the tables are in to the state `schema.toml`
//! declares. Renames come from `renamed_from`; without it a vanished name is a drop and
//! a new name an addition.

use super::{FieldSpec, ResourceSpec, SchemaState, Step};
use crate::model::Schema;

/// Renames declared with `renamed_from`: the differ's only input beyond the two states.
#[derive(Debug, Default)]
struct Renames<'a> {
    /// (new name, previous name) of resources.
    resources: Vec<(&'a str, &'a str)>,
    /// (resource's new name, field's previous name, field's new name).
    fields: Vec<(&'a str, &'a str, &'a str)>,
}

impl<'a> Renames<'a> {
    fn of(schema: &'a Schema) -> Self {
        let mut renames = Renames::default();
        for r in &schema.resources {
            if let Some(prev) = &r.renamed_from {
                renames.resources.push((&r.name, prev));
            }
            for f in &r.fields {
                if let Some(prev) = &f.renamed_from {
                    renames.fields.push((&r.name, prev, &f.name));
                }
            }
        }
        renames
    }

    fn resource(&self, name: &str) -> Option<&'a str> {
        self.resources
            .iter()
            .find(|(new, _)| *new == name)
            .map(|(_, prev)| *prev)
    }
}

/// Steps taking `from` to the state of `schema`, in an order that applies: renames,
/// new tables, field and index changes, then drops.
pub fn diff(from: &SchemaState, schema: &Schema) -> Vec<Step> {
    diff_with(from, &SchemaState::of(schema), &Renames::of(schema))
}

/// Steps taking `from` to `to`, with the renames `schema` declares where they fit: what a
/// database holds beyond its migration files, written down as a baseline.
pub fn diff_states(from: &SchemaState, to: &SchemaState, schema: &Schema) -> Vec<Step> {
    diff_with(from, to, &Renames::of(schema))
}

fn diff_with(from: &SchemaState, to: &SchemaState, declared: &Renames<'_>) -> Vec<Step> {
    let mut renames = Vec::new();
    let mut creates = Vec::new();
    let mut changes = Vec::new();
    let mut index_drops = Vec::new();
    let mut field_drops = Vec::new();
    let mut drops = Vec::new();
    let mut matched_old: Vec<&str> = Vec::new();
    // Resource renames first: relations of every resource follow them.
    let moved: Vec<(&str, &str)> = to
        .resources
        .iter()
        .filter(|r| from.resource(&r.name).is_none())
        .filter_map(|r| Some((declared.resource(&r.name)?, r.name.as_str())))
        .filter(|(prev, _)| to.resource(prev).is_none() && from.resource(prev).is_some())
        .collect();
    let renamed_state;
    let from = if moved.is_empty() {
        from
    } else {
        let mut state = from.clone();
        for r in &mut state.resources {
            for f in &mut r.fields {
                if let Some((_, new)) = moved
                    .iter()
                    .find(|(prev, _)| f.resource.as_deref() == Some(*prev))
                {
                    f.resource = Some((*new).to_owned());
                }
            }
        }
        renamed_state = state;
        &renamed_state
    };

    for new in &to.resources {
        let old = match from.resource(&new.name) {
            Some(old) => Some(old),
            None => declared
                .resource(&new.name)
                .filter(|prev| to.resource(prev).is_none())
                .and_then(|prev| from.resource(prev))
                .inspect(|old| {
                    renames.push(Step::RenameResource {
                        from: old.name.clone(),
                        to: new.name.clone(),
                    });
                }),
        };
        let Some(old) = old else {
            creates.push(Step::CreateResource {
                resource: new.clone(),
            });
            continue;
        };
        matched_old.push(&old.name);
        let renamed_fields: Vec<(&str, &str)> = declared
            .fields
            .iter()
            .filter(|(resource, _, _)| *resource == new.name)
            .map(|(_, prev, name)| (*prev, *name))
            .filter(|(prev, name)| old.field(name).is_none() && new.field(prev).is_none())
            .filter(|(prev, _)| old.field(prev).is_some())
            .collect();
        resource_changes(
            old,
            new,
            &renamed_fields,
            &mut changes,
            &mut index_drops,
            &mut field_drops,
        );
    }
    for old in &from.resources {
        if !matched_old.contains(&old.name.as_str()) {
            drops.push(Step::DropResource {
                resource: old.name.clone(),
            });
        }
    }
    renames
        .into_iter()
        .chain(creates)
        .chain(index_drops)
        .chain(changes)
        .chain(field_drops)
        .chain(drops)
        .collect()
}

fn resource_changes(
    old: &ResourceSpec,
    new: &ResourceSpec,
    renamed_fields: &[(&str, &str)],
    changes: &mut Vec<Step>,
    index_drops: &mut Vec<Step>,
    field_drops: &mut Vec<Step>,
) {
    let table = &new.name;
    for (prev, name) in renamed_fields {
        changes.push(Step::RenameField {
            resource: table.clone(),
            from: (*prev).to_owned(),
            to: (*name).to_owned(),
        });
    }
    if old.timestamps != new.timestamps {
        changes.push(Step::SetTimestamps {
            resource: table.clone(),
            timestamps: new.timestamps,
        });
    }
    let previous = |name: &str| -> Option<&FieldSpec> {
        let prev = renamed_fields
            .iter()
            .find(|(_, n)| *n == name)
            .map_or(name, |(p, _)| *p);
        old.field(prev)
    };
    for field in &new.fields {
        match previous(&field.name) {
            None => changes.push(Step::AddField {
                resource: table.clone(),
                field: field.clone(),
            }),
            Some(before) => {
                let before = FieldSpec {
                    name: field.name.clone(),
                    ..before.clone()
                };
                let relinked = (before.many || field.many)
                    && (before.many != field.many || before.resource != field.resource);
                if relinked {
                    // A many relation's links live in a join table tied to its target:
                    // another target or kind is a new field (the old links are dropped).
                    changes.push(Step::DropField {
                        resource: table.clone(),
                        field: field.name.clone(),
                    });
                    changes.push(Step::AddField {
                        resource: table.clone(),
                        field: field.clone(),
                    });
                } else if before != *field {
                    changes.push(Step::AlterField {
                        resource: table.clone(),
                        from: before,
                        to: field.clone(),
                    });
                }
            }
        }
    }
    for field in &old.fields {
        let kept = new.field(&field.name).is_some()
            || renamed_fields.iter().any(|(p, _)| *p == field.name);
        if !kept {
            field_drops.push(Step::DropField {
                resource: table.clone(),
                field: field.name.clone(),
            });
        }
    }
    // Index columns follow field renames; an index whose definition changed is dropped
    // and created again.
    let renamed_column = |c: &str| -> String {
        let (desc, name) = c.strip_prefix('-').map_or(("", c), |n| ("-", n));
        let name = renamed_fields
            .iter()
            .find(|(p, _)| *p == name)
            .map_or(name, |(_, n)| *n);
        format!("{desc}{name}")
    };
    for index in &old.indexes {
        let carried: Vec<String> = index.columns.iter().map(|c| renamed_column(c)).collect();
        let same = new
            .indexes
            .iter()
            .any(|i| i.name == index.name && i.columns == carried && i.unique == index.unique);
        if !same {
            index_drops.push(Step::DropIndex {
                resource: table.clone(),
                index: index.name.clone(),
            });
        }
    }
    for index in &new.indexes {
        let kept = old.indexes.iter().any(|i| {
            i.name == index.name
                && i.unique == index.unique
                && i.columns
                    .iter()
                    .map(|c| renamed_column(c))
                    .eq(index.columns.iter().cloned())
        });
        if !kept {
            changes.push(Step::CreateIndex {
                resource: table.clone(),
                index: index.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SourceFile;
    use crate::migration::Step;
    use crate::migration::{Risk, SchemaState};
    use crate::parse::parse_schema;

    fn schema(text: &str) -> Schema {
        parse_schema(&SourceFile::new("schema.toml", text)).expect("valid schema")
    }

    const V1: &str = r#"
[resources.posts.fields]
title = { type = "string", required = true }
body = { type = "text" }
status = { type = "enum", values = ["draft", "published"] }
[resources.posts.indexes]
by_title = ["title"]
"#;

    #[test]
    fn nothing_changes_nothing() {
        let s = schema(V1);
        assert!(diff(&SchemaState::of(&s), &s).is_empty());
    }

    #[test]
    fn a_fresh_database_creates_everything() {
        let steps = diff(&SchemaState::default(), &schema(V1));
        assert_eq!(steps.len(), 2, "users and posts: {steps:?}");
        assert!(steps.iter().all(|s| s.risk() == Risk::Additive));
    }

    #[test]
    fn renames_keep_data_and_drops_are_destructive() {
        let old = SchemaState::of(&schema(V1));
        let v2 = r#"
[resources.articles]
renamed_from = "posts"
[resources.articles.fields]
headline = { type = "string", required = true, renamed_from = "title" }
status = { type = "enum", values = ["draft", "published", "archived"] }
tags = { type = "relation", resource = "articles", many = true }
[resources.articles.indexes]
by_title = ["headline"]
"#;
        let steps = diff(&old, &schema(v2));
        let described: Vec<String> = steps.iter().map(Step::describe).collect();
        assert_eq!(
            described,
            [
                "rename resource posts to articles",
                "rename field articles.title to headline",
                "change field articles.status (values draft|published → draft|published|archived)",
                "add field articles.tags (relation)",
                "drop field articles.body and its data",
            ],
            "{steps:?}"
        );
        let risks: Vec<Risk> = steps.iter().map(Step::risk).collect();
        assert_eq!(
            risks,
            [
                Risk::Additive,
                Risk::Additive,
                Risk::Additive,
                Risk::Additive,
                Risk::Destructive
            ]
        );
        let mut state = old;
        for step in &steps {
            state.apply(step).expect("applies");
        }
        assert_eq!(
            state,
            SchemaState::of(&schema(v2)),
            "the steps reach the schema"
        );
    }

    #[test]
    fn tightening_is_checked_and_type_changes_across_storage_are_destructive() {
        let old = SchemaState::of(&schema(V1));
        let v2 = r#"
[resources.posts.fields]
title = { type = "string", required = true, max_length = 10, unique = true }
body = { type = "integer" }
status = { type = "enum", values = ["draft"] }
[resources.posts.indexes]
by_title = ["-title"]
"#;
        let steps = diff(&old, &schema(v2));
        let risks: Vec<(String, Risk)> = steps.iter().map(|s| (s.describe(), s.risk())).collect();
        assert!(
            risks.contains(&("drop index posts.by_title".into(), Risk::Additive)),
            "{risks:?}"
        );
        assert!(
            risks
                .iter()
                .any(|(d, r)| d.starts_with("change field posts.title") && *r == Risk::Checked)
        );
        assert!(
            risks
                .iter()
                .any(|(d, r)| d.starts_with("change field posts.body") && *r == Risk::Destructive)
        );
        assert!(
            risks
                .iter()
                .any(|(d, r)| d.starts_with("change field posts.status") && *r == Risk::Checked)
        );
        assert!(
            risks
                .iter()
                .any(|(d, _)| d == "create index posts.by_title (-title)")
        );
    }

    #[test]
    fn files_round_trip() {
        let steps = diff(&SchemaState::default(), &schema(V1));
        let file = crate::migration::MigrationFile { steps };
        let text = file.render().expect("render");
        assert!(text.starts_with("# A ferrobase migration"));
        assert_eq!(
            crate::migration::MigrationFile::parse(&text).expect("parse"),
            file
        );
    }
}
