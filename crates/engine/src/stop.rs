//! Stop strings: generated text is released only once it cannot be the start of a stop string, and
//! a completed stop string ends the generation without being shown.

/// Watches generated text for stop strings.
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    longest: usize,
}

/// What to do after a piece of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopResult {
    /// Keep generating; emit this text (possibly empty).
    Continue(String),
    /// A stop string (the second field) completed: emit this text (everything before it) and
    /// stop.
    Stopped(String, String),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        StopMatcher {
            stops,
            held: String::new(),
            longest,
        }
    }

    pub fn push(&mut self, piece: &str) -> StopResult {
        self.held.push_str(piece);
        if self.stops.is_empty() {
            return StopResult::Continue(std::mem::take(&mut self.held));
        }
        // The earliest complete stop string wins.
        if let Some((pos, stop)) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|p| (p, s)))
            .min_by_key(|&(p, _)| p)
        {
            let out = self.held[..pos].to_string();
            let stop = stop.clone();
            self.held.clear();
            return StopResult::Stopped(out, stop);
        }
        // Hold back the longest suffix that is a prefix of some stop string.
        let mut keep_from = self.held.len();
        let start = self.held.len().saturating_sub(self.longest);
        for (i, _) in self.held.char_indices().filter(|(i, _)| *i >= start) {
            let tail = &self.held[i..];
            if self.stops.iter().any(|s| s.starts_with(tail)) {
                keep_from = i;
                break;
            }
        }
        let out = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        StopResult::Continue(out)
    }

    /// Releases text held back (the generation ended for another reason).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopResult::Continue(t) => out.push_str(&t),
                StopResult::Stopped(t, _) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn stop_split_across_pieces_never_leaks() {
        assert_eq!(
            run(&["</s>"], &["hello <", "/", "s> world"]),
            ("hello ".into(), true)
        );
        assert_eq!(
            run(&["STOP"], &["no st", "op here"]),
            ("no stop here".into(), false)
        );
        assert_eq!(run(&["ab", "b"], &["xab"]), ("x".into(), true));
        assert_eq!(
            run(&["日本"], &["これは日", "本です"]),
            ("これは".into(), true)
        );
    }

    #[test]
    fn random_chunkings_emit_exactly_the_text_before_the_first_stop() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let alphabet: Vec<char> = "ab c😀é".chars().collect();
        for _ in 0..2000 {
            let text: String = (0..rng.gen_range(0..30))
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let stops: Vec<String> = (0..rng.gen_range(1..3))
                .map(|_| {
                    (0..rng.gen_range(1..4))
                        .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                        .collect()
                })
                .collect();
            let chars: Vec<char> = text.chars().collect();
            let mut pieces = Vec::new();
            let mut i = 0;
            while i < chars.len() {
                let n = rng.gen_range(1..=3).min(chars.len() - i);
                pieces.push(chars[i..i + n].iter().collect::<String>());
                i += n;
            }
            let first = stops.iter().filter_map(|s| text.find(s.as_str())).min();
            let want = first.map_or(text.clone(), |p| text[..p].to_string());
            let refs: Vec<&str> = stops.iter().map(String::as_str).collect();
            let piece_refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let (got, stopped) = run(&refs, &piece_refs);
            assert_eq!(got, want, "text {text:?} stops {stops:?} pieces {pieces:?}");
            assert_eq!(stopped, first.is_some());
        }
    }
}
