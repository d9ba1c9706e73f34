//! Raw operations on file descriptors, as owned-buffer futures.
//!
//! Every function here queues one submission entry and returns an [`Op`] (or
//! [`MultiOp`]) that owns the buffers and address storage the kernel uses.
//! Buffers go in by value and come back with the result ("rent" style), so
//! the kernel can never write memory Rust has freed or lent elsewhere.
//!
//! The caller keeps each fd open until its operations complete: typed
//! sockets that guarantee this are `netstack`'s job.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use io_uring::{opcode, squeue, types};

use super::bufring::{BufRing, ProvidedBuf};
pub use super::iobuf::{IoBuf, IoBufMut, Slice};
use super::op::{MultiOp, Op, QuietSend};
use super::slab::Completion;
use crate::context;

/// Starts an operation on the current shard's reactor.
///
/// # Safety
/// As [`super::Reactor::start`]: the entry may only point into memory owned
/// by `data`'s heap allocations.
unsafe fn start<T: 'static>(data: T, build: impl FnOnce(&mut T) -> squeue::Entry) -> Op<T> {
    // SAFETY: forwarded from the caller's contract.
    unsafe { start_with(data, Slot::Plain, build) }
}

/// What a slot's completions carry besides a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Nothing: the result is a count or a status.
    Plain,
    /// A new descriptor (accept): owned by the completion, closed if
    /// nobody takes it.
    Fd,
}

/// # Safety
/// As [`start`].
unsafe fn start_with<T: 'static>(data: T, slot: Slot, build: impl FnOnce(&mut T) -> squeue::Entry) -> Op<T> {
    context::with_rc(|c| {
        // SAFETY: forwarded from the caller's contract.
        let (idx, data) = unsafe { c.reactor.start(data, None, slot == Slot::Fd, build) };
        Op::new(Rc::downgrade(c), idx, data)
    })
}

/// # Safety
/// As [`start`].
unsafe fn start_multi<T: 'static>(
    data: T,
    group: Option<BufRing>,
    slot: Slot,
    build: impl FnOnce(&mut T) -> squeue::Entry,
) -> MultiOp<T> {
    context::with_rc(|c| {
        // SAFETY: forwarded from the caller's contract.
        let (idx, data) = unsafe { c.reactor.start(data, group, slot == Slot::Fd, build) };
        MultiOp::new(Rc::downgrade(c), idx, data)
    })
}

/// Turns a completion's result into an `io::Result`.
pub fn result(c: &Completion) -> io::Result<u32> {
    c.io_result()
}

/// Runs an operation that writes into the spare capacity of `buf`, then
/// marks the bytes the kernel reported as initialised.
async fn fill<B: IoBufMut>(
    buf: B,
    entry: impl FnOnce(*mut u8, u32) -> squeue::Entry,
) -> (io::Result<usize>, B) {
    // SAFETY: the entry points at `buf`'s heap memory, owned by the op.
    let op = unsafe {
        start(buf, |b| {
            let len = b.bytes_total() - b.bytes_init();
            // In bounds: bytes_init <= bytes_total.
            let ptr = b.stable_mut_ptr().wrapping_add(b.bytes_init());
            entry(ptr, len.min(u32::MAX as usize) as u32)
        })
    };
    let (c, mut buf) = op.await;
    let res = c.io_result().map(|n| n as usize);
    let res = res.map(|n| mark_written(&mut buf, n));
    (res, buf)
}

/// Marks `n` bytes the kernel reported written after the initialised part
/// of `buf`; returns how many were accepted (never past the capacity
/// offered to the kernel, whatever it reported).
fn mark_written<B: IoBufMut>(buf: &mut B, n: usize) -> usize {
    let init = buf.bytes_init();
    let n = n.min(buf.bytes_total().saturating_sub(init));
    // SAFETY: the kernel wrote `n` bytes right after the initialised part, and `n` is within the spare capacity it was given.
    unsafe { buf.set_init(init + n) };
    n
}

