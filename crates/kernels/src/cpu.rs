//! Run-time choice of instruction set, so one binary runs on any x86_64 without SIGILL.

use std::sync::OnceLock;

/// The instruction-set level a kernel is written for, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust; the reference every other level is tested against.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW/VL/DQ with VNNI (`vpdpbusd`).
    Avx512Vnni,
}

impl Isa {
    /// Every level this CPU can execute, `Scalar` first.
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                out.push(Isa::Avx2);
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                {
                    out.push(Isa::Avx512Vnni);
                }
            }
        }
        out
    }

    /// The best level available, or the one named by `FRUGAL_ISA` (`scalar`, `avx2`, `avx512`;
    /// `amx` names the AVX-512 level with the tiles, see [`amx`]) when that is available; decided
    /// once per process.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let avail = Isa::available();
            let wanted = std::env::var("FRUGAL_ISA")
                .ok()
                .and_then(|v| Isa::parse(&v));
            match wanted {
                Some(w) if avail.contains(&w) => w,
                _ => *avail.last().expect("scalar is always available"),
            }
        })
    }

    /// The best level this CPU has, ignoring `FRUGAL_ISA`.
    pub fn best_available() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| *Isa::available().last().expect("scalar is always available"))
    }

    /// Parses `scalar`, `avx2`, `avx512` or `amx` (AMX runs beside the AVX-512 level).
    pub fn parse(s: &str) -> Option<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" | "avx512vnni" | "amx" => Some(Isa::Avx512Vnni),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }
}

/// Whether the GEMM kernels use the AMX tile unit (int8 tiles): the CPU has it and this process
/// may use it ([`amx_available`]), the vector level is AVX-512 (which the tiles' epilogues run
/// on), and `FRUGAL_ISA` is unset or `amx`. Decided once per process.
pub fn amx() -> bool {
    static AMX: OnceLock<bool> = OnceLock::new();
    *AMX.get_or_init(|| {
        let wanted =
            std::env::var("FRUGAL_ISA").map_or(true, |v| v.trim().eq_ignore_ascii_case("amx"));
        wanted && Isa::best() == Isa::Avx512Vnni && amx_available()
    })
}

/// Whether BF16 weights use the AMX bf16 tiles: [`amx`] and the CPU has AMX-BF16.
pub fn amx_bf16() -> bool {
    static BF16: OnceLock<bool> = OnceLock::new();
    *BF16.get_or_init(|| amx() && crate::amx::has_bf16())
}

/// The kernel level in words: `amx` where [`amx`] holds, else [`Isa::best`]'s name.
pub fn level_name() -> &'static str {
    if amx() {
        "amx"
    } else {
        Isa::best().name()
    }
}

/// Whether this process can execute AMX int8 tile instructions: CPUID reports AMX-TILE and
/// AMX-INT8, the OS enabled the tile state in XCR0 (bits 17 and 18), and the kernel granted this
/// process the tile data (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, Linux 5.16 and
/// later; the grant covers every thread of the process). Any refusal means no AMX (never an
/// illegal instruction). Asked once per process.
pub fn amx_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(crate::amx::enable)
}
