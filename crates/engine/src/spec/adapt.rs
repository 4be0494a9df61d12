//! How many guesses a sequence verifies next, from how many it has been accepting lately.
//!
//! Model: each guess is accepted with probability `a` if the ones before it were (the guesses of
//! one step stand or fall from the first rejection on). Verifying `k` guesses then yields
//! `1 + a + … + a^k` tokens for a step that costs `1 + c·k` plain decode steps, `c` being what
//! one more guess costs (its share of the verifying forward pass, and the proposer's own work).
//! The length chosen is the one with the best yield per cost; where no length beats plain
//! decoding the sequence stops speculating. A proposer that costs nothing while idle (n-gram
//! lookup) then still verifies a one-guess probe now and then, less often after each probe that
//! fails, so that the sequence starts again when its text turns repetitive; a draft model does
//! not (it would first have to catch up with every token it skipped).

/// Weight of the past at each verification: about the last five steps count.
const DECAY: f32 = 0.8;
/// Gain (tokens per unit of cost) a length must reach to be worth it.
const MIN_GAIN: f32 = 1.02;
/// Steps between probes of a sequence that stopped speculating, at first and at most.
const PROBE_EVERY: u32 = 8;
const PROBE_EVERY_MAX: u32 = 256;

#[derive(Debug, Clone)]
pub struct DraftLength {
    /// Accepted guesses and rejections (steps that ended on a rejected guess), decayed.
    accepted: f32,
    rejected: f32,
    /// Steps since this sequence last verified a guess.
    idle: u32,
    /// Steps between probes now, and whether the next verification is one.
    probe_every: u32,
    probing: bool,
}

impl Default for DraftLength {
    fn default() -> Self {
        // A prior of two acceptances to one rejection: a new sequence starts speculating.
        DraftLength {
            accepted: 2.0,
            rejected: 1.0,
            idle: 0,
            probe_every: PROBE_EVERY,
            probing: false,
        }
    }
}

impl DraftLength {
    /// Estimated probability that a guess is accepted.
    pub fn acceptance(&self) -> f32 {
        self.accepted / (self.accepted + self.rejected)
    }

    /// Guesses to verify in the next step, at most `max`, each costing `cost` decode steps;
    /// `probe`: the proposer may probe while the sequence does not speculate.
    pub fn choose(&mut self, max: usize, cost: f32, probe: bool) -> usize {
        let k = best_length(self.acceptance(), max, cost);
        if k > 0 {
            return k;
        }
        self.idle += 1;
        if !probe || max == 0 || self.idle < self.probe_every {
            return 0;
        }
        self.idle = 0;
        self.probing = true;
        1
    }

    /// Records a verification of `proposed` guesses, of which the first `accepted` stood; a
    /// failed probe doubles the wait for the next one.
    pub fn record(&mut self, proposed: usize, accepted: usize, cost: f32) {
        if proposed == 0 {
            return;
        }
        self.idle = 0;
        self.accepted = self.accepted * DECAY + accepted as f32;
        self.rejected = self.rejected * DECAY + f32::from(u8::from(accepted < proposed));
        if std::mem::take(&mut self.probing) {
            self.probe_every = match best_length(self.acceptance(), 1, cost) {
                0 => (self.probe_every * 2).min(PROBE_EVERY_MAX),
                _ => PROBE_EVERY,
            };
        }
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
    fn a_sequence_whose_guesses_fail_stops_and_probes_less_and_less() {
        let mut d = DraftLength::default();
        assert!(d.choose(8, 0.1, true) > 0, "a new sequence speculates");
        for _ in 0..10 {
            let k = d.choose(8, 0.1, true).max(1);
            d.record(k, 0, 0.1);
        }
        // Probes come after 8 steps, then 16, 32… as each fails.
        let mut probes = Vec::new();
        for step in 0..200 {
            if d.choose(8, 0.1, true) > 0 {
                probes.push(step);
                d.record(1, 0, 0.1);
            }
        }
        assert_eq!(probes, [7, 23, 55, 119], "steps of the probes");
        // A draft model does not probe.
        let mut quiet = d.clone();
        assert!((0..1000).all(|_| quiet.choose(8, 0.1, false) == 0));
        // Guesses that stand bring it back.
        for _ in 0..5 {
            d.record(1, 1, 0.1);
        }
        assert!(d.choose(8, 0.1, true) >= 4);
    }
}
