//! `dequantize_row` on hand-built blocks with hand-computed values, and on random blocks against a
//! value-by-value decoder written from the block layouts (ggml-common.h) rather than from ggml's
//! loops. Every product in these formats is exact in f32 (an 11-bit f16 scale times small
//! integers), so the two must agree bit for bit.

// Loops index values by their position in the block layout, as the formats define them.
#![allow(clippy::needless_range_loop)]

use frugal_kernels::dequant::dequantize_row;
use frugal_kernels::GgmlType;
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn h(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

fn deq(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let n = bytes.len() / ty.block_bytes() * ty.block_len();
    let mut out = vec![f32::NAN; n];
    dequantize_row(ty, bytes, &mut out);
    out
}

#[test]
fn q4_0_by_hand() {
    // d = 0.5; byte j holds value j (low nibble = j) and value j + 16 (high nibble = 15 - j).
    let mut b = h(0.5).to_vec();
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let y = deq(GgmlType::Q4_0, &b);
    assert_eq!(y[0], -4.0); // (0 - 8) * 0.5
    assert_eq!(y[8], 0.0);
    assert_eq!(y[15], 3.5);
    assert_eq!(y[16], 3.5); // (15 - 8) * 0.5
    assert_eq!(y[31], -4.0);
    for j in 0..16 {
        assert_eq!(y[j], (j as f32 - 8.0) * 0.5);
        assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5);
    }
}

#[test]
fn q4_1_by_hand() {
    // x = d q + m with d = 0.25, m = -1.
    let mut b = [h(0.25), h(-1.0)].concat();
    b.extend((0..16u8).map(|j| j | (j << 4)));
    let y = deq(GgmlType::Q4_1, &b);
    assert_eq!(y[0], -1.0);
    assert_eq!(y[15], 2.75);
    assert_eq!(y[16], -1.0);
    assert_eq!(y[31], 2.75);
}

#[test]
fn q5_0_by_hand() {
    // d = 1, all nibbles 0xF; qh has bits 0 and 31 set: values 0 and 31 get bit 4.
    let mut b = h(1.0).to_vec();
    b.extend_from_slice(&(1u32 | (1 << 31)).to_le_bytes());
    b.extend([0xFFu8; 16]);
    let y = deq(GgmlType::Q5_0, &b);
    assert_eq!(y[0], 15.0); // 31 - 16
    assert_eq!(y[1], -1.0); // 15 - 16
    assert_eq!(y[16], -1.0);
    assert_eq!(y[31], 15.0);
}

#[test]
fn q5_1_by_hand() {
    // d = 0.5, m = 1; low nibbles 1, high nibbles 2; qh bit 16 gives value 16 its fifth bit.
    let mut b = [h(0.5), h(1.0)].concat();
    b.extend_from_slice(&(1u32 << 16).to_le_bytes());
    b.extend([0x21u8; 16]);
    let y = deq(GgmlType::Q5_1, &b);
    assert_eq!(y[0], 1.5); // 1 * 0.5 + 1
    assert_eq!(y[16], 10.0); // (2 + 16) * 0.5 + 1
    assert_eq!(y[17], 2.0); // 2 * 0.5 + 1
}

#[test]
fn q8_0_q8_1_q8_k_by_hand() {
    let qs: Vec<u8> = (0..32).map(|i| (i as i8 - 16) as u8).collect();
    let y = deq(GgmlType::Q8_0, &[&h(0.5)[..], &qs].concat());
    assert_eq!((y[0], y[16], y[31]), (-8.0, 0.0, 7.5));
    // Q8_1's sum field does not enter the values.
    let y = deq(GgmlType::Q8_1, &[&h(0.5)[..], &h(123.0), &qs].concat());
    assert_eq!((y[0], y[16], y[31]), (-8.0, 0.0, 7.5));
    // Q8_K: f32 d, 256 quants, 16 i16 bsums (ignored).
    let mut b = 0.25f32.to_le_bytes().to_vec();
    b.extend((0..256).map(|i| (i as u8).wrapping_sub(128)));
    b.extend([0u8; 32]);
    let y = deq(GgmlType::Q8_K, &b);
    assert_eq!((y[0], y[128], y[255]), (-32.0, 0.0, 31.75));
}

