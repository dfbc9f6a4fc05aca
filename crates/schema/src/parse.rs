//! `schema.toml` → [`Schema`], reporting every problem at once with its location.

use std::collections::HashSet;
use std::ops::Range;

use toml_edit::{Item, TableLike, Value};

use crate::diag::{Diagnostic, Diagnostics, SourceFile};
use crate::model::{
    AuthSchema, CREATED_AT, DefaultValue, Field, FieldType, ID, Index, IndexColumn, OnDelete,
    Pattern, Relation, Resource, Rule, Rules, Schema, UPDATED_AT, USERS, VERSION,
};
use crate::validate::validate_value;

/// Longest resource, field or index name (PostgreSQL's identifier limit, minus room for
/// prefixes).
const MAX_NAME: usize = 48;

/// Resource names that would collide with fixed routes under `/api/v1`.
const RESERVED_RESOURCES: &[&str] = &[
    "auth", "batch", "admin", "realtime", "graphql", "openapi", "docs", "files", "jobs",
];

/// Names every record has or that `users` keeps for itself.
const RESERVED_FIELDS: &[&str] = &[ID, VERSION, CREATED_AT, UPDATED_AT];
const USERS_BUILTIN: &[&str] = &["email", "role", "verified", "password", "password_hash"];

const FIELD_TYPES: &[&str] = &[
    "string", "text", "integer", "number", "boolean", "datetime", "date", "enum", "email", "url",
    "uuid", "json", "relation",
];
const FIELD_KEYS: &[&str] = &[
    "type",
    "required",
    "unique",
    "default",
    "min",
    "max",
    "min_length",
    "max_length",
    "pattern",
    "values",
    "read_only",
    "hidden",
    "read",
    "write",
    "resource",
    "many",
    "on_delete",
    "renamed_from",
];
const RESOURCE_KEYS: &[&str] = &[
    "timestamps",
    "fields",
    "indexes",
    "rules",
    "renamed_from",
    "graphql_name",
];
const RULE_KEYS: &[&str] = &["list", "view", "create", "update", "delete"];

/// Parses and validates a schema. On failure every problem found is returned.
pub fn parse_schema(src: &SourceFile) -> Result<Schema, Diagnostics> {
    let (schema, diags) = parse_schema_lenient(src);
    if diags.is_empty() {
        Ok(schema)
    } else {
        Err(Diagnostics(diags))
    }
}

/// Parses as much as possible and returns the problems beside the result, so later checks
/// (rules) can still run and report theirs. A field whose declaration is broken stays in
/// the result as an untyped `json` placeholder, so rules naming it do not report it a
/// second time. Never serve a schema that came with problems.
pub fn parse_schema_lenient(src: &SourceFile) -> (Schema, Vec<Diagnostic>) {
    let mut p = Parser {
        src,
        diags: Vec::new(),
    };
    let schema = p.document();
    (schema, p.diags)
}

pub(crate) struct Parser<'a> {
    src: &'a SourceFile,
    diags: Vec<Diagnostic>,
}

/// Suggests the closest of `known` to `word`, for "did you mean" hints.
pub(crate) fn suggest(word: &str, known: &[&str]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!("did you mean '{k}'?"))
}

pub(crate) fn item_span(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::Value(v) => v.span(),
        Item::Table(t) => t.span(),
        Item::ArrayOfTables(a) => a.span(),
        Item::None => None,
    }
}

