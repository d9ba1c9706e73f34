//! TCP echo ping-pong over loopback: a shard echo server against a tokio
//! one, driven by the same client.
//!
//! - Ours: one shard pinned to `SERVER_CPU`, serving the way
//!   `appliance/src/echo.rs` does (multishot accept, multishot receive
//!   into a provided-buffer ring, the received buffer sent back as is).
//! - Peer: a tokio current-thread runtime on a thread pinned to
//!   `SERVER_CPU`: accept loop, one task per connection, read into a
//!   buffer and `write_all` it back.
//! - Client: one thread pinned to `CLIENT_CPU`, a plain level-triggered
//!   epoll loop over `CONNS` connections (TCP_NODELAY), each sending a
//!   message, reading exactly that many bytes back (checked), and sending
//!   the next, until the round's deadline.
//!
//! Rounds alternate between the servers (both stay up all along; the idle
//! one sleeps). Reported: requests/s, and the server thread's CPU time per
//! request from `/proc/self/task/<tid>/stat` (utime + stime; for ours also
//! any io_uring worker threads). Run with
//! `cargo bench -p shard --bench echo`.
#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use shard::future::{select, Either};
use shard::ops::{self, Slice};
use shard::reactor::{BufRing, ProvidedBuf};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use bench_support::{fail, median, quick, try_pin_to as pin_to};

/// Connections per round.
const CONNS: usize = 100;
/// Message sizes.
const SIZES: [usize; 2] = [64, 1024];
/// Length of one round.
fn round_time() -> Duration {
    if quick() {
        Duration::from_millis(200)
    } else {
        Duration::from_millis(2500)
    }
}
/// Rounds per server and size.
fn rounds() -> usize {
    if quick() {
        1
    } else {
        3
    }
}
/// CPU of the server under test (ours or tokio's).
const SERVER_CPU: usize = 1;
/// CPU of the client.
const CLIENT_CPU: usize = 0;
/// Provided buffers of our server, and their size.
const BUFFERS: u16 = 512;
const BUF_SIZE: usize = 4096;
/// No progress for this long is a hang, reported as an error.
const STUCK: Duration = Duration::from_secs(5);
/// The whole bench is aborted after this long.
const WATCHDOG: Duration = Duration::from_secs(150);

