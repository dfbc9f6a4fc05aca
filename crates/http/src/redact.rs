//! Keeping secrets out of logs: credentials in headers and secret-looking query
//! parameters are replaced before anything is written.

use axum::http::HeaderMap;

/// What secrets are replaced with.
pub const REDACTED: &str = "[redacted]";

/// Headers whose values are always secret.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-csrf-token",
];

/// Query-parameter names that carry secrets when they contain one of these words.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "key",
    "auth",
    "code",
    "session",
    "signature",
    "cookie",
];

fn is_secret_param(name: &str) -> bool {
    SECRET_WORDS
        .iter()
        .any(|w| contains_ignoring_ascii_case(name, w))
}

fn contains_ignoring_ascii_case(haystack: &str, needle: &str) -> bool {
    needle.is_empty()
        || haystack
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The query string with the values of secret-looking parameters replaced; everything
/// else is kept as sent. (Once per logged request: one allocation.)
pub fn query(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for (i, pair) in raw.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let name = pair.split('=').next().unwrap_or_default();
        if form_urlencoded::parse(name.as_bytes()).any(|(k, _)| is_secret_param(&k)) {
            out.push_str(name);
            out.push('=');
            out.push_str(REDACTED);
        } else {
            out.push_str(pair);
        }
    }
    out
}

/// Request headers as `name: value` pairs, credentials replaced (for debug logs).
pub fn headers(headers: &HeaderMap) -> String {
    headers
        .iter()
        .map(|(name, value)| {
            let shown = if SECRET_HEADERS.contains(&name.as_str()) {
                REDACTED
            } else {
                value.to_str().unwrap_or("[binary]")
            };
            format!("{name}: {shown}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_parameters_are_redacted() {
        let q = query("limit=5&access_token=abc&Password=hunter2&page=2");
        assert_eq!(
            q,
            "limit=5&access_token=[redacted]&Password=[redacted]&page=2"
        );
    }

    #[test]
    fn credential_headers_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer abc".parse().expect("header"));
        h.insert("cookie", "sid=xyz".parse().expect("header"));
        h.insert("accept", "application/json".parse().expect("header"));
        let shown = headers(&h);
        assert!(!shown.contains("abc") && !shown.contains("xyz"), "{shown}");
        assert!(shown.contains("accept: application/json"), "{shown}");
    }
}
