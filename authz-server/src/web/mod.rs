//! The HTTP side (RFC 5849 §2): the three endpoints of the token flow, checked with
//! `oauth-xmpp`'s verifier, and the owner's pages (sign in, authorize, her applications and
//! what each received);
//! [`run`] serves them, within the [`ConnectionLimits`].

mod apps;
mod flow;
mod html;
mod pages;
pub(crate) mod pool;
mod server;
mod signin;
pub(crate) mod targets;

pub use server::{ConnectionLimits, run};

/// Checks the callback URL of a consumer being registered (`consumer add --callback`): an
/// absolute http(s) URL with no user info, fragment or control character (profile C1). The
/// error says why, for the admin.
pub fn check_consumer_callback(callback: &str) -> Result<(), String> {
    targets::check_callback_url(callback)
        .map(drop)
        .map_err(|e| {
            format!(
                "the callback {callback:?} is refused: {}",
                e.to_string().trim_start_matches("oauth_callback ")
            )
        })
}

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use oauth_xmpp::VerifierConfig;

use crate::config::Config;
use crate::store::Store;
use pool::Pools;

/// What every handler shares: the store (reached only through bounded blocking pools, so
/// no store call or password hash runs on the async runtime) and the settings.
#[derive(Debug, Clone)]
pub struct AppState {
    pools: Arc<Pools>,
    config: Arc<Config>,
    metrics: crate::metrics::Metrics,
}

impl AppState {
    /// The state of a server on `store` with `config`.
    pub fn new(store: Arc<Store>, config: Config) -> Self {
        Self {
            pools: Arc::new(Pools::new(store)),
            config: Arc::new(config),
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// The same state counting into `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    fn verifier_config(&self) -> VerifierConfig {
        VerifierConfig {
            window_secs: self.config.window_secs,
            allow_plaintext: self.config.allow_plaintext,
            ..VerifierConfig::default()
        }
    }

    /// Runs `f` on the store off the runtime; a pool failure is the 500 to answer.
    pub(crate) async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, Response> {
        self.pools.run(f).await.map_err(internal)
    }

    /// [`AppState::db`] for work whose every store error is a 500 (logged).
    pub(crate) async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, crate::StoreError> + Send + 'static,
    ) -> Result<T, Response> {
        self.db(f).await?.map_err(internal)
    }

    /// Whether cookies get `Secure` (the public URL is https).
    fn secure_cookies(&self) -> bool {
        self.config.public_url.as_deref().is_some_and(|u| {
            u.get(..8)
                .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        })
    }
}

/// The whole application. Every answer carries the security headers of
/// `html::security_headers` (CSP, `nosniff`, frame denial, no referrer).
pub fn router(state: AppState) -> Router {
    let counted = axum::middleware::from_fn_with_state(state.clone(), count_answer);
    Router::new()
        .route("/oauth/request_token", post(flow::request_token))
        .route("/oauth/access_token", post(flow::access_token))
        .route(
            "/oauth/authorize",
            get(pages::authorize_page).post(pages::authorize_answer),
        )
        .route("/login", get(signin::login_page).post(signin::login))
        .route("/logout", post(pages::logout))
        .route("/apps", get(apps::apps_page))
        .route("/apps/revoke", post(apps::apps_revoke))
        .route("/style.css", get(html::stylesheet))
        .route("/", get(pages::home))
        .layer(axum::middleware::from_fn(html::security_headers))
        .layer(counted)
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

/// The paths of [`router`]'s routes, as the `route` label of the request metrics (any other
/// path is `unmatched`).
const ROUTES: [&str; 9] = [
    "/oauth/request_token",
    "/oauth/access_token",
    "/oauth/authorize",
    "/login",
    "/logout",
    "/apps",
    "/apps/revoke",
    "/style.css",
    "/",
];

/// The `oauth_problem` of an OAuth error answer, kept in its extensions for the metrics.
#[derive(Debug, Clone, Copy)]
struct OAuthProblem(&'static str);

/// Counts each answer by route and status class, and the token flow's refusals by
/// `oauth_problem`.
async fn count_answer(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let route = ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("unmatched");
    let response = next.run(request).await;
    let problem = response.extensions().get::<OAuthProblem>().map(|p| p.0);
    state
        .metrics
        .answered(route, response.status().as_u16(), problem);
    response
}

/// A 303 to `location`. The location was checked (a path here, or a registered callback);
/// should it still not be a valid header value, the answer is a 500 rather than a 303
/// without `Location`.
pub(crate) fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => internal(format!(
            "a redirect target is not a header value: {location:?}"
        )),
    }
}

/// An OAuth error answer (RFC 5849 §3.2 and the Problem Reporting extension): the status,
/// `WWW-Authenticate: OAuth realm=…, oauth_problem=…` and a form-encoded body.
pub(crate) fn oauth_problem(
    status: u16,
    problem: Option<&'static str>,
    www_authenticate: &str,
    body: String,
) -> Response {
    let mut response = Response::new(Body::from(body));
    if let Some(problem) = problem {
        response.extensions_mut().insert(OAuthProblem(problem));
    }
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
pub(crate) fn problem(
    state: &AppState,
    status: u16,
    problem: &'static str,
    advice: &str,
) -> Response {
    let pairs = [("oauth_problem", problem), ("oauth_problem_advice", advice)];
    let www = oauth_xmpp::http::authorization_header(Some(&state.config.realm), pairs);
    oauth_problem(
        status,
        Some(problem),
        &www,
        oauth_xmpp::http::form_encode(pairs),
    )
}

/// A store failure: logged, and a 500 that says only that.
pub(crate) fn internal(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "internal failure");
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
