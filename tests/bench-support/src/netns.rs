//! Network namespaces for tests and benchmarks that need real interfaces
//! (XDP, RPS, queues) without touching the machine's own network.
//!
//! [`VethPair`] makes two fresh namespaces joined by a veth link, one end
//! in each, addressed and up; dropping it deletes both namespaces, which
//! destroys the link. Everything is done with `ip` (iproute2), so it needs
//! root (check [`is_root`] first and skip otherwise).
//!
//! To run code in a namespace, either start a process there (`ip netns
//! exec NS cmd`, or [`VethPair::exec`]) or use [`in_ns`], which runs a
//! closure on a thread that joined the namespace. A socket belongs to the
//! namespace it was created in, so a socket made inside [`in_ns`] can be
//! used from any thread afterwards; interface lookups by name or index
//! (`if_nametoindex`, attaching XDP) follow the calling thread's
//! namespace, so they must run inside it. `/sys/class/net` does not follow
//! a thread (sysfs shows the namespace it was mounted in).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Pairs made by this process so far: part of every name, so pairs of
/// concurrent tests (and of concurrent test processes, by the pid) never
/// collide.
static PAIRS: AtomicU32 = AtomicU32::new(0);

/// Whether the process runs as root (effective uid 0): what creating
/// namespaces and attaching XDP need.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `ip args...`, failing with its stderr when it fails.
pub fn ip<I, S>(args: I) -> io::Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new("ip").args(args))
}

/// Runs `cmd` to completion, failing with its stderr unless it succeeds.
fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.output().map_err(|e| io::Error::new(e.kind(), format!("{cmd:?}: {e}")))?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(io::Error::other(format!("{cmd:?} failed ({}): {}", out.status, stderr.trim())))
}

/// Two network namespaces joined by a veth link: end `a` in namespace `a`
/// and end `b` in namespace `b`, each with an IPv4 address in one /24 and
/// an IPv6 address in one /64 (no duplicate address detection, so both are
/// usable at once), both links and `lo` up.
#[derive(Debug)]
pub struct VethPair {
    ns: [String; 2],
    ifname: [String; 2],
    v4: [Ipv4Addr; 2],
    v6: [Ipv6Addr; 2],
    queues: u32,
}

impl VethPair {
    /// A pair whose ends have one receive and one transmit queue each.
    pub fn new() -> io::Result<VethPair> {
        VethPair::with_queues(1)
    }

    /// A pair whose ends have `queues` receive and transmit queues each
    /// (a veth's receive queue is picked by the sender's transmit queue).
    pub fn with_queues(queues: u32) -> io::Result<VethPair> {
        let n = PAIRS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Unique per process so addresses of concurrent pairs differ too,
        // although each pair's namespaces are private anyway.
        let k = (n % 250) as u8 + 1;
        let pair = VethPair {
            ns: [format!("appl-{pid}-{n}-a"), format!("appl-{pid}-{n}-b")],
            ifname: ["veth-a".to_owned(), "veth-b".to_owned()],
            v4: [Ipv4Addr::new(10, k, 0, 1), Ipv4Addr::new(10, k, 0, 2)],
            v6: [
                Ipv6Addr::new(0xfd00, u16::from(k), 0, 0, 0, 0, 0, 1),
                Ipv6Addr::new(0xfd00, u16::from(k), 0, 0, 0, 0, 0, 2),
            ],
            queues: queues.max(1),
        };
        // From here on, Drop deletes whatever part was made.
        pair.create()?;
        Ok(pair)
    }

    fn create(&self) -> io::Result<()> {
        for ns in &self.ns {
            ip(["netns", "add", ns])?;
        }
        let q = self.queues.to_string();
        let [na, nb] = &self.ns;
        let [ia, ib] = &self.ifname;
        let end_a = ["-n", na, "link", "add", ia, "numtxqueues", &q, "numrxqueues", &q];
        let end_b = ["peer", "name", ib, "netns", nb, "numtxqueues", &q, "numrxqueues", &q];
        ip(end_a.iter().chain(&["type", "veth"]).chain(&end_b))?;
        for side in 0..2 {
            self.configure(side)?;
        }
        Ok(())
    }

    fn configure(&self, side: usize) -> io::Result<()> {
        let (ns, ifname) = (&self.ns[side], &self.ifname[side]);
        ip(["-n", ns, "link", "set", "lo", "up"])?;
        ip(["-n", ns, "addr", "add", &format!("{}/24", self.v4[side]), "dev", ifname])?;
        ip(["-n", ns, "-6", "addr", "add", &format!("{}/64", self.v6[side]), "dev", ifname, "nodad"])?;
        ip(["-n", ns, "link", "set", ifname, "up"])?;
        Ok(())
    }

