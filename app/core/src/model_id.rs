//! Which model an index belongs to. Embeddings of two models live in different spaces, so an
//! index holds one model's embeddings and refuses another's: the desktop with exit code 3, the
//! web app by asking to index again.

use thiserror::Error;

/// The model an index was made with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelId {
    /// The model file's content hash (hex SHA-256; covers what makes two models differ).
    pub hash: String,
    /// Embedding width.
    pub dim: usize,
}

/// An index of one model asked to take or rank embeddings of another.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("the index was made with model {} ({}-d), not with model {} ({}-d)", short(&.index.hash), .index.dim, short(&.model.hash), .model.dim)]
pub struct OtherModel {
    pub index: ModelId,
    pub model: ModelId,
}

impl ModelId {
    /// `Ok` when embeddings of `model` may go into (or be ranked against) an index of `self`.
    pub fn accepts(&self, model: &ModelId) -> Result<(), OtherModel> {
        if self == model {
            Ok(())
        } else {
            Err(OtherModel { index: self.clone(), model: model.clone() })
        }
    }

    /// The first 16 characters of the hash, as `brivl convert` prints them.
    pub fn short(&self) -> &str {
        short(&self.hash)
    }
}

/// The first 16 characters of a hash (by characters, so a corrupt non-ASCII hash read back from
/// an index cannot split a character).
pub fn short(hash: &str) -> &str {
    match hash.char_indices().nth(16) {
        Some((end, _)) => &hash[..end],
        None => hash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // The same tests run compiled to wasm32 (where the int8 scan has no threads).
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn accepts_only_the_same_model() {
        let a = ModelId { hash: "ab".repeat(32), dim: 2048 };
        assert!(a.accepts(&a.clone()).is_ok());
        let other_width = ModelId { dim: 512, ..a.clone() };
        let err = a.accepts(&other_width).unwrap_err();
        assert!(err.to_string().contains("2048-d") && err.to_string().contains("512-d"), "{err}");
        assert!(a.accepts(&ModelId { hash: "cd".repeat(32), dim: 2048 }).is_err());
    }

    #[test]
    fn short_never_splits_a_character() {
        assert_eq!(short(&"0123456789abcdef".repeat(4)), "0123456789abcdef");
        assert_eq!(short("abc"), "abc");
        assert_eq!(short(&"é".repeat(20)), "é".repeat(16));
    }
}
