//! The XDP program on real interfaces: a veth pair between two network
//! namespaces (bench_support::netns), the program attached to end `a`,
//! datagrams sent from end `b` to ordinary UDP sockets on `a`.
//!
//! With no AF_XDP socket in the map, matched datagrams take the program's
//! `XDP_PASS` fallback, so every datagram must still reach the kernel
//! sockets, and the counters tell matched from passed.
//!
//! Needs root (namespaces, CAP_BPF, CAP_NET_ADMIN); without it the tests
//! that need it print a note and return. As root they must pass: a
//! failure to load or attach is a failure, not a skip.
//!
//! Native XDP on veth (Linux 6.18): works on the receiving end alone. With
//! a program attached, veth runs its receive path through NAPI and hands
//! each frame to the program before building the stack's socket buffer;
//! the peer needs no program and no GRO for that (those are only needed
//! for frames *redirected into* a veth with `ndo_xdp_xmit`).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench_support::netns::{in_ns, is_root, VethPair};
use netstack::xdp::program::{ifindex, AttachMode, Filter, ProgramCounters, XdpLink, XdpProgram};

/// The filtered port and another one.
const PORT: u16 = 9000;
const OTHER: u16 = 9001;
/// Re-running this binary as the child of the SIGKILL test: the namespace.
const CHILD_NS: &str = "XDP_PROGRAM_TEST_CHILD_NS";
const CHILD_READY: &str = "xdp-program-child-attached";

fn root_or_skip(test: &str) -> bool {
    if !is_root() {
        eprintln!("skipping {test}: needs root (network namespaces, CAP_BPF, CAP_NET_ADMIN)");
    }
    is_root()
}

fn any_addr(port: u16) -> Filter {
    Filter { port, addr: None, max_len: None }
}

/// Attaches `prog` to end `a` of `pair` (looked up inside its namespace).
fn attach(pair: &VethPair, prog: &XdpProgram, mode: AttachMode) -> XdpLink {
    let link = in_ns(pair.ns_a(), || {
        let index = ifindex(pair.if_a())?;
        prog.attach(index, mode)
    });
    link.unwrap_or_else(|e| panic!("attaching in {mode:?} mode: {e}"))
}

/// A UDP socket bound in namespace `ns`.
fn bind_in(ns: &str, addr: SocketAddr) -> UdpSocket {
    let sock = in_ns(ns, || UdpSocket::bind(addr)).unwrap_or_else(|e| panic!("bind {addr} in {ns}: {e}"));
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    sock
}

/// Receives until `want` datagrams of `len` bytes arrived or 5 s passed.
fn receive(sock: &UdpSocket, want: usize, len: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 65536];
    let mut got = 0;
    while got < want && Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            assert_eq!(n, len, "datagram length");
            got += 1;
        }
    }
    got
}

/// Sends one datagram to `to` until one arrives at `rx` (the neighbour
/// entry is resolved after that, so later bursts are not dropped while
/// ARP or ND is pending). Returns how many it sent.
fn warm_up(tx: &UdpSocket, rx: &UdpSocket, to: SocketAddr) -> u64 {
    for sent in 1..=50 {
        tx.send_to(b"warm-up", to).unwrap();
        if receive_one(rx) {
            return sent;
        }
    }
    panic!("nothing arrived at {to}");
}

fn receive_one(rx: &UdpSocket) -> bool {
    let mut buf = [0u8; 64];
    rx.recv(&mut buf).is_ok()
}

/// Sends `n` datagrams of `len` bytes to `to` and receives them at `rx`,
/// a batch at a time: in native mode a veth builds each passed frame's
/// socket buffer around a whole page, so a few hundred small datagrams
/// overflow a default receive buffer if nobody reads in between. Returns
/// how many arrived.
fn send(tx: &UdpSocket, to: SocketAddr, rx: &UdpSocket, n: usize, len: usize) -> usize {
    const BATCH: usize = 16;
    let payload = vec![0x5a; len];
    let mut got = 0;
    for start in (0..n).step_by(BATCH) {
        let batch = BATCH.min(n - start);
        for _ in 0..batch {
            tx.send_to(&payload, to).unwrap();
        }
        got += receive(rx, batch, len);
    }
    got
}

/// The kernel's receive side of the test: sockets on the filtered and the
/// other port of end `a`, a sender in namespace `b`.
struct Traffic {
    hit: UdpSocket,
    other: UdpSocket,
    tx: UdpSocket,
}

