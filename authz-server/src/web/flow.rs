//! The signed endpoints: temporary credentials (RFC 5849 §2.1) and token credentials
//! (§2.3).

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use oauth_xmpp::verify::TokenUse;
use oauth_xmpp::{HttpRequest, Scope, Verified, Verifier, VerifyError};

use super::{AppState, internal, oauth_problem, problem, request_url};
use crate::store::{self, StoreError};

/// The largest body a signed request may have.
const MAX_BODY: usize = 64 * 1024;

/// Reads and verifies a signed request; returns the proof and every parameter collected
/// (RFC 5849 §3.4.1.3.1), or the OAuth error answer.
async fn verify(
    state: &AppState,
    request: Request,
    token_use: TokenUse,
) -> Result<(Verified, Vec<(String, String)>), Response> {
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
    let header_str = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let request = HttpRequest {
        method: parts.method.as_str(),
        uri: &url,
        authorization: header_str(header::AUTHORIZATION),
        content_type: header_str(header::CONTENT_TYPE),
        body: &body,
    };
    let fail = |error: VerifyError| {
        let answer = error.http_problem(&state.config.realm);
        tracing::info!(url = %url, status = answer.status, reason = %error, "refused");
        oauth_problem(answer.status, &answer.www_authenticate, answer.body)
    };
    let collected = request.collect().map_err(|e| fail(e.into()))?;
    let verifier = Verifier::with_config(
        state.verifier_config(),
        &*state.store,
        &*state.store,
        oauth_xmpp::replay::SystemClock,
    );
    let verified = verifier
        .verify_collected(&request, &collected, token_use)
        .map_err(fail)?;
    Ok((verified, collected.all))
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
    let (verified, all) = match verify(&state, request, TokenUse::None).await {
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
pub(crate) async fn access_token(State(state): State<AppState>, request: Request) -> Response {
    let (verified, _) = match verify(&state, request, TokenUse::Temporary).await {
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
        Err(StoreError::Exchange(refused)) => {
            tracing::info!(consumer = verified.consumer_key(), reason = %refused, "access token refused");
            problem(&state, 401, refused.oauth_problem(), &refused.to_string())
        }
        Err(StoreError::NotFound(reason)) => problem(&state, 401, "token_rejected", &reason),
        Err(e) => internal(e),
    }
}
