//! Streaming detokenization: text is released only in whole UTF-8 characters.

use crate::Tokenizer;

/// Turns a stream of token ids into text pieces, holding back the bytes of a character that is
/// not complete yet (a multi-byte character can span tokens, e.g. byte-fallback tokens or
/// byte-level BPE pieces of an emoji). The concatenated output equals
/// [`Tokenizer::decode`] of all the ids.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    skip_special: bool,
    /// No token pushed yet (decoding drops SentencePiece's dummy-prefix space there).
    first: bool,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tokenizer: &'a Tokenizer, skip_special: bool) -> Self {
        StreamDecoder {
            tokenizer,
            skip_special,
            first: true,
            pending: Vec::new(),
        }
    }

    /// Adds a token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        let piece = self.tokenizer.piece(id, self.skip_special, self.first);
        self.first = false;
        self.pending.extend_from_slice(piece);
        let mut out = String::new();
        loop {
            let (valid, error) = match std::str::from_utf8(&self.pending) {
                Ok(s) => (s.len(), None),
                Err(e) => (e.valid_up_to(), Some(e.error_len())),
            };
            // `valid` bytes are UTF-8 by construction; the lossy conversion copies them as is.
            out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
            match error {
                None => {
                    self.pending.clear();
                    return out;
                }
                // An incomplete character at the end: wait for more bytes.
                Some(None) => {
                    self.pending.drain(..valid);
                    return out;
                }
                // Bytes that can never become valid: replace them, as the lossy conversion in
                // `decode` does, and go on.
                Some(Some(bad)) => {
                    out.push(char::REPLACEMENT_CHARACTER);
                    self.pending.drain(..valid + bad);
                }
            }
        }
    }

    /// Whatever is still held back, with incomplete characters replaced.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
