//! SIMD kernels, each tested against its scalar reference (tests/simd*.rs).
//!
//! x86_64 has two levels, both compiled into every binary and chosen at run time: AVX2+FMA+F16C
//! (`avx2`), and AVX-512 F/BW/VL/DQ+VNNI on 512-bit registers (`avx512`). The packed GEMM has one
//! kernel per level (`gemm256`, `gemm512`, over the same layouts). Other targets use the scalar
//! kernels.

use crate::cpu::Isa;
use crate::dot::{QuantizeRowFn, VecDot4Fn, VecDotFn};
use crate::types::GgmlType;

#[cfg(target_arch = "x86_64")]
mod attn;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod decoded;
#[cfg(target_arch = "x86_64")]
mod gemm256;
#[cfg(target_arch = "x86_64")]
mod gemm512;

/// A SIMD kernel for `ty` at `isa` (which the caller has checked is available), if there is one.
pub(crate) fn vec_dot_fn(ty: GgmlType, isa: Isa) -> Option<VecDotFn> {
    #[cfg(target_arch = "x86_64")]
    {
        match isa {
            Isa::Avx512Vnni => avx512::kernel(ty).or_else(|| avx2::kernel(ty)),
            Isa::Avx2 => avx2::kernel(ty),
            Isa::Scalar => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ty, isa);
        None
    }
}

/// The generic dot product over decoded super-blocks at `isa` (checked available), if SIMD.
pub(crate) fn decoded_dot_k(isa: Isa) -> Option<crate::quant::DotKFn> {
    #[cfg(target_arch = "x86_64")]
    {
        match isa {
            Isa::Avx512Vnni => Some(decoded::avx512::dot_k),
            Isa::Avx2 => Some(decoded::avx2::dot_k),
            Isa::Scalar => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        None
    }
}

/// The generic dot product over decoded 32-value blocks against Q8_1 (`q8_1`) or Q8_0 activations.
pub(crate) fn decoded_dot_32(isa: Isa, q8_1: bool) -> Option<crate::quant::Dot32Fn> {
    #[cfg(target_arch = "x86_64")]
    {
        use decoded::{avx2, avx512};
        match (isa, q8_1) {
            (Isa::Avx512Vnni, true) => Some(avx512::dot_32_q8_1),
            (Isa::Avx512Vnni, false) => Some(avx512::dot_32_q8_0),
            (Isa::Avx2, true) => Some(avx2::dot_32_q8_1),
            (Isa::Avx2, false) => Some(avx2::dot_32_q8_0),
            (Isa::Scalar, _) => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, q8_1);
        None
    }
}

/// A kernel dotting one weight row with four activation rows, for `ty` at `isa`, if there is one.
/// It always comes from the same level as `vec_dot_fn(ty, isa)`, so a token's result does not
/// depend on whether it was computed alone or in a batch.
pub(crate) fn vec_dot4_fn(ty: GgmlType, isa: Isa) -> Option<VecDot4Fn> {
    #[cfg(target_arch = "x86_64")]
    {
        match isa {
            Isa::Avx512Vnni if avx512::kernel(ty).is_some() => avx512::kernel4(ty),
            Isa::Avx512Vnni | Isa::Avx2 => avx2::kernel4(ty),
            Isa::Scalar => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ty, isa);
        None
    }
}

/// A SIMD activation quantizer for `ty` at `isa`, byte-identical to `quantize::quantize_row`.
pub(crate) fn quantize_row_fn(ty: GgmlType, isa: Isa) -> Option<QuantizeRowFn> {
    #[cfg(target_arch = "x86_64")]
    {
        // 256-bit code is enough here: quantization is a small share of a matmul.
        match isa {
            Isa::Avx512Vnni | Isa::Avx2 => avx2::quantizer(ty),
            Isa::Scalar => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ty, isa);
        None
    }
}

pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match Isa::best() {
        Isa::Avx512Vnni => return avx512::dot_f32(a, b),
        Isa::Avx2 => return avx2::dot_f32(a, b),
        Isa::Scalar => {}
    }
    crate::ops::dot_f32(a, b)
}

/// `ops::scores_t` with the best kernel at `isa` (bit-identical at every level).
#[allow(clippy::too_many_arguments)]
pub(crate) fn scores_t(
    isa: Isa,
    q: &[f32],
    dim: usize,
    kt: &[f32],
    kt_stride: usize,
    len: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512Vnni => {
            return attn::avx512::scores_t(q, dim, kt, kt_stride, len, out, out_stride)
        }
        Isa::Avx2 => return attn::avx2::scores_t(q, dim, kt, kt_stride, len, out, out_stride),
        Isa::Scalar => {}
    }
    crate::ops::scores_t(q, dim, kt, kt_stride, len, out, out_stride)
}

