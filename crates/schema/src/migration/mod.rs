//! Database-neutral migrations (SPEC §9): the state a database's tables are in, the steps
//! that change it, and the files those steps are kept in.
//!
//! A [`SchemaState`] is what the tables hold: resources, their stored fields with the
//! constraints data must meet, and indexes. Rules, `hidden` and the like are not state:
//! changing them needs no migration. A migration file is a list of [`Step`]s in TOML; it
//! names no database, and the store renders it to SQL for SQLite or PostgreSQL when it
//! is applied.

mod diff;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use diff::{diff, diff_states};

use crate::model::{DefaultValue, Field, FieldType, Index, Resource, Schema};

/// A stored field as migrations see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Column (and JSON property) name.
    pub name: String,
    /// The field type's name in `schema.toml`.
    #[serde(rename = "type")]
    pub ty: String,
    /// Enum values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Relation target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Many-to-many relation (a join table).
    #[serde(default, skip_serializing_if = "is_false")]
    pub many: bool,
    /// Relation `on_delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_delete: Option<String>,
    /// NOT NULL.
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    /// UNIQUE.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unique: bool,
    /// Uniqueness ignores case (users' email).
    #[serde(default, skip_serializing_if = "is_false")]
    pub case_insensitive: bool,
    /// The default as JSON text, or `@auth.id` / `@now`; fills existing rows when a
    /// required field is added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Smallest number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Fewest characters or items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    /// Most characters or items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// Regular expression strings must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A secondary index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSpec {
    /// Name as declared.
    pub name: String,
    /// Columns, `-name` for descending.
    pub columns: Vec<String>,
    /// UNIQUE.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unique: bool,
}

/// A resource's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// Table name.
    pub name: String,
    /// `created_at`/`updated_at` columns.
    #[serde(default, skip_serializing_if = "is_false")]
    pub timestamps: bool,
    /// Stored fields in order.
    #[serde(default)]
    pub fields: Vec<FieldSpec>,
    /// Secondary indexes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexSpec>,
}

impl ResourceSpec {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// What a database's tables hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SchemaState {
    /// Resources in order.
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
}

impl SchemaState {
    /// The resource called `name`.
    pub fn resource(&self, name: &str) -> Option<&ResourceSpec> {
        self.resources.iter().find(|r| r.name == name)
    }

    fn resource_mut(&mut self, name: &str) -> Option<&mut ResourceSpec> {
        self.resources.iter_mut().find(|r| r.name == name)
    }

    /// The state `schema.toml` declares.
    pub fn of(schema: &Schema) -> Self {
        Self {
            resources: schema.resources.iter().map(ResourceSpec::of).collect(),
        }
    }

    /// Whether the tables already are as `step` would leave them (a development database
    /// that applied a change itself before its migration file was written): applying
    /// such a step is skipped.
    pub fn satisfies(&self, step: &Step) -> bool {
        let field = |r: &str, f: &str| self.resource(r).and_then(|r| r.field(f));
        match step {
            Step::CreateResource { resource } => self.resource(&resource.name) == Some(resource),
            Step::DropResource { resource } => self.resource(resource).is_none(),
            Step::RenameResource { from, to } => {
                self.resource(from).is_none() && self.resource(to).is_some()
            }
            Step::SetTimestamps {
                resource,
                timestamps,
            } => self
                .resource(resource)
                .is_some_and(|r| r.timestamps == *timestamps),
            Step::AddField { resource, field: f } => field(resource, &f.name) == Some(f),
            Step::DropField { resource, field: f } => {
                self.resource(resource).is_some() && field(resource, f).is_none()
            }
            Step::RenameField { resource, from, to } => {
                field(resource, from).is_none() && field(resource, to).is_some()
            }
            Step::AlterField { resource, to, .. } => field(resource, &to.name) == Some(to),
            Step::CreateIndex { resource, index } => self
                .resource(resource)
                .is_some_and(|r| r.indexes.contains(index)),
            Step::DropIndex { resource, index } => self
                .resource(resource)
                .is_some_and(|r| !r.indexes.iter().any(|i| i.name == *index)),
        }
    }

