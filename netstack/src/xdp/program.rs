//! The XDP program that redirects the service's UDP port to AF_XDP
//! sockets, assembled here instruction by instruction, and the handles for
//! it once loaded ([`XdpProgram`]) and attached ([`XdpLink`]).
//!
//! # What the program does
//!
//! Its context is `struct xdp_md` (`data` at 0, `data_end` at 4,
//! `rx_queue_index` at 16); it keeps that pointer in `r6` across helper
//! calls. Every packet load is preceded by a check against `data_end`, as
//! the verifier requires.
//!
//! 1. Ethernet: shorter than 14 bytes, or an EtherType (offset 12) other
//!    than IPv4 (0x0800) or IPv6 (0x86DD): pass. VLAN-tagged frames, ARP
//!    and the rest go to the kernel.
//! 2. IPv4 (needs 14 + 20 + 8 bytes): pass unless the first byte is 0x45
//!    (version 4, no options), the frame is not a fragment (flags and
//!    fragment offset `& 0x3FFF == 0`: neither "more fragments" nor an
//!    offset; the kernel reassembles fragments and delivers them to the
//!    service's ordinary socket), the protocol is UDP (17), the
//!    destination address is the filter's (if it has one) and the UDP
//!    destination port is the filter's.
//! 3. IPv6 (needs 14 + 40 + 8 bytes): pass unless the next header is UDP
//!    (so extension headers and fragments go to the kernel), the
//!    destination is the filter's (if any) and so is the UDP port.
//! 4. A match counts in slot 0 of the per-CPU counter array and returns
//!    `bpf_redirect_map(&xskmap, rx_queue_index, XDP_PASS)`: the low bits
//!    of the flags are the action when the map has no socket for that
//!    queue, so a queue nobody serves still reaches the kernel instead of
//!    being dropped. Anything else counts in slot 1 and returns `XDP_PASS`.
//!
//! Packet bytes are big-endian but loads are host-endian, so every
//! constant compared against a load is the host-endian reading of the
//! network-order bytes (`u16::from_ne_bytes(x.to_be_bytes())`); 32-bit
//! address words are compared with 32-bit jumps, whose immediates are not
//! sign-extended against a zero-extended load.
//!
//! The program is loaded without multi-buffer support, so native mode
//! needs an MTU that fits a page (1500 does).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::bpf::{self, Map, MapType};
pub use super::insn::{Alu, Insn, Jmp, Reg, Size};

/// Which UDP datagrams the program redirects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    /// The UDP destination port (host order; not 0).
    pub port: u16,
    /// The destination address; `None` or an unspecified address (`0.0.0.0`,
    /// `::`) matches any, over both IPv4 and IPv6. A specific address
    /// matches only its own family; an IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`) matches IPv4 datagrams to `a.b.c.d`, as a socket
    /// bound to it would.
    pub addr: Option<IpAddr>,
    /// The longest frame redirected (bytes from the Ethernet header on):
    /// what one UMEM frame holds. A longer one is passed to the kernel,
    /// whose socket takes it whole, where the AF_XDP socket would drop it.
    /// `None`: no bound.
    pub max_len: Option<u32>,
}

/// The destination a [`Filter`] compiles to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    Any,
    AnyV4,
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Filter {
    fn dest(&self) -> Dest {
        match self.addr {
            None => Dest::Any,
            // A socket on 0.0.0.0 takes IPv4 only; one on `::` both.
            Some(IpAddr::V4(a)) if a.is_unspecified() => Dest::AnyV4,
            Some(a) if a.is_unspecified() => Dest::Any,
            Some(IpAddr::V4(v4)) => Dest::V4(v4.octets()),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Dest::V4(v4.octets()),
                None => Dest::V6(v6.octets()),
            },
        }
    }
}

/// How the program runs on the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver, before a socket buffer exists (`XDP_FLAGS_DRV_MODE`):
    /// the fast path, and the one AF_XDP zero-copy needs; only drivers that
    /// implement XDP.
    Native,
    /// After the kernel built the socket buffer (`XDP_FLAGS_SKB_MODE`): any
    /// interface, at the cost of the allocation and a copy into the UMEM.
    Generic,
}