/// Runs an operation that reads the initialised bytes of `buf`.
async fn emit<B: IoBuf>(
    buf: B,
    entry: impl FnOnce(*const u8, u32) -> squeue::Entry,
) -> (io::Result<usize>, B) {
    // SAFETY: the entry points at `buf`'s heap memory, owned by the op until its final completion.
    let op = unsafe { start(buf, |b| entry(b.stable_ptr(), b.bytes_init().min(u32::MAX as usize) as u32)) };
    let (c, buf) = op.await;
    (c.io_result().map(|n| n as usize), buf)
}

/// `recv(2)` into the spare capacity of `buf`; the buffer comes back with
/// its length raised by the bytes received.
pub async fn recv<B: IoBufMut>(fd: RawFd, buf: B) -> (io::Result<usize>, B) {
    fill(buf, |ptr, len| opcode::Recv::new(types::Fd(fd), ptr, len).build()).await
}

/// `read(2)` at the current position (pipes, eventfds, files).
pub async fn read<B: IoBufMut>(fd: RawFd, buf: B) -> (io::Result<usize>, B) {
    fill(buf, |ptr, len| opcode::Read::new(types::Fd(fd), ptr, len).offset(u64::MAX).build()).await
}

/// Multishot `recv(2)` into buffers picked from `group`: one completion per
/// receive, each carrying a [`super::ProvidedBuf`]. The stream ends on EOF
/// (a zero-length completion), on error, or with `-ENOBUFS` when the group
/// ran dry (re-arm after returning buffers).
pub fn recv_multi(fd: RawFd, group: &BufRing) -> MultiOp<()> {
    let bgid = group.bgid();
    // SAFETY: the entry carries no pointers; buffers belong to the group, which the slot keeps alive until the final completion.
    unsafe {
        start_multi((), Some(group.clone()), Slot::Plain, |_| {
            opcode::RecvMulti::new(types::Fd(fd), bgid).build()
        })
    }
}

/// [`recv_multi`] with a bound on what it holds, for owners that may stop
/// consuming (a relay waiting on a slow reader):
/// - `hold`: once that many completions (each a buffer of `group`) wait
///   for their owner, the reactor cancels the receive, whose final
///   completion is then `-ECANCELED` with [`MultiOp::stopped_at_limit`]
///   set. The cancel goes out with the next `io_uring_enter`, which
///   submits before it runs the kernel's deferred completion work, so the
///   receive takes at most what one such pass had in progress beyond it.
/// - `bytes`: the receive ends by itself (a final completion with data)
///   once it has taken that many bytes, where the kernel supports it
///   ([`super::probe::recv_byte_limit`]): a peer that floods fills at
///   most one buffer past `bytes` per arming, however fast it sends.
pub fn recv_multi_bounded(fd: RawFd, group: &BufRing, hold: usize, bytes: u32) -> MultiOp<()> {
    let bgid = group.bgid();
    let limit = if super::probe::recv_byte_limit() { bytes } else { 0 };
    // SAFETY: the entry carries no pointers; buffers belong to the group, which the slot keeps alive until the final completion.
    let op = unsafe {
        start_multi((), Some(group.clone()), Slot::Plain, |_| {
            with_optlen(opcode::RecvMulti::new(types::Fd(fd), bgid).build(), limit)
        })
    };
    op.set_hold_limit(hold.max(1));
    op
}

/// Offset of `optlen` in the kernel's 64-byte `io_uring_sqe` (a union with
/// `file_index` and `splice_fd_in`): opcode, flags, ioprio, fd, off, addr,
/// len, op flags, user_data, buf_group, personality come before it.
const SQE_OPTLEN: usize = 44;

