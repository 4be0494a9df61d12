//! BF16 weights times BF16 activations on the AMX tile unit (`tdpbf16ps`): for each group of 16
//! weight rows, the rows are rearranged once into B tiles (row `j` of tile `c` holds, for each of
//! the 16 weight rows, its values `32c + 2j` and `32c + 2j + 1`), then each 16 tokens' activation
//! rows are A tiles read in place, and the products accumulate in f32 across the whole row, four
//! sums (32-value chunks `c % 4`) added at the end. The products of two bf16 values are exact in
//! f32; the sums are f32 in another order than the scalar reference's f64, so the results agree
//! with it within the SIMD kernels' tolerance, not bit for bit (as the AVX-512 BF16 row kernels).

use crate::amx::TileConfig;
use std::arch::asm;
use std::ops::Range;

/// Every tile 16 rows of 64 bytes: sums in tmm0–3, activations in tmm4–5, weights in tmm6–7.
const CONFIG: TileConfig = TileConfig::new()
    .tile(0, 16, 64)
    .tile(1, 16, 64)
    .tile(2, 16, 64)
    .tile(3, 16, 64)
    .tile(4, 16, 64)
    .tile(5, 16, 64)
    .tile(6, 16, 64)
    .tile(7, 16, 64);

/// Chunk `$c`'s product: the activations (16 rows `$s` bytes apart from `$a`) into tile `$t`, the
/// weights (16 rows of 64 bytes at `$b`) into tile `$w`, their products added to tile `$acc`.
macro_rules! product {
    ($acc:literal, $t:literal, $w:literal, $a:expr, $s:expr, $b:expr) => {
        asm!(
            concat!("tileloadd tmm", $t, ", [{a} + {s}*1]"),
            concat!("tileloadd tmm", $w, ", [{b} + {sixty_four}*1]"),
            concat!("tdpbf16ps tmm", $acc, ", tmm", $t, ", tmm", $w),
            a = in(reg) $a,
            s = in(reg) $s,
            b = in(reg) $b,
            sixty_four = in(reg) 64usize,
            options(nostack, readonly, preserves_flags)
        )
    };
}

/// `write(t, r, W[r] · a[t])` for rows `rows` and the first `16 tiles` tokens: `row(r)` gives
/// weight row `r` (`cols` bf16 values, `cols` a multiple of 32), `act` the tokens' bf16 rows
/// (`row_bytes` apart).
///
/// # Safety
/// `cpu::amx_bf16()` holds; `act` holds `16 tiles` rows of `row_bytes >= 2 cols` bytes.
pub(crate) unsafe fn gemm_bf16<'a>(
    cols: usize,
    row: &dyn Fn(usize) -> &'a [u8],
    rows: Range<usize>,
    (act, row_bytes, tiles): (&[u8], usize, usize),
    write: &dyn Fn(usize, usize, f32),
) {
    assert!(
        cols.is_multiple_of(32) && row_bytes >= 2 * cols && act.len() >= 16 * tiles * row_bytes
    );
    let chunks = cols / 32;
    let mut panel = vec![0u8; chunks * 1024];
    #[repr(C, align(64))]
    struct Sums([f32; 1024]);
    let mut sums = Sums([0.0; 1024]);
    // SAFETY: AMX may run (the caller's promise); the configuration is valid.
    unsafe { CONFIG.load() };
    for g0 in rows.clone().step_by(16) {
        let live = (rows.end - g0).min(16);
        for n in 0..16 {
            let w = if n < live { row(g0 + n) } else { &[][..] };
            for (c, tile) in panel.chunks_exact_mut(1024).enumerate() {
                for j in 0..16 {
                    let at = j * 64 + n * 4;
                    let src = w.get(64 * c + 4 * j..64 * c + 4 * j + 4).unwrap_or(&[0; 4]);
                    tile[at..at + 4].copy_from_slice(src);
                }
            }
        }
        for tile in 0..tiles {
            let a = act[16 * tile * row_bytes..].as_ptr();
            // SAFETY: each A tile reads 16 rows of 64 bytes, `row_bytes` apart, inside the tile's
            // 16 activation rows (64 c + 64 <= 2 cols <= row_bytes); each B tile 1 KB of the
            // panel; the stores write 4 KB of `sums`.
            unsafe {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3"
                );
                for c in 0..chunks {
                    let (a, b) = (a.add(64 * c), panel.as_ptr().add(1024 * c));
                    match c % 4 {
                        0 => product!("0", "4", "6", a, row_bytes, b),
                        1 => product!("1", "5", "7", a, row_bytes, b),
                        2 => product!("2", "4", "6", a, row_bytes, b),
                        _ => product!("3", "5", "7", a, row_bytes, b),
                    }
                }
                let s = sums.0.as_mut_ptr();
                asm!(
                    "tilestored [{p} + {sixty_four}*1], tmm0",
                    "tilestored [{p1} + {sixty_four}*1], tmm1",
                    "tilestored [{p2} + {sixty_four}*1], tmm2",
                    "tilestored [{p3} + {sixty_four}*1], tmm3",
                    p = in(reg) s,
                    p1 = in(reg) s.add(256),
                    p2 = in(reg) s.add(512),
                    p3 = in(reg) s.add(768),
                    sixty_four = in(reg) 64usize,
                    options(nostack, preserves_flags)
                );
            }
            let s = &sums.0;
            for t in 0..16 {
                for n in 0..live {
                    let i = 16 * t + n;
                    let v = (s[i] + s[256 + i]) + (s[512 + i] + s[768 + i]);
                    write(16 * tile + t, g0 + n, v);
                }
            }
        }
    }
    // SAFETY: AMX may run; returns the tiles to their unused state.
    unsafe { crate::amx::release() };
}
