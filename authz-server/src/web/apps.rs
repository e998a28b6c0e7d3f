//! `/apps`: the owner's view of the applications she authorized. For each grant: the
//! application, the nodes it covers, what it received (per node: items pushed and fetched,
//! and when last), the requests naming it that the guard refused on her nodes, and a revoke
//! button. After a revoke the page says when the last delivery under that grant happened.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use shared_store::authz::ledger::{Deliveries, Entry, EntryKind};
use shared_store::datetime;

use super::html::{message, page};
use super::pages::{describe_scope, form_session};
use super::signin::{failed_notice, session, sign_in_page};
use super::{AppState, see_other};
use crate::store::{self, AccessToken, RevokeBy, Store, StoreError};

/// How many of an application's latest refusals the page lists.
pub(crate) const REFUSALS_SHOWN: usize = 5;

/// One grant as the page shows it.
struct GrantView {
    token: AccessToken,
    deliveries: Vec<Deliveries>,
    refusals: Vec<Entry>,
    refused: u64,
}

impl GrantView {
    /// What the store knows of `token`'s use.
    fn read(store: &Store, token: AccessToken) -> Result<Self, StoreError> {
        let deliveries = store.deliveries(token.id)?;
        let refusals = store.latest_entries(
            &token.owner,
            &token.consumer_key,
            EntryKind::Refused,
            REFUSALS_SHOWN,
        )?;
        let refused = store.count_entries(&token.owner, &token.consumer_key, EntryKind::Refused)?;
        Ok(Self {
            token,
            deliveries,
            refusals,
            refused,
        })
    }
}

/// A time for the owner: `2026-12-02 16:04:05 UTC`.
fn when_secs(secs: u64) -> String {
    datetime::format(secs)
        .replacen('T', " ", 1)
        .replace('Z', " UTC")
}

fn when_ms(ms: u64) -> String {
    when_secs(ms / 1000)
}

/// The newest delivery of `deliveries` and how many items they hold in all.
fn last_delivery(deliveries: &[Deliveries]) -> Option<(u64, u64)> {
    let last = deliveries.iter().map(|d| d.last_ms).max()?;
    Some((last, deliveries.iter().map(Deliveries::items).sum()))
}

/// The sentence about what a grant received, for the grant's box and the revoke notice.
fn received(deliveries: &[Deliveries]) -> String {
    match last_delivery(deliveries) {
        Some((last, items)) => format!(
            "last received something on {} ({items} item{} in all)",
            when_ms(last),
            if items == 1 { "" } else { "s" }
        ),
        None => "has received nothing".to_owned(),
    }
}

fn grant_box(view: &GrantView, csrf: &str) -> Markup {
    let t = &view.token;
    html! {
        section.grant id={ "grant-" (t.id) } {
            h2.app { (t.consumer_name) }
            p { "Granted on " (when_secs(t.created_at)) "; it "
                span.received id={ "received-" (t.id) } { (received(&view.deliveries)) } "." }
            p { "It may read:" }
            ul { (describe_scope(&t.scope)) }
            @if !view.deliveries.is_empty() {
                table.deliveries id={ "deliveries-" (t.id) } {
                    tr { th { "Node" } th { "Pushed" } th { "Fetched" } th { "Last" } }
                    @for d in &view.deliveries {
                        tr {
                            td { code { (d.node) } }
                            td { (d.pushed) }
                            td { (d.fetched) }
                            td { (when_ms(d.last_ms)) }
                        }
                    }
                }
            }
            @if view.refused == 0 {
                p.refusals id={ "refusals-" (t.id) } { "No request naming it was refused." }
            } @else {
                p.refusals id={ "refusals-" (t.id) } {
                    (view.refused) " request" @if view.refused != 1 { "s" }
                    " naming it " @if view.refused == 1 { "was" } @else { "were" }
                    " refused on your nodes"
                    @if view.refused as usize > view.refusals.len() { "; the latest:" } @else { ":" }
                }
                ul.refusals {
                    @for e in &view.refusals {
                        li {
                            (when_ms(e.at_ms)) ", " code { (e.node.as_deref().unwrap_or("-")) }
                            ", from " code { (e.actor) } ": " (e.detail)
                        }
                    }
                }
            }
            form method="post" action="/apps/revoke" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="id" value=(t.id);
                button type="submit" id={ "revoke-" (t.id) } { "Revoke" }
            }
        }
    }
}

