//! systemd's readiness protocol (`sd_notify(3)`): one datagram of
//! `KEY=value` lines to the Unix socket named by `$NOTIFY_SOCKET` (a path,
//! or an abstract name written `@name`). Outside systemd the variable is
//! unset and every call does nothing.
//!
//! With `Type=notify` a unit is started once the process says `READY=1`.
//! A binary upgrade starts a new process that takes over the service and
//! says `MAINPID=<its pid>` (which needs `NotifyAccess=all`, since the
//! sender is not the main process yet), so systemd follows the new process
//! instead of considering the service stopped when the old one exits.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (`"READY=1"`, `"STOPPING=1\nSTATUS=draining"`, ...) to
/// systemd. `Ok(false)` when not started by systemd (no `$NOTIFY_SOCKET`).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else { return Ok(false) };
    let target = target.to_string_lossy().into_owned();
    let addr = address(&target)?;
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// The socket address `$NOTIFY_SOCKET` names.
fn address(target: &str) -> io::Result<SocketAddr> {
    match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None if target.starts_with('/') => SocketAddr::from_pathname(target),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{NOTIFY_SOCKET}={target:?} is neither a path nor an abstract name"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaches_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("sd-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let addr = address(path.to_str().expect("utf-8")).expect("address");
        UnixDatagram::unbound().expect("socket").send_to_addr(b"READY=1", &addr).expect("send");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("@sd-notify-test-{}", std::process::id());
        let addr = address(&name).expect("abstract");
        use std::os::linux::net::SocketAddrExt as _;
        let abstract_listener = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        assert!(addr.as_abstract_name().is_some());
        UnixDatagram::unbound().expect("socket").send_to_addr(b"STOPPING=1", &addr).expect("send");
        let n = abstract_listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_relative_name_is_refused() {
        assert_eq!(address("notify").unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
