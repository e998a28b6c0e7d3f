//! The OAuth 1.0a flow against `authz-server` (RFC 5849 §2): the consumer's three requests,
//! and the owner's part done through the same HTML forms a person fills in (sign in, approve,
//! revoke), so the quick start can play both sides.

use oauth_xmpp::replay::SystemClock;
use oauth_xmpp::{Credentials, Secret, Signer};

use crate::http::{self, HttpError, Response};

/// Why a step of the flow failed.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The HTTP exchange failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The server refused, with this status and body.
    #[error("{step}: HTTP {status}: {body}")]
    Refused {
        /// Which request.
        step: &'static str,
        /// The status.
        status: u16,
        /// The body (an `oauth_problem` form, or a page).
        body: String,
    },
    /// The server's answer lacks something the flow needs.
    #[error("{0}")]
    Missing(String),
    /// Signing failed.
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// A consumer application registered on the authorization server.
#[derive(Debug, Clone)]
pub struct App {
    /// The authorization server's base URL (`http://127.0.0.1:8080`).
    pub authz_url: String,
    /// The consumer key.
    pub consumer_key: String,
    /// The consumer secret.
    pub consumer_secret: Secret,
}

/// A token and its secret (temporary credentials or an access token).
#[derive(Debug, Clone)]
pub struct TokenPair {
    /// `oauth_token`.
    pub token: String,
    /// `oauth_token_secret`.
    pub secret: Secret,
}

/// The command-line arguments of a client that signs with a consumer's access token: the
/// key and token as flags, their secrets from the environment (`CONSUMER_SECRET`,
/// `TOKEN_SECRET`) or flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Grant {
    /// The consumer key.
    #[arg(long, allow_hyphen_values = true)]
    pub consumer_key: String,
    /// The consumer secret.
    #[arg(long, env = "CONSUMER_SECRET", hide_env_values = true)]
    pub consumer_secret: String,
    /// The access token.
    #[arg(long, allow_hyphen_values = true)]
    pub token: String,
    /// The access token's secret.
    #[arg(long, env = "TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: String,
}

impl Grant {
    /// The consumer application (no authorization server URL: it only signs).
    pub fn app(&self) -> App {
        App {
            authz_url: String::new(),
            consumer_key: self.consumer_key.clone(),
            consumer_secret: Secret::new(self.consumer_secret.clone()),
        }
    }

    /// The access token and its secret.
    pub fn token(&self) -> TokenPair {
        TokenPair {
            token: self.token.clone(),
            secret: Secret::new(self.token_secret.clone()),
        }
    }
}

impl App {
    /// A signer with this app's credentials and `token`, if any.
    pub fn signer(&self, token: Option<&TokenPair>) -> Signer<SystemClock, fn() -> String> {
        Signer::new(
            Credentials {
                consumer_key: self.consumer_key.clone(),
                consumer_secret: self.consumer_secret.clone(),
                token: token.map(|t| t.token.clone()),
                token_secret: token.map(|t| t.secret.clone()).unwrap_or_default(),
            },
            SystemClock,
            crate::nonce as fn() -> String,
        )
    }