/// Sets `sqe->optlen`, which the io-uring crate's receive builder has no
/// setter for.
fn with_optlen(entry: squeue::Entry, optlen: u32) -> squeue::Entry {
    // SAFETY: `squeue::Entry` is a `repr(C)` wrapper around the kernel's 64-byte `io_uring_sqe` (size checked by transmute at compile time), a plain-old-data struct without padding invariants.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute::<squeue::Entry, [u8; 64]>(entry) };
    raw[SQE_OPTLEN..SQE_OPTLEN + 4].copy_from_slice(&optlen.to_ne_bytes());
    // SAFETY: any 64 bytes are a valid `io_uring_sqe` (integers and unions of integers); only `optlen` changed.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

/// One `recv(2)` into a buffer the kernel picks from `group` when data
/// arrives: the connection holds no buffer while it waits, and (unlike
/// [`recv_multi`]) at most one buffer per call, which bounds what a
/// connection can hold when its reader is slower than its writer.
/// `Ok(None)` at end of stream; `ENOBUFS` when the group is empty.
pub async fn recv_select(fd: RawFd, group: &BufRing) -> io::Result<Option<super::ProvidedBuf>> {
    let bgid = group.bgid();
    // SAFETY: the entry carries no pointers; the buffer belongs to the group, which the operation's slot keeps alive until completion.
    let op = unsafe {
        context::with_rc(|c| {
            let (idx, data) = c.reactor.start((), Some(group.clone()), false, |_| {
                opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), 0)
                    .buf_group(bgid)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT)
            });
            Op::new(Rc::downgrade(c), idx, data)
        })
    };
    let (c, ()) = op.await;
    c.io_result()?;
    Ok(c.buf.filter(|b| !b.is_empty()))
}

/// `send(2)` of all initialised bytes of `buf` (one call: may be partial).
pub async fn send<B: IoBuf>(fd: RawFd, buf: B) -> (io::Result<usize>, B) {
    emit(buf, |ptr, len| opcode::Send::new(types::Fd(fd), ptr, len).flags(libc::MSG_NOSIGNAL).build()).await
}

/// [`send`] that never waits: `EAGAIN` (`WouldBlock`) when the socket has no
/// room, else what fitted (one call: may be partial).
pub async fn send_nowait<B: IoBuf>(fd: RawFd, buf: B) -> (io::Result<usize>, B) {
    emit(buf, |ptr, len| {
        opcode::Send::new(types::Fd(fd), ptr, len).flags(libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT).build()
    })
    .await
}

/// [`send_nowait`] of a group buffer that posts no completion when it
/// sends everything (see [`QuietSend`]): the buffer goes back to its group
/// as soon as the submitting enter returns. Where the kernel cannot report
/// a short send's count with its failure ([`super::probe::quiet_send`]) it
/// posts a completion every time, with the same outcomes for its owner.
pub fn send_quiet(fd: RawFd, buf: ProvidedBuf) -> QuietSend {
    send_quiet_on(fd, buf, super::probe::quiet_send())
}

/// [`send_quiet`] as on a kernel with (`skip`) or without the short-send
/// report: the path older kernels take can be exercised on any kernel.
pub fn send_quiet_on(fd: RawFd, buf: ProvidedBuf, skip: bool) -> QuietSend {
    let len = buf.len();
    context::with_rc(|c| {
        let idx = c.reactor.start_quiet(fd, buf, skip);
        QuietSend::new(Rc::downgrade(c), idx, len)
    })
}

/// `write(2)` of all initialised bytes of `buf` (pipes, files).
pub async fn write<B: IoBuf>(fd: RawFd, buf: B) -> (io::Result<usize>, B) {
    emit(buf, |ptr, len| opcode::Write::new(types::Fd(fd), ptr, len).offset(u64::MAX).build()).await
}

/// Zero-copy `send(2)`: the kernel sends straight from `buf` and the buffer
/// comes back only after the kernel's notification that it let go of it.
pub async fn send_zc<B: IoBuf>(fd: RawFd, buf: B) -> (io::Result<usize>, B) {
    emit(buf, |ptr, len| opcode::SendZc::new(types::Fd(fd), ptr, len).flags(libc::MSG_NOSIGNAL).build()).await
}

/// `accept4(2)`; returns the new fd (non-blocking, close-on-exec) and the
/// peer address. A connection accepted after this future was dropped is
/// closed, not leaked.
pub async fn accept(fd: RawFd) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    let storage = Box::new(AddrStorage::new());
    // SAFETY: the entry points into the boxed address storage owned by the op.
    let op = unsafe {
        start_with(storage, Slot::Fd, |s| {
            opcode::Accept::new(types::Fd(fd), s.addr_mut_ptr(), &mut s.len)
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build()
        })
    };
    let (mut c, storage) = op.await;
    c.io_result()?;
    let new_fd = c.take_fd().ok_or_else(|| io::Error::other("accept completed without a descriptor"))?;
    Ok((new_fd, storage.to_socket_addr()))
}