fn main() {
    let started = Instant::now();
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        fail(&format!("the benchmark did not finish within {WATCHDOG:?}"));
    });
    // SAFETY: sysconf has no memory preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };

    let ours = start_ours().unwrap_or_else(|e| fail(&format!("our server: {e}")));
    let peer = start_tokio().unwrap_or_else(|e| fail(&format!("tokio server: {e}")));

    println!("# shard echo benchmark");
    println!();
    println!("command: `cargo bench -p shard --bench echo`");
    println!();
    let round_time_v = round_time();
    let rounds_v = rounds();
    println!(
        "setup: {CONNS} connections over loopback, ping-pong (send, read the same bytes back, repeat), \
         {round_time_v:?} per round, {rounds_v} rounds per server and size, alternating; client: one epoll \
         thread on cpu {CLIENT_CPU}; servers: one thread each, {}; tokio {}",
        ours.placement, peer.placement
    );
    println!();

    let mut results: Vec<(usize, Vec<Round>, Vec<Round>)> = Vec::new();
    for size in SIZES {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..rounds() {
            let r = client_round(ours.addr, size, ours.tid, true, ticks)
                .unwrap_or_else(|e| fail(&format!("shard server, {size} B: {e}")));
            let t = client_round(peer.addr, size, peer.tid, false, ticks)
                .unwrap_or_else(|e| fail(&format!("tokio server, {size} B: {e}")));
            eprintln!(
                "{size} B round {round}: shard {:.0} req/s {:.2} us cpu/req | tokio {:.0} req/s {:.2} us cpu/req",
                r.rate(),
                r.server_us_per_req(),
                t.rate(),
                t.server_us_per_req()
            );
            a.push(r);
            b.push(t);
        }
        results.push((size, a, b));
    }

    ours.stop();
    peer.stop();

    let rounds_v = rounds();
    println!("## TCP echo ping-pong, requests/s (median of {rounds_v})");
    println!();
    println!(
        "| size | server | median req/s | best req/s | server CPU us/req | of which user | server CPU busy \
         | client CPU busy |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for (size, a, b) in &results {
        for (name, runs) in [("shard (io_uring, 1 shard)", a), ("tokio current_thread", b)] {
            println!(
                "| {size} B | {name} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0}% | {:.0}% |",
                median(runs, Round::rate),
                runs.iter().map(Round::rate).fold(0.0, f64::max),
                median(runs, Round::server_us_per_req),
                median(runs, Round::server_user_us_per_req),
                median(runs, Round::server_busy) * 100.0,
                median(runs, Round::client_busy) * 100.0,
            );
        }
    }
    println!();
    for (size, a, b) in &results {
        println!(
            "{size} B: ratio ours/tokio requests/s: **{:.2}x** (target >= 1.3x); server CPU per request \
             ours/tokio: {:.2}x",
            median(a, Round::rate) / median(b, Round::rate),
            median(a, Round::server_us_per_req) / median(b, Round::server_us_per_req),
        );
    }
    let io_workers = results.iter().flat_map(|(_, a, _)| a).map(|r| r.io_workers).max().unwrap_or(0);
    println!();
    println!(
        "CPU from /proc/self/task/<tid>/stat (utime+stime, {ticks:.0} ticks/s); io_uring worker threads \
         seen during our rounds: {io_workers}"
    );
    println!("total bench time: {:.1} s", started.elapsed().as_secs_f64());
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// `SO_REUSEADDR`, non-blocking, `127.0.0.1:0`, backlog 1024.
fn listener() -> io::Result<(Socket, SocketAddr)> {
    let s = Socket::new(Domain::IPV4, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    s.listen(1024)?;
    let addr = s.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an inet address"))?;
    Ok((s, addr))
}

/// A server running on its own thread.
struct Server {
    addr: SocketAddr,
    tid: i32,
    placement: String,
    stop: Box<dyn FnOnce()>,
}

impl Server {
    fn stop(self) {
        (self.stop)()
    }
}

// ------------------------------------------------------------- our server

fn start_ours() -> Result<Server, String> {
    let (sock, addr) = listener().map_err(|e| format!("listen: {e}"))?;
    let listen_fd = OwnedFd::from(sock);
    let builder = || shard::Builder::new().grace(Duration::from_millis(200)).name("echo-shard");
    let (rt, placement) = match builder().cpus(vec![SERVER_CPU]).build() {
        Ok(rt) => (rt, format!("shard pinned to cpu {SERVER_CPU}")),
        Err(e) => {
            let rt = builder().shards(1).pin(false).build().map_err(|e| format!("runtime: {e}"))?;
            (rt, format!("shard NOT pinned ({e})"))
        }
    };
    let handle = rt.handle();
    let stopper = handle.clone();
    let (tid_tx, tid_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        rt.run_with_handle(handle, move || async move {
            let _ = tid_tx.send(gettid());
            let mut acceptor = shard::spawn_local(accept_loop(listen_fd));
            match select(shard::stopping(), &mut acceptor).await {
                Either::Left(()) => {
                    acceptor.abort();
                    Ok(())
                }
                Either::Right(r) => r.map_err(|e| format!("acceptor: {e:?}"))?,
            }
        })
    });
    let tid = tid_rx.recv_timeout(STUCK).map_err(|_| {
        if thread.is_finished() {
            "the runtime exited before serving".to_string()
        } else {
            "the runtime did not start".to_string()
        }
    })?;
    let stop = Box::new(move || {
        stopper.stop();
        match thread.join() {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("warning: shard server: {e}"),
            Ok(Err(e)) => eprintln!("warning: shard runtime: {e}"),
            Err(_) => eprintln!("warning: shard server thread panicked"),
        }
    });
    Ok(Server { addr, tid, placement, stop })
}

