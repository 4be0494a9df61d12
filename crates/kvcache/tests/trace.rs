//! Property tests on simulated request traces: no block leaks, refcounts are exact, prefix
//! sharing finds exactly the cached prefix, running out of blocks is an error, never a panic, and
//! the event log replays to exactly the cache's contents.

use frugal_kvcache::{BlockManager, CacheEvent, SeqBlocks};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};

struct Live {
    seq: SeqBlocks,
    tokens: Vec<u32>,
}

/// What a subscriber to the cache's events believes is cached: checked against the cache after
/// every operation.
#[derive(Default)]
struct Subscriber {
    cached: HashSet<u64>,
    /// A block may be stored after its parent was evicted (the parent was computed by two
    /// sequences at once and the copy in the cache went first); it was announced, though.
    ever: HashSet<u64>,
}

impl Subscriber {
    fn follow(&mut self, m: &mut BlockManager, seed: u64) {
        for event in m.take_events() {
            match event {
                CacheEvent::Stored(b) => {
                    let parent_known = b.parent == b.seed || self.ever.contains(&b.parent);
                    assert!(
                        parent_known,
                        "seed {seed}: a block stored before its parent"
                    );
                    assert!(self.cached.insert(b.hash), "seed {seed}: stored twice");
                    self.ever.insert(b.hash);
                }
                CacheEvent::Removed { hash } => {
                    assert!(
                        self.cached.remove(&hash),
                        "seed {seed}: removed, never stored"
                    );
                }
            }
        }
        assert_eq!(self.cached.len(), m.n_cached(), "seed {seed}");
    }
}

/// Refcounts equal the number of live sequences holding each block.
fn check_refcounts(m: &BlockManager, live: &[Live], seed: u64) {
    let mut holders: HashMap<u32, u32> = HashMap::new();
    for l in live {
        for &b in l.seq.blocks() {
            *holders.entry(b).or_default() += 1;
        }
    }
    for b in 0..m.n_blocks() as u32 {
        assert_eq!(
            m.refs(b),
            holders.get(&b).copied().unwrap_or(0),
            "seed {seed} block {b}"
        );
    }
    assert_eq!(m.n_used(), holders.len());
}

#[test]
fn random_traces_keep_every_invariant() {
    for seed in 0..200 {
        let mut rng = StdRng::seed_from_u64(seed);
        let bs = rng.gen_range(1..6);
        let n_blocks = rng.gen_range(4..40);
        let mut m = BlockManager::new(n_blocks, bs);
        m.log_events();
        let mut subscriber = Subscriber::default();
        // A few shared "system prompts" so prefixes repeat.
        let prefixes: Vec<Vec<u32>> = (0..3)
            .map(|_| {
                (0..rng.gen_range(0..12))
                    .map(|_| rng.gen_range(0..5))
                    .collect()
            })
            .collect();
        let mut live: Vec<Live> = Vec::new();
        for _ in 0..300 {
            match rng.gen_range(0..4) {
                0 => {
                    let mut prompt = prefixes[rng.gen_range(0..3)].clone();
                    prompt.extend((0..rng.gen_range(1..8)).map(|_| rng.gen_range(0..5)));
                    let expect_cached = m.cached_prefix_len(&prompt[..prompt.len() - 1]);
                    let before = m.n_available();
                    match m.allocate(&prompt) {
                        Ok((mut seq, cached)) => {
                            assert_eq!(cached, expect_cached - expect_cached % bs, "seed {seed}");
                            assert!(cached < prompt.len());
                            assert_eq!(seq.blocks().len(), prompt.len().div_ceil(bs));
                            m.commit(&mut seq, &prompt, prompt.len());
                            live.push(Live {
                                seq,
                                tokens: prompt,
                            });
                        }
                        Err(e) => {
                            assert!(e.needed > e.available);
                            assert_eq!(
                                m.n_available(),
                                before,
                                "a failed allocation must not leak"
                            );
                        }
                    }
                }
                1 if !live.is_empty() => {
                    // Decode: append one token.
                    let i = rng.gen_range(0..live.len());
                    let l = &mut live[i];
                    let n = l.tokens.len() + 1;
                    if m.grow(&mut l.seq, n).is_ok() {
                        l.tokens.push(rng.gen_range(0..5));
                        m.commit(&mut l.seq, &l.tokens, n);
                        assert!(l.seq.blocks().len() * bs >= n);
                    }
                }
                2 if !live.is_empty() => {
                    let l = live.swap_remove(rng.gen_range(0..live.len()));
                    m.free(l.seq);
                }
                _ => {}
            }
            m.check().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            subscriber.follow(&mut m, seed);
            check_refcounts(&m, &live, seed);
        }
        for l in live.drain(..) {
            m.free(l.seq);
        }
        assert_eq!(m.n_used(), 0, "seed {seed}: blocks leaked");
        assert_eq!(m.n_available(), n_blocks);
        m.check().unwrap();
    }
}