/// Multishot `accept4(2)`: one completion per accepted connection, which
/// owns the new fd ([`Completion::take_fd`]); a completion dropped with its
/// fd, or left queued when the operation is dropped, closes it. Peer
/// addresses are not reported in this mode.
pub fn accept_multi(fd: RawFd) -> MultiOp<()> {
    // SAFETY: the entry carries no pointers.
    unsafe {
        start_multi((), None, Slot::Fd, |_| {
            opcode::AcceptMulti::new(types::Fd(fd)).flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK).build()
        })
    }
}

/// `socket(2)` through the ring (`IORING_OP_SOCKET`, Linux 5.19): the new
/// descriptor, owned by the completion until taken (closed if the future
/// is dropped first). `ty` may carry `SOCK_NONBLOCK | SOCK_CLOEXEC`.
pub async fn socket(domain: i32, ty: i32, protocol: i32) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: the entry carries no pointers.
    let op = unsafe { start_with((), Slot::Fd, |_| opcode::Socket::new(domain, ty, protocol).build()) };
    let (mut c, _) = op.await;
    c.io_result()?;
    c.take_fd().ok_or_else(|| io::Error::other("socket completed without a descriptor"))
}

/// `setsockopt(2)` of an integer option through the ring
/// (`SOCKET_URING_OP_SETSOCKOPT`, Linux 6.7).
pub async fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    let storage = Box::new(value);
    // SAFETY: the entry points into the boxed value owned by the op, kept until the completion arrives.
    let op = unsafe {
        start(storage, |v| {
            let ptr: *mut i32 = &mut **v;
            opcode::SetSockOpt::new(types::Fd(fd), level as u32, name as u32, ptr.cast_const().cast(), 4)
                .build()
        })
    };
    let (c, _) = op.await;
    c.io_result().map(drop)
}

/// `connect(2)`.
pub async fn connect(fd: RawFd, addr: SocketAddr) -> io::Result<()> {
    let storage = Box::new(AddrStorage::from_socket_addr(addr));
    // SAFETY: the entry points into the boxed address storage owned by the op.
    let op = unsafe { start(storage, |s| opcode::Connect::new(types::Fd(fd), s.addr_ptr(), s.len).build()) };
    let (c, _) = op.await;
    c.io_result().map(drop)
}

/// `close(2)`, taking ownership of the descriptor.
pub async fn close(fd: std::os::fd::OwnedFd) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    let raw = fd.into_raw_fd();
    // SAFETY: the entry carries no pointers.
    let op = unsafe { start((), |_| opcode::Close::new(types::Fd(raw)).build()) };
    let (c, _) = op.await;
    c.io_result().map(drop)
}

/// Closes `fd` without waiting: through the ring on a shard (ordered after
/// every operation already queued on that fd), directly elsewhere.
pub fn close_later(fd: std::os::fd::OwnedFd) {
    use std::os::fd::IntoRawFd;
    let raw = fd.into_raw_fd();
    if context::try_with(|c| c.reactor.close_detached(raw)).is_none() {
        // SAFETY: we own `raw` (taken from the OwnedFd above) and no shard ring can have operations queued on it from this thread.
        unsafe { libc::close(raw) };
    }
}

