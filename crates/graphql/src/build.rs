//! The schema: types, queries and mutations from the resources of `schema.toml`.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, ResolverContext, Scalar,
    Schema, SchemaBuilder, Subscription, TypeRef,
};
use async_graphql::{Error, Value as GqlValue};
use ferrobase_records::{ListParams, params};
use ferrobase_schema::{Field as SchemaField, FieldType, Resource};
use ferrobase_store::ResourceId;
use serde_json::{Map, Value};

use crate::load::{
    self, Conn, Edge, Loaded, Node, Page, call, charge, coded, list_error, nullable, record_error,
    services,
};
use crate::names::{Names, Reverse, reverses};
use crate::{Options, Services};

const DATETIME: &str = "DateTime";
const DATE: &str = "Date";
const JSON: &str = "JSON";
const PAGE_INFO: &str = "PageInfo";
pub(crate) const EVENT_OP: &str = "RecordEventOp";

/// Names the generated schema uses for itself; a resource's type may not take one.
const TAKEN: &[&str] = &[
    "Query",
    "Mutation",
    "Subscription",
    PAGE_INFO,
    DATETIME,
    DATE,
    JSON,
    EVENT_OP,
    "Int",
    "Float",
    "String",
    "Boolean",
    "ID",
];

/// How a field's values look in GraphQL.
fn scalar_type(resource: &Resource, field: &SchemaField) -> String {
    match &field.ty {
        FieldType::Integer => TypeRef::INT.to_owned(),
        FieldType::Number => TypeRef::FLOAT.to_owned(),
        FieldType::Boolean => TypeRef::BOOLEAN.to_owned(),
        FieldType::Datetime => DATETIME.to_owned(),
        FieldType::Date => DATE.to_owned(),
        FieldType::Json => JSON.to_owned(),
        FieldType::Uuid => TypeRef::ID.to_owned(),
        FieldType::Relation(_) => TypeRef::ID.to_owned(),
        FieldType::Enum(values) if enum_values_fit(values) => enum_name(resource, field),
        _ => TypeRef::STRING.to_owned(),
    }
}

/// Whether every value of an enum can be a GraphQL enum value.
fn enum_values_fit(values: &[String]) -> bool {
    values.iter().all(|v| {
        let mut chars = v.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !matches!(v.as_str(), "true" | "false" | "null")
    })
}

fn enum_name(resource: &Resource, field: &SchemaField) -> String {
    format!(
        "{}{}",
        Names::of(resource).ty,
        crate::names::pascal(&field.name)
    )
}

/// The value of a field of a record, for GraphQL.
fn gql(value: &Value) -> Option<GqlValue> {
    match value {
        Value::Null => None,
        Value::Bool(b) => Some(GqlValue::Boolean(*b)),
        Value::String(s) => Some(GqlValue::String(s.clone())),
        Value::Number(n) => Some(GqlValue::Number(n.clone())),
        other => GqlValue::from_json(other.clone()).ok(),
    }
}

fn non_null_if(ty: String, non_null: bool) -> TypeRef {
    if non_null {
        TypeRef::named_nn(ty)
    } else {
        TypeRef::named(ty)
    }
}

/// The list arguments of a connection.
fn list_arguments(field: Field, count: bool) -> Field {
    let field = field
        .argument(
            InputValue::new("filter", TypeRef::named(TypeRef::STRING))
                .description("a filter in the expression language, as REST's `filter`"),
        )
        .argument(
            InputValue::new("sort", TypeRef::named(TypeRef::STRING))
                .description("as REST's `sort`: `-created_at,title`"),
        )
        .argument(
            InputValue::new("first", TypeRef::named(TypeRef::INT))
                .description("page size, 1 to 100 (default 20)"),
        )
        .argument(
            InputValue::new("after", TypeRef::named(TypeRef::STRING))
                .description("a cursor: the page after this edge"),
        );
    if count {
        field.argument(
            InputValue::new("count", TypeRef::named(TypeRef::BOOLEAN))
                .description("whether `totalCount` is wanted (one more query)"),
        )
    } else {
        field
    }
}

