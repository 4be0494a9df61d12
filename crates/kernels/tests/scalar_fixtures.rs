//! The scalar kernels on the fixture models. The quantized GGUFs were made by `llama-quantize`
//! from the F32 GGUFs without an importance matrix, so ggml's reference quantizers produced every
//! quantized tensor: re-quantizing the F32 tensor must give the file's bytes exactly. Then the
//! dequantization and the dot products are checked on those real tensors.
//!
//! The GGUF reading here is a minimal, test-only parser (the real reader lives in frugal-formats,
//! which depends on this crate).

use frugal_kernels::dequant::dequantize_row;
use frugal_kernels::dot_scalar::vec_dot;
use frugal_kernels::quantize::{quantize_row, quantize_weights};
use frugal_kernels::GgmlType;
use std::collections::HashMap;

struct Tensor {
    ty: GgmlType,
    dims: Vec<usize>,
    /// Byte range in the file.
    start: usize,
    len: usize,
}

struct Gguf {
    bytes: Vec<u8>,
    tensors: Vec<(String, Tensor)>,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
    /// Skips a metadata value of type `t`, returning it when it is an integer (for the alignment).
    fn value(&mut self, t: u32) -> Option<u64> {
        match t {
            0 | 1 | 7 => Some(self.take(1)[0] as u64),
            2 | 3 => Some(u16::from_le_bytes(self.take(2).try_into().unwrap()) as u64),
            4 | 5 => Some(self.u32() as u64),
            6 => {
                self.take(4);
                None
            }
            8 => {
                self.string();
                None
            }
            9 => {
                let (et, n) = (self.u32(), self.u64());
                for _ in 0..n {
                    self.value(et);
                }
                None
            }
            10 | 11 => Some(self.u64()),
            12 => {
                self.take(8);
                None
            }
            _ => panic!("unknown GGUF value type {t}"),
        }
    }
}

fn open(name: &str) -> Gguf {
    let bytes = std::fs::read(frugal_fixtures::dir().join("models").join(name)).unwrap();
    let mut r = Reader { b: &bytes, pos: 0 };
    assert_eq!(r.take(4), b"GGUF");
    assert_eq!(r.u32(), 3);
    let (n_tensors, n_kv) = (r.u64(), r.u64());
    let mut alignment = 32;
    for _ in 0..n_kv {
        let key = r.string();
        let t = r.u32();
        let v = r.value(t);
        if key == "general.alignment" {
            alignment = v.unwrap() as usize;
        }
    }
    let mut infos = Vec::new();
    for _ in 0..n_tensors {
        let name = r.string();
        let n_dims = r.u32();
        let dims: Vec<usize> = (0..n_dims).map(|_| r.u64() as usize).collect();
        let ty = GgmlType::from_id(r.u32()).unwrap();
        let offset = r.u64() as usize;
        infos.push((name, ty, dims, offset));
    }
    let data = r.pos.div_ceil(alignment) * alignment;
    let tensors = infos
        .into_iter()
        .map(|(name, ty, dims, offset)| {
            let n: usize = dims.iter().product();
            let len = ty.row_bytes(n).unwrap();
            let t = Tensor {
                ty,
                dims,
                start: data + offset,
                len,
            };
            (name, t)
        })
        .collect();
    Gguf { bytes, tensors }
}

impl Gguf {
    fn data(&self, t: &Tensor) -> &[u8] {
        &self.bytes[t.start..t.start + t.len]
    }
    fn f32s(&self, t: &Tensor) -> Vec<f32> {
        assert_eq!(t.ty, GgmlType::F32);
        bytemuck::pod_collect_to_vec(self.data(t))
    }
}

const QUANTIZED: [&str; 14] = [
    "deepseek2-Q4_K_M",
    "deepseek2-Q8_0",
    "llama-Q4_K_M",
    "llama-Q8_0",
    "qwen2-Q4_0",
    "qwen2-Q4_K_M",
    "qwen2-Q6_K",
    "qwen2-Q8_0",
    "qwen2moe-Q4_K_M",
    "qwen2moe-Q8_0",
    "qwen3-Q4_K_M",
    "qwen3-Q8_0",
    "qwen3moe-Q4_K_M",
    "qwen3moe-Q8_0",
];

