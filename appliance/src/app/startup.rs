//! The startup report: version, shard placement (shard -> CPU -> NUMA
//! node), io_uring features, and the process limits, with a warning and
//! the fix when they are too low for the configuration.

use crate::app::fds::{soft_limit, Budget};
use crate::config::AppConfig;

/// Logs the report, with the descriptor budget and its warnings.
pub fn report(plan: &shard::placement::Plan, cfg: &AppConfig, budget: &Budget, warnings: &[String]) {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), shards = plan.shards.len(), "appliance starting");
    for p in &plan.shards {
        tracing::info!(
            shard = p.shard,
            cpu = p.cpu,
            numa_node = p.numa_node,
            pinned = plan.pinned,
            "placement"
        );
    }
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let probe = shard::probe();
    let missing: Vec<&str> = probe.ops.iter().filter(|(_, ok)| !ok).map(|(name, _)| *name).collect();
    tracing::info!(
        kernel = %probe.kernel,
        ext_arg = probe.ext_arg,
        fast_poll = probe.fast_poll,
        missing_ops = ?missing,
        "io_uring"
    );
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let nofile = soft_limit(&limits, "Max open files");
    let memlock = soft_limit(&limits, "Max locked memory");
    tracing::info!(nofile = ?nofile, memlock_bytes = ?memlock, "limits");
    tracing::info!(
        nofile = budget.nofile,
        reserved = budget.reserve,
        "descriptor budget: the rest is shared by the services' connections (see docs/operations.md)"
    );
    for (service, share) in cfg.services.iter().zip(&budget.shares) {
        if let Some(share) = share {
            tracing::info!(
                service = service.name(),
                descriptors = share.fds,
                connections = share.conns,
                "budget"
            );
        }
    }
    for w in warnings {
        tracing::warn!("{w}");
    }
}
