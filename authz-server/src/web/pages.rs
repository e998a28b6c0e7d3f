//! The owner's pages: sign in, the authorize page (approve, narrow or deny), and the list
//! of applications she authorized, where she revokes them. Every form carries the
//! session's CSRF token; the session cookie is `HttpOnly; SameSite=Lax`.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use oauth_xmpp::{Scope, Secret};

use super::{AppState, internal};
use crate::store::{self, RevokeBy, Session, StoreError, TemporaryState};

const COOKIE: &str = "authz_session";

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em;color:#222}}\
         h1{{font-size:1.4em}} .app{{font-weight:bold}} code{{background:#f3f3f3;padding:0 .2em}}\
         form{{margin:1em 0}} label{{display:block;margin:.5em 0}} input[type=text],input[type=password]{{width:100%;padding:.3em}}\
         button{{padding:.4em 1.2em;margin-right:.5em}} #approve{{background:#2a7;color:#fff;border:0}}\
         #deny{{background:#c33;color:#fff;border:0}} table{{border-collapse:collapse;width:100%}}\
         td,th{{border-bottom:1px solid #ddd;padding:.3em;text-align:left}} .error{{color:#b00}}\
         </style></head><body>{body}</body></html>\n",
        title = esc(title)
    );
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        Html(html),
    )
        .into_response()
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    page(
        status,
        title,
        &format!("<h1>{}</h1><p>{}</p>", esc(title), esc(text)),
    )
}

/// The signed-in session of this request, if any.
fn session(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, StoreError> {
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned());
    match id {
        Some(id) => state.store.session(&id, store::now()),
        None => Ok(None),
    }
}

fn csrf_ok(session: &Session, form: &HashMap<String, String>) -> bool {
    let given = form.get("csrf").map_or("", String::as_str);
    subtle::ConstantTimeEq::ct_eq(given.as_bytes(), session.csrf.as_bytes()).into()
}

/// The session a posted form acts for: signed in, and the form carries its CSRF token.
/// Otherwise the answer to send: `signed_out()`, 403, or 500.
fn form_session(
    state: &AppState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    signed_out: impl FnOnce() -> Response,
) -> Result<Session, Box<Response>> {
    let session = match session(state, headers) {
        Ok(Some(s)) => s,
        Ok(None) => return Err(Box::new(signed_out())),
        Err(e) => return Err(Box::new(internal(e))),
    };
    if !csrf_ok(&session, form) {
        return Err(Box::new(message(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form did not come from this site (bad CSRF token).",
        )));
    }
    Ok(session)
}

fn sign_in_form(next: &str, error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\">{}</p>", esc(e))
    });
    format!(
        "<h1>Sign in</h1>{error}\
         <form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label>Name <input type=\"text\" id=\"name\" name=\"name\" autocomplete=\"username\" required></label>\
         <label>Password <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\" id=\"sign-in\">Sign in</button></form>",
        next = esc(next)
    )
}

/// Only local paths are followed after signing in (no open redirect).
fn local_path(next: Option<&String>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/apps",
    }
}

/// `GET /`: the owner's applications.
pub(crate) async fn home() -> Redirect {
    Redirect::to("/apps")
}

/// `POST /login`: name and password; sets the session cookie and goes to `next`.
pub(crate) async fn login(
    State(state): State<AppState>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let next = local_path(form.get("next")).to_owned();
    let name = form.get("name").map_or("", String::as_str).trim();
    let password = Secret::new(form.get("password").cloned().unwrap_or_default());
    let ok = match state.store.check_password(name, &password) {
        Ok(ok) => ok,
        Err(e) => return internal(e),
    };
    if !ok {
        tracing::info!(owner = name, "sign-in refused");
        return page(
            StatusCode::UNAUTHORIZED,
            "Sign in",
            &sign_in_form(&next, Some("That name and password do not match.")),
        );
    }
    let session =
        match state
            .store
            .create_session(name, state.config.session_lifetime_secs, store::now())
        {
            Ok(s) => s,
            Err(e) => return internal(e),
        };
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        session.id, state.config.session_lifetime_secs
    );
    see_other(&next, Some(cookie))
}

