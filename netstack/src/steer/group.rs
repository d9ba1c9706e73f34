//! Binding the sockets of one `SO_REUSEPORT` group.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use super::sys;

/// Options for every socket of a group.
///
/// TCP groups use all fields; UDP groups use `v6_only`, `recv_buffer` and
/// `send_buffer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenOptions {
    /// `listen()` backlog of each listener (the kernel caps it at
    /// `net.core.somaxconn`). Default 4096.
    pub backlog: i32,
    /// `IPV6_V6ONLY` for IPv6 addresses (ignored for IPv4). `None`: dual-stack
    /// on `[::]` (so one group serves IPv4 too), the kernel default
    /// (`net.ipv6.bindv6only`) on other addresses.
    pub v6_only: Option<bool>,
    /// `TCP_FASTOPEN` queue length (pending Fast Open requests per listener);
    /// `None` leaves Fast Open off on the server side. Default `None`.
    pub fastopen: Option<u32>,
    /// `SO_RCVBUF`. Set on the listener before `listen()` so the window scale
    /// offered in the SYN-ACK fits it; accepted sockets inherit it.
    pub recv_buffer: Option<usize>,
    /// `SO_SNDBUF`, inherited by accepted sockets.
    pub send_buffer: Option<usize>,
    /// `TCP_NODELAY`, set on the listener: accepted sockets inherit it
    /// (the kernel clones them from the listener), so an accept costs no
    /// `setsockopt`. Default `true` (a relay writes what it has; Nagle
    /// would hold back small writes).
    pub nodelay: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: 4096,
            v6_only: None,
            fastopen: None,
            recv_buffer: None,
            send_buffer: None,
            nodelay: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Udp,
}

/// Binds `n` TCP listeners to `addr` in one `SO_REUSEPORT` group:
/// `SO_REUSEADDR`, `SO_REUSEPORT`, non-blocking, close-on-exec, listening.
///
/// Port 0 is resolved once: the first socket binds to an ephemeral port and
/// the others bind to that port. Sockets are bound and start listening in
/// order, so socket `i` has index `i` in the kernel's group (which is what
/// [`Steering::Cpu`](super::Steering::Cpu) programs index); hand socket `i`
/// to shard `i`.
pub fn bind_group(addr: SocketAddr, n: usize, opts: &ListenOptions) -> io::Result<Vec<OwnedFd>> {
    bind_members(addr, n, opts, Kind::Tcp)
}

/// Binds `n` UDP sockets to `addr` in one `SO_REUSEPORT` group, like
/// [`bind_group`] (port 0 resolved once, index `i` = socket `i`).
pub fn bind_udp_group(addr: SocketAddr, n: usize, opts: &ListenOptions) -> io::Result<Vec<OwnedFd>> {
    bind_members(addr, n, opts, Kind::Udp)
}

/// Whether `addr` is free for a new group: fails with `AddrInUse` when
/// another socket (another process's group, say) already holds it. A
/// `SO_REUSEPORT` group admits any socket of the same user that asks, so
/// binding alone would silently share the port with a second instance,
/// each taking part of the traffic; a server that means to own its port
/// checks here first. The probe has no `SO_REUSEPORT`, so any listener (TCP)
/// or bound socket (UDP) on the address, or on a wildcard covering it,
/// conflicts; lingering TCP connections (TIME_WAIT, or a previous process's
/// accepted ones) do not. Port 0 is always free. (A process binding between
/// this check and the group's bind is not caught.)
pub fn ensure_free(addr: SocketAddr, udp: bool) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let (ty, proto) = if udp { (Type::DGRAM, Protocol::UDP) } else { (Type::STREAM, Protocol::TCP) };
    let probe = Socket::new(Domain::for_address(addr), ty.cloexec(), Some(proto))?;
    if !udp {
        // TCP: what is left of earlier connections must not count.
        probe.set_reuse_address(true)?;
    }
    if let Some(only) = v6_only_for(addr, None) {
        probe.set_only_v6(only)?;
    }
    match probe.bind(&SockAddr::from(addr)) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{addr} is already in use by another socket (another process?)"),
        )),
        other => other,
    }
}

/// Sets `TCP_NODELAY` on a listening socket (one inherited from an earlier
/// process too), for the sockets it accepts from now on.
pub fn set_listener_nodelay(fd: &impl AsFd) -> io::Result<()> {
    SockRef::from(fd).set_tcp_nodelay(true)
}

/// The address a socket is bound to.
pub fn local_addr(fd: &impl AsFd) -> io::Result<SocketAddr> {
    SockRef::from(fd)
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))
}

fn bind_members(addr: SocketAddr, n: usize, opts: &ListenOptions, kind: Kind) -> io::Result<Vec<OwnedFd>> {
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a reuseport group needs at least one socket",
        ));
    }
    let first = bind_one(addr, opts, kind)?;
    let mut group_addr = addr;
    if addr.port() == 0 {
        // Keep the caller's IP (and IPv6 scope): only the port was unknown.
        group_addr.set_port(local_addr(&first)?.port());
    }
    let mut fds = Vec::with_capacity(n);
    fds.push(first);
    for _ in 1..n {
        fds.push(bind_one(group_addr, opts, kind)?);
    }
    Ok(fds)
}