impl Parser<'_> {
    pub(crate) fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let d = self.src.diagnostic(span, message, None);
        self.diags.push(d);
    }

    pub(crate) fn error_hint(
        &mut self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        hint: String,
    ) {
        let d = self.src.diagnostic(span, message, Some(hint));
        self.diags.push(d);
    }

    /// The span of `key` in `table`, falling back to its value's span.
    pub(crate) fn key_span(table: &dyn TableLike, key: &str) -> Option<Range<usize>> {
        table
            .get_key_value(key)
            .and_then(|(k, v)| k.span().or_else(|| item_span(v)))
    }

    pub(crate) fn unknown_keys(&mut self, table: &dyn TableLike, allowed: &[&str], what: &str) {
        let unknown: Vec<String> = table
            .iter()
            .map(|(k, _)| k.to_owned())
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        for key in unknown {
            let span = Self::key_span(table, &key);
            let hint = suggest(&key, allowed)
                .unwrap_or_else(|| format!("allowed keys: {}", allowed.join(", ")));
            self.error_hint(span, format!("unknown key '{key}' in {what}"), hint);
        }
    }

    pub(crate) fn table<'t>(&mut self, item: &'t Item, what: &str) -> Option<&'t dyn TableLike> {
        let table = item.as_table_like();
        if table.is_none() {
            self.error(item_span(item), format!("{what} must be a table"));
        }
        table
    }

    fn bool_value(&mut self, item: &Item, what: &str) -> Option<bool> {
        let b = item.as_bool();
        if b.is_none() {
            self.error(item_span(item), format!("{what} must be true or false"));
        }
        b
    }

    pub(crate) fn string_value(&mut self, item: &Item, what: &str) -> Option<String> {
        let s = item.as_str().map(str::to_owned);
        if s.is_none() {
            self.error(item_span(item), format!("{what} must be a string"));
        }
        s
    }

    pub(crate) fn name(&mut self, name: &str, span: Option<Range<usize>>, what: &str) -> bool {
        let ok = name.len() <= MAX_NAME
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !name.contains("__");
        if !ok {
            self.error_hint(
                span,
                format!("invalid {what} name '{name}'"),
                format!(
                    "use lower-case letters, digits and single underscores, starting with a letter, at most {MAX_NAME} characters"
                ),
            );
        }
        ok
    }

    fn document(&mut self) -> Schema {
        let mut schema = Schema {
            auth: AuthSchema {
                roles: vec!["admin".into(), "user".into()],
                default_role: "user".into(),
            },
            resources: Vec::new(),
            jobs: Vec::new(),
            schedules: Vec::new(),
            webhooks: Vec::new(),
        };
        let doc = match toml_edit::Document::parse(self.src.text()) {
            Ok(doc) => doc,
            Err(e) => {
                let message = e.message().trim().to_owned();
                self.error(e.span(), format!("invalid TOML: {message}"));
                return schema;
            }
        };
        let root = doc.as_table();
        self.unknown_keys(
            root,
            &["auth", "resources", "jobs", "schedules", "webhooks"],
            "the schema",
        );
        if let Some(item) = root.get("auth")
            && let Some(auth) = self.auth(item)
        {
            schema.auth = auth;
        }
        let mut users_declared = None;
        let mut resources = Vec::new();
        if let Some(item) = root.get("resources")
            && let Some(table) = self.table(item, "[resources]")
        {
            for (name, item) in table.iter() {
                let span = Self::key_span(table, name);
                if !self.name(name, span.clone(), "resource") {
                    continue;
                }
                if RESERVED_RESOURCES.contains(&name) || name.starts_with("sqlite_") {
                    self.error_hint(
                        span,
                        format!("resource name '{name}' is reserved"),
                        format!(
                            "these names are taken by built-in routes: {}",
                            RESERVED_RESOURCES.join(", ")
                        ),
                    );
                    continue;
                }
                if let Some(resource) = self.resource(name, item, &schema.auth) {
                    if name == USERS {
                        users_declared = Some(resource);
                    } else {
                        resources.push((resource, span));
                    }
                }
            }
        }
        let users = users_declared.unwrap_or_else(|| builtin_users(&schema.auth, Vec::new()));
        schema.resources.push(users);
        schema
            .resources
            .extend(resources.iter().map(|(r, _)| r.clone()));
        self.resolve(&schema, &doc);
        if let Some(item) = root.get("jobs") {
            schema.jobs = self.jobs(item);
        }
        if let Some(item) = root.get("webhooks") {
            schema.webhooks = self.webhooks(item, &schema);
        }
        if let Some(item) = root.get("schedules") {
            // Every declared job type counts, even one with problems of its own (they
            // are reported there, not again as unknown names).
            let declared: Vec<String> = root
                .get("jobs")
                .and_then(Item::as_table_like)
                .map(|t| t.iter().map(|(k, _)| k.to_owned()).collect())
                .unwrap_or_default();
            schema.schedules = self.schedules(item, &declared);
        }
        schema
    }

    fn auth(&mut self, item: &Item) -> Option<AuthSchema> {
        let table = self.table(item, "[auth]")?;
        self.unknown_keys(table, &["roles", "default_role"], "[auth]");
        let mut roles = vec!["admin".to_owned(), "user".to_owned()];
        if let Some(item) = table.get("roles") {
            let span = item_span(item);
            match item.as_array() {
                Some(array) => {
                    roles.clear();
                    for value in array.iter() {
                        match value.as_str() {
                            Some(role) if roles.iter().any(|r| r == role) => {
                                self.error(value.span(), format!("role '{role}' is listed twice"));
                            }
                            Some(role) => {
                                if self.name(role, value.span(), "role") {
                                    roles.push(role.to_owned());
                                }
                            }
                            None => self.error(value.span(), "roles must be strings"),
                        }
                    }
                    if !roles.iter().any(|r| r == "admin") {
                        self.error_hint(
                            span,
                            "roles must include 'admin'",
                            "operations without a rule are allowed to admins only, so the role must exist".into(),
                        );
                    }
                }
                None => self.error(span, "[auth] roles must be an array of strings"),
            }
        }
        let mut default_role = if roles.iter().any(|r| r == "user") {
            "user".to_owned()
        } else {
            roles
                .iter()
                .find(|r| *r != "admin")
                .cloned()
                .unwrap_or_default()
        };
        match table.get("default_role") {
            Some(item) => {
                if let Some(role) = self.string_value(item, "default_role") {
                    if roles.contains(&role) {
                        default_role = role;
                    } else {
                        self.error_hint(
                            item_span(item),
                            format!("default_role '{role}' is not one of the roles"),
                            format!("roles: {}", roles.join(", ")),
                        );
                    }
                }
            }
            None if default_role.is_empty() => {
                self.error(
                    item_span(item),
                    "[auth] needs a default_role other than 'admin'",
                );
            }
            None => {}
        }
        Some(AuthSchema {
            roles,
            default_role,
        })
    }

    fn resource(&mut self, name: &str, item: &Item, auth: &AuthSchema) -> Option<Resource> {
        let what = format!("[resources.{name}]");
        let table = self.table(item, &what)?;
        self.unknown_keys(table, RESOURCE_KEYS, &what);
        let is_users = name == USERS;
        let mut timestamps = is_users;
        if let Some(item) = table.get("timestamps")
            && let Some(b) = self.bool_value(item, "timestamps")
        {
            if is_users && !b {
                self.error(item_span(item), "users always have timestamps");
            }
            timestamps = b || is_users;
        }
        let mut fields = Vec::new();
        if let Some(item) = table.get("fields")
            && let Some(ftable) = self.table(item, &format!("[resources.{name}.fields]"))
        {
            for (fname, fitem) in ftable.iter() {
                let span = Self::key_span(ftable, fname);
                if !self.name(fname, span.clone(), "field") {
                    continue;
                }
                if RESERVED_FIELDS.contains(&fname) || (is_users && USERS_BUILTIN.contains(&fname))
                {
                    self.error_hint(
                            span,
                            format!("field name '{fname}' is reserved"),
                            "id, version, created_at and updated_at are set by the server; users also keep email, role, verified and password for themselves".into(),
                        );
                    continue;
                }
                let field = self.field(name, fname, fitem);
                fields.push(field.unwrap_or_else(|| Field::new(fname, FieldType::Json)));
            }
        }
        let rules = match table.get("rules") {
            Some(item) => self.rules(name, item),
            None => Rules::default(),
        };
        let mut resource = if is_users {
            builtin_users(auth, fields)
        } else {
            Resource {
                name: name.to_owned(),
                timestamps,
                fields,
                indexes: Vec::new(),
                rules: Rules::default(),
                renamed_from: None,
                graphql_name: None,
            }
        };
        resource.rules = rules;
        if let Some(item) = table.get("renamed_from") {
            resource.renamed_from = self.previous_name(item, &what);
        }
        if let Some(item) = table.get("graphql_name")
            && let Some(type_name) = self.string_value(item, "graphql_name")
        {
            let valid = type_name.starts_with(|c: char| c.is_ascii_uppercase())
                && type_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && type_name.len() <= 64;
            if valid {
                resource.graphql_name = Some(type_name);
            } else {
                self.error_hint(
                    item_span(item),
                    format!("{what}: graphql_name '{type_name}' is not a GraphQL type name"),
                    "use letters, digits and _, starting with an upper-case letter (e.g. Person)"
                        .into(),
                );
            }
        }
        if let Some(item) = table.get("indexes") {
            resource.indexes = self.indexes(&resource, item);
        }
        Some(resource)
    }

    pub(crate) fn rule(&mut self, item: &Item, what: &str) -> Option<Rule> {
        let source = self.string_value(item, what)?;
        let span = item_span(item);
        if source.trim().is_empty() {
            self.error_hint(
                span,
                format!("{what} is empty"),
                "write \"true\" to make it public, or remove it to allow admins only".into(),
            );
            return None;
        }
        let origin = item
            .as_value()
            .and_then(|v| match v {
                Value::String(f) => f.span(),
                _ => None,
            })
            .and_then(|span| {
                let raw = self.src.text().get(span.clone())?;
                let quote = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
                    3
                } else {
                    1
                };
                let body = raw.get(quote..raw.len().checked_sub(quote)?)?;
                let literal = raw.starts_with('\'') || !body.contains('\\');
                (literal && body == source).then_some(span.start + quote)
            });
        Some(Rule {
            source,
            origin,
            span,
        })
    }

    fn rules(&mut self, resource: &str, item: &Item) -> Rules {
        let what = format!("[resources.{resource}.rules]");
        let Some(table) = self.table(item, &what) else {
            return Rules::default();
        };
        self.unknown_keys(table, RULE_KEYS, &what);
        let mut rule = |op: &str| {
            table
                .get(op)
                .and_then(|i| self.rule(i, &format!("rule '{op}'")))
        };
        Rules {
            list: rule("list"),
            view: rule("view"),
            create: rule("create"),
            update: rule("update"),
            delete: rule("delete"),
        }
    }
}

