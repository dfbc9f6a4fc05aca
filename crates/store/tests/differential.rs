//! Differential property test: for random data and random well-typed expressions, the
//! records SQLite returns for the compiled SQL are exactly those the in-memory evaluator
//! accepts. Covers every comparable type, nulls, negation, `~` with `%`/`_`/case/NUL,
//! `in`, `@now` arithmetic, case-insensitive columns, and paths through single and many
//! relations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ferrobase_query::check::{Hop, Mode, check};
use ferrobase_query::env::Env;
use ferrobase_query::eval::{Lookup, eval};
use ferrobase_query::sql::{Dialect, to_sql};
use ferrobase_query::{
    CompareOp, Duration, DurationUnit, Expr, Ident, Literal, Operand, Path, Sign, Span,
};
use ferrobase_schema::{Schema, Settings, SourceFile, schema_from_str};
use ferrobase_store::{KeyType, ListQuery, NewRecord, ResourceId, SortKey, Store};
use ferrobase_testkit::Backend;
use ferrobase_testkit::services::TestDatabase;
use proptest::prelude::*;
use serde_json::{Value, json};

const SCHEMA: &str = r#"
[resources.people.fields]
name = { type = "string" }
age = { type = "integer" }
[resources.labels.fields]
label = { type = "string" }
[resources.things.fields]
name = { type = "string" }
note = { type = "text" }
n = { type = "integer" }
x = { type = "number" }
flag = { type = "boolean" }
at = { type = "datetime" }
day = { type = "date" }
kind = { type = "enum", values = ["a", "b", "c"] }
meta = { type = "json" }
owner = { type = "relation", resource = "people", on_delete = "set_null" }
creator = { type = "relation", resource = "users", on_delete = "set_null" }
tags = { type = "relation", resource = "labels", many = true }
"#;

const TEXTS: &[&str] = &[
    "", "a", "A", "ab", "aB", "b%", "%", "_", "a_b", "x'y", "\\", "é", "É", "a\tb", "zz",
];
const TIMES: &[&str] = &[
    "2025-01-01T00:00:00.000000Z",
    "2025-01-01T00:00:00.500000Z",
    "2025-06-01T12:00:00.000000Z",
    "2026-11-21T00:00:00.000000Z",
];
const DATES: &[&str] = &["2025-01-01", "2025-06-01", "2026-11-21"];

fn now() -> time::OffsetDateTime {
    time::macros::datetime!(2026-11-20 12:00 UTC)
}

fn opt<T: Clone + std::fmt::Debug + 'static>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![1 => Just(None), 3 => s.prop_map(Some)]
}

fn text() -> impl Strategy<Value = String> {
    prop::sample::select(TEXTS).prop_map(str::to_owned)
}

