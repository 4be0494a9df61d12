//! The sliding-window block group on simulated traces. Every block's contents are simulated
//! (which token prefix each of its positions was computed for), so a sequence that reads a key
//! that is not its own — a stale block, a wrong prefix hit, a released block reused — fails the
//! trace; besides: every block in exactly one state, exact refcounts in both groups, a
//! sequence's window always covered, its blocks bounded by the window, no leaks at the end.

use frugal_kvcache::{prefix_hash, BlockManager, SeqBlocks, WindowBlocks, RELEASED};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// What each position of each block was computed for: the token prefix ending there.
type Contents = HashMap<(u32, usize), Vec<u32>>;

struct Live {
    full: SeqBlocks,
    win: SeqBlocks,
    tokens: Vec<u32>,
    computed: usize,
}

struct Trace {
    seed: u64,
    rng: StdRng,
    bs: usize,
    full: BlockManager,
    win: WindowBlocks,
    full_contents: Contents,
    win_contents: Contents,
    prefixes: Vec<Vec<u32>>,
    live: Vec<Live>,
    hits: usize,
}

impl Trace {
    fn new(seed: u64) -> Trace {
        let mut rng = StdRng::seed_from_u64(seed);
        let bs = rng.gen_range(1..6);
        let window = rng.gen_range(1..14);
        let full = BlockManager::new(rng.gen_range(4..40), bs);
        let win = WindowBlocks::new(rng.gen_range(2..24), bs, window);
        let prefixes = (0..3)
            .map(|_| {
                (0..rng.gen_range(0..16))
                    .map(|_| rng.gen_range(0..3))
                    .collect()
            })
            .collect();
        Trace {
            seed,
            rng,
            bs,
            full,
            win,
            full_contents: HashMap::new(),
            win_contents: HashMap::new(),
            prefixes,
            live: Vec::new(),
            hits: 0,
        }
    }

    /// Checks that positions `range` of a table hold `tokens`' own keys.
    fn check_reads(
        &self,
        contents: &Contents,
        table: &[u32],
        tokens: &[u32],
        range: std::ops::Range<usize>,
    ) {
        for q in range {
            let b = table[q / self.bs];
            assert_ne!(b, RELEASED, "seed {}: position {q} released", self.seed);
            assert_eq!(
                contents.get(&(b, q % self.bs)).map(Vec::as_slice),
                Some(&tokens[..=q]),
                "seed {}: position {q} holds another prefix's key",
                self.seed
            );
        }
    }

    fn admit(&mut self) {
        let mut prompt = self.prefixes[self.rng.gen_range(0..3)].clone();
        prompt.extend((0..self.rng.gen_range(1..8)).map(|_| self.rng.gen_range(0..3)));
        let before = (self.full.n_available(), self.win.pool().n_available());
        let Ok(a) = self.win.allocate(&mut self.full, &prompt, 0, &|_| true) else {
            let after = (self.full.n_available(), self.win.pool().n_available());
            assert_eq!(
                before, after,
                "seed {}: a failed allocation leaks",
                self.seed
            );
            return;
        };
        let bs = self.bs;
        assert!(a.cached % bs == 0 && a.cached < prompt.len());
        assert_eq!(a.full.blocks().len(), prompt.len().div_ceil(bs));
        assert_eq!(a.window.blocks().len(), a.cached / bs);
        // The longest usable prefix: a longer cached one lacks part of its window.
        let walk = self.full.cached_prefix_len(&prompt[..prompt.len() - 1]) / bs;
        for k in a.cached / bs + 1..=walk {
            let hashes: Vec<u64> = (1..=k)
                .map(|i| prefix_hash(0, bs, &prompt[..i * bs]))
                .collect();
            assert!(!self.win.holds(&prompt, &hashes), "seed {}", self.seed);
        }
        self.check_reads(&self.full_contents, a.full.blocks(), &prompt, 0..a.cached);
        let from = (a.cached + 1).saturating_sub(self.win.window());
        self.check_reads(
            &self.win_contents,
            a.window.blocks(),
            &prompt,
            from..a.cached,
        );
        self.hits += usize::from(a.cached > 0);
        self.live.push(Live {
            full: a.full,
            win: a.window,
            tokens: prompt,
            computed: a.cached,
        });
    }

