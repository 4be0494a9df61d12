//! Recurrent-state slots as plain data, for hybrid models whose linear-attention layers carry a
//! fixed-size state per sequence instead of growing keys and values.
//!
//! Two kinds of slot share one numbering (the slot ids of `frugal_models::KvStore`): live slots,
//! one per running sequence, and snapshot slots, each holding a copy of some sequence's state at
//! a block boundary, keyed by the chained hash of the token prefix up to that boundary (the same
//! hash as the prefix cache's block there). A prompt whose prefix has cached blocks *and* a
//! snapshot at their end resumes from the snapshot instead of recomputing the prefix.
//! Snapshots are taken at boundaries the scheduler picks, reserved before the step that computes
//! them and registered after it, and evicted least recently used when slots run out.
//!
//! With speculative decoding, a third kind: rollback slots, one per running sequence, each
//! holding a sequence's state from before a step whose guesses may be rejected.

use std::collections::{BTreeSet, HashMap};

pub type SlotId = u32;

#[derive(Debug, Clone)]
struct Snapshot {
    slot: SlotId,
    last_used: u64,
}

/// The slot pool: live slots `0..n_live`, snapshot slots after them.
#[derive(Debug)]
pub struct StateSlots {
    n_live: usize,
    n_snapshot: usize,
    live_free: Vec<SlotId>,
    snap_free: Vec<SlotId>,
    /// Rollback slots, after the snapshot slots (none unless added).
    n_rollback: usize,
    rollback_free: Vec<SlotId>,
    /// Registered snapshots by prefix hash.
    by_hash: HashMap<u64, Snapshot>,
    /// Registered snapshots, least recently used first: the eviction order.
    lru: BTreeSet<(u64, SlotId, u64)>,
    /// Reserved snapshot slots whose state is not computed yet (not evictable).
    n_pending: usize,
    clock: u64,
}

impl StateSlots {
    /// `n_live` live slots (the most sequences that run at once) and `n_snapshot` snapshot slots.
    pub fn new(n_live: usize, n_snapshot: usize) -> StateSlots {
        let total = n_live + n_snapshot;
        assert!(total <= SlotId::MAX as usize, "too many state slots");
        StateSlots {
            n_live,
            n_snapshot,
            live_free: (0..n_live as SlotId).rev().collect(),
            snap_free: (n_live as SlotId..total as SlotId).rev().collect(),
            n_rollback: 0,
            rollback_free: Vec::new(),
            by_hash: HashMap::new(),
            lru: BTreeSet::new(),
            n_pending: 0,
            clock: 0,
        }
    }

    /// Slots in all (the size of the store behind them).
    pub fn n_slots(&self) -> usize {
        self.n_live + self.n_snapshot + self.n_rollback
    }

    /// Adds one rollback slot per live slot, numbered after the others.
    pub fn add_rollback_slots(&mut self) {
        let first = self.n_slots() as SlotId;
        self.n_rollback = self.n_live;
        self.rollback_free = (first..first + self.n_live as SlotId).rev().collect();
    }

    /// Whether there are rollback slots at all.
    pub fn has_rollback(&self) -> bool {
        self.n_rollback > 0
    }

    /// A rollback slot, if there are any free.
    pub fn take_rollback(&mut self) -> Option<SlotId> {
        self.rollback_free.pop()
    }

    /// Gives back a rollback slot.
    pub fn free_rollback(&mut self, slot: SlotId) {
        debug_assert!(!self.rollback_free.contains(&slot));
        self.rollback_free.push(slot);
    }

    /// Registered snapshots.
    pub fn n_snapshots(&self) -> usize {
        self.by_hash.len()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// A live slot for a sequence that starts running.
    pub fn take_live(&mut self) -> Option<SlotId> {
        self.live_free.pop()
    }

    /// Gives back a live slot.
    pub fn free_live(&mut self, slot: SlotId) {
        debug_assert!((slot as usize) < self.n_live && !self.live_free.contains(&slot));
        self.live_free.push(slot);
    }

    /// Whether a snapshot of the prefix with this hash is registered.
    pub fn contains(&self, hash: u64) -> bool {
        self.by_hash.contains_key(&hash)
    }

    /// The slot of the snapshot of the prefix with this hash, marked as just used.
    pub fn lookup(&mut self, hash: u64) -> Option<SlotId> {
        let now = self.tick();
        let snap = self.by_hash.get_mut(&hash)?;
        self.lru.remove(&(snap.last_used, snap.slot, hash));
        snap.last_used = now;
        self.lru.insert((now, snap.slot, hash));
        Some(snap.slot)
    }

    /// A snapshot slot to write a new snapshot into: a free one, else the least recently used
    /// registered one (unregistered). `None` when every snapshot slot is pending.
    pub fn reserve(&mut self) -> Option<SlotId> {
        let slot = match self.snap_free.pop() {
            Some(s) => s,
            None => {
                let (_, slot, hash) = self.lru.pop_first()?;
                self.by_hash.remove(&hash);
                slot
            }
        };
        self.n_pending += 1;
        Some(slot)
    }

    /// Registers a reserved slot, now holding the state after the prefix `hash`. If that prefix
    /// already has a snapshot (two sequences computed it at once), the slot is given back.
    pub fn register(&mut self, hash: u64, slot: SlotId) {
        self.n_pending -= 1;
        if self.by_hash.contains_key(&hash) {
            self.snap_free.push(slot);
            return;
        }
        let now = self.tick();
        self.by_hash.insert(
            hash,
            Snapshot {
                slot,
                last_used: now,
            },
        );
        self.lru.insert((now, slot, hash));
    }

    /// Registers a snapshot of the prefix `hash` filled from outside (the disk tier) by
    /// `fill(slot)`, in a reserved slot; false (nothing registered) when no slot is free or
    /// `fill` fails. True at once if the prefix already has one.
    pub fn import(&mut self, hash: u64, fill: &mut dyn FnMut(SlotId) -> bool) -> bool {
        if self.contains(hash) {
            return true;
        }
        let Some(slot) = self.reserve() else {
            return false;
        };
        if fill(slot) {
            self.register(hash, slot);
            true
        } else {
            self.release(slot);
            false
        }
    }

    /// Gives back a reserved slot whose snapshot will not be computed (its sequence was
    /// preempted before the step ran).
    pub fn release(&mut self, slot: SlotId) {
        self.n_pending -= 1;
        self.snap_free.push(slot);
    }

    /// Checks the invariants (for tests): every slot is exactly one of free, in use (live and
    /// rollback slots the caller holds), registered or pending, and the indexes agree.
    pub fn check(&self, in_use: &[SlotId]) -> Result<(), String> {
        let mut state = vec![0u8; self.n_slots()];
        let slots = self
            .live_free
            .iter()
            .chain(in_use)
            .chain(&self.rollback_free)
            .chain(&self.snap_free)
            .chain(self.by_hash.values().map(|s| &s.slot));
        for &s in slots {
            state[s as usize] += 1;
        }
        if self.lru.len() != self.by_hash.len() {
            return Err("LRU and snapshot index differ in size".into());
        }
        for &(t, slot, hash) in &self.lru {
            match self.by_hash.get(&hash) {
                Some(s) if s.slot == slot && s.last_used == t => {}
                _ => return Err(format!("LRU entry of slot {slot} is stale")),
            }
        }
        let unaccounted = state.iter().filter(|&&c| c == 0).count();
        if state.iter().any(|&c| c > 1) || unaccounted != self.n_pending {
            return Err(format!(
                "slot states inconsistent: {unaccounted} unaccounted, {} pending",
                self.n_pending
            ));
        }
        Ok(())
    }
}
