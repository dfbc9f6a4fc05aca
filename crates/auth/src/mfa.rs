//! Second factors (SPEC §6, MFA): TOTP codes (RFC 6238: HMAC-SHA1, 6 digits, 30-second
//! steps, one step of skew either way), single-use recovery codes, and the short-lived
//! token that carries a sign-in from the password step to the code step. No I/O: the
//! store keeps the secret, the last step used and the recovery codes' hashes; the caller
//! passes the time (tests inject it).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Secret, Totp};

/// Bytes of a TOTP secret (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;
/// Seconds per TOTP step.
pub const STEP_SECS: u64 = 30;
/// Recovery codes handed out when TOTP is confirmed.
pub const RECOVERY_CODES: usize = 10;
/// How long a sign-in may wait for its second factor, in seconds.
pub const MFA_TOKEN_TTL_SECS: i64 = 300;

/// A fresh random TOTP secret.
pub fn new_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).unwrap_or_else(|e| panic!("no randomness available: {e}"));
    bytes
}

/// The secret as authenticator apps take it (base32, no padding).
pub fn encode_secret(secret: &[u8]) -> String {
    Secret::from(secret).to_base32()
}

/// The raw bytes of a base32 secret as [`encode_secret`] wrote it.
pub fn decode_secret(text: &str) -> Option<Vec<u8>> {
    Secret::try_from_base32(text).ok().map(|s| s.to_vec())
}

fn totp(secret: &[u8], issuer: &str, account: &str) -> Option<Totp> {
    totp_rs::Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP_SECS)
        .with_secret(secret.to_vec())
        .with_issuer(Some(issuer.replace(':', "")))
        .with_account_name(account.replace(':', ""))
        .build()
        .ok()
}

/// The `otpauth://totp/...` URI an authenticator app scans.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    totp(secret, issuer, account)
        .and_then(|t| t.to_url().ok())
        .unwrap_or_default()
}

/// The step a code is valid for at `unix` (the current step or one either side), if it
/// is. Callers accept each step once per user (RFC 6238 §5.2): the store keeps the last.
pub fn check_code(secret: &[u8], code: &str, unix: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret, "ferrobase", "user")?.check(&code, unix)
}

/// The code of step `step` (for tests and clients written against this module).
pub fn code_at(secret: &[u8], unix: u64) -> String {
    totp(secret, "ferrobase", "user").map_or_else(String::new, |t| t.generate(unix).to_string())
}

/// Fresh recovery codes: `xxxxx-xxxxx`, 50 random bits each (lower-case base32).
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 10];
            getrandom::fill(&mut bytes).unwrap_or_else(|e| panic!("no randomness available: {e}"));
            let alphabet = b"abcdefghijkmnpqrstuvwxyz23456789";
            let chars: String = bytes
                .iter()
                .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
                .collect();
            format!("{}-{}", &chars[..5], &chars[5..])
        })
        .collect()
}

/// Whether a text is shaped like a recovery code (ten characters) rather than a TOTP
/// code (six digits).
pub fn looks_like_recovery_code(code: &str) -> bool {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).count() == 10
}

/// The stored form of `user`'s recovery code: an HMAC-SHA256 under a key derived from
/// the deployment's secret, over the user and the code's characters (lower-cased, dashes
/// and spaces ignored), so a copy of the database alone cannot be searched for codes.
pub fn recovery_hash(key: &[u8; 32], user: &str, code: &str) -> String {
    let bare: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(b"recovery:");
    mac.update(user.as_bytes());
    mac.update(b":");
    mac.update(bare.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What an MFA token is bound to: the password (its stored hash) and the TOTP secret at
/// the password step. Changing either refuses the tokens handed out before.
pub fn binding(password_hash: &str, totp_secret: &str) -> String {
    Sha256::digest(format!("{password_hash}\u{0}{totp_secret}").as_bytes())
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What an MFA token says: who passed the password step, how the session is to be
/// kept, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSignIn {
    /// The user.
    pub user_id: String,
    /// Whether the sign-in asked for a cookie session.
    pub cookie: bool,
    /// Unix seconds after which the token is refused.
    pub expires: i64,
    /// [`binding`] at the password step.
    pub binding: String,
}

/// Why an MFA token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaTokenError {
    /// Not one of ours, or altered.
    Invalid,
    /// Too old: sign in again.
    Expired,
}

/// Signs and checks MFA tokens (HMAC-SHA256 under a key derived from the deployment's
/// secret, so every node accepts every node's).
#[derive(Clone)]
pub struct MfaTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for MfaTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MfaTokens([redacted])")
    }
}

impl MfaTokens {
    /// Tokens under `key`.
    pub fn new(key: [u8; 32]) -> Self {
        MfaTokens { key }
    }

