//! Validation of one field value against its declaration: shared by record writes and by
//! `default` values in the schema, so both accept exactly the same things.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

use crate::model::{Field, FieldType};

/// Largest integer a JSON number carries exactly in every client language.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Checks a non-null `value` for `field` and returns its canonical form (UTC datetimes,
/// lower-case UUIDs, whole numbers as integers) or every message that applies.
pub fn validate_value(field: &Field, value: &Value) -> Result<Value, Vec<String>> {
    let mut problems = Vec::new();
    let normalized = match &field.ty {
        FieldType::String | FieldType::Text => text(field, value, &mut problems),
        FieldType::Email => text(field, value, &mut problems).inspect(|v| {
            if let Value::String(s) = v
                && !is_email(s)
            {
                problems.push("must be a valid email address".into());
            }
        }),
        FieldType::Url => text(field, value, &mut problems).inspect(|v| {
            if let Value::String(s) = v
                && !is_http_url(s)
            {
                problems.push("must be an absolute http or https URL".into());
            }
        }),
        FieldType::Integer => integer(field, value, &mut problems),
        FieldType::Number => number(field, value, &mut problems),
        FieldType::Boolean => match value {
            Value::Bool(_) => Some(value.clone()),
            _ => fail(&mut problems, "must be true or false"),
        },
        FieldType::Datetime => match value.as_str().map(normalize_datetime) {
            Some(Some(s)) => Some(Value::String(s)),
            _ => fail(
                &mut problems,
                "must be an RFC 3339 date-time from year 0001 to 9999, such as 2025-01-31T12:00:00Z",
            ),
        },
        FieldType::Date => match value.as_str().filter(|s| is_date(s)) {
            Some(s) => Some(Value::String(s.to_owned())),
            None => fail(
                &mut problems,
                "must be a date from 0001-01-01 to 9999-12-31, such as 2025-01-31",
            ),
        },
        FieldType::Enum(values) => match value.as_str() {
            Some(s) if values.iter().any(|v| v == s) => Some(value.clone()),
            _ => fail(
                &mut problems,
                &format!("must be one of: {}", values.join(", ")),
            ),
        },
        FieldType::Uuid => match value.as_str().and_then(normalize_uuid) {
            Some(s) => Some(Value::String(s)),
            None => fail(&mut problems, "must be a UUID"),
        },
        FieldType::Json if contains_nul(value) => fail(&mut problems, NUL_MESSAGE),
        FieldType::Json => Some(value.clone()),
        FieldType::Relation(rel) if rel.many => many_relation(field, value, &mut problems),
        FieldType::Relation(_) => match value.as_str().and_then(normalize_uuid) {
            Some(s) => Some(Value::String(s)),
            None => fail(&mut problems, "must be the id of a record"),
        },
    };
    match normalized {
        Some(v) if problems.is_empty() => Ok(v),
        _ => Err(problems),
    }
}

/// NUL cannot be stored in PostgreSQL text or jsonb; refusing it everywhere keeps both
/// stores accepting exactly the same data.
const NUL_MESSAGE: &str = "must not contain NUL characters";

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

fn fail(problems: &mut Vec<String>, message: &str) -> Option<Value> {
    problems.push(message.to_owned());
    None
}

fn text(field: &Field, value: &Value, problems: &mut Vec<String>) -> Option<Value> {
    let Value::String(s) = value else {
        return fail(problems, "must be a string");
    };
    if field.required && s.is_empty() {
        problems.push("must not be empty".into());
    }
    if s.contains('\0') {
        problems.push(NUL_MESSAGE.into());
    }
    let chars = s.chars().count() as u64;
    if let Some(min) = field.min_length
        && chars < min
    {
        problems.push(format!("must be at least {min} characters"));
    }
    if let Some(max) = field.max_length
        && chars > max
    {
        problems.push(format!("must be at most {max} characters"));
    }
    if let Some(pattern) = &field.pattern
        && !pattern.regex.is_match(s)
    {
        problems.push(format!("must match the pattern {}", pattern.source));
    }
    Some(value.clone())
}

fn integer(field: &Field, value: &Value, problems: &mut Vec<String>) -> Option<Value> {
    let Value::Number(n) = value else {
        return fail(problems, "must be an integer");
    };
    let int = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => i,
        (None, Some(f)) if f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER => f as i64,
        _ => return fail(problems, "must be an integer"),
    };
    bounds(field, int as f64, problems);
    Some(Value::from(int))
}

fn number(field: &Field, value: &Value, problems: &mut Vec<String>) -> Option<Value> {
    match value.as_f64() {
        Some(f) if f.is_finite() => {
            bounds(field, f, problems);
            Some(canonical_number(f))
        }
        _ => fail(problems, "must be a number"),
    }
}

