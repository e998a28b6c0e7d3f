//! Keys, secrets, tokens and verifiers from the OS random generator.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::authz::StoreError;

/// `N` bytes from the OS random generator.
pub fn bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(out)
}

/// A URL-safe random string of `n` bytes of entropy (`n` ≥ 16: at least 128 bits).
///
/// It never starts with `-`, so it can follow a flag on a command line
/// (`--consumer KEY`) without being taken for one; redrawing the 1 in 64 that would costs
/// 0.02 bits.
pub fn token(n: usize) -> Result<String, StoreError> {
    let n = n.clamp(16, 32);
    loop {
        let raw = bytes::<32>()?;
        let token = URL_SAFE_NO_PAD.encode(&raw[..n]);
        if !token.starts_with('-') {
            return Ok(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_url_safe_and_distinct() {
        let a = token(16).unwrap();
        let b = token(16).unwrap();
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(token(32).unwrap().len(), 43);
        // 1 in 64 draws would start with '-' without the redraw; 2,000 draws all pass.
        assert!((0..2000).all(|_| !token(16).unwrap().starts_with('-')));
    }
}