    /// Runs a chunk of one live sequence (a prompt chunk, or one decoded token).
    fn run_chunk(&mut self, i: usize) {
        let bs = self.bs;
        let n_max = self.rng.gen_range(1..7);
        let token = self.rng.gen_range(0..3);
        let l = &mut self.live[i];
        if l.computed == l.tokens.len() {
            l.tokens.push(token);
        }
        let pos = l.computed;
        let n = n_max.min(l.tokens.len() - pos);
        self.win.release_before(&mut l.win, pos);
        if self.full.grow(&mut l.full, pos + n).is_err()
            || self.win.grow(&mut l.win, pos + n).is_err()
        {
            return;
        }
        let l = &self.live[i];
        let window = self.win.window();
        self.check_reads(&self.full_contents, l.full.blocks(), &l.tokens, 0..pos);
        let from = (pos + 1).saturating_sub(window);
        self.check_reads(&self.win_contents, l.win.blocks(), &l.tokens, from..pos);
        let covered = self.win.first_needed_block(pos)..(pos + n).div_ceil(bs);
        assert!(l.win.blocks()[covered].iter().all(|&b| b != RELEASED));
        assert!(
            l.win.n_held() <= (window - 1 + n).div_ceil(bs) + 1,
            "seed {}: the window group grows with the context",
            self.seed
        );
        for q in pos..pos + n {
            let prefix = l.tokens[..=q].to_vec();
            let (fb, wb) = (l.full.blocks()[q / bs], l.win.blocks()[q / bs]);
            self.full_contents.insert((fb, q % bs), prefix.clone());
            self.win_contents.insert((wb, q % bs), prefix);
        }
        let l = &mut self.live[i];
        l.computed = pos + n;
        self.full.commit(&mut l.full, &l.tokens, l.computed);
        self.win.commit(&mut l.win, &l.tokens, l.computed);
    }

    fn check(&self) {
        let seed = self.seed;
        self.full
            .check()
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        self.win
            .pool()
            .check()
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        for (pool, table) in [
            (
                &self.full,
                (|l: &Live| l.full.blocks().to_vec()) as fn(&Live) -> Vec<u32>,
            ),
            (self.win.pool(), |l: &Live| l.win.blocks().to_vec()),
        ] {
            let mut holders: HashMap<u32, u32> = HashMap::new();
            for l in &self.live {
                for b in table(l).into_iter().filter(|&b| b != RELEASED) {
                    *holders.entry(b).or_default() += 1;
                }
            }
            for b in 0..pool.n_blocks() as u32 {
                let held = holders.get(&b).copied().unwrap_or(0);
                assert_eq!(pool.refs(b), held, "seed {seed} block {b}");
            }
            assert_eq!(pool.n_used(), holders.len(), "seed {seed}");
        }
    }

    fn run(mut self) -> usize {
        for _ in 0..400 {
            match self.rng.gen_range(0..5) {
                0 => self.admit(),
                1 if !self.live.is_empty() => {
                    let l = self
                        .live
                        .swap_remove(self.rng.gen_range(0..self.live.len()));
                    self.full.free(l.full);
                    self.win.free(l.win);
                }
                _ if !self.live.is_empty() => {
                    let i = self.rng.gen_range(0..self.live.len());
                    self.run_chunk(i);
                }
                _ => {}
            }
            self.check();
        }
        for l in std::mem::take(&mut self.live) {
            self.full.free(l.full);
            self.win.free(l.win);
        }
        self.check();
        assert_eq!(
            self.full.n_used() + self.win.pool().n_used(),
            0,
            "blocks leaked"
        );
        self.hits
    }
}

#[test]
fn random_window_traces_keep_every_invariant() {
    let hits: usize = (0..300).map(|seed| Trace::new(seed).run()).sum();
    assert!(hits > 0, "the traces must resume from cached prefixes");
}

