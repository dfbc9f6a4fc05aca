//! Access tokens: compact JWS signed with Ed25519 (`alg: EdDSA`), keys derived from the
//! deployment secret so every node signs and verifies alike, public keys published as
//! JWKS.
//!
//! Verification is deliberately narrow: the header must name exactly `EdDSA` and one of
//! our key ids, nothing else is honoured (no `none`, no HMAC, no embedded keys), the
//! signature is checked strictly, then issuer, audience, expiry and not-before against
//! the injected time with a small leeway.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use ferrobase_schema::settings::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The `iss` and `aud` of our tokens.
pub const ISSUER: &str = "ferrobase";
/// Tolerated clock difference between nodes, in seconds.
pub const LEEWAY_SECS: i64 = 30;
/// Longest token considered, in bytes.
const MAX_TOKEN_LEN: usize = 4096;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The user's role when the token was issued.
    pub role: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Not before (unix seconds).
    pub nbf: i64,
    /// Expires at (unix seconds).
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, forged, wrong algorithm, unknown key, wrong issuer or audience.
    Invalid,
    /// Past its expiry.
    Expired,
}

struct Key {
    kid: String,
    signing: SigningKey,
    verifying: VerifyingKey,
}

impl Key {
    fn derive(secret: &Secret) -> Self {
        let signing = SigningKey::from_bytes(&secret.derive("access-token-ed25519"));
        let verifying = signing.verifying_key();
        let digest = Sha256::digest(verifying.to_bytes());
        let kid = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            kid,
            signing,
            verifying,
        }
    }
}

/// Most verified tokens remembered; the memory is dropped when it fills.
const VERIFIED_CACHE: usize = 10_000;

