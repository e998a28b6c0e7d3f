//! Where the server sends a browser: the page after signing in (`next=`, only a path on
//! this server) and the consumer's callback (only the one it registered, profile C1–C3).
//! Both are judged by the WHATWG URL rules a browser applies (the `url` crate implements
//! them): tabs and newlines vanish, a backslash is a slash, `//host` is another server.

use url::Url;

/// The origin `next=` is resolved against. Only "same origin or not" matters, so any fixed
/// origin does; `.invalid` can never be a real host.
const HERE: &str = "http://this-server.invalid/";

/// Where to go after signing in: `next` if a browser would resolve it to a path on this
/// server, as the path and query it would request (so what is checked is what is sent);
/// otherwise `/apps`.
pub(crate) fn local_path(next: Option<&str>) -> String {
    next.and_then(judge_local)
        .unwrap_or_else(|| "/apps".to_owned())
}

fn judge_local(next: &str) -> Option<String> {
    // Only references that start with one slash after the browser's clean-up: no scheme,
    // no `//host`, nothing relative to the current page.
    let cleaned: String = next
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .map(|c| if c == '\\' { '/' } else { c })
        .collect();
    if !cleaned.starts_with('/') || cleaned.starts_with("//") {
        return None;
    }
    let here = Url::parse(HERE).ok()?;
    let url = here.join(next).ok()?;
    if url.origin() != here.origin() {
        return None;
    }
    let mut path = url.path().to_owned();
    // `/.//x` serializes as `//x`, which a browser would read as the host `x`.
    if path.starts_with("//") {
        return None;
    }
    if let Some(query) = url.query() {
        path.push('?');
        path.push_str(query);
    }
    Some(path)
}

/// Why a callback URL is refused, in the words of `oauth_problem_advice`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CallbackError {
    /// Control characters or spaces (a header could be split with them).
    #[error("oauth_callback holds a control character or a space")]
    Control,
    /// Not an absolute http(s) URL without user info or fragment.
    #[error(
        "oauth_callback must be an absolute http or https URL with no user info and no fragment"
    )]
    NotHttp,
    /// Not the consumer's registered callback.
    #[error(
        "oauth_callback must be this application's registered callback {0} (extra query parameters allowed)"
    )]
    NotRegistered(String),
    /// A URL for a consumer registered without a callback.
    #[error("this application is registered without a callback: oauth_callback must be oob")]
    OobOnly,
}

/// Checks a callback URL for registration (`consumer add --callback`): absolute http(s), no
/// user info, no fragment, no control characters.
pub(crate) fn check_callback_url(callback: &str) -> Result<Url, CallbackError> {
    if callback.chars().any(|c| c.is_control() || c == ' ') {
        return Err(CallbackError::Control);
    }
    let url = Url::parse(callback).map_err(|_| CallbackError::NotHttp)?;
    let http = matches!(url.scheme(), "http" | "https");
    if !http
        || url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.fragment().is_some()
    {
        return Err(CallbackError::NotHttp);
    }
    Ok(url)
}

/// Judges the `oauth_callback` of a request-token request against the consumer's
/// registered callback (profile C1–C3): with one registered, the request's must be it,
/// possibly with query parameters added; with none, only `oob`.
pub(crate) fn check_callback(
    requested: &str,
    registered: Option<&str>,
) -> Result<(), CallbackError> {
    if requested.chars().any(|c| c.is_control() || c == ' ') {
        return Err(CallbackError::Control);
    }
    let Some(registered) = registered else {
        return if requested == "oob" {
            Ok(())
        } else {
            Err(CallbackError::OobOnly)
        };
    };
    let not_it = || CallbackError::NotRegistered(registered.to_owned());
    if requested == "oob" {
        return Err(not_it());
    }
    let want = check_callback_url(registered).map_err(|_| not_it())?;
    let got = check_callback_url(requested)?;
    let same_place = got.scheme() == want.scheme()
        && got.host() == want.host()
        && got.port_or_known_default() == want.port_or_known_default()
        && got.path() == want.path();
    let query_extends = match (want.query(), got.query()) {
        (None, _) => true,
        (Some(w), Some(g)) => g == w || g.starts_with(&format!("{w}&")),
        (Some(_), None) => false,
    };
    if same_place && query_extends {
        Ok(())
    } else {
        Err(not_it())
    }
}