/// One multishot accept; a task per connection.
async fn accept_loop(listener: OwnedFd) -> Result<(), String> {
    let group = BufRing::new(BUFFERS, BUF_SIZE).map_err(|e| format!("buffer ring: {e}"))?;
    let mut accepts = ops::accept_multi(listener.as_raw_fd());
    loop {
        let Some(mut c) = accepts.next().await else {
            // The kernel ended the multishot accept: arm a new one.
            accepts = ops::accept_multi(listener.as_raw_fd());
            continue;
        };
        match c.io_result().map(|_| c.take_fd()) {
            Ok(Some(fd)) => {
                shard::spawn_local(connection(fd, group.clone())).detach();
            }
            Ok(None) => eprintln!("accept: completion without a descriptor"),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                shard::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                eprintln!("accept: {e}");
                shard::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

async fn connection(fd: OwnedFd, group: BufRing) {
    let raw = fd.as_raw_fd();
    let _ = SockRef::from(&fd).set_tcp_nodelay(true);
    loop {
        let mut rx = ops::recv_multi(raw, &group);
        while let Some(c) = rx.next().await {
            if c.result == -libc::ENOBUFS {
                // Every buffer is out being echoed: let some sends finish,
                // then re-arm.
                shard::yield_now().await;
                break;
            }
            if c.result <= 0 {
                return;
            }
            let Some(buf) = c.buf else { return };
            if send_all(raw, buf).await.is_err() {
                return;
            }
        }
    }
}

/// Sends the received buffer back, resuming after partial sends.
async fn send_all(fd: RawFd, buf: ProvidedBuf) -> io::Result<()> {
    let len = buf.len();
    let mut slice = Slice::new(buf, 0, len);
    loop {
        let (res, back) = ops::send(fd, slice).await;
        let sent = res?;
        if sent == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let begin = back.begin() + sent;
        if begin >= len {
            return Ok(());
        }
        slice = Slice::new(back.into_inner(), begin, len);
    }
}

// ----------------------------------------------------------- tokio server

fn start_tokio() -> Result<Server, String> {
    let (sock, addr) = listener().map_err(|e| format!("listen: {e}"))?;
    let std_listener = std::net::TcpListener::from(sock);
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    let (tid_tx, tid_rx) = mpsc::channel();
    let thread = std::thread::Builder::new().name("tokio-echo".into());
    let thread = thread.spawn(move || -> Result<(), String> {
        let pinned = pin_to(SERVER_CPU);
        let _ = tid_tx.send((gettid(), pinned.map_err(|e| e.to_string())));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
            loop {
                let (mut s, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
                if flag.load(Ordering::SeqCst) {
                    return Ok(());
                }
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; BUF_SIZE];
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        })
    });
    let thread = thread.map_err(|e| format!("spawn: {e}"))?;
    let (tid, pinned) =
        tid_rx.recv_timeout(STUCK).map_err(|_| "the tokio thread did not start".to_string())?;
    let placement = match pinned {
        Ok(()) => format!("pinned to cpu {SERVER_CPU}"),
        Err(e) => format!("NOT pinned ({e})"),
    };
    let stop = Box::new(move || {
        stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&addr, STUCK);
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: tokio server: {e}"),
            Err(_) => eprintln!("warning: tokio server thread panicked"),
        }
    });
    Ok(Server { addr, tid, placement, stop })
}

// ----------------------------------------------------------------- client

/// What one round measured.
#[derive(Debug, Clone, Copy)]
struct Round {
    requests: u64,
    elapsed: Duration,
    /// Server CPU seconds during the round, in user space and in the kernel.
    server_user: f64,
    server_sys: f64,
    /// Client CPU seconds during the round.
    client_cpu: f64,
    /// io_uring worker threads seen.
    io_workers: usize,
}

impl Round {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn server_us_per_req(&self) -> f64 {
        (self.server_user + self.server_sys) * 1e6 / self.requests as f64
    }
    fn server_user_us_per_req(&self) -> f64 {
        self.server_user * 1e6 / self.requests as f64
    }
    fn server_busy(&self) -> f64 {
        (self.server_user + self.server_sys) / self.elapsed.as_secs_f64()
    }
    fn client_busy(&self) -> f64 {
        self.client_cpu / self.elapsed.as_secs_f64()
    }
}

/// (utime, stime) of thread `tid` of this process, in clock ticks.
fn thread_ticks(tid: i32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it start with the
    // state (field 3), so utime (14) and stime (15) are at 11 and 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// (user, system) CPU ticks of the server thread, plus of io_uring worker
/// threads (`iou-*`) if asked; and how many such workers exist.
fn server_ticks(tid: i32, with_io_workers: bool) -> ((u64, u64), usize) {
    let mut total = thread_ticks(tid).unwrap_or((0, 0));
    let mut workers = 0;
    if with_io_workers {
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let Some(t) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                if comm.starts_with("iou-") {
                    workers += 1;
                    let (u, s) = thread_ticks(t).unwrap_or((0, 0));
                    total = (total.0 + u, total.1 + s);
                }
            }
        }
    }
    (total, workers)
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    inp: Vec<u8>,
    got: usize,
    seq: u64,
    done: bool,
}

