//! The public limits: length, nesting, terms, list size, path segments.

use ferrobase_query::{Expr, MAX_DEPTH, MAX_EXPR_LEN, MAX_IN_ITEMS, MAX_PATH_SEGMENTS, MAX_TERMS};

use crate::support::{err, p};

#[test]
fn limit_values() {
    assert_eq!(
        (
            MAX_EXPR_LEN,
            MAX_DEPTH,
            MAX_TERMS,
            MAX_IN_ITEMS,
            MAX_PATH_SEGMENTS
        ),
        (4096, 32, 64, 100, 3)
    );
}

#[test]
fn expression_length() {
    let at_limit = format!("a = '{}'", "x".repeat(MAX_EXPR_LEN - 6));
    assert_eq!(at_limit.len(), MAX_EXPR_LEN);
    p(&at_limit);
    let over = format!("{at_limit} ");
    assert_eq!(
        err(&over),
        (4096, "expression is longer than 4096 bytes".to_owned())
    );
    // The offset stays on a character boundary.
    let multibyte = format!("a = '{}'", "é".repeat(3000));
    let (offset, message) = err(&multibyte);
    assert_eq!(message, "expression is longer than 4096 bytes");
    assert_eq!(offset, 4095);
    assert!(multibyte.is_char_boundary(offset));
    // Very long input fails fast, before lexing.
    let (offset, _) = err(&"(".repeat(10_000_000));
    assert_eq!(offset, 4096);
}

#[test]
fn nesting_depth() {
    let ok = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(matches!(p(&ok), Expr::Truthy(_)));
    let deep = format!(
        "{}a{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert_eq!(err(&deep), (32, "nesting is deeper than 32".to_owned()));

    let nots = format!("{}a", "!".repeat(MAX_DEPTH));
    p(&nots);
    let nots = format!("{}a", "!".repeat(MAX_DEPTH + 1));
    assert_eq!(err(&nots), (32, "nesting is deeper than 32".to_owned()));

    let mixed = format!("{}a = 1{}", "!(".repeat(16), ")".repeat(16));
    p(&mixed);
    let mixed = format!("x && {}a = 1{}", "!(".repeat(17), ")".repeat(17));
    assert_eq!(err(&mixed), (37, "nesting is deeper than 32".to_owned()));

    // Depth is about nesting, not about how many groups there are.
    let wide = vec![format!("{}a{}", "(".repeat(30), ")".repeat(30)); 3].join(" && ");
    p(&wide);
    // `in` lists do not count as nesting.
    let with_list = format!("{}a in (1){}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    p(&with_list);
}

#[test]
fn term_count() {
    let terms: Vec<String> = (0..MAX_TERMS).map(|i| format!("f{i} = {i}")).collect();
    p(&terms.join(" && "));
    let mut terms = terms;
    terms.push("last".to_owned());
    let src = terms.join(" || ");
    let last = src.rfind("last").unwrap_or_default();
    assert_eq!(
        err(&src),
        (last, "expression has more than 64 conditions".to_owned())
    );
    // `in` tests and bare conditions count too.
    let mixed = ["a in (1, 2, 3)", "b", "!c"].repeat(22).join(" && ");
    assert_eq!(err(&mixed).1, "expression has more than 64 conditions");
}

#[test]
fn in_list_size() {
    let items: Vec<String> = (0..MAX_IN_ITEMS).map(|i| i.to_string()).collect();
    let Expr::In { items: parsed, .. } = p(&format!("x in ({})", items.join(", "))) else {
        panic!("not an in");
    };
    assert_eq!(parsed.len(), MAX_IN_ITEMS);
    let src = format!("x in ({}, 100)", items.join(", "));
    let offset = src.len() - 4;
    assert_eq!(
        err(&src),
        (offset, "an 'in' list can have at most 100 items".to_owned())
    );
}

#[test]
fn path_segments() {
    p("a.b.c = 1");
    assert_eq!(
        err("a.b.c.d = 1"),
        (6, "a field path can have at most 3 segments".to_owned())
    );
    assert_eq!(
        err("x in (a.b.c.d.e)"),
        (12, "a field path can have at most 3 segments".to_owned())
    );
}