impl AttachMode {
    fn flags(self) -> u32 {
        match self {
            AttachMode::Native => bpf::XDP_FLAGS_DRV_MODE,
            AttachMode::Generic => bpf::XDP_FLAGS_SKB_MODE,
        }
    }
}

/// What the program has done, summed over CPUs since it was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramCounters {
    /// Datagrams that matched the filter: redirect attempted (they reached
    /// the kernel instead if their queue had no socket in the map).
    pub matched: u64,
    /// Frames passed to the kernel (other traffic, fragments, ...).
    pub passed: u64,
}

// Slots of the counter array.
const COUNT_MATCHED: i32 = 0;
const COUNT_PASSED: i32 = 1;
const COUNTER_SLOTS: u32 = 2;

// Helpers (enum bpf_func_id) and XDP actions (enum xdp_action).
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;

// Frame layout.
const ETH_LEN: i32 = 14;
const IPV4_LEN: i32 = 20;
const IPV6_LEN: i32 = 40;
const UDP_LEN: i32 = 8;
const IPPROTO_UDP: i32 = 17;

/// `x` as a host-endian load of its network-order bytes reads it.
const fn wire16(x: u16) -> i32 {
    u16::from_ne_bytes(x.to_be_bytes()) as i32
}

/// Four network-order bytes as a host-endian 32-bit load reads them.
const fn wire32(b: [u8; 4]) -> i32 {
    i32::from_ne_bytes(b)
}

/// Jump targets of the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Label {
    Ipv4,
    Ipv6,
    Matched,
    Pass,
}
const LABELS: usize = 4;

/// An instruction list with forward jumps to labels, patched at the end.
#[derive(Debug, Default)]
struct Asm {
    insns: Vec<Insn>,
    fixups: Vec<(usize, Label)>,
    labels: [Option<usize>; LABELS],
}

impl Asm {
    fn emit(&mut self, insns: &[Insn]) {
        self.insns.extend_from_slice(insns);
    }

    /// A jump whose offset is filled in once `to` is bound.
    fn jump(&mut self, insn: Insn, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.insns.push(insn);
    }

    fn bind(&mut self, label: Label) {
        self.labels[label as usize] = Some(self.insns.len());
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.fixups {
            let target = self.labels[label as usize].expect("jump to an unbound label");
            let off = target as isize - (at as isize + 1);
            self.insns[at] = self.insns[at].with_off(i16::try_from(off).expect("jump within i16 range"));
        }
        self.insns
    }
}

/// Descriptors of the maps the program references.
#[derive(Clone, Copy, Debug)]
struct MapFds {
    xsks: i32,
    counters: i32,
}

// Register roles: r6 = ctx, r2 = data, r3 = data_end, r4 = scratch.
const CTX: Reg = 6;
const DATA: Reg = 2;
const END: Reg = 3;
const TMP: Reg = 4;

/// The whole program for `filter` and the maps `fds`.
fn assemble(filter: &Filter, fds: MapFds) -> Vec<Insn> {
    let dest = filter.dest();
    let port = wire16(filter.port);
    let mut asm = Asm::default();
    ethernet(&mut asm, dest);
    if takes_v4(dest) {
        asm.bind(Label::Ipv4);
        ipv4(&mut asm, dest, port);
    }
    if takes_v6(dest) {
        asm.bind(Label::Ipv6);
        ipv6(&mut asm, dest, port);
    }
    asm.bind(Label::Matched);
    if let Some(max) = filter.max_len {
        // Longer than a frame: the kernel's socket takes it whole.
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        asm.emit(&[Insn::mov64_reg(TMP, DATA), Insn::alu64_imm(Alu::Add, TMP, max)]);
        asm.jump(Insn::jmp_reg(Jmp::Gt, END, TMP, 0), Label::Pass);
    }
    matched(&mut asm, fds);
    asm.bind(Label::Pass);
    count(&mut asm, fds.counters, COUNT_PASSED);
    asm.emit(&[Insn::mov64_imm(0, XDP_PASS), Insn::exit()]);
    asm.finish()
}

fn takes_v4(dest: Dest) -> bool {
    matches!(dest, Dest::Any | Dest::AnyV4 | Dest::V4(_))
}

fn takes_v6(dest: Dest) -> bool {
    matches!(dest, Dest::Any | Dest::V6(_))
}

