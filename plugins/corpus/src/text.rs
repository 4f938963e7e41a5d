//! Text normalization for hashing (exact dedup and the held-out split), document hashes, and the
//! held-out decision.
//!
//! Normalization is used only to *compare* documents; the stored text is never changed. It is:
//! 1. Unicode NFKC (full-width and compatibility forms fold: `Ａ` -> `A`, `ﬁ` -> `fi`),
//! 2. lowercase (`str::to_lowercase`, full Unicode case mapping),
//! 3. every run of whitespace (`char::is_whitespace`) replaced by one ASCII space, and leading
//!    and trailing whitespace removed.
//!
//! So documents that differ only in case, spacing, line breaks or Unicode compatibility forms
//! are duplicates. Punctuation is kept (removing it would merge genuinely different code).

use unicode_normalization::UnicodeNormalization;

/// Identifies the normalization in artifacts; change it when [`normalize`] changes.
pub const NORMALIZATION: &str = "nfkc+lowercase+collapse-whitespace";

/// Size of one entry of `hashes.bin`.
pub const HASH_LEN: usize = 16;

/// The normalized form of `text` (see the module documentation).
pub fn normalize(text: &str) -> String {
    let folded: String = text.nfkc().collect::<String>().to_lowercase();
    let mut out = String::with_capacity(folded.len());
    for word in folded.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The 16-byte document hash stored in `hashes.bin`: blake3 of the normalized text, truncated.
pub fn doc_hash(normalized: &str) -> [u8; HASH_LEN] {
    let full = blake3::hash(normalized.as_bytes());
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(&full.as_bytes()[..HASH_LEN]);
    out
}

/// The held-out draw of a document in [0, 1): the first 8 bytes of `blake3(salt || normalized)`
/// read as a little-endian u64, divided by 2^64.
pub fn heldout_draw(salt: &str, normalized: &str) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(salt.as_bytes());
    hasher.update(normalized.as_bytes());
    let hash = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first) as f64 / 18_446_744_073_709_551_616.0
}

/// Whether a document (given its normalized text) is held out.
pub fn is_heldout(salt: &str, fraction: f64, normalized: &str) -> bool {
    heldout_draw(salt, normalized) < fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_folds_case_space_and_compatibility_forms() {
        assert_eq!(normalize("  Hello,\n\tWORLD  "), "hello, world");
        assert_eq!(normalize("Ｈｅｌｌｏ　ｗｏｒｌｄ"), "hello world");
        assert_eq!(normalize("ﬁne"), "fine");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \n "), "");
        // Devanagari is left as it is (already NFC; no case).
        assert_eq!(normalize("नमस्ते  दुनिया"), "नमस्ते दुनिया");
    }

    #[test]
    fn doc_hash_is_truncated_blake3() {
        let h = doc_hash("abc");
        assert_eq!(&h[..], &blake3::hash(b"abc").as_bytes()[..16]);
    }

    #[test]
    fn heldout_draw_matches_definition() {
        let hash = blake3::hash(b"saltdoc");
        let expected = u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap()) as f64 / 2f64.powi(64);
        assert_eq!(heldout_draw("salt", "doc"), expected);
        assert!(!is_heldout("salt", 0.0, "doc"));
        assert!(is_heldout("salt", 1.0, "doc"));
    }
}
