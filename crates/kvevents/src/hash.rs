//! vLLM's prefix-caching block hash: `hash_fn((parent_hash, tuple(block_tokens), extra_keys))`,
//! the first block's parent being `NONE_HASH = hash_fn(seed)`, where `hash_fn` is SHA-256 of
//! the value's pickle (`sha256`, vLLM's default) or of its canonical CBOR (`sha256_cbor`). A
//! router that tokenizes a prompt computes the same hashes and looks them up in the blocks
//! each replica announced. The serializations are written out here for exactly the values
//! vLLM hashes (bytes, a tuple of ints, `None` or a tuple of `("cache_salt", salt)`), byte for
//! byte as Python's C pickler (protocol 5) and cbor2 write them.

use sha2::{Digest, Sha256};

/// The seed vLLM derives `NONE_HASH` from when `PYTHONHASHSEED` is not set.
pub const DEFAULT_SEED: &str = "vllm-none-hash";

/// Largest block hashed: its pickle must fit one 64 KiB frame, as the C pickler writes it.
pub const MAX_BLOCK_SIZE: usize = 4096;

/// vLLM's `--prefix-caching-hash-algo` values that are reproducible across processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgo {
    /// `sha256`: SHA-256 of the pickle (protocol 5), vLLM's default.
    Sha256,
    /// `sha256_cbor`: SHA-256 of canonical CBOR, for consumers outside Python.
    Sha256Cbor,
}

impl HashAlgo {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(HashAlgo::Sha256),
            "sha256_cbor" => Some(HashAlgo::Sha256Cbor),
            _ => None,
        }
    }
}

/// A block hash: 32 bytes of SHA-256.
pub type BlockHash = [u8; 32];

/// `NONE_HASH`: the parent of every prefix's first block.
pub fn none_hash(algo: HashAlgo, seed: &str) -> BlockHash {
    let bytes = match algo {
        HashAlgo::Sha256 => {
            let mut p = Pickle::new();
            p.str(seed);
            p.finish()
        }
        HashAlgo::Sha256Cbor => {
            let mut c = Vec::new();
            cbor_str(&mut c, seed);
            c
        }
    };
    Sha256::digest(bytes).into()
}

/// The hash of a full block of `tokens` after the block hashed `parent`; `salt` is the
/// request's `cache_salt`, which vLLM mixes into a prefix's first block only.
pub fn block_hash(
    algo: HashAlgo,
    parent: &BlockHash,
    tokens: &[u32],
    salt: Option<&str>,
) -> BlockHash {
    let bytes = match algo {
        HashAlgo::Sha256 => pickle_block(parent, tokens, salt),
        HashAlgo::Sha256Cbor => cbor_block(parent, tokens, salt),
    };
    Sha256::digest(bytes).into()
}

/// The block hash as vLLM's events carry it (`VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES`, on by
/// default): the hash's last 8 bytes as a big-endian integer.
pub fn external(hash: &BlockHash) -> u64 {
    u64::from_be_bytes(hash[24..].try_into().expect("8 bytes"))
}

fn pickle_block(parent: &BlockHash, tokens: &[u32], salt: Option<&str>) -> Vec<u8> {
    assert!(tokens.len() <= MAX_BLOCK_SIZE, "block too large to hash");
    let mut p = Pickle::new();
    p.bytes(parent);
    p.tuple_of(tokens.len(), |p| tokens.iter().for_each(|&t| p.int(t)));
    match salt {
        None => p.none(),
        Some(salt) => {
            p.tuple_of(1, |p| {
                p.tuple_of(2, |p| {
                    p.str("cache_salt");
                    p.str(salt);
                })
            });
        }
    }
    p.wrap_tuple(3);
    p.finish()
}