#[test]
fn requantizing_the_f32_models_reproduces_llama_quantize() {
    let mut checked: HashMap<GgmlType, usize> = HashMap::new();
    for model in QUANTIZED {
        let arch = model.split('-').next().unwrap();
        let f32_file = open(&format!("{arch}-f32.gguf"));
        let source: HashMap<&str, &Tensor> = f32_file
            .tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t))
            .collect();
        let q_file = open(&format!("{model}.gguf"));
        for (name, t) in &q_file.tensors {
            if !t.ty.is_quantized() {
                continue;
            }
            let src = source[name.as_str()];
            assert_eq!(src.dims, t.dims, "{model} {name}");
            let x = f32_file.f32s(src);
            let mut q = vec![0u8; t.len];
            quantize_weights(t.ty, &x, &mut q).unwrap();
            let want = q_file.data(t);
            if let Some(i) = (0..q.len()).find(|&i| q[i] != want[i]) {
                panic!(
                    "{model} {name} ({}): first differing byte {i} (block {})",
                    t.ty,
                    i / t.ty.block_bytes()
                );
            }
            *checked.entry(t.ty).or_default() += 1;
        }
    }
    // Every weight type the fixtures use was seen.
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        assert!(checked.get(&ty).copied().unwrap_or(0) > 0, "no {ty} tensor");
    }
}

/// Deterministic activations in [-1, 1).
fn activations(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / 8_388_608.0 - 1.0
        })
        .collect()
}

#[test]
fn fixture_tensors_dequantize_close_to_f32_and_dot_consistently() {
    for model in ["qwen2-Q4_0", "qwen2-Q6_K", "deepseek2-Q4_K_M", "llama-Q8_0"] {
        let arch = model.split('-').next().unwrap();
        let f32_file = open(&format!("{arch}-f32.gguf"));
        let q_file = open(&format!("{model}.gguf"));
        for (name, t) in q_file.tensors.iter().filter(|(_, t)| t.ty.is_quantized()) {
            let src = f32_file
                .tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .unwrap();
            let x = f32_file.f32s(src);
            let cols = t.dims[0];
            let row_bytes = t.ty.row_bytes(cols).unwrap();
            let data = q_file.data(t);
            let a = activations(cols, 17);
            let vdt = t.ty.vec_dot_type();
            let mut aq = vec![0u8; vdt.row_bytes(cols).unwrap()];
            quantize_row(vdt, &a, &mut aq);
            let mut a_deq = vec![0.0f32; cols];
            dequantize_row(vdt, &aq, &mut a_deq);
            let mut w = vec![0.0f32; cols];
            // A few rows of each tensor: cheap, and enough to catch a layout mistake.
            let rows = data.len() / row_bytes;
            for r in (0..rows).step_by(rows.div_ceil(4)) {
                let wq = &data[r * row_bytes..(r + 1) * row_bytes];
                dequantize_row(t.ty, wq, &mut w);
                let xr = &x[r * cols..(r + 1) * cols];
                // Weights here are bf16-rounded normal draws; the worst block error of these
                // types stays well below a quarter of the row's largest magnitude.
                let amax = xr.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (i, (&d, &v)) in w.iter().zip(xr).enumerate() {
                    assert!(
                        (d - v).abs() <= 0.25 * amax,
                        "{model} {name} row {r} col {i}: {d} vs {v}"
                    );
                }
                let got = vec_dot(t.ty, cols, wq, &aq) as f64;
                let want: f64 = w
                    .iter()
                    .zip(&a_deq)
                    .map(|(&p, &q)| p as f64 * q as f64)
                    .sum();
                let scale: f64 = w
                    .iter()
                    .zip(&a_deq)
                    .map(|(&p, &q)| (p as f64 * q as f64).abs())
                    .sum();
                assert!(
                    (got - want).abs() <= 1e-4 * scale.max(1e-30),
                    "{model} {name} row {r}: {got} vs {want}"
                );
            }
        }
    }
}
