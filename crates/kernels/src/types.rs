//! Tensor element types, numbered exactly as ggml's `enum ggml_type` so that GGUF files map onto them directly.

use std::fmt;

/// Number of values in a k-quant super-block.
pub const QK_K: usize = 256;
/// Number of values in a classic (Q4_0, Q5_0, Q8_0, ...) block.
pub const QK: usize = 32;

/// A ggml tensor type. The discriminants are ggml's on-disk ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
    Q2_0 = 42,
}

/// Calls `$m!(F32, F16, ...)` with every variant of [`GgmlType`]: the one list of the types this
/// build computes, from which `GgmlType::ALL` and the dispatch tables that need a function per
/// type (`dot::scalar_fn`, `dot::vec_dot_fn` for decoded types) are made.
macro_rules! with_all_types {
    ($m:ident) => {
        $m!(
            F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, BF16,
            IQ4_NL, IQ4_XS, IQ3_XXS, IQ3_S, TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0, Q2_0, IQ2_XXS,
            IQ2_XS, IQ2_S, IQ1_S, IQ1_M
        )
    };
}
pub(crate) use with_all_types;

/// `[GgmlType::A, GgmlType::B, ...]`.
macro_rules! type_array {
    ($($t:ident),*) => {
        [$(GgmlType::$t),*]
    };
}

/// What ggml says about a type: its name, block shape and activation pairing.
struct Info {
    name: &'static str,
    /// Values per block (1 for plain float types).
    block_len: usize,
    /// Bytes per block (`ggml-common.h`'s sizes; each block struct asserts its own).
    block_bytes: usize,
    /// ggml's `vec_dot_type` on x86 (`type_traits_cpu` in ggml-cpu.c).
    vec_dot_type: GgmlType,
}

impl GgmlType {
    /// Every type this build can load and compute with (every enum variant).
    pub const ALL: [GgmlType; 30] = with_all_types!(type_array);

    /// Maps a ggml type id to a supported type; `None` for ids this build cannot compute with.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Self::ALL.iter().copied().find(|t| *t as u32 == id)
    }

    /// ggml's name for any type id it defines (supported here or not), for error messages.
    pub fn name_of_id(id: u32) -> Option<&'static str> {
        if let Some(t) = Self::from_id(id) {
            return Some(t.name());
        }
        Some(match id {
            24 => "I8",
            25 => "I16",
            26 => "I32",
            27 => "I64",
            28 => "F64",
            _ => return None,
        })
    }

    fn info(self) -> Info {
        use GgmlType::*;
        let (name, block_len, block_bytes, vec_dot_type) = match self {
            F32 => ("F32", 1, 4, F32),
            F16 => ("F16", 1, 2, F16),
            BF16 => ("BF16", 1, 2, BF16),
            Q4_0 => ("Q4_0", QK, 18, Q8_0),
            Q4_1 => ("Q4_1", QK, 20, Q8_1),
            Q5_0 => ("Q5_0", QK, 22, Q8_0),
            Q5_1 => ("Q5_1", QK, 24, Q8_1),
            Q8_0 => ("Q8_0", QK, 34, Q8_0),
            Q8_1 => ("Q8_1", QK, 36, Q8_1),
            Q2_K => ("Q2_K", QK_K, 84, Q8_K),
            Q3_K => ("Q3_K", QK_K, 110, Q8_K),
            Q4_K => ("Q4_K", QK_K, 144, Q8_K),
            Q5_K => ("Q5_K", QK_K, 176, Q8_K),
            Q6_K => ("Q6_K", QK_K, 210, Q8_K),
            Q8_K => ("Q8_K", QK_K, 292, Q8_K),
            IQ2_XXS => ("IQ2_XXS", QK_K, 66, Q8_K),
            IQ2_XS => ("IQ2_XS", QK_K, 74, Q8_K),
            IQ2_S => ("IQ2_S", QK_K, 82, Q8_K),
            IQ3_XXS => ("IQ3_XXS", QK_K, 98, Q8_K),
            IQ3_S => ("IQ3_S", QK_K, 110, Q8_K),
            IQ1_S => ("IQ1_S", QK_K, 50, Q8_K),
            IQ1_M => ("IQ1_M", QK_K, 56, Q8_K),
            IQ4_NL => ("IQ4_NL", QK, 18, Q8_0),
            IQ4_XS => ("IQ4_XS", QK_K, 136, Q8_K),
            TQ1_0 => ("TQ1_0", QK_K, 54, Q8_K),
            TQ2_0 => ("TQ2_0", QK_K, 66, Q8_K),
            MXFP4 => ("MXFP4", QK, 17, Q8_0),
            NVFP4 => ("NVFP4", 64, 36, Q8_0),
            Q1_0 => ("Q1_0", 128, 18, Q8_0),
            Q2_0 => ("Q2_0", 64, 18, Q8_0),
        };
        Info {
            name,
            block_len,
            block_bytes,
            vec_dot_type,
        }
    }

    /// ggml's name for the type, as llama.cpp prints it.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Values per block (1 for plain float types).
    pub fn block_len(self) -> usize {
        self.info().block_len
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.info().block_bytes
    }

    /// Bytes of one row of `n` values, or `None` when `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_len()) {
            return None;
        }
        (n / self.block_len()).checked_mul(self.block_bytes())
    }

    /// Whether the type stores quantized blocks (as opposed to plain floats).
    pub fn is_quantized(self) -> bool {
        !matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }

    /// The type ggml quantizes activations into before a dot product with weights of this type
    /// (ggml's `vec_dot_type` on x86): Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL/MXFP4/NVFP4/Q1_0/Q2_0,
    /// Q8_1 for Q4_1/Q5_1, Q8_K for k-, i- and t-quants, and the weight type itself for F32/F16/BF16.
    pub fn vec_dot_type(self) -> GgmlType {
        self.info().vec_dot_type
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