#[test]
fn blocks_leaving_the_window_are_released_and_stay_cached() {
    // Window of 4 positions, blocks of 2: a chunk at position p reads from p - 3.
    let mut full = BlockManager::new(16, 2);
    let mut win = WindowBlocks::new(8, 2, 4);
    let prompt: Vec<u32> = (0..9).collect();
    let mut a = win.allocate(&mut full, &prompt, 0, &|_| true).unwrap();
    assert_eq!((a.cached, a.window.blocks().len()), (0, 0));
    win.grow(&mut a.window, 9).unwrap();
    for pos in [0, 4, 8] {
        win.release_before(&mut a.window, pos);
    }
    // Position 8 reads 5..=8: blocks 0 and 1 (positions 0..4) are released.
    assert_eq!(&a.window.blocks()[..2], &[RELEASED, RELEASED]);
    assert_eq!(a.window.n_held(), 3);
    full.commit(&mut a.full, &prompt, 9);
    win.commit(&mut a.window, &prompt, 9);
    assert_eq!(
        win.pool().n_cached(),
        2,
        "blocks 2 and 3 are still held and registered"
    );
    full.free(a.full);
    win.free(a.window);
    // The same prefix resumes at 8: positions 5..8 (blocks 2, 3) are still cached.
    let b = win.allocate(&mut full, &prompt, 0, &|_| true).unwrap();
    assert_eq!(b.cached, 8);
    assert_eq!(&b.window.blocks()[..2], &[RELEASED, RELEASED]);
    assert_eq!(b.window.n_held(), 2);
    full.free(b.full);
    win.free(b.window);
    assert_eq!(full.n_used() + win.pool().n_used(), 0);
}

#[test]
fn a_prefix_whose_window_was_evicted_is_not_resumed() {
    // Window of 2 positions, blocks of 2, a window pool of 3 blocks.
    let mut full = BlockManager::new(16, 2);
    let mut win = WindowBlocks::new(3, 2, 2);
    let prompt: Vec<u32> = (0..9).collect();
    let mut a = win.allocate(&mut full, &prompt, 0, &|_| true).unwrap();
    win.grow(&mut a.window, 4).unwrap();
    win.commit(&mut a.window, &prompt, 4);
    for pos in [4, 6] {
        win.release_before(&mut a.window, pos);
        win.grow(&mut a.window, pos + 2).unwrap();
        win.commit(&mut a.window, &prompt, pos + 2);
    }
    // Block 0 (positions 0..2) was released at 4 and evicted at 6 to make room for positions
    // 6..8; blocks 1..4 stay cached.
    full.commit(&mut a.full, &prompt, 8);
    full.free(a.full);
    win.free(a.window);
    let hash = |k: usize| prefix_hash(0, 2, &prompt[..2 * k]);
    let b = win.allocate(&mut full, &prompt, 0, &|_| true).unwrap();
    assert_eq!(b.cached, 8, "position 8 reads 7: block 3");
    assert_eq!(b.window.n_held(), 1);
    full.free(b.full);
    win.free(b.window);
    // A resumable rule (hybrid snapshots) that refuses the longest prefix composes with the
    // window rule: 3 blocks resume (position 6 reads 5: block 2).
    let c = win
        .allocate(&mut full, &prompt, 0, &|h| h == hash(3) || h == hash(1))
        .unwrap();
    assert_eq!((c.cached, c.cached_blocks), (6, 8));
    full.free(c.full);
    win.free(c.window);
    // After 1 block, position 2 reads 1: block 0, evicted; the full group alone is not enough.
    let d = win
        .allocate(&mut full, &prompt, 0, &|h| h == hash(1))
        .unwrap();
    assert_eq!(d.cached, 0);
    assert_eq!(full.cached_prefix_len(&prompt[..2]), 2);
    full.free(d.full);
    win.free(d.window);
    assert_eq!(full.n_used() + win.pool().n_used(), 0);
}
