//! CLIP byte-level BPE tokenizer, as OpenAI CLIP and open_clip tokenize text:
//! clean the text (`clean`), split it with CLIP's pre-tokenizer pattern, map
//! each word's UTF-8 bytes through the byte-to-unicode table and merge them
//! with the BPE ranks (`bpe`), then wrap in start/end of text and pad to the
//! 77-token context. Pure logic with no I/O after loading; the gateway feeds
//! the ids to the `clip_text` encoder as INT64 [77].
//!
//! One deliberate difference from the Python tokenizers: the special-token
//! spellings ("<|startoftext|>", "<|endoftext|>") in user text are ordinary
//! text here, so a query cannot inject an end-of-text token.
//!
//! Layer: pure logic, no workspace dependencies. Imported by the gateway.

mod bpe;
mod clean;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

use crate::bpe::{byte_to_unicode, Bpe, Merge};
pub use crate::clean::clean;

/// Tokens per sequence, start and end of text included.
pub const CONTEXT_LENGTH: usize = 77;
pub const START_OF_TEXT: u32 = 49406;
pub const END_OF_TEXT: u32 = 49407;
pub const PAD: u32 = 0;
/// Vocabulary size of every CLIP text tower.
pub const VOCAB_SIZE: usize = 49408;
/// CLIP uses the first 49152 - 256 - 2 merges of the file (its vocabulary is
/// 256 bytes x 2 + these merges + 2 special tokens = 49408).
pub const MERGE_COUNT: usize = 48894;

/// CLIP's pre-tokenizer: contractions, runs of letters, single digits, runs
/// of other non-space characters. Case-insensitive as in CLIP (the text is
/// already lower-case; this only matters for case-folding pairs like 'ſ').
static PRE_TOKENIZER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+").expect("valid regex"));

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a JSON object of token -> id: {source}")]
    VocabJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: token {token:?} has id {found:?}, CLIP expects {expected}")]
    VocabId { path: PathBuf, token: String, found: Option<u32>, expected: u32 },
    #[error("{path} has {found} entries, CLIP's vocabulary has {expected}")]
    VocabSize { path: PathBuf, found: usize, expected: usize },
    #[error("{path}:{line}: expected a merge \"left right\", found {text:?}")]
    MalformedMerge { path: PathBuf, line: usize, text: String },
    #[error("{path}:{line}: {symbol:?} is not in the vocabulary")]
    UnknownSymbol { path: PathBuf, line: usize, symbol: String },
    #[error("{path} has {found} merges, CLIP needs the first {needed}")]
    TooFewMerges { path: PathBuf, found: usize, needed: usize },
}

pub struct ClipTokenizer {
    bpe: Bpe,
}

impl ClipTokenizer {
    /// Loads CLIP's `vocab.json` (token -> id) and `merges.txt` (an optional
    /// `#version` line, then one merge per line; only the first
    /// `MERGE_COUNT` are used).
    pub fn from_files(vocab_path: impl AsRef<Path>, merges_path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let vocab_path = vocab_path.as_ref();
        let merges_path = merges_path.as_ref();
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TokenizerError::Read { path: path.to_owned(), source })
        };
        let vocab: HashMap<String, u32> = serde_json::from_str(&read(vocab_path)?)
            .map_err(|source| TokenizerError::VocabJson { path: vocab_path.to_owned(), source })?;
        Self::from_parts(vocab, vocab_path, &read(merges_path)?, merges_path)
    }

    fn from_parts(
        vocab: HashMap<String, u32>,
        vocab_path: &Path,
        merges: &str,
        merges_path: &Path,
    ) -> Result<Self, TokenizerError> {
        if vocab.len() != VOCAB_SIZE {
            return Err(TokenizerError::VocabSize {
                path: vocab_path.to_owned(),
                found: vocab.len(),
                expected: VOCAB_SIZE,
            });
        }
        for (token, expected) in [("<|startoftext|>", START_OF_TEXT), ("<|endoftext|>", END_OF_TEXT)] {
            let found = vocab.get(token).copied();
            if found != Some(expected) {
                return Err(TokenizerError::VocabId {
                    path: vocab_path.to_owned(),
                    token: token.into(),
                    found,
                    expected,
                });
            }
        }

        let table = byte_to_unicode();
        let mut byte_ids = [0u32; 256];
        let mut final_byte_ids = [0u32; 256];
        for (byte, c) in table.iter().enumerate() {
            let symbol = c.to_string();
            let final_symbol = format!("{c}</w>");
            let lookup = |symbol: &str| {
                vocab.get(symbol).copied().ok_or_else(|| TokenizerError::VocabId {
                    path: vocab_path.to_owned(),
                    token: symbol.to_owned(),
                    found: None,
                    expected: byte as u32,
                })
            };
            byte_ids[byte] = lookup(&symbol)?;
            final_byte_ids[byte] = lookup(&final_symbol)?;
        }

        let mut ranks = HashMap::with_capacity(MERGE_COUNT);
        let mut lines = merges.lines().enumerate().peekable();
        if lines.peek().is_some_and(|(_, line)| line.starts_with("#version")) {
            lines.next();
        }
        let mut merge_count = 0;
        for (index, line) in lines.take(MERGE_COUNT) {
            let line_number = index + 1;
            let mut parts = line.split(' ');
            let (Some(left), Some(right), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(TokenizerError::MalformedMerge {
                    path: merges_path.to_owned(),
                    line: line_number,
                    text: line.to_owned(),
                });
            };
            let id = |symbol: &str| {
                vocab.get(symbol).copied().ok_or_else(|| TokenizerError::UnknownSymbol {
                    path: merges_path.to_owned(),
                    line: line_number,
                    symbol: symbol.to_owned(),
                })
            };
            let merge = Merge { rank: merge_count, merged: id(&format!("{left}{right}"))? };
            ranks.insert((id(left)?, id(right)?), merge);
            merge_count += 1;
        }
        if (merge_count as usize) < MERGE_COUNT {
            return Err(TokenizerError::TooFewMerges {
                path: merges_path.to_owned(),
                found: merge_count as usize,
                needed: MERGE_COUNT,
            });
        }
        Ok(Self { bpe: Bpe::new(byte_ids, final_byte_ids, ranks) })
    }

    /// BPE ids of the cleaned text, without start/end of text; stops once
    /// `limit` ids exist (a query longer than the context is truncated anyway).
    pub fn encode(&self, text: &str, limit: usize) -> Vec<u32> {
        let cleaned = clean(text);
        let mut ids = Vec::new();
        for word in PRE_TOKENIZER.find_iter(&cleaned) {
            if ids.len() >= limit {
                break;
            }
            self.bpe.encode_word(word.as_str().as_bytes(), &mut ids);
        }
        ids.truncate(limit);
        ids
    }

    /// The model input: start of text, the ids, end of text, zero padding to
    /// 77. Text longer than the context is cut, keeping end of text last.
    pub fn tokenize(&self, text: &str) -> [i64; CONTEXT_LENGTH] {
        let ids = self.encode(text, CONTEXT_LENGTH - 2);
        let mut tokens = [PAD as i64; CONTEXT_LENGTH];
        tokens[0] = START_OF_TEXT as i64;
        for (slot, id) in tokens[1..].iter_mut().zip(&ids) {
            *slot = *id as i64;
        }
        tokens[ids.len() + 1] = END_OF_TEXT as i64;
        tokens
    }
}