#[test]
fn q2_k_by_hand() {
    // Sub-block s: scale s % 16, min 1 (d = 1, dmin = 0.5); every 2-bit quant is 3.
    let mut b: Vec<u8> = (0..16u8).map(|s| s | (1 << 4)).collect();
    b.extend([0xFFu8; 64]);
    b.extend(h(1.0));
    b.extend(h(0.5));
    let y = deq(GgmlType::Q2_K, &b);
    for i in 0..256 {
        assert_eq!(y[i], (i / 16) as f32 * 3.0 - 0.5, "value {i}");
    }
}

#[test]
fn q3_k_by_hand() {
    // All 6-bit scales 33 (signed 1), d = 2; low bits 1, high bits set for the first 32 values only:
    // those are 1 (high bit set means no -4), the rest 1 - 4 = -3.
    let mut b = vec![0u8; 32]; // hmask
    b.iter_mut().for_each(|m| *m = 1); // bit 0: values 0..32
    b.extend([0x55u8; 64]); // every 2-bit field = 1
                            // scale 33 = 0b10_0001: low nibble 1 in bytes 0..8 (both nibbles), high bits 2 in bytes 8..12.
    b.extend([0x11u8; 8]);
    b.extend([0xAAu8; 4]);
    b.extend(h(2.0));
    let y = deq(GgmlType::Q3_K, &b);
    for i in 0..256 {
        assert_eq!(y[i], if i < 32 { 2.0 } else { -6.0 }, "value {i}");
    }
}

#[test]
fn q4_k_by_hand() {
    // d = 1, dmin = 1; sub-block s has scale s + 1 and min s (sub-blocks 4..8 use the split
    // encoding); every nibble 2.
    let mut scales = [0u8; 12];
    for s in 0..8u8 {
        let (sc, m) = (s + 1, s);
        if s < 4 {
            scales[s as usize] = sc;
            scales[s as usize + 4] = m;
        } else {
            scales[s as usize + 4] = (sc & 0xF) | ((m & 0xF) << 4);
            scales[s as usize - 4] |= (sc >> 4) << 6;
            scales[s as usize] |= (m >> 4) << 6;
        }
    }
    let mut b = [h(1.0), h(1.0)].concat();
    b.extend(scales);
    b.extend([0x22u8; 128]);
    let y = deq(GgmlType::Q4_K, &b);
    for i in 0..256 {
        let s = (i / 32) as f32;
        assert_eq!(y[i], (s + 1.0) * 2.0 - s, "value {i}");
    }
    // Large 6-bit values exercise the top bits: scale 63, min 40 in sub-block 7.
    let mut b2 = b.clone();
    let sc = &mut b2[4..16];
    sc[11] = (63 & 0xF) | ((40 & 0xF) << 4);
    sc[3] = (sc[3] & 63) | ((63 >> 4) << 6);
    sc[7] = (sc[7] & 63) | ((40 >> 4) << 6);
    let y = deq(GgmlType::Q4_K, &b2);
    assert_eq!(y[255], 63.0 * 2.0 - 40.0);
}

#[test]
fn q5_k_by_hand() {
    // d = 0.5, dmin = 0; all scales 2; nibbles 1; the fifth bit set for value 0 of each 32-run.
    let mut b = [h(0.5), h(0.0)].concat();
    b.extend([2u8, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2]);
    let mut qh = [0u8; 32];
    qh[0] = 0xFF;
    b.extend(qh);
    b.extend([0x11u8; 128]);
    let y = deq(GgmlType::Q5_K, &b);
    for i in 0..256 {
        let q = if i % 32 == 0 { 17.0 } else { 1.0 };
        assert_eq!(y[i], 0.5 * 2.0 * q, "value {i}");
    }
}

#[test]
fn q6_k_by_hand() {
    // d = 0.25; scale of sub-block s = s - 8 (signed); all low nibbles 5, all high bits 2:
    // q = 5 + 32 - 32 = 5.
    let mut b = vec![0x55u8; 128];
    b.extend([0xAAu8; 64]);
    b.extend((0..16).map(|s| (s as i8 - 8) as u8));
    b.extend(h(0.25));
    let y = deq(GgmlType::Q6_K, &b);
    for i in 0..256 {
        assert_eq!(y[i], 0.25 * ((i / 16) as f32 - 8.0) * 5.0, "value {i}");
    }
}

