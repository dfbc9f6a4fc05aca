//! `expand=`: related records loaded with one query per relation path and level (never
//! one per record), each subject to its own resource's view rule.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;

use ferrobase_schema::Resource;
use ferrobase_store::Record;
use serde_json::{Map, Value};

use ferrobase_access::{Action, Decision, Identity, decide};

use crate::{RecordError, RecordJson, Records};

/// Expansion paths as a tree: field name → what to expand below it.
#[derive(Debug, Default)]
pub struct Tree(BTreeMap<String, Tree>);

impl Tree {
    /// The tree of a list of paths.
    pub fn new(paths: &[Vec<String>]) -> Self {
        let mut root = Tree::default();
        for path in paths {
            let mut node = &mut root;
            for segment in path {
                node = node.0.entry(segment.clone()).or_default();
            }
        }
        root
    }

    /// Whether nothing is to be expanded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type Maps = Vec<Map<String, Value>>;

/// The `expand` object of each record, in the order of `records`.
pub(crate) fn expand<'a>(
    state: &'a Records,
    parent: &'a Resource,
    records: &'a [Record],
    tree: &'a Tree,
    identity: &'a Identity,
) -> Pin<Box<dyn Future<Output = Result<Maps, RecordError>> + Send + 'a>> {
    Box::pin(async move {
        let mut maps: Maps = vec![Map::new(); records.len()];
        for (name, below) in &tree.0 {
            let Some((index, field)) = parent
                .fields
                .iter()
                .enumerate()
                .find(|(_, f)| &f.name == name)
            else {
                continue;
            };
            let Some(relation) = field.relation() else {
                continue;
            };
            let (target_id, target) = state.resource(&relation.resource)?;
            let policy = state.policy(target_id);
            // Records the caller may not see are left out, never hinted at.
            let visible = match decide(
                policy,
                target,
                Action::View,
                identity,
                None,
                state.clock().now(),
            ) {
                Ok(Decision::None) | Err(_) => continue,
                Ok(access) => access.into_condition(),
            };
            let mut ids: Vec<String> = Vec::new();
            for record in records {
                match &record.values[index] {
                    Value::String(id) => ids.push(id.clone()),
                    Value::Array(list) => {
                        ids.extend(list.iter().filter_map(Value::as_str).map(str::to_owned))
                    }
                    _ => {}
                }
            }
            ids.sort();
            ids.dedup();
            let fetched = state
                .store()
                .records()
                .get_many(target_id, ids, visible)
                .await?;
            let nested = if below.is_empty() {
                vec![Map::new(); fetched.len()]
            } else {
                expand(state, target, &fetched, below, identity).await?
            };
            let mut by_id: HashMap<&str, Value> = HashMap::with_capacity(fetched.len());
            for (record, nested) in fetched.iter().zip(&nested) {
                let mask = state.readable(target_id, record, identity);
                let json = RecordJson {
                    expand: (!nested.is_empty()).then_some(nested),
                    readable: Some(&mask),
                    ..RecordJson::new(target, record)
                };
                let value = serde_json::to_value(&json).map_err(|e| {
                    RecordError::Store(ferrobase_store::StoreError::Internal(e.to_string()))
                })?;
                by_id.insert(record.id.as_str(), value);
            }
            for (record, map) in records.iter().zip(maps.iter_mut()) {
                let value = match &record.values[index] {
                    Value::String(id) => by_id.get(id.as_str()).cloned().unwrap_or(Value::Null),
                    Value::Array(list) => Value::Array(
                        list.iter()
                            .filter_map(|id| id.as_str().and_then(|id| by_id.get(id)).cloned())
                            .collect(),
                    ),
                    _ => Value::Null,
                };
                map.insert(name.clone(), value);
            }
        }
        Ok(maps)
    })
}
