//! What a document may cost, judged before it runs, in time linear in its text.
//!
//! The schema engine's own depth and complexity checks walk every fragment spread where
//! it is used, so a few hundred bytes of fragments that spread each other twice make it
//! walk millions of fields before it refuses. Here every fragment is sized once
//! (memoized), and three costs are bounded: fields selected (spreads expanded), records a
//! page size can load (connection sizes multiplied down the nesting), and statements
//! (each connection, relation, single read or count may take one per level).

use std::collections::{HashMap, HashSet};

use async_graphql::Name;
use async_graphql::parser::types::{
    ExecutableDocument, Field, FragmentDefinition, Selection, SelectionSet,
};

/// Page size assumed for a connection whose `first` is a variable (the largest allowed).
const VARIABLE_PAGE: u64 = 100;
/// Page size of a connection without `first`.
const DEFAULT_PAGE: u64 = 20;
/// Links assumed per record of a many relation.
const MANY_LINKS: u64 = 20;

/// The names whose fields load records, from the generated schema.
#[derive(Debug, Clone, Default)]
pub(crate) struct Loaders {
    /// Connection fields (`posts`, `User.posts`).
    pub connections: HashSet<String>,
    /// Single relation fields (`author`) and single reads (`post`).
    pub singles: HashSet<String>,
    /// Many relation fields (`tags`).
    pub many: HashSet<String>,
}

/// The limits a document is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub fields: u64,
    pub records: u64,
    pub statements: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    fields: u64,
    records: u64,
    statements: u64,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.fields = self.fields.saturating_add(other.fields);
        self.records = self.records.saturating_add(other.records);
        self.statements = self.statements.saturating_add(other.statements);
    }
}

struct Walk<'a> {
    loaders: &'a Loaders,
    fragments: &'a HashMap<Name, async_graphql::Positioned<FragmentDefinition>>,
    sized: HashMap<&'a str, Cost>,
    open: HashSet<&'a str>,
}

fn page_size(field: &Field) -> u64 {
    match field
        .arguments
        .iter()
        .find(|(name, _)| name.node.as_str() == "first")
        .map(|(_, value)| &value.node)
    {
        None => DEFAULT_PAGE,
        Some(async_graphql_value::Value::Number(n)) => n.as_u64().unwrap_or(VARIABLE_PAGE),
        Some(_) => VARIABLE_PAGE,
    }
}

fn asks_count(field: &Field) -> bool {
    field.arguments.iter().any(|(name, value)| {
        name.node.as_str() == "count"
            && !matches!(value.node, async_graphql_value::Value::Boolean(false))
    })
}

impl<'a> Walk<'a> {
    fn set(&mut self, set: &'a SelectionSet) -> Result<Cost, String> {
        let mut total = Cost::default();
        for selection in &set.items {
            let cost = match &selection.node {
                Selection::Field(field) => self.field(&field.node)?,
                Selection::InlineFragment(fragment) => {
                    self.set(&fragment.node.selection_set.node)?
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    self.fragment(name)?
                }
            };
            total.add(cost);
        }
        Ok(total)
    }

    fn fragment(&mut self, name: &'a str) -> Result<Cost, String> {
        if let Some(cost) = self.sized.get(name) {
            return Ok(*cost);
        }
        let Some((key, fragment)) = self.fragments.get_key_value(name) else {
            // Unknown fragments are the engine's to report.
            return Ok(Cost::default());
        };
        if !self.open.insert(key.as_str()) {
            return Err(format!("fragment {name} spreads itself"));
        }
        let cost = self.set(&fragment.node.selection_set.node)?;
        self.open.remove(key.as_str());
        self.sized.insert(key.as_str(), cost);
        Ok(cost)
    }

