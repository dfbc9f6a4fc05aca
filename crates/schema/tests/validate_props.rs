//! Property tests of value validation: arbitrary JSON never panics, and what validation
//! accepts is already canonical (validating it again changes nothing).

use ferrobase_schema::validate::validate_value;
use ferrobase_schema::{Field, FieldType, OnDelete, Pattern, Relation};
use proptest::prelude::*;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        prop_oneof![
            ".*",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))?",
            "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
            "[a-z]{1,8}@[a-z]{1,8}\\.[a-z]{2,3}",
            "https?://[a-z]{1,10}\\.[a-z]{2,3}/.{0,10}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn field_type() -> impl Strategy<Value = FieldType> {
    prop_oneof![
        Just(FieldType::String),
        Just(FieldType::Text),
        Just(FieldType::Integer),
        Just(FieldType::Number),
        Just(FieldType::Boolean),
        Just(FieldType::Datetime),
        Just(FieldType::Date),
        Just(FieldType::Enum(vec!["a".into(), "b".into()])),
        Just(FieldType::Email),
        Just(FieldType::Url),
        Just(FieldType::Uuid),
        Just(FieldType::Json),
        any::<bool>().prop_map(|many| FieldType::Relation(Relation {
            resource: "r".into(),
            many,
            on_delete: OnDelete::Cascade,
        })),
    ]
}

fn field() -> impl Strategy<Value = Field> {
    (
        field_type(),
        any::<bool>(),
        proptest::option::of(-1e6f64..1e6),
        proptest::option::of(0u64..20),
        any::<bool>(),
    )
        .prop_map(|(ty, required, bound, length, pattern)| {
            let textual = ty.is_textual();
            let numeric = matches!(ty, FieldType::Integer | FieldType::Number);
            let many = matches!(&ty, FieldType::Relation(r) if r.many);
            let mut f = Field::new("f", ty);
            f.required = required;
            if numeric {
                f.min = bound;
                f.max = bound.map(|b| b + 1000.0);
            }
            if textual || many {
                f.max_length = length;
            }
            if textual && pattern {
                f.pattern = Some(Pattern {
                    source: "^[^x]*$".into(),
                    regex: regex::Regex::new("^[^x]*$").expect("valid"),
                });
            }
            f
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn validation_never_panics_and_accepted_values_are_canonical(f in field(), v in json_value()) {
        if let Ok(normalized) = validate_value(&f, &v) {
            let again = validate_value(&f, &normalized);
            prop_assert_eq!(again, Ok(normalized));
        }
    }
}
