//! Memory an operation may own: what the kernel reads from ([`IoBuf`]) or
//! writes into ([`IoBufMut`]), with stable addresses whatever the owning
//! value does, and [`Slice`], a sub-range of one for partial writes.
#![allow(unsafe_code)]

/// Memory that can be the source of a write: a stable pointer to `len`
/// initialised bytes, which does not move when the value moves.
///
/// # Safety
/// `stable_ptr` must point at `bytes_init` initialised bytes that stay at the
/// same address, unmodified, for as long as the value is not dropped or
/// mutably accessed, even when the value itself is moved.
pub unsafe trait IoBuf: 'static {
    /// Pointer to the first byte.
    fn stable_ptr(&self) -> *const u8;
    /// Number of initialised bytes.
    fn bytes_init(&self) -> usize;
}

/// Memory that can be the target of a read.
///
/// # Safety
/// As [`IoBuf`], and `stable_mut_ptr` must be valid for writes of
/// `bytes_total` bytes.
pub unsafe trait IoBufMut: IoBuf {
    /// Pointer to the first byte, for writing.
    fn stable_mut_ptr(&mut self) -> *mut u8;
    /// Capacity in bytes.
    fn bytes_total(&mut self) -> usize;
    /// Marks the first `n` bytes initialised. Implementations never grow
    /// past `bytes_total`, whatever `n` says: a count reported by the
    /// kernel is trusted only up to the memory that was handed to it.
    ///
    /// # Safety
    /// The first `min(n, bytes_total)` bytes must have been initialised.
    unsafe fn set_init(&mut self, n: usize);
}

// SAFETY: a Vec's heap buffer does not move when the Vec moves, and `len`
// bytes of it are initialised.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: the whole capacity is writable; `set_len` is only raised to what
// the kernel reported written.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn bytes_total(&mut self) -> usize {
        self.capacity()
    }
    unsafe fn set_init(&mut self, n: usize) {
        let n = n.min(self.capacity());
        if n > self.len() {
            // SAFETY: n <= capacity (clamped above) and the caller guarantees the first `n` bytes are initialised.
            unsafe { self.set_len(n) };
        }
    }
}

// SAFETY: a boxed slice's heap memory does not move with the box.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: static data never moves or changes.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: a provided buffer lives in the group's mapping, which outlives it,
// and is off the ring (not written by the kernel) while we own it.
unsafe impl IoBuf for super::ProvidedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

/// A sub-range of an owned buffer, for partial writes.
#[derive(Debug)]
pub struct Slice<B> {
    buf: B,
    begin: usize,
    end: usize,
}

impl<B: IoBuf> Slice<B> {
    /// `buf[begin..end]`, clamped to the initialised bytes.
    pub fn new(buf: B, begin: usize, end: usize) -> Slice<B> {
        let end = end.min(buf.bytes_init());
        Slice { begin: begin.min(end), end, buf }
    }
    /// The whole buffer back.
    pub fn into_inner(self) -> B {
        self.buf
    }
    /// Start offset.
    pub fn begin(&self) -> usize {
        self.begin
    }
    /// End offset.
    pub fn end(&self) -> usize {
        self.end
    }
}

// SAFETY: a sub-range of a stable buffer is stable; begin <= end <= init.
unsafe impl<B: IoBuf> IoBuf for Slice<B> {
    fn stable_ptr(&self) -> *const u8 {
        // SAFETY: begin <= bytes_init, so the offset stays in bounds.
        unsafe { self.buf.stable_ptr().add(self.begin) }
    }
    fn bytes_init(&self) -> usize {
        self.end - self.begin
    }
}
