//! The validated data model: what `schema.toml` declares, plus the built-in parts.

use std::ops::Range;

use regex::Regex;

/// Names every record has, set by the server.
pub const ID: &str = "id";
/// Bumped on every write; the basis of ETags and optimistic concurrency.
pub const VERSION: &str = "version";
/// Set on create when a resource has `timestamps = true`.
pub const CREATED_AT: &str = "created_at";
/// Set on every write when a resource has `timestamps = true`.
pub const UPDATED_AT: &str = "updated_at";
/// The built-in authentication resource.
pub const USERS: &str = "users";

/// The whole data model, validated.
#[derive(Debug, Clone)]
pub struct Schema {
    /// `[auth]`: roles and the role new users get.
    pub auth: AuthSchema,
    /// Resources in declaration order; `users` is always first.
    pub resources: Vec<Resource>,
    /// `[jobs.*]`: job types delivered over HTTP.
    pub jobs: Vec<crate::jobs::JobType>,
    /// `[schedules.*]`: cron schedules enqueueing jobs.
    pub schedules: Vec<crate::jobs::Schedule>,
    /// `[webhooks.*]`: deliveries of record events.
    pub webhooks: Vec<crate::webhooks::Webhook>,
}

impl Schema {
    /// The job type called `name`, if declared.
    pub fn job(&self, name: &str) -> Option<&crate::jobs::JobType> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The resource called `name`, if declared.
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }
}

/// `[auth]` section of the schema.
#[derive(Debug, Clone)]
pub struct AuthSchema {
    /// Every role a user may have; always contains `admin`.
    pub roles: Vec<String>,
    /// The role a newly registered user gets.
    pub default_role: String,
}

/// A collection of records served at `/api/v1/{name}`.
#[derive(Debug, Clone)]
pub struct Resource {
    /// URL segment and table name.
    pub name: String,
    /// Whether records carry `created_at`/`updated_at`.
    pub timestamps: bool,
    /// Declared fields (plus built-in ones for `users`), in declaration order.
    pub fields: Vec<Field>,
    /// Secondary indexes.
    pub indexes: Vec<Index>,
    /// Access rules per operation.
    pub rules: Rules,
    /// The resource's previous name (`renamed_from`): migrations rename, keeping data.
    pub renamed_from: Option<String>,
    /// The GraphQL type name, when not the name singular in PascalCase.
    pub graphql_name: Option<String>,
}

impl Resource {
    /// The declared field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Whether `name` is a column every client may sort or filter on: a declared
    /// field or a server-set one (`id`, `version`, timestamps).
    pub fn is_system_column(&self, name: &str) -> bool {
        name == ID
            || name == VERSION
            || (self.timestamps && (name == CREATED_AT || name == UPDATED_AT))
    }

    /// Whether this is the built-in `users` resource.
    pub fn is_users(&self) -> bool {
        self.name == USERS
    }
}

/// Access rules; `None` means the operation is allowed to admins only.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Who may list records (compiled into the list query's `WHERE`).
    pub list: Option<Rule>,
    /// Who may read one record.
    pub view: Option<Rule>,
    /// Who may create a record.
    pub create: Option<Rule>,
    /// Who may change a record.
    pub update: Option<Rule>,
    /// Who may delete a record.
    pub delete: Option<Rule>,
}

impl Rules {
    /// All declared rules with the operation name they belong to.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Rule)> {
        [
            ("list", &self.list),
            ("view", &self.view),
            ("create", &self.create),
            ("update", &self.update),
            ("delete", &self.delete),
        ]
        .into_iter()
        .filter_map(|(op, rule)| rule.as_ref().map(|r| (op, r)))
    }
}

/// One rule expression as written, with where it was written.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The expression text.
    pub source: String,
    /// Byte offset in `schema.toml` of the expression's first character, when the
    /// text maps 1:1 onto the file (no escapes), so expression errors can point into it.
    pub origin: Option<usize>,
    /// Span of the whole TOML string, used when `origin` is unknown.
    pub span: Option<Range<usize>>,
}

impl Rule {
    /// Whether this rule admits everyone (`"true"`).
    pub fn is_public(&self) -> bool {
        self.source.trim() == "true"
    }

    /// Byte offset in the schema file of an offset inside the expression.
    pub fn file_offset(&self, expr_offset: usize) -> Option<usize> {
        match (self.origin, &self.span) {
            (Some(origin), _) => Some(origin + expr_offset),
            (None, Some(span)) => Some(span.start),
            (None, None) => None,
        }
    }
}

