//! The socket options `socket2` does not wrap: attaching and detaching a
//! reuseport CBPF program (which takes a `struct sock_fprog` pointing at the
//! instructions) and `TCP_FASTOPEN`. The only unsafe code of the module.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::cbpf::Insn;

// From include/uapi/asm-generic/socket.h (x86, arm, arm64, riscv, powerpc,
// mips); sparc numbers its socket options differently. Not in `libc` for
// linux-gnu targets.
#[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
#[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 68;
#[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 0x35;
#[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 0x47;

/// Attaches `insns` as the group's reuseport program (replacing any).
pub(super) fn attach_reuseport_cbpf(fd: BorrowedFd<'_>, insns: &[Insn]) -> io::Result<()> {
    let filters: Vec<libc::sock_filter> =
        insns.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect();
    let len = u16::try_from(filters.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    // The kernel copies the instructions during the call, so `filters` only
    // has to outlive it; the cast to `*mut` is what the C struct declares,
    // nothing writes through it.
    let prog = libc::sock_fprog { len, filter: filters.as_ptr().cast_mut() };
    setsockopt(fd, libc::SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog)
}

/// Detaches the group's program. `Ok(false)` if none was attached.
pub(super) fn detach_reuseport_bpf(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // The kernel ignores the value but insists on an int-sized one.
    match setsockopt(fd, libc::SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &0 as &libc::c_int) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sets the `TCP_FASTOPEN` queue length (pending TFO requests) of a listener.
pub(super) fn set_tcp_fastopen(fd: BorrowedFd<'_>, queue: u32) -> io::Result<()> {
    let queue = libc::c_int::try_from(queue)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "TCP_FASTOPEN queue too long"))?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_FASTOPEN, &queue)
}

/// Only called with the option's documented value type (`c_int` or
/// `sock_fprog`), which is what makes the length below the right one.
fn setsockopt<T>(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `fd` is a live descriptor for the duration of the borrow; `value` points to `len` initialised bytes of the type the option expects; for `sock_fprog` its `filter` points to `len` live instructions, which the kernel copies before returning.
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