/// Passes the frame unless it holds at least `need` bytes (the check the
/// verifier needs before loads up to that offset).
fn need_bytes(asm: &mut Asm, need: i32) {
    asm.emit(&[Insn::mov64_reg(TMP, DATA), Insn::alu64_imm(Alu::Add, TMP, need)]);
    asm.jump(Insn::jmp_reg(Jmp::Gt, TMP, END, 0), Label::Pass);
}

/// Keeps ctx, checks the Ethernet header and dispatches on EtherType.
fn ethernet(asm: &mut Asm, dest: Dest) {
    asm.emit(&[Insn::mov64_reg(CTX, 1), Insn::ldx(Size::W, DATA, CTX, 0), Insn::ldx(Size::W, END, CTX, 4)]);
    need_bytes(asm, ETH_LEN);
    asm.emit(&[Insn::ldx(Size::H, TMP, DATA, 12)]);
    if takes_v4(dest) {
        asm.jump(Insn::jmp_imm(Jmp::Eq, TMP, wire16(0x0800), 0), Label::Ipv4);
    }
    if takes_v6(dest) {
        asm.jump(Insn::jmp_imm(Jmp::Eq, TMP, wire16(0x86DD), 0), Label::Ipv6);
    }
    asm.jump(Insn::ja(0), Label::Pass);
}

/// Unfragmented IPv4 without options, UDP, to the filter's address and port.
fn ipv4(asm: &mut Asm, dest: Dest, port: i32) {
    const IP: i16 = ETH_LEN as i16;
    need_bytes(asm, ETH_LEN + IPV4_LEN + UDP_LEN);
    asm.emit(&[Insn::ldx(Size::B, TMP, DATA, IP)]);
    asm.jump(Insn::jmp_imm(Jmp::Ne, TMP, 0x45, 0), Label::Pass);
    asm.emit(&[Insn::ldx(Size::H, TMP, DATA, IP + 6), Insn::alu64_imm(Alu::And, TMP, wire16(0x3FFF))]);
    asm.jump(Insn::jmp_imm(Jmp::Ne, TMP, 0, 0), Label::Pass);
    asm.emit(&[Insn::ldx(Size::B, TMP, DATA, IP + 9)]);
    asm.jump(Insn::jmp_imm(Jmp::Ne, TMP, IPPROTO_UDP, 0), Label::Pass);
    if let Dest::V4(addr) = dest {
        asm.emit(&[Insn::ldx(Size::W, TMP, DATA, IP + 16)]);
        asm.jump(Insn::jmp32_imm(Jmp::Ne, TMP, wire32(addr), 0), Label::Pass);
    }
    asm.emit(&[Insn::ldx(Size::H, TMP, DATA, IP + IPV4_LEN as i16 + 2)]);
    asm.jump(Insn::jmp_imm(Jmp::Ne, TMP, port, 0), Label::Pass);
    asm.jump(Insn::ja(0), Label::Matched);
}

/// IPv6 whose next header is UDP, to the filter's address and port; falls
/// through to the match.
fn ipv6(asm: &mut Asm, dest: Dest, port: i32) {
    const IP: i16 = ETH_LEN as i16;
    need_bytes(asm, ETH_LEN + IPV6_LEN + UDP_LEN);
    asm.emit(&[Insn::ldx(Size::B, TMP, DATA, IP + 6)]);
    asm.jump(Insn::jmp_imm(Jmp::Ne, TMP, IPPROTO_UDP, 0), Label::Pass);
    if let Dest::V6(addr) = dest {
        for (i, word) in addr.chunks_exact(4).enumerate() {
            let word = [word[0], word[1], word[2], word[3]];
            asm.emit(&[Insn::ldx(Size::W, TMP, DATA, IP + 24 + 4 * i as i16)]);
            asm.jump(Insn::jmp32_imm(Jmp::Ne, TMP, wire32(word), 0), Label::Pass);
        }
    }
    asm.emit(&[Insn::ldx(Size::H, TMP, DATA, IP + IPV6_LEN as i16 + 2)]);
    asm.jump(Insn::jmp_imm(Jmp::Ne, TMP, port, 0), Label::Pass);
}

