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

/// The hash to import for the owner `name` whose password is `password`: the stored one when
/// she exists with this password (so importing the same file again changes nothing), else a
/// new one (which the import refuses as a conflict if she exists).
pub fn import_hash(store: &Store, name: &str, password: &Secret) -> Result<String> {
    if let Some(stored) = store.password_hash(name)?
        && verify(Some(&stored), password)
    {
        return Ok(stored);
    }
    hash(password)
}

/// Checks that `hash` is a PHC string of an Argon2 hash, which [`check`] can verify.
pub fn check_hash(hash: &str) -> std::result::Result<(), String> {
    let parsed = argon2::password_hash::PasswordHash::new(hash)
        .map_err(|e| format!("the password_hash is not a PHC string ({e})"))?;
    let algorithm = parsed.algorithm.as_str();
    if !matches!(algorithm, "argon2id" | "argon2i" | "argon2d") || parsed.hash.is_none() {
        return Err(format!(
            "the password_hash must be an Argon2 hash ($argon2id$…), not {algorithm}"
        ));
    }
    Ok(())
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
    fn imported_hashes_are_checked_and_reused_for_the_same_password() {
        assert_eq!(check_hash(DUMMY_HASH), Ok(()));
        assert_eq!(
            check_hash("$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"),
            Err("the password_hash must be an Argon2 hash ($argon2id$…), not pbkdf2-sha256".into())
        );
        assert!(
            check_hash("secret")
                .unwrap_err()
                .starts_with("the password_hash is not a PHC string")
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("authz.sqlite")).unwrap();
        add_owner(&store, "alice", &Secret::new("correct horse"), 100).unwrap();
        let stored = store.password_hash("alice").unwrap().unwrap();
        let same = Secret::new("correct horse");
        assert_eq!(import_hash(&store, "alice", &same).unwrap(), stored);
        let other = import_hash(&store, "alice", &Secret::new("other horse")).unwrap();
        assert_ne!(other, stored);
        assert!(verify(Some(&other), &Secret::new("other horse")));
        let new = import_hash(&store, "bob", &same).unwrap();
        assert!(verify(Some(&new), &same));
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
