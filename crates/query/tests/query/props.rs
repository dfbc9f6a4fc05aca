//! Property tests: no panics, display/parse round trips.

use ferrobase_query::{
    CompareOp, Duration, DurationUnit, Expr, Ident, Literal, MAX_EXPR_LEN, Operand, Path,
    Reference, Sign, Span, parse, references,
};
use proptest::prelude::*;

const KEYWORDS: [&str; 5] = ["true", "false", "null", "in", "not"];

/// Fragments that make random input likely to reach deep parser states.
const FRAGMENTS: &[&str] = &[
    "a",
    "b.c",
    "x.y.z",
    "@auth.id",
    "@body.t",
    "@now",
    "@auth",
    "@",
    "30d",
    "2h",
    "1.5",
    "-",
    "+",
    "42",
    "'s'",
    "\"q\"",
    "'",
    "\"",
    "\\",
    "\\u00e9",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "~",
    "!~",
    "!",
    "&&",
    "||",
    "&",
    "|",
    "(",
    ")",
    ",",
    "in",
    "not",
    "true",
    "null",
    " ",
    ".",
    "é",
    "\0",
    "🎉",
    "and",
    "1e5",
    "9999999999999999999999",
];

fn fragments() -> impl Strategy<Value = String> {
    let parts = prop::collection::vec(prop::sample::select(FRAGMENTS), 0..60);
    (parts, any::<bool>()).prop_map(|(v, spaced)| v.join(if spaced { " " } else { "" }))
}

/// Checks the invariants every parse result must satisfy.
fn check_result(src: &str) -> Result<(), TestCaseError> {
    match parse(src) {
        Err(e) => {
            prop_assert!(e.offset <= src.len(), "offset {} past end", e.offset);
            prop_assert!(src.is_char_boundary(e.offset));
            prop_assert!(!e.message.is_empty());
        }
        Ok(expr) => {
            let span = expr.span();
            prop_assert!(src.get(span.start..span.end).is_some());
            for r in references(&expr) {
                let span = match r {
                    Reference::Field(path) => path.span,
                    Reference::Auth { span, .. }
                    | Reference::Body { span, .. }
                    | Reference::Now { span } => span,
                };
                prop_assert!(src.get(span.start..span.end).is_some());
            }
            let printed = expr.to_string();
            if printed.len() <= MAX_EXPR_LEN {
                let reparsed = parse(&printed);
                prop_assert_eq!(
                    reparsed.map(|e| e.without_spans()),
                    Ok(expr.without_spans()),
                    "canonical form {:?}",
                    printed
                );
            }
        }
    }
    Ok(())
}

fn ident() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,6}"
}

fn mk_ident(name: String) -> Ident {
    Ident {
        name,
        span: Span::default(),
    }
}

fn path() -> impl Strategy<Value = Operand> {
    prop::collection::vec(ident(), 1..=3)
        .prop_filter("single keyword", |segs| {
            segs.len() > 1 || !KEYWORDS.contains(&segs[0].as_str())
        })
        .prop_map(|segs| {
            Operand::Field(Path {
                segments: segs.into_iter().map(mk_ident).collect(),
                span: Span::default(),
            })
        })
}

fn number() -> impl Strategy<Value = f64> {
    use prop::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    prop_oneof![
        8 => -1e9..1e9f64,
        1 => POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO,
    ]
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        any::<String>().prop_map(Literal::String),
        any::<i64>().prop_map(Literal::Integer),
        number().prop_map(Literal::Number),
        any::<bool>().prop_map(Literal::Bool),
        Just(Literal::Null),
    ]
}

fn lit_operand(value: Literal) -> Operand {
    Operand::Literal {
        value,
        span: Span::default(),
    }
}

fn auth_or_body() -> impl Strategy<Value = Operand> {
    (any::<bool>(), ident()).prop_map(|(auth, name)| {
        let field = mk_ident(name);
        let span = Span::default();
        if auth {
            Operand::Auth { field, span }
        } else {
            Operand::Body { field, span }
        }
    })
}