    fn mac(&self, payload: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(b"mfa:");
        mac.update(payload.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A token for `pending`.
    pub fn issue(&self, pending: &PendingSignIn) -> String {
        let payload = format!(
            "{}.{}.{}.{}",
            pending.user_id,
            u8::from(pending.cookie),
            pending.expires,
            pending.binding
        );
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let sig = self.mac(&payload);
        format!("{payload}.{sig}")
    }

    /// What a token says, if it is ours and still good at `now` (unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<PendingSignIn, MfaTokenError> {
        let (payload, sig) = token.rsplit_once('.').ok_or(MfaTokenError::Invalid)?;
        if !crate::secrets::constant_time_eq(self.mac(payload).as_bytes(), sig.as_bytes()) {
            return Err(MfaTokenError::Invalid);
        }
        let text = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(MfaTokenError::Invalid)?;
        // From the right: the user id is whatever is left.
        let mut parts = text.rsplitn(4, '.');
        let (Some(binding), Some(expires), Some(cookie), Some(user_id)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MfaTokenError::Invalid);
        };
        let expires: i64 = expires.parse().map_err(|_| MfaTokenError::Invalid)?;
        if now >= expires {
            return Err(MfaTokenError::Expired);
        }
        Ok(PendingSignIn {
            user_id: user_id.to_owned(),
            cookie: cookie == "1",
            expires,
            binding: binding.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B's SHA-1 secret and vectors (8 digits there; the last six are
    /// the 6-digit code).
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn codes_match_the_rfc_vectors() {
        for (time, eight) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
        ] {
            assert_eq!(code_at(RFC_SECRET, time), eight[2..], "t={time}");
        }
    }

    #[test]
    fn the_current_and_previous_steps_pass_others_do_not() {
        let secret = new_secret();
        let now = 1_800_000_000u64;
        let step = now / STEP_SECS;
        let current = code_at(&secret, now);
        assert_eq!(check_code(&secret, &current, now), Some(step));
        let previous = code_at(&secret, now - STEP_SECS);
        assert_eq!(check_code(&secret, &previous, now), Some(step - 1));
        let older = code_at(&secret, now - 3 * STEP_SECS);
        assert_eq!(check_code(&secret, &older, now), None, "two steps back");
        assert_eq!(check_code(&secret, "12345", now), None, "five digits");
        assert_eq!(check_code(&secret, "abcdef", now), None);
        let wrong = format!(
            "{:06}",
            (current.parse::<u32>().expect("digits") + 1) % 1_000_000
        );
        assert_eq!(check_code(&secret, &wrong, now), None);
        assert_eq!(
            decode_secret(&encode_secret(&secret)).as_deref(),
            Some(&secret[..])
        );
        let uri = otpauth_uri(&secret, "ferrobase", "ann@example.com");
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(uri.contains(&encode_secret(&secret)), "{uri}");
    }

    #[test]
    fn recovery_codes_hash_whatever_their_spelling() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), RECOVERY_CODES);
        let code = &codes[0];
        assert!(looks_like_recovery_code(code));
        assert!(
            looks_like_recovery_code("23456-78923"),
            "all digits, still ten"
        );
        assert!(!looks_like_recovery_code("123456"));
        let key = [3; 32];
        assert_eq!(
            recovery_hash(&key, "u1", code),
            recovery_hash(&key, "u1", &code.replace('-', " ").to_uppercase())
        );
        assert_ne!(
            recovery_hash(&key, "u1", code),
            recovery_hash(&key, "u1", &codes[1])
        );
        assert_ne!(
            recovery_hash(&key, "u1", code),
            recovery_hash(&key, "u2", code),
            "per user"
        );
        assert_ne!(
            recovery_hash(&key, "u1", code),
            recovery_hash(&[4; 32], "u1", code),
            "keyed"
        );
    }

    #[test]
    fn mfa_tokens_are_signed_and_expire() {
        let tokens = MfaTokens::new([7; 32]);
        let pending = PendingSignIn {
            user_id: "0190a5b4-1c2d.7e3f-8a9b-0c1d2e3f4a5b".into(),
            cookie: true,
            expires: 1000,
            binding: binding("$argon2id$...", "JBSWY3DP"),
        };
        let token = tokens.issue(&pending);
        assert_eq!(tokens.verify(&token, 999), Ok(pending));
        assert_eq!(tokens.verify(&token, 1000), Err(MfaTokenError::Expired));
        let other = MfaTokens::new([8; 32]);
        assert_eq!(other.verify(&token, 10), Err(MfaTokenError::Invalid));
        let (payload, sig) = token.rsplit_once('.').expect("two parts");
        let last = if payload.ends_with('A') { 'B' } else { 'A' };
        let forged = format!("{}{last}.{sig}", &payload[..payload.len() - 1]);
        assert_eq!(tokens.verify(&forged, 10), Err(MfaTokenError::Invalid));
        assert_eq!(tokens.verify("nonsense", 10), Err(MfaTokenError::Invalid));
    }
}