impl Conn {
    /// Stamps the next sequence number and sends the whole message.
    fn send(&mut self) -> io::Result<()> {
        self.out[..8].copy_from_slice(&self.seq.to_le_bytes());
        let mut off = 0;
        let start = Instant::now();
        while off < self.out.len() {
            match (&self.stream).write(&self.out[off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => off += n,
                // Never seen in a ping-pong (the send buffer is empty), but
                // be correct: wait for room.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if start.elapsed() > STUCK {
                        return Err(io::Error::other("send buffer full for too long"));
                    }
                    std::thread::yield_now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what is there; true once the whole echo arrived and matched.
    fn receive(&mut self) -> io::Result<bool> {
        let size = self.inp.len();
        match (&self.stream).read(&mut self.inp[self.got..]) {
            Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection")),
            Ok(n) => {
                self.got += n;
                if self.got < size {
                    return Ok(false);
                }
                self.got = 0;
                if self.inp != self.out {
                    return Err(io::Error::other(format!("echo of message {} does not match", self.seq)));
                }
                self.seq += 1;
                Ok(true)
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// One round against the server at `addr`, on a thread pinned to
/// `CLIENT_CPU`.
fn client_round(
    addr: SocketAddr,
    size: usize,
    server_tid: i32,
    ours: bool,
    ticks: f64,
) -> Result<Round, String> {
    std::thread::Builder::new()
        .name("echo-client".into())
        .spawn(move || {
            pin_to(CLIENT_CPU).map_err(|e| format!("pin client: {e}"))?;
            run_client(addr, size, server_tid, ours, ticks).map_err(|e| e.to_string())
        })
        .map_err(|e| format!("spawn client: {e}"))?
        .join()
        .map_err(|_| "client thread panicked".to_string())?
}

fn run_client(addr: SocketAddr, size: usize, server_tid: i32, ours: bool, ticks: f64) -> io::Result<Round> {
    let mut conns = Vec::with_capacity(CONNS);
    for i in 0..CONNS {
        let stream = TcpStream::connect_timeout(&addr, STUCK)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let fill = (i % 251) as u8;
        conns.push(Conn { stream, out: vec![fill; size], inp: vec![0; size], got: 0, seq: 0, done: false });
    }
    // SAFETY: epoll_create1 has no memory preconditions; checked below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ep` is a fresh descriptor nobody else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    for (i, c) in conns.iter().enumerate() {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
        let (epfd, fd) = (ep.as_raw_fd(), c.stream.as_raw_fd());
        // SAFETY: both fds are open and `ev` is a valid event for the call.
        let rc = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; CONNS];
    let wait = |events: &mut [libc::epoll_event]| -> io::Result<usize> {
        // SAFETY: `events` is a writable array of `len` epoll_event.
        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, 100) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
        }
        Ok(n as usize)
    };

    // Warm-up: one round trip per connection (all accepted and serving).
    let mut pending = CONNS;
    conns.iter_mut().try_for_each(Conn::send)?;
    let warm_deadline = Instant::now() + STUCK;
    while pending > 0 {
        let n = wait(&mut events)?;
        for ev in &events[..n] {
            if conns[ev.u64 as usize].receive()? {
                pending -= 1;
            }
        }
        if Instant::now() > warm_deadline {
            return Err(io::Error::other(format!("{pending} connections got no echo within {STUCK:?}")));
        }
    }

    // The measured round.
    let me = gettid();
    let (server0, _) = server_ticks(server_tid, ours);
    let client0 = thread_ticks(me).unwrap_or((0, 0));
    let t0 = Instant::now();
    let deadline = t0 + round_time();
    let mut requests = 0u64;
    let mut active = CONNS;
    conns.iter_mut().try_for_each(Conn::send)?;
    let mut last_progress = t0;
    while active > 0 {
        let n = wait(&mut events)?;
        let now = Instant::now();
        for ev in &events[..n] {
            let c = &mut conns[ev.u64 as usize];
            if c.done || !c.receive()? {
                continue;
            }
            requests += 1;
            if now < deadline {
                c.send()?;
            } else {
                c.done = true;
                active -= 1;
            }
        }
        if n > 0 {
            last_progress = now;
        } else if now - last_progress > STUCK {
            return Err(io::Error::other(format!("no echo for {STUCK:?} ({active} connections waiting)")));
        }
    }
    let elapsed = t0.elapsed();
    let (server1, io_workers) = server_ticks(server_tid, ours);
    let client1 = thread_ticks(me).unwrap_or((0, 0));
    for c in &conns {
        let _ = c.stream.shutdown(Shutdown::Both);
    }
    Ok(Round {
        requests,
        elapsed,
        server_user: server1.0.saturating_sub(server0.0) as f64 / ticks,
        server_sys: server1.1.saturating_sub(server0.1) as f64 / ticks,
        client_cpu: (client1.0 + client1.1).saturating_sub(client0.0 + client0.1) as f64 / ticks,
        io_workers,
    })
}
