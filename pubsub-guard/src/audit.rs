//! What the guard writes to the audit ledger (see [`shared_store::authz::ledger`]): each
//! refused subscribe, items or archive request, and what each grant delivered to each node.
//!
//! Deliveries are counted in memory while requests are handled and added to the store once
//! per request, or once per group under a group commit, in the transaction that sent them:
//! a count is committed with the items it counts.

use std::collections::HashMap;

use shared_store::Authorizations;
use shared_store::authz::ledger::{Delivered, EntryKind, NewEntry};
use tracing::warn;

use crate::ns;
use crate::refusal::Refusal;
use crate::stanza::ElementRef;

/// The deliveries counted since the last [`Deliveries::flush`], by node then token: a
/// notification to a node's thousands of subscribers looks each up by reference, and only a
/// new (node, token) allocates.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    counts: HashMap<String, HashMap<String, (u64, u64)>>,
}

impl Deliveries {
    /// One notification sent under `token` for `node`.
    pub(crate) fn pushed(&mut self, token: &str, node: &str) {
        self.entry(token, node).0 += 1;
    }

    /// `items` sent under `token` in answer to a request on `node`.
    pub(crate) fn fetched(&mut self, token: &str, node: &str, items: usize) {
        if items > 0 {
            self.entry(token, node).1 += items as u64;
        }
    }

    fn entry(&mut self, token: &str, node: &str) -> &mut (u64, u64) {
        if !self.counts.contains_key(node) {
            self.counts.insert(node.to_owned(), HashMap::new());
        }
        let tokens = self.counts.get_mut(node).expect("inserted above");
        if !tokens.contains_key(token) {
            tokens.insert(token.to_owned(), (0, 0));
        }
        tokens.get_mut(token).expect("inserted above")
    }

    /// Adds what was counted to the store, and forgets it. A failure is logged: the items
    /// went out, so they are not counted again.
    pub(crate) fn flush(&mut self, store: &dyn Authorizations) {
        if self.counts.is_empty() {
            return;
        }
        let mut batch = Vec::new();
        for (node, tokens) in self.counts.drain() {
            for (token, (pushed, fetched)) in tokens {
                batch.push(Delivered {
                    token,
                    node: node.clone(),
                    pushed,
                    fetched,
                });
            }
        }
        if let Err(e) = store.add_deliveries(&batch) {
            warn!(
                grants = batch.len(),
                "cannot add to the ledger's deliveries: {e}"
            );
        }
    }
}

/// Which request a refusal answered, if the ledger records its refusals: a subscribe, an
/// items request or an archive query.
pub(crate) fn audited_request(payload: ElementRef<'_>) -> Option<(&'static str, Option<&str>)> {
    if payload.is("query", ns::MAM) {
        return Some(("archive query", payload.attr("node")));
    }
    if !payload.is("pubsub", ns::PUBSUB) {
        return None;
    }
    payload
        .children()
        .find_map(|action| match (action.ns() == ns::PUBSUB, action.name()) {
            (true, "subscribe") => Some(("subscribe", action.attr("node"))),
            (true, "items") => Some(("items request", action.attr("node"))),
            _ => None,
        })
}

/// The consumer key an `<oauth/>` child of `payload` names (not proven by a signature that
/// failed; the entry says "named").
pub(crate) fn named_consumer(payload: ElementRef<'_>) -> Option<String> {
    payload
        .children()
        .filter(|c| oauth_xmpp::ns::OAUTH_ALIASES.contains(&c.ns()))
        .find_map(|oauth| {
            oauth
                .children()
                .find(|c| c.name() == "oauth_consumer_key")
                .map(|c| c.text())
        })
        .filter(|key| !key.is_empty())
}

/// The ledger's entry for `refusal` of `request` on `node` from `from`, to `owner`'s node.
pub(crate) fn refusal_entry(
    from: &str,
    request: &str,
    node: Option<&str>,
    owner: Option<String>,
    consumer: Option<String>,
    refusal: &Refusal,
) -> NewEntry {
    let problem = refusal.app.map(|(_, name, _)| name);
    let why = match problem {
        Some(problem) => format!("{} ({problem})", refusal.condition),
        None => refusal.condition.to_owned(),
    };
    let mut entry = NewEntry::new(
        EntryKind::Refused,
        from,
        format!("{request} refused: {why}: {}", refusal.text),
    );
    entry.node = node.map(str::to_owned);
    entry.owner = owner;
    entry.consumer_key = consumer;
    entry
}