/// A connection's arguments as REST list parameters, checked exactly as REST checks
/// them (errors name the GraphQL arguments).
fn list_params(
    services: &Services,
    resource: &Resource,
    ctx: &ResolverContext<'_>,
) -> Result<ListParams, Error> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (arg, param) in [("filter", "filter"), ("sort", "sort"), ("after", "cursor")] {
        if let Some(v) = ctx.args.get(arg)
            && !v.is_null()
        {
            query.append_pair(param, v.string()?);
        }
    }
    if let Some(v) = ctx.args.get("first")
        && !v.is_null()
    {
        query.append_pair("limit", &v.i64()?.to_string());
    }
    if let Some(v) = ctx.args.get("count")
        && !v.is_null()
    {
        query.append_pair("count", if v.boolean()? { "true" } else { "false" });
    }
    let query = query.finish();
    params::parse(
        services.records.schema(),
        resource,
        (!query.is_empty()).then_some(query.as_str()),
    )
    .map_err(|e| list_error(services, e))
}

/// Everything the resolvers of one resource need.
struct Res {
    id: ResourceId,
    names: Names,
}

fn input_value(value: &GqlValue) -> Value {
    value.clone().into_json().unwrap_or(Value::Null)
}

/// The body of a create or update: the input object as REST's JSON body.
fn body(ctx: &ResolverContext<'_>) -> Result<Map<String, Value>, Error> {
    let input = ctx.args.try_get("input")?.object()?;
    Ok(input
        .iter()
        .map(|(k, v)| (k.to_string(), input_value(v.as_value())))
        .collect())
}

fn if_match(ctx: &ResolverContext<'_>) -> Result<Option<Vec<i64>>, Error> {
    match ctx.args.get("ifMatch") {
        Some(v) if !v.is_null() => Ok(Some(vec![v.i64()?])),
        _ => Ok(None),
    }
}

fn id_arg(ctx: &ResolverContext<'_>) -> Result<String, Error> {
    let v = ctx.args.try_get("id")?;
    match v.as_value() {
        GqlValue::String(s) => Ok(s.clone()),
        GqlValue::Number(n) => Ok(n.to_string()),
        _ => Err(coded("BAD_REQUEST", "id must be an ID")),
    }
}

/// The single relations of `resource` selected on the records at the end of one of
/// `paths` below this field (look-ahead), with their targets: read them in the same
/// statement as the records.
fn selected_relations(
    ctx: &ResolverContext<'_>,
    schema: &ferrobase_schema::Schema,
    resource: &Resource,
    paths: &[&[&str]],
) -> Vec<(usize, String, ResourceId)> {
    resource
        .fields
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.hidden)
        .filter_map(|(i, f)| {
            let rel = f.relation().filter(|r| !r.many)?;
            let target = schema
                .resources
                .iter()
                .position(|r| r.name == rel.resource)?;
            let selected = paths.iter().any(|path| {
                let mut at = ctx.look_ahead();
                for step in *path {
                    at = at.field(step);
                }
                at.field(&f.name).exists()
            });
            selected.then(|| (i, f.name.clone(), ResourceId(target)))
        })
        .collect()
}

/// Joins for the `selected` relations the caller may see targets of, and the subset
/// they serve.
fn joins_for(
    services: &Services,
    call: &crate::Call,
    res: ResourceId,
    selected: Vec<(usize, String, ResourceId)>,
) -> (Vec<ferrobase_store::Join>, Vec<(usize, String, ResourceId)>) {
    let fields: Vec<usize> = selected.iter().map(|(i, _, _)| *i).collect();
    let (joins, served) = services.records.joins(&call.identity, res, &fields);
    let joined = selected
        .into_iter()
        .filter(|(i, _, _)| served.contains(i))
        .collect();
    (joins, joined)
}

/// A node of a freshly loaded single record.
async fn one_node(
    services: &Services,
    ctx: &ResolverContext<'_>,
    res: ResourceId,
    record: ferrobase_store::Record,
) -> Result<Option<FieldValue<'static>>, Error> {
    let call = call(ctx)?;
    let page = Page::new(&services.records, res, vec![record], call);
    Ok(Some(FieldValue::owned_any(Node { page, index: 0 })))
}

fn connection_value(conn: Conn) -> FieldValue<'static> {
    FieldValue::owned_any(Arc::new(conn))
}

