//! How many guesses a sequence verifies next, from how many it has been accepting lately.
//!
//! Model: each guess is accepted with probability `a` if the ones before it were (the guesses of
//! one step stand or fall from the first rejection on). Verifying `k` guesses then yields
//! `1 + a + … + a^k` tokens for a step that costs `1 + c·k` plain decode steps, `c` being what
//! one more guess costs (its share of the verifying forward pass, and the proposer's own work).
//! The length chosen is the one with the best yield per cost; where no length beats plain
//! decoding the sequence stops speculating, except for a one-guess probe now and then, so that
//! it starts again when its text turns repetitive.

/// Weight of the past at each verification: about the last five steps count.
const DECAY: f32 = 0.8;
/// Gain (tokens per unit of cost) a length must reach to be worth it.
const MIN_GAIN: f32 = 1.02;
/// Steps between probes of a sequence that stopped speculating.
const PROBE_EVERY: u32 = 8;

#[derive(Debug, Clone)]
pub struct DraftLength {
    /// Accepted guesses and rejections (steps that ended on a rejected guess), decayed.
    accepted: f32,
    rejected: f32,
    /// Steps since this sequence last verified a guess.
    idle: u32,
}

impl Default for DraftLength {
    fn default() -> Self {
        // A prior of two acceptances to one rejection: a new sequence starts speculating.
        DraftLength {
            accepted: 2.0,
            rejected: 1.0,
            idle: 0,
        }
    }
}

impl DraftLength {
    /// Estimated probability that a guess is accepted.
    pub fn acceptance(&self) -> f32 {
        self.accepted / (self.accepted + self.rejected)
    }

    /// Guesses to verify in the next step, at most `max`, each costing `cost` decode steps.
    pub fn choose(&mut self, max: usize, cost: f32) -> usize {
        let k = best_length(self.acceptance(), max, cost);
        if k > 0 {
            return k;
        }
        self.idle += 1;
        usize::from(max > 0 && self.idle.is_multiple_of(PROBE_EVERY))
    }

    /// Records a verification of `proposed` guesses, of which the first `accepted` stood.
    pub fn record(&mut self, proposed: usize, accepted: usize) {
        if proposed == 0 {
            return;
        }
        self.idle = 0;
        self.accepted = self.accepted * DECAY + accepted as f32;
        self.rejected = self.rejected * DECAY + f32::from(u8::from(accepted < proposed));
    }
}

/// The `k` in `0..=max` with the most expected tokens per unit of cost (0: do not speculate).
pub fn best_length(acceptance: f32, max: usize, cost: f32) -> usize {
    let (mut best, mut best_gain) = (0, MIN_GAIN);
    let (mut tokens, mut term) = (1.0f32, 1.0f32);
    for k in 1..=max {
        term *= acceptance;
        tokens += term;
        let gain = tokens / (1.0 + cost * k as f32);
        if gain > best_gain {
            (best, best_gain) = (k, gain);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_follows_the_acceptance() {
        assert_eq!(
            best_length(1.0, 8, 0.1),
            8,
            "everything accepted: all of it"
        );
        assert_eq!(best_length(0.0, 8, 0.1), 0, "nothing accepted: nothing");
        assert!(best_length(0.5, 8, 0.1) < best_length(0.9, 8, 0.1));
        assert_eq!(
            best_length(1.0, 8, 1.1),
            0,
            "a draft as slow as the model never pays"
        );
    }

    #[test]
    fn a_sequence_whose_guesses_fail_stops_and_probes() {
        let mut d = DraftLength::default();
        assert!(d.choose(8, 0.1) > 0, "a new sequence speculates");
        for _ in 0..10 {
            let k = d.choose(8, 0.1).max(1);
            d.record(k, 0);
        }
        let ks: Vec<usize> = (0..2 * PROBE_EVERY).map(|_| d.choose(8, 0.1)).collect();
        assert_eq!(ks.iter().filter(|&&k| k > 0).count(), 2, "{ks:?}");
        assert!(ks.iter().all(|&k| k <= 1));
        // Guesses that stand bring it back.
        for _ in 0..5 {
            d.record(1, 1);
        }
        assert!(d.choose(8, 0.1) >= 4);
    }
}
