//! The aggregator on AF_XDP (`backend = "xdp"` or `"auto"`).
//!
//! Before the shards start, the runner has the XDP program loaded and
//! attached to the interface ([`attach`]): it redirects UDP to the
//! service's address and port into an AF_XDP socket per receive queue, and
//! passes everything else to the kernel (fragments, other ports, ARP). On
//! each member shard, [`bind_shard`] opens the sockets of the queues that
//! shard owns (queue `q` belongs to member `q mod members`) and puts each
//! in the program's map; each socket then feeds the same receive loop as
//! the kernel socket, which the service keeps for what the program passes
//! on. The program is attached through a BPF link held by every receiving
//! task, so it is detached when the last one ends, and by the kernel if the
//! process dies.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use netstack::backend::{FrameDrop, XdpCounters, XdpUdp};
use netstack::xdp::program::{self, AttachMode, Filter, ProgramCounters, XdpLink, XdpProgram};
use netstack::xdp::socket::{BindMode, UmemConfig, XskSocket};
use ops::metrics::{Exposition, Kind};

/// What receives the UDP datagrams.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// Kernel UDP sockets, one per shard (the default).
    #[default]
    Kernel,
    /// AF_XDP sockets on the receive queues of an interface, beside the
    /// kernel sockets (which keep what the XDP program passes on:
    /// fragments, other addresses). `fallback`: when AF_XDP cannot start,
    /// log why and go on with the kernel sockets alone (`backend = "auto"`)
    /// instead of refusing to start (`"xdp"`).
    Xdp {
        /// The interface statsd arrives on.
        interface: String,
        /// How the XDP program is attached.
        mode: XdpMode,
        /// Frames (2 KiB each) of each socket's UMEM, and entries of its
        /// fill and receive rings: what absorbs a burst while the shard is
        /// busy (a flush). Locked memory: frames x 2 KiB per queue.
        frames: u32,
        /// `auto`: fall back to the kernel path.
        fallback: bool,
    },
}

impl Backend {
    /// As the configuration names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Xdp { fallback: false, .. } => "xdp",
            Backend::Xdp { fallback: true, .. } => "auto",
        }
    }
}

/// How the XDP program is attached to the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// In the driver, else generic.
    #[default]
    Auto,
    /// In the driver (fails on interfaces without native XDP).
    Native,
    /// Generic XDP, after the kernel built its socket buffer: works on any
    /// interface, gains less.
    Generic,
}

/// The XDP program attached to the interface, shared by the service's
/// shards.
pub struct Attachment {
    program: XdpProgram,
    // Detaches the program when the last holder drops it.
    _link: XdpLink,
    /// The interface.
    pub interface: String,
    ifindex: u32,
    /// Its receive queues: one AF_XDP socket each.
    pub queues: u32,
    /// How the program runs there.
    pub mode: AttachMode,
    /// The UDP port redirected.
    pub port: u16,
    /// Each socket's UMEM and rings.
    umem: UmemConfig,
    /// The interface's address, when it has one: frames to another host
    /// are not taken.
    mac: Option<[u8; 6]>,
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("interface", &self.interface)
            .field("queues", &self.queues)
            .field("mode", &self.mode)
            .field("port", &self.port)
            .finish()
    }
}

impl Attachment {
    /// What the program counted.
    pub fn counters(&self) -> io::Result<ProgramCounters> {
        self.program.counters()
    }
}

/// Loads and attaches the program for the service `service` with
/// `backend`, whose UDP listener is bound to `udp`. `Ok(None)`: the kernel
/// sockets alone (`backend = "kernel"`, or `"auto"` when AF_XDP cannot
/// start here, with the reason logged).
pub fn attach(service: &str, backend: &Backend, udp: SocketAddr) -> Result<Option<Arc<Attachment>>, String> {
    let Backend::Xdp { interface, mode, fallback, frames } = backend else { return Ok(None) };
    let umem = UmemConfig { frames: *frames, ring_size: *frames, ..UmemConfig::default() };
    match try_attach(interface, *mode, udp, umem) {
        Ok(a) => {
            tracing::info!(
                service = %service, interface = %a.interface, queues = a.queues, mode = ?a.mode,
                "AF_XDP: program attached"
            );
            Ok(Some(Arc::new(a)))
        }
        Err(e) if *fallback => {
            tracing::warn!(service = %service, "backend auto: AF_XDP on {interface} cannot start ({e}); \
                 receiving through the kernel sockets alone");
            Ok(None)
        }
        Err(e) => Err(format!("backend xdp on {interface}: {e} (or use backend = \"auto\" to fall back)")),
    }
}

