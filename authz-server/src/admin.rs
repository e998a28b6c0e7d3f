//! The admin CLI's audit commands: checking the ledger's chain, reading its entries, and one
//! grant's whole account (the guard's CLI lists and ends subscriptions). Each function
//! writes its lines through `say` and returns the error to print (the binary exits 1 on it).

use shared_store::authz::ledger::{Entry, EntryKind, LedgerFilter, Verdict};
use shared_store::datetime;

use crate::store::Store;

/// How many entries are read at a time.
const PAGE: usize = 1000;

/// Reads a head recorded from an earlier `audit verify`: `SEQ:HASH`.
pub fn parse_head(text: &str) -> Result<(i64, String), String> {
    let bad = || format!("--head {text:?}: give the entry and its hash as SEQ:HASH");
    let (seq, hash) = text.split_once(':').ok_or_else(bad)?;
    let seq = seq.parse::<i64>().ok().filter(|s| *s > 0).ok_or_else(bad)?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok((seq, hash.to_ascii_lowercase()))
}

/// `audit verify`: reads the whole chain; an error when it is broken (or `head` is not in
/// it), naming the entry.
pub fn verify(
    store: &Store,
    head: Option<(i64, String)>,
    say: &mut dyn FnMut(String),
) -> Result<(), String> {
    let verdict = store
        .verify_ledger(head.as_ref().map(|(seq, hash)| (*seq, hash.as_str())))
        .map_err(|e| e.to_string())?;
    match verdict {
        Verdict::Intact { entries, head } => {
            say(format!("the ledger's {entries} entries chain"));
            say(format!("head: {entries}:{head}"));
            say("keep the head elsewhere and pass it to `audit verify --head` later: a ledger rewritten up to it would no longer match".into());
            Ok(())
        }
        Verdict::Broken { seq, problem } => {
            Err(format!("the ledger is broken at entry {seq}: {problem}"))
        }
    }
}

/// One entry as a line: `seq  time  kind  actor  owner  consumer  token  node  detail`,
/// tab-separated, `-` for what it does not name.
pub fn entry_line(e: &Entry) -> String {
    let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        e.seq,
        datetime::format(e.at_ms / 1000),
        e.kind,
        e.actor,
        dash(e.owner.as_deref()),
        dash(e.consumer_key.as_deref()),
        e.token_id.map_or("-".to_owned(), |t| t.to_string()),
        dash(e.node.as_deref()),
        e.detail
    )
}

/// `audit show`: the entries `filter` selects after `since`, oldest first.
pub fn show(
    store: &Store,
    filter: &LedgerFilter,
    since: i64,
    say: &mut dyn FnMut(String),
) -> Result<(), String> {
    let mut after = since;
    loop {
        let page = store
            .ledger(filter, after, PAGE)
            .map_err(|e| e.to_string())?;
        for e in &page {
            say(entry_line(e));
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = last.seq,
            _ => return Ok(()),
        }
    }
}

/// Reads an entry kind as `audit show --kind` takes it.
pub fn parse_kind(text: &str) -> Result<EntryKind, String> {
    EntryKind::ALL
        .into_iter()
        .find(|k| k.as_str() == text)
        .ok_or_else(|| {
            let names: Vec<&str> = EntryKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("--kind {text:?}: one of {}", names.join(", "))
        })
}

/// `token ledger ID`: one grant's account: who granted what to whom, its state, what it
/// delivered to each node, and its entries.
pub fn grant_ledger(
    store: &Store,
    id: i64,
    now: u64,
    say: &mut dyn FnMut(String),
) -> Result<(), String> {
    let token = store
        .access_token(id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no access token with id {id}"))?;
    let state = match (token.revoked_at, token.expires_at) {
        (Some(at), _) => format!("revoked at {}", datetime::format(at)),
        (None, Some(at)) if at <= now => format!("expired at {}", datetime::format(at)),
        (None, Some(at)) => format!("live, expires at {}", datetime::format(at)),
        (None, None) => "live".to_owned(),
    };
    say(format!(
        "grant {id}: {} to {} ({})",
        token.owner, token.consumer_name, token.consumer_key
    ));
    say(format!("scope: {}", token.scope));
    say(format!("granted: {}", datetime::format(token.created_at)));
    say(format!("state: {state}"));
    let deliveries = store.deliveries(id).map_err(|e| e.to_string())?;
    if deliveries.is_empty() {
        say("deliveries: none".into());
    }
    for d in &deliveries {
        say(format!(
            "delivered\t{}\t{} pushed\t{} fetched\tfirst {}\tlast {}",
            d.node,
            d.pushed,
            d.fetched,
            datetime::format(d.first_ms / 1000),
            datetime::format(d.last_ms / 1000)
        ));
    }
    let filter = LedgerFilter {
        token_id: Some(id),
        ..LedgerFilter::default()
    };
    show(store, &filter, 0, say)
}
