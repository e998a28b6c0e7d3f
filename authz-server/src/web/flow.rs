//! The signed endpoints: temporary credentials (RFC 5849 §2.1) and token credentials
//! (§2.3).

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use oauth_xmpp::replay::{NonceKey, NonceOutcome, NonceStore};
use oauth_xmpp::verify::TokenUse;
use oauth_xmpp::{
    ConsumerRecord, CredentialStore, HttpRequest, Scope, TokenRecord, Verified, Verifier,
    VerifyError,
};

use super::targets::check_callback;
use super::{AppState, internal, oauth_problem, problem, request_url};
use crate::store::{self, Store, StoreError};

/// The largest body a signed request may have.
const MAX_BODY: usize = 64 * 1024;

/// A verified request: the proof, every parameter collected (RFC 5849 §3.4.1.3.1), and its
/// nonce key in canonical form.
struct Checked {
    verified: Verified,
    all: Vec<(String, String)>,
    nonce: String,
}

/// The store as the verifier of an access-token request sees it: temporary credentials
/// still inside their retry window (profile P6) count as unused, and the nonce of the
/// exchange that used them is accepted once more, so that a byte-for-byte retry of a
/// request whose answer was lost is verified like the original (signature, timestamp and
/// all) and gets the same token back.
struct RetryView<'a> {
    store: &'a Store,
    /// The temporary token in its retry window and the nonce key of its exchange.
    retry: Option<(String, String)>,
}

impl CredentialStore for RetryView<'_> {
    fn consumer(&self, key: &str) -> Result<Option<ConsumerRecord>, oauth_xmpp::StoreError> {
        CredentialStore::consumer(self.store, key)
    }

    fn token(&self, token: &str) -> Result<Option<TokenRecord>, oauth_xmpp::StoreError> {
        let mut record = CredentialStore::token(self.store, token)?;
        if let (Some(r), Some((retry, _))) = (record.as_mut(), &self.retry)
            && retry == token
        {
            r.used = false;
        }
        Ok(record)
    }
}

impl NonceStore for RetryView<'_> {
    fn check_and_record(
        &self,
        key: &NonceKey<'_>,
        expires_at: u64,
        now: u64,
    ) -> Result<NonceOutcome, oauth_xmpp::StoreError> {
        if let Some((_, nonce)) = &self.retry {
            let mut canonical = String::new();
            key.write_canonical(&mut canonical);
            if &canonical == nonce {
                return Ok(NonceOutcome::Fresh);
            }
        }
        self.store.check_and_record(key, expires_at, now)
    }
}

/// Reads and verifies a signed request, off the runtime (the verifier reads the store).
async fn verify(
    state: &AppState,
    request: Request,
    token_use: TokenUse,
) -> Result<Checked, Response> {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return Err(problem(
            state,
            400,
            "parameter_rejected",
            "the body is unreadable or larger than 64 KiB",
        ));
    };
    let Some(url) = request_url(state, &parts.headers, &parts.uri) else {
        return Err(problem(
            state,
            400,
            "parameter_rejected",
            "the request has no Host header",
        ));
    };
    // Profile H3: a second header would be a second copy of every parameter in it.
    if parts.headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
        return Err(problem(
            state,
            400,
            "parameter_rejected",
            "the Authorization header is given more than once",
        ));
    }
    let header_str = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let authorization = header_str(header::AUTHORIZATION);
    let content_type = header_str(header::CONTENT_TYPE);
    let method = parts.method.as_str().to_owned();
    let inner = state.clone();
    state
        .db(move |store| {
            let state = &inner;
            let request = HttpRequest {
                method: &method,
                uri: &url,
                authorization: authorization.as_deref(),
                content_type: content_type.as_deref(),
                body: &body,
            };
            let fail = |error: VerifyError| {
                let answer = error.http_problem(&state.config.realm);
                tracing::info!(url = %url, status = answer.status, reason = %error, "refused");
                Box::new(oauth_problem(
                    answer.status,
                    answer.problem,
                    &answer.www_authenticate,
                    answer.body,
                ))
            };
            let collected = request.collect().map_err(|e| fail(e.into()))?;
            let mut retry = None;
            if token_use == TokenUse::Temporary
                && let Some(token) = &collected.params.token
            {
                match store.exchange_retry(token, state.config.window_secs, store::now()) {
                    Ok(nonce) => retry = nonce.map(|n| (token.clone(), n)),
                    Err(e) => return Err(Box::new(internal(e))),
                }
            }
            let view = RetryView { store, retry };
            let verifier = Verifier::with_config(
                state.verifier_config(),
                &view,
                &view,
                oauth_xmpp::replay::SystemClock,
            );
            let verified = verifier
                .verify_collected(&request, &collected, token_use)
                .map_err(fail)?;
            let mut nonce = String::new();
            NonceKey {
                consumer_key: verified.consumer_key(),
                token: collected.params.token.as_deref().unwrap_or(""),
                timestamp: verified.timestamp(),
                nonce: &collected.params.nonce,
            }
            .write_canonical(&mut nonce);
            Ok(Checked {
                verified,
                all: collected.all,
                nonce,
            })
        })
        .await?
        .map_err(|answer| *answer)
}