/// A declared field.
#[derive(Debug, Clone)]
pub struct Field {
    /// Column and JSON property name.
    pub name: String,
    /// Type and type-specific settings.
    pub ty: FieldType,
    /// Must be present (and not null) on create; cannot be cleared.
    pub required: bool,
    /// No two records may share a value.
    pub unique: bool,
    /// Value used on create when the client sends none.
    pub default: Option<DefaultValue>,
    /// Smallest allowed number.
    pub min: Option<f64>,
    /// Largest allowed number.
    pub max: Option<f64>,
    /// Fewest characters (strings) or items (many relations).
    pub min_length: Option<u64>,
    /// Most characters (strings) or items (many relations).
    pub max_length: Option<u64>,
    /// Regular expression a string must match.
    pub pattern: Option<Pattern>,
    /// Clients can never write it.
    pub read_only: bool,
    /// Never returned to clients.
    pub hidden: bool,
    /// Field-level read rule.
    pub read: Option<Rule>,
    /// Field-level write rule.
    pub write: Option<Rule>,
    /// Built in (users' `email`, `role`, ...), not declared by the user.
    pub builtin: bool,
    /// Compared case-insensitively for uniqueness (users' `email`).
    pub case_insensitive: bool,
    /// The field's previous name (`renamed_from`): migrations rename, keeping data.
    pub renamed_from: Option<String>,
}

impl Field {
    /// A field of type `ty` with no constraints.
    pub fn new(name: impl Into<String>, ty: FieldType) -> Self {
        Self {
            name: name.into(),
            ty,
            required: false,
            unique: false,
            default: None,
            min: None,
            max: None,
            min_length: None,
            max_length: None,
            pattern: None,
            read_only: false,
            hidden: false,
            read: None,
            write: None,
            builtin: false,
            case_insensitive: false,
            renamed_from: None,
        }
    }

    /// The relation this field declares, if any.
    pub fn relation(&self) -> Option<&Relation> {
        match &self.ty {
            FieldType::Relation(rel) => Some(rel),
            _ => None,
        }
    }

    /// Whether values live in a join table rather than a column.
    pub fn is_many(&self) -> bool {
        self.relation().is_some_and(|r| r.many)
    }
}

/// A compiled `pattern`, keeping its source for messages and documents.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The expression as written.
    pub source: String,
    /// Compiled form.
    pub regex: Regex,
}

/// Field types of SPEC §3.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    /// Short text.
    String,
    /// Long text.
    Text,
    /// 64-bit signed integer.
    Integer,
    /// Double-precision number.
    Number,
    /// `true` / `false`.
    Boolean,
    /// RFC 3339 instant, stored in UTC.
    Datetime,
    /// Calendar date `YYYY-MM-DD`.
    Date,
    /// One of a fixed list of strings.
    Enum(Vec<String>),
    /// E-mail address.
    Email,
    /// Absolute http(s) URL.
    Url,
    /// UUID.
    Uuid,
    /// Any JSON value.
    Json,
    /// Reference to records of another resource.
    Relation(Relation),
}

impl FieldType {
    /// The name used in `schema.toml`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Text => "text",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Datetime => "datetime",
            Self::Date => "date",
            Self::Enum(_) => "enum",
            Self::Email => "email",
            Self::Url => "url",
            Self::Uuid => "uuid",
            Self::Json => "json",
            Self::Relation(_) => "relation",
        }
    }

    /// Whether values are JSON strings that length and pattern constraints apply to.
    pub fn is_textual(&self) -> bool {
        matches!(self, Self::String | Self::Text | Self::Email | Self::Url)
    }
}

/// Target and behaviour of a relation field.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// The referenced resource.
    pub resource: String,
    /// Many-to-many (join table) instead of a single reference.
    pub many: bool,
    /// What happens to this record when the referenced one is deleted.
    pub on_delete: OnDelete,
}

/// Referential action of a single relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    /// Refuse to delete a referenced record.
    Restrict,
    /// Delete referencing records too.
    Cascade,
    /// Clear the reference.
    SetNull,
}

impl OnDelete {
    /// The spelling used in `schema.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Restrict => "restrict",
            Self::Cascade => "cascade",
            Self::SetNull => "set_null",
        }
    }
}

/// A field default.
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultValue {
    /// A constant, already validated against the field.
    Value(serde_json::Value),
    /// `@auth.id`: the caller's user id.
    AuthId,
    /// `@now`: the current time (datetime and date fields).
    Now,
}

/// A secondary index.
#[derive(Debug, Clone)]
pub struct Index {
    /// Name as declared (the table name is prefixed in the database).
    pub name: String,
    /// Columns in order, with direction.
    pub columns: Vec<IndexColumn>,
    /// Whether the combination must be unique.
    pub unique: bool,
}

/// One column of an index.
#[derive(Debug, Clone)]
pub struct IndexColumn {
    /// Column name.
    pub name: String,
    /// Descending order (`-field`).
    pub descending: bool,
}