/// The object type of a resource, its connection and edge types, and its inputs.
fn resource_types(
    builder: SchemaBuilder,
    schema: &ferrobase_schema::Schema,
    index: usize,
    all: &[Names],
    max_records: usize,
) -> SchemaBuilder {
    let resource = &schema.resources[index];
    let names = &all[index];
    let mut builder = builder;
    let mut object = Object::new(&names.ty).description(format!("A {} record.", resource.name));
    object = object.field(Field::new("id", TypeRef::named_nn(TypeRef::ID), |ctx| {
        FieldFuture::from_value(
            ctx.parent_value
                .downcast_ref::<Node>()
                .map(|n| GqlValue::String(n.record().id.clone())),
        )
    }));
    for (index, field) in resource
        .fields
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.hidden)
    {
        if let FieldType::Enum(values) = &field.ty
            && enum_values_fit(values)
        {
            builder = builder.register(
                values
                    .iter()
                    .fold(Enum::new(enum_name(resource, field)), |e, v| {
                        e.item(v.as_str())
                    }),
            );
        }
        let name = field.name.clone();
        object = match field.relation() {
            Some(rel) => {
                let Some(target) = schema.resources.iter().position(|r| r.name == rel.resource)
                else {
                    continue;
                };
                let target_ty = all[target].ty.clone();
                let many = rel.many;
                let ty = if many {
                    TypeRef::named_nn_list_nn(target_ty)
                } else {
                    TypeRef::named(target_ty)
                };
                object.field(Field::new(field.name.clone(), ty, move |ctx| {
                    let name = name.clone();
                    FieldFuture::new(async move {
                        let node = ctx.parent_value.try_downcast_ref::<Node>()?;
                        let services = services(&ctx)?;
                        let call = call(&ctx)?;
                        let loaded = match load::targets(
                            services,
                            call,
                            max_records,
                            node,
                            (index, &name),
                            ResourceId(target),
                        )
                        .await
                        {
                            Ok(loaded) => loaded,
                            // A single relation answers null with the error; a many
                            // relation (a non-null list) fails its parent.
                            Err(e) if !many => return nullable(&ctx, Err(e)),
                            Err(e) => return Err(e),
                        };
                        let Loaded::Targets { page, by_id } = &*loaded else {
                            return Ok(None);
                        };
                        let at = |id: &str| {
                            by_id.get(id).map(|&index| {
                                FieldValue::owned_any(Node {
                                    page: page.clone(),
                                    index,
                                })
                            })
                        };
                        Ok(match node.value(index, &name) {
                            Some(Value::String(id)) => at(id),
                            Some(Value::Array(ids)) => Some(FieldValue::list(
                                ids.iter().filter_map(Value::as_str).filter_map(at),
                            )),
                            _ if many => Some(FieldValue::list(Vec::<FieldValue>::new())),
                            _ => None,
                        })
                    })
                }))
            }
            None => {
                let ty = non_null_if(
                    scalar_type(resource, field),
                    field.required && field.read.is_none(),
                );
                let mut f = Field::new(field.name.clone(), ty, move |ctx| {
                    FieldFuture::from_value(
                        ctx.parent_value
                            .downcast_ref::<Node>()
                            .and_then(|n| n.value(index, &name))
                            .and_then(gql),
                    )
                });
                if field.read.is_some() {
                    f = f.description(
                        "null when the field's read rule does not let the caller read it",
                    );
                }
                object.field(f)
            }
        };
    }
    object = object.field(Field::new(
        "version",
        TypeRef::named_nn(TypeRef::INT),
        |ctx| {
            FieldFuture::from_value(
                ctx.parent_value
                    .downcast_ref::<Node>()
                    .map(|n| GqlValue::from(n.record().version)),
            )
        },
    ));
    if resource.timestamps {
        for (name, updated) in [("created_at", false), ("updated_at", true)] {
            object = object.field(Field::new(name, TypeRef::named_nn(DATETIME), move |ctx| {
                FieldFuture::from_value(
                    ctx.parent_value
                        .downcast_ref::<Node>()
                        .and_then(|n| n.timestamp(updated))
                        .map(|t| GqlValue::String(t.to_owned())),
                )
            }));
        }
    }
    for reverse in reverses(schema, resource) {
        object = object.field(reverse_field(schema, &reverse, all, max_records));
    }
    builder = builder.register(object);
    builder = builder.register(connection_types(names));
    builder = builder.register(edge_type(names));
    let (create, update) = input_types(resource, names);
    builder.register(create).register(update)
}

