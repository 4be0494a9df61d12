//! Where a weight matrix's bytes live: owned, 64-byte-aligned memory ([`AlignedBytes`]), or a
//! region of a shared read-only image such as a memory-mapped model file ([`SharedBytes`]).
//!
//! A borrowed region costs no copy and no anonymous memory: the OS loads its pages from the file
//! when they are first read and may drop them again under memory pressure, so a model larger than
//! RAM can still run (slowly) from its file. Kernels read weights with unaligned loads, and block
//! views (`crate::view`) copy a misaligned slice rather than reinterpret it, so any alignment
//! is sound; [`crate::Matrix::from_mapped`] still copies regions that are not 4-byte aligned, to keep
//! the fast paths.

use crate::KernelError;
use bytemuck::{Pod, Zeroable};
use std::sync::Arc;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A 64-byte-aligned byte buffer (block views need 2- or 4-byte alignment; SIMD loads prefer 64).
#[derive(Clone)]
pub struct AlignedBytes {
    lines: Vec<Line>,
    len: usize,
}

/// Locks the pages under `bytes` in RAM (mlock): they are neither swapped out nor, for a mapped
/// file, dropped from the page cache. Fails when the process may not lock that much
/// (`RLIMIT_MEMLOCK`, `ulimit -l`).
pub fn lock_in_memory(bytes: &[u8]) -> std::io::Result<()> {
    let Some(addr) = std::ptr::NonNull::new(bytes.as_ptr() as *mut std::ffi::c_void) else {
        return Ok(());
    };
    if bytes.is_empty() {
        return Ok(());
    }
    // SAFETY: mlock neither reads nor writes the memory; it pins the pages of a range that
    // `bytes` borrows, valid for `bytes.len()` bytes, and changes nothing the borrow relies on.
    unsafe { nix::sys::mman::mlock(addr, bytes.len()) }.map_err(std::io::Error::from)
}

/// `n` zeros in a new vector, written into freshly allocated memory rather than asked of the
/// allocator as zeroed memory (`vec![0.0; n]` calls `calloc`). For working buffers that live for
/// one step: jemalloc hands out zeroed memory by purging reused pages, which the kernel then faults
/// back in one by one; that cost a 512-token prefill about a tenth of its time. Writing the zeros
/// into reused pages is several times cheaper.
pub fn zeros<T: Zeroable + Copy>(n: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, T::zeroed());
    v
}

impl AlignedBytes {
    /// `len` zero bytes, the pages left for the allocator to zero (fresh from the OS for large
    /// buffers, never written here): for long-lived buffers such as repacked weights.
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes {
            // Zeroed by the allocator (fresh pages from the OS for large buffers), not written.
            lines: bytemuck::zeroed_vec(len.div_ceil(64)),
            len,
        }
    }

    /// `len` zero bytes written by [`zeros`]: for working buffers that live for one step.
    pub fn scratch(len: usize) -> AlignedBytes {
        AlignedBytes {
            lines: zeros(len.div_ceil(64)),
            len,
        }
    }

    pub fn from_slice(bytes: &[u8]) -> AlignedBytes {
        let mut a = AlignedBytes::zeroed(bytes.len());
        a.as_mut_slice().copy_from_slice(bytes);
        a
    }

    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

/// An immutable byte image that several weight matrices can borrow regions of (the formats crate
/// implements it for its memory map).
///
/// # Safety
///
/// Every call of [`SharedBytes::bytes`] on one value returns the same slice (same address, same
/// length), and those bytes are neither written nor freed while the value lives. [`WeightBytes`]
/// keeps an `Arc` of the value and reads through a pointer taken once.
pub unsafe trait SharedBytes: Send + Sync {
    fn bytes(&self) -> &[u8];

    /// `[offset, offset + len)` will not be read for a while: a file map may drop those pages
    /// from the resident set (they are read back from the file if needed). Bytes in memory stay.
    fn release(&self, _offset: usize, _len: usize) {}
}

// SAFETY: a `Vec` behind an `Arc` is never written (only `&` access) nor reallocated, so its
// buffer stays put and unchanged until the last `Arc` drops it.
unsafe impl SharedBytes for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// A region `[offset, offset + len)` of a [`SharedBytes`] image, kept alive by an `Arc`.
#[derive(Clone)]
pub struct MappedRegion {
    /// Held so that the image outlives `ptr`; asked to release pages.
    owner: Arc<dyn SharedBytes>,
    offset: usize,
    len: usize,
    /// `owner.bytes()[offset..]`, taken once so that reads skip the virtual call and bounds check.
    ptr: *const u8,
}

// SAFETY: `ptr` points into `owner`'s bytes, which are immutable and `Send + Sync` (required by
// `SharedBytes`), so sharing or sending the region shares only read access to immutable memory.
unsafe impl Send for MappedRegion {}
// SAFETY: as above.
unsafe impl Sync for MappedRegion {}

