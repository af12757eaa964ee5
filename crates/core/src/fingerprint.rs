//! The fingerprint of a request, which idempotency compares.
//!
//! Two requests with the same idempotency key are "the same request" when their fingerprints match.
//! The fingerprint is a SHA-256 over a canonical form the caller builds from the *parsed* request
//! (field order and whitespace in the JSON do not matter; the values do).

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Hashes the parts in order, each length-prefixed so that ("ab", "c") and ("a", "bc") differ.
    pub fn of(parts: &[&str]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        Self(hex::encode(h.finalize()))
    }

    pub fn from_hex(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_length_prefixed() {
        assert_eq!(Fingerprint::of(&["a", "b"]), Fingerprint::of(&["a", "b"]));
        assert_ne!(Fingerprint::of(&["ab", "c"]), Fingerprint::of(&["a", "bc"]));
        assert_eq!(Fingerprint::of(&[]).as_str().len(), 64);
    }
}