    /// The state after `step`; a step that does not fit (an unknown resource or field)
    /// is an error naming it.
    pub fn apply(&mut self, step: &Step) -> Result<(), String> {
        let missing = |what: &str| format!("{what} does not exist");
        match step {
            Step::CreateResource { resource } => {
                if self.resource(&resource.name).is_some() {
                    return Err(format!("resource '{}' exists already", resource.name));
                }
                self.resources.push(resource.clone());
            }
            Step::DropResource { resource } => {
                let before = self.resources.len();
                self.resources.retain(|r| r.name != *resource);
                if self.resources.len() == before {
                    return Err(missing(&format!("resource '{resource}'")));
                }
                for r in &mut self.resources {
                    for f in &mut r.fields {
                        if f.resource.as_deref() == Some(resource) {
                            return Err(format!(
                                "'{}.{}' still refers to '{resource}'",
                                r.name, f.name
                            ));
                        }
                    }
                }
            }
            Step::RenameResource { from, to } => {
                if self.resource(to).is_some() {
                    return Err(format!("resource '{to}' exists already"));
                }
                let r = self
                    .resource_mut(from)
                    .ok_or_else(|| missing(&format!("resource '{from}'")))?;
                r.name.clone_from(to);
                for r in &mut self.resources {
                    for f in &mut r.fields {
                        if f.resource.as_deref() == Some(from.as_str()) {
                            f.resource = Some(to.clone());
                        }
                    }
                }
            }
            Step::SetTimestamps {
                resource,
                timestamps,
            } => {
                self.resource_mut(resource)
                    .ok_or_else(|| missing(&format!("resource '{resource}'")))?
                    .timestamps = *timestamps;
            }
            Step::AddField { resource, field } => {
                let r = self
                    .resource_mut(resource)
                    .ok_or_else(|| missing(&format!("resource '{resource}'")))?;
                if r.field(&field.name).is_some() {
                    return Err(format!("'{resource}.{}' exists already", field.name));
                }
                r.fields.push(field.clone());
            }
            Step::DropField { resource, field } => {
                let r = self
                    .resource_mut(resource)
                    .ok_or_else(|| missing(&format!("resource '{resource}'")))?;
                let before = r.fields.len();
                r.fields.retain(|f| f.name != *field);
                if r.fields.len() == before {
                    return Err(missing(&format!("'{resource}.{field}'")));
                }
                r.indexes
                    .retain(|i| !i.columns.iter().any(|c| c.trim_start_matches('-') == field));
            }
            Step::RenameField { resource, from, to } => {
                let r = self
                    .resource_mut(resource)
                    .ok_or_else(|| missing(&format!("resource '{resource}'")))?;
                if r.field(to).is_some() {
                    return Err(format!("'{resource}.{to}' exists already"));
                }
                let f = r
                    .fields
                    .iter_mut()
                    .find(|f| f.name == *from)
                    .ok_or_else(|| missing(&format!("'{resource}.{from}'")))?;
                f.name.clone_from(to);
                for index in &mut r.indexes {
                    for c in &mut index.columns {
                        if c.trim_start_matches('-') == from {
                            *c = if c.starts_with('-') {
                                format!("-{to}")
                            } else {
                                to.clone()
                            };
                        }
                    }
                }
            }
            Step::AlterField { resource, to, .. } => {
                let r = self
                    .resource_mut(resource)
                    .ok_or_else(|| missing(&format!("resource '{resource}'")))?;
                let f = r
                    .fields
                    .iter_mut()
                    .find(|f| f.name == to.name)
                    .ok_or_else(|| missing(&format!("'{resource}.{}'", to.name)))?;
                *f = to.clone();
            }
            Step::CreateIndex { resource, index } => {
                let r = self
                    .resource_mut(resource)
                    .ok_or_else(|| missing(&format!("resource '{resource}'")))?;
                if r.indexes.iter().any(|i| i.name == index.name) {
                    return Err(format!("index '{resource}.{}' exists already", index.name));
                }
                r.indexes.push(index.clone());
            }
            Step::DropIndex { resource, index } => {
                let r = self
                    .resource_mut(resource)
                    .ok_or_else(|| missing(&format!("resource '{resource}'")))?;
                r.indexes.retain(|i| i.name != *index);
            }
        }
        Ok(())
    }
}

impl ResourceSpec {
    /// The table a declared resource needs.
    pub fn of(resource: &Resource) -> Self {
        Self {
            name: resource.name.clone(),
            timestamps: resource.timestamps,
            fields: resource.fields.iter().map(FieldSpec::of).collect(),
            indexes: resource.indexes.iter().map(IndexSpec::of).collect(),
        }
    }
}

impl IndexSpec {
    /// A declared index.
    pub fn of(index: &Index) -> Self {
        Self {
            name: index.name.clone(),
            columns: index
                .columns
                .iter()
                .map(|c| {
                    if c.descending {
                        format!("-{}", c.name)
                    } else {
                        c.name.clone()
                    }
                })
                .collect(),
            unique: index.unique,
        }
    }