impl MappedRegion {
    fn as_slice(&self) -> &[u8] {
        // SAFETY: `new` checked that `offset + len` lies within `owner.bytes()`, and `SharedBytes`
        // guarantees those bytes stay at `ptr`, unchanged, while `owner` (held here) lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The bytes of a weight matrix: owned and 64-byte aligned, or a region of a shared image.
#[derive(Clone)]
pub enum WeightBytes {
    Owned(AlignedBytes),
    Mapped(MappedRegion),
}

impl WeightBytes {
    /// An owned, aligned copy of `bytes`.
    pub fn copy_of(bytes: &[u8]) -> WeightBytes {
        WeightBytes::Owned(AlignedBytes::from_slice(bytes))
    }

    /// Borrows `[offset, offset + len)` of `owner`, or fails if that lies outside its bytes.
    pub fn mapped(
        owner: Arc<dyn SharedBytes>,
        offset: usize,
        len: usize,
    ) -> Result<WeightBytes, KernelError> {
        let bytes = owner.bytes();
        let size = bytes.len();
        match offset.checked_add(len) {
            Some(end) if end <= size => {}
            _ => return Err(KernelError::RegionOutOfBounds { offset, len, size }),
        }
        let ptr = bytes[offset..].as_ptr();
        Ok(WeightBytes::Mapped(MappedRegion {
            owner,
            offset,
            len,
            ptr,
        }))
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            WeightBytes::Owned(a) => a.as_slice(),
            WeightBytes::Mapped(m) => m.as_slice(),
        }
    }

    /// Whether the bytes are borrowed from a shared image rather than owned.
    pub fn is_mapped(&self) -> bool {
        matches!(self, WeightBytes::Mapped(_))
    }

    /// `(offset, len)` of the borrowed region within its image; `None` for owned bytes.
    /// Lets a mapped image drop this region's pages, and `margin` bytes either side (within the
    /// image): neighbours' pages faulted in around it. Nothing for owned bytes.
    /// Drops the resident pages of bytes `range` of a mapped region (see [`Self::release_pages`]);
    /// owned bytes are kept.
    pub fn release_range(&self, range: std::ops::Range<usize>) {
        if let WeightBytes::Mapped(m) = self {
            let end = range.end.min(m.len);
            if range.start < end {
                m.owner.release(m.offset + range.start, end - range.start);
            }
        }
    }

    pub fn release_pages(&self, margin: usize) {
        if let WeightBytes::Mapped(m) = self {
            let from = m.offset.saturating_sub(margin);
            let to = (m.offset + m.len + margin).min(m.owner.bytes().len());
            m.owner.release(from, to - from);
        }
    }

    pub fn mapped_range(&self) -> Option<(usize, usize)> {
        match self {
            WeightBytes::Owned(_) => None,
            WeightBytes::Mapped(m) => Some((m.offset, m.len)),
        }
    }
}

impl std::ops::Deref for WeightBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for WeightBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightBytes::Owned(a) => write!(f, "WeightBytes::Owned({} bytes)", a.as_slice().len()),
            WeightBytes::Mapped(m) => {
                write!(f, "WeightBytes::Mapped({} bytes at {})", m.len, m.offset)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Arc<dyn SharedBytes> {
        Arc::new((0..=255u8).cycle().take(1000).collect::<Vec<u8>>())
    }

    #[test]
    fn owned_copies_and_aligns() {
        let src: Vec<u8> = (0..100u8).collect();
        let w = WeightBytes::copy_of(&src[1..]);
        assert_eq!(&*w, &src[1..]);
        assert_eq!(w.as_ptr() as usize % 64, 0);
        assert!(!w.is_mapped());
        assert_eq!(w.mapped_range(), None);
    }

    #[test]
    fn mapped_borrows_the_region() {
        let img = image();
        let w = WeightBytes::mapped(img.clone(), 10, 300).unwrap();
        assert_eq!(&*w, &img.bytes()[10..310]);
        assert_eq!(w.as_ptr(), img.bytes()[10..].as_ptr(), "no copy");
        assert!(w.is_mapped());
        assert_eq!(w.mapped_range(), Some((10, 300)));
        let c = w.clone();
        drop(w);
        drop(img);
        // The clone keeps the image alive.
        assert_eq!(c[0], 10);
        assert_eq!(c.len(), 300);
        // Empty regions, including one at the very end, are fine.
        assert!(WeightBytes::mapped(image(), 1000, 0).unwrap().is_empty());
    }

    #[test]
    fn mapped_out_of_bounds_is_an_error() {
        for (offset, len) in [
            (0, 1001),
            (1000, 1),
            (999, 2),
            (usize::MAX, 2),
            (1, usize::MAX),
        ] {
            match WeightBytes::mapped(image(), offset, len) {
                Err(KernelError::RegionOutOfBounds { size: 1000, .. }) => {}
                other => panic!("({offset}, {len}): {other:?}"),
            }
        }
    }
}
