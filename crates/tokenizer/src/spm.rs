//! SentencePiece-style BPE (`tokenizer.ggml.model = "llama"`), as llama.cpp runs it: start from
//! single characters and repeatedly merge the adjacent pair whose concatenation is the
//! highest-scoring vocabulary entry (leftmost first on ties); pieces that are not tokens at the end
//! become byte tokens (`<0xAB>`).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

pub struct Spm {
    /// Token text → id (the last of duplicate texts wins, as in llama.cpp).
    pub ids: HashMap<String, u32>,
    scores: Vec<f32>,
    /// The token for each byte, for text no token covers.
    byte_ids: Vec<Option<u32>>,
    unk: Option<u32>,
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl Spm {
    pub fn new(texts: impl Iterator<Item = String>, scores: Vec<f32>, unk: Option<u32>) -> Self {
        let mut ids = HashMap::with_capacity(scores.len());
        for (i, t) in texts.enumerate() {
            ids.insert(t, i as u32);
        }
        let byte_ids = (0..=255u8)
            .map(|b| {
                ids.get(&format!("<0x{b:02X}>")).copied().or_else(|| {
                    // Vocabularies without byte tokens may still have the ASCII character.
                    b.is_ascii()
                        .then(|| ids.get(&char::from(b).to_string()).copied())
                        .flatten()
                })
            })
            .collect();
        Spm {
            ids,
            scores,
            byte_ids,
            unk,
        }
    }

    /// Tokenizes `text` (spaces already escaped as U+2581), appending to `out`. Fails with the
    /// byte that no token (and no unknown token) can stand for.
    pub fn tokenize(&self, text: &str, out: &mut Vec<u32>) -> Result<(), u8> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: Some(i + 1),
            });
        }
        let Some(last) = symbols.last_mut() else {
            return Ok(());
        };
        last.next = None;

        let mut queue = BinaryHeap::new();
        for i in 1..symbols.len() {
            self.push_bigram(text, &symbols, i - 1, i, &mut queue);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // Stale: one side has been merged into something else since.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.left].next = r.next;
            symbols[b.right].len = 0;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            if let Some(p) = l.prev {
                self.push_bigram(text, &symbols, p, b.left, &mut queue);
            }
            if let Some(n) = r.next {
                self.push_bigram(text, &symbols, b.left, n, &mut queue);
            }
        }

        let mut i = Some(0);
        while let Some(s) = i {
            let sym = symbols[s];
            let piece = &text[sym.start..sym.start + sym.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        out.push(self.byte_ids[b as usize].or(self.unk).ok_or(b)?);
                    }
                }
            }
            i = sym.next;
        }
        Ok(())
    }

    fn push_bigram(
        &self,
        text: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Bigram>,
    ) {
        let (l, r) = (symbols[left], symbols[right]);
        let len = l.len + r.len;
        if let Some(&id) = self.ids.get(&text[l.start..l.start + len]) {
            queue.push(Bigram {
                score: self.scores.get(id as usize).copied().unwrap_or(0.0),
                left,
                right,
                len,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Spm;

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let vocab = ["<unk>", "a", "b", "ab", "bc", "c", "<0x21>"];
        let scores = vec![0.0, -1.0, -1.0, -3.0, -2.0, -1.0, 0.0];
        let spm = Spm::new(vocab.iter().map(|s| s.to_string()), scores, Some(0));
        let mut out = Vec::new();
        // "bc" outscores "ab": a + bc, then '!' as its byte token.
        spm.tokenize("abc!", &mut out).unwrap();
        assert_eq!(out, vec![1, 4, 6]);
        out.clear();
        // 'é' has no token and no byte tokens: unknown for each of its bytes.
        spm.tokenize("é", &mut out).unwrap();
        assert_eq!(out, vec![0, 0]);
    }
}
