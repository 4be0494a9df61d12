//! Guessing the next tokens without a model: the continuation that followed the last few tokens
//! earlier in the sequence itself (prompt lookup: an edited file, a quoted document, repeated
//! names), else the continuation most often seen after them in the server's other sequences (a
//! pool fed with every finished sequence's text).

use std::collections::HashMap;

/// Longest and shortest suffix looked up.
const N_MAX: usize = 4;
const N_MIN: usize = 2;
/// Entries of one generation of the shared pool; past this the older generation is dropped.
const POOL_ENTRIES: usize = 1 << 20;
/// Continuations remembered per n-gram.
const NEXT: usize = 4;

/// The n-gram tables of one server.
#[derive(Default)]
pub struct NgramPool {
    /// Two generations: lookups read both, writes go to the newer, which replaces the older
    /// when full (a bounded pool that keeps what was seen recently).
    tables: [HashMap<u64, Next>; 2],
}

/// Continuations seen after one n-gram, with counts.
#[derive(Clone, Copy, Default)]
struct Next {
    tokens: [(u32, u32); NEXT],
}

impl Next {
    fn add(&mut self, token: u32) {
        if let Some(e) = self.tokens.iter_mut().find(|e| e.1 > 0 && e.0 == token) {
            e.1 += 1;
        } else {
            // Replace the rarest continuation (or an empty one).
            let e = self
                .tokens
                .iter_mut()
                .min_by_key(|e| e.1)
                .expect("NEXT > 0");
            *e = (token, 1);
        }
    }

    /// The most frequent continuation, if it is more than half of what was seen.
    fn best(&self) -> Option<u32> {
        let total: u32 = self.tokens.iter().map(|e| e.1).sum();
        let best = self.tokens.iter().max_by_key(|e| e.1)?;
        (2 * best.1 > total).then_some(best.0)
    }
}

fn key(gram: &[u32]) -> u64 {
    // FNV-1a over the ids, with the length mixed in so that grams of different orders differ.
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ gram.len() as u64;
    for &t in gram {
        h = (h ^ u64::from(t)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl NgramPool {
    /// Up to `k` guesses continuing `history`.
    pub fn propose(&self, history: &[u32], k: usize) -> Vec<u32> {
        if k == 0 {
            return Vec::new();
        }
        let own = lookup(history, k);
        if !own.is_empty() {
            return own;
        }
        self.chain(history, k)
    }

    /// Adds every n-gram of a sequence's text (prompt and output) to the shared pool.
    pub fn learn(&mut self, tokens: &[u32]) {
        for n in N_MIN..=N_MAX {
            for w in tokens.windows(n + 1) {
                if self.tables[1].len() >= POOL_ENTRIES {
                    self.tables[0] = std::mem::take(&mut self.tables[1]);
                }
                self.tables[1].entry(key(&w[..n])).or_default().add(w[n]);
            }
        }
    }

    /// Guesses from the shared pool, one token at a time from the longest known suffix.
    fn chain(&self, history: &[u32], k: usize) -> Vec<u32> {
        let mut text = history[history.len().saturating_sub(N_MAX)..].to_vec();
        let mut out = Vec::new();
        while out.len() < k {
            let next = (N_MIN..=N_MAX.min(text.len())).rev().find_map(|n| {
                let k = key(&text[text.len() - n..]);
                self.tables[1]
                    .get(&k)
                    .or_else(|| self.tables[0].get(&k))
                    .and_then(Next::best)
            });
            let Some(t) = next else { break };
            out.push(t);
            text.push(t);
        }
        out
    }
}

/// `k` tokens continuing `history` as it continued after the most recent earlier occurrence of
/// its longest suffix (of `N_MAX` down to `N_MIN` tokens); none without one.
pub fn lookup(history: &[u32], k: usize) -> Vec<u32> {
    let len = history.len();
    for n in (N_MIN..=N_MAX.min(len.saturating_sub(1))).rev() {
        let suffix = &history[len - n..];
        // Start positions of earlier occurrences, most recent first; the suffix itself excluded.
        let found = (0..len - n).rev().find(|&i| &history[i..i + n] == suffix);
        if let Some(i) = found {
            // Copy what followed; past the end of the history the copy continues with itself
            // (a repeating stretch repeats on: the guesses of a loop are the loop).
            let from = i + n;
            let mut out: Vec<u32> = Vec::with_capacity(k);
            for j in from..from + k {
                let t = if j < len { history[j] } else { out[j - len] };
                out.push(t);
            }
            return out;
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_continues_the_latest_earlier_occurrence_of_the_longest_suffix() {
        // "1 2 3" occurred twice; the later one was followed by 9 9.
        let h = [1, 2, 3, 4, 5, 1, 2, 3, 9, 9, 7, 1, 2, 3];
        assert_eq!(lookup(&h, 2), vec![9, 9]);
        assert_eq!(lookup(&h, 10), vec![9, 9, 7, 1, 2, 3, 9, 9, 7, 1]);
        // Only a 2-gram matches.
        assert_eq!(lookup(&[5, 6, 7, 8, 0, 7, 8], 3), vec![0, 7, 8]);
        assert!(lookup(&[1, 2, 3, 4], 3).is_empty());
        assert!(lookup(&[1, 1], 3).is_empty());
        assert_eq!(lookup(&[1, 1, 1], 3), vec![1, 1, 1]);
        assert_eq!(lookup(&[7, 1, 2, 1, 2], 5), vec![1, 2, 1, 2, 1]);
    }

    #[test]
    fn the_pool_guesses_what_other_sequences_said_after_the_same_words() {
        let mut pool = NgramPool::default();
        pool.learn(&[10, 11, 12, 13, 14, 15]);
        pool.learn(&[10, 11, 12, 13, 14, 16]);
        pool.learn(&[20, 11, 12, 13, 14, 16]);
        // Nothing to find in the sequence itself: the pool continues "11 12".
        assert_eq!(pool.propose(&[7, 11, 12], 3), vec![13, 14, 16]);
        // Its own text comes first.
        assert_eq!(pool.propose(&[11, 12, 5, 11, 12], 3), vec![5, 11, 12]);
        // An ambiguous continuation (one of each) is not guessed.
        let mut pool = NgramPool::default();
        pool.learn(&[1, 2, 3]);
        pool.learn(&[1, 2, 4]);
        assert!(pool.propose(&[1, 2], 3).is_empty());
    }

    #[test]
    fn a_continuation_seen_more_often_replaces_a_rare_one() {
        let mut n = Next::default();
        for t in [1, 2, 3, 4, 5, 5] {
            n.add(t);
        }
        assert_eq!(n.best(), None, "5 (replacing 1) is 2 of 5");
        n.add(5);
        assert_eq!(n.best(), None, "3 of 6");
        n.add(5);
        assert_eq!(n.best(), Some(5));
    }
}