/// `User.posts`: the records of another resource that point at this one.
fn reverse_field(
    schema: &ferrobase_schema::Schema,
    reverse: &Reverse,
    all: &[Names],
    max_records: usize,
) -> Field {
    let referring = reverse.resource;
    let relation = reverse.field.clone();
    let key_base = reverse.name.clone();
    let description = format!(
        "{} records whose {} is this record",
        schema.resources[referring].name, reverse.field
    );
    let field = Field::new(
        reverse.name.clone(),
        TypeRef::named_nn(all[referring].connection.clone()),
        move |ctx| {
            let relation = relation.clone();
            let key_base = key_base.clone();
            FieldFuture::new(async move {
                let node = ctx.parent_value.try_downcast_ref::<Node>()?;
                let services = services(&ctx)?;
                let call = call(&ctx)?;
                let res = ResourceId(referring);
                let params = list_params(services, services.records.resource_at(res), &ctx)?;
                // The arguments are part of the key: aliases with other arguments load
                // on their own.
                let key = format!(
                    "{key_base}\u{0}{:?}\u{0}{}\u{0}{}\u{0}{:?}\u{0}{}",
                    ctx.args.get("filter").map(|v| v.as_value().to_string()),
                    params.sort,
                    params.limit,
                    params.cursor,
                    params.count
                );
                let loaded = load::referring(
                    services,
                    call,
                    max_records,
                    node,
                    load::Referring {
                        key,
                        resource: res,
                        field: relation,
                        params,
                    },
                )
                .await?;
                let Loaded::Referring {
                    page,
                    params,
                    by_parent,
                    totals,
                } = &*loaded
                else {
                    return Ok(None);
                };
                let (indices, has_more) = by_parent
                    .get(&node.record().id)
                    .cloned()
                    .unwrap_or_default();
                Ok(Some(connection_value(Conn {
                    page: page.clone(),
                    indices,
                    has_more,
                    params: params.clone(),
                    total: totals
                        .as_ref()
                        .map(|t| t.get(&node.record().id).copied().unwrap_or(0)),
                })))
            })
        },
    )
    .description(description);
    list_arguments(field, true)
}

fn connection_types(names: &Names) -> Object {
    let conn = |ctx: &ResolverContext<'_>| ctx.parent_value.downcast_ref::<Arc<Conn>>().cloned();
    Object::new(&names.connection)
        .description("A page of records (Relay connection).")
        .field(Field::new(
            "edges",
            TypeRef::named_nn_list_nn(names.edge.clone()),
            move |ctx| {
                FieldFuture::from_value(None).or_else_list(conn(&ctx).map(|c| {
                    (0..c.indices.len())
                        .map(|at| {
                            FieldValue::owned_any(Edge {
                                conn: c.clone(),
                                at,
                            })
                        })
                        .collect()
                }))
            },
        ))
        .field(Field::new(
            "nodes",
            TypeRef::named_nn_list_nn(names.ty.clone()),
            move |ctx| {
                FieldFuture::from_value(None).or_else_list(conn(&ctx).map(|c| {
                    c.indices
                        .iter()
                        .map(|&index| {
                            FieldValue::owned_any(Node {
                                page: c.page.clone(),
                                index,
                            })
                        })
                        .collect()
                }))
            },
        ))
        .field(Field::new(
            "pageInfo",
            TypeRef::named_nn(PAGE_INFO),
            move |ctx| FieldFuture::from_value(None).or_else_any(conn(&ctx)),
        ))
        .field(
            Field::new("totalCount", TypeRef::named(TypeRef::INT), move |ctx| {
                FieldFuture::from_value(conn(&ctx).and_then(|c| c.total).map(GqlValue::from))
            })
            .description(
                "the number of records matching the filter, when `count: true` asked for it",
            ),
        )
}

/// Small helpers to answer a field from an optional owned value.
trait OrElse<'a> {
    fn or_else_list(self, items: Option<Vec<FieldValue<'a>>>) -> FieldFuture<'a>;
    fn or_else_any<T: std::any::Any + Send + Sync>(self, value: Option<T>) -> FieldFuture<'a>;
}

impl<'a> OrElse<'a> for FieldFuture<'a> {
    fn or_else_list(self, items: Option<Vec<FieldValue<'a>>>) -> FieldFuture<'a> {
        match items {
            Some(items) => FieldFuture::Value(Some(FieldValue::list(items))),
            None => self,
        }
    }

    fn or_else_any<T: std::any::Any + Send + Sync>(self, value: Option<T>) -> FieldFuture<'a> {
        match value {
            Some(value) => FieldFuture::Value(Some(FieldValue::owned_any(value))),
            None => self,
        }
    }
}

