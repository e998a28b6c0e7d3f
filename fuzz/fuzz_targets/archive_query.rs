//! Fuzz target: reading a node's archive query (`pubsub_guard::archive::read`), XEP-0082
//! dates (`pubsub_guard::datetime`) and archive ids (`Item::parse_archive_id`).
//!
//! Properties: nothing panics, whatever the query's fields, values and RSM set; a date that
//! reads writes back to one that reads as the same second; an archive id that reads gives a
//! position and number whose own id reads back the same.
//!
//! Input: UTF-8 text. The whole text is tried as a date and as an archive id, then put
//! inside `<query xmlns='urn:xmpp:mam:2' node='/n'>…</query>` and, when that is XML, read as a
//! query.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pubsub_guard::stanza::Stanza;
use pubsub_guard::storage::Item;
use pubsub_guard::{archive, datetime};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(secs) = datetime::parse(text) {
        let written = datetime::format(secs);
        assert_eq!(datetime::parse(&written), Ok(secs), "{text:?} -> {written}");
    }
    if let Some((pos, seq)) = Item::parse_archive_id(text) {
        let item = Item {
            id: String::new(),
            payload: String::new(),
            publisher: String::new(),
            published_at: 0,
            pos,
            seq,
        };
        assert_eq!(Item::parse_archive_id(&item.archive_id()), Some((pos, seq)));
    }
    let xml = format!("<query xmlns='urn:xmpp:mam:2' node='/n' queryid='q'>{text}</query>");
    if let Ok(query) = xml.parse::<minidom::Element>() {
        // The service reads requests in their compact form, as the stream reader gives them.
        let query = Stanza::from_element(&query);
        if let Ok(request) = archive::read(query.root()) {
            assert!(request.max <= archive::MAX_PAGE);
            assert_eq!(request.node, "/n");
        }
    }
});
