//! AF_XDP sockets over a veth pair (root only; skipped otherwise).
//!
//! End `a` of a [`VethPair`] gets the XDP program for one UDP port and an
//! AF_XDP socket per queue, on a shard; end `b` sends datagrams to that
//! port from several sockets (distinct flows, so they spread over the
//! queues where the attach mode allows). Checked: every datagram arrives
//! once and intact through frames recycled many times over; a service
//! holding every frame only makes the kernel count drops, and receiving
//! resumes when it lets go; frames outlive their socket; other ports still
//! reach the kernel's sockets; zero-copy is refused clearly on veth.
//!
//! UDP checksums are not verified: a veth sender offloads them
//! (`CHECKSUM_PARTIAL`), so the frames carry only the pseudo-header sum.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket as StdUdp};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_support::netns::{self, VethPair};
use netstack::wire::{ethernet, ipv4, udp, EtherType, IpProtocol};
use netstack::xdp::program::{self, AttachMode, Filter, ProgramCounters, XdpProgram};
use netstack::xdp::socket::{BindMode, UmemConfig, XskFrame, XskSocket, XskStats};
use shard::future::{select, Either};

/// The port the program redirects.
const PORT: u16 = 9100;
/// A port it leaves to the kernel.
const OTHER_PORT: u16 = 9101;
/// Datagrams of the main phase: several times the UMEM's frames.
const DATAGRAMS: u32 = 5_000;
/// Datagrams the sender lets be in flight: well below the UMEM's frames,
/// so a receiver that recycles never runs out and nothing is dropped.
const WINDOW: u64 = 256;
/// Sender sockets: distinct flows, hashed over the sender's queues.
const FLOWS: usize = 16;
/// How long any phase may take.
const PHASE: Duration = Duration::from_secs(10);

fn skip_unless_root() -> bool {
    if netns::is_root() {
        return false;
    }
    eprintln!("skipping: AF_XDP and network namespaces need root");
    true
}

/// Datagram `seq`'s payload: its number, then filler whose length (4 to
/// 1203 bytes) and bytes vary with it.
fn payload(seq: u32) -> Vec<u8> {
    let len = 4 + (seq as usize * 7919) % 1200;
    let mut p = seq.to_be_bytes().to_vec();
    p.extend((4..len).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8));
    p
}

/// Everything the shard side needs from the test: the sender's sockets
/// (made in namespace `b`, usable from any thread), the addresses, and a
/// kernel socket on the other port in namespace `a`.
#[derive(Clone)]
struct Ctx {
    flows: Arc<Vec<StdUdp>>,
    to: SocketAddrV4,
    src: Ipv4Addr,
    kernel: Arc<StdUdp>,
    queues: u32,
    mode: AttachMode,
    cfg: UmemConfig,
}

impl Ctx {
    /// Sends datagrams `seqs` over one flow, as fast as it goes.
    fn blast(&self, seqs: Range<u32>) {
        for seq in seqs {
            self.flows[0].send_to(&payload(seq), self.to).expect("send");
        }
    }
}

/// Checks a received frame layer by layer (Ethernet, IPv4 with its header
/// checksum, UDP to `PORT`), narrows it to the UDP payload, checks that
/// against what was sent and returns the datagram's number.
fn check_frame(frame: &mut XskFrame, ctx: &Ctx) -> u32 {
    let (offset, len) = {
        let eth = ethernet::Frame::new_checked(frame.as_ref()).expect("ethernet");
        assert_eq!(eth.ethertype(), EtherType::IPV4);
        let ip = ipv4::Packet::new_checked(eth.payload()).expect("ipv4");
        let ip_repr = ipv4::Repr::parse(&ip).expect("ipv4 header");
        assert_eq!(
            (ip_repr.src_addr, ip_repr.dst_addr, ip_repr.protocol),
            (ctx.src, *ctx.to.ip(), IpProtocol::UDP)
        );
        let dgram = udp::Packet::new_checked(ip.payload()).expect("udp");
        assert_eq!(dgram.dst_port(), PORT);
        let offset = frame.len() - ip.payload().len() + 8;
        (offset, dgram.payload().len())
    };
    frame.narrow(offset..offset + len);
    let bytes = frame.as_ref();
    assert!(bytes.len() >= 4 && bytes.len() == frame.len(), "payload of {} bytes", bytes.len());
    let seq = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    assert!(bytes == payload(seq).as_slice(), "payload of datagram {seq} differs");
    seq
}

