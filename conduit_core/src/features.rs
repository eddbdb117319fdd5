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

/// Counts of the metadata markers, all gathered in one pass over the bytes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Markers {
    code: usize,
    math: usize,
    questions: usize,
}

/// Code words counted like `str::matches` (non-overlapping, left to right); only the
/// backtick fence can overlap itself, the others cannot, so only it needs a skip.
const CODE_WORDS: [&[u8]; 7] = [
    b"```",
    b"def ",
    b"class ",
    b"fn ",
    b"import ",
    b"#include",
    b"=>",
];
/// Math symbols outside ASCII; a char can only be one of them if it is not ASCII.
const MATH_SYMBOLS: [char; 8] = ['∑', '∫', '√', 'π', '∞', '≤', '≥', '≠'];

fn markers(text: &str) -> Markers {
    let bytes = text.as_bytes();
    let digit_at = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_digit);
    let mut m = Markers::default();
    let mut fence_free_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' | b'}' | b';' => m.code += 1,
            b'?' => m.questions += 1,
            b'$' | b'\\' => m.math += 1,
            _ => {}
        }
        if matches!(
            b,
            b'+' | b'-' | b'*' | b'/' | b'^' | b'=' | b'<' | b'>' | b'%'
        ) {
            let before = (i >= 1 && digit_at(i - 1)) || (i >= 2 && digit_at(i - 2));
            if before || digit_at(i + 1) || digit_at(i + 2) {
                m.math += 1;
            }
        }
        if matches!(b, b'`' | b'd' | b'c' | b'f' | b'i' | b'#' | b'=') {
            let rest = &bytes[i..];
            for (k, word) in CODE_WORDS.iter().enumerate() {
                if rest.starts_with(word) && (k != 0 || i >= fence_free_from) {
                    m.code += 1;
                    if k == 0 {
                        fence_free_from = i + word.len();
                    }
                }
            }
        }
    }
    if !text.is_ascii() {
        m.math += text.chars().filter(|c| MATH_SYMBOLS.contains(c)).count();
    }
    m
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
        let m = markers(text);
        out[1] = (1.0 + chars as f64).ln() / (1.0 + MAX_TEXT_BYTES as f64).ln();
        out[2] = (1.0 + m.code as f64).ln();
        out[3] = (1.0 + m.math as f64).ln();
        out[4] = (1.0 + m.questions as f64).ln();

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
            if c.is_ascii() {
                // The common case, without the Unicode tables.
                if c.is_ascii_alphanumeric() || c == '_' {
                    word.push(c.to_ascii_lowercase());
                } else {
                    flush(&mut word, &mut prev);
                }
            } else if c.is_alphanumeric() {
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

    /// The markers as first written (one pass per pattern): the single-pass scanner must
    /// count exactly the same, or every deployed model's inputs would shift.
    fn reference_markers(text: &str) -> Markers {
        const PATTERNS: [&str; 7] = ["```", "def ", "class ", "fn ", "import ", "#include", "=>"];
        let words: usize = PATTERNS.iter().map(|p| text.matches(p).count()).sum();
        let punct = text
            .bytes()
            .filter(|b| matches!(b, b'{' | b'}' | b';'))
            .count();
        let bytes = text.as_bytes();
        let mut math = 0;
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'$' | b'\\' => math += 1,
                b'+' | b'-' | b'*' | b'/' | b'^' | b'=' | b'<' | b'>' | b'%' => {
                    let near = |j: Option<usize>| {
                        j.and_then(|j| bytes.get(j))
                            .is_some_and(|c| c.is_ascii_digit())
                    };
                    if near(i.checked_sub(1))
                        || near(i.checked_sub(2))
                        || near(Some(i + 1))
                        || near(Some(i + 2))
                    {
                        math += 1;
                    }
                }
                _ => {}
            }
        }
        math += text.chars().filter(|c| "∑∫√π∞≤≥≠".contains(*c)).count();
        Markers {
            code: words + punct,
            math,
            questions: text.bytes().filter(|b| *b == b'?').count(),
        }
    }

    #[test]
    fn one_pass_markers_equal_the_reference() {
        for text in [
            "",
            "````` ``` ``",
            "def f(x): return x+1; class A {} fn main() => 2*3 #include <x>",
            "import numpy; 1 + 1 = 2? $x$ \\frac ∑ π≤3 ≠ 4 ???",
            "a-b 7- -7 x^2 10%",
            "é∞ëdef\u{00A0}import café?",
        ] {
            assert_eq!(markers(text), reference_markers(text), "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn one_pass_markers_equal_the_reference_on_any_text(
            text in "[`dcfi#=>{};?$\\\\+*/^<%0-9a-z ∑π≤é\u{00A0}-]{0,40}"
        ) {
            proptest::prop_assert_eq!(markers(&text), reference_markers(&text));
        }
    }

    #[test]
    fn the_ascii_fast_path_matches_the_unicode_rules() {
        for b in 0u8..128 {
            let c = char::from(b);
            assert_eq!(c.is_ascii_alphanumeric(), c.is_alphanumeric(), "{c:?}");
            assert_eq!(
                c.to_lowercase().collect::<String>(),
                c.to_ascii_lowercase().to_string()
            );
        }
    }

    #[test]
    fn small_dimensions_are_refused() {
        assert!(FeatureHasher::new(7).is_err());
    }
}