fn try_attach(interface: &str, mode: XdpMode, udp: SocketAddr, umem: UmemConfig) -> io::Result<Attachment> {
    let ifindex = program::ifindex(interface)?;
    let queues = rx_queues(interface)?;
    let max_len = Some(umem.frame_size - netstack::xdp::ring::PACKET_HEADROOM);
    let filter = Filter { port: udp.port(), addr: Some(udp.ip()), max_len };
    let program = XdpProgram::load(&filter, queues)?;
    let (link, mode) = match mode {
        XdpMode::Native => (program.attach(ifindex, AttachMode::Native)?, AttachMode::Native),
        XdpMode::Generic => (program.attach(ifindex, AttachMode::Generic)?, AttachMode::Generic),
        XdpMode::Auto => match program.attach(ifindex, AttachMode::Native) {
            Ok(link) => (link, AttachMode::Native),
            Err(native) => {
                tracing::info!("AF_XDP: native XDP on {interface}: {native}; attaching generic");
                (program.attach(ifindex, AttachMode::Generic)?, AttachMode::Generic)
            }
        },
    };
    Ok(Attachment {
        program,
        _link: link,
        interface: interface.to_owned(),
        ifindex,
        queues,
        mode,
        port: udp.port(),
        umem,
        mac: mac_of(interface),
    })
}

/// The interface's Ethernet address (sysfs, `aa:bb:cc:dd:ee:ff`).
fn mac_of(interface: &str) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address")).ok()?;
    let bytes: Vec<u8> = text.trim().split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    <[u8; 6]>::try_from(bytes).ok()
}

