//! Passwords: Argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane), rehash when
//! the parameters change, and a dummy verification for unknown accounts so that "no such
//! user" and "wrong password" take the same time.
//!
//! Hashing costs tens of milliseconds of CPU: callers run it on the blocking pool.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest password accepted, in bytes.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted, in bytes (bounds hashing work).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// The configured hasher.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    /// PHC prefix of hashes made with the current parameters.
    prefix: String,
    /// A hash of a random password, verified against when the account does not exist.
    dummy: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The password matches.
    pub ok: bool,
    /// The stored hash uses other parameters and should be replaced.
    pub needs_rehash: bool,
}

/// Why a password cannot be used.
pub fn check_length(password: &str) -> Result<(), String> {
    match password.len() {
        n if n < MIN_PASSWORD_LEN => Err(format!("must be at least {MIN_PASSWORD_LEN} characters")),
        n if n > MAX_PASSWORD_LEN => Err(format!("must be at most {MAX_PASSWORD_LEN} bytes")),
        _ => Ok(()),
    }
}

fn salt() -> [u8; 16] {
    let mut salt = [0u8; 16];
    // Without randomness nothing secure can be done; this only fails on broken systems.
    getrandom::fill(&mut salt).unwrap_or_else(|e| panic!("no randomness available: {e}"));
    salt
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new(
            Params::DEFAULT_M_COST,
            Params::DEFAULT_T_COST,
            Params::DEFAULT_P_COST,
        )
    }
}

impl Passwords {
    /// A hasher with explicit costs (memory in KiB, passes, lanes).
    pub fn new(m_cost: u32, t_cost: u32, p_cost: u32) -> Self {
        let params = Params::new(m_cost, t_cost, p_cost, None).unwrap_or(Params::DEFAULT);
        let prefix = format!(
            "$argon2id$v=19$m={},t={},p={}$",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        );
        let mut me = Self {
            params,
            prefix,
            dummy: String::new(),
        };
        let random: String = salt().iter().map(|b| format!("{b:02x}")).collect();
        me.dummy = me.hash(&random);
        me
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// The PHC string of a new hash of `password`.
    pub fn hash(&self, password: &str) -> String {
        self.argon()
            .hash_password_with_salt(password.as_bytes(), &salt())
            .map(|h| h.to_string())
            // Only impossible parameter combinations fail, and `new` validated them.
            .unwrap_or_default()
    }

    /// Checks `password` against a stored hash (or, with `None`, against the dummy, so an
    /// unknown account costs the same time and always fails).
    pub fn verify(&self, password: &str, stored: Option<&str>) -> Verified {
        let (hash, real) = match stored {
            Some(h) if !h.is_empty() => (h, true),
            _ => (self.dummy.as_str(), false),
        };
        let ok = self
            .argon()
            .verify_password(password.as_bytes(), hash)
            .is_ok()
            && real;
        Verified {
            ok,
            needs_rehash: ok && !hash.starts_with(&self.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verify_and_rehash() {
        let cheap = Passwords::new(1024, 1, 1);
        let h = cheap.hash("correct horse");
        assert!(h.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert_eq!(
            cheap.verify("correct horse", Some(&h)),
            Verified {
                ok: true,
                needs_rehash: false
            }
        );
        assert!(!cheap.verify("wrong horse", Some(&h)).ok);
        assert!(
            !cheap.verify("correct horse", None).ok,
            "the dummy never matches"
        );
        let stronger = Passwords::new(2048, 1, 1);
        assert_eq!(
            stronger.verify("correct horse", Some(&h)),
            Verified {
                ok: true,
                needs_rehash: true
            }
        );
        assert!(!cheap.verify("x", Some("not a hash")).ok);
    }

    #[test]
    fn lengths() {
        assert!(check_length("1234567").is_err());
        assert!(check_length("12345678").is_ok());
        assert!(check_length(&"x".repeat(1025)).is_err());
    }
}