/// Sends datagrams `seqs` round-robin over the flows, keeping at most
/// `WINDOW` ahead of `received`.
fn send_windowed(ctx: &Ctx, seqs: Range<u32>, received: &AtomicU64) {
    let deadline = Instant::now() + PHASE;
    for (i, seq) in seqs.enumerate() {
        while (i as u64) >= received.load(Ordering::Acquire) + WINDOW {
            assert!(Instant::now() < deadline, "receiver stalled at {}", received.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_micros(50));
        }
        ctx.flows[i % ctx.flows.len()].send_to(&payload(seq), ctx.to).expect("send");
    }
}

/// Waits until one of the sockets (one or two) has a frame.
async fn any_readable(socks: &[XskSocket]) -> io::Result<()> {
    match socks {
        [a] => a.readable().await,
        [a, b] => match select(a.readable(), b.readable()).await {
            Either::Left(r) | Either::Right(r) => r,
        },
        _ => unreachable!("one or two sockets"),
    }
}

/// Receives until datagrams `seqs` all arrived, each checked and each
/// once, dropping (so recycling) every frame at once. Publishes progress in
/// `received`; returns the count per socket.
async fn receive_all(socks: &[XskSocket], seqs: Range<u32>, ctx: &Ctx, received: &AtomicU64) -> Vec<u64> {
    let deadline = Instant::now() + PHASE;
    let want = seqs.len() as u64;
    let mut per_socket = vec![0u64; socks.len()];
    let mut seen = HashSet::new();
    let mut frames = Vec::with_capacity(64);
    while (seen.len() as u64) < want {
        let wait = shard::time::timeout_at(deadline, any_readable(socks)).await;
        wait.unwrap_or_else(|_| panic!("{} of {want} datagrams in {PHASE:?}", seen.len())).expect("readable");
        for (sock, count) in socks.iter().zip(&mut per_socket) {
            let n = sock.try_recv(&mut frames, 64);
            for mut frame in frames.drain(..) {
                let seq = check_frame(&mut frame, ctx);
                assert!(seqs.contains(&seq) && seen.insert(seq), "datagram {seq} unexpected or twice");
            }
            *count += n as u64;
            received.fetch_add(n as u64, Ordering::Release);
        }
    }
    per_socket
}

/// Hands the kernel the frames dropped since the last receive, as a
/// service's next `try_recv` or `readable` would (the blasts here are over
/// before the receiver looks again; a real sender does not wait for it).
fn hand_back(socks: &[XskSocket]) {
    let mut none = Vec::new();
    socks.iter().for_each(|s| assert_eq!(s.try_recv(&mut none, 64), 0, "nothing was sent"));
}

/// Takes every frame the sockets get until none came for a while, holding
/// them all.
async fn hold_until_quiet(socks: &[XskSocket]) -> Vec<XskFrame> {
    let mut held = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_millis(300) {
        let got: usize = socks.iter().map(|s| s.try_recv(&mut held, usize::MAX)).sum();
        if got > 0 {
            last = Instant::now();
        }
        shard::time::sleep(Duration::from_millis(2)).await;
    }
    held
}

/// What the shard side saw.
#[derive(Debug)]
struct Report {
    per_socket: Vec<u64>,
    main_phase: Duration,
    held: usize,
    stats: Vec<XskStats>,
    counters: ProgramCounters,
}

