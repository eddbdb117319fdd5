//! Deterministic text features: the same text gives the same vector in every process, on
//! every machine, across restarts. Nothing here depends on a per-process hash seed: words
//! are hashed with FNV-1a followed by a fixed 64-bit finaliser.
//!
//! Layout of the vector (dimension `dim >= 8`):
//! - `[0]` the constant bias term 1.0 (left out of the normalisation);
//! - `[1]` length: `ln(1 + chars) / ln(1 + 65536)`;
//! - `[2]` code markers (```` ``` ````, `def `, `class `, `fn `, `import `, `#include`, `{`,
//!   `}`, `;`, `=>`), `[3]` math markers (an operator next to a digit, `$`, `\`, `∑∫√π∞≤≥≠`),
//!   `[4]` question marks, each as `ln(1 + count)`;
//! - `[5..dim)` signed hashed buckets of lower-cased word unigrams and bigrams.
//!
//! Everything except the bias is then scaled to unit L2 norm. Only the first
//! [`MAX_TEXT_BYTES`] bytes of a text are read (cut at a character boundary), so a huge text
//! costs bounded time and never fails; its length feature saturates accordingly.

use crate::error::{CoreError, CoreResult};

/// Prefix of the text that is featurised; the rest is ignored.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Smallest supported dimension: bias, four metadata features, three buckets.
pub const MIN_DIM: usize = 8;
const META: usize = 5;
const BIGRAM_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Fixed 64-bit avalanche (the splitmix64 finaliser) so nearby FNV values spread out.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Featurises query text into a dense vector of a fixed dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureHasher {
    dim: usize,
}

/// The part of `text` that is featurised: its first [`MAX_TEXT_BYTES`] bytes, cut back to a
/// character boundary.
pub fn text_prefix(text: &str) -> &str {
    if text.len() <= MAX_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn code_markers(text: &str) -> usize {
    const PATTERNS: [&str; 7] = ["```", "def ", "class ", "fn ", "import ", "#include", "=>"];
    let words: usize = PATTERNS.iter().map(|p| text.matches(p).count()).sum();
    let punct = text
        .bytes()
        .filter(|b| matches!(b, b'{' | b'}' | b';'))
        .count();
    words + punct
}

fn math_markers(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut count = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'$' | b'\\' => count += 1,
            b'+' | b'-' | b'*' | b'/' | b'^' | b'=' | b'<' | b'>' | b'%' => {
                let near_digit = |j: Option<usize>| {
                    j.and_then(|j| bytes.get(j))
                        .is_some_and(|c| c.is_ascii_digit())
                };
                let before = near_digit(i.checked_sub(1)) || near_digit(i.checked_sub(2));
                let after = near_digit(Some(i + 1)) || near_digit(Some(i + 2));
                if before || after {
                    count += 1;
                }
            }
            _ => {}
        }
    }
    count + text.chars().filter(|c| "∑∫√π∞≤≥≠".contains(*c)).count()
}

impl FeatureHasher {
    /// A hasher producing vectors of length `dim` (at least [`MIN_DIM`]).
    pub fn new(dim: usize) -> CoreResult<Self> {
        if !(MIN_DIM..=65_536).contains(&dim) {
            return Err(CoreError::invalid(
                "dim",
                format!("must be in [{MIN_DIM}, 65536], got {dim}"),
            ));
        }
        Ok(FeatureHasher { dim })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The feature vector of `text`.
    pub fn featurize(&self, text: &str) -> Vec<f64> {
        let mut out = vec![0.0; self.dim];
        self.featurize_into(text, &mut out);
        out
    }

    /// Writes the feature vector of `text` into `out` (length `dim`).
    pub fn featurize_into(&self, text: &str, out: &mut [f64]) {
        let text = text_prefix(text);
        let out = &mut out[..self.dim];
        out.fill(0.0);
        out[0] = 1.0;
        let chars = text.chars().count();
        out[1] = (1.0 + chars as f64).ln() / (1.0 + MAX_TEXT_BYTES as f64).ln();
        out[2] = (1.0 + code_markers(text) as f64).ln();
        out[3] = (1.0 + math_markers(text) as f64).ln();
        out[4] = (1.0 + text.bytes().filter(|b| *b == b'?').count() as f64).ln();

        let buckets = (self.dim - META) as u64;
        let mut add = |h: u64| {
            let h = mix(h);
            let idx = META + (h % buckets) as usize;
            out[idx] += if h >> 63 == 0 { 1.0 } else { -1.0 };
        };
        let mut word = String::new();
        let mut prev: Option<u64> = None;
        let mut flush = |word: &mut String, prev: &mut Option<u64>| {
            if word.is_empty() {
                return;
            }
            let h = fnv1a(word.as_bytes());
            add(h);
            if let Some(p) = *prev {
                add(mix(p ^ BIGRAM_SALT).wrapping_add(h));
            }
            *prev = Some(h);
            word.clear();
        };
        for c in text.chars() {
            if c.is_alphanumeric() || c == '_' {
                word.extend(c.to_lowercase());
            } else {
                flush(&mut word, &mut prev);
            }
        }
        flush(&mut word, &mut prev);

        let norm = out[1..].iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm > 0.0 {
            for v in &mut out[1..] {
                *v /= norm;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_is_stable() {
        // Pinned values: a change here changes every deployed model's inputs.
        let h = FeatureHasher::new(16).unwrap();
        let v = h.featurize("What is 2+2? Write def f(): return 4");
        assert_eq!(v[0], 1.0);
        let norm: f64 = v[1..].iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-12);
        assert_eq!(v, h.featurize("What is 2+2? Write def f(): return 4"));
    }

    #[test]
    fn case_and_punctuation_do_not_matter_for_words() {
        let h = FeatureHasher::new(64).unwrap();
        assert_eq!(h.featurize("Hello, World"), h.featurize("hello. world"));
        assert_ne!(h.featurize("hello world"), h.featurize("world hello"));
        assert_ne!(h.featurize("red fish blue"), h.featurize("blue fish red"));
    }

    #[test]
    fn empty_and_huge_texts_work() {
        let h = FeatureHasher::new(8).unwrap();
        let v = h.featurize("");
        assert_eq!(v[0], 1.0);
        assert!(v[1..].iter().all(|x| *x == 0.0));
        let huge = "é".repeat(200_000);
        let v = h.featurize(&huge);
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn small_dimensions_are_refused() {
        assert!(FeatureHasher::new(7).is_err());
    }
}
