//! The owner's pages: the authorize page (approve, narrow or deny), and the list of
//! applications she authorized, where she revokes them. Every form carries the session's
//! CSRF token; signing in is `signin.rs`.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use oauth_xmpp::Scope;

use super::html::{message, page, page_posting_to};
use super::signin::{end_session_cookie, failed_notice, session, sign_in_page};
use super::targets::callback_origin;
use super::{AppState, internal, see_other};
use crate::store::{self, RevokeBy, Session, StoreError, TemporaryState, TemporaryToken};

fn csrf_ok(session: &Session, form: &HashMap<String, String>) -> bool {
    let given = form.get("csrf").map_or("", String::as_str);
    subtle::ConstantTimeEq::ct_eq(given.as_bytes(), session.csrf.as_bytes()).into()
}

/// The session a posted form acts for: signed in, and the form carries its CSRF token.
/// Otherwise the answer to send: `signed_out()`, 403, or 500.
async fn form_session(
    state: &AppState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    signed_out: impl FnOnce() -> Response,
) -> Result<Session, Response> {
    let Some(session) = session(state, headers).await? else {
        return Err(signed_out());
    };
    if !csrf_ok(&session, form) {
        return Err(message(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form did not come from this site (bad CSRF token).",
        ));
    }
    Ok(session)
}

/// `GET /`: the owner's applications.
pub(crate) async fn home() -> Redirect {
    Redirect::to("/apps")
}

/// `POST /logout`.
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Ok(Some(s)) = session(&state, &headers).await
        && csrf_ok(&s, &form)
    {
        let id = s.id.clone();
        if let Err(response) = state.query(move |store| store.delete_session(&id)).await {
            return response;
        }
    }
    let mut response = see_other("/apps");
    if let Ok(v) = axum::http::HeaderValue::from_str(&end_session_cookie(&state)) {
        response
            .headers_mut()
            .insert(axum::http::header::SET_COOKIE, v);
    }
    response
}

/// The temporary credentials `token`, if they exist.
async fn temporary(state: &AppState, token: &str) -> Result<Option<TemporaryToken>, Response> {
    let token = token.to_owned();
    state.query(move |store| store.temporary(&token)).await
}

fn describe_scope(scope: &Scope) -> Markup {
    html! {
        @if scope.entries().iter().any(|e| e == "*") {
            li { "all of your nodes" }
        } @else {
            @for e in scope.entries() {
                @if e.ends_with('/') {
                    li { "every node under " code { (e) } }
                } @else {
                    li { code { (e) } }
                }
            }
        }
    }
}

/// `GET /oauth/authorize?oauth_token=…`: sign in, then approve or deny.
pub(crate) async fn authorize_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(token) = query.get("oauth_token").cloned() else {
        return message(
            StatusCode::BAD_REQUEST,
            "No request to authorize",
            "This page needs an oauth_token: follow the link the application gave you.",
        );
    };
    let temporary = match temporary(&state, &token).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return message(
                StatusCode::NOT_FOUND,
                "Unknown request",
                "This authorization request does not exist. Ask the application to start again.",
            );
        }
        Err(response) => return response,
    };
    if temporary.state != TemporaryState::Pending {
        return message(
            StatusCode::CONFLICT,
            "Already answered",
            "This authorization request was already answered.",
        );
    }
    if temporary.expires_at <= store::now() {
        return message(
            StatusCode::GONE,
            "Request expired",
            "This authorization request has expired. Ask the application to start again.",
        );
    }
    let session = match session(&state, &headers).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let Some(session) = session else {
        let next = format!(
            "/oauth/authorize?oauth_token={}",
            oauth_xmpp::encode::percent_encode(&token)
        );
        return sign_in_page(&state, &headers, StatusCode::OK, &next, None);
    };
    let app = &temporary.consumer_name;
    let body = html! {
        (failed_notice(session.failed_before))
        h1 { "Authorize " span.app { (app) } "?" }
        p { "Signed in as " b { (session.owner) } "." }
        p {
            "The application " span.app { (app) }
            " asks to receive, over XMPP, the updates of:"
        }
        ul #nodes { (describe_scope(&temporary.scope)) }
        form method="post" action="/oauth/authorize" {
            input type="hidden" name="oauth_token" value=(temporary.token);
            input type="hidden" name="csrf" value=(session.csrf);
            label {
                "Nodes to grant (you may narrow this list; space-separated, a trailing "
                code { "/" } " means every node below) "
                input type="text" #scope name="scope" value=(temporary.scope.to_string());
            }
            button type="submit" name="decision" value="approve" #approve { "Approve" }
            button type="submit" name="decision" value="deny" #deny { "Deny" }
        }
        p { "You can revoke this later on " a href="/apps" { "your applications" } " page." }
    };
    // The answer redirects to the callback: `form-action` must allow its origin.
    let origin = callback_origin(&temporary.callback);
    page_posting_to(
        StatusCode::OK,
        "Authorize an application",
        body,
        origin.as_deref(),
    )
}

/// Appends `pairs` to `callback`'s query.
fn with_query(callback: &str, pairs: &[(&str, &str)]) -> String {
    let sep = if callback.contains('?') { '&' } else { '?' };
    format!(
        "{callback}{sep}{}",
        oauth_xmpp::http::form_encode(pairs.iter().copied())
    )
}

