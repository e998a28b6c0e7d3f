//! The HTTP side (RFC 5849 §2): the three endpoints of the token flow, checked with
//! `oauth-xmpp`'s verifier, and the owner's pages (sign in, authorize, her applications);
//! [`run`] serves them, within the [`ConnectionLimits`].

mod flow;
mod pages;
mod server;

pub use server::{ConnectionLimits, run};

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use oauth_xmpp::VerifierConfig;

use crate::config::Config;
use crate::store::Store;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The token store.
    pub store: Arc<Store>,
    /// The settings.
    pub config: Arc<Config>,
}

impl AppState {
    fn verifier_config(&self) -> VerifierConfig {
        VerifierConfig {
            window_secs: self.config.window_secs,
            allow_plaintext: self.config.allow_plaintext,
            ..VerifierConfig::default()
        }
    }
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/oauth/request_token", post(flow::request_token))
        .route("/oauth/access_token", post(flow::access_token))
        .route(
            "/oauth/authorize",
            get(pages::authorize_page).post(pages::authorize_answer),
        )
        .route("/login", post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/apps", get(pages::apps_page))
        .route("/apps/revoke", post(pages::apps_revoke))
        .route("/", get(pages::home))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

/// An OAuth error answer (RFC 5849 §3.2 and the Problem Reporting extension): the status,
/// `WWW-Authenticate: OAuth realm=…, oauth_problem=…` and a form-encoded body.
pub(crate) fn oauth_problem(status: u16, www_authenticate: &str, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    if let Ok(value) = HeaderValue::from_str(www_authenticate) {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// An OAuth error that is not the verifier's (a missing callback, a wrong verifier…).
pub(crate) fn problem(state: &AppState, status: u16, problem: &str, advice: &str) -> Response {
    let pairs = [("oauth_problem", problem), ("oauth_problem_advice", advice)];
    let www = oauth_xmpp::http::authorization_header(Some(&state.config.realm), pairs);
    oauth_problem(status, &www, oauth_xmpp::http::form_encode(pairs))
}

/// A store failure: logged, and a 500 that says only that.
pub(crate) fn internal(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "store failure");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error: the token store failed; see the server log\n",
    )
        .into_response()
}

/// The absolute URL the consumer signed: the configured public URL, or `http://` and the
/// `Host` header, then the path and query as received.
pub(crate) fn request_url(
    state: &AppState,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Option<String> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match &state.config.public_url {
        Some(base) => Some(format!("{}{path}", base.trim_end_matches('/'))),
        None => {
            let host = headers.get(header::HOST)?.to_str().ok()?;
            Some(format!("http://{host}{path}"))
        }
    }
}
