//! The signed endpoints: temporary credentials (RFC 5849 §2.1) and token credentials
//! (§2.3).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use oauth_xmpp::verify::TokenUse;
use oauth_xmpp::{HttpRequest, Scope, Verified, Verifier, VerifyError};

use super::{AppState, internal, oauth_problem, problem, request_url};
use crate::store::{self, StoreError};

/// Verifies a signed request, or answers with the OAuth error.
#[allow(clippy::result_large_err)] // the error is the answer, built once per request
fn verify(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    token_use: TokenUse,
) -> Result<(Verified, Vec<(String, String)>), Response> {
    let Some(url) = request_url(state, headers, uri) else {
        return Err(problem(
            state,
            400,
            "parameter_rejected",
            "the request has no Host header",
        ));
    };
    let header_str = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let request = HttpRequest {
        method: method.as_str(),
        uri: &url,
        authorization: header_str(header::AUTHORIZATION),
        content_type: header_str(header::CONTENT_TYPE),
        body,
    };
    let fail = |error: VerifyError| {
        let answer = error.http_problem(&state.config.realm);
        tracing::info!(url = %url, status = answer.status, reason = %error, "refused");
        oauth_problem(answer.status, &answer.www_authenticate, answer.body)
    };
    let all = request.collect().map_err(|e| fail(e.into()))?.all;
    let verifier = Verifier::with_config(
        state.verifier_config(),
        &*state.store,
        &*state.store,
        oauth_xmpp::replay::SystemClock,
    );
    match verifier.verify_http(&request, token_use) {
        Ok(verified) => Ok((verified, all)),
        Err(VerifyError::TokenRevoked) if token_use == TokenUse::Temporary => {
            // Say why: a reused verifier is the common case.
            let token = all.iter().find(|(n, _)| n == "oauth_token").map(|(_, v)| v);
            let used = token
                .and_then(|t| state.store.temporary(t).ok().flatten())
                .is_some_and(|t| t.state == store::TemporaryState::Used);
            if used {
                tracing::info!(url = %url, "refused: temporary token reused");
                Err(problem(
                    state,
                    401,
                    "token_used",
                    "the temporary token was already exchanged for an access token",
                ))
            } else {
                Err(fail(VerifyError::TokenRevoked))
            }
        }
        Err(error) => Err(fail(error)),
    }
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
pub(crate) async fn request_token(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (verified, all) = match verify(&state, &method, &uri, &headers, &body, TokenUse::None) {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let Some(callback) = verified.callback().filter(|c| !c.is_empty()) else {
        return problem(
            &state,
            400,
            "parameter_absent",
            "oauth_callback is required: a URL, or oob to show the verifier to the owner",
        );
    };
    if callback != "oob" && !(callback.starts_with("http://") || callback.starts_with("https://")) {
        return problem(
            &state,
            400,
            "parameter_rejected",
            "oauth_callback must be an http(s) URL or oob",
        );
    }
    let scope = match all.iter().filter(|(n, _)| n == "scope").count() {
        0 => Scope::all(),
        1 => Scope::parse(
            all.iter()
                .find(|(n, _)| n == "scope")
                .map_or("", |(_, v)| v),
        ),
        _ => return problem(&state, 400, "parameter_rejected", "scope is given twice"),
    };
    if scope.entries().is_empty() {
        return problem(&state, 400, "parameter_rejected", "scope is empty");
    }
    match state.store.create_temporary(
        verified.consumer_key(),
        callback,
        &scope,
        state.config.temporary_lifetime_secs,
        store::now(),
    ) {
        Ok((token, secret)) => {
            tracing::info!(consumer = verified.consumer_key(), %scope, "temporary credentials issued");
            form(&[
                ("oauth_token", &token),
                ("oauth_token_secret", secret.expose()),
                ("oauth_callback_confirmed", "true"),
            ])
        }
        Err(e) => internal(e),
    }
}

/// `POST /oauth/access_token`: signed with the consumer's and the temporary credentials,
/// with `oauth_verifier`; one use.
pub(crate) async fn access_token(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (verified, _) = match verify(&state, &method, &uri, &headers, &body, TokenUse::Temporary) {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let Some(verifier) = verified.verifier().filter(|v| !v.is_empty()) else {
        return problem(
            &state,
            400,
            "parameter_absent",
            "oauth_verifier is required (the owner got it when she approved)",
        );
    };
    let Some(token) = verified.token() else {
        return problem(&state, 401, "token_rejected", "oauth_token is required");
    };
    match state.store.exchange(&token.token, verifier, store::now()) {
        Ok(grant) => {
            tracing::info!(consumer = %grant.consumer_key, owner = %grant.owner, id = grant.id, "access token issued");
            form(&[
                ("oauth_token", &grant.token),
                ("oauth_token_secret", grant.secret.expose()),
            ])
        }
        Err(StoreError::Refused(reason)) => {
            let code = if reason.contains("verifier") {
                "verifier_invalid"
            } else if reason.contains("already exchanged") {
                "token_used"
            } else {
                "token_rejected"
            };
            tracing::info!(consumer = verified.consumer_key(), %reason, "access token refused");
            problem(&state, 401, code, &reason)
        }
        Err(StoreError::NotFound(reason)) => problem(&state, 401, "token_rejected", &reason),
        Err(e) => internal(e),
    }
}
