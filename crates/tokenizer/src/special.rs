//! Splitting the input on special-token texts before tokenization, as llama.cpp's
//! `tokenizer_st_partition` does: special tokens are taken longest first, each cuts every
//! remaining stretch of plain text at all of its occurrences.

use crate::attr;
use std::ops::Range;

/// A piece of the input: plain text still to be tokenized, or a special token already found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

/// The tokens matched whole in the input.
pub struct SpecialTokens {
    /// (id, text, attributes), longest text first (ties by id, so the order is deterministic).
    tokens: Vec<(u32, String, u16)>,
}

impl SpecialTokens {
    /// Control, user-defined and unknown tokens among `texts`/`attrs`.
    pub fn new<'a>(tokens: impl Iterator<Item = (u32, &'a str, u16)>) -> Self {
        let mut tokens: Vec<(u32, String, u16)> = tokens
            .filter(|(_, text, a)| {
                !text.is_empty() && a & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .map(|(id, text, a)| (id, text.to_string(), a))
            .collect();
        tokens.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        SpecialTokens { tokens }
    }

    /// Cuts `text` into plain stretches and special tokens. Control and unknown tokens are only
    /// recognised with `parse_special`; user-defined ones always are.
    pub fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Text(0..text.len()));
        let bytes = text.as_bytes();
        for (id, special, a) in &self.tokens {
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            if !text.contains(special.as_str()) {
                continue;
            }
            let mut out = Vec::with_capacity(frags.len() + 2);
            for frag in frags.drain(..) {
                let Fragment::Text(mut r) = frag else {
                    out.push(frag);
                    continue;
                };
                while let Some(pos) = text[r.clone()].find(special.as_str()) {
                    let start = r.start + pos;
                    let mut left = r.start..start;
                    if a & attr::LSTRIP != 0 {
                        while left.end > left.start && is_space(bytes[left.end - 1]) {
                            left.end -= 1;
                        }
                    }
                    if !left.is_empty() {
                        out.push(Fragment::Text(left));
                    }
                    out.push(Fragment::Token(*id));
                    r.start = start + special.len();
                    if a & attr::RSTRIP != 0 {
                        while r.start < r.end && is_space(bytes[r.start]) {
                            r.start += 1;
                        }
                    }
                }
                if !r.is_empty() {
                    out.push(Fragment::Text(r));
                }
            }
            frags = out;
        }
        frags
    }
}

/// C's `isspace` in the "C" locale, which llama.cpp uses to strip around lstrip/rstrip tokens.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;
    use Fragment::*;

    fn specials() -> SpecialTokens {
        SpecialTokens::new(
            [
                (10, "<|im_start|>", attr::CONTROL),
                (11, "<|im_end|>", attr::CONTROL),
                (12, "<tool>", attr::USER_DEFINED),
                (13, "<|im", attr::CONTROL),
                (
                    14,
                    "<mask>",
                    attr::USER_DEFINED | attr::LSTRIP | attr::RSTRIP,
                ),
            ]
            .into_iter(),
        )
    }

    #[test]
    fn longest_first_and_all_occurrences() {
        let s = specials();
        let text = "<|im_start|>hi<|im_end|><|im";
        assert_eq!(
            s.partition(text, true),
            vec![Token(10), Text(12..14), Token(11), Token(13)]
        );
        // Without parse_special only user-defined tokens are cut out.
        assert_eq!(
            s.partition("a<tool>b<|im_end|>", false),
            vec![Text(0..1), Token(12), Text(7..18)]
        );
    }

    #[test]
    fn strip_flags_eat_adjacent_spaces() {
        let s = specials();
        assert_eq!(
            s.partition("a \t<mask>  b", false),
            vec![Text(0..1), Token(14), Text(11..12)]
        );
        assert_eq!(s.partition("  <mask>  ", false), vec![Token(14)]);
        assert!(s.partition("", true).is_empty());
    }
}