/// The origin of a callback, for the authorize page's `form-action` (the browser follows
/// the answer's redirect there).
pub(crate) fn callback_origin(callback: &str) -> Option<String> {
    let url = Url::parse(callback).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_followed_only_to_a_path_here() {
        let cases: &[(&str, &str)] = &[
            (
                "/oauth/authorize?oauth_token=x",
                "/oauth/authorize?oauth_token=x",
            ),
            ("/apps", "/apps"),
            ("/a/../apps", "/apps"),
            ("/apps?x=%2F%2Fevil", "/apps?x=%2F%2Fevil"),
            // What browsers strip or rewrite, then read as another host.
            ("/\t/evil.example", "/apps"),
            ("/\n/evil.example", "/apps"),
            ("\t//evil.example", "/apps"),
            (" //evil.example", "/apps"),
            ("/\\evil.example", "/apps"),
            ("\\\\evil.example", "/apps"),
            ("\\/evil.example", "/apps"),
            ("/.//evil.example", "/apps"),
            ("//evil.example/", "/apps"),
            ("https://evil.example/", "/apps"),
            ("http://this-server.invalid//evil.example", "/apps"),
            ("javascript:alert(1)", "/apps"),
            ("apps", "/apps"),
            ("", "/apps"),
            // A percent-encoded tab stays a path.
            ("/%09/evil.example", "/%09/evil.example"),
        ];
        for (next, want) in cases {
            assert_eq!(local_path(Some(next)), *want, "next={next:?}");
        }
        assert_eq!(local_path(None), "/apps");
    }

    #[test]
    fn the_callback_must_be_the_registered_one() {
        let reg = Some("https://good.example/cb");
        let cases: &[(&str, Option<&str>, Result<(), CallbackError>)] = &[
            ("https://good.example/cb", reg, Ok(())),
            ("https://good.example/cb?state=7", reg, Ok(())),
            ("https://good.example:443/cb", reg, Ok(())),
            ("https://GOOD.example/cb", reg, Ok(())),
            (
                "https://evil.example/steal",
                reg,
                Err(CallbackError::NotRegistered(
                    "https://good.example/cb".into(),
                )),
            ),
            (
                "https://good.example/cb/../steal",
                reg,
                Err(CallbackError::NotRegistered(
                    "https://good.example/cb".into(),
                )),
            ),
            (
                "https://good.example/cbx",
                reg,
                Err(CallbackError::NotRegistered(
                    "https://good.example/cb".into(),
                )),
            ),
            (
                "http://good.example/cb",
                reg,
                Err(CallbackError::NotRegistered(
                    "https://good.example/cb".into(),
                )),
            ),
            (
                "https://good.example.evil.example/cb",
                reg,
                Err(CallbackError::NotRegistered(
                    "https://good.example/cb".into(),
                )),
            ),
            (
                "https://good.example/cb#x",
                reg,
                Err(CallbackError::NotHttp),
            ),
            (
                "https://me@good.example/cb",
                reg,
                Err(CallbackError::NotHttp),
            ),
            (
                "https://good.example/cb\r\nSet-Cookie: x=1",
                reg,
                Err(CallbackError::Control),
            ),
            (
                "https://good.example/cb\u{7f}",
                reg,
                Err(CallbackError::Control),
            ),
            (
                "oob",
                reg,
                Err(CallbackError::NotRegistered(
                    "https://good.example/cb".into(),
                )),
            ),
            ("oob", None, Ok(())),
            ("https://good.example/cb", None, Err(CallbackError::OobOnly)),
            ("oob\n", None, Err(CallbackError::Control)),
        ];
        for (requested, registered, want) in cases {
            assert_eq!(
                &check_callback(requested, *registered),
                want,
                "{requested:?} against {registered:?}"
            );
        }
        let with_query = Some("https://good.example/cb?app=1");
        assert_eq!(
            check_callback("https://good.example/cb?app=1&state=2", with_query),
            Ok(())
        );
        assert_eq!(
            check_callback("https://good.example/cb?app=12", with_query),
            Err(CallbackError::NotRegistered(
                "https://good.example/cb?app=1".into()
            ))
        );
    }

    #[test]
    fn registered_callbacks_are_absolute_http_urls() {
        assert!(check_callback_url("https://good.example/cb").is_ok());
        assert_eq!(
            check_callback_url("myapp://done").unwrap_err(),
            CallbackError::NotHttp
        );
        assert_eq!(
            check_callback_url("/cb").unwrap_err(),
            CallbackError::NotHttp
        );
        assert_eq!(
            check_callback_url("https://good.example/\ncb").unwrap_err(),
            CallbackError::Control
        );
    }
}
