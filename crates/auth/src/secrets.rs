//! Opaque secrets: refresh and session tokens, API keys, CSRF tokens. Only their SHA-256
//! is stored; they carry 256 bits of randomness, so a fast hash is enough.

use std::fmt::Write as _;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Prefix that marks API keys (`fbk_<id>_<secret>`), so they are recognisable in leaks
/// and distinguishable from JWTs.
pub const API_KEY_PREFIX: &str = "fbk_";

/// 256 random bits, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap_or_else(|e| panic!("no randomness available: {e}"));
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a token: hex SHA-256.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A hex SHA-256 over several parts, each length-prefixed so that no two different
/// sequences of parts share a fingerprint (idempotency keys, request fingerprints).
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut hex = String::with_capacity(64);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new API key for the key record `id`: `fbk_<id>_<secret>`.
pub fn new_api_key(id: &str) -> String {
    format!("{API_KEY_PREFIX}{}_{}", id.replace('-', ""), random_token())
}

/// The record id part of an API key, to look it up (`None` if it is not shaped like one).
pub fn api_key_id(key: &str) -> Option<String> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() < 43 {
        return None;
    }
    Some(format!(
        "{}-{}-{}-{}-{}",
        &id[..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..]
    ))
}

/// The CSRF token of a cookie session: an HMAC of the session id, so it needs no storage
/// and cannot be guessed without the secret.
pub fn csrf_token(key: &[u8; 32], session_id: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(b"csrf:");
    mac.update(session_id.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// A keyed MAC (HMAC-SHA256, base64url) of `payload` under `label`: signs values that
/// travel through a browser (an OAuth `state`) so that they cannot be forged.
pub fn mac(key: &[u8; 32], label: &str, payload: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(label.as_bytes());
    mac.update(b":");
    mac.update(payload.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_carry_their_id() {
        let id = "0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b";
        let key = new_api_key(id);
        assert!(key.starts_with("fbk_0190a5b41c2d7e3f8a9b0c1d2e3f4a5b_"));
        assert_eq!(api_key_id(&key).as_deref(), Some(id));
        assert_eq!(api_key_id("fbk_short_x"), None);
        assert_eq!(api_key_id("eyJhbGciOi.x.y"), None);
    }

    #[test]
    fn tokens_and_hashes() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
        assert_eq!(token_hash("x").len(), 64);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_ne!(csrf_token(&[1; 32], "s1"), csrf_token(&[1; 32], "s2"));
    }
}
