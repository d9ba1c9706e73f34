//! Anonymous memory mappings for buffers the kernel reads and writes:
//! page-aligned, never moved, released only when explicitly unmapped.

#![allow(unsafe_code)]

use std::io;

/// Maps `len` bytes of zeroed, private, read-write memory.
pub fn map_anonymous(len: usize) -> io::Result<*mut u8> {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions; failure is reported as MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

/// Unmaps memory from [`map_anonymous`].
///
/// # Safety
/// `p`/`len` must be exactly a mapping returned by [`map_anonymous`] that
/// nothing (no reference, no kernel operation, no registration) uses any
/// more.
pub unsafe fn unmap(p: *mut u8, len: usize) {
    // SAFETY: the caller guarantees the mapping is ours and unused.
    unsafe { libc::munmap(p.cast(), len) };
}
