//! An ID token's checks (OpenID Connect Core 3.1.3.7): an asymmetric signature by one of
//! the provider's published keys, the issuer, the audience (and `azp` when there are
//! several), the expiry and issue time against the server's clock, and the nonce.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

/// Clock skew tolerated between the provider and this server, in seconds.
const LEEWAY: i64 = 60;

/// What the token must say.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The issuer (`{tenantid}` stands for the token's `tid`).
    pub issuer: &'a str,
    /// Our client id: the audience.
    pub client_id: &'a str,
    /// The nonce sent with the authorization request.
    pub nonce: &'a str,
    /// Now, in Unix seconds (the server's clock).
    pub now: i64,
}

/// The claims used, from an ID token or a userinfo answer.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    /// The account's id at the provider.
    pub sub: String,
    /// Issuer.
    #[serde(default)]
    pub iss: Option<String>,
    /// Audience: a string or a list.
    #[serde(default)]
    pub aud: Option<Value>,
    /// Authorized party.
    #[serde(default)]
    pub azp: Option<String>,
    /// Expiry.
    #[serde(default)]
    pub exp: Option<i64>,
    /// Issue time.
    #[serde(default)]
    pub iat: Option<i64>,
    /// Not before.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// The nonce of the request.
    #[serde(default)]
    pub nonce: Option<String>,
    /// Email.
    #[serde(default)]
    pub email: Option<String>,
    /// Whether the provider verified the email (a boolean, or "true" from some).
    #[serde(default)]
    pub email_verified: Option<Value>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Microsoft's tenant.
    #[serde(default)]
    pub tid: Option<String>,
}

impl IdClaims {
    /// Whether the provider says the email is verified.
    pub fn email_verified(&self) -> bool {
        self.email.is_some() && matches!(&self.email_verified, Some(Value::Bool(true)))
            || matches!(&self.email_verified, Some(Value::String(s)) if s == "true")
                && self.email.is_some()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Signed with a key the provider does not (yet) publish.
    UnknownKey,
    /// Any other failed check.
    Invalid(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownKey => {
                f.write_str("the ID token is signed with a key the provider does not publish")
            }
            Self::Invalid(m) => write!(f, "the ID token {m}"),
        }
    }
}

fn invalid(m: &str) -> Failure {
    Failure::Invalid(m.to_owned())
}

