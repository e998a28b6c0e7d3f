//! Signing in: the form (with its own CSRF token, so another site cannot sign a victim into
//! its account), the throttled password check, the session cookie, and what the owner is
//! told about failed sign-ins since her last visit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use maud::{Markup, html};
use oauth_xmpp::Secret;

use super::html::{message, page};
use super::pool::PoolError;
use super::targets::local_path;
use super::{AppState, internal};
use crate::metrics::SignIn;
use crate::store::{self, FailedSignIns, Session, Throttled, ThrottledBy};
use crate::throttle::{Wait, address_subject};

/// The session cookie's name (`__Host-` when the public URL is https: the browser then
/// only accepts it with `Secure`, `Path=/` and no `Domain`, so no sibling host can plant one).
fn session_cookie(state: &AppState) -> &'static str {
    if state.secure_cookies() {
        "__Host-authz_session"
    } else {
        "authz_session"
    }
}

/// The sign-in form's token cookie (double-submit: the form must carry the same value).
fn login_cookie(state: &AppState) -> &'static str {
    if state.secure_cookies() {
        "__Host-authz_login"
    } else {
        "authz_login"
    }
}

/// A `Set-Cookie` value: `HttpOnly; SameSite=Lax; Path=/`, and `Secure` behind https.
fn set_cookie(state: &AppState, name: &str, value: &str, max_age: u64) -> String {
    let secure = if state.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

/// The value of cookie `name` in the request.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn add_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The signed-in session of this request, if any (or the 500 to answer).
pub(crate) async fn session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Session>, Response> {
    let Some(id) = cookie(headers, session_cookie(state)).map(str::to_owned) else {
        return Ok(None);
    };
    state
        .query(move |store| store.session(&id, store::now()))
        .await
}

/// A `Set-Cookie` that ends the session cookie.
pub(crate) fn end_session_cookie(state: &AppState) -> String {
    set_cookie(state, session_cookie(state), "", 0)
}

/// The sign-in page, going to `next` afterwards, with `error` above the form.
pub(crate) fn sign_in_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    next: &str,
    error: Option<Markup>,
) -> Response {
    // One token per browser: reuse the cookie's (several tabs stay valid), else a new one.
    let existing = cookie(headers, login_cookie(state))
        .filter(|t| {
            t.len() == 22
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned);
    let (token, fresh) = match existing {
        Some(t) => (t, false),
        None => match crate::random::token(16) {
            Ok(t) => (t, true),
            Err(e) => return internal(e),
        },
    };
    let body = html! {
        h1 { "Sign in" }
        @if let Some(error) = error { p.error #error { (error) } }
        form method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            input type="hidden" name="login" value=(token);
            label { "Name " input type="text" #name name="name" autocomplete="username" required; }
            label { "Password " input type="password" #password name="password" autocomplete="current-password" required; }
            button type="submit" #sign-in { "Sign in" }
        }
    };
    let mut response = page(status, "Sign in", body);
    if fresh {
        add_cookie(
            &mut response,
            &set_cookie(state, login_cookie(state), &token, 3600),
        );
    }
    response
}

/// `GET /login?next=…`.
pub(crate) async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let next = local_path(query.get("next").map(String::as_str));
    sign_in_page(&state, &headers, StatusCode::OK, &next, None)
}

/// The client's address: the connection's peer, or (behind a proxy the config names) the
/// last entry of the header that proxy sets.
fn client_address(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Option<IpAddr> {
    if let Some(name) = &state.config.client_address_header {
        return headers
            .get_all(name.as_str())
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok());
    }
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

fn seconds(n: u64) -> String {
    match n {
        1 => "1 second".into(),
        n if n < 120 => format!("{n} seconds"),
        n => format!("{} minutes", n.div_ceil(60)),
    }
}

/// The words of a throttled attempt (the same for a known and an unknown name).
fn throttled_text(t: Throttled) -> String {
    let whom = match t.by {
        ThrottledBy::Name => "for this name",
        ThrottledBy::Address => "from your address",
    };
    match t.wait {
        Wait::Delay(s) => format!(
            "Too many failed sign-ins {whom}: wait {} before trying again.",
            seconds(s)
        ),
        Wait::Locked(s) => format!(
            "Signing in {whom} is locked for {} after too many failed attempts.",
            seconds(s)
        ),
    }
}

/// `POST /login`: name, password, the form's token and `next`. Throttled per name and per
/// client address ([`crate::throttle`]); sets the session cookie and goes to `next`.
pub(crate) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let next = local_path(form.get("next").map(String::as_str));
    let given = form.get("login").map_or("", String::as_str);
    let expected = cookie(&headers, login_cookie(&state)).unwrap_or("");
    let token_ok: bool =
        subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected.as_bytes()).into();
    if !token_ok || expected.is_empty() {
        state.metrics.sign_in(SignIn::BadForm);
        let error = html! {
            "This sign-in form did not come from this site, or your browser refused its \
             cookie: sign in again below."
        };
        return sign_in_page(&state, &headers, StatusCode::FORBIDDEN, &next, Some(error));
    }
    let name = form
        .get("name")
        .map_or("", String::as_str)
        .trim()
        .to_owned();
    let password = Secret::new(form.get("password").cloned().unwrap_or_default());
    let address = client_address(&state, &headers, &extensions)
        .map_or_else(|| "addr:unknown".to_owned(), address_subject);
    let policy = state.config.sign_in;
    let now = store::now();
    let begun = {
        let (name, address) = (name.clone(), address.clone());
        state
            .query(move |store| store.begin_sign_in(&policy, &name, &address, now))
            .await
    };
    let attempt = match begun {
        Ok(Ok(attempt)) => attempt,
        Ok(Err(throttled)) => {
            state.metrics.sign_in(match throttled.wait {
                Wait::Delay(_) => SignIn::Throttled,
                Wait::Locked(_) => SignIn::Locked,
            });
            tracing::info!(owner = %name, %address, wait = throttled.wait.secs(), by = ?throttled.by, "sign-in throttled");
            let mut response = sign_in_page(
                &state,
                &headers,
                StatusCode::TOO_MANY_REQUESTS,
                &next,
                Some(html! { (throttled_text(throttled)) }),
            );
            if let Ok(v) = HeaderValue::from_str(&throttled.wait.secs().to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return response;
        }
        Err(response) => return response,
    };
    let checked = {
        let name = name.clone();
        state
            .pools
            .hash(move |store| crate::password::check(store, &name, &password))
            .await
    };
    let ok = match checked {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => return internal(e),
        Err(PoolError::Busy) => {
            state.metrics.sign_in(SignIn::Busy);
            let mut response = message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "Too many people are signing in right now: try again in a second.",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        Err(e) => return internal(e),
    };
    if !ok {
        state.metrics.sign_in(SignIn::WrongPassword);
        tracing::info!(owner = %name, %address, "sign-in refused");
        let failed = {
            let name = name.clone();
            state
                .query(move |store| store.sign_in_failed(&name, attempt, store::now()))
                .await
        };
        if let Err(response) = failed {
            return response;
        }
        let lockout = state.config.sign_in.per_name.lockout_secs;
        let error = html! {
            "That name and password do not match."
            @if attempt.locks_name {
                " Signing in for this name is now locked for " (seconds(lockout)) "."
            }
        };
        return sign_in_page(
            &state,
            &headers,
            StatusCode::UNAUTHORIZED,
            &next,
            Some(error),
        );
    }
    let lifetime = state.config.session_lifetime_secs;
    let created = {
        let (name, address) = (name.clone(), address.clone());
        state
            .query(move |store| store.finish_sign_in(&name, &address, lifetime, store::now()))
            .await
    };
    let session = match created {
        Ok(s) => s,
        Err(response) => return response,
    };
    state.metrics.sign_in(SignIn::Ok);
    tracing::info!(owner = %name, %address, "signed in");
    let mut response = super::see_other(&next);
    add_cookie(
        &mut response,
        &set_cookie(&state, session_cookie(&state), &session.id, lifetime),
    );
    add_cookie(
        &mut response,
        &set_cookie(&state, login_cookie(&state), "", 0),
    );
    response
}

/// What the owner is told about failed sign-ins with her name before this session (shown
/// on her pages while the session lasts), or nothing.
pub(crate) fn failed_notice(failed: FailedSignIns) -> Markup {
    html! {
        @if failed.count > 0 {
            p.notice #failed-sign-ins {
                "Since you last signed in, " (failed.count)
                @if failed.count == 1 { " sign-in with your name failed" } @else { " sign-ins with your name failed" }
                @if let Some(at) = failed.last_at { " (the last on " (utc(at)) ")" }
                "."
                @if failed.lockouts > 0 {
                    " Signing in was locked " (failed.lockouts)
                    @if failed.lockouts == 1 { " time" } @else { " times" }
                    "."
                }
                " If that was not you, someone is guessing your password: choose a long one."
            }
        }
    }
}

/// `2026-12-02 10:04 UTC` for seconds since 1970.
fn utc(secs: u64) -> String {
    let c = shared_store::datetime::civil(secs);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        c.year, c.month, c.day, c.hour, c.minute
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_796_083_200 + 36_300), "2026-12-01 10:05 UTC");
    }

    #[test]
    fn throttled_words_do_not_depend_on_the_name_existing() {
        let t = |by, wait| throttled_text(Throttled { by, wait });
        assert_eq!(
            t(ThrottledBy::Name, Wait::Delay(4)),
            "Too many failed sign-ins for this name: wait 4 seconds before trying again."
        );
        assert_eq!(
            t(ThrottledBy::Address, Wait::Locked(900)),
            "Signing in from your address is locked for 15 minutes after too many failed attempts."
        );
    }

    #[test]
    fn the_notice_counts_and_dates_the_failures() {
        let markup = failed_notice(FailedSignIns {
            count: 37,
            last_at: Some(1_796_083_200),
            lockouts: 1,
        });
        assert_eq!(
            markup.into_string(),
            "<p class=\"notice\" id=\"failed-sign-ins\">Since you last signed in, 37 sign-ins \
             with your name failed (the last on 2026-12-01 00:00 UTC). Signing in was locked 1 \
             time. If that was not you, someone is guessing your password: choose a long one.</p>"
        );
        assert_eq!(failed_notice(FailedSignIns::default()).into_string(), "");
    }
}
