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
    let name = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| name.contains(w))
}

/// The query string with the values of secret-looking parameters replaced; everything
/// else is kept as sent.
pub fn query(raw: &str) -> String {
    raw.split('&')
        .map(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            let decoded: String = form_urlencoded::parse(name.as_bytes())
                .map(|(k, _)| k.into_owned())
                .collect();
            if is_secret_param(&decoded) {
                format!("{name}={REDACTED}")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
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