fn edge_type(names: &Names) -> Object {
    Object::new(&names.edge)
        .field(Field::new(
            "cursor",
            TypeRef::named_nn(TypeRef::STRING),
            |ctx| {
                FieldFuture::new(async move {
                    let edge = ctx.parent_value.try_downcast_ref::<Edge>()?;
                    let services = services(&ctx)?;
                    let node = edge.node();
                    Ok(Some(GqlValue::String(services.records.cursor_after(
                        node.page.res,
                        &edge.conn.params,
                        node.record(),
                    ))))
                })
            },
        ))
        .field(Field::new(
            "node",
            TypeRef::named_nn(names.ty.clone()),
            |ctx| {
                FieldFuture::from_value(None)
                    .or_else_any(ctx.parent_value.downcast_ref::<Edge>().map(Edge::node))
            },
        ))
}

fn page_info() -> Object {
    let conn = |ctx: &ResolverContext<'_>| ctx.parent_value.downcast_ref::<Arc<Conn>>().cloned();
    fn cursor(ctx: ResolverContext<'_>, last: bool) -> FieldFuture<'_> {
        FieldFuture::new(async move {
            let c = ctx.parent_value.try_downcast_ref::<Arc<Conn>>()?;
            let services = services(&ctx)?;
            let at = if last {
                c.indices.last()
            } else {
                c.indices.first()
            };
            Ok(at.map(|&i| {
                GqlValue::String(services.records.cursor_after(
                    c.page.res,
                    &c.params,
                    &c.page.records[i],
                ))
            }))
        })
    }
    Object::new(PAGE_INFO)
        .field(Field::new(
            "hasNextPage",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            move |ctx| FieldFuture::from_value(conn(&ctx).map(|c| GqlValue::Boolean(c.has_more))),
        ))
        .field(Field::new(
            "hasPreviousPage",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            move |ctx| {
                FieldFuture::from_value(
                    conn(&ctx).map(|c| GqlValue::Boolean(c.params.cursor.is_some())),
                )
            },
        ))
        .field(Field::new(
            "startCursor",
            TypeRef::named(TypeRef::STRING),
            move |ctx| cursor(ctx, false),
        ))
        .field(Field::new(
            "endCursor",
            TypeRef::named(TypeRef::STRING),
            move |ctx| cursor(ctx, true),
        ))
}

/// `PostCreateInput` and `PostUpdateInput`: the fields a client may write.
fn input_types(resource: &Resource, names: &Names) -> (InputObject, InputObject) {
    let mut create = InputObject::new(&names.create_input);
    let mut update = InputObject::new(&names.update_input);
    for field in resource.fields.iter().filter(|f| !f.read_only) {
        let ty = scalar_type(resource, field);
        let (create_ty, update_ty) = if field.is_many() {
            (
                TypeRef::named_nn_list(ty.clone()),
                TypeRef::named_nn_list(ty),
            )
        } else {
            (
                non_null_if(ty.clone(), field.required && field.default.is_none()),
                TypeRef::named(ty),
            )
        };
        create = create.field(InputValue::new(field.name.clone(), create_ty));
        update = update.field(InputValue::new(field.name.clone(), update_ty));
    }
    if resource.fields.iter().all(|f| f.read_only) {
        // An input object needs a field; this one is refused by validation as REST
        // refuses unknown keys.
        create = create.field(InputValue::new("_", TypeRef::named(TypeRef::BOOLEAN)));
        update = update.field(InputValue::new("_", TypeRef::named(TypeRef::BOOLEAN)));
    }
    (create, update)
}

/// Query and mutation fields of one resource.
fn root_fields(
    mut query: Object,
    mut mutation: Object,
    resource: &Resource,
    res: Res,
) -> (Object, Object) {
    let Res { id: rid, names } = res;
    query = query.field(
        Field::new(
            names.one.clone(),
            TypeRef::named(names.ty.clone()),
            move |ctx| {
                FieldFuture::new(async move {
                    let found = async {
                        let services = services(&ctx)?;
                        let call = call(&ctx)?;
                        let id = id_arg(&ctx)?;
                        let resource = services.records.resource_at(rid);
                        let selected =
                            selected_relations(&ctx, services.records.schema(), resource, &[&[]]);
                        let (joins, joined) = joins_for(services, call, rid, selected);
                        if joins.is_empty() {
                            let record = services
                                .records
                                .get(&call.identity, rid, &id)
                                .await
                                .map_err(|e| record_error(services, e))?;
                            return one_node(services, &ctx, rid, record).await;
                        }
                        let (record, targets) = services
                            .records
                            .get_joined(&call.identity, rid, &id, joins)
                            .await
                            .map_err(|e| record_error(services, e))?;
                        let page = Page::with_joined(
                            &services.records,
                            rid,
                            vec![record],
                            &joined,
                            vec![targets],
                            call,
                        );
                        Ok(Some(FieldValue::owned_any(Node { page, index: 0 })))
                    }
                    .await;
                    nullable(&ctx, found)
                })
            },
        )
        .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)))
        .description(format!(
            "One {} record; null with a NOT_FOUND error when the caller may not see it",
            resource.name
        )),
    );
    let max_records_key = names.many.clone();
    query = query.field(list_arguments(
        Field::new(
            names.many.clone(),
            TypeRef::named_nn(names.connection.clone()),
            move |ctx| {
                let _ = &max_records_key;
                FieldFuture::new(async move {
                    let services = services(&ctx)?;
                    let call = call(&ctx)?;
                    let resource = services.records.resource_at(rid);
                    let params = list_params(services, resource, &ctx)?;
                    let max = ctx.data::<MaxRecords>()?.0;
                    let selected = selected_relations(
                        &ctx,
                        services.records.schema(),
                        resource,
                        &[&["edges", "node"], &["nodes"]],
                    );
                    let (joins, joined) = joins_for(services, call, rid, selected);
                    charge(call, max, params.limit as usize)?;
                    let (page, targets) = services
                        .records
                        .list_joined(&call.identity, rid, &params, joins)
                        .await
                        .map_err(|e| list_error(services, e))?;
                    let n = page.records.len();
                    let joined_found = targets.iter().flatten().flatten().count();
                    charge(call, max, joined_found)?;
                    Ok(Some(connection_value(Conn {
                        page: Page::with_joined(
                            &services.records,
                            rid,
                            page.records,
                            &joined,
                            targets,
                            call,
                        ),
                        indices: (0..n).collect(),
                        has_more: page.has_more,
                        params: Arc::new(params),
                        total: page.total,
                    })))
                })
            },
        )
        .description(format!(
            "A page of the {} records the caller may list",
            resource.name
        )),
        true,
    ));
    mutation = mutation.field(
        Field::new(
            names.create.clone(),
            TypeRef::named_nn(names.ty.clone()),
            move |ctx| {
                FieldFuture::new(async move {
                    let services = services(&ctx)?;
                    let call = call(&ctx)?;
                    let body = body(&ctx)?;
                    let record = services
                        .records
                        .create(&call.identity, rid, body)
                        .await
                        .map_err(|e| record_error(services, e))?;
                    one_node(services, &ctx, rid, record).await
                })
            },
        )
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn(names.create_input.clone()),
        )),
    );
    mutation = mutation.field(
        Field::new(
            names.update.clone(),
            TypeRef::named_nn(names.ty.clone()),
            move |ctx| {
                FieldFuture::new(async move {
                    let services = services(&ctx)?;
                    let call = call(&ctx)?;
                    let id = id_arg(&ctx)?;
                    let patch = body(&ctx)?;
                    let if_match = if_match(&ctx)?;
                    let record = services
                        .records
                        .update(&call.identity, rid, &id, patch, if_match)
                        .await
                        .map_err(|e| record_error(services, e))?;
                    one_node(services, &ctx, rid, record).await
                })
            },
        )
        .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)))
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn(names.update_input.clone()),
        ))
        .argument(
            InputValue::new("ifMatch", TypeRef::named(TypeRef::INT))
                .description("the version the change is based on (PRECONDITION_FAILED when stale)"),
        ),
    );
    mutation = mutation.field(
        Field::new(
            names.delete.clone(),
            TypeRef::named_nn(TypeRef::ID),
            move |ctx| {
                FieldFuture::new(async move {
                    let services = services(&ctx)?;
                    let call = call(&ctx)?;
                    let id = id_arg(&ctx)?;
                    let if_match = if_match(&ctx)?;
                    services
                        .records
                        .delete(&call.identity, rid, &id, if_match)
                        .await
                        .map_err(|e| record_error(services, e))?;
                    Ok(Some(GqlValue::String(id)))
                })
            },
        )
        .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)))
        .argument(InputValue::new("ifMatch", TypeRef::named(TypeRef::INT))),
    );
    (query, mutation)
}