#[derive(Debug, Clone)]
struct Thing {
    name: Option<String>,
    note: Option<String>,
    n: Option<i64>,
    x: Option<f64>,
    flag: Option<bool>,
    at: Option<String>,
    day: Option<String>,
    kind: Option<String>,
    meta: Option<Value>,
    owner: Option<usize>,
    creator: Option<usize>,
    tags: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Data {
    people: Vec<(Option<String>, Option<i64>)>,
    labels: Vec<Option<String>>,
    users: Vec<String>,
    things: Vec<Thing>,
}

fn thing() -> impl Strategy<Value = Thing> {
    (
        (
            opt(text()),
            opt(text()),
            opt(-3i64..4),
            opt(prop::sample::select(vec![-2.5, 0.0, 1.0, 1.5, 2.0])),
        ),
        (
            opt(any::<bool>()),
            opt(prop::sample::select(TIMES)),
            opt(prop::sample::select(DATES)),
            opt(prop::sample::select(vec!["a", "b", "c"])),
        ),
        (
            opt(Just(json!({"k": 1}))),
            opt(0usize..3),
            opt(0usize..3),
            prop::collection::btree_set(0usize..3, 0..3),
        ),
    )
        .prop_map(
            |((name, note, n, x), (flag, at, day, kind), (meta, owner, creator, tags))| Thing {
                name,
                note,
                n,
                x,
                flag,
                at: at.map(str::to_owned),
                day: day.map(str::to_owned),
                kind: kind.map(str::to_owned),
                meta,
                owner,
                creator,
                tags: tags.into_iter().collect(),
            },
        )
}

fn data() -> impl Strategy<Value = Data> {
    (
        prop::collection::vec((opt(text()), opt(-3i64..4)), 3),
        prop::collection::vec(opt(text()), 3),
        prop::collection::vec(
            prop::sample::select(vec!["ann@x.io", "ANN@y.io", "bob@x.io", "Bob@z.io"]),
            3,
        ),
        prop::collection::vec(thing(), 8..20),
    )
        .prop_map(|(people, labels, users, things)| Data {
            people,
            labels,
            users: users.into_iter().map(str::to_owned).collect(),
            things,
        })
}

fn path(dotted: &str) -> Operand {
    Operand::Field(Path {
        segments: dotted
            .split('.')
            .map(|s| Ident {
                name: s.to_owned(),
                span: Span::default(),
            })
            .collect(),
        span: Span::default(),
    })
}

fn lit(value: Literal) -> Operand {
    Operand::Literal {
        value,
        span: Span::default(),
    }
}

fn cmp(op: CompareOp, lhs: Operand, rhs: Operand) -> Expr {
    Expr::Compare {
        op,
        lhs,
        rhs,
        span: Span::default(),
    }
}

fn any_op() -> impl Strategy<Value = CompareOp> {
    prop::sample::select(vec![
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Lt,
        CompareOp::Le,
        CompareOp::Gt,
        CompareOp::Ge,
    ])
}

fn null_test(field: &'static str) -> impl Strategy<Value = Expr> {
    prop::sample::select(vec![CompareOp::Eq, CompareOp::Ne])
        .prop_map(move |op| cmp(op, path(field), lit(Literal::Null)))
}

fn atom() -> BoxedStrategy<Expr> {
    let text_field = prop::sample::select(vec![
        "name",
        "note",
        "owner.name",
        "tags.label",
        "creator.email",
    ]);
    let text_ops = prop::sample::select(vec![
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Lt,
        CompareOp::Ge,
        CompareOp::Contains,
        CompareOp::NotContains,
    ]);
    let texts = (text_field.clone(), text_ops, text())
        .prop_map(|(f, op, s)| cmp(op, path(f), lit(Literal::String(s))));
    let in_texts = (
        text_field.clone(),
        any::<bool>(),
        prop::collection::vec(text(), 1..3),
    )
        .prop_map(|(f, negated, items)| Expr::In {
            negated,
            lhs: path(f),
            items: items.into_iter().map(|s| lit(Literal::String(s))).collect(),
            span: Span::default(),
        });
    let numbers = (
        prop::sample::select(vec!["n", "x", "owner.age"]),
        any_op(),
        prop_oneof![
            (-4i64..5).prop_map(Literal::Integer),
            prop::sample::select(vec![-2.5, 0.5, 1.0, 1.5]).prop_map(Literal::Number),
        ],
    )
        .prop_map(|(f, op, l)| cmp(op, path(f), lit(l)));
    let columns = (
        prop::sample::select(vec![
            ("n", "owner.age"),
            ("x", "n"),
            ("name", "note"),
            ("name", "owner.name"),
            ("name", "creator.email"),
            ("creator.email", "tags.label"),
        ]),
        any_op(),
    )
        .prop_map(|((a, b), op)| cmp(op, path(a), path(b)));
    let bools = prop_oneof![
        (
            prop::sample::select(vec![CompareOp::Eq, CompareOp::Ne]),
            any::<bool>()
        )
            .prop_map(|(op, b)| cmp(op, path("flag"), lit(Literal::Bool(b)))),
        Just(Expr::Truthy(path("flag"))),
    ];
    let times = (
        any_op(),
        prop_oneof![
            prop::sample::select(TIMES).prop_map(|t| lit(Literal::String(t.to_owned()))),
            (any::<bool>(), 0u32..400).prop_map(|(minus, days)| Operand::NowOffset {
                sign: if minus { Sign::Minus } else { Sign::Plus },
                duration: Duration {
                    amount: days,
                    unit: DurationUnit::Days,
                    span: Span::default()
                },
                span: Span::default(),
            }),
            Just(Operand::Now {
                span: Span::default()
            }),
        ],
    )
        .prop_map(|(op, rhs)| cmp(op, path("at"), rhs));
    let dates = (
        any_op(),
        prop_oneof![
            prop::sample::select(DATES).prop_map(|d| lit(Literal::String(d.to_owned()))),
            Just(Operand::Now {
                span: Span::default()
            }),
        ],
    )
        .prop_map(|(op, rhs)| cmp(op, path("day"), rhs));
    let kinds = (
        prop::sample::select(vec![
            CompareOp::Eq,
            CompareOp::Ne,
            CompareOp::Lt,
            CompareOp::Contains,
        ]),
        prop::sample::select(vec!["a", "b", "c"]),
    )
        .prop_map(|(op, k)| cmp(op, path("kind"), lit(Literal::String(k.to_owned()))));
    let nulls = prop_oneof![
        null_test("name"),
        null_test("n"),
        null_test("meta"),
        null_test("owner"),
        null_test("owner.name"),
        null_test("tags.label"),
        null_test("at"),
        null_test("flag"),
    ];
    prop_oneof![
        texts, in_texts, numbers, columns, bools, times, dates, kinds, nulls
    ]
    .boxed()
}

fn expr() -> impl Strategy<Value = Expr> {
    atom().prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And {
                lhs: Box::new(a),
                rhs: Box::new(b),
                span: Span::default()
            }),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Or {
                lhs: Box::new(a),
                rhs: Box::new(b),
                span: Span::default()
            }),
            inner.prop_map(|e| Expr::Not {
                expr: Box::new(e),
                span: Span::default()
            }),
        ]
    })
}