/// `splice(2)` up to `len` bytes from `fd_in` to `fd_out` (one of them a
/// pipe); offsets are `-1` for "current position / not applicable".
pub async fn splice(fd_in: RawFd, fd_out: RawFd, len: u32) -> io::Result<usize> {
    // SAFETY: the entry carries no pointers.
    let op = unsafe {
        start((), |_| {
            opcode::Splice::new(types::Fd(fd_in), -1, types::Fd(fd_out), -1, len)
                .flags(libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
                .build()
        })
    };
    let (c, _) = op.await;
    c.io_result().map(|n| n as usize)
}

/// Waits until `fd` is ready for `events` (`libc::POLLIN`, `POLLOUT`, ...);
/// returns the ready events. For operations the kernel cannot wait on
/// itself (splice between sockets and pipes).
pub async fn poll_ready(fd: RawFd, events: i16) -> io::Result<i16> {
    // SAFETY: the entry carries no pointers.
    let op = unsafe { start((), |_| opcode::PollAdd::new(types::Fd(fd), events as u32).build()) };
    let (c, _) = op.await;
    c.io_result().map(|r| r as i16)
}

/// A kernel timeout: completes after `after`. The runtime's own timers do
/// not use this (they cost no syscall); it is here for linking and tests.
pub async fn timeout(after: Duration) -> io::Result<()> {
    let ts = Box::new(types::Timespec::new().sec(after.as_secs()).nsec(after.subsec_nanos()));
    // SAFETY: the entry points at the boxed timespec owned by the op.
    let op = unsafe { start(ts, |t| opcode::Timeout::new(&**t as *const types::Timespec).build()) };
    let (c, _) = op.await;
    match c.result {
        r if r == -libc::ETIME || r == 0 => Ok(()),
        _ => c.io_result().map(drop),
    }
}

/// Cancels every operation on `fd` (async, best effort); resolves with the
/// number cancelled.
pub async fn cancel_fd(fd: RawFd) -> io::Result<usize> {
    // SAFETY: the entry carries no pointers.
    let op = unsafe {
        start((), |_| opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all()).build())
    };
    let (c, _) = op.await;
    match c.result {
        r if r == -libc::ENOENT => Ok(0),
        _ => c.io_result().map(|n| n as usize),
    }
}

/// Posts a completion with `result`/`user_data` on another io_uring
/// (IORING_OP_MSG_RING).
pub async fn msg_ring(ring_fd: RawFd, result: i32, user_data: u64) -> io::Result<()> {
    // SAFETY: the entry carries no pointers into our memory.
    let op = unsafe {
        start((), |_| opcode::MsgRingData::new(types::Fd(ring_fd), result, user_data, None).build())
    };
    let (c, _) = op.await;
    c.io_result().map(drop)
}

/// Multishot `recvmsg(2)` into buffers picked from `group`, for datagram
/// sockets: one completion per datagram, its buffer laid out as the kernel's
/// `io_uring_recvmsg_out` header, the source address, then the payload.
/// Decode it with [`RecvMsgOut::parse`].
pub fn recvmsg_multi(fd: RawFd, group: &BufRing) -> MultiOp<Box<libc::msghdr>> {
    let mut hdr: Box<libc::msghdr> = Box::new(zeroed_msghdr());
    // Only the name and control lengths matter to the multishot variant:
    // they fix the layout of every buffer it fills.
    hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let bgid = group.bgid();
    // SAFETY: the entry points at the boxed msghdr, owned by the operation (and parked in its slot if dropped) until the final completion.
    unsafe {
        start_multi(hdr, Some(group.clone()), Slot::Plain, |h| {
            opcode::RecvMsgMulti::new(types::Fd(fd), &**h as *const libc::msghdr, bgid).build()
        })
    }
}

/// One datagram received by [`recvmsg_multi`], decoded from its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMsgOut<'a> {
    /// The sender.
    pub source: Option<SocketAddr>,
    /// The datagram (possibly truncated to the buffer, see `truncated`).
    pub payload: &'a [u8],
    /// The datagram did not fit the buffer (MSG_TRUNC).
    pub truncated: bool,
}

impl<'a> RecvMsgOut<'a> {
    /// Byte offset of the payload in a buffer filled by [`recvmsg_multi`].
    pub const PAYLOAD_OFFSET: usize = 16 + size_of::<libc::sockaddr_storage>();

