//! Keyset cursors: opaque, signed, and bound to the resource and sort they were made for.
//!
//! A cursor is `base64url(payload) "." base64url(HMAC-SHA256(key, payload))`. The key is
//! derived from `FERROBASE_SECRET`, so cursors survive restarts and work on every node;
//! cursors signed with `FERROBASE_SECRET_PREVIOUS` are still accepted during a rotation.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// Longest cursor accepted, in bytes.
pub const MAX_CURSOR_LEN: usize = 4096;

/// Where a page ended: the sort values (and id) of its last record.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// The resource listed.
    pub resource: String,
    /// The canonical sort the page used (`-created_at,id`).
    pub sort: String,
    /// The last record's values for each sort key, tie-breaker included.
    pub values: Vec<Value>,
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorError {
    /// Not a cursor at all, or altered.
    Invalid,
    /// A genuine cursor for another resource or sort.
    Mismatch,
}

/// Signs and verifies cursors.
#[derive(Clone)]
pub struct CursorCodec {
    /// HMAC states already keyed (keying hashes two blocks; every page signs a cursor).
    current: Hmac<Sha256>,
    previous: Option<Hmac<Sha256>>,
}

/// What a cursor's token carries, written in this order.
#[derive(serde::Serialize)]
struct Payload<'a> {
    r: &'a str,
    s: &'a str,
    v: &'a [Value],
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorCodec([keys redacted])")
    }
}

fn mac(key: &[u8; 32]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

impl CursorCodec {
    /// A codec signing with `current` and also accepting `previous`.
    pub fn new(current: [u8; 32], previous: Option<[u8; 32]>) -> Self {
        Self {
            current: mac(&current),
            previous: previous.as_ref().map(mac),
        }
    }

    /// The opaque token for a cursor.
    pub fn encode(&self, cursor: &Cursor) -> String {
        let payload = serde_json::to_vec(&Payload {
            r: &cursor.resource,
            s: &cursor.sort,
            v: &cursor.values,
        })
        .unwrap_or_default();
        let body = URL_SAFE_NO_PAD.encode(payload);
        let mut m = self.current.clone();
        m.update(body.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
        format!("{body}.{tag}")
    }

    /// Verifies a token and checks it was made for `resource` and `sort`.
    pub fn decode(&self, token: &str, resource: &str, sort: &str) -> Result<Cursor, CursorError> {
        if token.len() > MAX_CURSOR_LEN {
            return Err(CursorError::Invalid);
        }
        let (body, tag) = token.split_once('.').ok_or(CursorError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| CursorError::Invalid)?;
        let verified = std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .any(|key| {
                let mut m = key.clone();
                m.update(body.as_bytes());
                m.verify_slice(&tag).is_ok()
            });
        if !verified {
            return Err(CursorError::Invalid);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| CursorError::Invalid)?;
        let payload: Value = serde_json::from_slice(&payload).map_err(|_| CursorError::Invalid)?;
        let (Some(r), Some(s), Some(v)) = (
            payload["r"].as_str(),
            payload["s"].as_str(),
            payload["v"].as_array(),
        ) else {
            return Err(CursorError::Invalid);
        };
        if r != resource || s != sort {
            return Err(CursorError::Mismatch);
        }
        Ok(Cursor {
            resource: r.to_owned(),
            sort: s.to_owned(),
            values: v.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cursor() -> Cursor {
        Cursor {
            resource: "posts".into(),
            sort: "-created_at,id".into(),
            values: vec![
                json!("2025-01-01T00:00:00.000000Z"),
                json!("0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b"),
            ],
        }
    }

    #[test]
    fn round_trip_and_binding() {
        let codec = CursorCodec::new([1; 32], None);
        let token = codec.encode(&cursor());
        assert_eq!(
            codec.decode(&token, "posts", "-created_at,id"),
            Ok(cursor())
        );
        assert_eq!(
            codec.decode(&token, "posts", "title,id"),
            Err(CursorError::Mismatch)
        );
        assert_eq!(
            codec.decode(&token, "users", "-created_at,id"),
            Err(CursorError::Mismatch)
        );
    }

    #[test]
    fn tampered_foreign_and_garbage_tokens_are_invalid() {
        let codec = CursorCodec::new([1; 32], None);
        let token = codec.encode(&cursor());
        let (body, tag) = token.split_once('.').expect("dot");
        let mut forged = cursor();
        forged.values[0] = json!("2000-01-01T00:00:00.000000Z");
        let forged_body = codec
            .encode(&forged)
            .split_once('.')
            .expect("dot")
            .0
            .to_owned();
        for bad in [
            format!("{forged_body}.{tag}"),
            format!("{body}.{}", &tag[1..]),
            format!("{body}x.{tag}"),
            CursorCodec::new([2; 32], None).encode(&cursor()),
            "garbage".into(),
            ".".into(),
            "a".repeat(MAX_CURSOR_LEN + 1),
        ] {
            assert_eq!(
                codec.decode(&bad, "posts", "-created_at,id"),
                Err(CursorError::Invalid),
                "{bad}"
            );
        }
    }

    #[test]
    fn previous_key_still_verifies() {
        let old = CursorCodec::new([1; 32], None);
        let rotated = CursorCodec::new([2; 32], Some([1; 32]));
        let token = old.encode(&cursor());
        assert_eq!(
            rotated.decode(&token, "posts", "-created_at,id"),
            Ok(cursor())
        );
    }
}