fn now() -> impl Strategy<Value = Operand> {
    let units = prop::sample::select(vec![
        DurationUnit::Seconds,
        DurationUnit::Minutes,
        DurationUnit::Hours,
        DurationUnit::Days,
        DurationUnit::Weeks,
    ]);
    let offset =
        (any::<bool>(), any::<u32>(), units).prop_map(|(plus, amount, unit)| Operand::NowOffset {
            sign: if plus { Sign::Plus } else { Sign::Minus },
            duration: Duration {
                amount,
                unit,
                span: Span::default(),
            },
            span: Span::default(),
        });
    prop_oneof![
        Just(Operand::Now {
            span: Span::default()
        }),
        offset
    ]
}

fn operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        literal().prop_map(lit_operand),
        path(),
        auth_or_body(),
        now()
    ]
}

fn compare_op() -> impl Strategy<Value = CompareOp> {
    prop::sample::select(vec![
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
        CompareOp::Contains,
        CompareOp::NotContains,
    ])
}

fn leaf() -> impl Strategy<Value = Expr> {
    let span = Span::default();
    prop_oneof![
        (compare_op(), operand(), operand()).prop_map(move |(op, lhs, rhs)| Expr::Compare {
            op,
            lhs,
            rhs,
            span
        }),
        (
            any::<bool>(),
            operand(),
            prop::collection::vec(operand(), 1..5)
        )
            .prop_map(move |(negated, lhs, items)| Expr::In {
                negated,
                lhs,
                items,
                span
            }),
        prop_oneof![
            path(),
            auth_or_body(),
            any::<bool>().prop_map(|b| lit_operand(Literal::Bool(b)))
        ]
        .prop_map(Expr::Truthy),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    let span = Span::default();
    leaf().prop_recursive(5, 32, 2, move |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(move |(l, r)| Expr::And {
                lhs: Box::new(l),
                rhs: Box::new(r),
                span
            }),
            (inner.clone(), inner.clone()).prop_map(move |(l, r)| Expr::Or {
                lhs: Box::new(l),
                rhs: Box::new(r),
                span
            }),
            inner.prop_map(move |e| Expr::Not {
                expr: Box::new(e),
                span
            }),
        ]
    })
}

/// Tricky string contents: quotes, backslashes, LIKE wildcards, controls.
fn tricky_string() -> impl Strategy<Value = String> {
    let chars = prop::sample::select(vec![
        '\'',
        '"',
        '\\',
        '%',
        '_',
        '\0',
        '\n',
        '\t',
        '\r',
        'u',
        'a',
        ' ',
        'é',
        '日',
        '🎉',
        '\u{7f}',
        '\u{85}',
        '\u{200b}',
        '\u{feff}',
        '\u{10ffff}',
    ]);
    prop_oneof![
        prop::collection::vec(chars, 0..24).prop_map(|v| v.into_iter().collect()),
        any::<String>(),
    ]
}

/// An independent encoder using double quotes and `\u` escapes for controls.
fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics_on_arbitrary_strings(src in any::<String>()) {
        check_result(&src)?;
    }

    #[test]
    fn parse_never_panics_on_token_soup(src in fragments()) {
        check_result(&src)?;
    }

    #[test]
    fn parse_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check_result(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn display_of_random_ast_reparses(ast in expr()) {
        let printed = ast.to_string();
        prop_assume!(printed.len() <= MAX_EXPR_LEN);
        let reparsed = parse(&printed).map(|e| e.without_spans());
        prop_assert_eq!(reparsed, Ok(ast), "printed as {:?}", printed);
    }

    #[test]
    fn string_literals_round_trip(s in tricky_string()) {
        let ast = Expr::Compare {
            op: CompareOp::Eq,
            lhs: Operand::Field(Path {
                segments: vec![mk_ident("x".to_owned())],
                span: Span::default(),
            }),
            rhs: lit_operand(Literal::String(s.clone())),
            span: Span::default(),
        };
        let printed = ast.to_string();
        prop_assert_eq!(parse(&printed).map(|e| e.without_spans()), Ok(ast.clone()));
        // Source written with double quotes decodes to the same string.
        let alt = format!("x = {}", double_quoted(&s));
        prop_assert_eq!(parse(&alt).map(|e| e.without_spans()), Ok(ast));
        // The canonical form is printable: no raw control characters.
        prop_assert!(!printed.chars().any(char::is_control));
    }
}