    /// Decodes a buffer filled by [`recvmsg_multi`]; `None` if it is too
    /// short to hold the header (never the case for kernel-filled buffers).
    pub fn parse(buf: &'a [u8]) -> Option<RecvMsgOut<'a>> {
        let word = |i: usize| buf.get(i * 4..i * 4 + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        let (namelen, controllen, payloadlen, flags) = (word(0)?, word(1)?, word(2)?, word(3)?);
        let name = buf.get(16..16 + size_of::<libc::sockaddr_storage>())?;
        let start = Self::PAYLOAD_OFFSET + controllen as usize;
        let payload = buf.get(start..)?;
        let payload = &payload[..payload.len().min(payloadlen as usize)];
        let mut storage = AddrStorage::new();
        let n = (namelen as usize).min(size_of::<libc::sockaddr_storage>());
        // SAFETY: copies at most sizeof(sockaddr_storage) bytes from `name` (which is that long) into the storage, which is that large.
        unsafe {
            std::ptr::copy_nonoverlapping(
                name.as_ptr(),
                (&mut storage.storage as *mut libc::sockaddr_storage).cast(),
                n,
            )
        };
        storage.len = n as libc::socklen_t;
        Some(RecvMsgOut {
            source: storage.to_socket_addr(),
            payload,
            truncated: flags & libc::MSG_TRUNC as u32 != 0,
        })
    }
}

fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is the valid empty header (no name, no iovecs, no control).
    unsafe { MaybeUninit::zeroed().assume_init() }
}

fn zeroed_iovec() -> libc::iovec {
    // SAFETY: iovec is plain data; all-zero is a valid empty vector.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

/// State for `recvmsg(2)`/`sendmsg(2)`: header, one iovec, peer address.
struct MsgState<B> {
    hdr: libc::msghdr,
    iov: libc::iovec,
    addr: AddrStorage,
    buf: B,
}

/// `recvmsg(2)` into the spare capacity of `buf`, with the source address.
pub async fn recvmsg<B: IoBufMut>(fd: RawFd, buf: B) -> (io::Result<(usize, Option<SocketAddr>)>, B) {
    let (hdr, iov) = (zeroed_msghdr(), zeroed_iovec());
    let state = Box::new(MsgState { hdr, iov, addr: AddrStorage::new(), buf });
    // SAFETY: every pointer set here points into the boxed state (or the buffer's heap memory) owned by the op until completion.
    let op = unsafe {
        start(state, |s| {
            let init = s.buf.bytes_init();
            s.iov.iov_base = s.buf.stable_mut_ptr().wrapping_add(init).cast();
            s.iov.iov_len = s.buf.bytes_total() - init;
            s.hdr.msg_iov = &mut s.iov;
            s.hdr.msg_iovlen = 1;
            s.hdr.msg_name = s.addr.addr_mut_ptr().cast();
            s.hdr.msg_namelen = s.addr.len;
            opcode::RecvMsg::new(types::Fd(fd), &mut s.hdr).build()
        })
    };
    let (c, mut state) = op.await;
    let res = c.io_result().map(|n| n as usize);
    state.addr.len = state.hdr.msg_namelen;
    let addr = state.addr.to_socket_addr();
    let res = res.map(|n| mark_written(&mut state.buf, n));
    (res.map(|n| (n, addr)), state.buf)
}

/// `sendmsg(2)` of `buf` to `to` (or the connected peer when `None`).
pub async fn sendmsg<B: IoBuf>(fd: RawFd, buf: B, to: Option<SocketAddr>) -> (io::Result<usize>, B) {
    let (hdr, iov) = (zeroed_msghdr(), zeroed_iovec());
    let addr = to.map(AddrStorage::from_socket_addr).unwrap_or_default();
    let state = Box::new(MsgState { hdr, iov, addr, buf });
    let has_addr = to.is_some();
    // SAFETY: every pointer set here points into the boxed state (or the buffer's heap memory) owned by the op until completion.
    let op = unsafe {
        start(state, |s| {
            s.iov.iov_base = s.buf.stable_ptr() as *mut libc::c_void;
            s.iov.iov_len = s.buf.bytes_init();
            s.hdr.msg_iov = &mut s.iov;
            s.hdr.msg_iovlen = 1;
            if has_addr {
                s.hdr.msg_name = s.addr.addr_mut_ptr().cast();
                s.hdr.msg_namelen = s.addr.len;
            }
            opcode::SendMsg::new(types::Fd(fd), &s.hdr).flags(libc::MSG_NOSIGNAL as u32).build()
        })
    };
    let (c, state) = op.await;
    (c.io_result().map(|n| n as usize), state.buf)
}

/// A `sockaddr_storage` with its length, convertible to `SocketAddr`.
#[derive(Clone, Copy)]
pub struct AddrStorage {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl std::fmt::Debug for AddrStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AddrStorage({:?})", self.to_socket_addr())
    }
}

impl Default for AddrStorage {
    fn default() -> Self {
        AddrStorage::new()
    }
}

impl AddrStorage {
    /// Empty storage with room for any address.
    pub fn new() -> AddrStorage {
        // SAFETY: sockaddr_storage is plain data; all-zero is AF_UNSPEC.
        let storage = unsafe { MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init() };
        AddrStorage { storage, len: size_of::<libc::sockaddr_storage>() as libc::socklen_t }
    }

