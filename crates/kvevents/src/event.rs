//! The events and their wire form: a `KVEventBatch` msgpack-encoded as vLLM's msgspec encoder
//! writes it (`[ts, [event, …], data_parallel_rank]`, each event a map tagged `type`, its
//! fields in declaration order, defaults left out), so a subscriber written for vLLM decodes
//! it unchanged.

use rmp::encode as mp;

/// Where the blocks live, in vLLM's words: frugal's KV cache is in host memory.
pub const MEDIUM_CPU: &str = "CPU";

/// One change to a replica's prefix cache, as vLLM reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    /// Consecutive full blocks of one prefix entered the cache.
    BlockStored {
        /// One per block, in order, each chained to the one before.
        block_hashes: Vec<u64>,
        /// The block before the first (none for a prefix's first block).
        parent_block_hash: Option<u64>,
        /// Every block's tokens, in order.
        token_ids: Vec<u32>,
        block_size: usize,
        medium: &'static str,
        /// Per block: the `cache_salt` mixed into its hash (a prefix's first block only).
        extra_keys: Vec<Option<String>>,
    },
    /// A block left the cache.
    BlockRemoved {
        block_hashes: Vec<u64>,
        medium: &'static str,
    },
    /// Everything left the cache.
    AllBlocksCleared,
}

/// One batch of events: what a step changed, stamped with the wall-clock time in seconds.
pub fn encode_batch(ts: f64, events: &[KvEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 32 * events.len());
    // Writing to a Vec cannot fail.
    let w = &mut out;
    mp::write_array_len(w, 3).expect("vec");
    mp::write_f64(w, ts).expect("vec");
    mp::write_array_len(w, events.len() as u32).expect("vec");
    for e in events {
        encode_event(w, e);
    }
    // data_parallel_rank: one engine per process.
    mp::write_uint(w, 0).expect("vec");
    out
}

fn encode_event(w: &mut Vec<u8>, e: &KvEvent) {
    match e {
        KvEvent::BlockStored {
            block_hashes,
            parent_block_hash,
            token_ids,
            block_size,
            medium,
            extra_keys,
        } => {
            // msgspec sizes a struct's map header for all its fields (15 and the tag, so a
            // map16) and fills in the count it wrote.
            w.push(0xde);
            w.extend_from_slice(&10u16.to_be_bytes());
            tag(w, "BlockStored");
            key(w, "block_hashes");
            uints(w, block_hashes.iter().copied());
            key(w, "parent_block_hash");
            match parent_block_hash {
                Some(h) => mp::write_uint(w, *h).map(drop).expect("vec"),
                None => mp::write_nil(w).expect("vec"),
            }
            key(w, "token_ids");
            uints(w, token_ids.iter().map(|&t| u64::from(t)));
            key(w, "block_size");
            mp::write_uint(w, *block_size as u64).expect("vec");
            key(w, "lora_id");
            mp::write_nil(w).expect("vec");
            key(w, "medium");
            mp::write_str(w, medium).expect("vec");
            key(w, "lora_name");
            mp::write_nil(w).expect("vec");
            key(w, "extra_keys");
            mp::write_array_len(w, extra_keys.len() as u32).expect("vec");
            for k in extra_keys {
                match k {
                    Some(salt) => {
                        mp::write_array_len(w, 1).expect("vec");
                        mp::write_str(w, salt).expect("vec");
                    }
                    None => mp::write_nil(w).expect("vec"),
                }
            }
            key(w, "group_idx");
            mp::write_uint(w, 0).expect("vec");
        }
        KvEvent::BlockRemoved {
            block_hashes,
            medium,
        } => {
            mp::write_map_len(w, 4).expect("vec");
            tag(w, "BlockRemoved");
            key(w, "block_hashes");
            uints(w, block_hashes.iter().copied());
            key(w, "medium");
            mp::write_str(w, medium).expect("vec");
            key(w, "group_idx");
            mp::write_uint(w, 0).expect("vec");
        }
        KvEvent::AllBlocksCleared => {
            mp::write_map_len(w, 1).expect("vec");
            tag(w, "AllBlocksCleared");
        }
    }
}

fn tag(w: &mut Vec<u8>, name: &str) {
    key(w, "type");
    mp::write_str(w, name).expect("vec");
}

fn key(w: &mut Vec<u8>, name: &str) {
    mp::write_str(w, name).expect("vec");
}

fn uints(w: &mut Vec<u8>, values: impl ExactSizeIterator<Item = u64>) {
    mp::write_array_len(w, values.len() as u32).expect("vec");
    for v in values {
        mp::write_uint(w, v).expect("vec");
    }
}