/// `ops::weighted_rows` with the best kernel at `isa` (bit-identical at every level).
#[allow(clippy::too_many_arguments)]
pub(crate) fn weighted_rows(
    isa: Isa,
    out: &mut [f32],
    dv: usize,
    w: &[f32],
    w_stride: usize,
    v: &[f32],
    v_stride: usize,
    len: usize,
) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512Vnni => {
            return attn::avx512::weighted_rows(out, dv, w, w_stride, v, v_stride, len)
        }
        Isa::Avx2 => return attn::avx2::weighted_rows(out, dv, w, w_stride, v, v_stride, len),
        Isa::Scalar => {}
    }
    crate::ops::weighted_rows(out, dv, w, w_stride, v, v_stride, len)
}

pub(crate) fn axpy_f32(y: &mut [f32], alpha: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    match Isa::best() {
        Isa::Avx512Vnni => return avx512::axpy_f32(y, alpha, x),
        Isa::Avx2 => return avx2::axpy_f32(y, alpha, x),
        Isa::Scalar => {}
    }
    crate::ops::axpy(y, alpha, x)
}

/// The output of a packed matmul, written by several threads at disjoint indices.
pub(crate) struct OutPtr(pub *mut f32);

// SAFETY: only a pointer; `packed::matmul_packed` makes every index written by at most one thread
// and keeps the buffer alive until all threads are done.
unsafe impl Sync for OutPtr {}

/// Tokens per GEMM tile of the AVX-512 kernels.
const TILE: usize = 8;

/// Tokens per GEMM tile of the AVX2 kernels (16 registers: fewer accumulators fit).
const TILE256: usize = 4;

/// Computes rows `16 g..` (at most 16, fewer in a last partial group) of `y` for tokens `tokens`
/// with the packed kernels: `y[t * rows + r] = W[r] · a[t]`.
///
/// # Safety
/// `out` points to the `p.rows() * a.n_tokens` values of `y`, no other thread accesses those
/// rows of those tokens meanwhile, and `tokens.end <= a.n_tokens`. `group` is group `g` of `p`.
/// The CPU has `Isa::best()` (`packed::packs` says it is at least `Isa::Avx2` before any packed
/// layout is built): `gemm512` runs at `Isa::Avx512Vnni`, `gemm256` below.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn gemm_group(
    p: &crate::packed::Packed,
    g: usize,
    group: &[u8],
    a: &crate::packed::Acts<'_>,
    tokens: std::ops::Range<usize>,
    out: &OutPtr,
) {
    use gemm512::Kind;
    assert!(Isa::best() >= Isa::Avx2, "packed GEMM without AVX2");
    let kind = match p.ty() {
        GgmlType::Q8_0 => Kind::Q32(gemm512::Q8_0),
        GgmlType::Q4_0 => Kind::Q32(gemm512::Q4_0),
        GgmlType::Q5_0 => Kind::Q32(gemm512::Q5_0),
        GgmlType::Q4_K => Kind::Q4K,
        GgmlType::Q6_K => Kind::Q6K,
        t => unreachable!("{t} has no packed layout"),
    };
    let (nb, stride, rows) = (p.nb(), p.stride(), p.rows());
    assert!(group.len() == nb * stride && tokens.end <= a.n_tokens && 16 * g < rows);
    assert!(
        a.q.len() >= a.n_tokens * a.row_bytes && a.aux.data.len() >= a.n_tokens * a.aux.per_token
    );
    let live = (rows - 16 * g).min(16);
    let mask = if live == 16 {
        !0u16
    } else {
        (1u16 << live) - 1
    };
    let w = group.as_ptr();
    let act = |t: usize| a.q[t * a.row_bytes..].as_ptr();
    let aux = |t: usize| a.aux.data[t * a.aux.per_token..].as_ptr();
    // SAFETY: token t's output row starts at t * rows < rows * n_tokens; the caller owns lanes
    // 16g..16g + live of it, which `mask` selects.
    let dst = |t: usize| unsafe { out.0.add(t * rows + 16 * g) };
    let mut t = tokens.start;
    let avx512 = Isa::best() == Isa::Avx512Vnni;
    macro_rules! run {
        ($m:ident, $n:expr) => {
            while tokens.end - t >= $n {
                let ts: [usize; $n] = std::array::from_fn(|i| t + i);
                // SAFETY: `group` holds nb records; each token row holds nb blocks of the
                // activation type and its aux values (the asserts above and `matmul_packed`'s);
                // the outputs are as the caller guarantees; the CPU has the features of `$m`
                // (`Isa::best()`, checked above and by `packs`).
                unsafe {
                    $m::tile::<$n>(
                        kind,
                        nb,
                        stride,
                        w,
                        ts.map(act),
                        ts.map(aux),
                        ts.map(dst),
                        mask,
                    )
                };
                t += $n;
            }
        };
    }
    if avx512 {
        run!(gemm512, TILE);
        run!(gemm512, 4);
        run!(gemm512, 1);
    } else {
        run!(gemm256, TILE256);
        run!(gemm256, 1);
    }
}