/// `POST /oauth/authorize`: the owner's answer.
pub(crate) async fn authorize_answer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let signed_out = || {
        message(
            StatusCode::UNAUTHORIZED,
            "Signed out",
            "Your session has ended: open the authorization link again.",
        )
    };
    let session = match form_session(&state, &headers, &form, signed_out).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let token = form.get("oauth_token").cloned().unwrap_or_default();
    let temporary = match temporary(&state, &token).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return message(StatusCode::NOT_FOUND, "Unknown request", "No such request.");
        }
        Err(response) => return response,
    };
    let now = store::now();
    let oob = temporary.callback == "oob";
    match form.get("decision").map(String::as_str) {
        Some("approve") => {
            let scope = Scope::parse(form.get("scope").map_or("", String::as_str));
            let approved = {
                let (token, owner, scope) = (token.clone(), session.owner.clone(), scope.clone());
                state
                    .db(move |store| store.approve(&token, &owner, &scope, now))
                    .await
            };
            match approved {
                Ok(Ok(verifier)) => {
                    tracing::info!(owner = %session.owner, consumer = %temporary.consumer_key, %scope, "approved");
                    if oob {
                        let body = html! {
                            h1 { "Approved" }
                            p { "Give this code to " span.app { (temporary.consumer_name) } ":" }
                            p { code #verifier { (verifier) } }
                        };
                        page(StatusCode::OK, "Approved", body)
                    } else {
                        see_other(&with_query(
                            &temporary.callback,
                            &[("oauth_token", &token), ("oauth_verifier", &verifier)],
                        ))
                    }
                }
                Ok(Err(StoreError::Refused(reason))) => {
                    message(StatusCode::BAD_REQUEST, "Not approved", &reason)
                }
                Ok(Err(e)) => internal(e),
                Err(response) => response,
            }
        }
        Some("deny") => {
            let denied = {
                let token = token.clone();
                state.db(move |store| store.deny(&token, now)).await
            };
            match denied {
                Ok(Ok(())) => {
                    tracing::info!(owner = %session.owner, consumer = %temporary.consumer_key, "denied");
                    if oob {
                        message(
                            StatusCode::OK,
                            "Denied",
                            &format!("You denied {} access.", temporary.consumer_name),
                        )
                    } else {
                        see_other(&with_query(
                            &temporary.callback,
                            &[
                                ("oauth_token", &token),
                                ("oauth_problem", "permission_denied"),
                            ],
                        ))
                    }
                }
                Ok(Err(StoreError::Refused(reason))) => {
                    message(StatusCode::BAD_REQUEST, "Not denied", &reason)
                }
                Ok(Err(e)) => internal(e),
                Err(response) => response,
            }
        }
        _ => message(
            StatusCode::BAD_REQUEST,
            "No decision",
            "Press Approve or Deny.",
        ),
    }
}

/// `GET /apps`: the applications the signed-in owner authorized.
pub(crate) async fn apps_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match session(&state, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return sign_in_page(&state, &headers, StatusCode::OK, "/apps", None),
        Err(response) => return response,
    };
    let tokens = {
        let owner = session.owner.clone();
        match state
            .query(move |store| store.access_tokens(Some(&owner), None))
            .await
        {
            Ok(t) => t,
            Err(response) => return response,
        }
    };
    let now = store::now();
    let live: Vec<_> = tokens
        .iter()
        .filter(|t| t.revoked_at.is_none() && t.expires_at.is_none_or(|at| at > now))
        .collect();
    let body = html! {
        (failed_notice(session.failed_before))
        h1 { "Your applications" }
        p { "Signed in as " b { (session.owner) } "." }
        @if live.is_empty() {
            p #none { "You have not authorized any application." }
        } @else {
            table #apps {
                tr { th { "Application" } th { "Nodes" } th {} }
                @for t in &live {
                    tr {
                        td.app { (t.consumer_name) }
                        td { (t.scope.to_string()) }
                        td {
                            form method="post" action="/apps/revoke" {
                                input type="hidden" name="csrf" value=(session.csrf);
                                input type="hidden" name="id" value=(t.id);
                                button type="submit" id={ "revoke-" (t.id) } { "Revoke" }
                            }
                        }
                    }
                }
            }
        }
        form method="post" action="/logout" {
            input type="hidden" name="csrf" value=(session.csrf);
            button type="submit" #sign-out { "Sign out" }
        }
    };
    page(StatusCode::OK, "Your applications", body)
}

/// `POST /apps/revoke`: revokes one of the signed-in owner's tokens.
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
            see_other("/apps")
        }
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_query_is_appended() {
        assert_eq!(
            with_query("http://c.example/cb", &[("a", "1 2")]),
            "http://c.example/cb?a=1%202"
        );
        assert_eq!(
            with_query("http://c.example/cb?x=1", &[("a", "b")]),
            "http://c.example/cb?x=1&a=b"
        );
    }

    #[test]
    fn scopes_are_described_with_escaped_names() {
        assert_eq!(
            describe_scope(&Scope::parse("/a/<b> /photos/")).into_string(),
            "<li><code>/a/&lt;b&gt;</code></li><li>every node under <code>/photos/</code></li>"
        );
        assert_eq!(
            describe_scope(&Scope::all()).into_string(),
            "<li>all of your nodes</li>"
        );
    }
}
