//! The owner's pages as maud templates (every value is escaped by the template engine,
//! never by hand), and the headers every answer carries.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

/// The policy of every page: nothing loads but this server's stylesheet, forms post only
/// here, no framing, no `<base>`.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The stylesheet, served at `/style.css` (inline styles would need `unsafe-inline`).
pub(crate) const STYLE: &str = "\
body{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.4em} .app{font-weight:bold} code{background:#f3f3f3;padding:0 .2em}
form{margin:1em 0} label{display:block;margin:.5em 0}
input[type=text],input[type=password]{width:100%;padding:.3em}
button{padding:.4em 1.2em;margin-right:.5em} #approve{background:#2a7;color:#fff;border:0}
#deny{background:#c33;color:#fff;border:0} table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.3em;text-align:left} .error{color:#b00}
.notice{background:#fff4d6;border:1px solid #e8c75a;padding:.5em}
h2{font-size:1.15em;margin:.2em 0} section.grant{border:1px solid #ddd;padding:.2em 1em;margin:1em 0}
ul.refusals{font-size:.9em;color:#555}
";

/// Adds the security headers to every answer: `Content-Security-Policy` (unless the page
/// set a narrower-purpose one), `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
/// `Referrer-Policy: no-referrer` (URLs here carry tokens).
pub(crate) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A whole page.
pub(crate) fn page(status: StatusCode, title: &str, body: Markup) -> Response {
    let html = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width";
                title { (title) }
                link rel="stylesheet" href="/style.css";
            }
            body { (body) }
        }
    };
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        ],
        html.into_string(),
    )
        .into_response()
}

/// A page whose forms may also lead to `origin` (the authorize page: its answer redirects
/// to the consumer's callback, and `form-action` covers redirects).
pub(crate) fn page_posting_to(
    status: StatusCode,
    title: &str,
    body: Markup,
    origin: Option<&str>,
) -> Response {
    let mut response = page(status, title, body);
    if let Some(origin) = origin {
        let csp = CSP.replace(
            "form-action 'self'",
            &format!("form-action 'self' {origin}"),
        );
        if let Ok(value) = HeaderValue::from_str(&csp) {
            response
                .headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, value);
        }
    }
    response
}

/// A page with a heading and one paragraph.
pub(crate) fn message(status: StatusCode, title: &str, text: &str) -> Response {
    page(status, title, html! { h1 { (title) } p { (text) } })
}

/// `GET /style.css`.
pub(crate) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_by_the_template() {
        let hostile = "<script>alert('x')</script>&\"";
        let markup = html! { p title=(hostile) { (hostile) } };
        assert_eq!(
            markup.into_string(),
            "<p title=\"&lt;script&gt;alert('x')&lt;/script&gt;&amp;&quot;\">\
             &lt;script&gt;alert('x')&lt;/script&gt;&amp;&quot;</p>"
        );
    }
}
