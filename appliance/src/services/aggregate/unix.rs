//! DogStatsD over a Unix datagram socket, as the Datadog agent takes it:
//! one socket (mode 0722, a stale file replaced), read by every member
//! shard (each waits for readiness on its ring, then reads what is queued
//! without blocking), each datagram handled like a UDP one. With origin
//! detection, each datagram's lines are tagged with the sender the kernel
//! vouches for (`SO_PASSCRED`): `pid:N`, and `container_id:ID` when
//! `/proc/PID/cgroup` names a container.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The bound socket, shared by the member shards; its file is removed when
/// the last user is gone (the process ends or the service is dropped).
#[derive(Debug)]
pub struct UnixSocket {
    /// `None` once closed (a listener at drain, see [`UnixSocket::close`]).
    fd: std::sync::Mutex<Option<OwnedFd>>,
    path: PathBuf,
}

impl UnixSocket {
    /// Binds `path` (mode 0722, so any local client may write).
    pub fn bind(path: &Path, origin: bool) -> io::Result<UnixSocket> {
        let fd = netstack::unix::bind_dgram(path, 0o722, origin)?;
        Ok(UnixSocket::new(fd, path))
    }

    /// Listens for stream clients at `path` (mode 0722).
    pub fn listen(path: &Path) -> io::Result<UnixSocket> {
        let fd = netstack::unix::bind_stream(path, 0o722)?;
        Ok(UnixSocket::new(fd, path))
    }

    /// A listening stream socket a binary upgrade handed over.
    pub fn inherited_listener(fd: OwnedFd, path: &Path) -> UnixSocket {
        UnixSocket::new(fd, path)
    }

    /// The socket a binary upgrade handed over (its file stays, and is
    /// ours to remove at the end); credentials as `origin` asks.
    pub fn inherited(fd: OwnedFd, path: &Path, origin: bool) -> io::Result<UnixSocket> {
        socket2::SockRef::from(&fd).set_passcred(origin)?;
        Ok(UnixSocket::new(fd, path))
    }

    fn new(fd: OwnedFd, path: &Path) -> UnixSocket {
        UnixSocket { fd: std::sync::Mutex::new(Some(fd)), path: path.to_path_buf() }
    }

    /// A descriptor of the socket for one shard.
    pub fn for_shard(&self) -> io::Result<OwnedFd> {
        match &*self.fd.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(fd) => fd.try_clone(),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "the socket was closed at drain")),
        }
    }

    /// Closes this copy of the descriptor (at drain). A socket whose every
    /// copy is closed refuses clients (`ECONNREFUSED`) instead of queueing
    /// connections or datagrams nobody will read, which the exit would
    /// drop unseen; a successor's own copies (binary upgrade) keep it open
    /// for the successor.
    pub fn close(&self) {
        drop(self.fd.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

/// Set once a successor process took the sockets over (a binary upgrade):
/// the files are its now.
static HANDED_OVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Below this queue length a burst from one client outruns the shard's
/// next receive.
const QLEN_ADVISED: u64 = 512;

/// The startup warning for a Unix datagram listener on a host whose
/// `net.unix.max_dgram_qlen` is `qlen` (`None`: unknown, no warning): the
/// kernel queues at most that many datagrams per socket, and a sender that
/// does not block (the Datadog clients' default) drops the rest on its
/// side, where the aggregator cannot count them.
pub fn queue_warning(service: &str, qlen: Option<u64>) -> Option<String> {
    let qlen = qlen.filter(|&q| q < QLEN_ADVISED)?;
    Some(format!(
        "aggregate \"{service}\": net.unix.max_dgram_qlen is {qlen}: its Unix datagram socket queues at most \
         {qlen} datagrams, and a client that sends without blocking drops the rest on its side, uncounted \
         here; raise it (sysctl -w net.unix.max_dgram_qlen={QLEN_ADVISED}) or give clients blocking sends"
    ))
}

/// The sockets' files belong to a successor: never remove them.
pub fn handed_over() {
    HANDED_OVER.store(true, std::sync::atomic::Ordering::SeqCst);
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        if !HANDED_OVER.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The origin tags of recent senders, by pid (read once per pid, not per
/// datagram; bounded: cleared when full).
#[derive(Debug, Default)]
pub struct Origins(HashMap<u32, String>);

const REMEMBERED_PIDS: usize = 4096;

impl Origins {
    /// The tags for a datagram from `pid`: `pid:N[,container_id:ID]`.
    pub fn tags(&mut self, pid: u32) -> &str {
        if self.0.len() >= REMEMBERED_PIDS && !self.0.contains_key(&pid) {
            self.0.clear();
        }
        self.0.entry(pid).or_insert_with(|| {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok();
            match cgroup.as_deref().and_then(container_id) {
                Some(id) => format!("pid:{pid},container_id:{id}"),
                None => format!("pid:{pid}"),
            }
        })
    }
}

/// The container id a `/proc/PID/cgroup` names: a 64-hex-digit id in the
/// last part of a cgroup path (Docker `/docker/ID`, containerd and CRI-O
/// `…-ID.scope`, Kubernetes `…/pod…/ID`), as the Datadog agent reads it.
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        let last = path.rsplit('/').next()?;
        let last = last.strip_suffix(".scope").unwrap_or(last);
        let id = last.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::{container_id, queue_warning};

    #[test]
    fn a_short_datagram_queue_is_warned_about_with_its_fix() {
        let w = queue_warning("dsd", Some(10)).expect("10 is short");
        assert!(w.contains("aggregate \"dsd\"") && w.contains("is 10") && w.contains("sysctl -w"), "{w}");
        assert_eq!(queue_warning("dsd", Some(512)), None);
        assert_eq!(queue_warning("dsd", None), None, "unknown: nothing to say");
    }

    #[test]
    fn container_ids_from_cgroup_files() {
        let id = "3f4a0e7c0d3b2a19f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281";
        for file in [
            format!("0::/system.slice/docker-{id}.scope\n"),
            format!("12:memory:/docker/{id}\n11:cpu:/docker/{id}\n"),
            format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{id}.scope\n"),
            format!("0::/kubepods/besteffort/pod0d1e/{id}\n"),
        ] {
            assert_eq!(container_id(&file).as_deref(), Some(id), "{file}");
        }
        assert_eq!(container_id("0::/user.slice/user-0.slice/session-3.scope\n"), None);
        assert_eq!(container_id("garbage"), None);
    }
}
