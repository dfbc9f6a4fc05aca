//! Checks every rule of a schema: it must parse, and every name it uses must exist.
//! Problems carry the `file:line:column` of the offending text in `schema.toml`.

use ferrobase_schema::{Diagnostic, Resource, Rule, Schema, SourceFile, USERS};

use crate::{Reference, parse, references};

/// Where a rule may be used decides whether `@body` makes sense in it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RuleKind {
    Read,
    Write,
}

/// Every problem in the schema's rules (resource rules and field read/write rules).
pub fn check_rules(schema: &Schema, src: &SourceFile) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for resource in &schema.resources {
        for (op, rule) in resource.rules.iter() {
            let kind = if matches!(op, "create" | "update") {
                RuleKind::Write
            } else {
                RuleKind::Read
            };
            let what = format!("rule '{op}' of {}", resource.name);
            check_rule(schema, resource, rule, kind, &what, src, &mut diags);
        }
        for field in &resource.fields {
            if let Some(rule) = &field.read {
                let what = format!("read rule of {}.{}", resource.name, field.name);
                check_rule(
                    schema,
                    resource,
                    rule,
                    RuleKind::Read,
                    &what,
                    src,
                    &mut diags,
                );
            }
            if let Some(rule) = &field.write {
                let what = format!("write rule of {}.{}", resource.name, field.name);
                check_rule(
                    schema,
                    resource,
                    rule,
                    RuleKind::Write,
                    &what,
                    src,
                    &mut diags,
                );
            }
        }
    }
    diags
}

fn check_rule(
    schema: &Schema,
    resource: &Resource,
    rule: &Rule,
    kind: RuleKind,
    what: &str,
    src: &SourceFile,
    diags: &mut Vec<Diagnostic>,
) {
    let mut report = |offset: usize, message: String, hint: Option<String>| {
        let at = rule.file_offset(offset).map(|o| o..o);
        diags.push(src.diagnostic(at, format!("{what}: {message}"), hint));
    };
    let expr = match parse(&rule.source) {
        Ok(expr) => expr,
        Err(e) => return report(e.offset, e.message, None),
    };
    for reference in references(&expr) {
        match reference {
            Reference::Field(path) => {
                let mut current = resource;
                let last = path.segments.len() - 1;
                for (i, segment) in path.segments.iter().enumerate() {
                    let name = segment.name.as_str();
                    if current.is_system_column(name) && i == last {
                        break;
                    }
                    let Some(field) = current.field(name) else {
                        let (message, hint) = unknown(current, name);
                        report(segment.span.start, message, Some(hint));
                        break;
                    };
                    if i == last {
                        break;
                    }
                    match field.relation().and_then(|r| schema.resource(&r.resource)) {
                        Some(target) => current = target,
                        None => {
                            report(
                                segment.span.start,
                                format!(
                                    "'{name}' is not a relation, so '{}' cannot be followed",
                                    path.dotted()
                                ),
                                None,
                            );
                            break;
                        }
                    }
                }
            }
            Reference::Auth { field, span } => {
                let known = field == "id"
                    || schema
                        .resource(USERS)
                        .and_then(|u| u.field(&field))
                        .is_some_and(|f| !f.hidden);
                if !known {
                    let users: Vec<String> = schema
                        .resource(USERS)
                        .map(|u| {
                            std::iter::once("id".to_owned())
                                .chain(
                                    u.fields
                                        .iter()
                                        .filter(|f| !f.hidden)
                                        .map(|f| f.name.clone()),
                                )
                                .collect()
                        })
                        .unwrap_or_default();
                    report(
                        span.start,
                        format!("@auth has no field '{field}'"),
                        Some(format!("@auth fields: {}", users.join(", "))),
                    );
                }
            }
            Reference::Body { field, span } => {
                if kind == RuleKind::Read {
                    report(
                        span.start,
                        "@body is only available in create and update rules".into(),
                        None,
                    );
                } else if resource.field(&field).is_none() {
                    let (message, hint) = unknown(resource, &field);
                    report(span.start, format!("@body.{field}: {message}"), Some(hint));
                }
            }
            Reference::Now { .. } => {}
        }
    }
}

fn unknown(resource: &Resource, name: &str) -> (String, String) {
    let mut names = vec!["id".to_owned()];
    names.extend(resource.fields.iter().map(|f| f.name.clone()));
    names.push("version".into());
    if resource.timestamps {
        names.push("created_at".into());
        names.push("updated_at".into());
    }
    (
        format!("unknown field '{name}' in {}", resource.name),
        format!("fields of {}: {}", resource.name, names.join(", ")),
    )
}