/// The built-in `users` resource with the user's profile fields appended.
pub(crate) fn builtin_users(auth: &AuthSchema, profile: Vec<Field>) -> Resource {
    let mut email = Field::new("email", FieldType::Email);
    email.required = true;
    email.unique = true;
    email.case_insensitive = true;
    email.max_length = Some(254);
    let mut role = Field::new("role", FieldType::Enum(auth.roles.clone()));
    role.required = true;
    role.read_only = true;
    role.default = Some(DefaultValue::Value(serde_json::Value::String(
        auth.default_role.clone(),
    )));
    let mut verified = Field::new("verified", FieldType::Boolean);
    verified.required = true;
    verified.read_only = true;
    verified.default = Some(DefaultValue::Value(serde_json::Value::Bool(false)));
    let mut password_hash = Field::new("password_hash", FieldType::Text);
    password_hash.read_only = true;
    password_hash.hidden = true;
    let mut fields = vec![email, role, verified];
    fields.extend(profile);
    fields.push(password_hash);
    for f in fields.iter_mut().take(3) {
        f.builtin = true;
    }
    if let Some(last) = fields.last_mut() {
        last.builtin = true;
    }
    Resource {
        name: USERS.to_owned(),
        timestamps: true,
        fields,
        indexes: Vec::new(),
        rules: Rules::default(),
        renamed_from: None,
        graphql_name: None,
    }
}

