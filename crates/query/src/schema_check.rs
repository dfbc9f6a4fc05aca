//! Checks every rule of a schema: it must parse, and every name it uses must exist.
//! Problems carry the `file:line:column` of the offending text in `schema.toml`.

use ferrobase_schema::{Diagnostic, Resource, Rule, Schema, SourceFile};

use crate::check::{Mode, check};
use crate::parse;

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
            check_rule(schema, resource, rule, kind, false, &what, src, &mut diags);
        }
        for field in &resource.fields {
            if let Some(rule) = &field.read {
                let what = format!("read rule of {}.{}", resource.name, field.name);
                check_rule(
                    schema,
                    resource,
                    rule,
                    RuleKind::Read,
                    true,
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
                    true,
                    &what,
                    src,
                    &mut diags,
                );
            }
        }
    }
    for hook in &schema.webhooks {
        let (Some(filter), Some(resource)) = (&hook.filter, schema.resource(&hook.resource)) else {
            continue;
        };
        let what = format!("filter of [webhooks.{}]", hook.name);
        let mut report = |offset: usize, message: String, hint: Option<String>| {
            let at = filter.file_offset(offset).map(|o| o..o);
            diags.push(src.diagnostic(at, format!("{what}: {message}"), hint));
        };
        match parse(&filter.source).map(|expr| check(&expr, schema, resource, Mode::Filter)) {
            Err(e) => report(e.offset, e.message, None),
            Ok(Err(e)) => report(e.offset, e.message, e.hint),
            Ok(Ok(cond)) if cond.follows_relations() => report(
                0,
                "a webhook filter judges the event's record alone: it may use the record's fields and @now, not relations".into(),
                None,
            ),
            Ok(Ok(_)) => {}
        }
    }
    diags
}

/// A webhook's filter, compiled for judging events in memory (`None` when it has none;
/// `check_rules` has refused the ones that do not compile).
pub fn webhook_filter(
    schema: &Schema,
    hook: &ferrobase_schema::webhooks::Webhook,
) -> Option<crate::check::Cond> {
    let filter = hook.filter.as_ref()?;
    let resource = schema.resource(&hook.resource)?;
    let expr = parse(&filter.source).ok()?;
    check(&expr, schema, resource, Mode::Filter).ok()
}

#[expect(clippy::too_many_arguments, reason = "one call site per kind of rule")]
fn check_rule(
    schema: &Schema,
    resource: &Resource,
    rule: &Rule,
    kind: RuleKind,
    field_rule: bool,
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
    let mode = Mode::Rule {
        body: kind == RuleKind::Write,
    };
    match check(&expr, schema, resource, mode) {
        Err(e) => report(e.offset, e.message, e.hint),
        Ok(cond) if field_rule && cond.follows_relations() => report(
            0,
            "field rules may use the record's own fields, @auth, @body and @now, not relations"
                .into(),
            None,
        ),
        Ok(_) => {}
    }
}
