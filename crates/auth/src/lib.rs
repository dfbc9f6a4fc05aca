//! Identity primitives: password hashing, signed access tokens (EdDSA JWT), opaque
//! refresh and session tokens, API keys, CSRF tokens and the login throttle. No I/O and
//! no HTTP: the store keeps what these produce, the HTTP layer speaks them.
#![forbid(unsafe_code)]

pub mod jwt;
pub mod mfa;
pub mod password;
pub mod secrets;
pub mod throttle;

pub use jwt::{AccessClaims, JwtKeys, TokenError};
pub use password::Passwords;
