//! The little JID handling the guard needs (RFC 7622): the bare part and the domain.
//!
//! The server has already checked the addresses it stamps on stanzas, so these helpers only
//! split them; they never accept a JID from a client without comparing it to one the server
//! stamped.

/// The JID without its resource: `alice@localhost/phone` → `alice@localhost`.
pub fn bare(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(bare, _)| bare)
}

/// The domain part: `alice@localhost/phone` → `localhost`.
pub fn domain(jid: &str) -> &str {
    let bare = bare(jid);
    bare.split_once('@').map_or(bare, |(_, domain)| domain)
}

/// Whether the JID has a local part (`user@…`).
pub fn has_local(jid: &str) -> bool {
    bare(jid).contains('@')
}

/// Whether two JIDs have the same bare JID. Local part and domain compare without regard to
/// ASCII case (the server has already applied nodeprep/nameprep to what it stamps).
pub fn same_bare(a: &str, b: &str) -> bool {
    bare(a).eq_ignore_ascii_case(bare(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits() {
        assert_eq!(bare("alice@localhost/phone/2"), "alice@localhost");
        assert_eq!(bare("alice@localhost"), "alice@localhost");
        assert_eq!(domain("alice@localhost/phone"), "localhost");
        assert_eq!(domain("pubsub.localhost"), "pubsub.localhost");
        assert_eq!(domain("pubsub.localhost/x@y"), "pubsub.localhost");
        assert!(has_local("a@b/c"));
        assert!(!has_local("b/c@d"));
        assert!(same_bare("Alice@Localhost/x", "alice@localhost"));
        assert!(!same_bare("alice@localhost", "alice@localhost.evil"));
    }
}
