//! The Rust side of the differential test against oauthlib (`scripts/differential.py`).
//!
//! Reads one JSON case per line on standard input and writes one JSON line per case: what
//! this library computes (normalized parameters, base string, signature) and whether its
//! verifier accepts the request as sent. The Python script compares with oauthlib.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use oauth_xmpp::{
    FixedClock, HttpRequest, MemoryCredentials, MemoryNonceStore, OAuthParams, Scope, Secret,
    StanzaRequest, TokenUse, Verifier, signature,
};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Case {
    id: String,
    form: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    uri: String,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    stanza: String,
    consumer_secret: String,
    #[serde(default)]
    token_secret: String,
}

#[derive(Serialize)]
struct Outcome {
    id: String,
    normalized: String,
    base_string: String,
    signature: String,
    verified: bool,
    error: Option<String>,
}

/// What was computed before verification.
struct Computed {
    normalized: String,
    base_string: String,
    params: OAuthParams,
}

fn header<'a>(headers: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn credentials_for(params: &OAuthParams, case: &Case) -> MemoryCredentials {
    let mut credentials = MemoryCredentials::default();
    credentials.add_consumer(params.consumer_key.clone(), case.consumer_secret.as_str());
    if let Some(token) = &params.token {
        credentials.add_access_token(
            token.clone(),
            case.token_secret.as_str(),
            params.consumer_key.clone(),
            "owner",
            Scope::all(),
        );
    }
    credentials
}

fn run(case: &Case) -> Result<(Computed, Result<(), String>), String> {
    let nonces = MemoryNonceStore::default();
    if case.form == "http" {
        let request = HttpRequest {
            method: &case.method,
            uri: &case.uri,
            authorization: header(&case.headers, "authorization"),
            content_type: header(&case.headers, "content-type"),
            body: case.body.as_bytes(),
        };
        let collected = request.collect().map_err(|e| e.to_string())?;
        let computed = Computed {
            normalized: collected.normalized_parameters(),
            base_string: request.base_string(&collected).map_err(|e| e.to_string())?,
            params: collected.params.clone(),
        };
        let credentials = credentials_for(&computed.params, case);
        let clock = FixedClock(computed.params.timestamp_secs());
        let token_use = if computed.params.token.is_some() {
            TokenUse::Access
        } else {
            TokenUse::None
        };
        let verdict = Verifier::new(&credentials, &nonces, clock)
            .verify_http(&request, token_use)
            .map(drop)
            .map_err(|e| e.to_string());
        Ok((computed, verdict))
    } else {
        let stanza: oauth_xmpp::minidom::Element =
            case.stanza.parse().map_err(|e| format!("XML: {e}"))?;
        let request = StanzaRequest::from_stanza(&stanza)
            .map_err(|e| e.to_string())?
            .ok_or("no <oauth/> element")?;
        let computed = Computed {
            normalized: request.normalized_parameters(),
            base_string: request.base_string(),
            params: request.params.clone(),
        };
        let credentials = credentials_for(&computed.params, case);
        let clock = FixedClock(computed.params.timestamp_secs());
        let verdict = Verifier::new(&credentials, &nonces, clock)
            .verify_stanza_request(&request)
            .map(drop)
            .map_err(|e| e.to_string());
        Ok((computed, verdict))
    }
}

fn main() -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let case: Case = match serde_json::from_str(&line) {
            Ok(case) => case,
            Err(e) => {
                eprintln!("differential: bad input line: {e}");
                std::process::exit(2);
            }
        };
        let outcome = match run(&case) {
            Ok((computed, verdict)) => Outcome {
                id: case.id.clone(),
                signature: signature::sign(
                    computed.params.signature_method,
                    &computed.base_string,
                    &Secret::new(case.consumer_secret.as_str()),
                    &Secret::new(case.token_secret.as_str()),
                )
                .to_string(),
                normalized: computed.normalized,
                base_string: computed.base_string,
                verified: verdict.is_ok(),
                error: verdict.err(),
            },
            Err(error) => Outcome {
                id: case.id.clone(),
                normalized: String::new(),
                base_string: String::new(),
                signature: String::new(),
                verified: false,
                error: Some(error),
            },
        };
        serde_json::to_writer(&mut out, &outcome)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
