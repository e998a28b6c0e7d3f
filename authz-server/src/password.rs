//! Owners' passwords: hashed with Argon2id before they reach the store, and checked against
//! the stored hash. An unknown owner costs as much to check as a known one.

use oauth_xmpp::Secret;

use crate::store::{Result, Store, StoreError};

/// The shortest password an owner may have.
pub const MIN_LENGTH: usize = 8;

/// A fixed Argon2id hash (default parameters) of a random string, so that checking an
/// unknown owner costs as much as a known one.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                          3kmiPgyDwqTRqRVaUpiSdCLRPXONLBXYAF04qvzX8Sg";

/// The Argon2id hash (a PHC string, with a salt from the OS random generator) of `password`;
/// refused when it is shorter than [`MIN_LENGTH`].
pub fn hash(password: &Secret) -> Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    if password.expose().len() < MIN_LENGTH {
        return Err(StoreError::Refused(format!(
            "the password must be at least {MIN_LENGTH} characters"
        )));
    }
    let salt_bytes = crate::random::bytes::<16>()?;
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| StoreError::Password(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Password(e.to_string()))
}

/// Adds the owner `name` with `password`.
pub fn add_owner(store: &Store, name: &str, password: &Secret, now: u64) -> Result<()> {
    store.add_owner(name, &hash(password)?, now)
}

/// Whether `password` is the owner's. Unknown owners take as long as known ones.
pub fn check(store: &Store, name: &str, password: &Secret) -> Result<bool> {
    Ok(verify(store.password_hash(name)?.as_deref(), password))
}

/// Checks `password` against `hash`; with no hash, spends the same time on a dummy one.
fn verify(hash: Option<&str>, password: &Secret) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let parsed = PasswordHash::new(hash.unwrap_or(DUMMY_HASH));
    let Ok(parsed) = parsed else {
        return false;
    };
    let ok = argon2::Argon2::default()
        .verify_password(password.expose().as_bytes(), &parsed)
        .is_ok();
    ok && hash.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_owners_are_checked_against_a_real_hash() {
        // Otherwise an unknown name would answer at once and tell itself apart by timing.
        use argon2::password_hash::PasswordHash;
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn passwords_are_hashed_checked_and_unknown_owners_fail() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("authz.sqlite")).unwrap();
        add_owner(&store, "alice", &Secret::new("correct horse"), 100).unwrap();
        let stored = store.password_hash("alice").unwrap().unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("correct horse"));
        assert!(check(&store, "alice", &Secret::new("correct horse")).unwrap());
        assert!(!check(&store, "alice", &Secret::new("wrong horse!")).unwrap());
        assert!(!check(&store, "bob", &Secret::new("correct horse")).unwrap());
        assert_eq!(
            add_owner(&store, "bob", &Secret::new("short"), 1)
                .unwrap_err()
                .to_string(),
            StoreError::Refused("the password must be at least 8 characters".into()).to_string()
        );
    }
}