/// The signing key (from `FERROBASE_SECRET`) and the keys still accepted.
pub struct JwtKeys {
    current: Key,
    previous: Option<Key>,
    /// Tokens whose signature was already checked, with their claims: an Ed25519
    /// verification costs more than the rest of a cached read, and clients reuse a
    /// token for many requests. Expiry is still checked on every use.
    verified: std::sync::RwLock<std::collections::HashMap<String, AccessClaims>>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "JwtKeys(kid={}, [private keys redacted])",
            self.current.kid
        )
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl JwtKeys {
    /// Keys for a secret and, during a rotation, the previous one.
    pub fn derive(secret: &Secret, previous: Option<&Secret>) -> Self {
        Self {
            current: Key::derive(secret),
            previous: previous.map(Key::derive),
            verified: std::sync::RwLock::new(std::collections::HashMap::new()),
        }
    }

    /// The id of the current key.
    pub fn kid(&self) -> &str {
        &self.current.kid
    }

    /// A signed token for `claims`.
    pub fn sign(&self, claims: &AccessClaims) -> String {
        let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": self.current.kid });
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(&payload));
        let signature: Signature = self.current.signing.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_bytes()))
    }

    /// Claims for `user` with `role`, valid from `now` for `ttl_secs`.
    pub fn claims(user: &str, role: &str, now: i64, ttl_secs: i64) -> AccessClaims {
        AccessClaims {
            iss: ISSUER.into(),
            aud: ISSUER.into(),
            sub: user.into(),
            role: role.into(),
            iat: now,
            nbf: now,
            exp: now + ttl_secs,
            jti: crate::secrets::random_token(),
        }
    }

    /// Verifies a token at `now` (unix seconds) and returns its claims.
    pub fn verify(&self, token: &str, now: i64) -> Result<AccessClaims, TokenError> {
        let known = self
            .verified
            .read()
            .ok()
            .and_then(|cache| cache.get(token).cloned());
        let claims = match known {
            Some(claims) => claims,
            None => {
                let claims = self.verify_signature(token)?;
                if let Ok(mut cache) = self.verified.write() {
                    if cache.len() >= VERIFIED_CACHE {
                        cache.clear();
                    }
                    cache.insert(token.to_owned(), claims.clone());
                }
                claims
            }
        };
        if claims.nbf > now + LEEWAY_SECS {
            return Err(TokenError::Invalid);
        }
        if claims.exp <= now - LEEWAY_SECS {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Everything that does not depend on the time: shape, header, signature, issuer
    /// and audience.
    fn verify_signature(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Invalid)?;
        let header = header.as_object().ok_or(TokenError::Invalid)?;
        // Only the fields we write are allowed; anything else (crit, jwk, jku, x5u, ...)
        // is a token we did not make.
        if header
            .keys()
            .any(|k| !matches!(k.as_str(), "alg" | "typ" | "kid"))
        {
            return Err(TokenError::Invalid);
        }
        if header.get("alg").and_then(Value::as_str) != Some("EdDSA") {
            return Err(TokenError::Invalid);
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or(TokenError::Invalid)?;
        let key = std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .find(|k| k.kid == kid)
            .ok_or(TokenError::Invalid)?;
        let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Invalid)?;
        let signature = Signature::from_slice(&signature).map_err(|_| TokenError::Invalid)?;
        let input = &token[..h.len() + 1 + p.len()];
        key.verifying
            .verify_strict(input.as_bytes(), &signature)
            .map_err(|_| TokenError::Invalid)?;
        let claims: AccessClaims = URL_SAFE_NO_PAD
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Invalid)?;
        if claims.iss != ISSUER || claims.aud != ISSUER || claims.sub.is_empty() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// The public keys as a JSON Web Key Set.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .map(|k| {
                json!({
                    "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                    "kid": k.kid, "x": b64(&k.verifying.to_bytes()),
                })
            })
            .collect();
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, KeyInit, Mac};

    fn keys() -> JwtKeys {
        JwtKeys::derive(&Secret::new("a".repeat(32)), None)
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn sign_and_verify() {
        let k = keys();
        let token = k.sign(&JwtKeys::claims("u1", "admin", NOW, 900));
        let claims = k.verify(&token, NOW + 10).expect("valid");
        assert_eq!((claims.sub.as_str(), claims.role.as_str()), ("u1", "admin"));
        // Another node with the same secret agrees; another secret does not.
        assert!(keys().verify(&token, NOW).is_ok());
        let other = JwtKeys::derive(&Secret::new("b".repeat(32)), None);
        assert_eq!(other.verify(&token, NOW), Err(TokenError::Invalid));
        // During a rotation the previous secret's tokens still verify.
        let rotated = JwtKeys::derive(
            &Secret::new("b".repeat(32)),
            Some(&Secret::new("a".repeat(32))),
        );
        assert!(rotated.verify(&token, NOW).is_ok());
    }

    #[test]
    fn expiry_and_not_before_use_the_given_time() {
        let k = keys();
        let token = k.sign(&JwtKeys::claims("u1", "user", NOW, 900));
        assert!(
            k.verify(&token, NOW + 900 + LEEWAY_SECS - 1).is_ok(),
            "within leeway"
        );
        assert_eq!(
            k.verify(&token, NOW + 900 + LEEWAY_SECS),
            Err(TokenError::Expired)
        );
        assert_eq!(
            k.verify(&token, NOW - LEEWAY_SECS - 1),
            Err(TokenError::Invalid),
            "not yet valid"
        );
    }

    fn forge(header: Value, claims: &AccessClaims, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64(header.to_string().as_bytes()),
            b64(&serde_json::to_vec(claims).expect("json")),
            b64(signature)
        )
    }

    #[test]
    fn forgeries_are_refused() {
        let k = keys();
        let token = k.sign(&JwtKeys::claims("u1", "user", NOW, 900));
        let mut admin = JwtKeys::claims("u1", "admin", NOW, 900);
        let parts: Vec<&str> = token.split('.').collect();
        // Payload changed under the original signature.
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_vec(&admin).expect("json")),
            parts[2]
        );
        assert_eq!(k.verify(&forged, NOW), Err(TokenError::Invalid));
        // alg: none.
        let none = forge(
            json!({"alg": "none", "typ": "JWT", "kid": k.kid()}),
            &admin,
            b"",
        );
        assert_eq!(k.verify(&none, NOW), Err(TokenError::Invalid));
        // HS256 with the public key as the HMAC secret (the classic confusion attack).
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": k.kid()});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(&serde_json::to_vec(&admin).expect("json"))
        );
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&k.current.verifying.to_bytes())
            .expect("key");
        mac.update(input.as_bytes());
        let hs = format!("{input}.{}", b64(&mac.finalize().into_bytes()));
        assert_eq!(k.verify(&hs, NOW), Err(TokenError::Invalid));
        // An embedded key, an unknown kid, a wrong audience, garbage.
        let jwk = forge(
            json!({"alg": "EdDSA", "kid": k.kid(), "jwk": {}}),
            &admin,
            &[0; 64],
        );
        assert_eq!(k.verify(&jwk, NOW), Err(TokenError::Invalid));
        let unknown = forge(json!({"alg": "EdDSA", "kid": "nope"}), &admin, &[0; 64]);
        assert_eq!(k.verify(&unknown, NOW), Err(TokenError::Invalid));
        admin.aud = "someone-else".into();
        let signed_elsewhere = k.sign(&admin);
        assert_eq!(k.verify(&signed_elsewhere, NOW), Err(TokenError::Invalid));
        for garbage in ["", "a.b", "a.b.c", "...", "x.y.z.w", &"a".repeat(5000)] {
            assert_eq!(
                k.verify(garbage, NOW),
                Err(TokenError::Invalid),
                "{garbage}"
            );
        }
    }

    #[test]
    fn jwks_publishes_the_public_key_only() {
        let k = keys();
        let jwks = k.jwks();
        assert_eq!(jwks["keys"][0]["kid"], k.kid());
        assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
        assert!(jwks["keys"][0].get("d").is_none());
    }
}