    fn field(&mut self, field: &'a Field) -> Result<Cost, String> {
        let inner = self.set(&field.selection_set.node)?;
        let name = field.name.node.as_str();
        let per_record = if self.loaders.connections.contains(name) {
            Some(page_size(field))
        } else if self.loaders.many.contains(name) {
            Some(MANY_LINKS)
        } else if self.loaders.singles.contains(name) {
            Some(1)
        } else {
            None
        };
        let mut cost = Cost {
            fields: inner.fields.saturating_add(1),
            records: inner.records,
            statements: inner.statements,
        };
        if let Some(n) = per_record {
            // This field loads up to `n` records for each record above it, and each of
            // them has what is selected below.
            cost.records = n.saturating_add(n.saturating_mul(inner.records));
            cost.statements = inner
                .statements
                .saturating_add(1 + u64::from(asks_count(field)));
        }
        Ok(cost)
    }
}

/// Refuses a document that would cost more than `limits` (every operation is judged:
/// the one that runs is among them).
pub(crate) fn admit(
    document: &ExecutableDocument,
    loaders: &Loaders,
    limits: Limits,
) -> Result<(), String> {
    let mut walk = Walk {
        loaders,
        fragments: &document.fragments,
        sized: HashMap::new(),
        open: HashSet::new(),
    };
    for (_, operation) in document.operations.iter() {
        let cost = walk.set(&operation.node.selection_set.node)?;
        if cost.fields > limits.fields {
            return Err(format!(
                "the operation selects {} fields (fragments expanded); at most {} are allowed",
                cost.fields, limits.fields
            ));
        }
        if cost.records > limits.records {
            return Err(format!(
                "the operation may load {} records (page sizes multiplied through the nesting); at most {} are allowed: ask for smaller pages or fewer nested connections",
                cost.records, limits.records
            ));
        }
        if cost.statements > limits.statements {
            return Err(format!(
                "the operation needs {} queries (one per connection, relation, single read and count); at most {} are allowed",
                cost.statements, limits.statements
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaders() -> Loaders {
        Loaders {
            connections: ["posts".to_owned()].into(),
            singles: ["author".to_owned(), "post".to_owned()].into(),
            many: ["tags".to_owned()].into(),
        }
    }

    const LIMITS: Limits = Limits {
        fields: 1000,
        records: 10_000,
        statements: 50,
    };

    fn check(query: &str) -> Result<(), String> {
        let doc = async_graphql::parser::parse_query(query).expect("parses");
        admit(&doc, &loaders(), LIMITS)
    }

    #[test]
    fn fragments_that_double_are_sized_once() {
        let mut query = String::from("query { ...F0 }\n");
        for i in 0..40 {
            query.push_str(&format!(
                "fragment F{i} on Query {{ ...F{n} ...F{n} }}\n",
                n = i + 1
            ));
        }
        query.push_str("fragment F40 on Query { __typename }\n");
        let err = check(&query).expect_err("2^40 fields");
        assert!(err.contains("fields"), "{err}");
        assert!(check("query { ...A } fragment A on Query { ...A }").is_err());
    }

    #[test]
    fn page_sizes_multiply_down_the_nesting() {
        check("{ posts(first: 100) { nodes { author { id } } } }").expect("200 records");
        let err = check(
            "{ posts(first: 100) { nodes { author { posts(first: 100) { nodes { id } } } } } }",
        )
        .expect_err("100 × 100");
        assert!(err.contains("records"), "{err}");
        check("query($n: Int) { posts(first: $n) { nodes { tags { id } } } }")
            .expect("100 + 2000 records");
    }

    #[test]
    fn statements_are_counted_per_field_not_per_record() {
        let many: String = (0..30)
            .map(|i| format!("a{i}: posts(first: 1, count: true) {{ totalCount }} "))
            .collect();
        let err = check(&format!("{{ {many} }}")).expect_err("60 statements");
        assert!(err.contains("queries"), "{err}");
        check("{ posts { nodes { author { posts { nodes { author { id } } } } } } }")
            .expect("four statements");
    }
}
