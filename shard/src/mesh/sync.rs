//! Synchronisation shim for the mesh: one set of names that resolves to
//! `loom`'s model-checked primitives under `--cfg loom` and to `std` otherwise.
//!
//! The lock-free code in `ring` and `mail` imports its atomics, `Arc` and
//! `UnsafeCell` from here only, so the loom tests exercise exactly the code that
//! ships. `std::cell::UnsafeCell` has no closure API, so the std side gets a thin
//! wrapper with loom's `with`/`with_mut` shape; loom uses those closures to
//! track every slot access and report unsynchronised ones as data races.
//!
//! Also home to [`CachePadded`], which keeps hot atomics written by different
//! cores off each other's cache lines.

use core::fmt;
use core::ops::{Deref, DerefMut};

// Not every module uses every name; the shim is the single place to get them.
#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::{
    cell::UnsafeCell,
    sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering},
    sync::Arc,
};

#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::{
    atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Arc,
};

/// `std::cell::UnsafeCell` with loom's closure-based API.
///
/// Handing out raw pointers only inside a closure keeps every access site
/// visible to loom; on the std side the closures compile away.
#[cfg(not(loom))]
#[derive(Debug, Default)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
#[allow(dead_code)]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Shared access: the caller must not write through the pointer.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Exclusive access: the caller must guarantee no other access overlaps.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Aligns (and therefore pads) `T` to 128 bytes.
///
/// 128 rather than 64: Intel's adjacent-line prefetcher pulls cache lines in
/// pairs, and Apple/Neoverse parts have 128-byte lines, so two values 64 bytes
/// apart can still ping-pong between cores.
#[derive(Default, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(align(128))]
pub struct CachePadded<T> {
    value: T,
}

impl<T> CachePadded<T> {
    /// Wraps `value` in its own 128-byte block.
    pub const fn new(value: T) -> Self {
        Self { value }
    }
}

impl<T> Deref for CachePadded<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for CachePadded<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> From<T> for CachePadded<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: fmt::Debug> fmt::Debug for CachePadded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CachePadded").field(&self.value).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn padded_values_never_share_a_block() {
        assert_eq!(align_of::<CachePadded<u8>>(), 128);
        assert_eq!(size_of::<CachePadded<u8>>(), 128);
        assert_eq!(size_of::<[CachePadded<u64>; 2]>(), 256);
        assert_eq!(size_of::<CachePadded<[u8; 129]>>(), 256);
    }

    #[test]
    fn derefs_to_the_value() {
        let mut p = CachePadded::new(41_u32);
        *p += 1;
        assert_eq!(*p, 42);
    }
}