impl Traffic {
    fn new(pair: &VethPair, a: IpAddr, unspecified_b: IpAddr) -> Traffic {
        Traffic {
            hit: bind_in(pair.ns_a(), SocketAddr::new(a, PORT)),
            other: bind_in(pair.ns_a(), SocketAddr::new(a, OTHER)),
            tx: bind_in(pair.ns_b(), SocketAddr::new(unspecified_b, 0)),
        }
    }

    fn v4(pair: &VethPair) -> Traffic {
        Traffic::new(pair, pair.addr_a().into(), Ipv4Addr::UNSPECIFIED.into())
    }

    /// Sends `n` to the filtered port and `m` to the other, after a warm-up
    /// to the other port; checks every datagram reached its socket and
    /// returns the warm-up count (passed frames).
    fn run(&self, n: usize, m: usize, len: usize) -> u64 {
        let (hit, other) = (self.hit.local_addr().unwrap(), self.other.local_addr().unwrap());
        let warm = warm_up(&self.tx, &self.other, other);
        assert_eq!(send(&self.tx, hit, &self.hit, n, len), n, "datagrams to the filtered port {hit}");
        assert_eq!(send(&self.tx, other, &self.other, m, len), m, "datagrams to the other port {other}");
        warm
    }
}

fn counters(prog: &XdpProgram) -> ProgramCounters {
    prog.counters().expect("reading the program's counters")
}

/// Matched datagrams without a socket in the map reach the kernel socket
/// (the `XDP_PASS` fallback), and the counters tell them apart.
fn passes_through(mode: AttachMode) {
    const N: usize = 200;
    const M: usize = 100;
    let pair = VethPair::with_queues(2).unwrap();
    let prog = XdpProgram::load(&any_addr(PORT), pair.queues()).unwrap();
    let link = attach(&pair, &prog, mode);
    assert_eq!(link.mode(), mode);
    let warm = Traffic::v4(&pair).run(N, M, 100);
    let c = counters(&prog);
    println!("{mode:?}: {c:?} after {N} to the port, {M} + {warm} warm-up elsewhere");
    assert_eq!(c.matched, N as u64, "{mode:?}: {c:?}");
    assert!(c.passed >= M as u64 + warm, "{mode:?}: {c:?}");
}

#[test]
fn generic_mode_counts_and_passes_to_kernel_sockets() {
    if root_or_skip("generic_mode_counts_and_passes_to_kernel_sockets") {
        passes_through(AttachMode::Generic);
    }
}

#[test]
fn native_mode_counts_and_passes_to_kernel_sockets() {
    if root_or_skip("native_mode_counts_and_passes_to_kernel_sockets") {
        passes_through(AttachMode::Native);
    }
}

/// A datagram larger than the MTU leaves as IPv4 fragments: the program
/// passes them (MF set or an offset) and the kernel reassembles it.
fn fragments_pass(mode: AttachMode) {
    const LEN: usize = 3000;
    let pair = VethPair::new().unwrap();
    let prog = XdpProgram::load(&any_addr(PORT), 1).unwrap();
    let _link = attach(&pair, &prog, mode);
    let traffic = Traffic::v4(&pair);
    let warm = warm_up(&traffic.tx, &traffic.other, traffic.other.local_addr().unwrap());
    let hit = traffic.hit.local_addr().unwrap();
    assert_eq!(send(&traffic.tx, hit, &traffic.hit, 3, LEN), 3, "{mode:?}: reassembled datagrams");
    let c = counters(&prog);
    assert_eq!(c.matched, 0, "{mode:?}: fragments are not matched: {c:?}");
    assert!(c.passed >= warm + 3 * 3, "{mode:?}: three fragments each: {c:?}");
}

#[test]
fn ipv4_fragments_are_passed_and_reassembled() {
    if root_or_skip("ipv4_fragments_are_passed_and_reassembled") {
        fragments_pass(AttachMode::Generic);
        fragments_pass(AttachMode::Native);
    }
}

#[test]
fn ipv6_datagrams_match_by_address() {
    if !root_or_skip("ipv6_datagrams_match_by_address") {
        return;
    }
    let pair = VethPair::new().unwrap();
    let filter = Filter { port: PORT, addr: Some(pair.addr6_a().into()), max_len: None };
    let prog = XdpProgram::load(&filter, 1).unwrap();
    let _link = attach(&pair, &prog, AttachMode::Generic);
    let v6 = Traffic::new(&pair, pair.addr6_a().into(), std::net::Ipv6Addr::UNSPECIFIED.into());
    v6.run(20, 10, 200);
    assert_eq!(counters(&prog).matched, 20);
    // IPv4 to the same port: another family than the filter's address.
    Traffic::v4(&pair).run(20, 0, 200);
    assert_eq!(counters(&prog).matched, 20, "IPv4 does not match an IPv6 address filter");
}

