//! The AMX tile unit: asking the OS for it, configuring a thread's tiles, and the few tile
//! instructions the GEMM uses (`packed::gemm512::Dots`).
//!
//! Rust's AMX intrinsics are unstable, so the instructions are written as inline assembly. The
//! compiler never allocates tile registers itself, so tile state lives undisturbed between `asm!`
//! blocks of one thread; the OS saves it across context switches once the process holds the
//! permission (`enable`).

#[cfg(target_arch = "x86_64")]
use std::arch::asm;

/// `arch_prctl` codes and the XSAVE feature number of the tile data (Linux `asm/prctl.h`,
/// `asm/fpu/types.h`).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const ARCH_REQ_XCOMP_PERM: i32 = 0x1023;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const XFEATURE_XTILEDATA: i32 = 18;

/// Whether the CPU has AMX-BF16 (CPUID leaf 7 EDX bit 22), on top of what [`enable`] checks.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_bf16() -> bool {
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU; leaf 7 is reported as 0 where unsupported.
    let leaf7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    leaf7.edx & (1 << 22) != 0
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn has_bf16() -> bool {
    false
}

/// Whether this process may execute AMX int8 instructions; asks the kernel for the tile data on
/// the way (see `cpu::amx_available`, which calls this once).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) fn enable() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // CPUID leaf 7, sub-leaf 0, EDX: bit 24 AMX-TILE, bit 25 AMX-INT8. Leaf 1 ECX bit 27: OSXSAVE
    // (XGETBV may be executed).
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU; leaf 7 is reported as 0 where unsupported.
    let (leaf1, leaf7) = unsafe { (__cpuid_count(1, 0), __cpuid_count(7, 0)) };
    let has_tiles = leaf7.edx & (1 << 24) != 0 && leaf7.edx & (1 << 25) != 0;
    if !has_tiles || leaf1.ecx & (1 << 27) == 0 {
        return false;
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 is defined when OSXSAVE is set (checked above); it reads XCR0
    // into EDX:EAX and touches nothing else.
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") _hi, options(nomem, nostack, preserves_flags));
    }
    // XCR0 bit 17: XTILECFG, bit 18: XTILEDATA, both enabled by the OS.
    if lo & (3 << 17) != 3 << 17 {
        return false;
    }
    // SAFETY: a plain system call with integer arguments; it changes only this process's XSAVE
    // permissions and returns 0 or -1 (EINVAL on kernels without it, EPERM if refused).
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    r == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub(crate) fn enable() -> bool {
    false
}

/// The 64-byte tile configuration of `LDTILECFG` (palette 1).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    /// Bytes per row of each tile register.
    colsb: [u16; 16],
    /// Rows of each tile register.
    rows: [u8; 16],
}

impl TileConfig {
    pub(crate) const fn new() -> TileConfig {
        TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        }
    }

    /// Tile register `t` as `rows` rows of `colsb` bytes (at most 16 rows of 64 bytes).
    pub(crate) const fn tile(mut self, t: usize, rows: u8, colsb: u16) -> TileConfig {
        assert!(rows <= 16 && colsb <= 64 && t < 8);
        self.rows[t] = rows;
        self.colsb[t] = colsb;
        self
    }

    /// Loads this configuration into the calling thread's tile unit (and zeroes its tiles).
    ///
    /// # Safety
    /// `cpu::amx_available()` returned true.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    pub(crate) unsafe fn load(&self) {
        // SAFETY: the caller guarantees AMX may run; `self` is a valid palette-1 configuration
        // (`tile` bounds every entry), 64 bytes, aligned.
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) self as *const TileConfig, options(nostack, readonly))
        };
    }
}

/// Releases the calling thread's tiles (returns the tile state to its initial, unused state, so
/// context switches need not save it).
///
/// # Safety
/// `cpu::amx_available()` returned true.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) unsafe fn release() {
    // SAFETY: the caller guarantees AMX may run; TILERELEASE touches only tile state.
    unsafe { asm!("tilerelease", options(nomem, nostack, preserves_flags)) };
}
