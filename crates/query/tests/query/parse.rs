//! Successful parses: every construct, precedence, spans, display, references.

use ferrobase_query::{
    CompareOp, Duration, DurationUnit, Expr, Ident, Literal, Operand, Path, Reference, Sign, Span,
    references,
};

use crate::support::{p, s};

fn lit(src: &str) -> Literal {
    match p(&format!("x = {src}")) {
        Expr::Compare {
            rhs: Operand::Literal { value, .. },
            ..
        } => value,
        other => panic!("unexpected {other:?}"),
    }
}

fn rhs(src: &str) -> Operand {
    match p(&format!("x = {src}")) {
        Expr::Compare { rhs, .. } => rhs.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

fn id(name: &str, start: usize, end: usize) -> Ident {
    Ident {
        name: name.to_owned(),
        span: Span::new(start, end),
    }
}

#[test]
fn string_literals() {
    assert_eq!(lit("'text'"), Literal::String("text".into()));
    assert_eq!(lit("\"text\""), Literal::String("text".into()));
    assert_eq!(lit("''"), Literal::String(String::new()));
    assert_eq!(
        lit(r#"'a\\b\'c\"d\ne\tf'"#),
        Literal::String("a\\b'c\"d\ne\tf".into())
    );
    assert_eq!(lit(r#""it's""#), Literal::String("it's".into()));
    assert_eq!(lit(r#"'say "hi"'"#), Literal::String("say \"hi\"".into()));
    assert_eq!(lit(r"'\u00e9\u00C9'"), Literal::String("éÉ".into()));
    assert_eq!(lit(r"'\u0000'"), Literal::String("\0".into()));
    assert_eq!(lit("'日本 🎉'"), Literal::String("日本 🎉".into()));
    assert_eq!(lit("'50%_off'"), Literal::String("50%_off".into()));
    assert_eq!(lit("'line\nbreak'"), Literal::String("line\nbreak".into()));
}

#[test]
fn number_and_keyword_literals() {
    assert_eq!(lit("42"), Literal::Integer(42));
    assert_eq!(lit("-3"), Literal::Integer(-3));
    assert_eq!(lit("- 3"), Literal::Integer(-3));
    assert_eq!(lit("007"), Literal::Integer(7));
    assert_eq!(lit("9223372036854775807"), Literal::Integer(i64::MAX));
    assert_eq!(lit("-9223372036854775808"), Literal::Integer(i64::MIN));
    assert_eq!(lit("1.5"), Literal::Number(1.5));
    assert_eq!(lit("-0.25"), Literal::Number(-0.25));
    assert_eq!(lit("3.0"), Literal::Number(3.0));
    assert_eq!(lit("true"), Literal::Bool(true));
    assert_eq!(lit("false"), Literal::Bool(false));
    assert_eq!(lit("null"), Literal::Null);
}

#[test]
fn field_paths() {
    assert_eq!(
        p("title"),
        Expr::Truthy(Operand::Field(Path {
            segments: vec![id("title", 0, 5)],
            span: Span::new(0, 5),
        }))
    );
    assert_eq!(
        rhs("post.author.name"),
        Operand::Field(Path {
            segments: vec![id("post", 4, 8), id("author", 9, 15), id("name", 16, 20)],
            span: Span::new(4, 20),
        })
    );
    assert_eq!(rhs("_a1.B_2").to_string(), "_a1.B_2");
    // Reserved words are fine inside longer paths.
    assert_eq!(rhs("in.not").to_string(), "in.not");
    // Keywords are case-sensitive.
    assert_eq!(
        rhs("TRUE"),
        Operand::Field(Path {
            segments: vec![id("TRUE", 4, 8)],
            span: Span::new(4, 8)
        })
    );
}

#[test]
fn variables() {
    assert_eq!(
        rhs("@auth.id"),
        Operand::Auth {
            field: id("id", 10, 12),
            span: Span::new(4, 12)
        }
    );
    assert_eq!(rhs("@auth.role").to_string(), "@auth.role");
    assert_eq!(rhs("@auth.team_id").to_string(), "@auth.team_id");
    assert_eq!(
        rhs("@body.title"),
        Operand::Body {
            field: id("title", 10, 15),
            span: Span::new(4, 15)
        }
    );
    assert_eq!(
        rhs("@now"),
        Operand::Now {
            span: Span::new(4, 8)
        }
    );
}

#[test]
fn now_offsets() {
    assert_eq!(
        rhs("@now - 30d"),
        Operand::NowOffset {
            sign: Sign::Minus,
            duration: Duration {
                amount: 30,
                unit: DurationUnit::Days,
                span: Span::new(11, 14)
            },
            span: Span::new(4, 14),
        }
    );
    assert_eq!(rhs("@now-30d"), {
        let mut o = rhs("@now - 30d");
        if let Operand::NowOffset { duration, span, .. } = &mut o {
            duration.span = Span::new(9, 12);
            *span = Span::new(4, 12);
        }
        o
    });
    for (src, sign, amount, unit, secs) in [
        ("@now + 2h", Sign::Plus, 2, DurationUnit::Hours, 7_200),
        ("@now - 90s", Sign::Minus, 90, DurationUnit::Seconds, 90),
        ("@now + 15m", Sign::Plus, 15, DurationUnit::Minutes, 900),
        ("@now - 1w", Sign::Minus, 1, DurationUnit::Weeks, 604_800),
        ("@now+0d", Sign::Plus, 0, DurationUnit::Days, 0),
    ] {
        let Operand::NowOffset {
            sign: got,
            duration,
            ..
        } = rhs(src)
        else {
            panic!("{src} is not an offset");
        };
        assert_eq!(
            (got, duration.amount, duration.unit),
            (sign, amount, unit),
            "{src}"
        );
        assert_eq!(duration.as_seconds(), secs);
    }
    assert_eq!(s("@now - 30d < created"), "(< @now - 30d created)");
}

#[test]
fn comparison_operators() {
    for (src, op) in [
        ("a = 1", CompareOp::Eq),
        ("a != 1", CompareOp::Ne),
        ("a > 1", CompareOp::Gt),
        ("a >= 1", CompareOp::Ge),
        ("a < 1", CompareOp::Lt),
        ("a <= 1", CompareOp::Le),
        ("a ~ 1", CompareOp::Contains),
        ("a !~ 1", CompareOp::NotContains),
    ] {
        let Expr::Compare { op: got, span, .. } = p(src) else {
            panic!("{src} is not a comparison");
        };
        assert_eq!(got, op);
        assert_eq!(span, Span::new(0, src.len()));
        assert_eq!(p(src).to_string(), src);
        // Also without spaces.
        assert_eq!(p(&src.replace(' ', "")).to_string(), src);
    }
    assert_eq!(s("'x' = title"), "(= 'x' title)");
    assert_eq!(s("@auth.id = owner.id"), "(= @auth.id owner.id)");
    assert_eq!(s("1 = 1"), "(= 1 1)");
    assert_eq!(s("a=-1"), "(= a -1)");
    assert_eq!(s("a<-1"), "(< a -1)");
}

#[test]
fn in_lists() {
    assert_eq!(
        p("status in ('a', 2)"),
        Expr::In {
            negated: false,
            lhs: rhs_free("status", 0),
            items: vec![
                Operand::Literal {
                    value: Literal::String("a".into()),
                    span: Span::new(11, 14)
                },
                Operand::Literal {
                    value: Literal::Integer(2),
                    span: Span::new(16, 17)
                },
            ],
            span: Span::new(0, 18),
        }
    );
    assert_eq!(
        s("role not in (@auth.role, 'admin', null, -1.5, @now)"),
        "(not-in role [@auth.role 'admin' null -1.5 @now])"
    );
    assert_eq!(s("x in (1)"), "(in x [1])");
    assert_eq!(s("x in(1,2)"), "(in x [1 2])");
    assert_eq!(s("x not  in ( y )"), "(not-in x [y])");
    assert_eq!(s("@auth.id in (members.id)"), "(in @auth.id [members.id])");
}

fn rhs_free(name: &str, start: usize) -> Operand {
    Operand::Field(Path {
        segments: vec![id(name, start, start + name.len())],
        span: Span::new(start, start + name.len()),
    })
}

#[test]
fn bare_conditions() {
    assert_eq!(s("published"), "published");
    assert_eq!(s("true"), "true");
    assert_eq!(s("false || a"), "(or false a)");
    assert_eq!(s("@auth.verified"), "@auth.verified");
    assert_eq!(s("@body.draft"), "@body.draft");
    assert_eq!(s("!published"), "(not published)");
    assert_eq!(s("author.active"), "author.active");
}

#[test]
fn precedence() {
    assert_eq!(s("a || b && c"), "(or a (and b c))");
    assert_eq!(s("a && b || c"), "(or (and a b) c)");
    assert_eq!(s("a && b && c"), "(and (and a b) c)");
    assert_eq!(s("a || b || c"), "(or (or a b) c)");
    assert_eq!(s("!a && b"), "(and (not a) b)");
    assert_eq!(s("!a || !b"), "(or (not a) (not b))");
    assert_eq!(s("!!a"), "(not (not a))");
    assert_eq!(
        s("a = 1 && b != 2 || c ~ 'x'"),
        "(or (and (= a 1) (!= b 2)) (~ c 'x'))"
    );
    assert_eq!(s("(a || b) && c"), "(and (or a b) c)");
    assert_eq!(s("a && (b || c)"), "(and a (or b c))");
    assert_eq!(s("!(a = 1 || b in (2))"), "(not (or (= a 1) (in b [2])))");
    assert_eq!(s("((a))"), "a");
    assert_eq!(s("a = 1 && !(b = 2)"), "(and (= a 1) (not (= b 2)))");
}

#[test]
fn whitespace_is_insignificant() {
    assert_eq!(s(" \t\na\r\n=\t1 "), "(= a 1)");
    assert_eq!(s("a=1&&b=2||!c"), "(or (and (= a 1) (= b 2)) (not c))");
}

#[test]
fn node_spans() {
    let src = "!(a = 'é') && b in (1)";
    let Expr::And { lhs, rhs, span } = p(src) else {
        panic!("not an and");
    };
    assert_eq!(span, Span::new(0, src.len()));
    assert_eq!(lhs.span(), Span::new(0, 11));
    let Expr::Not { expr, .. } = *lhs else {
        panic!("not a not");
    };
    let Expr::Compare {
        rhs: value, span, ..
    } = *expr
    else {
        panic!("not a compare");
    };
    assert_eq!(span, Span::new(2, 10));
    assert_eq!(&src[value.span().start..value.span().end], "'é'");
    assert_eq!(&src[rhs.span().start..rhs.span().end], "b in (1)");
    assert_eq!(rhs_span("x = -42"), "-42");
    assert_eq!(rhs_span("x = @now + 2h"), "@now + 2h");
}

fn rhs_span(src: &str) -> &str {
    let span = rhs(src.trim_start_matches("x = ")).span();
    &src[span.start..span.end]
}

#[test]
fn canonical_display() {
    for (src, canonical) in [
        ("a=1&&(b=2||c)", "a = 1 && (b = 2 || c)"),
        ("((a))", "a"),
        ("a && (b && c)", "a && (b && c)"),
        ("(a && b) && c", "a && b && c"),
        ("a || (b || c)", "a || (b || c)"),
        ("(a || b) && !c", "(a || b) && !c"),
        ("!(a=1)", "!(a = 1)"),
        ("!(!a)", "!!a"),
        ("!(a && b)", "!(a && b)"),
        ("x = \"it's\"", r"x = 'it\'s'"),
        ("x = \"a\\\\b\\u0001\"", r"x = 'a\\b\u0001'"),
        ("x = 'tab\there'", r"x = 'tab\there'"),
        ("x = 1.0", "x = 1.0"),
        ("x = 0.1", "x = 0.1"),
        ("x = 100000000000000000000.0", "x = 100000000000000000000.0"),
        ("x=-3", "x = -3"),
        ("t > @now-30d", "t > @now - 30d"),
        ("x not in(1,'a',@auth.id)", "x not in (1, 'a', @auth.id)"),
        ("@body.x ~ \"y\"", "@body.x ~ 'y'"),
        ("a = null || b = true", "a = null || b = true"),
    ] {
        assert_eq!(p(src).to_string(), canonical, "display of {src:?}");
        assert_eq!(p(canonical).without_spans(), p(src).without_spans());
    }
}

#[test]
fn references_in_source_order() {
    let src = "owner = @auth.id && (created > @now - 7d || @body.tag in (tags.name, 'x', @now))";
    let refs = references(&p(src));
    let text = |span: Span| &src[span.start..span.end];
    let described: Vec<String> = refs
        .iter()
        .map(|r| match r {
            Reference::Field(path) => {
                assert_eq!(text(path.span), path.dotted());
                for seg in &path.segments {
                    assert_eq!(text(seg.span), seg.name);
                }
                format!("field {}", path.dotted())
            }
            Reference::Auth { field, span } => {
                assert_eq!(text(*span), field);
                format!("auth {field}")
            }
            Reference::Body { field, span } => {
                assert_eq!(text(*span), field);
                format!("body {field}")
            }
            Reference::Now { span } => {
                assert_eq!(text(*span), "@now");
                "now".to_owned()
            }
        })
        .collect();
    assert_eq!(
        described,
        [
            "field owner",
            "auth id",
            "field created",
            "now",
            "body tag",
            "field tags.name",
            "now"
        ]
    );
    assert!(references(&p("true && 1 = 2 && 'a' in ('b')")).is_empty());
    assert_eq!(references(&p("a = a")).len(), 2);
}

#[test]
fn parse_error_display() {
    let e = ferrobase_query::parse("a &").expect_err("invalid");
    assert_eq!(
        e.to_string(),
        "'&' is not an operator; use '&&' (at byte 2)"
    );
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().contains("'&&'"));
}