#[test]
fn float_types_by_hand() {
    let v = [1.5f32, -0.0, 65504.0, f32::INFINITY];
    let f32b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(deq(GgmlType::F32, &f32b), v);
    let f16b: Vec<u8> = v.iter().flat_map(|&x| h(x)).collect();
    assert_eq!(deq(GgmlType::F16, &f16b), v);
    let bf: Vec<u8> = [0x3fc0u16, 0x8000, 0x4780, 0x7f80]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(
        deq(GgmlType::BF16, &bf),
        [1.5, -0.0, 65536.0, f32::INFINITY]
    );
}

// ------------------------------------------------------------------------------------------------
// Value-by-value decoders, from the layout descriptions.
// ------------------------------------------------------------------------------------------------

fn f16_at(b: &[u8], o: usize) -> f32 {
    f16::from_le_bytes([b[o], b[o + 1]]).to_f32()
}

/// Classic blocks: value `i` < 16 in the low nibble of byte `i`, else the high nibble of `i - 16`.
fn nib(qs: &[u8], i: usize) -> u32 {
    if i < 16 {
        (qs[i] & 0xF) as u32
    } else {
        (qs[i - 16] >> 4) as u32
    }
}

/// Bit `k` of a little-endian bit array.
fn bit(bytes: &[u8], k: usize) -> u32 {
    (bytes[k / 8] >> (k % 8)) as u32 & 1
}

/// K-quants: the 2-bit field of value `i` in a 64-byte array (Q2_K/Q3_K): byte
/// (i/128)*32 + i%32, shift 2 * ((i % 128) / 32).
fn two_bits(qs: &[u8], i: usize) -> u8 {
    (qs[(i / 128) * 32 + i % 32] >> (2 * ((i % 128) / 32))) & 3
}

/// Q4_K/Q5_K nibbles: byte (i/64)*32 + i%32, low nibble for the first 32 of each 64.
fn k_nib(qs: &[u8], i: usize) -> u8 {
    let byte = qs[(i / 64) * 32 + i % 32];
    if i % 64 < 32 {
        byte & 0xF
    } else {
        byte >> 4
    }
}

/// Q4_K/Q5_K scales: 6-bit scale/min of sub-block `s`.
fn k_scale_min(sc: &[u8], s: usize) -> (u32, u32) {
    if s < 4 {
        ((sc[s] & 63) as u32, (sc[s + 4] & 63) as u32)
    } else {
        let lo_s = (sc[s + 4] & 0xF) as u32;
        let lo_m = (sc[s + 4] >> 4) as u32;
        (
            lo_s | ((sc[s - 4] >> 6) as u32) << 4,
            lo_m | ((sc[s] >> 6) as u32) << 4,
        )
    }
}

