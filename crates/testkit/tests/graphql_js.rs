//! `tools::graphql_check` runs graphql-js, installed by the harness under
//! `<target>/test-tools/`, on SDL and documents.

use ferrobase_testkit::tools::{GraphqlCheck, graphql_check};

/// Stands in for the binary under test: the tools live in `<target>/test-tools`,
/// found from `<target>/<dir>/ferrobase` (here `<target>/tmp/ferrobase`).
const BIN: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/ferrobase");

const SDL: &str = "type Query { post(id: ID!): Post } type Post { id: ID! title: String }";

#[test]
fn graphql_js_validates_documents_against_the_schema() {
    let Some(GraphqlCheck { schema, documents }) = graphql_check(
        BIN,
        SDL,
        &[
            r#"query { post(id: "1") { id title } }"#,
            r#"{ post(id: "1") { id nope } }"#,
            "{ post(id: 1) { id",
        ],
    ) else {
        return;
    };
    let printed = schema.expect("the schema is valid");
    assert!(
        printed.contains("type Post {\n  id: ID!\n  title: String\n}"),
        "{printed}"
    );
    assert!(printed.contains("post(id: ID!): Post"), "{printed}");
    assert_eq!(documents.len(), 3, "{documents:?}");
    assert!(documents[0].is_empty(), "{:?}", documents[0]);
    assert!(
        documents[1].len() == 1 && documents[1][0].contains("\"nope\""),
        "{:?}",
        documents[1]
    );
    assert!(
        documents[2].len() == 1 && documents[2][0].starts_with("Syntax Error"),
        "{:?}",
        documents[2]
    );
}

#[test]
fn graphql_js_reports_a_broken_schema() {
    for (sdl, expected) in [
        ("type Query { post: Missing }", "Missing"),
        ("type Query { post: ID", "Syntax Error"),
        ("type Post { id: ID! }", "Query root type must be provided"),
    ] {
        let Some(check) = graphql_check(BIN, sdl, &["{ post }"]) else {
            return;
        };
        let error = check.schema.expect_err(sdl);
        assert!(error.contains(expected), "{sdl}: {error}");
        assert!(check.documents.is_empty(), "{sdl}: {:?}", check.documents);
    }
}