/// The stored records, for the in-memory side.
#[derive(Default)]
struct World {
    values: HashMap<(String, String), BTreeMap<String, Value>>,
    tags: HashMap<String, Vec<String>>,
}

impl Lookup for World {
    fn value(&self, resource: &str, id: &str, column: &str) -> Option<Value> {
        let row = self.values.get(&(resource.to_owned(), id.to_owned()))?;
        if column == "id" {
            return Some(Value::String(id.to_owned()));
        }
        row.get(column).cloned()
    }

    fn follow(&self, hop: &Hop, id: &str) -> Vec<String> {
        if hop.many {
            return self.tags.get(id).cloned().unwrap_or_default();
        }
        self.value(&hop.from, id, &hop.field)
            .and_then(|v| v.as_str().map(str::to_owned))
            .into_iter()
            .collect()
    }
}

fn res(schema: &Schema, name: &str) -> ResourceId {
    ResourceId(
        schema
            .resources
            .iter()
            .position(|r| r.name == name)
            .expect("resource"),
    )
}

async fn insert(
    store: &Store,
    schema: &Schema,
    world: &mut World,
    name: &str,
    fields: Vec<(&str, Value)>,
) -> String {
    let resource = schema.resource(name).expect("resource");
    let mut values = vec![Value::Null; resource.fields.len()];
    for (field, value) in fields {
        let i = resource
            .fields
            .iter()
            .position(|f| f.name == field)
            .expect("field");
        values[i] = value;
    }
    let id = uuid_like(world.values.len());
    let record = store
        .records()
        .insert(
            res(schema, name),
            NewRecord {
                id: id.clone(),
                now: "2025-01-01T00:00:00.000000Z".into(),
                values,
                targets: Default::default(),
                actor: None,
            },
            None,
        )
        .await
        .expect("insert");
    let row: BTreeMap<String, Value> = resource
        .fields
        .iter()
        .map(|f| f.name.clone())
        .zip(record.values.iter().cloned())
        .collect();
    if let Some(Value::Array(tags)) = row.get("tags") {
        world.tags.insert(
            id.clone(),
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
        );
    }
    world.values.insert((name.to_owned(), id.clone()), row);
    id
}

fn uuid_like(n: usize) -> String {
    format!("01900000-0000-7000-8000-{n:012}")
}

fn to_json<T: Into<Value>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, Into::into)
}