/// The interface's receive queues, as sysfs lists them (in this process's
/// network namespace).
fn rx_queues(interface: &str) -> io::Result<u32> {
    let dir = format!("/sys/class/net/{interface}/queues");
    let n = std::fs::read_dir(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{dir}: {e}")))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n.max(1)).map_err(|_| io::Error::other("too many receive queues"))
}

/// The queues member `index` of `members` serves.
pub fn queues_of(queues: u32, index: usize, members: usize) -> Vec<u32> {
    (0..queues).filter(|q| *q as usize % members.max(1) == index).collect()
}

/// Opens this shard's sockets (member `index` of `members`) and puts them
/// in the program's map: the backends to receive from. A queue whose
/// socket cannot be opened is logged and left out: its slot stays empty,
/// so the program passes its datagrams to the kernel socket, and nothing
/// is lost (`/status` shows the queues on AF_XDP).
pub async fn bind_shard(att: &Attachment, index: usize, members: usize) -> Vec<XdpUdp> {
    let mut out = Vec::new();
    // Zero-copy needs the driver's support (and native XDP); after the
    // first refusal, copy mode for the rest.
    let mut zero_copy = att.mode == AttachMode::Native;
    for q in queues_of(att.queues, index, members) {
        match bind_queue(att, q, &mut zero_copy).await {
            Ok(socket) => {
                let backend = XdpUdp::new(socket, att.port);
                out.push(match att.mac {
                    Some(mac) => backend.only_to(mac),
                    None => backend,
                });
            }
            Err(e) => tracing::error!(
                interface = %att.interface, queue = q,
                "AF_XDP socket: {e}; this queue's datagrams go to the kernel socket"
            ),
        }
    }
    out
}

/// One queue's socket, in its map slot. The kernel frees a queue a little
/// after its last socket closed (a restart): `EBUSY` is retried briefly.
async fn bind_queue(att: &Attachment, q: u32, zero_copy: &mut bool) -> io::Result<XskSocket> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        let socket = if *zero_copy {
            match XskSocket::bind(att.ifindex, q, BindMode::ZeroCopy, &att.umem) {
                Ok(s) => Ok(s),
                Err(e) => {
                    tracing::info!(queue = q, "AF_XDP zero-copy: {e}; copy mode");
                    *zero_copy = false;
                    XskSocket::bind(att.ifindex, q, BindMode::Copy, &att.umem)
                }
            }
        } else {
            XskSocket::bind(att.ifindex, q, BindMode::Copy, &att.umem)
        };
        match socket {
            Ok(s) => {
                att.program.set_socket(q, s.fd())?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy && std::time::Instant::now() < deadline => {
                shard::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One shard's AF_XDP figures: per socket, its counters.
pub fn shard_queues(receivers: &[XdpCounters]) -> Vec<QueueStats> {
    receivers
        .iter()
        .map(|r| {
            let s = r.stats().unwrap_or_default();
            let invalid = FrameDrop::ALL.map(|why| r.dropped(why));
            QueueStats {
                queue: r.queue(),
                frames: s.frames,
                fill_starved: s.fill_starved,
                invalid,
                kernel: s,
            }
        })
        .collect()
}

/// One queue's figures, gathered from its shard.
#[derive(Debug, Clone)]
pub struct QueueStats {
    queue: u32,
    frames: u64,
    fill_starved: u64,
    invalid: [u64; FrameDrop::ALL.len()],
    kernel: netstack::xdp::socket::XskStats,
}

/// The AF_XDP families: per queue, and the program's counts.
pub fn metrics(e: &mut Exposition, service: &str, queues: &[QueueStats], program: Option<ProgramCounters>) {
    let names: Vec<String> = queues.iter().map(|q| q.queue.to_string()).collect();
    let per_queue = |e: &mut Exposition, name: &str, help: &str, f: &dyn Fn(&QueueStats) -> u64| {
        e.family(name, Kind::Counter, help);
        for (q, label) in queues.iter().zip(&names) {
            e.sample(name, &[("service", service), ("queue", label)], f(q) as f64);
        }
    };
    per_queue(e, "appliance_aggregate_xdp_frames_total", "Frames received from the AF_XDP socket.", &|q| {
        q.frames
    });
    let help = "Receives that found every frame held (none to give the fill ring).";
    per_queue(e, "appliance_aggregate_xdp_fill_starved_total", help, &|q| q.fill_starved);
    let name = "appliance_aggregate_xdp_invalid_total";
    e.family(name, Kind::Counter, "Frames dropped by the backend's checks, by reason.");
    for (q, label) in queues.iter().zip(&names) {
        for why in FrameDrop::ALL {
            let labels = [("service", service), ("queue", label.as_str()), ("reason", why.as_str())];
            e.sample(name, &labels, q.invalid[why.index()] as f64);
        }
    }
    let name = "appliance_aggregate_xdp_kernel_dropped_total";
    e.family(name, Kind::Counter, "Frames the kernel dropped before the socket, by reason.");
    for (q, label) in queues.iter().zip(&names) {
        let k = &q.kernel;
        for (reason, v) in [
            ("rx_dropped", k.rx_dropped),
            ("rx_ring_full", k.rx_ring_full),
            ("fill_ring_empty", k.rx_fill_ring_empty),
            ("invalid_descs", k.rx_invalid_descs),
        ] {
            e.sample(name, &[("service", service), ("queue", label.as_str()), ("reason", reason)], v as f64);
        }
    }
    if let Some(p) = program {
        let name = "appliance_aggregate_xdp_program_frames_total";
        e.family(
            name,
            Kind::Counter,
            "Frames the XDP program saw: redirected to AF_XDP, or passed to the kernel.",
        );
        e.sample(name, &[("service", service), ("action", "redirect")], p.matched as f64);
        e.sample(name, &[("service", service), ("action", "pass")], p.passed as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::queues_of;

    #[test]
    fn every_queue_has_one_member() {
        for (queues, members) in [(1, 1), (2, 2), (4, 2), (3, 2), (1, 4), (8, 3)] {
            let mut all: Vec<u32> = (0..members).flat_map(|i| queues_of(queues, i, members)).collect();
            all.sort_unstable();
            assert_eq!(all, (0..queues).collect::<Vec<_>>(), "{queues} queues over {members} members");
        }
    }
}