    /// The declared form, for DDL.
    pub fn to_index(&self) -> Index {
        Index {
            name: self.name.clone(),
            columns: self
                .columns
                .iter()
                .map(|c| crate::model::IndexColumn {
                    name: c.trim_start_matches('-').to_owned(),
                    descending: c.starts_with('-'),
                })
                .collect(),
            unique: self.unique,
        }
    }
}

impl FieldSpec {
    /// A declared field.
    pub fn of(field: &Field) -> Self {
        let (values, resource, many, on_delete) = match &field.ty {
            FieldType::Enum(values) => (values.clone(), None, false, None),
            FieldType::Relation(rel) => (
                Vec::new(),
                Some(rel.resource.clone()),
                rel.many,
                (!rel.many).then(|| rel.on_delete.name().to_owned()),
            ),
            _ => (Vec::new(), None, false, None),
        };
        Self {
            name: field.name.clone(),
            ty: field.ty.name().to_owned(),
            values,
            resource,
            many,
            on_delete,
            required: field.required,
            unique: field.unique,
            case_insensitive: field.case_insensitive,
            default: field.default.as_ref().map(|d| match d {
                DefaultValue::Value(v) => v.to_string(),
                DefaultValue::AuthId => "@auth.id".to_owned(),
                DefaultValue::Now => "@now".to_owned(),
            }),
            min: field.min,
            max: field.max,
            min_length: field.min_length,
            max_length: field.max_length,
            pattern: field.pattern.as_ref().map(|p| p.source.clone()),
        }
    }

    /// The declared form, for validating stored values and for DDL. `None` when the
    /// spec names an unknown type or an invalid pattern (a hand-edited file).
    pub fn to_field(&self) -> Option<Field> {
        let ty = match self.ty.as_str() {
            "string" => FieldType::String,
            "text" => FieldType::Text,
            "integer" => FieldType::Integer,
            "number" => FieldType::Number,
            "boolean" => FieldType::Boolean,
            "datetime" => FieldType::Datetime,
            "date" => FieldType::Date,
            "enum" => FieldType::Enum(self.values.clone()),
            "email" => FieldType::Email,
            "url" => FieldType::Url,
            "uuid" => FieldType::Uuid,
            "json" => FieldType::Json,
            "relation" => FieldType::Relation(crate::model::Relation {
                resource: self.resource.clone()?,
                many: self.many,
                on_delete: match self.on_delete.as_deref() {
                    Some("cascade") => crate::model::OnDelete::Cascade,
                    Some("set_null") => crate::model::OnDelete::SetNull,
                    _ => crate::model::OnDelete::Restrict,
                },
            }),
            _ => return None,
        };
        let mut field = Field::new(self.name.clone(), ty);
        field.required = self.required;
        field.unique = self.unique;
        field.case_insensitive = self.case_insensitive;
        field.min = self.min;
        field.max = self.max;
        field.min_length = self.min_length;
        field.max_length = self.max_length;
        field.pattern = match &self.pattern {
            Some(source) => Some(crate::model::Pattern {
                source: source.clone(),
                regex: regex::Regex::new(source).ok()?,
            }),
            None => None,
        };
        field.default = match self.default.as_deref() {
            None => None,
            Some("@auth.id") => Some(DefaultValue::AuthId),
            Some("@now") => Some(DefaultValue::Now),
            Some(json) => Some(DefaultValue::Value(serde_json::from_str(json).ok()?)),
        };
        Some(field)
    }

    /// The constant default, when there is one (fills existing rows).
    pub fn constant_default(&self) -> Option<serde_json::Value> {
        match self.default.as_deref() {
            None | Some("@auth.id" | "@now") => None,
            Some(json) => serde_json::from_str(json).ok(),
        }
    }

    /// Whether the value is stored in a column of the resource's table (many relations
    /// live in a join table).
    pub fn is_column(&self) -> bool {
        !self.many
    }
}

