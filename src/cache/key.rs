//! Cache keys: a set of named fields, hashed canonically into a SHA-256 digest.

use super::FORMAT_VERSION;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// Domain separator hashed before the fields, so a key digest never equals a digest of anything else.
const KEY_DOMAIN: &[u8] = b"rusttrt-engine-cache-key\0";

/// The identity of one built engine artifact.
///
/// A key is a set of named string fields (model digest, engine kind and version, device, precision,
/// profiles, every builder option, backend version ...) and their SHA-256 `digest`. The digest is
/// computed over the fields in sorted order, each name and value framed by its length (so
/// `("ab","c")` and `("a","bc")` differ), preceded by a domain string and [`FORMAT_VERSION`].
///
/// **Never put a path in a key.** Callers pass the *digest of the model bytes* (ONNX file plus
/// external data), not the model's location: a path-based key rebuilds on every copy or move of a
/// repository and, worse, serves a stale engine after the model file is replaced in place.
/// Likewise the engine library version, the GPU identity and every option that changes the built
/// artifact belong in the key, or a change of any of them serves an engine built for something else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Lowercase hex SHA-256 (64 characters) of the canonical fields; names the entry on disk.
    pub digest: String,
    /// The fields the digest was computed from (sorted by name).
    pub fields: BTreeMap<String, String>,
}

impl CacheKey {
    /// Starts a key: add fields with [`CacheKeyBuilder::field`], finish with [`CacheKeyBuilder::build`].
    pub fn builder() -> CacheKeyBuilder {
        CacheKeyBuilder::default()
    }

    /// A key from a complete field map (the digest is computed here).
    pub fn from_fields(fields: BTreeMap<String, String>) -> Self {
        let digest = digest_of(&fields);
        CacheKey { digest, fields }
    }

    /// The first 16 hex digits of the digest, for log lines.
    pub fn short(&self) -> &str {
        self.digest.get(..16).unwrap_or(&self.digest)
    }

    /// One field's value.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

/// Collects the fields of a [`CacheKey`]. Setting a field twice keeps the last value.
#[derive(Debug, Clone, Default)]
pub struct CacheKeyBuilder {
    fields: BTreeMap<String, String>,
}

impl CacheKeyBuilder {
    /// Adds one field (`name` such as `"model_digest"`, `"engine_version"`, `"option.workspace"`).
    pub fn field(mut self, name: impl Into<String>, value: impl ToString) -> Self {
        self.fields.insert(name.into(), value.to_string());
        self
    }

    /// Adds a field only when a value is given (absent and present-but-empty stay distinct).
    pub fn field_opt(self, name: impl Into<String>, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.field(name, v),
            None => self,
        }
    }

    /// Computes the digest.
    pub fn build(self) -> CacheKey {
        CacheKey::from_fields(self.fields)
    }
}

/// SHA-256 (lowercase hex) of the canonical encoding of `fields`.
pub(crate) fn digest_of(fields: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    h.update(KEY_DOMAIN);
    h.update(FORMAT_VERSION.to_le_bytes());
    h.update((fields.len() as u64).to_le_bytes());
    for (name, value) in fields {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value.as_bytes());
    }
    hex::encode(h.finalize())
}

/// True for a 64-character lowercase hex string (what [`CacheKey::digest`] always is).
pub(crate) fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_order_independent_and_framed() {
        let a = CacheKey::builder().field("x", "1").field("y", "2").build();
        let b = CacheKey::builder().field("y", "2").field("x", "1").build();
        assert_eq!(a, b);
        assert!(is_digest(&a.digest));
        assert_eq!(a.short().len(), 16);
        // Length framing: moving a character between name and value changes the digest.
        let c = CacheKey::builder().field("ab", "c").build();
        let d = CacheKey::builder().field("a", "bc").build();
        assert_ne!(c.digest, d.digest);
        // A changed value changes the digest; an absent field differs from an empty one.
        let e = CacheKey::builder().field("x", "1").field("y", "3").build();
        assert_ne!(a.digest, e.digest);
        let f = CacheKey::builder().field("x", "1").build();
        let g = CacheKey::builder().field("x", "1").field("y", "").build();
        assert_ne!(f.digest, g.digest);
        assert_eq!(
            f.digest,
            CacheKey::builder()
                .field("x", "1")
                .field_opt("y", None::<&str>)
                .build()
                .digest
        );
    }
}