#[test]
fn a_repeated_system_prompt_is_not_recomputed() {
    let mut m = BlockManager::new(16, 4);
    let system: Vec<u32> = (0..10).collect();
    let mut a = system.clone();
    a.extend([100, 101]);
    let (mut sa, cached) = m.allocate(&a).unwrap();
    assert_eq!(cached, 0);
    m.commit(&mut sa, &a, a.len());
    let mut b = system.clone();
    b.extend([200]);
    let (sb, cached) = m.allocate(&b).unwrap();
    assert_eq!(cached, 8, "two full blocks of the system prompt are shared");
    assert_eq!(sa.blocks()[..2], sb.blocks()[..2]);
    assert_eq!(m.refs(sa.blocks()[0]), 2);
    m.free(sa);
    m.free(sb);
    // Cached blocks survive their sequences and are reused.
    let (sc, cached) = m.allocate(&b).unwrap();
    assert_eq!(cached, 8);
    m.free(sc);
    assert_eq!(m.n_used(), 0);
}

#[test]
fn eviction_is_least_recently_used() {
    let mut m = BlockManager::new(2, 2);
    let (mut s1, _) = m.allocate(&[1, 2, 9]).unwrap();
    m.commit(&mut s1, &[1, 2, 9], 3);
    m.free(s1);
    assert_eq!(m.n_cached(), 1);
    // Needs both blocks: the cached one is evicted.
    let (s2, cached) = m.allocate(&[5, 6, 7]).unwrap();
    assert_eq!(cached, 0);
    assert_eq!(m.n_cached(), 0);
    assert!(m.allocate(&[1, 2, 3]).is_err());
    m.free(s2);
}

/// Hashes chained from a seed: sequences share cached blocks only with sequences of the same
/// seed (a salt's, or the shared cache's 0); a private seed shares with nobody.
#[test]
fn a_seed_isolates_the_cached_prefixes() {
    use frugal_kvcache::{cache_seed, private_seed};
    let mut m = BlockManager::new(32, 4);
    let prompt: Vec<u32> = (0..13).collect();
    let run = |m: &mut BlockManager, seed: u64| {
        let (mut s, cached, _) = m.allocate_with(&prompt, seed, &|_| true).unwrap();
        m.commit(&mut s, &prompt, prompt.len());
        m.free(s);
        cached
    };
    let (a, b) = (cache_seed("tenant a"), cache_seed("tenant b"));
    assert_eq!(run(&mut m, 0), 0);
    assert_eq!(run(&mut m, a), 0, "a salt does not see the shared cache");
    assert_eq!(run(&mut m, a), 12, "the same salt shares");
    assert_eq!(run(&mut m, b), 0, "another salt does not");
    assert_eq!(run(&mut m, 0), 12, "nor does the shared cache see a salt's");
    assert_eq!(run(&mut m, private_seed(7)), 0);
    assert_eq!(
        run(&mut m, private_seed(8)),
        0,
        "a private seed shares with nobody"
    );
    assert_ne!(a, 0);
    m.check().unwrap();
}

/// A lower tier (the disk) fills the blocks RAM lacks: the commit log says what to copy down,
/// `import` brings blocks back for a prompt, its allocation shares them, and the prompt's blocks
/// already in RAM are not evicted to make room for the ones coming back.
#[test]
fn blocks_logged_on_commit_come_back_through_import() {
    use std::collections::HashMap;
    let bs = 4;
    let mut m = BlockManager::new(6, bs);
    m.log_commits();
    let prompt: Vec<u32> = (0..21).collect();
    let (mut s, _) = m.allocate(&prompt[..13]).unwrap();
    m.commit(&mut s, &prompt[..13], 13);
    // The "disk": what the log said, by prefix hash.
    let mut disk: HashMap<u64, Vec<u32>> = HashMap::new();
    for c in m.take_commits() {
        assert_eq!(c.seed, 0);
        disk.insert(c.hash, c.tokens);
    }
    assert_eq!(disk.len(), 3);
    assert!(m.take_commits().is_empty(), "the log empties");
    m.free(s);
    // Other prompts evict all but the first block.
    for k in 0..2u32 {
        let other: Vec<u32> = (100 * (k + 1)..100 * (k + 1) + 9).collect();
        let (mut o, _) = m.allocate(&other).unwrap();
        m.commit(&mut o, &other, 9);
        m.free(o);
    }
    m.take_commits();
    let in_ram = m.cached_prefix_len(&prompt);
    assert!(in_ram < 12, "{in_ram}");
    let mut asked = Vec::new();
    let (before, filled) = m.import(&prompt, 0, 0, &mut |h, tokens, _| {
        asked.push(tokens.to_vec());
        disk.get(&h).is_some_and(|t| t == tokens)
    });
    assert_eq!(before * bs, in_ram);
    assert_eq!((before + filled) * bs, 12, "three blocks from RAM and disk");
    assert_eq!(
        asked.len(),
        filled + 1,
        "the walk stops at the first block the disk lacks"
    );
    assert!(
        m.take_commits().is_empty(),
        "imported blocks are not logged again"
    );
    let (s, cached) = m.allocate(&prompt).unwrap();
    assert_eq!(cached, 12);
    m.free(s);
    m.check().unwrap();
}