fn cbor_block(parent: &BlockHash, tokens: &[u32], salt: Option<&str>) -> Vec<u8> {
    let mut c = Vec::with_capacity(48 + 5 * tokens.len());
    cbor_head(&mut c, 4, 3);
    cbor_head(&mut c, 2, parent.len() as u64);
    c.extend_from_slice(parent);
    cbor_head(&mut c, 4, tokens.len() as u64);
    tokens.iter().for_each(|&t| cbor_head(&mut c, 0, t.into()));
    match salt {
        None => c.push(0xf6),
        Some(salt) => {
            cbor_head(&mut c, 4, 1);
            cbor_head(&mut c, 4, 2);
            cbor_str(&mut c, "cache_salt");
            cbor_str(&mut c, salt);
        }
    }
    c
}

/// A CBOR head in its shortest form (canonical).
fn cbor_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn cbor_str(out: &mut Vec<u8>, s: &str) {
    cbor_head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A pickle (protocol 5) as CPython's C pickler writes it: one frame, every string, bytes
/// and tuple memoized (the values hashed never repeat an object, so no memo is read back).
struct Pickle {
    body: Vec<u8>,
}

impl Pickle {
    const MARK: u8 = b'(';
    const MEMOIZE: u8 = 0x94;

    fn new() -> Self {
        Pickle { body: Vec::new() }
    }

    fn bytes(&mut self, b: &[u8]) {
        match u8::try_from(b.len()) {
            Ok(n) => self.body.extend_from_slice(&[b'C', n]),
            Err(_) => {
                self.body.push(b'B');
                self.body.extend_from_slice(&(b.len() as u32).to_le_bytes());
            }
        }
        self.body.extend_from_slice(b);
        self.body.push(Self::MEMOIZE);
    }

    fn str(&mut self, s: &str) {
        match u8::try_from(s.len()) {
            Ok(n) => self.body.extend_from_slice(&[0x8c, n]),
            Err(_) => {
                self.body.push(b'X');
                self.body.extend_from_slice(&(s.len() as u32).to_le_bytes());
            }
        }
        self.body.extend_from_slice(s.as_bytes());
        self.body.push(Self::MEMOIZE);
    }

    fn int(&mut self, v: u32) {
        match v {
            0..=0xff => self.body.extend_from_slice(&[b'K', v as u8]),
            0x100..=0xffff => {
                self.body.push(b'M');
                self.body.extend_from_slice(&(v as u16).to_le_bytes());
            }
            0x1_0000..=0x7fff_ffff => {
                self.body.push(b'J');
                self.body.extend_from_slice(&v.to_le_bytes());
            }
            // LONG1: little-endian two's complement, with a zero byte so the sign stays plus.
            _ => {
                self.body.extend_from_slice(&[0x8a, 5]);
                self.body.extend_from_slice(&v.to_le_bytes());
                self.body.push(0);
            }
        }
    }

    fn none(&mut self) {
        self.body.push(b'N');
    }

    /// A tuple of `n` values that `items` writes: TUPLE1..3 for short ones, MARK … TUPLE
    /// for longer, EMPTY_TUPLE (not memoized) for none.
    fn tuple_of(&mut self, n: usize, items: impl FnOnce(&mut Self)) {
        if n == 0 {
            self.body.push(b')');
            return;
        }
        if n > 3 {
            self.body.push(Self::MARK);
        }
        items(self);
        self.wrap_tuple(n);
    }

    /// Closes a tuple of the last `n` values (1 to 3, or after a MARK).
    fn wrap_tuple(&mut self, n: usize) {
        let op = match n {
            1 => 0x85,
            2 => 0x86,
            3 => 0x87,
            _ => b't',
        };
        self.body.push(op);
        self.body.push(Self::MEMOIZE);
    }

    /// PROTO 5, then the body (with STOP) in one frame.
    fn finish(mut self) -> Vec<u8> {
        self.body.push(b'.');
        let mut out = Vec::with_capacity(self.body.len() + 11);
        out.extend_from_slice(&[0x80, 5, 0x95]);
        out.extend_from_slice(&(self.body.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}