/// One change to the tables.
#[expect(
    clippy::large_enum_variant,
    reason = "a migration holds a handful of steps; boxing would only clutter the files' model"
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// A new table (and its join tables and indexes).
    CreateResource {
        /// The table.
        resource: ResourceSpec,
    },
    /// Drops a table and its data.
    DropResource {
        /// Its name.
        resource: String,
    },
    /// Renames a table, keeping its data.
    RenameResource {
        /// Old name.
        from: String,
        /// New name.
        to: String,
    },
    /// Adds or drops `created_at`/`updated_at`.
    SetTimestamps {
        /// The table.
        resource: String,
        /// Whether it has them afterwards.
        timestamps: bool,
    },
    /// A new field.
    AddField {
        /// The table.
        resource: String,
        /// The field.
        field: FieldSpec,
    },
    /// Drops a field and its data.
    DropField {
        /// The table.
        resource: String,
        /// The field's name.
        field: String,
    },
    /// Renames a field, keeping its data.
    RenameField {
        /// The table.
        resource: String,
        /// Old name.
        from: String,
        /// New name.
        to: String,
    },
    /// Changes a field's type, constraints or default.
    AlterField {
        /// The table.
        resource: String,
        /// The field before.
        from: FieldSpec,
        /// The field after (same name).
        to: FieldSpec,
    },
    /// A new index.
    CreateIndex {
        /// The table.
        resource: String,
        /// The index.
        index: IndexSpec,
    },
    /// Drops an index (the data stays).
    DropIndex {
        /// The table.
        resource: String,
        /// The index's name.
        index: String,
    },
}

/// How much care a step needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Risk {
    /// Loses nothing and cannot fail on existing data: development applies it itself.
    Additive,
    /// Loses nothing, but existing rows must meet a stricter constraint: checked when
    /// applied, refused with the offending rows counted.
    Checked,
    /// Loses data (drops, type changes): refused without `--allow-destructive`.
    Destructive,
}

/// Types whose values are stored alike, so a change between them keeps every value
/// (checked against the new type's rules).
fn same_storage(a: &str, b: &str) -> bool {
    let text = ["string", "text", "email", "url", "enum"];
    let numeric = ["integer", "number"];
    a == b
        || (text.contains(&a) && text.contains(&b))
        || (numeric.contains(&a) && numeric.contains(&b))
}

impl Step {
    /// The step's risk.
    pub fn risk(&self) -> Risk {
        match self {
            Step::CreateResource { .. }
            | Step::RenameResource { .. }
            | Step::RenameField { .. }
            | Step::DropIndex { .. } => Risk::Additive,
            Step::SetTimestamps { timestamps, .. } => {
                if *timestamps {
                    Risk::Additive
                } else {
                    Risk::Destructive
                }
            }
            Step::AddField { field, .. } => {
                if field.required || field.unique {
                    Risk::Checked
                } else {
                    Risk::Additive
                }
            }
            Step::CreateIndex { index, .. } => {
                if index.unique {
                    Risk::Checked
                } else {
                    Risk::Additive
                }
            }
            Step::DropResource { .. } | Step::DropField { .. } => Risk::Destructive,
            Step::AlterField { from, to, .. } => alter_risk(from, to),
        }
    }

    /// A one-line description for plans and logs.
    pub fn describe(&self) -> String {
        match self {
            Step::CreateResource { resource } => format!("create resource {}", resource.name),
            Step::DropResource { resource } => format!("drop resource {resource} and its data"),
            Step::RenameResource { from, to } => format!("rename resource {from} to {to}"),
            Step::SetTimestamps {
                resource,
                timestamps: true,
            } => format!("add timestamps to {resource}"),
            Step::SetTimestamps { resource, .. } => format!("drop the timestamps of {resource}"),
            Step::AddField { resource, field } => {
                format!("add field {resource}.{} ({})", field.name, field.ty)
            }
            Step::DropField { resource, field } => {
                format!("drop field {resource}.{field} and its data")
            }
            Step::RenameField { resource, from, to } => {
                format!("rename field {resource}.{from} to {to}")
            }
            Step::AlterField { resource, from, to } => {
                format!(
                    "change field {resource}.{} ({})",
                    to.name,
                    changes(from, to)
                )
            }
            Step::CreateIndex { resource, index } => format!(
                "create {}index {resource}.{} ({})",
                if index.unique { "unique " } else { "" },
                index.name,
                index.columns.join(", ")
            ),
            Step::DropIndex { resource, index } => format!("drop index {resource}.{index}"),
        }
    }
}

fn changes(from: &FieldSpec, to: &FieldSpec) -> String {
    let mut out = Vec::new();
    let mut note = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{what} {a} → {b}"));
        }
    };
    note("type", from.ty.clone(), to.ty.clone());
    note("values", from.values.join("|"), to.values.join("|"));
    note(
        "target",
        format!("{:?}", from.resource),
        format!("{:?}", to.resource),
    );
    note("many", from.many.to_string(), to.many.to_string());
    note(
        "on_delete",
        format!("{:?}", from.on_delete),
        format!("{:?}", to.on_delete),
    );
    note(
        "required",
        from.required.to_string(),
        to.required.to_string(),
    );
    note("unique", from.unique.to_string(), to.unique.to_string());
    note(
        "default",
        format!("{:?}", from.default),
        format!("{:?}", to.default),
    );
    note("min", format!("{:?}", from.min), format!("{:?}", to.min));
    note("max", format!("{:?}", from.max), format!("{:?}", to.max));
    note(
        "min_length",
        format!("{:?}", from.min_length),
        format!("{:?}", to.min_length),
    );
    note(
        "max_length",
        format!("{:?}", from.max_length),
        format!("{:?}", to.max_length),
    );
    note(
        "pattern",
        format!("{:?}", from.pattern),
        format!("{:?}", to.pattern),
    );
    out.join(", ")
}