/// Binds a copy-mode socket per queue (after checking zero-copy is refused
/// clearly) and puts each in the program's map.
fn bind_all(ifindex: u32, prog: &XdpProgram, ctx: &Ctx) -> Vec<XskSocket> {
    let zc = XskSocket::bind(ifindex, 0, BindMode::ZeroCopy, &ctx.cfg).expect_err("zero-copy on veth");
    assert_eq!(zc.kind(), io::ErrorKind::Unsupported, "{zc}");
    assert!(zc.to_string().contains("does not support AF_XDP zero-copy"), "{zc}");
    let socks: Vec<XskSocket> = (0..ctx.queues)
        .map(|q| XskSocket::bind(ifindex, q, BindMode::Copy, &ctx.cfg).expect("bind in copy mode"))
        .collect();
    for s in &socks {
        prog.set_socket(s.queue(), s.fd()).expect("set socket");
    }
    socks
}

/// Holds every frame while twice the UMEM's worth arrives on one flow (so
/// one queue): the kernel must count drops, the socket starvation, and
/// receiving must resume once the frames are dropped.
async fn starve_and_recover(socks: &[XskSocket], ctx: &Ctx, first: u32) -> (usize, Vec<u64>) {
    let flood = first..first + 2 * ctx.cfg.frames;
    hand_back(socks);
    ctx.blast(flood.clone());
    let mut held = hold_until_quiet(socks).await;
    let mut seen = HashSet::new();
    for f in &mut held {
        let seq = check_frame(f, ctx);
        assert!(flood.contains(&seq) && seen.insert(seq), "held datagram {seq} unexpected or twice");
    }
    let stats: Vec<XskStats> = socks.iter().map(|s| s.stats().expect("stats")).collect();
    assert_eq!(held.len(), ctx.cfg.frames as usize, "every frame is held, no more");
    let starved =
        stats.iter().find(|s| s.fill_starved > 0).unwrap_or_else(|| panic!("no starvation: {stats:?}"));
    assert!(starved.rx_dropped > 0 && starved.rx_fill_ring_empty > 0, "{starved:?}");
    let n = held.len();
    drop(held);
    hand_back(socks);
    let again = flood.end..flood.end + 100;
    ctx.blast(again.clone());
    let per_socket = receive_all(socks, again, ctx, &AtomicU64::new(0)).await;
    (n, per_socket)
}

/// Datagrams to another port go past the program to the kernel's socket.
fn other_port_reaches_the_kernel(ctx: &Ctx) {
    let to = SocketAddrV4::new(*ctx.to.ip(), OTHER_PORT);
    ctx.flows[0].send_to(b"to the kernel", to).expect("send");
    let mut buf = [0u8; 64];
    let (n, from) = ctx.kernel.recv_from(&mut buf).expect("kernel socket receives");
    assert_eq!((&buf[..n], from.ip()), (&b"to the kernel"[..], ctx.src.into()));
}

/// Frames received, then their socket (and program) dropped: the frames
/// still read what was received, and dropping them afterwards is fine.
async fn frames_outlive_their_socket(socks: Vec<XskSocket>, prog: XdpProgram, ctx: &Ctx, first: u32) {
    hand_back(&socks);
    ctx.blast(first..first + 10);
    let held = hold_until_quiet(&socks).await;
    assert_eq!(held.len(), 10);
    drop(socks);
    drop(prog);
    for mut f in held {
        assert!((first..first + 10).contains(&check_frame(&mut f, ctx)));
    }
}

/// The main phase's progress, shared with the sender thread.
#[derive(Default)]
struct Progress {
    /// The sockets are bound: the sender may start.
    go: AtomicBool,
    /// Datagrams received so far (the sender's window slides on it).
    received: AtomicU64,
}

async fn xdp_side(ifname: String, ctx: Ctx, progress: Arc<Progress>) -> Report {
    let ifindex = program::ifindex(&ifname).expect("ifindex");
    let prog = XdpProgram::load(&Filter { port: PORT, addr: None, max_len: None }, ctx.queues)
        .expect("load program");
    let _link = prog.attach(ifindex, ctx.mode).expect("attach");
    let socks = bind_all(ifindex, &prog, &ctx);
    progress.go.store(true, Ordering::Release);
    let started = Instant::now();
    let mut per_socket = receive_all(&socks, 0..DATAGRAMS, &ctx, &progress.received).await;
    let main_phase = started.elapsed();
    let (held, more) = starve_and_recover(&socks, &ctx, DATAGRAMS).await;
    other_port_reaches_the_kernel(&ctx);
    let stats: Vec<XskStats> = socks.iter().map(|s| s.stats().expect("stats")).collect();
    let counters = prog.counters().expect("program counters");
    per_socket.iter_mut().zip(more).for_each(|(total, more)| *total += more);
    frames_outlive_their_socket(socks, prog, &ctx, DATAGRAMS + 3 * ctx.cfg.frames).await;
    Report { per_socket, main_phase, held, stats, counters }
}

