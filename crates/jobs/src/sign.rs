//! Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`) and the job
//! tokens that authenticate a service's callbacks.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// The signing key of a secret: `whsec_<base64>` is the Standard Webhooks form (the
/// bytes after the prefix); any other text is used as it is.
pub fn secret_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| STANDARD.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The `webhook-signature` value of a message.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(key);
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    format!("v1,{}", STANDARD.encode(m.finalize().into_bytes()))
}

/// Makes and checks job tokens: `<attempt>.<base64url HMAC of "id.attempt">`. A token
/// names the attempt it was issued to, so a callback from an attempt that lost the job
/// is refused by the queue's fencing, not trusted.
#[derive(Clone)]
pub struct JobTokens {
    key: [u8; 32],
}

impl JobTokens {
    /// Tokens under `key` (derived from the project's secret).
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, id: &str, attempt: i32) -> Hmac<Sha256> {
        let mut m = mac(&self.key);
        m.update(id.as_bytes());
        m.update(b".");
        m.update(attempt.to_string().as_bytes());
        m
    }

    /// The token of attempt `attempt` of job `id`.
    pub fn issue(&self, id: &str, attempt: i32) -> String {
        let tag = self.mac(id, attempt).finalize().into_bytes();
        format!("{attempt}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The attempt a token was issued to, if it is genuine for job `id` (compared in
    /// constant time).
    pub fn verify(&self, id: &str, token: &str) -> Option<i32> {
        let (attempt, tag) = token.split_once('.')?;
        let attempt: i32 = attempt.parse().ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(id, attempt).verify_slice(&tag).ok()?;
        Some(attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_attempt_and_resist_tampering() {
        let tokens = JobTokens::new([7; 32]);
        let token = tokens.issue("job-1", 3);
        assert_eq!(tokens.verify("job-1", &token), Some(3));
        assert_eq!(tokens.verify("job-2", &token), None, "another job");
        let forged = token.replacen("3.", "4.", 1);
        assert_eq!(tokens.verify("job-1", &forged), None, "another attempt");
        assert_eq!(JobTokens::new([8; 32]).verify("job-1", &token), None);
        assert_eq!(tokens.verify("job-1", "garbage"), None);
    }

    #[test]
    fn whsec_secrets_are_base64_keys() {
        assert_eq!(secret_key("whsec_AQID"), vec![1, 2, 3]);
        assert_eq!(secret_key("plain"), b"plain".to_vec());
        assert!(signature(b"k", "id", 1, b"{}").starts_with("v1,"));
    }
}