fn alter_risk(from: &FieldSpec, to: &FieldSpec) -> Risk {
    let relation_changed = from.resource != to.resource || from.many != to.many;
    if relation_changed || !same_storage(&from.ty, &to.ty) {
        return Risk::Destructive;
    }
    let looser_or_equal = |a: Option<f64>, b: Option<f64>, lower: bool| match (a, b) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(a), Some(b)) => {
            if lower {
                b <= a
            } else {
                b >= a
            }
        }
    };
    let looser_len = |a: Option<u64>, b: Option<u64>, lower: bool| {
        looser_or_equal(a.map(|v| v as f64), b.map(|v| v as f64), lower)
    };
    let values_kept = to.ty != "enum" || from.values.iter().all(|v| to.values.contains(v));
    let loosening = from.ty == to.ty
        && (!to.required || from.required)
        && (!to.unique || from.unique)
        && looser_or_equal(from.min, to.min, true)
        && looser_or_equal(from.max, to.max, false)
        && looser_len(from.min_length, to.min_length, true)
        && looser_len(from.max_length, to.max_length, false)
        && (to.pattern.is_none() || to.pattern == from.pattern)
        && values_kept;
    if loosening {
        Risk::Additive
    } else {
        Risk::Checked
    }
}

/// A migration file: its steps, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationFile {
    /// The steps.
    #[serde(default)]
    pub steps: Vec<Step>,
}

impl MigrationFile {
    /// Parses a migration file's text; names must be plain identifiers, as in
    /// `schema.toml`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: Self =
            toml_edit::de::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
        if file.steps.is_empty() {
            return Err("a migration has at least one [[steps]]".into());
        }
        for step in &file.steps {
            for name in step.names() {
                if !plain(name) {
                    return Err(format!(
                        "'{name}' is not a plain name (lower-case letters, digits and single _, up to 63)"
                    ));
                }
            }
        }
        Ok(file)
    }

    /// The file's text: a header for reviewers, then the steps.
    pub fn render(&self) -> Result<String, String> {
        let body = toml_edit::ser::to_string_pretty(self).map_err(|e| e.to_string())?;
        let mut text = String::from(
            "# A ferrobase migration. Review it, commit it, then `ferrobase migrate apply`.\n\
             # Database-neutral: `ferrobase migrate plan` shows the SQL for your database.\n",
        );
        for step in &self.steps {
            text.push_str(&format!("#   {}\n", step.describe()));
        }
        text.push('\n');
        text.push_str(&body);
        Ok(text)
    }
}

fn plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.contains("__")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Step {
    /// Every resource, field and index name the step mentions.
    fn names(&self) -> Vec<&str> {
        match self {
            Step::CreateResource { resource } => std::iter::once(resource.name.as_str())
                .chain(resource.fields.iter().flat_map(field_names))
                .chain(resource.indexes.iter().map(|i| i.name.as_str()))
                .collect(),
            Step::DropResource { resource } => vec![resource],
            Step::RenameResource { from, to } => vec![from, to],
            Step::SetTimestamps { resource, .. } => vec![resource],
            Step::AddField { resource, field } => std::iter::once(resource.as_str())
                .chain(field_names(field))
                .collect(),
            Step::DropField { resource, field } => vec![resource, field],
            Step::RenameField { resource, from, to } => vec![resource, from, to],
            Step::AlterField { resource, from, to } => std::iter::once(resource.as_str())
                .chain(field_names(from))
                .chain(field_names(to))
                .collect(),
            Step::CreateIndex { resource, index } => {
                vec![resource.as_str(), index.name.as_str()]
            }
            Step::DropIndex { resource, index } => vec![resource, index],
        }
    }
}

fn field_names(f: &FieldSpec) -> impl Iterator<Item = &str> {
    std::iter::once(f.name.as_str()).chain(f.resource.as_deref())
}

/// The checksum recorded for an applied migration: SHA-256 of its exact text.
pub fn checksum(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
