//! frugal's KV events against vLLM's own: `data/vllm_vectors.json` holds block hashes and
//! encoded event batches computed by vLLM 0.34's code (`scripts/gen_kv_event_vectors.py`).

use frugal_kvcache::BlockManager;
use frugal_kvevents::hash::{block_hash, external, none_hash};
use frugal_kvevents::{encode_batch, HashAlgo, KvEvent, Tracker, DEFAULT_SEED};
use serde_json::Value;

fn vectors() -> Value {
    let text = include_str!("data/vllm_vectors.json");
    serde_json::from_str(text).expect("valid JSON")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|t| t.as_u64().expect("int") as u32)
        .collect()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|t| t.as_u64().expect("int"))
        .collect()
}

#[test]
fn block_hashes_are_vllms() {
    let v = vectors();
    let block = v["block_size"].as_u64().unwrap() as usize;
    let chains = v["chains"].as_array().unwrap();
    assert!(chains.len() >= 24);
    for c in chains {
        let algo = HashAlgo::parse(c["algo"].as_str().unwrap()).unwrap();
        let seed = c["python_hash_seed"].as_str().unwrap_or(DEFAULT_SEED);
        let mut parent = none_hash(algo, seed);
        assert_eq!(hex(&parent), c["none_hash"].as_str().unwrap(), "{c}");
        let salt = c["cache_salt"].as_str();
        let tokens = u32s(&c["tokens"]);
        let expected = c["hashes"].as_array().unwrap();
        let events = u64s(&c["event_hashes"]);
        assert_eq!(tokens.len() / block, expected.len());
        for (i, chunk) in tokens.chunks_exact(block).enumerate() {
            let h = block_hash(algo, &parent, chunk, salt.filter(|_| i == 0));
            assert_eq!(hex(&h), expected[i].as_str().unwrap(), "block {i} of {c}");
            assert_eq!(external(&h), events[i]);
            parent = h;
        }
    }
}

fn medium(name: &str) -> &'static str {
    match name {
        "GPU" => "GPU",
        "CPU" => "CPU",
        other => panic!("medium {other}"),
    }
}

/// An event as vLLM's decoded batch shows it.
fn event(e: &Value) -> KvEvent {
    match e["type"].as_str().unwrap() {
        "BlockStored" => KvEvent::BlockStored {
            block_hashes: u64s(&e["block_hashes"]),
            parent_block_hash: e["parent_block_hash"].as_u64(),
            token_ids: u32s(&e["token_ids"]),
            block_size: e["block_size"].as_u64().unwrap() as usize,
            medium: medium(e["medium"].as_str().unwrap()),
            extra_keys: e["extra_keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.get(0).map(|s| s.as_str().unwrap().to_string()))
                .collect(),
        },
        "BlockRemoved" => KvEvent::BlockRemoved {
            block_hashes: u64s(&e["block_hashes"]),
            medium: medium(e["medium"].as_str().unwrap()),
        },
        "AllBlocksCleared" => KvEvent::AllBlocksCleared,
        other => panic!("event {other}"),
    }
}

#[test]
fn batches_encode_byte_for_byte_as_vllms() {
    let v = vectors();
    for b in v["batches"].as_array().unwrap() {
        let decoded = &b["decoded"];
        let events: Vec<KvEvent> = decoded[1].as_array().unwrap().iter().map(event).collect();
        let ts = b["ts"].as_f64().unwrap();
        assert_eq!(
            hex(&encode_batch(ts, &events)),
            b["payload_hex"].as_str().unwrap()
        );
    }
}

/// The generator's scenario run through frugal's own block pool: request `a` (48 tokens, three
/// full blocks) and request `b` (its first 32 tokens, salted) cached, both freed, four blocks
/// taken (evicting `a`'s three and `b`'s last). The events must be vLLM's, byte for byte.
#[test]
fn the_cache_announces_what_vllms_would() {
    let v = vectors();
    let tokens = u32s(&v["chains"][0]["tokens"]);
    let mut pool = BlockManager::new(5, 16);
    pool.log_events();
    let mut tracker = Tracker::new(HashAlgo::Sha256, DEFAULT_SEED, 16);
    let (mut a, _) = pool.allocate(&tokens[..48]).unwrap();
    pool.commit(&mut a, &tokens[..48], 48);
    tracker.note_salt("tenant-a");
    let salt = frugal_kvcache::cache_seed("tenant-a");
    let (mut b, _, _) = pool.allocate_with(&tokens[..32], salt, &|_| true).unwrap();
    pool.commit(&mut b, &tokens[..32], 32);
    let mut batches = vec![tracker.translate(pool.take_events())];
    pool.free(a);
    pool.free(b);
    let (evicting, _) = pool.allocate(&[9; 64]).unwrap();
    batches.push(tracker.translate(pool.take_events()));
    pool.free(evicting);
    batches.push(vec![KvEvent::AllBlocksCleared]);
    let expected: Vec<&Value> = v["batches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["medium"] == "CPU")
        .collect();
    assert_eq!(expected.len(), batches.len());
    for (events, b) in batches.iter().zip(expected) {
        let ts = b["ts"].as_f64().unwrap();
        assert_eq!(
            hex(&encode_batch(ts, events)),
            b["payload_hex"].as_str().unwrap(),
            "{events:?}"
        );
    }
}
