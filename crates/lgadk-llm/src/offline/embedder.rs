//! [`LexicalEmbedder`]: a deterministic, offline embedder built from the words of a text.

use async_trait::async_trait;
use lgadk_core::memory::Embedder;
use lgadk_core::{Error, Result};

/// The id a [`LexicalEmbedder`] reports.
pub const LEXICAL_EMBEDDER_ID: &str = "offline/lexical";

/// Default vector length of a [`LexicalEmbedder`].
pub const DEFAULT_LEXICAL_DIMENSIONS: usize = 256;

/// Longest vector a [`LexicalEmbedder`] makes.
const MAX_LEXICAL_DIMENSIONS: usize = 65_536;

/// Weight of a whole word; each of its character trigrams weighs [`TRIGRAM_WEIGHT`].
const WORD_WEIGHT: f32 = 1.0;
const TRIGRAM_WEIGHT: f32 = 0.25;

/// Words that carry no topic, left out so that "what are my preferences" and "my seat
/// preferences" meet on `preferences`, not on `my`.
const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "am", "an", "and", "any", "are", "as", "at", "be", "been", "being",
    "both", "but", "by", "can", "could", "did", "do", "does", "doing", "for", "from", "had", "has", "have", "having",
    "he", "her", "here", "hers", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "me", "mine",
    "my", "myself", "of", "on", "or", "our", "ours", "she", "should", "so", "some", "than", "that", "the", "their",
    "them", "then", "there", "these", "they", "this", "those", "to", "too", "was", "we", "were", "what", "when",
    "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours",
];

/// A **lexical** embedder: a text's vector is built from the words it contains, with no
/// model, no network and no randomness, so the same text gives the same vector on every
/// machine and in every version of this crate.
///
/// It is the offline default and the embedder of tests. It measures shared words, not
/// meaning: "I like aisle seats" and "seating preference: aisle" meet on `aisle` and on the
/// trigrams `sea`/`eat`, but "car" and "automobile" share nothing. Use a model
/// ([`OpenAiEmbedder`](crate::OpenAiEmbedder) with `text-embedding-3-small`, or a local model
/// behind Ollama) for semantic search.
///
/// How a vector is made:
/// 1. The text is lowercased and split into words at every character that is not a letter or
///    digit. Common English function words (`the`, `my`, `what`, …) are left out, and a
///    trailing `s` is dropped from words longer than three letters (`seats` → `seat`).
/// 2. Each word adds weight 1 and each of its character trigrams (of the word padded as
///    `^word$`) weight ¼ to one coordinate each, chosen by the 64-bit FNV-1a hash of the
///    feature modulo the length, with a sign from the hash's top bit (feature hashing).
/// 3. The vector is scaled to length 1, so a dot product is the cosine similarity. A text
///    without words (empty, punctuation, only function words) gives the zero vector, which is
///    similar to nothing.
///
/// It implements [`Embedder`], for memory stores:
///
/// ```
/// use lgadk_llm::LexicalEmbedder;
///
/// let embedder = LexicalEmbedder::default();
/// let cosine = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
/// let prefs = embedder.embed_text("I prefer window seats on flights");
/// let question = embedder.embed_text("Which seat do I like on a flight?");
/// let unrelated = embedder.embed_text("The quarterly report is due on Friday");
/// assert!(cosine(&prefs, &question) > cosine(&prefs, &unrelated));
/// assert_eq!(prefs, embedder.embed_text("I prefer window seats on flights"));
/// assert_eq!(prefs.len(), 256);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LexicalEmbedder {
    dimensions: usize,
}

impl Default for LexicalEmbedder {
    fn default() -> Self {
        Self { dimensions: DEFAULT_LEXICAL_DIMENSIONS }
    }
}

impl LexicalEmbedder {
    /// An embedder making vectors of `dimensions` values (default
    /// [`DEFAULT_LEXICAL_DIMENSIONS`]). Fewer dimensions mean more unrelated words share a
    /// coordinate.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for 0 or more than 65 536 dimensions.
    pub fn with_dimensions(dimensions: usize) -> Result<Self> {
        if !(1..=MAX_LEXICAL_DIMENSIONS).contains(&dimensions) {
            return Err(Error::InvalidConfig {
                reason: format!("a lexical embedder needs 1 to {MAX_LEXICAL_DIMENSIONS} dimensions, not {dimensions}"),
            });
        }
        Ok(Self { dimensions })
    }