/// Counts the match and redirects to the queue's socket, or passes.
fn matched(asm: &mut Asm, fds: MapFds) {
    count(asm, fds.counters, COUNT_MATCHED);
    asm.emit(&[Insn::ldx(Size::W, 2, CTX, 16)]);
    asm.emit(&Insn::ld_map_fd(1, fds.xsks));
    asm.emit(&[Insn::mov64_imm(3, XDP_PASS), Insn::call(BPF_FUNC_REDIRECT_MAP), Insn::exit()]);
}

/// `counters[slot] += 1` on this CPU. A per-CPU slot is only touched by
/// the CPU running the program, which XDP does not preempt, so a plain
/// load, add and store is enough.
fn count(asm: &mut Asm, counters: i32, slot: i32) {
    asm.emit(&[Insn::st(Size::W, 10, -4, slot), Insn::mov64_reg(2, 10), Insn::alu64_imm(Alu::Add, 2, -4)]);
    asm.emit(&Insn::ld_map_fd(1, counters));
    asm.emit(&[
        Insn::call(BPF_FUNC_MAP_LOOKUP_ELEM),
        Insn::jmp_imm(Jmp::Eq, 0, 0, 3),
        Insn::ldx(Size::DW, 1, 0, 0),
        Insn::alu64_imm(Alu::Add, 1, 1),
        Insn::stx(Size::DW, 0, 0, 1),
    ]);
}

/// The loaded program and its maps. Plain descriptors: usable from any
/// thread. Dropping it while an [`XdpLink`] lives leaves the program
/// attached (the link holds it, and it holds its maps) but with no way to
/// change its sockets.
#[derive(Debug)]
pub struct XdpProgram {
    prog: OwnedFd,
    xsks: Map,
    counters: Map,
    queues: u32,
    insns: Vec<Insn>,
}

impl XdpProgram {
    /// Loads the program and its maps; the XSKMAP has `queues` slots (queue ids 0..queues).
    pub fn load(filter: &Filter, queues: u32) -> io::Result<XdpProgram> {
        if filter.port == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "XDP filter needs a UDP port (not 0)"));
        }
        if queues == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "XDP program needs at least one queue"));
        }
        let xsks = Map::create(MapType::XskMap, "netstack_xsks", queues)?;
        let counters = Map::create(MapType::PerCpuU64Array, "netstack_count", COUNTER_SLOTS)?;
        let fds = MapFds { xsks: xsks.fd().as_raw_fd(), counters: counters.fd().as_raw_fd() };
        let insns = assemble(filter, fds);
        let prog = bpf::load_xdp_program(&insns, "netstack_udp")?;
        Ok(XdpProgram { prog, xsks, counters, queues, insns })
    }

    /// Attaches to the interface through a BPF link; detached when the link is dropped or the process exits.
    ///
    /// `ifindex` is looked up in the calling thread's network namespace.
    pub fn attach(&self, ifindex: u32, mode: AttachMode) -> io::Result<XdpLink> {
        let fd = bpf::link_xdp(self.prog_fd(), ifindex, mode.flags())?;
        Ok(XdpLink { _fd: fd, ifindex, mode })
    }

    /// Puts an AF_XDP socket in the map slot of `queue`.
    ///
    /// The socket must already be bound to that queue of the interface.
    pub fn set_socket(&self, queue: u32, xsk: BorrowedFd<'_>) -> io::Result<()> {
        self.check_queue(queue)?;
        let value = (xsk.as_raw_fd() as u32).to_ne_bytes();
        self.xsks.update(queue, &value, bpf::BPF_ANY).map_err(|e| {
            // EOPNOTSUPP, kept as the error's kind under the added context.
            if e.kind() == io::ErrorKind::Unsupported {
                let msg = format!("fd {} is not a bound AF_XDP socket (queue {queue}): {e}", xsk.as_raw_fd());
                io::Error::new(e.kind(), msg)
            } else {
                e
            }
        })
    }

    /// Empties the map slot of `queue` (its datagrams go to the kernel
    /// again); no error if it was empty.
    pub fn clear_socket(&self, queue: u32) -> io::Result<()> {
        self.check_queue(queue)?;
        self.xsks.delete(queue).map(drop)
    }

    /// Frames the program redirected and passed, summed over CPUs.
    pub fn counters(&self) -> io::Result<ProgramCounters> {
        Ok(ProgramCounters {
            matched: self.counters.sum_per_cpu(COUNT_MATCHED as u32)?,
            passed: self.counters.sum_per_cpu(COUNT_PASSED as u32)?,
        })
    }

    /// Runs the program once on `frame` (an Ethernet frame) in the kernel,
    /// without an interface, and returns its action: 2 (`XDP_PASS`), or 4
    /// (`XDP_REDIRECT`) for a match whose queue 0 has a socket. The counters
    /// count it like a received frame. For tests of the filter.
    pub fn test_run(&self, frame: &[u8]) -> io::Result<u32> {
        bpf::test_run_xdp(self.prog_fd(), frame)
    }

    /// The program as loaded (map references hold this process's map fds).
    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }

    /// The number of queue slots in the socket map.
    pub fn queues(&self) -> u32 {
        self.queues
    }

    /// The program's descriptor.
    pub fn prog_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    fn check_queue(&self, queue: u32) -> io::Result<()> {
        if queue < self.queues {
            return Ok(());
        }
        let msg = format!("queue {queue} outside the socket map's 0..{}", self.queues);
        Err(io::Error::new(io::ErrorKind::InvalidInput, msg))
    }
}