/// Makes the pair and the sender, runs [`xdp_side`] on a shard in
/// namespace `a`, and checks the totals.
fn receive_over_veth(queues: u32, mode: AttachMode) {
    let pair = VethPair::with_queues(queues).expect("veth pair");
    let flows =
        netns::in_ns(pair.ns_b(), || (0..FLOWS).map(|_| StdUdp::bind("0.0.0.0:0").expect("bind")).collect());
    let kernel = netns::in_ns(pair.ns_a(), || StdUdp::bind((pair.addr_a(), OTHER_PORT)).expect("bind"));
    kernel.set_read_timeout(Some(PHASE)).expect("timeout");
    let cfg = UmemConfig::default();
    let ctx = Ctx {
        flows: Arc::new(flows),
        to: SocketAddrV4::new(pair.addr_a(), PORT),
        src: pair.addr_b(),
        kernel: Arc::new(kernel),
        queues,
        mode,
        cfg,
    };
    let progress = Arc::new(Progress::default());
    let sender = {
        let (ctx, progress) = (ctx.clone(), Arc::clone(&progress));
        std::thread::spawn(move || {
            while !progress.go.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            send_windowed(&ctx, 0..DATAGRAMS, &progress.received);
        })
    };
    let (ifname, shard_ctx) = (pair.if_a().to_owned(), ctx.clone());
    let report = netns::in_ns(pair.ns_a(), move || {
        shard::run_single(move || xdp_side(ifname, shard_ctx, progress)).expect("runtime")
    });
    sender.join().expect("sender");
    eprintln!("{queues} queue(s), {mode:?}: {report:?}");
    let extra = 100; // the recovery phase's datagrams
    assert_eq!(report.per_socket.iter().sum::<u64>(), u64::from(DATAGRAMS) + extra);
    assert_eq!(report.held, ctx.cfg.frames as usize);
    for (stats, &got) in report.stats.iter().zip(&report.per_socket) {
        // Frames received: the main and recovery phases' plus the held ones.
        assert!(stats.frames == got || stats.frames == got + report.held as u64, "{stats:?} vs {got}");
    }
    if mode == AttachMode::Native {
        // Native XDP on a veth sees the queue the sender's flow hashed to;
        // 16 flows all on one of two queues has odds of 2^-15. (Generic XDP
        // on a veth sees every packet on queue 0.)
        assert!(report.per_socket.iter().all(|&n| n > 0), "{:?}", report.per_socket);
    }
    let frames: u64 = report.stats.iter().map(|s| s.frames).sum();
    assert_eq!(frames, u64::from(DATAGRAMS) + extra + report.held as u64);
    let dropped: u64 = report.stats.iter().map(|s| s.rx_dropped).sum();
    assert!(report.counters.matched >= frames + dropped, "{:?}", report.counters);
    assert!(report.counters.passed >= 1, "the other port's datagram was passed");
    let rate = f64::from(DATAGRAMS) / report.main_phase.as_secs_f64();
    eprintln!("main phase: {DATAGRAMS} datagrams in {:?} ({rate:.0}/s, window {WINDOW})", report.main_phase);
}

#[test]
fn one_queue_generic() {
    if skip_unless_root() {
        return;
    }
    receive_over_veth(1, AttachMode::Generic);
}

#[test]
fn two_queues_generic() {
    if skip_unless_root() {
        return;
    }
    receive_over_veth(2, AttachMode::Generic);
}

#[test]
fn one_queue_native() {
    if skip_unless_root() {
        return;
    }
    receive_over_veth(1, AttachMode::Native);
}

#[test]
fn two_queues_native() {
    if skip_unless_root() {
        return;
    }
    receive_over_veth(2, AttachMode::Native);
}