fn bounds(field: &Field, x: f64, problems: &mut Vec<String>) {
    if let Some(min) = field.min
        && x < min
    {
        problems.push(format!("must be at least {min}"));
    }
    if let Some(max) = field.max
        && x > max
    {
        problems.push(format!("must be at most {max}"));
    }
}

/// Most links a many relation may hold when its field sets no `max_length`: every read
/// returns them all.
pub const MAX_MANY_LINKS: u64 = 1000;

fn many_relation(field: &Field, value: &Value, problems: &mut Vec<String>) -> Option<Value> {
    let Value::Array(items) = value else {
        return fail(problems, "must be an array of record ids");
    };
    // Count before anything else: the cost of what follows grows with the input.
    let count = items.len() as u64;
    let max = field.max_length.unwrap_or(MAX_MANY_LINKS);
    if count > max {
        return fail(problems, &format!("must have at most {max} items"));
    }
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let mut ids: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        match item.as_str().and_then(normalize_uuid) {
            Some(id) if !seen.insert(id.clone()) => {
                problems.push(format!("lists {id} more than once"));
            }
            Some(id) => ids.push(Value::String(id)),
            None => return fail(problems, "must be an array of record ids"),
        }
    }
    let count = ids.len() as u64;
    if field.required && count == 0 {
        problems.push("must have at least 1 item".into());
    }
    if let Some(min) = field.min_length
        && count < min
    {
        problems.push(format!("must have at least {min} items"));
    }
    Some(Value::Array(ids))
}

/// The one JSON form of a `number` value: whole numbers that are exact in a double are
/// integers (`10`, not `10.0`), everything else a double. Writes and reads agree.
pub fn canonical_number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// Canonical storage form of an instant: UTC, microseconds, fixed width, so that text
/// order is time order.
pub fn format_datetime(at: OffsetDateTime) -> String {
    let at = at.checked_to_offset(UtcOffset::UTC).unwrap_or(at);
    if !(0..=9999).contains(&at.year()) {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        return at
            .format(format)
            .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".to_owned());
    }
    // Every read of a record formats its timestamps: digits by hand, not through the
    // general formatter (a tenth of the time).
    datetime_text(
        at.year().unsigned_abs(),
        u8::from(at.month()).into(),
        at.day().into(),
        [at.hour().into(), at.minute().into(), at.second().into()],
        at.microsecond(),
    )
}

/// [`format_datetime`]'s text of a UTC instant given by its parts, for years 0 to 9999:
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn datetime_text(
    year: u32,
    month: u32,
    day: u32,
    [hour, minute, second]: [u32; 3],
    micros: u32,
) -> String {
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, value: u32, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, hour, 2);
    put(14, minute, 2);
    put(17, second, 2);
    put(20, micros, 6);
    std::str::from_utf8(&out).unwrap_or_default().to_owned()
}

/// Parses an RFC 3339 date-time and returns its canonical form.
pub fn normalize_datetime(s: &str) -> Option<String> {
    let at = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    // Offsets can push the UTC year past what the type holds (9999-12-31T23:59:59-01:00).
    let utc = at.checked_to_offset(UtcOffset::UTC)?;
    YEARS.contains(&utc.year()).then(|| format_datetime(utc))
}

/// The years a `date` or `datetime` may have, on every store: PostgreSQL has no year 0
/// (and SQLite's text would sort a negative year wrongly), so both hold 0001-9999.
pub const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Whether an instant lies in the range every store can hold ([`YEARS`], in UTC).
pub fn in_range(at: OffsetDateTime) -> bool {
    at.checked_to_offset(UtcOffset::UTC)
        .is_some_and(|utc| YEARS.contains(&utc.year()))
}

fn is_date(s: &str) -> bool {
    let format = format_description!("[year]-[month]-[day]");
    s.len() == 10 && Date::parse(s, format).is_ok_and(|d| YEARS.contains(&d.year()))
}

/// Lower-case hyphenated form of a UUID, or `None` when `s` is not one.
pub fn normalize_uuid(s: &str) -> Option<String> {
    if s.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(s)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// A deliberately plain address check: one `@`, a sensible local part, a dotted domain,
/// no spaces or control characters. Deliverability is proven by verification mail.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || c == '@';
    !local.is_empty()
        && local.len() <= 64
        && s.len() <= 254
        && !local.chars().any(bad_char)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
}

