//! JIDs (RFC 7622) as the guard handles them. Every address that comes in (the `from` the
//! server stamps, the `jid` of a subscribe, the publishers of the config and the CLI) is
//! parsed and normalized once, at the edge, with the `jid` crate (nodeprep, nameprep,
//! resourceprep). Everywhere else, two addresses are the same exactly when their strings are,
//! so `FINDMENOW@LOCALHOST/x` and `findmenow@localhost` are one subscriber.

/// The normalized form of `address`, or why it is not a JID.
pub fn normalize(address: &str) -> Result<String, jid::Error> {
    Ok(jid::Jid::new(address)?.into_inner())
}

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

/// Whether two normalized JIDs have the same bare JID.
pub fn same_bare(a: &str, b: &str) -> bool {
    bare(a) == bare(b)
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
        assert!(!same_bare("alice@localhost", "alice@localhost.evil"));
    }

    #[test]
    fn normalizes_case_and_keeps_the_resource() {
        assert_eq!(
            normalize("FINDMENOW@LOCALHOST/x").unwrap(),
            "findmenow@localhost/x"
        );
        assert_eq!(
            normalize("FindMeNow@LocalHost").unwrap(),
            "findmenow@localhost"
        );
        assert!(same_bare(
            &normalize("FINDMENOW@LOCALHOST/x").unwrap(),
            &normalize("findmenow@localhost").unwrap()
        ));
        // The resource keeps its case (resourceprep does not fold it).
        assert_eq!(normalize("a@b/Phone").unwrap(), "a@b/Phone");
        assert!(normalize("a@b@c").is_err());
        assert!(normalize("").is_err());
        assert!(normalize("@localhost").is_err());
    }
}
