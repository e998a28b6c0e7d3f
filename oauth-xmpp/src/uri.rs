//! RFC 5849 §3.4.1.2: the base string URI.

/// Why a request URI cannot give a base string URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// No `scheme:` at the start.
    #[error("the request URI has no scheme")]
    MissingScheme,
    /// No `//host` after the scheme, or an empty host.
    #[error("the request URI has no host")]
    MissingHost,
    /// The port is not a number from 1 to 65535.
    #[error("the request URI's port is not a number from 1 to 65535")]
    InvalidPort,
}

/// Builds the base string URI of an absolute request URI (RFC 5849 §3.4.1.2): scheme and
/// host in lower case, the port only when it is not the scheme's default (80 for `http`,
/// 443 for `https`), user information, query and fragment dropped, an empty path as `/`.
/// The path is kept as sent; spaces in it become `%20` (RFC 5849 §3.4.1.2's example).
///
/// ```
/// use oauth_xmpp::uri::base_string_uri;
/// assert_eq!(base_string_uri("http://EXAMPLE.COM:80/r%20v/X?id=123").unwrap(), "http://example.com/r%20v/X");
/// assert_eq!(base_string_uri("https://www.example.net:8080/?q=1").unwrap(), "https://www.example.net:8080/");
/// ```
pub fn base_string_uri(uri: &str) -> Result<String, UriError> {
    let (scheme, rest) = uri.split_once(':').ok_or(UriError::MissingScheme)?;
    let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return Err(UriError::MissingScheme);
    }
    let scheme = scheme.to_ascii_lowercase();
    let rest = rest.strip_prefix("//").ok_or(UriError::MissingHost)?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);

    let (host, port) = if host_port.starts_with('[') {
        let close = host_port.find(']').ok_or(UriError::MissingHost)?;
        let (host, after) = host_port.split_at(close + 1);
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or(UriError::InvalidPort)?),
            ),
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(UriError::MissingHost);
    }
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 5 => {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(UriError::InvalidPort),
                Ok(n) => Some(n),
            }
        }
        Some(_) => return Err(UriError::InvalidPort),
    };
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let path = match &rest[..path_end] {
        "" => "/",
        p => p,
    };

    let mut out = String::with_capacity(uri.len() + 1);
    out.push_str(&scheme);
    out.push_str("://");
    out.push_str(&host.to_ascii_lowercase());
    match (scheme.as_str(), port) {
        (_, None) | ("http", Some(80)) | ("https", Some(443)) => {}
        (_, Some(port)) => {
            out.push(':');
            out.push_str(&port.to_string());
        }
    }
    for c in path.chars() {
        match c {
            ' ' => out.push_str("%20"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The query of a request URI (between `?` and `#`), if any.
pub(crate) fn query(uri: &str) -> Option<&str> {
    let without_fragment = uri.split_once('#').map_or(uri, |(before, _)| before);
    without_fragment.split_once('?').map(|(_, q)| q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_dropped() {
        assert_eq!(
            base_string_uri("http://user:pw@Host.example/p").unwrap(),
            "http://host.example/p"
        );
    }

    #[test]
    fn query_skips_fragment() {
        assert_eq!(query("http://h/p?a=1#frag"), Some("a=1"));
        assert_eq!(query("http://h/p#frag?x"), None);
    }

    #[test]
    fn ipv6_without_port() {
        assert_eq!(base_string_uri("http://[::1]/x").unwrap(), "http://[::1]/x");
        assert_eq!(
            base_string_uri("http://[::1]x/"),
            Err(UriError::InvalidPort)
        );
    }
}
