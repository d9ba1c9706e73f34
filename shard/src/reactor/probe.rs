//! What the kernel's io_uring offers: setup flags it accepts, features it
//! reports and the operations the runtime relies on. Printed by
//! `appliance topology` and in the startup report, and used by tests to
//! skip with a message when a feature is missing.

use std::fmt;

use io_uring::{opcode, register::Probe};

use super::uring::{SetupFlags, Uring};

/// The result of probing io_uring on this kernel.
#[derive(Debug, Clone, Default)]
pub struct UringProbe {
    /// `uname -r`.
    pub kernel: String,
    /// Setup flags our ring was created with.
    pub setup: SetupFlags,
    /// IORING_FEAT_EXT_ARG: waits with a timeout in one enter.
    pub ext_arg: bool,
    /// IORING_FEAT_NODROP: completions are never dropped on overflow.
    pub nodrop: bool,
    /// IORING_FEAT_FAST_POLL: internal poll instead of io-wq threads.
    pub fast_poll: bool,
    /// IORING_FEAT_CQE_SKIP: successful completions can be skipped.
    pub cqe_skip: bool,
    /// IORING_FEAT_RECVSEND_BUNDLE.
    pub recvsend_bundle: bool,
    /// Opcodes by name and whether the kernel supports them.
    pub ops: Vec<(&'static str, bool)>,
    /// Why probing failed, if it did.
    pub error: Option<String>,
}

impl UringProbe {
    /// Whether an opcode by its name in [`UringProbe::ops`] is supported.
    pub fn supports(&self, name: &str) -> bool {
        self.ops.iter().any(|(n, ok)| *n == name && *ok)
    }

    /// Whether the kernel has every operation the runtime needs.
    pub fn complete(&self) -> bool {
        self.error.is_none() && self.ext_arg && self.ops.iter().all(|(_, ok)| *ok)
    }
}

/// Probes io_uring with a small throw-away ring.
pub fn probe() -> UringProbe {
    let mut out = UringProbe { kernel: kernel_release(), ..UringProbe::default() };
    let ring = match Uring::new(8) {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(format!("io_uring_setup failed: {e}"));
            return out;
        }
    };
    out.setup = ring.flags();
    let p = ring.params();
    out.ext_arg = p.is_feature_ext_arg();
    out.nodrop = p.is_feature_nodrop();
    out.fast_poll = p.is_feature_fast_poll();
    out.cqe_skip = p.is_feature_skip_cqe_on_success();
    out.recvsend_bundle = p.is_feature_recvsend_bundle();
    let mut probe = Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        out.error = Some(format!("IORING_REGISTER_PROBE failed: {e}"));
        return out;
    }
    let wanted: [(&'static str, u8); 17] = [
        ("accept", opcode::Accept::CODE),
        ("connect", opcode::Connect::CODE),
        ("recv", opcode::Recv::CODE),
        ("send", opcode::Send::CODE),
        ("send_zc", opcode::SendZc::CODE),
        ("recvmsg", opcode::RecvMsg::CODE),
        ("sendmsg", opcode::SendMsg::CODE),
        ("read", opcode::Read::CODE),
        ("write", opcode::Write::CODE),
        ("splice", opcode::Splice::CODE),
        ("close", opcode::Close::CODE),
        ("socket", opcode::Socket::CODE),
        ("uring_cmd", opcode::SetSockOpt::CODE),
        ("timeout", opcode::Timeout::CODE),
        ("async_cancel", opcode::AsyncCancel::CODE),
        ("msg_ring", opcode::MsgRingData::CODE),
        ("poll_add", opcode::PollAdd::CODE),
    ];
    out.ops = wanted.iter().map(|(n, code)| (*n, probe.is_supported(*code))).collect();
    out
}

/// Whether a multishot receive can be given a total byte limit
/// (`sqe->optlen`, Linux 6.17: the receive ends by itself once it has
/// taken that many bytes). Older kernels ignore the field, so this is
/// decided by the kernel's version, once per process.
pub fn recv_byte_limit() -> bool {
    static LIMIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| at_least(&kernel_release(), (6, 17)))
}

/// Whether a `uname -r` style release is at least `want` (major, minor).
fn at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

/// Whether a failed send reports the bytes it sent before failing (Linux
/// 6.0+), which [`crate::ops::send_quiet`] needs: a short quiet send is a
/// failure, and its result must say how much went out.
pub fn quiet_send() -> bool {
    static QUIET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *QUIET.get_or_init(|| at_least(&kernel_release(), (6, 0)))
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for UringProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "io_uring on Linux {}", self.kernel)?;
        if let Some(e) = &self.error {
            return writeln!(f, "  unavailable: {e}");
        }
        let s = &self.setup;
        writeln!(
            f,
            "  setup:    single_issuer={} defer_taskrun={} coop_taskrun={} (coop is the fallback when defer is refused)",
            yes(s.single_issuer),
            yes(s.defer_taskrun),
            yes(s.coop_taskrun)
        )?;
        writeln!(
            f,
            "  features: ext_arg={} nodrop={} fast_poll={} cqe_skip={} recvsend_bundle={} recv_byte_limit={}",
            yes(self.ext_arg),
            yes(self.nodrop),
            yes(self.fast_poll),
            yes(self.cqe_skip),
            yes(self.recvsend_bundle),
            yes(recv_byte_limit())
        )?;
        let ops: Vec<String> = self.ops.iter().map(|(n, ok)| format!("{n}={}", yes(*ok))).collect();
        for chunk in ops.chunks(6) {
            writeln!(f, "  ops:      {}", chunk.join(" "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::at_least;

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(at_least("6.17.0", (6, 17)));
        assert!(at_least("6.18.3-arch1-1", (6, 17)));
        assert!(at_least("7.0.14-orbstack-00380-ga7e0a2dc9535", (6, 17)));
        assert!(!at_least("6.16.9", (6, 17)));
        assert!(!at_least("5.19.0", (6, 17)));
        assert!(!at_least("unknown", (6, 17)));
        assert!(!at_least("6", (6, 17)));
    }
}