#[test]
fn other_destination_addresses_are_passed() {
    if !root_or_skip("other_destination_addresses_are_passed") {
        return;
    }
    let pair = VethPair::new().unwrap();
    let filter = Filter { port: PORT, addr: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))), max_len: None };
    let prog = XdpProgram::load(&filter, 1).unwrap();
    let _link = attach(&pair, &prog, AttachMode::Native);
    let warm = Traffic::v4(&pair).run(20, 5, 64);
    let c = counters(&prog);
    assert_eq!(c.matched, 0, "{c:?}");
    assert!(c.passed >= 25 + warm, "{c:?}");
}

/// Whether `ip -d link show` of end `a` shows an XDP program.
fn shows_xdp(pair: &VethPair) -> bool {
    pair.link_a().unwrap().contains("xdp")
}

/// Polls `cond` for up to 2 s (detaching on close is synchronous, but a
/// killed process's descriptors close as it exits, just before the wait).
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[test]
fn dropping_the_link_detaches() {
    if !root_or_skip("dropping_the_link_detaches") {
        return;
    }
    let pair = VethPair::new().unwrap();
    let prog = XdpProgram::load(&any_addr(PORT), 1).unwrap();
    for mode in [AttachMode::Generic, AttachMode::Native] {
        assert!(!shows_xdp(&pair), "no program before attaching");
        let link = attach(&pair, &prog, mode);
        let shown = pair.link_a().unwrap();
        let expected = if mode == AttachMode::Native { "prog/xdp" } else { "xdpgeneric" };
        assert!(shown.contains(expected), "{mode:?}: {shown}");
        drop(link);
        assert!(!shows_xdp(&pair), "{mode:?}: still attached after the link was dropped");
    }
    // The link holds the program (and the program its maps): dropping the
    // handle first does not detach it.
    let link = attach(&pair, &prog, AttachMode::Generic);
    drop(prog);
    assert!(shows_xdp(&pair), "the link keeps the program attached");
    drop(link);
    assert!(!shows_xdp(&pair), "still attached after the link was dropped");
}

#[test]
fn a_second_program_is_refused_while_one_is_attached() {
    if !root_or_skip("a_second_program_is_refused_while_one_is_attached") {
        return;
    }
    let pair = VethPair::new().unwrap();
    let prog = XdpProgram::load(&any_addr(PORT), 1).unwrap();
    let _link = attach(&pair, &prog, AttachMode::Native);
    for mode in [AttachMode::Native, AttachMode::Generic] {
        let err = in_ns(pair.ns_a(), || prog.attach(ifindex(pair.if_a()).unwrap(), mode)).unwrap_err();
        assert!(err.to_string().contains("another XDP program"), "{mode:?}: {err}");
    }
}

/// The child half of `killing_the_attaching_process_detaches`: attaches in
/// the namespace the parent names, says so, and waits to be killed. A
/// no-op in a normal run.
#[test]
fn child_attaches_and_waits_to_be_killed() {
    let Ok(ns) = std::env::var(CHILD_NS) else { return };
    let prog = XdpProgram::load(&any_addr(PORT), 1).unwrap();
    in_ns(&ns, || {
        let _link = prog.attach(ifindex("veth-a").unwrap(), AttachMode::Generic).unwrap();
        println!("{CHILD_READY}");
        std::thread::sleep(Duration::from_secs(60));
    });
    panic!("not killed within 60 s");
}

#[test]
fn killing_the_attaching_process_detaches() {
    if !root_or_skip("killing_the_attaching_process_detaches") {
        return;
    }
    let pair = VethPair::new().unwrap();
    assert_eq!(pair.if_a(), "veth-a", "the child attaches to veth-a");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_attaches_and_waits_to_be_killed", "--nocapture", "--test-threads=1"])
        .env(CHILD_NS, pair.ns_a())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    // libtest may print the test's name on the same line first.
    let ready = stdout.lines().map_while(Result::ok).any(|line| line.contains(CHILD_READY));
    if !ready {
        let _ = child.kill();
        panic!("the child exited without attaching: {:?}", child.wait());
    }
    assert!(shows_xdp(&pair), "the child's program is attached");
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    assert!(eventually(|| !shows_xdp(&pair)), "still attached after SIGKILL: {}", pair.link_a().unwrap());
}