/// A 303 to `location`, setting `cookie` if given.
fn see_other(location: &str, cookie: Option<String>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
    if let Some(value) = cookie.and_then(|c| header::HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /logout`.
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Ok(Some(s)) = session(&state, &headers)
        && csrf_ok(&s, &form)
        && let Err(e) = state.store.delete_session(&s.id)
    {
        return internal(e);
    }
    see_other("/apps", Some(format!("{COOKIE}=; Path=/; Max-Age=0")))
}

fn describe_scope(scope: &Scope) -> String {
    if scope.entries().iter().any(|e| e == "*") {
        return "<li>all of your nodes</li>".into();
    }
    scope
        .entries()
        .iter()
        .map(|e| {
            if e.ends_with('/') {
                format!("<li>every node under <code>{}</code></li>", esc(e))
            } else {
                format!("<li><code>{}</code></li>", esc(e))
            }
        })
        .collect()
}

/// `GET /oauth/authorize?oauth_token=…`: sign in, then approve or deny.
pub(crate) async fn authorize_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(token) = query.get("oauth_token") else {
        return message(
            StatusCode::BAD_REQUEST,
            "No request to authorize",
            "This page needs an oauth_token: follow the link the application gave you.",
        );
    };
    let temporary = match state.store.temporary(token) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return message(
                StatusCode::NOT_FOUND,
                "Unknown request",
                "This authorization request does not exist. Ask the application to start again.",
            );
        }
        Err(e) => return internal(e),
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
    let session = match session(&state, &headers) {
        Ok(s) => s,
        Err(e) => return internal(e),
    };
    let Some(session) = session else {
        let next = format!(
            "/oauth/authorize?oauth_token={}",
            oauth_xmpp::encode::percent_encode(token)
        );
        return page(StatusCode::OK, "Sign in", &sign_in_form(&next, None));
    };
    let body = format!(
        "<h1>Authorize <span class=\"app\">{app}</span>?</h1>\
         <p>Signed in as <b>{owner}</b>.</p>\
         <p>The application <span class=\"app\">{app}</span> asks to receive, over XMPP, \
         the updates of:</p><ul id=\"nodes\">{nodes}</ul>\
         <form method=\"post\" action=\"/oauth/authorize\">\
         <input type=\"hidden\" name=\"oauth_token\" value=\"{token}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>Nodes to grant (you may narrow this list; space-separated, a trailing \
         <code>/</code> means every node below) \
         <input type=\"text\" id=\"scope\" name=\"scope\" value=\"{scope}\"></label>\
         <button type=\"submit\" name=\"decision\" value=\"approve\" id=\"approve\">Approve</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Deny</button>\
         </form><p>You can revoke this later on <a href=\"/apps\">your applications</a> page.</p>",
        app = esc(&temporary.consumer_name),
        owner = esc(&session.owner),
        nodes = describe_scope(&temporary.scope),
        token = esc(&temporary.token),
        csrf = esc(&session.csrf),
        scope = esc(&temporary.scope.to_string()),
    );
    page(StatusCode::OK, "Authorize an application", &body)
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
    let session = match form_session(&state, &headers, &form, signed_out) {
        Ok(s) => s,
        Err(response) => return *response,
    };
    let token = form.get("oauth_token").map_or("", String::as_str);
    let temporary = match state.store.temporary(token) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return message(StatusCode::NOT_FOUND, "Unknown request", "No such request.");
        }
        Err(e) => return internal(e),
    };
    let now = store::now();
    match form.get("decision").map(String::as_str) {
        Some("approve") => {
            let scope = Scope::parse(form.get("scope").map_or("", String::as_str));
            match state.store.approve(token, &session.owner, &scope, now) {
                Ok(verifier) => {
                    tracing::info!(owner = %session.owner, consumer = %temporary.consumer_key, %scope, "approved");
                    if temporary.callback == "oob" {
                        page(
                            StatusCode::OK,
                            "Approved",
                            &format!(
                                "<h1>Approved</h1><p>Give this code to <span class=\"app\">{}</span>:</p>\
                                 <p><code id=\"verifier\">{}</code></p>",
                                esc(&temporary.consumer_name),
                                esc(&verifier)
                            ),
                        )
                    } else {
                        let to = with_query(
                            &temporary.callback,
                            &[("oauth_token", token), ("oauth_verifier", &verifier)],
                        );
                        see_other(&to, None)
                    }
                }
                Err(StoreError::Refused(reason)) => {
                    message(StatusCode::BAD_REQUEST, "Not approved", &reason)
                }
                Err(e) => internal(e),
            }
        }
        Some("deny") => match state.store.deny(token, now) {
            Ok(()) => {
                tracing::info!(owner = %session.owner, consumer = %temporary.consumer_key, "denied");
                if temporary.callback == "oob" {
                    message(
                        StatusCode::OK,
                        "Denied",
                        &format!("You denied {} access.", temporary.consumer_name),
                    )
                } else {
                    let to = with_query(
                        &temporary.callback,
                        &[
                            ("oauth_token", token),
                            ("oauth_problem", "permission_denied"),
                        ],
                    );
                    see_other(&to, None)
                }
            }
            Err(StoreError::Refused(reason)) => {
                message(StatusCode::BAD_REQUEST, "Not denied", &reason)
            }
            Err(e) => internal(e),
        },
        _ => message(
            StatusCode::BAD_REQUEST,
            "No decision",
            "Press Approve or Deny.",
        ),
    }
}

/// `GET /apps`: the applications the signed-in owner authorized.
pub(crate) async fn apps_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match session(&state, &headers) {
        Ok(Some(s)) => s,
        Ok(None) => return page(StatusCode::OK, "Sign in", &sign_in_form("/apps", None)),
        Err(e) => return internal(e),
    };
    let tokens = match state.store.access_tokens(Some(&session.owner), None) {
        Ok(t) => t,
        Err(e) => return internal(e),
    };
    let now = store::now();
    let rows: String = tokens
        .iter()
        .filter(|t| t.revoked_at.is_none() && t.expires_at.is_none_or(|at| at > now))
        .map(|t| {
            format!(
                "<tr><td class=\"app\">{app}</td><td>{scope}</td><td>\
                 <form method=\"post\" action=\"/apps/revoke\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"hidden\" name=\"id\" value=\"{id}\">\
                 <button type=\"submit\" id=\"revoke-{id}\">Revoke</button></form></td></tr>",
                app = esc(&t.consumer_name),
                scope = esc(&t.scope.to_string()),
                csrf = esc(&session.csrf),
                id = t.id
            )
        })
        .collect();
    let table = if rows.is_empty() {
        "<p id=\"none\">You have not authorized any application.</p>".to_owned()
    } else {
        format!(
            "<table id=\"apps\"><tr><th>Application</th><th>Nodes</th><th></th></tr>{rows}</table>"
        )
    };
    let body = format!(
        "<h1>Your applications</h1><p>Signed in as <b>{owner}</b>.</p>{table}\
         <form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" id=\"sign-out\">Sign out</button></form>",
        owner = esc(&session.owner),
        csrf = esc(&session.csrf)
    );
    page(StatusCode::OK, "Your applications", &body)
}

/// `POST /apps/revoke`: revokes one of the signed-in owner's tokens.
pub(crate) async fn apps_revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let signed_out = || Redirect::to("/apps").into_response();
    let session = match form_session(&state, &headers, &form, signed_out) {
        Ok(s) => s,
        Err(response) => return *response,
    };
    let Some(id) = form.get("id").and_then(|i| i.parse::<i64>().ok()) else {
        return message(StatusCode::BAD_REQUEST, "No application", "Which one?");
    };
    match state.store.revoke_tokens(
        &RevokeBy::OwnerAndId(session.owner.clone(), id),
        store::now(),
    ) {
        Ok(n) => {
            tracing::info!(owner = %session.owner, id, revoked = n, "revoked from the owner's page");
            see_other("/apps", None)
        }
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn only_local_paths_are_followed() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            local_path(s("/oauth/authorize?oauth_token=x").as_ref()),
            "/oauth/authorize?oauth_token=x"
        );
        assert_eq!(local_path(s("//evil.example/").as_ref()), "/apps");
        assert_eq!(local_path(s("https://evil.example/").as_ref()), "/apps");
        assert_eq!(local_path(None), "/apps");
    }

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
}