/// The program attached to an interface. Dropping it closes the link,
/// which detaches the program; so does this process ending, however it
/// ends (the kernel closes the descriptor). The descriptor is
/// close-on-exec, so spawned processes do not inherit it.
#[derive(Debug)]
pub struct XdpLink {
    _fd: OwnedFd,
    ifindex: u32,
    mode: AttachMode,
}

impl XdpLink {
    /// The interface it is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The mode it was attached in.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }
}

/// The index of interface `name` in the calling thread's network namespace
/// (a clear `NotFound` error for an unknown name).
pub fn ifindex(name: &str) -> io::Result<u32> {
    bpf::if_nametoindex(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdp::insn::PSEUDO_MAP_FD;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const FDS: MapFds = MapFds { xsks: 7, counters: 9 };

    fn hex(insns: &[Insn]) -> Vec<[u8; 8]> {
        insns.iter().map(Insn::to_bytes).collect()
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn encodings_match_the_kernel_abi() {
        let cases: [(Insn, [u8; 8]); 12] = [
            (Insn::mov64_imm(0, 2), [0xb7, 0x00, 0, 0, 2, 0, 0, 0]),
            (Insn::mov64_reg(6, 1), [0xbf, 0x16, 0, 0, 0, 0, 0, 0]),
            (Insn::alu64_imm(Alu::Add, 2, -4), [0x07, 0x02, 0, 0, 0xfc, 0xff, 0xff, 0xff]),
            (Insn::alu64_imm(Alu::And, 4, 0xff3f), [0x57, 0x04, 0, 0, 0x3f, 0xff, 0, 0]),
            (Insn::ldx(Size::W, 2, 6, 4), [0x61, 0x62, 4, 0, 0, 0, 0, 0]),
            (Insn::ldx(Size::H, 4, 2, 12), [0x69, 0x24, 12, 0, 0, 0, 0, 0]),
            (Insn::ldx(Size::B, 4, 2, 23), [0x71, 0x24, 23, 0, 0, 0, 0, 0]),
            (Insn::stx(Size::DW, 0, 0, 1), [0x7b, 0x10, 0, 0, 0, 0, 0, 0]),
            (Insn::st(Size::W, 10, -4, 1), [0x62, 0x0a, 0xfc, 0xff, 1, 0, 0, 0]),
            (Insn::jmp_reg(Jmp::Gt, 4, 3, 5), [0x2d, 0x34, 5, 0, 0, 0, 0, 0]),
            (Insn::jmp_imm(Jmp::Ne, 4, 17, -2), [0x55, 0x04, 0xfe, 0xff, 17, 0, 0, 0]),
            (Insn::jmp32_imm(Jmp::Ne, 4, -1, 1), [0x56, 0x04, 1, 0, 0xff, 0xff, 0xff, 0xff]),
        ];
        for (insn, bytes) in cases {
            assert_eq!(insn.to_bytes(), bytes, "{insn:?}");
        }
        assert_eq!(Insn::ja(3).to_bytes(), [0x05, 0, 3, 0, 0, 0, 0, 0]);
        assert_eq!(Insn::jmp_imm(Jmp::Eq, 0, 0, 3).to_bytes(), [0x15, 0, 3, 0, 0, 0, 0, 0]);
        assert_eq!(Insn::call(51).to_bytes(), [0x85, 0, 0, 0, 51, 0, 0, 0]);
        assert_eq!(Insn::exit().to_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        let wide = [[0x18, 0x11, 0, 0, 5, 0, 0, 0], [0; 8]];
        assert_eq!(hex(&Insn::ld_map_fd(1, 5)), wide);
    }

    #[test]
    fn fields_read_back() {
        let i = Insn::jmp_reg(Jmp::Gt, 4, 3, -7);
        assert_eq!((i.dst(), i.src(), i.off(), i.imm()), (4, 3, -7, 0));
        assert!(i.is_jump() && !Insn::call(1).is_jump() && !Insn::exit().is_jump());
        assert!(Insn::ld_map_fd(1, 3)[0].is_wide());
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn wire_constants_are_network_order_read_host_endian() {
        assert_eq!(wire16(0x0800), 0x0008);
        assert_eq!(wire16(0x86DD), 0xDD86);
        assert_eq!(wire16(0x3FFF), 0xFF3F);
        assert_eq!(wire16(9000), 0x2823);
        assert_eq!(wire32([10, 0, 0, 1]), 0x0100_000a);
    }

    fn filters() -> Vec<Filter> {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 200));
        let v6 = IpAddr::V6("fd00:1::1".parse::<Ipv6Addr>().unwrap());
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        [None, Some(v4), Some(v6), Some(mapped), Some(any6), Some(Ipv4Addr::UNSPECIFIED.into())]
            .map(|addr| Filter { port: 9000, addr, max_len: None })
            .to_vec()
    }

    #[test]
    fn filters_compile_to_destinations() {
        let dests: Vec<Dest> = filters().iter().map(Filter::dest).collect();
        assert_eq!(dests[0], Dest::Any);
        assert_eq!(dests[1], Dest::V4([192, 168, 1, 200]));
        assert!(matches!(dests[2], Dest::V6(a) if a[0] == 0xfd && a[15] == 1));
        assert_eq!(dests[3], Dest::V4([10, 0, 0, 1]));
        assert_eq!(dests[4], Dest::Any, "`::` is dual-stack");
        assert_eq!(dests[5], Dest::AnyV4, "0.0.0.0 takes IPv4 only");
    }

    /// Every jump lands inside the program and on an instruction start (not
    /// the second slot of an `ld_imm64`), and the last instruction is `exit`.
    fn check_control_flow(insns: &[Insn]) {
        let mut starts = vec![true; insns.len()];
        let mut i = 0;
        while i < insns.len() {
            if insns[i].is_wide() {
                starts[i + 1] = false;
                i += 1;
            }
            i += 1;
        }
        for (at, insn) in insns.iter().enumerate().filter(|(_, i)| i.is_jump()) {
            let target = at as isize + 1 + insn.off() as isize;
            assert!(
                target > at as isize,
                "backward jump at {at} (the verifier rejects loops it cannot bound)"
            );
            assert!((target as usize) < insns.len(), "jump at {at} leaves the program");
            assert!(starts[target as usize], "jump at {at} into an ld_imm64");
        }
        assert_eq!(insns.last(), Some(&Insn::exit()));
    }

    #[test]
    fn programs_are_short_and_jumps_stay_inside() {
        let lens: Vec<usize> = filters().iter().map(|f| assemble(f, FDS).len()).collect();
        for (f, len) in filters().iter().zip(&lens) {
            check_control_flow(&assemble(f, FDS));
            assert!((40..=100).contains(len), "{f:?}: {len} instructions");
        }
        // "Any" has both families; an address keeps only its own.
        assert!(lens[1] < lens[0] && lens[2] < lens[0], "{lens:?}");
        println!("instructions per filter (any, v4, v6, mapped, ::): {lens:?}");
    }

    #[test]
    fn map_references_use_the_map_fds() {
        let insns = assemble(&filters()[0], FDS);
        let fds: Vec<i32> = insns.iter().filter(|i| i.is_wide()).map(|i| i.imm()).collect();
        assert_eq!(fds, [FDS.counters, FDS.xsks, FDS.counters]);
        assert!(insns.iter().filter(|i| i.is_wide()).all(|i| i.src() == PSEUDO_MAP_FD));
    }
}