/// Value `i` of one block of `ty`.
fn decode(ty: GgmlType, b: &[u8], i: usize) -> f32 {
    match ty {
        GgmlType::Q4_0 => (nib(&b[2..], i) as f32 - 8.0) * f16_at(b, 0),
        GgmlType::Q4_1 => nib(&b[4..], i) as f32 * f16_at(b, 0) + f16_at(b, 2),
        GgmlType::Q5_0 => {
            let q = nib(&b[6..], i) | bit(&b[2..6], i) << 4;
            (q as f32 - 16.0) * f16_at(b, 0)
        }
        GgmlType::Q5_1 => {
            let q = nib(&b[8..], i) | bit(&b[4..8], i) << 4;
            q as f32 * f16_at(b, 0) + f16_at(b, 2)
        }
        GgmlType::Q8_0 => b[2 + i] as i8 as f32 * f16_at(b, 0),
        GgmlType::Q8_1 => b[4 + i] as i8 as f32 * f16_at(b, 0),
        GgmlType::Q8_K => f32::from_le_bytes(b[0..4].try_into().unwrap()) * b[4 + i] as i8 as f32,
        GgmlType::Q2_K => {
            let sc = b[i / 16];
            let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
            let q = two_bits(&b[16..80], i);
            d * (sc & 0xF) as f32 * q as f32 - dmin * (sc >> 4) as f32
        }
        GgmlType::Q3_K => {
            let (hmask, qs, sc, d) = (&b[0..32], &b[32..96], &b[96..108], f16_at(b, 108));
            let s = i / 16;
            let lo = if s < 8 { sc[s] & 0xF } else { sc[s - 8] >> 4 };
            let hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
            let scale = (lo | hi << 4) as i32 - 32;
            let high_set = (hmask[i % 32] >> (i / 32)) & 1 == 1;
            let q = two_bits(qs, i) as i32 - if high_set { 0 } else { 4 };
            d * scale as f32 * q as f32
        }
        GgmlType::Q4_K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let (sc, m) = k_scale_min(&b[4..16], i / 32);
            d * sc as f32 * k_nib(&b[16..144], i) as f32 - dmin * m as f32
        }
        GgmlType::Q5_K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let (sc, m) = k_scale_min(&b[4..16], i / 32);
            let high = (b[16 + i % 32] >> (i / 32)) & 1;
            let q = k_nib(&b[48..176], i) | high << 4;
            d * sc as f32 * q as f32 - dmin * m as f32
        }
        GgmlType::Q6_K => {
            let (ql, qh, scales, d) = (&b[0..128], &b[128..192], &b[192..208], f16_at(b, 208));
            let (half, quarter, l) = (i / 128, (i % 128) / 32, i % 32);
            let byte = ql[64 * half + 32 * (quarter % 2) + l];
            let lo = if quarter < 2 { byte & 0xF } else { byte >> 4 };
            let hi = (qh[32 * half + l] >> (2 * quarter)) & 3;
            let q = (lo | hi << 4) as i32 - 32;
            d * scales[i / 16] as i8 as f32 * q as f32
        }
        _ => unreachable!(),
    }
}

/// Offsets of the f16 scales of a block, to keep random blocks finite.
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

#[test]
fn random_blocks_match_the_layout_decoder() {
    let mut rng = StdRng::seed_from_u64(42);
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q8_K,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];
    for ty in types {
        for _ in 0..50 {
            let nb = rng.gen_range(1..4);
            let mut bytes: Vec<u8> = (0..nb * ty.block_bytes()).map(|_| rng.gen()).collect();
            for block in bytes.chunks_exact_mut(ty.block_bytes()) {
                for &o in scale_offsets(ty) {
                    let d = rng.gen_range(-2.0f32..2.0);
                    block[o..o + 2].copy_from_slice(&h(d));
                }
                if ty == GgmlType::Q8_K {
                    block[..4].copy_from_slice(&rng.gen_range(-1.0f32..1.0).to_le_bytes());
                }
            }
            let y = deq(ty, &bytes);
            for (bi, block) in bytes.chunks_exact(ty.block_bytes()).enumerate() {
                for i in 0..ty.block_len() {
                    let want = decode(ty, block, i);
                    let got = y[bi * ty.block_len() + i];
                    assert_eq!(got.to_bits(), want.to_bits(), "{ty} block {bi} value {i}");
                }
            }
        }
    }
}

#[test]
fn misaligned_sources_dequantize_the_same() {
    let mut rng = StdRng::seed_from_u64(5);
    for ty in GgmlType::ALL {
        let n = 2 * ty.block_len().max(32);
        let len = ty.row_bytes(n).unwrap();
        let mut buf: Vec<u8> = (0..len + 1).map(|_| rng.gen()).collect();
        for block in buf[1..].chunks_exact_mut(ty.block_bytes()) {
            for &o in scale_offsets(ty) {
                block[o..o + 2].copy_from_slice(&h(0.5));
            }
        }
        let aligned = buf[1..].to_vec();
        let (mut a, mut b) = (vec![0.0f32; n], vec![0.0f32; n]);
        dequantize_row(ty, &buf[1..], &mut a);
        dequantize_row(ty, &aligned, &mut b);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "{ty}");
    }
}

#[test]
#[should_panic(expected = "source size")]
fn wrong_source_length_is_a_programmer_error() {
    let mut out = [0.0f32; 32];
    dequantize_row(GgmlType::Q4_0, &[0u8; 17], &mut out);
}
