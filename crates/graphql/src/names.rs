//! GraphQL names from `schema.toml` names (SPEC §10): a resource's type is its name
//! singular in PascalCase unless `graphql_name` says otherwise; fields keep their names.

use ferrobase_schema::{Resource, Schema};

/// `categories` → `category`, `boxes` → `box`, `posts` → `post` (a rule of thumb:
/// `graphql_name` names what it gets wrong).
pub fn singular(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let cut = |n: usize| name[..name.len() - n].to_owned();
    if lower.ends_with("ies") && name.len() > 3 {
        format!("{}y", cut(3))
    } else if ["sses", "shes", "ches", "xes", "zes"]
        .iter()
        .any(|end| lower.ends_with(end))
    {
        cut(2)
    } else if lower.ends_with('s') && !lower.ends_with("ss") && !lower.ends_with("us") {
        cut(1)
    } else {
        name.to_owned()
    }
}

/// `blog_posts` → `BlogPosts`.
pub fn pascal(name: &str) -> String {
    name.split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// `blog_posts` → `blogPosts`.
pub fn camel(name: &str) -> String {
    let p = pascal(name);
    let mut chars = p.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_ascii_lowercase().to_string() + chars.as_str()
    })
}

/// The names one resource is served under.
#[derive(Debug, Clone)]
pub struct Names {
    /// The object type: `Post`.
    pub ty: String,
    /// The single read: `post`.
    pub one: String,
    /// The list: `posts` (the resource's name in camelCase).
    pub many: String,
    /// `PostConnection`, `PostEdge`, `PostCreateInput`, `PostUpdateInput`, `PostEvent`.
    pub connection: String,
    /// See [`Names::connection`].
    pub edge: String,
    /// See [`Names::connection`].
    pub create_input: String,
    /// See [`Names::connection`].
    pub update_input: String,
    /// See [`Names::connection`].
    pub event: String,
    /// `createPost`, `updatePost`, `deletePost`, `postEvents`.
    pub create: String,
    /// See [`Names::create`].
    pub update: String,
    /// See [`Names::create`].
    pub delete: String,
    /// See [`Names::create`].
    pub events: String,
}

impl Names {
    /// The names of `resource`.
    pub fn of(resource: &Resource) -> Self {
        let ty = resource
            .graphql_name
            .clone()
            .unwrap_or_else(|| pascal(&singular(&resource.name)));
        let many = camel(&resource.name);
        let mut one = camel(&ty);
        if one == many {
            // `news`, `series`: the single read needs a name of its own.
            one = format!("{one}ById");
        }
        Names {
            connection: format!("{ty}Connection"),
            edge: format!("{ty}Edge"),
            create_input: format!("{ty}CreateInput"),
            update_input: format!("{ty}UpdateInput"),
            event: format!("{ty}Event"),
            create: format!("create{ty}"),
            update: format!("update{ty}"),
            delete: format!("delete{ty}"),
            events: format!("{one}Events"),
            ty,
            one,
            many,
        }
    }
}

/// The reverse of a single relation, as a connection on its target's type: the
/// referring resource's name, or `<resource>_by_<field>` when two relations of that
/// resource point at the same target.
#[derive(Debug, Clone)]
pub struct Reverse {
    /// The field's name on the target type.
    pub name: String,
    /// The referring resource (index in the schema).
    pub resource: usize,
    /// The relation field of the referring resource.
    pub field: String,
}

/// Every reverse connection of `target`, in schema order.
pub fn reverses(schema: &Schema, target: &Resource) -> Vec<Reverse> {
    let mut out = Vec::new();
    for (index, resource) in schema.resources.iter().enumerate() {
        let pointing: Vec<&str> = resource
            .fields
            .iter()
            // As REST's filters and `expand`: a relation whose values some callers may
            // not read cannot be followed backwards either (it would tell them).
            .filter(|f| {
                !f.hidden
                    && f.read.as_ref().is_none_or(|r| r.is_public())
                    && f.relation()
                        .is_some_and(|r| !r.many && r.resource == target.name)
            })
            .map(|f| f.name.as_str())
            .collect();
        for field in &pointing {
            let name = if pointing.len() == 1 {
                resource.name.clone()
            } else {
                format!("{}_by_{field}", resource.name)
            };
            // A declared field of the target keeps its name; the reverse steps aside.
            let name = if target.field(&name).is_some() || target.is_system_column(&name) {
                format!("{}_by_{field}", resource.name)
            } else {
                name
            };
            out.push(Reverse {
                name,
                resource: index,
                field: (*field).to_owned(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singular_forms() {
        for (plural, one) in [
            ("posts", "post"),
            ("categories", "category"),
            ("boxes", "box"),
            ("addresses", "address"),
            ("status", "status"),
            ("users", "user"),
            ("churches", "church"),
            ("blog_posts", "blog_post"),
        ] {
            assert_eq!(singular(plural), one, "{plural}");
        }
    }

    #[test]
    fn cases() {
        assert_eq!(pascal("blog_post"), "BlogPost");
        assert_eq!(camel("blog_posts"), "blogPosts");
        assert_eq!(pascal("post"), "Post");
    }
}
