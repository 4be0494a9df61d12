//! One block's file: a header that says what it holds, the block's tokens, the payload (the
//! block's keys and values as the KV store keeps them) and a checksum of everything before it.
//!
//! ```text
//! "FRUGALKV"  version: u32  n_tokens: u32  fingerprint: u64  hash: u64  payload_len: u64
//! tokens: [u32; n_tokens]  payload: [u8; payload_len]  xxh3-64 of all the above: u64
//! ```
//! All little-endian. A file is used only if every field is what the reader expects.

use xxhash_rust::xxh3::Xxh3;

const MAGIC: &[u8; 8] = b"FRUGALKV";
/// Bumped whenever the layout, or what a payload means, changes.
pub const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 4 + 8 + 8 + 8;

/// What the reader expects a block's file to hold.
pub struct Expected<'a> {
    pub fingerprint: u64,
    pub hash: u64,
    pub tokens: &'a [u32],
    pub payload_len: usize,
}

/// The whole file for a block.
pub fn encode(fingerprint: u64, hash: u64, tokens: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + tokens.len() * 4 + payload.len() + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&hash.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    for t in tokens {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out.extend_from_slice(payload);
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn checksum(bytes: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(bytes);
    h.digest()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The payload of `file` if it is exactly the block `want` describes; else why not.
pub fn decode<'f>(file: &'f [u8], want: &Expected) -> Result<&'f [u8], &'static str> {
    let n_tokens = want.tokens.len();
    let size = HEADER + n_tokens * 4 + want.payload_len + 8;
    if file.len() != size {
        return Err("wrong size");
    }
    if &file[..8] != MAGIC {
        return Err("not a frugal KV block");
    }
    if u32_at(file, 8) != VERSION {
        return Err("another format version");
    }
    let fields = (
        u32_at(file, 12) as usize,
        u64_at(file, 16),
        u64_at(file, 24),
        u64_at(file, 32),
    );
    if fields
        != (
            n_tokens,
            want.fingerprint,
            want.hash,
            want.payload_len as u64,
        )
    {
        return Err("another model, block or layout");
    }
    let body = size - 8;
    if checksum(&file[..body]) != u64_at(file, body) {
        return Err("checksum mismatch");
    }
    let tokens = &file[HEADER..HEADER + n_tokens * 4];
    if !tokens
        .chunks_exact(4)
        .zip(want.tokens)
        .all(|(b, &t)| u32::from_le_bytes(b.try_into().expect("4 bytes")) == t)
    {
        return Err("other tokens (a hash collision)");
    }
    Ok(&file[HEADER + n_tokens * 4..body])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(tokens: &[u32]) -> Expected<'_> {
        Expected {
            fingerprint: 7,
            hash: 9,
            tokens,
            payload_len: 5,
        }
    }

    #[test]
    fn a_block_reads_back_as_written() {
        let file = encode(7, 9, &[1, 2, 3], b"hello");
        assert_eq!(decode(&file, &want(&[1, 2, 3])), Ok(&b"hello"[..]));
    }

    #[test]
    fn every_damage_is_refused() {
        let file = encode(7, 9, &[1, 2, 3], b"hello");
        // Every single flipped bit and every truncation is caught.
        for i in 0..file.len() * 8 {
            let mut bad = file.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(decode(&bad, &want(&[1, 2, 3])).is_err(), "bit {i}");
        }
        for n in 0..file.len() {
            assert!(decode(&file[..n], &want(&[1, 2, 3])).is_err(), "length {n}");
        }
        assert!(decode(&file, &want(&[1, 2, 4])).is_err());
        let other = Expected {
            fingerprint: 8,
            ..want(&[1, 2, 3])
        };
        assert!(decode(&file, &other).is_err());
    }
}