fn bind_one(addr: SocketAddr, opts: &ListenOptions, kind: Kind) -> io::Result<OwnedFd> {
    let (ty, proto) = match kind {
        Kind::Tcp => (Type::STREAM, Protocol::TCP),
        Kind::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let socket = Socket::new(Domain::for_address(addr), ty.nonblocking().cloexec(), Some(proto))?;
    // Both before bind(): the kernel decides group membership at bind time
    // (UDP) or listen time (TCP) from flags already set.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if let Some(only) = v6_only_for(addr, opts.v6_only) {
        socket.set_only_v6(only)?;
    }
    if let Some(size) = opts.recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(size) = opts.send_buffer {
        socket.set_send_buffer_size(size)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    if kind == Kind::Tcp {
        if opts.nodelay {
            socket.set_tcp_nodelay(true)?;
        }
        if let Some(queue) = opts.fastopen {
            sys::set_tcp_fastopen(socket.as_fd(), queue)?;
        }
        // listen() is what adds a TCP socket to the group, so listening in
        // bind order keeps group index == socket index.
        socket.listen(opts.backlog)?;
    }
    Ok(socket.into())
}

/// The `IPV6_V6ONLY` value to set, if any.
fn v6_only_for(addr: SocketAddr, v6_only: Option<bool>) -> Option<bool> {
    match (addr, v6_only) {
        (SocketAddr::V4(_), _) => None,
        (SocketAddr::V6(_), Some(only)) => Some(only),
        (SocketAddr::V6(v6), None) => v6.ip().is_unspecified().then_some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::time::Duration;

    fn only_v6(fd: &OwnedFd) -> bool {
        SockRef::from(fd).only_v6().unwrap()
    }

    #[test]
    fn port_zero_resolves_to_one_port_for_the_group() {
        let fds = bind_group("127.0.0.1:0".parse().unwrap(), 3, &ListenOptions::default()).unwrap();
        let addrs: Vec<SocketAddr> = fds.iter().map(|fd| local_addr(fd).unwrap()).collect();
        assert_ne!(addrs[0].port(), 0);
        assert!(addrs.iter().all(|a| *a == addrs[0]), "{addrs:?}");
        for fd in &fds {
            let s = SockRef::from(fd);
            assert!(s.reuse_port().unwrap() && s.reuse_address().unwrap());
            assert!(s.is_listener().unwrap());
            assert!(s.nonblocking().unwrap());
        }
    }

    #[test]
    fn udp_port_zero_resolves_to_one_port_for_the_group() {
        let fds = bind_udp_group("127.0.0.1:0".parse().unwrap(), 2, &ListenOptions::default()).unwrap();
        assert_eq!(local_addr(&fds[0]).unwrap(), local_addr(&fds[1]).unwrap());
        assert!(SockRef::from(&fds[1]).reuse_port().unwrap());
    }

    #[test]
    fn empty_group_is_an_error() {
        let err = bind_group("127.0.0.1:0".parse().unwrap(), 0, &ListenOptions::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn v6_only_defaults_to_dual_stack_on_any() {
        assert_eq!(v6_only_for("[::]:1".parse().unwrap(), None), Some(false));
        assert_eq!(v6_only_for("[::1]:1".parse().unwrap(), None), None);
        assert_eq!(v6_only_for("[::1]:1".parse().unwrap(), Some(true)), Some(true));
        assert_eq!(v6_only_for("0.0.0.0:1".parse().unwrap(), Some(true)), None);

        let dual = bind_group("[::]:0".parse().unwrap(), 2, &ListenOptions::default()).unwrap();
        assert!(dual.iter().all(|fd| !only_v6(fd)));
        let port = local_addr(&dual[0]).unwrap().port();
        // Dual-stack: an IPv4 client reaches the IPv6 group.
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).unwrap();
    }

    #[test]
    fn v6_only_true_refuses_ipv4() {
        let opts = ListenOptions { v6_only: Some(true), ..ListenOptions::default() };
        let fds = bind_group("[::]:0".parse().unwrap(), 2, &opts).unwrap();
        assert!(fds.iter().all(only_v6));
        let port = local_addr(&fds[0]).unwrap().port();
        let v4 = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2));
        assert_eq!(v4.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
        let v6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, port).into();
        TcpStream::connect_timeout(&v6, Duration::from_secs(2)).unwrap();
    }

    #[test]
    fn buffers_fastopen_and_accepted_options() {
        let opts = ListenOptions {
            fastopen: Some(64),
            recv_buffer: Some(256 * 1024),
            send_buffer: Some(128 * 1024),
            ..ListenOptions::default()
        };
        let fds = bind_group("127.0.0.1:0".parse().unwrap(), 1, &opts).unwrap();
        let listener = SockRef::from(&fds[0]);
        // Linux doubles the requested size for bookkeeping overhead.
        assert!(listener.recv_buffer_size().unwrap() >= 256 * 1024);
        assert!(listener.send_buffer_size().unwrap() >= 128 * 1024);
        let _client = TcpStream::connect(local_addr(&fds[0]).unwrap()).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.recv_buffer_size().unwrap() >= 256 * 1024, "inherited from the listener");
        assert!(accepted.tcp_nodelay().unwrap(), "TCP_NODELAY inherited from the listener");
    }
}
