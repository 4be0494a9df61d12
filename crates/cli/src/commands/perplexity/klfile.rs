//! The file `--kl-divergence-base` writes and `--kl-divergence` reads: the base model's
//! log-probabilities at every scored position, 16 bits each (as llama.cpp stores them), behind a
//! header that lets a mismatched run be refused before any work. Little-endian throughout:
//!
//! ```text
//! magic "FRUGALKL" | u32 version (1) | u32 n_ctx | u32 n_vocab | u32 n_chunk
//! | u64 tokenizer fingerprint (FNV-1a over its kind, the BOS it adds, every token's bytes)
//! | u32 tokens[n_chunk * n_ctx]            (the text's tokens, before any BOS substitution)
//! | per chunk, per scored position (n_ctx - 1 - n_ctx/2 of them):
//!     f32 scale | f32 min_log_prob | u16 q[n_vocab]   (log p[i] = scale * q[i] + min_log_prob)
//! ```
//!
//! It is not llama.cpp's `_logits_` file: that one has no version or vocabulary check.

use super::stats::QuantRow;
use anyhow::{bail, ensure, Context, Result};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"FRUGALKL";
const VERSION: u32 = 1;
const HEADER_BYTES: u64 = 8 + 4 * 4 + 8;

/// What a base file was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunk: usize,
    pub vocab_fingerprint: u64,
    /// The first `n_chunk * n_ctx` tokens of the text.
    pub tokens: Vec<u32>,
}

impl Header {
    fn scored(&self) -> usize {
        self.n_ctx - 1 - self.n_ctx / 2
    }

    /// The size of the whole file this header describes.
    fn file_bytes(&self) -> u64 {
        let row = 8 + 2 * self.n_vocab as u64;
        HEADER_BYTES
            + 4 * (self.n_chunk * self.n_ctx) as u64
            + self.n_chunk as u64 * self.scored() as u64 * row
    }
}

/// A fingerprint of a tokenizer: the same for every quantization of one model, different for a
/// model with other tokens, another pre-tokenizer or another BOS policy (`describe` says the
/// last two), since the saved tokens and their BOS substitution must mean the same to both.
pub fn vocab_fingerprint(
    describe: &str,
    n_vocab: usize,
    token_bytes: impl Fn(u32) -> Vec<u8>,
) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(describe.as_bytes());
    for id in 0..n_vocab as u32 {
        let t = token_bytes(id);
        eat(&(t.len() as u32).to_le_bytes());
        eat(&t);
    }
    h
}

/// Writes a base file chunk by chunk.
pub struct Writer {
    out: BufWriter<std::fs::File>,
    path: PathBuf,
}

impl Writer {
    pub fn create(path: &Path, h: &Header) -> Result<Writer> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = Writer {
            out: BufWriter::new(file),
            path: path.to_path_buf(),
        };
        let mut head = Vec::with_capacity(HEADER_BYTES as usize + 4 * h.tokens.len());
        head.extend_from_slice(MAGIC);
        for v in [
            VERSION,
            to_u32(h.n_ctx)?,
            to_u32(h.n_vocab)?,
            to_u32(h.n_chunk)?,
        ] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        head.extend_from_slice(&h.vocab_fingerprint.to_le_bytes());
        for t in &h.tokens {
            head.extend_from_slice(&t.to_le_bytes());
        }
        w.write(&head)?;
        Ok(w)
    }

    /// Appends one chunk's rows, in position order.
    pub fn write_rows(&mut self, rows: &[QuantRow]) -> Result<()> {
        let mut buf = Vec::new();
        for r in rows {
            buf.clear();
            buf.extend_from_slice(&r.scale.to_le_bytes());
            buf.extend_from_slice(&r.min_log_prob.to_le_bytes());
            for q in &r.q {
                buf.extend_from_slice(&q.to_le_bytes());
            }
            self.write(&buf)?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

fn to_u32(n: usize) -> Result<u32> {
    u32::try_from(n).context("a size in the KL base file exceeds 32 bits")
}

/// Reads a base file chunk by chunk, after checking its header and length.
pub struct Reader {
    input: BufReader<std::fs::File>,
    path: PathBuf,
    pub header: Header,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = file.metadata()?.len();
        let mut input = BufReader::new(file);
        let header = read_header(&mut input, len)
            .with_context(|| format!("{} is not a usable KL base file", path.display()))?;
        Ok(Reader {
            input,
            path: path.to_path_buf(),
            header,
        })
    }

    /// The next chunk's rows.
    pub fn read_rows(&mut self) -> Result<Vec<QuantRow>> {
        let n_vocab = self.header.n_vocab;
        let mut buf = vec![0u8; 8 + 2 * n_vocab];
        let mut rows = Vec::with_capacity(self.header.scored());
        for _ in 0..self.header.scored() {
            self.input
                .read_exact(&mut buf)
                .with_context(|| format!("cannot read {}", self.path.display()))?;
            rows.push(QuantRow {
                scale: f32::from_le_bytes(buf[0..4].try_into()?),
                min_log_prob: f32::from_le_bytes(buf[4..8].try_into()?),
                q: buf[8..]
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            });
        }
        Ok(rows)
    }
}

fn read_u32(r: &mut impl Read) -> Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b).context("the file is truncated")?;
    Ok(u32::from_le_bytes(b))
}

