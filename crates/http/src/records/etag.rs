//! Entity tags from record versions: `ETag`, `If-None-Match` (304) and `If-Match` (412).
//!
//! A record's ETag is its version as a strong tag, `"3"`: every write bumps the version,
//! so the tag changes exactly when the record does.

use axum::http::{HeaderMap, HeaderValue, header};

/// The ETag of a record version.
pub(crate) fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// Versions named by a header's list of strong tags; `None` for `*` or no header.
/// Weak or malformed tags name no version (strong comparison, RFC 9110 §13.1.1).
fn versions(headers: &HeaderMap, name: header::HeaderName) -> Option<Vec<i64>> {
    let raw: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if raw.is_empty() || raw.iter().any(|v| v.trim() == "*") {
        return None;
    }
    Some(
        raw.iter()
            .flat_map(|v| v.split(','))
            .filter_map(|tag| {
                tag.trim()
                    .strip_prefix('"')?
                    .strip_suffix('"')?
                    .parse::<i64>()
                    .ok()
            })
            .collect(),
    )
}

/// `If-Match` as the versions a write may apply to; `None` means unconditional.
pub(crate) fn if_match(headers: &HeaderMap) -> Option<Vec<i64>> {
    versions(headers, header::IF_MATCH)
}

/// Whether `If-None-Match` matches the current version (so a GET answers 304).
pub(crate) fn not_modified(headers: &HeaderMap, version: i64) -> bool {
    let Some(value) = headers.get(header::IF_NONE_MATCH) else {
        return false;
    };
    if value.to_str().is_ok_and(|v| v.trim() == "*") {
        return true;
    }
    // If-None-Match uses weak comparison: W/"3" matches "3".
    value.to_str().is_ok_and(|v| {
        v.split(',').any(|tag| {
            let tag = tag.trim();
            tag.strip_prefix("W/").unwrap_or(tag) == format!("\"{version}\"")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
        h
    }

    #[test]
    fn if_match_parses_strong_tags_only() {
        assert_eq!(if_match(&HeaderMap::new()), None);
        assert_eq!(if_match(&headers("if-match", "*")), None);
        assert_eq!(
            if_match(&headers("if-match", "\"3\", \"4\"")),
            Some(vec![3, 4])
        );
        assert_eq!(if_match(&headers("if-match", "W/\"3\"")), Some(vec![]));
        assert_eq!(if_match(&headers("if-match", "garbage")), Some(vec![]));
    }

    #[test]
    fn if_none_match_is_weak() {
        assert!(not_modified(&headers("if-none-match", "\"3\""), 3));
        assert!(not_modified(&headers("if-none-match", "W/\"3\""), 3));
        assert!(not_modified(&headers("if-none-match", "*"), 3));
        assert!(!not_modified(&headers("if-none-match", "\"2\""), 3));
        assert!(!not_modified(&HeaderMap::new(), 3));
    }
}
