//! API keys and join tokens: generation, hashing and constant-time verification.
//!
//! An API key is `tck_<prefix>_<secret>`: the prefix (public, 12 hex chars) finds the row, the
//! SHA-256 of the whole key is what is stored and compared (in constant time). A join token is
//! `tcj_<secret>`, looked up by its SHA-256. Both secrets carry 256 bits from the OS-seeded
//! CSPRNG, so a fast hash is the right tool (argon2 is for human passwords).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const KEY_TAG: &str = "tck";
const TOKEN_TAG: &str = "tcj";

pub fn sha256(s: &str) -> Vec<u8> {
    Sha256::digest(s.as_bytes()).to_vec()
}

fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new API key: (prefix, full key). Store the prefix and `sha256(full key)`.
pub fn new_api_key() -> (String, String) {
    let prefix = hex::encode(rand::random::<[u8; 6]>());
    let key = format!("{KEY_TAG}_{prefix}_{}", random_secret());
    (prefix, key)
}

/// The lookup prefix of a presented key, if it has the right shape.
pub fn api_key_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_TAG)?.strip_prefix('_')?;
    let (prefix, secret) = rest.split_once('_')?;
    if prefix.len() != 12 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) || secret.is_empty() {
        return None;
    }
    Some(prefix)
}

/// Constant-time comparison of a presented key with a stored hash.
pub fn api_key_matches(key: &str, stored_hash: &[u8]) -> bool {
    let h = sha256(key);
    h.len() == stored_hash.len() && bool::from(h.ct_eq(stored_hash))
}

pub fn new_join_token() -> String {
    format!("{TOKEN_TAG}_{}", random_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_verify_and_reject() {
        let (prefix, key) = new_api_key();
        assert_eq!(api_key_prefix(&key), Some(prefix.as_str()));
        let stored = sha256(&key);
        assert!(api_key_matches(&key, &stored));
        let mut forged = key.clone();
        forged.pop();
        forged.push('x');
        assert!(!api_key_matches(&forged, &stored));
        assert_eq!(api_key_prefix("tck_short_x"), None);
        assert_eq!(api_key_prefix("Bearer something"), None);
        assert_eq!(api_key_prefix(""), None);
    }

    #[test]
    fn secrets_are_unique_and_long() {
        let a = new_join_token();
        let b = new_join_token();
        assert_ne!(a, b);
        assert!(a.len() > 40);
        assert!(a.starts_with("tcj_"));
    }
}
