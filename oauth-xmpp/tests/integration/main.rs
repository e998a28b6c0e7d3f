//! The integration tests of `oauth-xmpp`, one binary: published vectors, one test per
//! profile rule, property tests, and the CLI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

mod cli;
mod profile;
mod properties;
mod vectors;

/// The XEP-0235 v0.7 example subscribe IQ, as shipped in `tests/data`.
pub(crate) const XEP_EXAMPLE: &str = include_str!("../data/xep0235-subscribe.xml");