fn read_header(r: &mut impl Read, len: u64) -> Result<Header> {
    let mut magic = [0; 8];
    r.read_exact(&mut magic).context("the file is truncated")?;
    ensure!(
        &magic == MAGIC,
        "it does not start with {:?} (files from llama.cpp's --kl-divergence-base are not read)",
        std::str::from_utf8(MAGIC).unwrap_or_default()
    );
    let version = read_u32(r)?;
    ensure!(
        version == VERSION,
        "version {version}, this frugal reads {VERSION}"
    );
    let (n_ctx, n_vocab, n_chunk) = (
        read_u32(r)? as usize,
        read_u32(r)? as usize,
        read_u32(r)? as usize,
    );
    ensure!(
        n_ctx >= 4 && n_vocab > 0 && n_chunk > 0,
        "its header is inconsistent"
    );
    let mut fp = [0; 8];
    r.read_exact(&mut fp).context("the file is truncated")?;
    let mut h = Header {
        n_ctx,
        n_vocab,
        n_chunk,
        vocab_fingerprint: u64::from_le_bytes(fp),
        tokens: Vec::new(),
    };
    // Checked before the token array is allocated, so a corrupt count cannot ask for terabytes.
    if h.file_bytes() != len {
        bail!(
            "it holds {len} bytes where its header (n_ctx {n_ctx}, n_vocab {n_vocab}, \
             {n_chunk} chunks) implies {}",
            h.file_bytes()
        );
    }
    let mut raw = vec![0u8; 4 * n_chunk * n_ctx];
    r.read_exact(&mut raw).context("the file is truncated")?;
    h.tokens = raw
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("frugal-klfile-{}-{name}", std::process::id()))
    }

    fn header() -> Header {
        Header {
            n_ctx: 4,
            n_vocab: 3,
            n_chunk: 2,
            vocab_fingerprint: 42,
            tokens: (0..8).collect(),
        }
    }

    #[test]
    fn round_trip() {
        let path = temp("round");
        let rows = |k: f32| {
            vec![QuantRow {
                scale: k,
                min_log_prob: -k,
                q: vec![1, 2, u16::MAX],
            }]
        };
        let mut w = Writer::create(&path, &header()).unwrap();
        w.write_rows(&rows(0.5)).unwrap();
        w.write_rows(&rows(0.25)).unwrap();
        w.finish().unwrap();
        let mut r = Reader::open(&path).unwrap();
        assert_eq!(r.header, header());
        assert_eq!(r.read_rows().unwrap(), rows(0.5));
        assert_eq!(r.read_rows().unwrap(), rows(0.25));
        assert!(r.read_rows().is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn refuses_foreign_and_truncated_files() {
        let path = temp("bad");
        std::fs::write(&path, b"_logits_\x80\0\0\0").unwrap();
        let e = format!("{:#}", Reader::open(&path).err().unwrap());
        assert!(e.contains("does not start with \"FRUGALKL\""), "{e}");
        let w = Writer::create(&path, &header()).unwrap();
        w.finish().unwrap(); // no rows: shorter than the header says
        let e = format!("{:#}", Reader::open(&path).err().unwrap());
        assert!(e.contains("implies"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = format!("{:#}", Reader::open(&path).err().unwrap());
        assert!(e.contains("cannot open"), "{e}");
    }

    #[test]
    fn fingerprints_tell_tokenizers_apart() {
        let a = vocab_fingerprint("bpe", 3, |id| vec![b'a' + id as u8]);
        assert_eq!(a, vocab_fingerprint("bpe", 3, |id| vec![b'a' + id as u8]));
        assert_ne!(a, vocab_fingerprint("bpe", 3, |id| vec![b'b' + id as u8]));
        assert_ne!(a, vocab_fingerprint("spm", 3, |id| vec![b'a' + id as u8]));
        // Lengths are part of it: ["ab", ""] is not ["a", "b"].
        let two = |a: &'static [u8], b: &'static [u8]| {
            move |id: u32| if id == 0 { a.to_vec() } else { b.to_vec() }
        };
        let split = vocab_fingerprint("", 2, two(b"a", b"b"));
        assert_ne!(split, vocab_fingerprint("", 2, two(b"ab", b"")));
    }
}