/// Checks an ID token against the provider's keys and what the sign-in expects.
///
/// # Errors
/// The first check that failed.
pub fn verify_id_token(
    token: &str,
    keys: &JwkSet,
    expected: &Expected<'_>,
) -> Result<IdClaims, Failure> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("is not a JWT"))?;
    // Asymmetric algorithms only: never `none`, never an HMAC keyed by a public value.
    let allowed = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    if !allowed.contains(&header.alg) {
        return Err(invalid("uses an algorithm that is not accepted"));
    }
    // Signing keys only: a key published for encryption verifies nothing.
    let signing: Vec<&jsonwebtoken::jwk::Jwk> = keys
        .keys
        .iter()
        .filter(|k| {
            !matches!(
                k.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            )
        })
        .collect();
    let jwk = match &header.kid {
        Some(kid) => *signing
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid.as_str()))
            .ok_or(Failure::UnknownKey)?,
        None if signing.len() == 1 => signing[0],
        None => return Err(invalid("names no key and the provider publishes several")),
    };
    if let Some(key_alg) = jwk.common.key_algorithm
        && format!("{key_alg:?}") != format!("{:?}", header.alg)
    {
        return Err(invalid("is signed with an algorithm its key is not for"));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| invalid("names a key that cannot be used"))?;
    let mut validation = Validation::new(header.alg);
    // The claims are checked below against the server's clock, not the system's.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<IdClaims>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => invalid("has a bad signature"),
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                invalid("is signed with an algorithm its key is not for")
            }
            _ => invalid("could not be decoded"),
        })?
        .claims;
    let issuer = match &claims.tid {
        Some(tid) if expected.issuer.contains("{tenantid}") => {
            expected.issuer.replace("{tenantid}", tid)
        }
        _ => expected.issuer.to_owned(),
    };
    if claims.sub.is_empty() {
        return Err(invalid("names no subject"));
    }
    if claims.iss.as_deref() != Some(issuer.as_str()) {
        return Err(invalid("was issued by someone else"));
    }
    let audiences: Vec<&str> = match &claims.aud {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&expected.client_id) {
        return Err(invalid("is for another audience"));
    }
    // `azp`, when present, must be us (OpenID Core 3.1.3.7, 4-5).
    if (audiences.len() > 1 || claims.azp.is_some())
        && claims.azp.as_deref() != Some(expected.client_id)
    {
        return Err(invalid(
            "is for several audiences and not authorized for this one",
        ));
    }
    match claims.exp {
        Some(exp) if exp + LEEWAY > expected.now => {}
        Some(_) => return Err(invalid("has expired")),
        None => return Err(invalid("has no expiry")),
    }
    if claims.iat.is_some_and(|iat| iat > expected.now + LEEWAY)
        || claims.nbf.is_some_and(|nbf| nbf > expected.now + LEEWAY)
    {
        return Err(invalid("is not valid yet"));
    }
    let nonce_ok = claims.nonce.as_deref().is_some_and(|n| {
        n.len() == expected.nonce.len()
            && n.bytes()
                .zip(expected.nonce.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if !nonce_ok {
        return Err(invalid("carries another nonce"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::SigningKey;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    fn keypair(seed: u8) -> (EncodingKey, serde_json::Value) {
        let signing = SigningKey::from_bytes(&[seed; 32]);
        // PKCS #8 v1 of an Ed25519 seed (RFC 8410): a fixed prefix, then the seed.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&[seed; 32]);
        let public = URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes());
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": public, "kid": format!("k{seed}"), "alg": "EdDSA", "use": "sig"});
        (EncodingKey::from_ed_der(&der), jwk)
    }

    fn token(key: &EncodingKey, kid: &str, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, key).expect("sign")
    }

    fn good() -> serde_json::Value {
        json!({"iss": "https://id.example", "sub": "u1", "aud": "app", "exp": 2000, "iat": 1000, "nonce": "n1", "email": "a@example.com", "email_verified": true})
    }

    const EXPECTED: Expected<'static> = Expected {
        issuer: "https://id.example",
        client_id: "app",
        nonce: "n1",
        now: 1500,
    };

    fn check(claims: serde_json::Value) -> Result<IdClaims, Failure> {
        let (key, jwk) = keypair(1);
        let (_, other) = keypair(2);
        let set: JwkSet = serde_json::from_value(json!({"keys": [jwk, other]})).expect("jwks");
        verify_id_token(&token(&key, "k1", &claims), &set, &EXPECTED)
    }

    fn with(key: &str, value: serde_json::Value) -> serde_json::Value {
        let mut claims = good();
        claims[key] = value;
        claims
    }

    #[test]
    fn a_good_token_passes_and_each_check_refuses_its_case() {
        let claims = check(good()).expect("valid");
        assert_eq!(claims.sub, "u1");
        assert!(claims.email_verified());
        let refused = |claims, why: &str| {
            assert_eq!(
                check(claims).expect_err(why),
                Failure::Invalid(why.to_owned())
            );
        };
        refused(with("aud", json!("other")), "is for another audience");
        refused(
            with("aud", json!(["other", "app"])),
            "is for several audiences and not authorized for this one",
        );
        refused(
            with("iss", json!("https://evil.example")),
            "was issued by someone else",
        );
        refused(
            with("iss", json!("https://id.example/")),
            "was issued by someone else",
        );
        refused(with("sub", json!("")), "names no subject");
        refused(
            with("azp", json!("other")),
            "is for several audiences and not authorized for this one",
        );
        refused(with("exp", json!(1400)), "has expired");
        refused(with("iat", json!(1600)), "is not valid yet");
        refused(with("nonce", json!("n2")), "carries another nonce");
        let mut no_nonce = good();
        no_nonce.as_object_mut().expect("object").remove("nonce");
        refused(no_nonce, "carries another nonce");
        // Within the minute of skew the token still counts.
        assert!(check(with("exp", json!(1450))).is_ok());
        assert!(check(with("aud", json!(["app", "x"]))).is_err());
        let mut azp = with("aud", json!(["app", "x"]));
        azp["azp"] = json!("app");
        assert!(check(azp).is_ok());
        // An unverified or a string-flagged email.
        assert!(
            !check(with("email_verified", json!(false)))
                .expect("valid")
                .email_verified()
        );
        assert!(
            check(with("email_verified", json!("true")))
                .expect("valid")
                .email_verified()
        );
    }

    #[test]
    fn signatures_keys_and_algorithms() {
        let (key1, jwk1) = keypair(1);
        let (key3, _) = keypair(3);
        let set: JwkSet = serde_json::from_value(json!({"keys": [jwk1]})).expect("jwks");
        // Signed by a key that is not published under that kid: a bad signature.
        assert_eq!(
            verify_id_token(&token(&key3, "k1", &good()), &set, &EXPECTED).map(|c| c.sub),
            Err(Failure::Invalid("has a bad signature".into()))
        );
        // An unknown kid asks for a refresh of the keys.
        assert_eq!(
            verify_id_token(&token(&key1, "k9", &good()), &set, &EXPECTED).map(|c| c.sub),
            Err(Failure::UnknownKey)
        );
        // `alg: none` and HMAC are refused outright.
        let body = URL_SAFE_NO_PAD.encode(good().to_string());
        for alg in ["none", "HS256"] {
            let head = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": "k1"}).to_string());
            let forged = format!("{head}.{body}.");
            assert!(verify_id_token(&forged, &set, &EXPECTED).is_err(), "{alg}");
        }
        // A tampered payload fails the signature.
        let good_token = token(&key1, "k1", &good());
        let parts: Vec<&str> = good_token.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(with("sub", json!("admin")).to_string());
        let tampered = format!("{}.{evil}.{}", parts[0], parts[2]);
        assert_eq!(
            verify_id_token(&tampered, &set, &EXPECTED).map(|c| c.sub),
            Err(Failure::Invalid("has a bad signature".into()))
        );
    }

    #[test]
    fn microsoft_tenant_template() {
        let expected = Expected {
            issuer: "https://login.microsoftonline.com/{tenantid}/v2.0",
            ..EXPECTED
        };
        let (key, jwk) = keypair(1);
        let set: JwkSet = serde_json::from_value(json!({"keys": [jwk]})).expect("jwks");
        let mut claims = with("iss", json!("https://login.microsoftonline.com/t1/v2.0"));
        claims["tid"] = json!("t1");
        assert!(verify_id_token(&token(&key, "k1", &claims), &set, &expected).is_ok());
        claims["tid"] = json!("t2");
        assert!(verify_id_token(&token(&key, "k1", &claims), &set, &expected).is_err());
    }
}