#[test]
fn attaching_to_a_missing_interface_names_it() {
    if !root_or_skip("attaching_to_a_missing_interface_names_it") {
        return;
    }
    let prog = XdpProgram::load(&any_addr(PORT), 1).unwrap();
    let pair = VethPair::new().unwrap();
    for mode in [AttachMode::Generic, AttachMode::Native] {
        let err = in_ns(pair.ns_a(), || prog.attach(999_999, mode)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("999999"), "{err}");
    }
}

#[test]
fn unknown_interface_names_are_errors() {
    let err = ifindex("nope0").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("nope0"), "{err}");
    assert!(ifindex("lo").unwrap() > 0);
}

#[test]
fn bad_arguments_are_refused_before_the_kernel() {
    assert!(XdpProgram::load(&any_addr(0), 1).is_err());
    assert!(XdpProgram::load(&any_addr(PORT), 0).is_err());
}

#[test]
fn socket_slots_take_only_af_xdp_sockets() {
    if !root_or_skip("socket_slots_take_only_af_xdp_sockets") {
        return;
    }
    let prog = XdpProgram::load(&any_addr(PORT), 2).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = prog.set_socket(0, udp.as_fd()).unwrap_err();
    assert!(err.to_string().contains("AF_XDP"), "{err}");
    let err = prog.set_socket(2, udp.as_fd()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    prog.clear_socket(1).unwrap();
    assert!(prog.clear_socket(2).is_err());
    assert_eq!(counters(&prog), ProgramCounters::default());
}

/// Frames built by hand for `XdpProgram::test_run`.
mod frames {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86DD;

    pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    pub fn udp(port: u16) -> Vec<u8> {
        let mut u = Vec::from(40000u16.to_be_bytes());
        u.extend_from_slice(&port.to_be_bytes());
        u.extend_from_slice(&16u16.to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(b"payload!");
        u
    }

    /// IPv4 with `options` 4-byte words of options, flags and fragment
    /// offset `frag`, protocol `proto`, destination `dst`.
    pub fn ipv4(options: u8, frag: u16, proto: u8, dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let ihl = 5 + options;
        let total = u16::from(ihl) * 4 + l4.len() as u16;
        let mut ip = vec![0x40 | ihl, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34]);
        ip.extend_from_slice(&frag.to_be_bytes());
        ip.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 2]);
        ip.extend_from_slice(&dst);
        ip.resize(usize::from(ihl) * 4, 1);
        ip.extend_from_slice(l4);
        ethernet(IPV4, &ip)
    }

    pub fn ipv6(next: u8, dst: [u8; 16], l4: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[next, 64]);
        ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(l4);
        ethernet(IPV6, &ip)
    }
}

/// Whether the program matched or passed `frame`, from its counters; it
/// must return `XDP_PASS` either way, as the map has no sockets.
fn verdict(prog: &XdpProgram, frame: &[u8]) -> &'static str {
    let before = counters(prog);
    assert_eq!(prog.test_run(frame).expect("test-running the program"), 2, "XDP_PASS without sockets");
    let after = counters(prog);
    match (after.matched - before.matched, after.passed - before.passed) {
        (1, 0) => "matched",
        (0, 1) => "passed",
        other => panic!("counted {other:?} for one frame"),
    }
}

#[test]
fn the_program_matches_only_whole_udp_datagrams_to_the_port() {
    use frames::*;
    if !root_or_skip("the_program_matches_only_whole_udp_datagrams_to_the_port") {
        return;
    }
    let prog = XdpProgram::load(&any_addr(PORT), 1).unwrap();
    let to = [10, 0, 0, 1];
    let v6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let cases: [(&str, Vec<u8>, &str); 16] = [
        ("udp to the port", ipv4(0, 0, 17, to, &udp(PORT)), "matched"),
        ("don't-fragment set", ipv4(0, 0x4000, 17, to, &udp(PORT)), "matched"),
        ("another port", ipv4(0, 0, 17, to, &udp(OTHER)), "passed"),
        ("the port byte-swapped", ipv4(0, 0, 17, to, &udp(PORT.swap_bytes())), "passed"),
        ("tcp", ipv4(0, 0, 6, to, &udp(PORT)), "passed"),
        ("ip options", ipv4(1, 0, 17, to, &udp(PORT)), "passed"),
        ("first fragment", ipv4(0, 0x2000, 17, to, &udp(PORT)), "passed"),
        ("later fragment", ipv4(0, 185, 17, to, &udp(PORT)), "passed"),
        ("truncated udp", ipv4(0, 0, 17, to, &udp(PORT)[..4]), "passed"),
        ("ethernet only", ethernet(IPV4, &[]), "passed"),
        ("vlan", ethernet(0x8100, &ipv4(0, 0, 17, to, &udp(PORT))[12..]), "passed"),
        ("arp", ethernet(0x0806, &[0; 28]), "passed"),
        ("ipv6 udp to the port", ipv6(17, v6, &udp(PORT)), "matched"),
        ("ipv6 another port", ipv6(17, v6, &udp(OTHER)), "passed"),
        ("ipv6 hop-by-hop header", ipv6(0, v6, &udp(PORT)), "passed"),
        ("ipv6 fragment header", ipv6(44, v6, &udp(PORT)), "passed"),
    ];
    for (what, frame, expected) in &cases {
        assert_eq!(verdict(&prog, frame), *expected, "{what}");
    }
}

