//! Every error message, with its byte offset.

use crate::support::err;

fn check(cases: &[(&str, usize, &str)]) {
    for &(src, offset, message) in cases {
        assert_eq!(err(src), (offset, message.to_owned()), "for {src:?}");
        assert!(src.is_char_boundary(offset), "offset of {src:?}");
    }
}

#[test]
fn missing_values() {
    check(&[
        (
            "title =",
            7,
            "expected a value after '=' but found end of input",
        ),
        ("title = )", 8, "expected a value after '=' but found ')'"),
        ("a >= && b", 5, "expected a value after '>=' but found '&&'"),
        ("a ~ in", 4, "expected a value after '~' but found 'in'"),
        ("", 0, "expected a condition but found end of input"),
        ("   ", 3, "expected a condition but found end of input"),
        ("&& a", 0, "expected a condition but found '&&'"),
        (
            "a &&",
            4,
            "expected a condition after '&&' but found end of input",
        ),
        ("a || )", 5, "expected a condition after '||' but found ')'"),
        (
            "!",
            1,
            "expected a condition after '!' but found end of input",
        ),
        ("()", 1, "expected a condition after '(' but found ')'"),
        (
            "a = -",
            5,
            "expected a number after '-' but found end of input",
        ),
        ("a = -b", 5, "expected a number after '-' but found 'b'"),
        ("= 1", 0, "expected a condition but found '='"),
        ("not", 0, "expected a condition but found 'not'"),
    ]);
}

#[test]
fn strings_and_escapes() {
    check(&[
        ("a = 'abc", 4, "unterminated string starting here"),
        ("a = \"abc'", 4, "unterminated string starting here"),
        ("a = 'abc\\", 4, "unterminated string starting here"),
        ("a = 'é\\'", 4, "unterminated string starting here"),
        (
            "a = 'x\\q'",
            6,
            "unknown escape '\\q'; valid escapes are \\\\ \\' \\\" \\n \\t \\uXXXX",
        ),
        (
            "a = 'x\\é'",
            6,
            "unknown escape '\\é'; valid escapes are \\\\ \\' \\\" \\n \\t \\uXXXX",
        ),
        (
            "a = '\\u12'",
            5,
            "expected 4 hex digits after '\\u', e.g. '\\u00e9'",
        ),
        (
            "a = '\\u+123'",
            5,
            "expected 4 hex digits after '\\u', e.g. '\\u00e9'",
        ),
        (
            "a = '\\u00é'",
            5,
            "expected 4 hex digits after '\\u', e.g. '\\u00e9'",
        ),
        (
            "a = '\\uD800'",
            5,
            "'\\uD800' is not a valid character (it is a surrogate)",
        ),
    ]);
}

#[test]
fn bad_operators() {
    check(&[
        ("a == 1", 2, "unknown operator '=='; use '='"),
        ("a === 1", 2, "unknown operator '=='; use '='"),
        ("a !== 1", 2, "unknown operator '!=='; use '!='"),
        ("a <> 1", 2, "unknown operator '<>'; use '!='"),
        ("a =< 1", 2, "unknown operator '=<'; use '<='"),
        ("a => 1", 2, "unknown operator '=>'; use '>='"),
        ("a =~ 1", 2, "unknown operator '=~'; use '~'"),
        ("a =! 1", 2, "unknown operator '=!'; use '!='"),
        ("a & b", 2, "'&' is not an operator; use '&&'"),
        ("a | b", 2, "'|' is not an operator; use '||'"),
        ("a = 1 and b = 2", 6, "unknown operator 'and'; use '&&'"),
        ("a OR b", 2, "unknown operator 'OR'; use '||'"),
        (
            "a = 1 = 2",
            6,
            "comparisons cannot be chained; join them with '&&'",
        ),
        (
            "a in (1) in (2)",
            9,
            "comparisons cannot be chained; join them with '&&'",
        ),
        (
            "!a = 1",
            0,
            "'!' binds tighter than comparisons; to negate a comparison, \
             wrap it in parentheses, e.g. '!(a = 1)'",
        ),
        (
            "!a in (1)",
            0,
            "'!' binds tighter than comparisons; to negate a comparison, \
             wrap it in parentheses, e.g. '!(a = 1)'",
        ),
        (
            "(a) = 1",
            4,
            "parentheses group conditions, not values; a parenthesized condition cannot be compared",
        ),
        (
            "a + 1",
            2,
            "arithmetic is only supported as '@now + <duration>' or '@now - <duration>'",
        ),
        (
            "@now - 1d - 1d > a",
            10,
            "arithmetic is only supported as '@now + <duration>' or '@now - <duration>'",
        ),
    ]);
}