impl Parser<'_> {
    fn field(&mut self, resource: &str, name: &str, item: &Item) -> Option<Field> {
        let what = format!("field '{resource}.{name}'");
        let table = self.table(item, &what)?;
        self.unknown_keys(table, FIELD_KEYS, &what);
        let Some(type_item) = table.get("type") else {
            let span = Self::key_span(table, "type").or_else(|| item_span(item));
            self.error_hint(
                span,
                format!("{what} has no type"),
                format!("add type = \"...\", one of: {}", FIELD_TYPES.join(", ")),
            );
            return None;
        };
        let type_name = self.string_value(type_item, "type")?;
        let type_span = item_span(type_item);
        let ty = match type_name.as_str() {
            "string" => FieldType::String,
            "text" => FieldType::Text,
            "integer" => FieldType::Integer,
            "number" => FieldType::Number,
            "boolean" => FieldType::Boolean,
            "datetime" => FieldType::Datetime,
            "date" => FieldType::Date,
            "email" => FieldType::Email,
            "url" => FieldType::Url,
            "uuid" => FieldType::Uuid,
            "json" => FieldType::Json,
            "enum" => FieldType::Enum(self.enum_values(table, &what, type_span.clone())?),
            "relation" => FieldType::Relation(self.relation(table, &what, type_span.clone())?),
            "file" => {
                self.error(type_span, "field type 'file' is not supported yet");
                return None;
            }
            other => {
                let hint = suggest(other, FIELD_TYPES)
                    .unwrap_or_else(|| format!("field types: {}", FIELD_TYPES.join(", ")));
                self.error_hint(type_span, format!("unknown field type '{other}'"), hint);
                return None;
            }
        };
        let mut field = Field::new(name, ty);
        let ok_before = self.diags.len();
        for key in ["required", "unique", "read_only", "hidden"] {
            if let Some(item) = table.get(key) {
                let value = self.bool_value(item, key).unwrap_or(false);
                match key {
                    "required" => field.required = value,
                    "unique" => field.unique = value,
                    "read_only" => field.read_only = value,
                    _ => field.hidden = value,
                }
            }
        }
        self.constraints(table, &mut field, &what);
        if let Some(item) = table.get("read") {
            field.read = self.rule(item, &format!("{what} read rule"));
        }
        if let Some(item) = table.get("write") {
            field.write = self.rule(item, &format!("{what} write rule"));
        }
        if field.unique && matches!(field.ty, FieldType::Json) {
            self.error(
                Self::key_span(table, "unique"),
                format!("{what}: json fields cannot be unique"),
            );
        }
        if field.unique && field.is_many() {
            self.error(
                Self::key_span(table, "unique"),
                format!("{what}: many relations cannot be unique"),
            );
        }
        if let Some(item) = table.get("default") {
            field.default = self.default(&field, item, &what);
        }
        if let Some(item) = table.get("renamed_from") {
            field.renamed_from = self.previous_name(item, &what);
        }
        if field.required && field.read_only && field.default.is_none() {
            self.error_hint(
                Self::key_span(table, "read_only"),
                format!("{what} is required and read-only but has no default"),
                "no client can set it, so every create would fail; add a default or drop one of the two".into(),
            );
        }
        (self.diags.len() == ok_before).then_some(field)
    }

    /// A `renamed_from` value: a plain name other than the current one.
    fn previous_name(&mut self, item: &Item, what: &str) -> Option<String> {
        let name = self.string_value(item, "renamed_from")?;
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            self.error(
                item_span(item),
                format!(
                    "{what}: renamed_from must be the previous name (lower-case letters, digits, _)"
                ),
            );
            return None;
        }
        Some(name)
    }

    fn enum_values(
        &mut self,
        table: &dyn TableLike,
        what: &str,
        type_span: Option<Range<usize>>,
    ) -> Option<Vec<String>> {
        let Some(item) = table.get("values") else {
            self.error_hint(
                type_span,
                format!("{what}: enum fields need values"),
                "add values = [\"a\", \"b\"]".into(),
            );
            return None;
        };
        let array = item.as_array().filter(|a| !a.is_empty());
        let Some(array) = array else {
            self.error(
                item_span(item),
                format!("{what}: values must be a non-empty array of strings"),
            );
            return None;
        };
        let mut values: Vec<String> = Vec::new();
        for v in array.iter() {
            match v.as_str() {
                Some("") => self.error(v.span(), "enum values cannot be empty"),
                Some(s) if values.iter().any(|x| x == s) => {
                    self.error(v.span(), format!("enum value '{s}' is listed twice"));
                }
                Some(s) => values.push(s.to_owned()),
                None => self.error(v.span(), "enum values must be strings"),
            }
        }
        Some(values)
    }

    fn relation(
        &mut self,
        table: &dyn TableLike,
        what: &str,
        type_span: Option<Range<usize>>,
    ) -> Option<Relation> {
        let resource = match table.get("resource") {
            Some(item) => self.string_value(item, "resource")?,
            None => {
                self.error_hint(
                    type_span,
                    format!("{what}: relation fields need a resource"),
                    "add resource = \"users\" (or another resource)".into(),
                );
                return None;
            }
        };
        let many = match table.get("many") {
            Some(item) => self.bool_value(item, "many")?,
            None => false,
        };
        let on_delete = match table.get("on_delete") {
            None if many => OnDelete::Cascade,
            None => OnDelete::Restrict,
            Some(item) => {
                let s = self.string_value(item, "on_delete")?;
                match (s.as_str(), many) {
                    (_, true) => {
                        self.error_hint(
                            item_span(item),
                            format!("{what}: on_delete applies to single relations only"),
                            "links of a many relation are removed with either record".into(),
                        );
                        return None;
                    }
                    ("restrict", _) => OnDelete::Restrict,
                    ("cascade", _) => OnDelete::Cascade,
                    ("set_null", _) => OnDelete::SetNull,
                    (other, _) => {
                        self.error_hint(
                            item_span(item),
                            format!("{what}: unknown on_delete '{other}'"),
                            "use restrict, cascade or set_null".into(),
                        );
                        return None;
                    }
                }
            }
        };
        Some(Relation {
            resource,
            many,
            on_delete,
        })
    }

    fn constraints(&mut self, table: &dyn TableLike, field: &mut Field, what: &str) {
        let numeric = matches!(field.ty, FieldType::Integer | FieldType::Number);
        let lengthy = field.ty.is_textual() || field.is_many();
        for key in ["min", "max"] {
            let Some(item) = table.get(key) else { continue };
            let span = item_span(item);
            if !numeric {
                self.error(
                    span,
                    format!("{what}: {key} applies to integer and number fields"),
                );
                continue;
            }
            let value = item
                .as_integer()
                .map(|i| i as f64)
                .or_else(|| item.as_float())
                .filter(|f| f.is_finite());
            match value {
                Some(v) if key == "min" => field.min = Some(v),
                Some(v) => field.max = Some(v),
                None => self.error(span, format!("{what}: {key} must be a number")),
            }
        }
        if let (Some(min), Some(max)) = (field.min, field.max)
            && min > max
        {
            self.error(
                Self::key_span(table, "min"),
                format!("{what}: min is greater than max"),
            );
        }
        for key in ["min_length", "max_length"] {
            let Some(item) = table.get(key) else { continue };
            let span = item_span(item);
            if !lengthy {
                self.error(
                    span,
                    format!(
                        "{what}: {key} applies to string, text, email, url and many-relation fields"
                    ),
                );
                continue;
            }
            match item.as_integer().and_then(|i| u64::try_from(i).ok()) {
                Some(n) if key == "min_length" => field.min_length = Some(n),
                Some(n) => field.max_length = Some(n),
                None => self.error(
                    span,
                    format!("{what}: {key} must be a non-negative integer"),
                ),
            }
        }
        if let (Some(min), Some(max)) = (field.min_length, field.max_length)
            && min > max
        {
            self.error(
                Self::key_span(table, "min_length"),
                format!("{what}: min_length is greater than max_length"),
            );
        }
        if let Some(item) = table.get("pattern") {
            let span = item_span(item);
            if !field.ty.is_textual() {
                self.error(
                    span,
                    format!("{what}: pattern applies to string, text, email and url fields"),
                );
            } else if let Some(source) = self.string_value(item, "pattern") {
                match regex::RegexBuilder::new(&source)
                    .size_limit(1 << 20)
                    .build()
                {
                    Ok(regex) => field.pattern = Some(Pattern { source, regex }),
                    Err(e) => self.error(
                        span,
                        format!("{what}: invalid pattern: {}", first_line(&e.to_string())),
                    ),
                }
            }
        }
        if table.get("values").is_some() && !matches!(field.ty, FieldType::Enum(_)) {
            self.error(
                Self::key_span(table, "values"),
                format!("{what}: values applies to enum fields"),
            );
        }
        for key in ["resource", "many", "on_delete"] {
            if table.get(key).is_some() && field.relation().is_none() {
                self.error(
                    Self::key_span(table, key),
                    format!("{what}: {key} applies to relation fields"),
                );
            }
        }
    }

    fn default(&mut self, field: &Field, item: &Item, what: &str) -> Option<DefaultValue> {
        let span = item_span(item);
        if let Some(s) = item.as_str() {
            match s {
                "@auth.id" => {
                    return match field.relation() {
                        Some(rel) if rel.resource == USERS && !rel.many => {
                            Some(DefaultValue::AuthId)
                        }
                        _ => {
                            self.error(
                                span,
                                format!(
                                    "{what}: default \"@auth.id\" needs a single relation to users"
                                ),
                            );
                            None
                        }
                    };
                }
                "@now" => {
                    return if matches!(field.ty, FieldType::Datetime | FieldType::Date) {
                        Some(DefaultValue::Now)
                    } else {
                        self.error(
                            span,
                            format!("{what}: default \"@now\" needs a datetime or date field"),
                        );
                        None
                    };
                }
                _ => {}
            }
        }
        if field.relation().is_some() {
            self.error_hint(
                span,
                format!("{what}: relation defaults must be \"@auth.id\""),
                "a fixed id would point at a record that may not exist".into(),
            );
            return None;
        }
        let Some(json) = item.as_value().and_then(toml_to_json) else {
            self.error(span, format!("{what}: default is not a valid value"));
            return None;
        };
        match validate_value(field, &json) {
            Ok(v) => Some(DefaultValue::Value(v)),
            Err(problems) => {
                self.error(span, format!("{what}: default {}", problems.join("; ")));
                None
            }
        }
    }

    fn indexes(&mut self, resource: &Resource, item: &Item) -> Vec<Index> {
        let what = format!("[resources.{}.indexes]", resource.name);
        let Some(table) = self.table(item, &what) else {
            return Vec::new();
        };
        let mut indexes = Vec::new();
        for (name, item) in table.iter() {
            let span = Self::key_span(table, name);
            if !self.name(name, span, "index") {
                continue;
            }
            let (array, unique) = match (item.as_array(), item.as_table_like()) {
                (Some(a), _) => (Some(a), false),
                (None, Some(t)) => {
                    self.unknown_keys(t, &["fields", "unique"], &format!("index '{name}'"));
                    let unique = t
                        .get("unique")
                        .and_then(|u| self.bool_value(u, "unique"))
                        .unwrap_or(false);
                    (t.get("fields").and_then(Item::as_array), unique)
                }
                _ => (None, false),
            };
            let Some(array) = array.filter(|a| !a.is_empty()) else {
                self.error_hint(
                    item_span(item),
                    format!("index '{name}' needs a list of fields"),
                    "write name = [\"field\", \"-other\"] or name = { fields = [...], unique = true }".into(),
                );
                continue;
            };
            let mut columns = Vec::new();
            for v in array.iter() {
                let Some(raw) = v.as_str() else {
                    self.error(v.span(), "index fields must be strings");
                    continue;
                };
                let (descending, col) = match raw.strip_prefix('-') {
                    Some(rest) => (true, rest),
                    None => (false, raw),
                };
                let known = resource.is_system_column(col)
                    || resource.field(col).is_some_and(|f| !f.is_many());
                if known {
                    columns.push(IndexColumn {
                        name: col.to_owned(),
                        descending,
                    });
                } else {
                    let names = column_names(resource);
                    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                    let hint = suggest(col, &refs)
                        .unwrap_or_else(|| format!("columns: {}", names.join(", ")));
                    self.error_hint(
                        v.span(),
                        format!("index '{name}' names unknown field '{col}'"),
                        hint,
                    );
                }
            }
            indexes.push(Index {
                name: name.to_owned(),
                columns,
                unique,
            });
        }
        indexes
    }

    /// Checks that need every resource: relation targets.
    fn resolve(&mut self, schema: &Schema, doc: &toml_edit::Document<&str>) {
        let names: Vec<&str> = schema.resources.iter().map(|r| r.name.as_str()).collect();
        let mut seen = HashSet::new();
        for resource in &schema.resources {
            for field in &resource.fields {
                let Some(rel) = field.relation() else {
                    continue;
                };
                if !seen.insert((resource.name.clone(), field.name.clone())) {
                    continue;
                }
                let span = doc
                    .get("resources")
                    .and_then(|r| r.get(&resource.name))
                    .and_then(|r| r.get("fields"))
                    .and_then(|f| f.get(&field.name))
                    .and_then(|f| f.get("resource"))
                    .and_then(item_span);
                if schema.resource(&rel.resource).is_none() {
                    let hint = suggest(&rel.resource, &names)
                        .unwrap_or_else(|| format!("resources: {}", names.join(", ")));
                    self.error_hint(
                        span.clone(),
                        format!(
                            "field '{}.{}' relates to unknown resource '{}'",
                            resource.name, field.name, rel.resource
                        ),
                        hint,
                    );
                }
                if rel.on_delete == OnDelete::SetNull && field.required {
                    self.error(
                        span,
                        format!(
                            "field '{}.{}' is required, so on_delete cannot be set_null",
                            resource.name, field.name
                        ),
                    );
                }
            }
        }
    }
}