/// A frame longer than `max_len` (what one UMEM frame holds) goes to the
/// kernel, whose socket takes it whole; a socket on 0.0.0.0 takes no IPv6.
#[test]
fn long_frames_and_other_families_are_passed() {
    use frames::*;
    if !root_or_skip("long_frames_and_other_families_are_passed") {
        return;
    }
    let to = [10, 0, 0, 1];
    let short = ipv4(0, 0, 17, to, &udp(PORT));
    let prog =
        XdpProgram::load(&Filter { port: PORT, addr: None, max_len: Some(short.len() as u32) }, 1).unwrap();
    assert_eq!(verdict(&prog, &short), "matched", "exactly max_len");
    let mut long = udp(PORT);
    long.push(b'!');
    assert_eq!(verdict(&prog, &ipv4(0, 0, 17, to, &long)), "passed", "one byte over");
    let any4 = Filter { port: PORT, addr: Some(Ipv4Addr::UNSPECIFIED.into()), max_len: None };
    let prog = XdpProgram::load(&any4, 1).unwrap();
    let v6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    assert_eq!(verdict(&prog, &short), "matched");
    assert_eq!(verdict(&prog, &ipv6(17, v6, &udp(PORT))), "passed", "0.0.0.0 is IPv4 only");
}

#[test]
fn address_filters_compare_the_whole_destination() {
    use frames::*;
    if !root_or_skip("address_filters_compare_the_whole_destination") {
        return;
    }
    // The last octet >= 128 makes the word's top bit set on little-endian
    // hosts: the compare must not sign-extend it.
    let v4 = [192, 168, 1, 200];
    let prog =
        XdpProgram::load(&Filter { port: PORT, addr: Some(IpAddr::from(v4)), max_len: None }, 1).unwrap();
    let six = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x81];
    assert_eq!(verdict(&prog, &ipv4(0, 0, 17, v4, &udp(PORT))), "matched");
    assert_eq!(verdict(&prog, &ipv4(0, 0, 17, [192, 168, 1, 201], &udp(PORT))), "passed");
    assert_eq!(verdict(&prog, &ipv4(0, 0, 17, [193, 168, 1, 200], &udp(PORT))), "passed");
    assert_eq!(verdict(&prog, &ipv6(17, six, &udp(PORT))), "passed", "another family");

    let prog =
        XdpProgram::load(&Filter { port: PORT, addr: Some(IpAddr::from(six)), max_len: None }, 1).unwrap();
    assert_eq!(verdict(&prog, &ipv6(17, six, &udp(PORT))), "matched");
    for byte in [0, 7, 15] {
        let mut other = six;
        other[byte] ^= 0x40;
        assert_eq!(verdict(&prog, &ipv6(17, other, &udp(PORT))), "passed", "byte {byte} differs");
    }
    assert_eq!(verdict(&prog, &ipv4(0, 0, 17, v4, &udp(PORT))), "passed", "another family");
}

#[test]
fn a_rejected_program_brings_the_verifier_log() {
    use netstack::xdp::{bpf, program::Insn};
    if !root_or_skip("a_rejected_program_brings_the_verifier_log") {
        return;
    }
    // `exit` with r0 never written: the verifier refuses to return garbage.
    let err = bpf::load_xdp_program(&[Insn::exit()], "bad_prog").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("verifier log") && text.contains("R0"), "{text}");
}

#[test]
fn without_privileges_the_error_names_the_capabilities() {
    if is_root() {
        return; // nothing to refuse; run as another user to check the message
    }
    match XdpProgram::load(&any_addr(PORT), 1) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            assert!(e.to_string().contains("CAP_BPF"), "{e}");
        }
        other => eprintln!("not refused for lack of privileges here: {other:?}"),
    }
}
