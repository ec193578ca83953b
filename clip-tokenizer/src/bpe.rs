//! Byte-level BPE over CLIP's vocabulary: the byte-to-unicode table, the
//! merge ranks, and the merge loop with a bounded per-word cache.
//!
//! Words are handled as vocabulary ids, not strings: every merge result is a
//! vocabulary entry (CLIP builds its vocabulary from the merges), so the loop
//! looks up `(left id, right id) -> (rank, merged id)` and never allocates
//! strings.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most distinct words kept in the cache; when full it is emptied, which keeps
/// memory bounded at the cost of recomputing words that were frequent.
const CACHE_CAPACITY: usize = 16_384;

/// GPT-2/CLIP's reversible map from bytes to printable characters: printable
/// Latin-1 bytes map to themselves, the other 68 bytes to U+0100 onwards, so
/// that no byte becomes whitespace or a control character.
pub fn byte_to_unicode() -> [char; 256] {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut table = ['\0'; 256];
    let mut next_extra = 0x100;
    for byte in 0..256u32 {
        let code = if printable(byte) {
            byte
        } else {
            next_extra += 1;
            next_extra - 1
        };
        table[byte as usize] = char::from_u32(code).expect("code points below 0x200 are valid");
    }
    table
}

/// Word bytes -> their ids, shared by every thread using the tokenizer.
type WordCache = Mutex<HashMap<Box<[u8]>, Box<[u32]>>>;

pub struct Bpe {
    /// Id of each byte's character as a non-final symbol.
    byte_ids: [u32; 256],
    /// Id of each byte's character followed by "</w>" (a word's last symbol).
    final_byte_ids: [u32; 256],
    merges: HashMap<(u32, u32), Merge>,
    cache: WordCache,
}

#[derive(Clone, Copy)]
pub struct Merge {
    pub rank: u32,
    pub merged: u32,
}

impl Bpe {
    pub fn new(byte_ids: [u32; 256], final_byte_ids: [u32; 256], merges: HashMap<(u32, u32), Merge>) -> Self {
        Self { byte_ids, final_byte_ids, merges, cache: Mutex::new(HashMap::new()) }
    }

    /// Appends the ids of one pre-tokenized word (its UTF-8 bytes).
    pub fn encode_word(&self, word: &[u8], out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if let Some(ids) = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(word) {
            out.extend_from_slice(ids);
            return;
        }
        let ids = self.merge(word);
        out.extend_from_slice(&ids);
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(word.into(), ids.into_boxed_slice());
    }

    /// CLIP's merge loop: repeatedly take the adjacent pair with the lowest
    /// rank and merge every occurrence of it, left to right, until no
    /// adjacent pair has a rank.
    fn merge(&self, word: &[u8]) -> Vec<u32> {
        let (last, rest) = word.split_last().expect("word is not empty");
        let mut symbols: Vec<u32> = rest.iter().map(|&b| self.byte_ids[b as usize]).collect();
        symbols.push(self.final_byte_ids[*last as usize]);

        while symbols.len() > 1 {
            let best = symbols
                .windows(2)
                .filter_map(|pair| self.merges.get(&(pair[0], pair[1])).map(|merge| (*merge, pair[0], pair[1])))
                .min_by_key(|(merge, _, _)| merge.rank);
            let Some((Merge { merged, .. }, left, right)) = best else {
                break;
            };
            let mut next = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && symbols[i] == left && symbols[i + 1] == right {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(symbols[i]);
                    i += 1;
                }
            }
            symbols = next;
        }
        symbols
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_matches_clip() {
        let table = byte_to_unicode();
        assert_eq!(table[b'a' as usize], 'a');
        assert_eq!(table[b'!' as usize], '!');
        // Space is the 33rd non-printable byte (0x00..=0x20), so U+0100 + 32.
        assert_eq!(table[b' ' as usize], '\u{120}');
        assert_eq!(table[0], '\u{100}');
        assert_eq!(table[0xad], '\u{143}');
        let mut distinct: Vec<char> = table.to_vec();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 256);
    }
}