fn form(pairs: &[(&str, &str)]) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-www-form-urlencoded")],
        oauth_xmpp::http::form_encode(pairs.iter().copied()),
    )
        .into_response()
}

/// `POST /oauth/request_token`: signed with the consumer's credentials only;
/// `oauth_callback` required (`oob` allowed); optional `scope`.
pub(crate) async fn request_token(State(state): State<AppState>, request: Request) -> Response {
    let Checked { verified, all, .. } = match verify(&state, request, TokenUse::None).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let Some(callback) = verified
        .callback()
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
    else {
        return problem(
            &state,
            400,
            "parameter_absent",
            "oauth_callback is required: the registered callback URL, or oob for an \
             application registered without one",
        );
    };
    let mut scopes = all.iter().filter(|(n, _)| n == "scope").map(|(_, v)| v);
    let scope = match (scopes.next(), scopes.next()) {
        (None, _) => Scope::all(),
        (Some(scope), None) => Scope::parse(scope),
        (Some(_), Some(_)) => {
            return problem(&state, 400, "parameter_rejected", "scope is given twice");
        }
    };
    if scope.entries().is_empty() {
        return problem(&state, 400, "parameter_rejected", "scope is empty");
    }
    let consumer_key = verified.consumer_key().to_owned();
    let lifetime = state.config.temporary_lifetime_secs;
    let issued = {
        let (key, scope) = (consumer_key.clone(), scope.clone());
        state
            .db(move |store| {
                // Profile C1-C3: only the consumer's registered callback (or oob).
                let registered = store
                    .consumer(&key)?
                    .ok_or_else(|| StoreError::NotFound(format!("no consumer with key {key}")))?
                    .callback;
                if let Err(refused) = check_callback(&callback, registered.as_deref()) {
                    return Ok(Err(refused));
                }
                store
                    .create_temporary(&key, &callback, &scope, lifetime, store::now())
                    .map(Ok)
            })
            .await
    };
    match issued {
        Ok(Ok(Ok((token, secret)))) => {
            tracing::info!(consumer = %consumer_key, %scope, "temporary credentials issued");
            form(&[
                ("oauth_token", &token),
                ("oauth_token_secret", secret.expose()),
                ("oauth_callback_confirmed", "true"),
            ])
        }
        Ok(Ok(Err(refused))) => {
            tracing::info!(consumer = %consumer_key, reason = %refused, "callback refused");
            problem(&state, 400, "parameter_rejected", &refused.to_string())
        }
        Ok(Err(e)) => internal(e),
        Err(answer) => answer,
    }
}

/// `POST /oauth/access_token`: signed with the consumer's and the temporary credentials,
/// with `oauth_verifier`; one use, and safe to retry (profile P6).
pub(crate) async fn access_token(State(state): State<AppState>, request: Request) -> Response {
    let Checked {
        verified, nonce, ..
    } = match verify(&state, request, TokenUse::Temporary).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let Some(verifier) = verified
        .verifier()
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
    else {
        return problem(
            &state,
            400,
            "parameter_absent",
            "oauth_verifier is required (the owner got it when she approved)",
        );
    };
    let Some(token) = verified.token().map(|t| t.token.clone()) else {
        return problem(&state, 401, "token_rejected", "oauth_token is required");
    };
    let retry_secs = state.config.window_secs;
    let exchanged = state
        .db(move |store| store.exchange(&token, &verifier, &nonce, retry_secs, store::now()))
        .await;
    match exchanged {
        Ok(Ok(grant)) => {
            state.metrics.grants.inc();
            tracing::info!(consumer = %grant.consumer_key, owner = %grant.owner, id = grant.id, "access token issued");
            form(&[
                ("oauth_token", &grant.token),
                ("oauth_token_secret", grant.secret.expose()),
            ])
        }
        Ok(Err(StoreError::Exchange(refused))) => {
            tracing::info!(consumer = verified.consumer_key(), reason = %refused, "access token refused");
            problem(&state, 401, refused.oauth_problem(), &refused.to_string())
        }
        Ok(Err(StoreError::NotFound(reason))) => problem(&state, 401, "token_rejected", &reason),
        Ok(Err(e)) => internal(e),
        Err(answer) => answer,
    }
}