#[test]
fn structure() {
    check(&[
        ("a = 1)", 5, "unexpected ')' without a matching '('"),
        (
            "(a = 1",
            6,
            "expected ')' to close the '(' at byte 0 but found end of input",
        ),
        ("(a = 1 b", 7, "expected '&&', '||' or ')' but found 'b'"),
        (
            "a = 1 b",
            6,
            "expected '&&', '||' or end of input but found 'b'",
        ),
        (
            "a b",
            2,
            "expected '&&', '||' or end of input but found 'b'",
        ),
        (
            "a 'x'",
            2,
            "expected '&&', '||' or end of input but found a string",
        ),
        ("a in 1", 5, "expected '(' after 'in' but found '1'"),
        ("a not 1", 6, "expected 'in' after 'not' but found '1'"),
        (
            "a not",
            5,
            "expected 'in' after 'not' but found end of input",
        ),
        ("a in ()", 6, "an 'in' list needs at least one value"),
        (
            "a in (1 2)",
            8,
            "expected ',' or ')' in the 'in' list but found '2'",
        ),
        ("a in (1,)", 8, "expected a value after ',' but found ')'"),
        (
            "a in (1",
            7,
            "expected ',' or ')' in the 'in' list but found end of input",
        ),
        (
            "a in [1]",
            5,
            "unexpected '['; 'in' lists use parentheses, e.g. 'x in (1, 2)'",
        ),
    ]);
}

#[test]
fn values_that_are_not_conditions() {
    let cond = "is not a condition on its own; compare it with an operator such as '='";
    check(&[
        ("42", 0, &format!("a number {cond}")),
        ("a && -1.5", 5, &format!("a number {cond}")),
        ("'x' || a", 0, &format!("a string {cond}")),
        ("(null)", 1, &format!("'null' {cond}")),
        ("@now", 0, &format!("a time {cond}")),
        ("@now - 1d", 0, &format!("a time {cond}")),
        (
            "42 a",
            3,
            "expected an operator such as '=' after '42' but found 'a'",
        ),
    ]);
}

#[test]
fn names_numbers_and_durations() {
    check(&[
        ("a. = 1", 2, "expected a field name after '.'"),
        ("a.1 = 1", 2, "expected a field name after '.'"),
        (".5 = a", 0, "a number needs a digit before '.', e.g. '0.5'"),
        (". = a", 0, "unexpected character '.'"),
        ("a = 1.", 6, "expected a digit after '.' in a number"),
        ("a = 1.x", 6, "expected a digit after '.' in a number"),
        (
            "a = 12abc",
            4,
            "'12abc' is not a valid number or duration (duration units are s, m, h, d, w)",
        ),
        (
            "a = 1e5",
            4,
            "'1e5' is not a valid number or duration (duration units are s, m, h, d, w)",
        ),
        (
            "a > @now - 1.5h",
            11,
            "a duration must be a whole number of units, e.g. '90m' instead of '1.5h'",
        ),
        (
            "a = 30d",
            4,
            "a duration can only be used as '@now + <duration>' or '@now - <duration>'",
        ),
        (
            "a = -30d",
            5,
            "a duration can only be used as '@now + <duration>' or '@now - <duration>'",
        ),
        (
            "a > @now - 3",
            11,
            "expected a duration such as '30d' after '@now -' but found '3' (units: s, m, h, d, w)",
        ),
        (
            "a > @now +",
            10,
            "expected a duration such as '30d' after '@now +' but found end of input \
             (units: s, m, h, d, w)",
        ),
        (
            "a > @now - 4294967296s",
            11,
            "duration '4294967296s' is too large",
        ),
        (
            "a = 9223372036854775808",
            4,
            "integer '9223372036854775808' is out of range for a 64-bit integer",
        ),
        (
            "a = -9223372036854775809",
            4,
            "integer '-9223372036854775809' is out of range for a 64-bit integer",
        ),
        (
            "a = 123456789012345678901234567890123456789",
            4,
            "integer '12345678901234567890123456789012...' is out of range for a 64-bit integer",
        ),
        (
            "@ = 1",
            0,
            "expected a name after '@', such as '@auth.id' or '@now'",
        ),
        (
            "@1",
            0,
            "expected a name after '@', such as '@auth.id' or '@now'",
        ),
        (
            "@user.id = 1",
            0,
            "unknown variable '@user'; expected '@auth', '@body' or '@now'",
        ),
        (
            "@auth = 1",
            5,
            "expected '.' and a field name after '@auth', e.g. '@auth.id'",
        ),
        (
            "@body",
            5,
            "expected '.' and a field name after '@body', e.g. '@body.id'",
        ),
        (
            "@auth.team.id = 1",
            11,
            "'@auth' takes a single field name, e.g. '@auth.id'",
        ),
        ("@now.x = 1", 5, "'@now' has no fields"),
    ]);
    let huge = format!("a = 1{}.0", "0".repeat(400));
    assert_eq!(err(&huge), (4, "number is out of range".to_owned()));
}

#[test]
fn unusual_characters() {
    check(&[
        ("a = 1 \0", 6, "unexpected character '\\0'"),
        ("\0", 0, "unexpected character '\\0'"),
        ("é = 1", 0, "unexpected character 'é'"),
        ("a = 1 🎉", 6, "unexpected character '🎉'"),
        ("a\u{a0}= 1", 1, "unexpected character '\\u{a0}'"),
        ("a = 1;", 5, "unexpected character ';'"),
        ("a = `x`", 4, "unexpected character '`'"),
    ]);
}
