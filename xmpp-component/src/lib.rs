//! # xmpp-component
//!
//! What an XMPP external component (XEP-0114) and the project's reference clients share:
//!
//! - [`stream`]: the component stream: an incremental, sans-IO reader with per-stanza size
//!   and depth limits, the handshake, and the connection halves (reader and writer).
//! - [`stanza`]: a stanza as a compact tree, which the reader builds straight from the
//!   stanza's bytes (the guard reads its stanzas so) and which reads like a minidom element.
//! - [`ns`]: the XML namespaces the guard and the clients read and write.
//! - [`jid`]: JIDs (RFC 7622) normalized once at the edge, and compared as strings after.

pub mod jid;
pub mod ns;
pub mod stanza;
pub mod stream;
