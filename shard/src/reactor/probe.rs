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
            "  features: ext_arg={} nodrop={} fast_poll={} cqe_skip={} recvsend_bundle={}",
            yes(self.ext_arg),
            yes(self.nodrop),
            yes(self.fast_poll),
            yes(self.cqe_skip),
            yes(self.recvsend_bundle)
        )?;
        let ops: Vec<String> = self.ops.iter().map(|(n, ok)| format!("{n}={}", yes(*ok))).collect();
        for chunk in ops.chunks(6) {
            writeln!(f, "  ops:      {}", chunk.join(" "))?;
        }
        Ok(())
    }
}