    /// The vector of `text` (see the type's docs): unit length, or all zeros for a text
    /// without words.
    pub fn embed_text(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0.0_f32; self.dimensions];
        let lower = text.to_lowercase();
        for word in lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            if STOP_WORDS.contains(&word) {
                continue;
            }
            let word = stem(word);
            self.add(&mut vector, word.as_bytes(), WORD_WEIGHT);
            let padded: Vec<char> = std::iter::once('^').chain(word.chars()).chain(std::iter::once('$')).collect();
            for trigram in padded.windows(3) {
                let trigram: String = trigram.iter().collect();
                // A prefix keeps a trigram from landing where the three-letter word would.
                self.add(&mut vector, format!("#{trigram}").as_bytes(), TRIGRAM_WEIGHT);
            }
        }
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            for v in &mut vector {
                *v /= norm;
            }
        }
        vector
    }

    fn add(&self, vector: &mut [f32], feature: &[u8], weight: f32) {
        let hash = fnv1a(feature);
        // The length is at most 65 536, so the remainder fits a usize everywhere.
        let index = usize::try_from(hash % self.dimensions as u64).unwrap_or(0);
        let sign = if hash >> 63 == 1 { -1.0 } else { 1.0 };
        if let Some(slot) = vector.get_mut(index) {
            *slot += sign * weight;
        }
    }
}

/// `word` without a plural `s` when it is longer than three letters and not `…ss`.
fn stem(word: &str) -> &str {
    match word.strip_suffix('s') {
        Some(stem) if word.chars().count() > 3 && !stem.ends_with('s') => stem,
        _ => word,
    }
}

#[async_trait]
impl Embedder for LexicalEmbedder {
    /// [`LEXICAL_EMBEDDER_ID`].
    fn id(&self) -> &str {
        LEXICAL_EMBEDDER_ID
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// [`embed_text`](Self::embed_text) of each text; never fails.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|text| self.embed_text(text)).collect())
    }
}

/// 64-bit FNV-1a: fixed, so vectors do not change between builds, machines or versions.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_are_unit_length_and_stable() {
        let e = LexicalEmbedder::default();
        let v = e.embed_text("Window seats, please!");
        assert!((cosine(&v, &v) - 1.0).abs() < 1e-5);
        // FNV-1a's published test vectors: the hash does not depend on the build.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(e.embed_text("window seat"), e.embed_text("WINDOW   seats."));
    }

    #[test]
    fn shared_words_score_higher_than_unrelated_text() {
        let e = LexicalEmbedder::default();
        let memory = e.embed_text("Prefers vegetarian meals");
        let related = e.embed_text("what meal should I order, vegetarian?");
        let unrelated = e.embed_text("the train leaves at noon");
        let (related, unrelated) = (cosine(&memory, &related), cosine(&memory, &unrelated));
        assert!(related > 0.2 && related > unrelated + 0.15, "related {related}, unrelated {unrelated}");
    }

    #[test]
    fn texts_without_words_are_the_zero_vector() {
        let e = LexicalEmbedder::with_dimensions(8).unwrap();
        assert_eq!(e.embed_text(""), vec![0.0; 8]);
        assert_eq!(e.embed_text("... what is the"), vec![0.0; 8]);
        assert!(matches!(LexicalEmbedder::with_dimensions(0), Err(Error::InvalidConfig { .. })));
        assert!(LexicalEmbedder::with_dimensions(70_000).is_err());
    }

    #[test]
    fn plurals_are_folded_but_short_words_and_double_s_are_kept() {
        assert_eq!(stem("seats"), "seat");
        assert_eq!(stem("bus"), "bus");
        assert_eq!(stem("glass"), "glass");
        assert_eq!(stem("cafés"), "café");
    }
}