    /// The namespace of end `a`.
    pub fn ns_a(&self) -> &str {
        &self.ns[0]
    }

    /// The namespace of end `b`.
    pub fn ns_b(&self) -> &str {
        &self.ns[1]
    }

    /// The interface name of end `a` (in [`VethPair::ns_a`]).
    pub fn if_a(&self) -> &str {
        &self.ifname[0]
    }

    /// The interface name of end `b` (in [`VethPair::ns_b`]).
    pub fn if_b(&self) -> &str {
        &self.ifname[1]
    }

    /// End `a`'s IPv4 address.
    pub fn addr_a(&self) -> Ipv4Addr {
        self.v4[0]
    }

    /// End `b`'s IPv4 address.
    pub fn addr_b(&self) -> Ipv4Addr {
        self.v4[1]
    }

    /// End `a`'s IPv6 address.
    pub fn addr6_a(&self) -> Ipv6Addr {
        self.v6[0]
    }

    /// End `b`'s IPv6 address.
    pub fn addr6_b(&self) -> Ipv6Addr {
        self.v6[1]
    }

    /// Receive (and transmit) queues of each end.
    pub fn queues(&self) -> u32 {
        self.queues
    }

    /// A command that runs `program` in namespace `ns` (`ip netns exec`).
    pub fn exec(ns: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// Turns off transmit checksum offload on end `b`, so what it sends
    /// carries complete UDP checksums. A veth otherwise hands its peer
    /// locally made packets with the checksum left for hardware to finish
    /// (`CHECKSUM_PARTIAL`), which the kernel's own receive path accepts
    /// but an AF_XDP socket sees as it is; a NIC's frames carry complete
    /// ones. Needs `ethtool`.
    pub fn complete_checksums_from_b(&self) -> io::Result<()> {
        let mut cmd = VethPair::exec(&self.ns[1], "ethtool");
        run(cmd.args(["-K", &self.ifname[1], "tx", "off"])).map(drop)
    }

    /// `ip -d link show` of end `a` (shows an attached XDP program).
    pub fn link_a(&self) -> io::Result<String> {
        let out = ip(["-d", "-n", &self.ns[0], "link", "show", "dev", &self.ifname[0]])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth end in it, and with it
        // the peer. Quietly: the namespace may not have been made.
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Runs `f` on a new thread that first joins the network namespace `ns`
/// (one made by `ip netns add`) and returns its result. Threads `f` spawns
/// inherit the namespace. Panics if the namespace cannot be joined, and
/// passes on a panic of `f`.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    match try_in_ns(ns, f) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// [`in_ns`], with failing to join the namespace as an error.
pub fn try_in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        let joined = s.spawn(|| -> io::Result<T> {
            join_netns(ns)?;
            Ok(f())
        });
        match joined.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Moves the calling thread into the network namespace `ns`. Only this
/// thread: the namespace is a per-thread attribute, so the caller must be
/// a thread made for the purpose (as [`in_ns`] does).
fn join_netns(ns: &str) -> io::Result<()> {
    let path = format!("/var/run/netns/{ns}");
    let file = File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    // SAFETY: `file` is an open namespace file for the whole call; setns only changes the calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("setns({path}): {e}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    #[test]
    fn pairs_connect_their_namespaces_and_clean_up() {
        if !is_root() {
            eprintln!("skipping: network namespaces need root");
            return;
        }
        let pair = VethPair::with_queues(2).unwrap();
        let ns = (pair.ns_a().to_owned(), pair.ns_b().to_owned());
        let rx = in_ns(pair.ns_a(), || UdpSocket::bind((pair.addr_a(), 0))).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let tx = in_ns(pair.ns_b(), || UdpSocket::bind("0.0.0.0:0")).unwrap();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from.ip()), (&b"hello"[..], pair.addr_b().into()));
        assert!(pair.link_a().unwrap().contains("numtxqueues 2"));
        drop(pair);
        let list = String::from_utf8(ip(["netns", "list"]).unwrap().stdout).unwrap();
        assert!(!list.contains(&ns.0) && !list.contains(&ns.1), "{list}");
    }

    #[test]
    fn joining_a_missing_namespace_is_an_error() {
        let err = try_in_ns("appl-no-such-namespace", || ()).unwrap_err();
        assert!(err.to_string().contains("appl-no-such-namespace"), "{err}");
    }
}
