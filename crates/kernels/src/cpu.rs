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

    /// The best level available, or the one named by `FRUGAL_ISA` (`scalar`, `avx2`, `avx512`)
    /// when that is available; decided once per process.
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

    /// Parses `scalar`, `avx2` or `avx512`.
    pub fn parse(s: &str) -> Option<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" | "avx512vnni" => Some(Isa::Avx512Vnni),
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