    /// Encodes an IPv4 or IPv6 address.
    pub fn from_socket_addr(addr: SocketAddr) -> AddrStorage {
        let mut s = AddrStorage::new();
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
                unsafe { std::ptr::write((&mut s.storage as *mut libc::sockaddr_storage).cast(), sin) };
                s.len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo().to_be(),
                    sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
                unsafe { std::ptr::write((&mut s.storage as *mut libc::sockaddr_storage).cast(), sin6) };
                s.len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        s
    }

    fn addr_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    fn addr_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.storage as *mut libc::sockaddr_storage).cast()
    }

    /// Decodes the address, if it is IPv4 or IPv6.
    pub fn to_socket_addr(&self) -> Option<SocketAddr> {
        match i32::from(self.storage.ss_family) {
            libc::AF_INET if self.len as usize >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a sockaddr_in, and the storage is aligned for it.
                let sin = unsafe { &*(self.addr_ptr().cast::<libc::sockaddr_in>()) };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
            }
            libc::AF_INET6 if self.len as usize >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above for sockaddr_in6.
                let sin6 = unsafe { &*(self.addr_ptr().cast::<libc::sockaddr_in6>()) };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    u32::from_be(sin6.sin6_flowinfo),
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A count the kernel reports is trusted only up to the memory it was
    /// given: whatever it says, a buffer never grows past its capacity.
    #[test]
    fn a_reported_count_never_grows_a_buffer_past_its_capacity() {
        // Initialised memory (zeroes), so claiming it initialised is true.
        let mut v = vec![0u8; 16];
        v.truncate(4);
        let cap = v.capacity();
        // SAFETY: every byte up to the capacity was initialised by `vec!` above; the count past it is what the implementation must clamp.
        unsafe { v.set_init(cap + 4096) };
        assert_eq!(v.len(), cap);
        let mut w = vec![0u8; 8];
        w.clear();
        let accepted = mark_written(&mut w, 1 << 20);
        assert_eq!(accepted, w.capacity());
        assert!(w.len() <= w.capacity());
    }

    /// `optlen` shares its place with `file_index`, which the crate can
    /// set: an accept into direct slot 6 writes 7 (slots count from 1
    /// there) at the offset `with_optlen` writes.
    #[test]
    fn optlen_is_where_the_kernel_reads_it() {
        let slot = types::DestinationSlot::try_from_slot_target(6).expect("slot");
        let accept = opcode::Accept::new(types::Fd(3), std::ptr::null_mut(), std::ptr::null_mut())
            .file_index(Some(slot))
            .build();
        // SAFETY: as in `with_optlen`: a repr(C) 64-byte plain-old-data entry.
        let raw: [u8; 64] = unsafe { std::mem::transmute::<squeue::Entry, [u8; 64]>(accept) };
        assert_eq!(raw[SQE_OPTLEN..SQE_OPTLEN + 4], 7u32.to_ne_bytes());
        let recv = with_optlen(opcode::RecvMulti::new(types::Fd(3), 9).build(), 65_536);
        // SAFETY: as above.
        let raw: [u8; 64] = unsafe { std::mem::transmute::<squeue::Entry, [u8; 64]>(recv) };
        assert_eq!(raw[SQE_OPTLEN..SQE_OPTLEN + 4], 65_536u32.to_ne_bytes());
        assert_eq!(raw[40..42], 9u16.to_ne_bytes(), "buf_group untouched");
    }
}
