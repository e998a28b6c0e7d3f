//! A small HTTP/1.1 client: one request per connection (`Connection: close`), enough for the
//! authorization server's endpoints on loopback. No TLS: in a deployment the consumer talks
//! to the authorization server through HTTPS with a real HTTP client.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response read.
const MAX_RESPONSE: u64 = 1 << 20;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http://host:port/path`.
    #[error("{0:?} is not an http:// URL")]
    Url(String),
    /// The socket failed.
    #[error("HTTP connection: {0}")]
    Io(#[from] std::io::Error),
    /// The answer is not HTTP/1.x.
    #[error("not an HTTP answer: {0}")]
    Malformed(String),
    /// No answer in time.
    #[error("no HTTP answer within {0:?}")]
    Timeout(Duration),
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body read as a form (`a=1&b=2`), decoded.
    pub fn form(&self) -> Vec<(String, String)> {
        parse_form(&self.body)
    }

    /// One field of a form body.
    pub fn form_field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

/// Decodes `application/x-www-form-urlencoded` text.
pub fn parse_form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let decode = |s: &str| {
                oauth_xmpp::encode::form_decode(s, "form").unwrap_or_else(|_| s.to_owned())
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// Encodes pairs as `application/x-www-form-urlencoded` (RFC 5849 encoding).
pub fn form(pairs: &[(&str, &str)]) -> String {
    oauth_xmpp::http::form_encode(pairs.iter().copied())
}

/// Splits `http://host:port/path?query` into the address and the path with its query.
pub fn split_url(url: &str) -> Result<(String, String), HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Url(url.to_owned()))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(HttpError::Url(url.to_owned()));
    }
    let addr = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    Ok((addr, path.to_owned()))
}

/// Sends one request to `url` with extra `headers` and a `body`, and reads the answer.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Response, HttpError> {
    tokio::time::timeout(TIMEOUT, exchange(method, url, headers, body))
        .await
        .map_err(|_| HttpError::Timeout(TIMEOUT))?
}

async fn exchange(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Response, HttpError> {
    let (addr, path) = split_url(url)?;
    let mut stream = TcpStream::connect(&addr).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut raw).await?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| HttpError::Malformed("no end of headers".into()))?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Malformed(status_line.to_owned()))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_forms() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/oauth/authorize?oauth_token=a").unwrap(),
            (
                "127.0.0.1:8080".to_owned(),
                "/oauth/authorize?oauth_token=a".to_owned()
            )
        );
        assert_eq!(
            split_url("http://example.org").unwrap(),
            ("example.org:80".to_owned(), "/".to_owned())
        );
        assert!(split_url("https://example.org/").is_err());
        assert_eq!(
            parse_form("oauth_token=a%2Bb&x=1+2&flag"),
            vec![
                ("oauth_token".to_owned(), "a+b".to_owned()),
                ("x".to_owned(), "1 2".to_owned()),
                ("flag".to_owned(), String::new())
            ]
        );
        assert_eq!(
            form(&[("scope", "/location/alice /photos/alice")]),
            "scope=%2Flocation%2Falice%20%2Fphotos%2Falice"
        );
    }
}