/// The fields that load records, by name, for [`crate::admit`].
pub(crate) fn loaders(schema: &ferrobase_schema::Schema) -> crate::admit::Loaders {
    let mut loaders = crate::admit::Loaders::default();
    for resource in &schema.resources {
        let names = Names::of(resource);
        loaders.connections.insert(names.many);
        loaders.singles.insert(names.one);
        for reverse in reverses(schema, resource) {
            loaders.connections.insert(reverse.name);
        }
        for field in resource.fields.iter().filter(|f| !f.hidden) {
            match field.relation() {
                Some(rel) if rel.many => {
                    loaders.many.insert(field.name.clone());
                }
                Some(_) => {
                    loaders.singles.insert(field.name.clone());
                }
                None => {}
            }
        }
    }
    loaders
}

/// The record budget of an operation, in the schema's data.
pub(crate) struct MaxRecords(pub usize);

/// The whole schema.
pub(crate) fn schema(
    schema: &ferrobase_schema::Schema,
    options: &Options,
    services: Option<Services>,
    per_operation: bool,
) -> Result<Schema, String> {
    let all: Vec<Names> = schema.resources.iter().map(Names::of).collect();
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for (resource, names) in schema.resources.iter().zip(&all) {
        if TAKEN.contains(&names.ty.as_str()) {
            problems.push(format!(
                "[resources.{}]: its GraphQL type name '{}' is taken by the generated schema; set graphql_name",
                resource.name, names.ty
            ));
        }
        for name in [
            &names.ty,
            &names.connection,
            &names.edge,
            &names.create_input,
            &names.update_input,
            &names.event,
        ] {
            if !seen.insert(name.clone()) {
                problems.push(format!(
                    "[resources.{}]: the GraphQL type name '{name}' is used twice; set graphql_name",
                    resource.name
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let subscriptions = services.as_ref().is_none_or(|s| s.realtime.is_some());
    let mut builder = Schema::build(
        "Query",
        Some("Mutation"),
        subscriptions.then_some("Subscription"),
    )
    .register(
        Scalar::new(DATETIME)
            .description("An instant, RFC 3339 in UTC")
            .specified_by_url("https://www.rfc-editor.org/rfc/rfc3339"),
    )
    .register(Scalar::new(DATE).description("A calendar date, YYYY-MM-DD"))
    .register(Scalar::new(JSON).description("Any JSON value"))
    .register(page_info())
    .register(
        Enum::new(EVENT_OP)
            .description("What happened to a record; `reset`: the position asked for is older than the event log keeps (refetch, then resume after `seq`)")
            .item("create")
            .item("update")
            .item("delete")
            .item("reset"),
    )
    .limit_depth(options.max_depth)
    .limit_complexity(options.max_complexity)
    .limit_recursive_depth(options.max_depth.max(32))
    .limit_directives(10)
    .data(MaxRecords(options.max_records));
    if per_operation {
        // Only where operations share a connection's data: an extension adds a hop to
        // every field the engine resolves.
        builder = builder.extension(crate::PerOperation);
    }
    if !options.introspection {
        // Suggestions ("did you mean ...") would tell the schema's names too.
        builder = builder.disable_introspection().disable_suggestions();
    }
    let mut query = Object::new("Query");
    let mut mutation = Object::new("Mutation");
    let mut subscription = Subscription::new("Subscription");
    for (index, resource) in schema.resources.iter().enumerate() {
        builder = resource_types(builder, schema, index, &all, options.max_records);
        (query, mutation) = root_fields(
            query,
            mutation,
            resource,
            Res {
                id: ResourceId(index),
                names: all[index].clone(),
            },
        );
        if subscriptions {
            builder = builder.register(crate::subscribe::event_type(&all[index]));
            subscription = subscription.field(crate::subscribe::field(
                resource,
                ResourceId(index),
                &all[index],
            ));
        }
    }
    builder = builder.register(query).register(mutation);
    if subscriptions {
        builder = builder.register(subscription);
    }
    if let Some(services) = services {
        builder = builder.data(services);
    }
    builder.finish().map_err(|e| e.to_string())
}