/// `GET /apps[?revoked=ID]`: the applications the signed-in owner authorized; after a
/// revoke, what the revoked grant last received.
pub(crate) async fn apps_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let session = match session(&state, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return sign_in_page(&state, &headers, StatusCode::OK, "/apps", None),
        Err(response) => return response,
    };
    let revoked_id = query.get("revoked").and_then(|id| id.parse::<i64>().ok());
    let owner = session.owner.clone();
    let now = store::now();
    let read = state
        .query(move |store| {
            let tokens = store.access_tokens(Some(&owner), None)?;
            // Only her own token, and only once revoked, is reported on.
            let revoked = match revoked_id {
                Some(id) => tokens
                    .iter()
                    .find(|t| t.id == id && t.revoked_at.is_some())
                    .map(|t| {
                        Ok::<_, StoreError>((t.consumer_name.clone(), store.deliveries(t.id)?))
                    })
                    .transpose()?,
                None => None,
            };
            let live = tokens
                .into_iter()
                .filter(|t| t.revoked_at.is_none() && t.expires_at.is_none_or(|at| at > now))
                .map(|t| GrantView::read(store, t))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((live, revoked))
        })
        .await;
    let (live, revoked) = match read {
        Ok(read) => read,
        Err(response) => return response,
    };
    let body = html! {
        (failed_notice(session.failed_before))
        @if let Some((name, deliveries)) = &revoked {
            p.notice #revoked {
                "You revoked " span.app { (name) } ". "
                @match last_delivery(deliveries) {
                    Some((last, items)) => {
                        "Its last delivery under this grant was on " (when_ms(last))
                        " (" (items) " item" @if items != 1 { "s" } " in all)."
                    }
                    None => { "It never received anything under this grant." }
                }
            }
        }
        h1 { "Your applications" }
        p { "Signed in as " b { (session.owner) } "." }
        @if live.is_empty() {
            p #none { "You have not authorized any application." }
        } @else {
            @for view in &live {
                (grant_box(view, &session.csrf))
            }
        }
        form method="post" action="/logout" {
            input type="hidden" name="csrf" value=(session.csrf);
            button type="submit" #sign-out { "Sign out" }
        }
    };
    page(StatusCode::OK, "Your applications", body)
}

/// `POST /apps/revoke`: revokes one of the signed-in owner's tokens, then shows her page
/// with what that grant last received.
pub(crate) async fn apps_revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let signed_out = || Redirect::to("/apps").into_response();
    let session = match form_session(&state, &headers, &form, signed_out).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let Some(id) = form.get("id").and_then(|i| i.parse::<i64>().ok()) else {
        return message(StatusCode::BAD_REQUEST, "No application", "Which one?");
    };
    let owner = session.owner.clone();
    let revoked = state
        .query(move |store| store.revoke_tokens(&RevokeBy::OwnerAndId(owner, id), store::now()))
        .await;
    match revoked {
        Ok(n) => {
            state.metrics.owner_revocations.inc_by(n as u64);
            tracing::info!(owner = %session.owner, id, revoked = n, "revoked from the owner's page");
            see_other(&format!("/apps?revoked={id}"))
        }
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(node: &str, pushed: u64, fetched: u64, last_ms: u64) -> Deliveries {
        Deliveries {
            token_id: 1,
            node: node.into(),
            pushed,
            fetched,
            first_ms: 0,
            last_ms,
        }
    }

    #[test]
    fn what_a_grant_received_is_said_in_words() {
        assert_eq!(received(&[]), "has received nothing");
        assert_eq!(
            received(&[delivered("/a", 1, 0, 1_764_691_445_000)]),
            "last received something on 2025-12-02 16:04:05 UTC (1 item in all)"
        );
        assert_eq!(
            received(&[
                delivered("/a", 3, 2, 1_764_691_445_000),
                delivered("/b", 0, 1, 1_764_691_446_999),
            ]),
            "last received something on 2025-12-02 16:04:06 UTC (6 items in all)"
        );
    }
}
