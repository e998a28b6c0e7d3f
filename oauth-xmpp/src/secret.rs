//! Secrets: consumer and token secrets, kept out of `Debug` and zeroed on drop.

use std::fmt;

use zeroize::Zeroize;

/// A shared secret (consumer secret or token secret).
///
/// Its `Debug` output is `Secret(***)`, it has no `Display`, and its memory is zeroed when it
/// is dropped. It has no `PartialEq`: compare secrets only through the constant-time checks
/// of [`crate::signature`]. Read it with [`Secret::expose`] only where the signing key is built.
///
/// ```
/// let s = oauth_xmpp::Secret::new("kd94hf93k423kf44");
/// assert_eq!(format!("{s:?}"), "Secret(***)");
/// assert_eq!(s.expose(), "kd94hf93k423kf44");
/// ```
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Never log or display what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string (e.g. no token secret yet).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:#?}", Some(&s)).contains("hunter2"));
    }
}