/// Every column name of a resource, for hints.
pub(crate) fn column_names(resource: &Resource) -> Vec<String> {
    let mut names = vec![ID.to_owned()];
    names.extend(
        resource
            .fields
            .iter()
            .filter(|f| !f.is_many())
            .map(|f| f.name.clone()),
    );
    names.push(VERSION.to_owned());
    if resource.timestamps {
        names.push(CREATED_AT.to_owned());
        names.push(UPDATED_AT.to_owned());
    }
    names
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_owned()
}

/// Converts a TOML value into JSON (for defaults of every field type).
pub(crate) fn toml_to_json(value: &Value) -> Option<serde_json::Value> {
    Some(match value {
        Value::String(s) => serde_json::Value::String(s.value().clone()),
        Value::Integer(i) => serde_json::Value::from(*i.value()),
        Value::Float(f) => serde_json::Number::from_f64(*f.value())?.into(),
        Value::Boolean(b) => serde_json::Value::Bool(*b.value()),
        Value::Datetime(d) => serde_json::Value::String(d.value().to_string()),
        Value::Array(a) => {
            serde_json::Value::Array(a.iter().map(toml_to_json).collect::<Option<_>>()?)
        }
        Value::InlineTable(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| Some((k.to_owned(), toml_to_json(v)?)))
                .collect::<Option<_>>()?,
        ),
    })
}