/// An absolute http(s) URL, as stored: the WHATWG parser drops tabs and line breaks
/// (and trims spaces and controls) before parsing, so a string holding them would pass
/// while what is stored differs from what was checked (a header-injection risk where
/// the value is echoed): those characters are refused outright.
fn is_http_url(s: &str) -> bool {
    !s.chars().any(|c| c.is_control() || c == ' ')
        && url::Url::parse(s)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn the_fast_format_is_the_general_one() {
        let general = |at: OffsetDateTime| {
            at.format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
            ))
            .expect("formats")
        };
        for text in [
            "2026-12-04T09:41:07.123456Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "2024-02-29T12:00:00.5+02:00",
            "1970-01-01T00:00:00.000001Z",
        ] {
            let at = OffsetDateTime::parse(text, &Rfc3339).expect("parses");
            let utc = at.to_offset(UtcOffset::UTC);
            assert_eq!(format_datetime(at), general(utc), "{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Pattern, Relation};
    use serde_json::json;

    fn field(ty: FieldType) -> Field {
        Field::new("f", ty)
    }

    #[test]
    fn strings_count_characters_and_match_patterns() {
        let mut f = field(FieldType::String);
        f.min_length = Some(2);
        f.max_length = Some(3);
        f.pattern = Some(Pattern {
            source: "^[a-zé]+$".into(),
            regex: regex::Regex::new("^[a-zé]+$").expect("valid"),
        });
        assert_eq!(validate_value(&f, &json!("éé")), Ok(json!("éé")));
        assert_eq!(
            validate_value(&f, &json!("a")),
            Err(vec!["must be at least 2 characters".to_owned()])
        );
        assert_eq!(
            validate_value(&f, &json!("ABCD")).map_err(|e| e.len()),
            Err(2)
        );
        assert!(validate_value(&f, &json!(12)).is_err());
        let mut required = field(FieldType::String);
        required.required = true;
        assert_eq!(
            validate_value(&required, &json!("")),
            Err(vec!["must not be empty".to_owned()])
        );
    }

    #[test]
    fn integers_are_whole_and_bounded() {
        let mut f = field(FieldType::Integer);
        f.min = Some(0.0);
        f.max = Some(10.0);
        assert_eq!(validate_value(&f, &json!(3)), Ok(json!(3)));
        assert_eq!(validate_value(&f, &json!(3.0)), Ok(json!(3)));
        assert!(validate_value(&f, &json!(3.5)).is_err());
        assert!(validate_value(&f, &json!(11)).is_err());
        assert!(validate_value(&f, &json!("3")).is_err());
    }

    #[test]
    fn datetimes_are_normalized_to_utc_micros() {
        let f = field(FieldType::Datetime);
        assert_eq!(
            validate_value(&f, &json!("2025-01-31T12:00:00+01:00")),
            Ok(json!("2025-01-31T11:00:00.000000Z"))
        );
        assert!(validate_value(&f, &json!("2025-01-31")).is_err());
        assert!(validate_value(&f, &json!("yesterday")).is_err());
    }

    #[test]
    fn dates_uuids_emails_urls() {
        assert!(validate_value(&field(FieldType::Date), &json!("2025-02-28")).is_ok());
        assert!(validate_value(&field(FieldType::Date), &json!("2025-02-30")).is_err());
        assert_eq!(
            validate_value(
                &field(FieldType::Uuid),
                &json!("0190A5B4-1C2D-7E3F-8A9B-0C1D2E3F4A5B")
            ),
            Ok(json!("0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b"))
        );
        assert!(validate_value(&field(FieldType::Email), &json!("a@b.co")).is_ok());
        assert!(validate_value(&field(FieldType::Email), &json!("a b@c.co")).is_err());
        assert!(validate_value(&field(FieldType::Email), &json!("a@localhost")).is_err());
        assert!(validate_value(&field(FieldType::Url), &json!("https://x.io/a?b")).is_ok());
        assert!(validate_value(&field(FieldType::Url), &json!("javascript:alert(1)")).is_err());
        for sneaky in [
            "https://x.io/a\r\nSet-Cookie: a=b",
            "https://x.io/\ta",
            " https://x.io/",
            "https://x.io/\u{7f}",
        ] {
            assert!(
                validate_value(&field(FieldType::Url), &json!(sneaky)).is_err(),
                "{sneaky:?}"
            );
        }
    }

    #[test]
    fn many_relations_reject_duplicates_and_count_items() {
        let mut f = field(FieldType::Relation(Relation {
            resource: "tags".into(),
            many: true,
            on_delete: crate::model::OnDelete::Cascade,
        }));
        f.max_length = Some(1);
        let id = "0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b";
        assert_eq!(validate_value(&f, &json!([id])), Ok(json!([id])));
        assert_eq!(
            validate_value(&f, &json!([id, id])).map_err(|e| e.len()),
            Err(1)
        );
        assert!(validate_value(&f, &json!(id)).is_err());
    }
}
