//! `net.ipv4.tcp_migrate_req`: whether closing one listener of a group
//! hands its queued connections to another member or resets them.

use std::fs;
use std::io;

/// The sysctl, as a file. Per network namespace: a process sees (and sets)
/// the value of the namespace it runs in. Absent before Linux 5.14.
pub const MIGRATE_REQ_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Whether `net.ipv4.tcp_migrate_req` is on in this network namespace.
/// `NotFound` on kernels without it (before 5.14).
pub fn migrate_req_enabled() -> io::Result<bool> {
    parse(&fs::read_to_string(MIGRATE_REQ_SYSCTL)?)
}

/// Turns `net.ipv4.tcp_migrate_req` on for this network namespace. Needs
/// root (`CAP_NET_ADMIN` over the namespace); the setting outlives the
/// process and applies to every reuseport group in the namespace.
pub fn enable_migrate_req() -> io::Result<()> {
    set_migrate_req(true).map(drop)
}

/// Sets `net.ipv4.tcp_migrate_req` and returns the previous value, so a
/// caller can put it back. Writes only when the value changes.
pub fn set_migrate_req(on: bool) -> io::Result<bool> {
    let previous = migrate_req_enabled()?;
    if previous != on {
        fs::write(MIGRATE_REQ_SYSCTL, if on { "1\n" } else { "0\n" })?;
    }
    Ok(previous)
}

fn parse(text: &str) -> io::Result<bool> {
    match text.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected {MIGRATE_REQ_SYSCTL} value {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sysctl() {
        assert!(!parse("0\n").unwrap());
        assert!(parse("1\n").unwrap());
        assert_eq!(parse("2\n").unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn reads_this_kernel() {
        match migrate_req_enabled() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => eprintln!("no tcp_migrate_req (kernel < 5.14)"),
            Err(e) => panic!("{e}"),
        }
    }
}