/// Loads `data` into a fresh store on `backend` and checks every expression.
fn agree(backend: Backend, data: &Data, exprs: &[Expr]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => match TestDatabase::create() {
            Some(db) => Some(db),
            None => return Ok(()),
        },
    };
    let dialect = if database.is_some() {
        Dialect::Postgres
    } else {
        Dialect::Sqlite
    };
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let env: BTreeMap<String, String> = database
            .iter()
            .map(|db| ("DATABASE_URL".to_owned(), db.url().to_owned()))
            .collect();
        let settings =
            Settings::load(&SourceFile::new("ferrobase.toml", ""), &env).expect("settings");
        let schema = Arc::new(schema_from_str("schema.toml", SCHEMA).expect("schema"));
        let store = Store::open(dir.path(), &settings, schema.clone()).expect("store");
        store
            .maintenance()
            .wait_ready(std::time::Duration::from_secs(30))
            .await
            .expect("store ready");
        let mut world = World::default();
        let mut people = Vec::new();
        for (name, age) in &data.people {
            people.push(
                insert(
                    &store,
                    &schema,
                    &mut world,
                    "people",
                    vec![("name", to_json(name.clone())), ("age", to_json(*age))],
                )
                .await,
            );
        }
        let mut labels = Vec::new();
        for label in &data.labels {
            labels.push(
                insert(
                    &store,
                    &schema,
                    &mut world,
                    "labels",
                    vec![("label", to_json(label.clone()))],
                )
                .await,
            );
        }
        let mut users = Vec::new();
        for (i, email) in data.users.iter().enumerate() {
            let unique = format!("{i}{email}");
            users.push(
                insert(
                    &store,
                    &schema,
                    &mut world,
                    "users",
                    vec![
                        ("email", json!(unique)),
                        ("role", json!("user")),
                        ("verified", json!(false)),
                    ],
                )
                .await,
            );
        }
        let mut things = BTreeSet::new();
        for t in &data.things {
            let id = insert(
                &store,
                &schema,
                &mut world,
                "things",
                vec![
                    ("name", to_json(t.name.clone())),
                    ("note", to_json(t.note.clone())),
                    ("n", to_json(t.n)),
                    (
                        "x",
                        t.x.map_or(Value::Null, ferrobase_schema::validate::canonical_number),
                    ),
                    ("flag", to_json(t.flag)),
                    ("at", to_json(t.at.clone())),
                    ("day", to_json(t.day.clone())),
                    ("kind", to_json(t.kind.clone())),
                    ("meta", t.meta.clone().unwrap_or(Value::Null)),
                    ("owner", to_json(t.owner.map(|i| people[i].clone()))),
                    ("creator", to_json(t.creator.map(|i| users[i].clone()))),
                    (
                        "tags",
                        Value::Array(
                            t.tags
                                .iter()
                                .map(|&i| Value::String(labels[i].clone()))
                                .collect(),
                        ),
                    ),
                ],
            )
            .await;
            things.insert(id);
        }
        let things_resource = schema.resource("things").expect("things");
        let env = Env::anonymous(now());
        for e in exprs {
            let cond = check(e, &schema, things_resource, Mode::Filter).map_err(|err| {
                TestCaseError::fail(format!("generated expression does not check: {e}: {err:?}"))
            })?;
            let query = ListQuery {
                filter: Some(to_sql(&cond, &env, dialect, "things")),
                order: vec![SortKey {
                    column: "id".into(),
                    descending: false,
                    nullable: false,
                    ty: KeyType::Text,
                }],
                after: None,
                limit: 1000,
                offset: 0,
                per_parent: None,
            };
            let from_sql: BTreeSet<String> = store
                .records()
                .list(res(&schema, "things"), query)
                .await
                .map_err(|err| TestCaseError::fail(format!("{e}: {err}")))?
                .into_iter()
                .map(|r| r.id)
                .collect();
            let in_memory: BTreeSet<String> = things
                .iter()
                .filter(|id| eval(&cond, &env, &world, "things", id))
                .cloned()
                .collect();
            prop_assert_eq!(&from_sql, &in_memory, "expression: {}", e);
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn sql_and_memory_agree_on_sqlite(data in data(), exprs in prop::collection::vec(expr(), 12)) {
        agree(Backend::Sqlite, &data, &exprs)?;
    }
}

proptest! {
    // Each case creates a PostgreSQL database of its own: fewer cases, as many
    // expressions per case.
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn sql_and_memory_agree_on_postgres(data in data(), exprs in prop::collection::vec(expr(), 24)) {
        agree(Backend::Postgres, &data, &exprs)?;
    }
}
