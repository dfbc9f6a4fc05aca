//! Logic both stores share, so that they cannot drift apart.

use ferrobase_schema::{Index, Resource};
use serde_json::Value;

use crate::{Change, Record};

/// Name of the join table holding a many relation's links. Names cannot contain `__`,
/// so `<resource>__<field>` (one `__`) never collides with another table, and index names
/// (`ix__`/`fk__`/`jt__` prefixes, two `__`) never collide with a table or each other.
pub(crate) fn join_table(resource: &str, field: &str) -> String {
    format!("{resource}__{field}")
}

/// The column list of a declared index, quoted. Lists break ties on `id` in the direction
/// of the last sort key; carrying `id` in the index lets one index scan serve the whole
/// ORDER BY (no temporary sort). Unique indexes keep their exact columns: adding `id`
/// would void the uniqueness.
pub(crate) fn index_columns(index: &Index, quote: fn(&str) -> String) -> Vec<String> {
    let desc = |d: bool| if d { " DESC" } else { "" };
    let mut cols: Vec<String> = index
        .columns
        .iter()
        .map(|c| format!("{}{}", quote(&c.name), desc(c.descending)))
        .collect();
    if !index.unique && !index.columns.iter().any(|c| c.name == "id") {
        let descending = index.columns.last().is_some_and(|c| c.descending);
        cols.push(format!("{}{}", quote("id"), desc(descending)));
    }
    cols
}

/// Applies the changes of an update to `record` in memory and returns the indexes of the
/// fields they touched.
pub(crate) fn apply_changes(
    resource: &Resource,
    record: &mut Record,
    changes: Vec<(usize, Change)>,
) -> Vec<usize> {
    let mut changed = Vec::with_capacity(changes.len());
    for (i, change) in changes {
        let field = &resource.fields[i];
        record.values[i] = match change {
            Change::Set(v) => v,
            Change::Clear if field.is_many() => Value::Array(Vec::new()),
            Change::Clear => Value::Null,
            Change::MergeJson(patch) => merge_patch(std::mem::take(&mut record.values[i]), patch),
        };
        changed.push(i);
    }
    changed
}

/// What a stored idempotency key means for a new request with the same key and
/// `request_hash`; the row is `(request hash, abandoned?, status, headers, body)`.
pub(crate) fn judge_claim(
    request_hash: &str,
    (stored_hash, abandoned, status, headers, body): (
        String,
        bool,
        Option<u16>,
        Option<String>,
        Option<Vec<u8>>,
    ),
) -> crate::Claim {
    use crate::Claim;
    // A different request never gets another request's answer, finished or not.
    if stored_hash != request_hash {
        return Claim::Mismatch;
    }
    match status {
        Some(status) => Claim::Done(crate::StoredResponse {
            status,
            headers: headers.unwrap_or_else(|| "[]".into()),
            body: body.unwrap_or_default(),
        }),
        None if abandoned => Claim::Fresh,
        None => Claim::InFlight,
    }
}

/// The column names a resource's table has, in order.
pub(crate) fn expected_columns(resource: &Resource) -> Vec<String> {
    column_names(resource).map(str::to_owned).collect()
}

/// [`expected_columns`] without allocating them.
pub(crate) fn column_names(resource: &Resource) -> impl Iterator<Item = &str> {
    let timestamps: &[&str] = if resource.timestamps {
        &["created_at", "updated_at"]
    } else {
        &[]
    };
    ["id", "version"]
        .into_iter()
        .chain(timestamps.iter().copied())
        .chain(
            resource
                .fields
                .iter()
                .filter(|f| !f.is_many())
                .map(|f| f.name.as_str()),
        )
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: Value, patch: Value) -> Value {
    match patch {
        Value::Object(patch) => {
            let mut target = match target {
                Value::Object(map) => map,
                _ => serde_json::Map::new(),
            };
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(&key);
                } else {
                    let current = target.remove(&key).unwrap_or(Value::Null);
                    target.insert(key, merge_patch(current, value));
                }
            }
            Value::Object(target)
        }
        other => other,
    }
}

/// The statement judging conditions against one record held in memory (an event's
/// record, which may no longer be stored): the record becomes a one-row derived table
/// named like the resource, so conditions compiled for the resource's table, with their
/// joins to related tables, apply to it unchanged. One boolean column per condition.
pub(crate) fn judge_statement(
    resource: &Resource,
    record: &Record,
    conds: Vec<sea_query::Expr>,
    encode: impl Fn(&ferrobase_schema::FieldType, &Value) -> sea_query::Expr,
) -> sea_query::SelectStatement {
    use ferrobase_schema::FieldType;
    use sea_query::{Alias, ExprTrait, Query};
    let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
    let mut row = Query::select();
    row.expr_as(
        encode(&FieldType::Uuid, &Value::String(record.id.clone())),
        Alias::new("id"),
    )
    .expr_as(
        encode(&FieldType::Integer, &Value::from(record.version)),
        Alias::new("version"),
    );
    if resource.timestamps {
        row.expr_as(
            encode(&FieldType::Datetime, &text(&record.created_at)),
            Alias::new("created_at"),
        )
        .expr_as(
            encode(&FieldType::Datetime, &text(&record.updated_at)),
            Alias::new("updated_at"),
        );
    }
    for (field, value) in resource.fields.iter().zip(&record.values) {
        if field.is_many() {
            continue;
        }
        if field.hidden {
            // Events never carry hidden fields: a rule that reads one gets the stored
            // value (NULL once the record is gone, which no rule can mistake for a match
            // it would not make on the stored record: comparisons with NULL are false).
            let mut stored = Query::select();
            stored
                .column((Alias::new("_stored"), Alias::new(field.name.as_str())))
                .from_as(Alias::new(resource.name.as_str()), Alias::new("_stored"))
                .and_where(
                    sea_query::Expr::col((Alias::new("_stored"), Alias::new("id")))
                        .eq(encode(&FieldType::Uuid, &Value::String(record.id.clone()))),
                );
            row.expr_as(
                sea_query::Expr::SubQuery(None, Box::new(stored.into())),
                Alias::new(field.name.as_str()),
            );
            continue;
        }
        row.expr_as(encode(&field.ty, value), Alias::new(field.name.as_str()));
    }
    let mut stmt = Query::select();
    for cond in conds {
        stmt.expr(cond);
    }
    stmt.from_subquery(row, Alias::new(resource.name.as_str()));
    stmt
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        let patch = json!({"a": "z", "c": {"f": null}});
        assert_eq!(
            merge_patch(target, patch),
            json!({"a": "z", "c": {"d": "e"}})
        );
        assert_eq!(merge_patch(json!([1]), json!({"a": 1})), json!({"a": 1}));
        assert_eq!(merge_patch(json!({"a": 1}), json!([2])), json!([2]));
    }
}