    /// Signs and sends a form POST to `path`; returns the answer (any status).
    async fn post_signed(
        &self,
        path: &str,
        token: Option<&TokenPair>,
        form: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Result<Response, FlowError> {
        let url = format!("{}{path}", self.authz_url);
        let authorization = self
            .signer(token)
            .sign_http("POST", &url, form, extra)
            .map_err(|e| FlowError::Sign(e.to_string()))?;
        Ok(http::request(
            "POST",
            &url,
            &[
                ("Authorization", &authorization),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            &http::form(form),
        )
        .await?)
    }

    /// Step 1: temporary credentials for `scope`, with an out-of-band callback (the owner
    /// reads the verifier off the page). Returns them and the request line sent.
    pub async fn request_token(&self, scope: &str) -> Result<TokenPair, FlowError> {
        let answer = self
            .post_signed(
                "/oauth/request_token",
                None,
                &[("scope", scope)],
                &[("oauth_callback", "oob")],
            )
            .await?;
        token_pair("request_token", &answer)
    }

    /// Step 2: where the owner approves.
    pub fn authorize_url(&self, temporary: &TokenPair) -> String {
        format!(
            "{}/oauth/authorize?oauth_token={}",
            self.authz_url,
            oauth_xmpp::encode::percent_encode(&temporary.token)
        )
    }

    /// Step 3: exchanges approved temporary credentials and the verifier for an access token.
    pub async fn access_token(
        &self,
        temporary: &TokenPair,
        verifier: &str,
    ) -> Result<TokenPair, FlowError> {
        let answer = self
            .post_signed(
                "/oauth/access_token",
                Some(temporary),
                &[],
                &[("oauth_verifier", verifier)],
            )
            .await?;
        token_pair("access_token", &answer)
    }
}

fn token_pair(step: &'static str, answer: &Response) -> Result<TokenPair, FlowError> {
    if answer.status != 200 {
        return Err(FlowError::Refused {
            step,
            status: answer.status,
            body: answer.body.clone(),
        });
    }
    match (
        answer.form_field("oauth_token"),
        answer.form_field("oauth_token_secret"),
    ) {
        (Some(token), Some(secret)) => Ok(TokenPair {
            token,
            secret: Secret::new(secret),
        }),
        _ => Err(FlowError::Missing(format!(
            "{step}: no oauth_token/oauth_token_secret in {:?}",
            answer.body
        ))),
    }
}

/// An owner signed in on the authorization server's pages.
#[derive(Debug)]
pub struct OwnerSession {
    authz_url: String,
    cookie: String,
}

impl OwnerSession {
    /// Signs in as the sign-in form does: `GET /login` for the form's token and its cookie,
    /// then `POST /login` with both.
    pub async fn sign_in(
        authz_url: &str,
        owner: &str,
        password: &Secret,
    ) -> Result<Self, FlowError> {
        let form = http::request("GET", &format!("{authz_url}/login"), &[], "").await?;
        let token = hidden_value(&form.body, "login")
            .ok_or_else(|| FlowError::Missing(format!("no sign-in form at {authz_url}/login")))?;
        let login_cookie = cookie_named(&form, "authz_login")
            .ok_or_else(|| FlowError::Missing("no sign-in cookie with the form".into()))?;
        let body = http::form(&[
            ("login", &token),
            ("name", owner),
            ("password", password.expose()),
            ("next", "/apps"),
        ]);
        let answer = http::request(
            "POST",
            &format!("{authz_url}/login"),
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Cookie", &login_cookie),
            ],
            &body,
        )
        .await?;
        let cookie = cookie_named(&answer, "authz_session")
            .filter(|_| answer.status == 303)
            .ok_or_else(|| FlowError::Refused {
                step: "sign in",
                status: answer.status,
                body: "the name and password were refused".into(),
            })?;
        Ok(Self {
            authz_url: authz_url.to_owned(),
            cookie,
        })
    }

    async fn get(&self, path_and_query: &str) -> Result<Response, FlowError> {
        let url = if path_and_query.starts_with("http://") {
            path_and_query.to_owned()
        } else {
            format!("{}{path_and_query}", self.authz_url)
        };
        Ok(http::request("GET", &url, &[("Cookie", &self.cookie)], "").await?)
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<Response, FlowError> {
        Ok(http::request(
            "POST",
            &format!("{}{path}", self.authz_url),
            &[
                ("Cookie", &self.cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            &http::form(form),
        )
        .await?)
    }

    /// Opens the authorize page at `url` and presses Approve, keeping the requested scope;
    /// returns the verifier the page shows (out-of-band callback).
    pub async fn approve(&self, url: &str) -> Result<String, FlowError> {
        let page = self.get(url).await?;
        let csrf = hidden_value(&page.body, "csrf")
            .ok_or_else(|| FlowError::Missing(format!("no authorize form at {url}")))?;
        let token = hidden_value(&page.body, "oauth_token")
            .ok_or_else(|| FlowError::Missing("no oauth_token in the form".into()))?;
        let scope = input_value(&page.body, "scope").unwrap_or_default();
        let answer = self
            .post(
                "/oauth/authorize",
                &[
                    ("oauth_token", &token),
                    ("csrf", &csrf),
                    ("scope", &scope),
                    ("decision", "approve"),
                ],
            )
            .await?;
        if answer.status != 200 {
            return Err(FlowError::Refused {
                step: "approve",
                status: answer.status,
                body: answer.body,
            });
        }
        text_of_id(&answer.body, "verifier")
            .ok_or_else(|| FlowError::Missing("no verifier on the approval page".into()))
    }

    /// On the owner's applications page, presses Revoke on every grant to the application
    /// named `app`. Returns how many, and what the page said after the last (when that
    /// grant's last delivery was), as text.
    pub async fn revoke_app(&self, app: &str) -> Result<(usize, Option<String>), FlowError> {
        let page = self.get("/apps").await?;
        let csrf = hidden_value(&page.body, "csrf")
            .ok_or_else(|| FlowError::Missing("no form on the applications page".into()))?;
        // One <section class="grant"> per grant, headed by the application's name.
        let heading = format!("<h2 class=\"app\">{}</h2>", escape_html(app));
        let ids: Vec<String> = page
            .body
            .split("<section class=\"grant\"")
            .skip(1)
            .filter(|grant| grant.contains(&heading))
            .filter_map(|grant| hidden_value(grant, "id"))
            .collect();
        let mut notice = None;
        for id in &ids {
            let answer = self
                .post("/apps/revoke", &[("csrf", &csrf), ("id", id)])
                .await?;
            if answer.status != 303 {
                return Err(FlowError::Refused {
                    step: "revoke",
                    status: answer.status,
                    body: answer.body,
                });
            }
            if let Some(location) = answer.header("Location") {
                let page = self.get(location).await?;
                notice = text_of_id(&page.body, "revoked");
            }
        }
        Ok((ids.len(), notice))
    }
}

/// The `name=value` of the `Set-Cookie` whose name ends with `suffix` (`__Host-` prefixed or
/// not).
fn cookie_named(answer: &Response, suffix: &str) -> Option<String> {
    answer
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Set-Cookie"))
        .filter_map(|(_, v)| v.split(';').next())
        .find(|kv| kv.split('=').next().is_some_and(|n| n.ends_with(suffix)))
        .map(str::to_owned)
}

/// The `value` of `<input type="hidden" name="NAME" value="…">`.
fn hidden_value(html: &str, name: &str) -> Option<String> {
    attribute_after(html, &format!("type=\"hidden\" name=\"{name}\""), "value")
}

/// The `value` of the input whose id is `id`.
fn input_value(html: &str, id: &str) -> Option<String> {
    attribute_after(html, &format!("id=\"{id}\""), "value")
}

fn attribute_after(html: &str, marker: &str, attribute: &str) -> Option<String> {
    let start = html.find(marker)? + marker.len();
    let tag_end = start + html[start..].find('>')?;
    let tag = &html[start..tag_end];
    let key = format!("{attribute}=\"");
    let value_start = tag.find(&key)? + key.len();
    let value_len = tag[value_start..].find('"')?;
    Some(unescape_html(&tag[value_start..value_start + value_len]))
}

/// The text of the element with `id="ID"`.
fn text_of_id(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\">");
    let start = html.find(&marker)? + marker.len();
    // The element's name, from its start tag, and its text up to its end tag, inner tags
    // dropped (an element of the same name inside it is not expected on these pages).
    let tag = &html[html[..start].rfind('<')? + 1..];
    let name: String = tag
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    let len = html[start..].find(&format!("</{name}>"))?;
    let mut text = String::new();
    let mut in_tag = false;
    for c in html[start..start + len].chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    Some(unescape_html(&text))
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn unescape_html(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_of_the_pages() {
        let html = "<form><input type=\"hidden\" name=\"csrf\" value=\"a&amp;b\">\
                    <input type=\"text\" id=\"scope\" name=\"scope\" value=\"/location/alice\"></form>\
                    <p><code id=\"verifier\">v-123</code></p>";
        assert_eq!(hidden_value(html, "csrf").as_deref(), Some("a&b"));
        assert_eq!(
            input_value(html, "scope").as_deref(),
            Some("/location/alice")
        );
        assert_eq!(text_of_id(html, "verifier").as_deref(), Some("v-123"));
        let notice = "<p class=\"notice\" id=\"revoked\">You revoked <span class=\"app\">A&amp;B\
                      </span>. It never received anything.</p>";
        assert_eq!(
            text_of_id(notice, "revoked").as_deref(),
            Some("You revoked A&B. It never received anything.")
        );
        assert_eq!(hidden_value(html, "id"), None);
    }
}
