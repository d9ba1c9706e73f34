//! Shard placement: which hardware thread (PU) each shard runs on.
//!
//! A thread-per-core runtime only pays off when every shard owns a PU: no
//! migrations that cool its caches, no two shards fighting over one core,
//! and memory allocated on the NUMA node the shard runs on. So we read the
//! machine ([`read_hwloc`], falling back to [`read_sysfs`]), [`plan()`] one PU
//! per shard, and each shard thread calls [`apply`] on itself at startup.
//!
//! The plan fills the NIC's NUMA node first (packets are DMA'd there), then
//! the other nodes one at a time, and within a node takes one PU of every
//! physical core before any SMT sibling, since siblings share one core's
//! execution units.
//!
//! Typical use: call [`discover`] once on the main thread, print the
//! [`Plan`], spawn one thread per [`ShardPlacement`], and if [`Plan::pinned`]
//! have each thread call [`apply`] on itself before it starts serving (and
//! log the warnings it returns).

use std::path::PathBuf;

mod bind;
mod hwloc;
mod machine;
mod plan;
mod sysfs;

pub use bind::apply;
pub use hwloc::read_hwloc;
pub use machine::{Machine, Pu, TopologySource};
pub use plan::{plan, PlacementOptions, Plan, ShardPlacement};
pub use sysfs::{format_cpu_list, nic_numa_node, parse_cpu_list, read_sysfs};

/// Everything that can go wrong while discovering, planning or applying a
/// placement. Messages name the flag or file, the offending value and a fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// A `--cpus` list has an entry that is not a cpu number or range.
    #[error("\"{list}\": {problem} (expected a list like 0-3,8)")]
    BadCpuList {
        /// The whole list as given.
        list: String,
        /// The offending part of it.
        token: String,
        /// What is wrong with `token`.
        problem: String,
    },
    /// `--cpus` was given but lists no cpu.
    #[error("empty: list at least one cpu, like 0-3")]
    EmptyCpuList,
    /// `--cpus` names a cpu this process may not run on (or that does not exist).
    #[error(
        "cpu {cpu} is not available to this process (available: {available}; \
         see taskset or the cgroup cpuset)"
    )]
    UnknownCpu {
        /// The cpu asked for.
        cpu: usize,
        /// The cpus that are available, in cpulist syntax.
        available: String,
    },
    /// `--cpus` names a cpu twice.
    #[error("cpu {cpu} is listed twice (each shard needs its own cpu)")]
    DuplicateCpu {
        /// The repeated cpu.
        cpu: usize,
    },
    /// `--shards` and `--cpus` disagree on the number of shards.
    #[error(
        "{shards} does not match the cpu list, which names {cpus} cpus \
         (drop the shard count or make them equal)"
    )]
    ShardsCpusMismatch {
        /// The `--shards` value.
        shards: usize,
        /// How many cpus `--cpus` lists.
        cpus: usize,
    },
    /// `--shards 0`.
    #[error("0: at least one shard is needed (omit it for one per cpu)")]
    ZeroShards,
    /// More shards than PUs while pinning.
    #[error(
        "{shards}: only {pus} cpus are available to pin shards to \
         (use {pus} or fewer, or --no-pin / no_pin = true to oversubscribe)"
    )]
    TooManyShards {
        /// Shards asked for.
        shards: usize,
        /// PUs available.
        pus: usize,
    },
    /// The topology reader found no PU this process may use.
    #[error(
        "no usable cpus found via {reader} (is the process affinity or cgroup \
         cpuset empty?)"
    )]
    NoCpus {
        /// The reader that came up empty.
        reader: TopologySource,
    },
    /// hwloc could not load the topology.
    #[error("hwloc could not read the cpu topology: {reason}")]
    Hwloc {
        /// hwloc's error.
        reason: String,
    },
    /// A sysfs or procfs file could not be read or parsed.
    #[error("cannot read {}: {reason}", path.display())]
    Sysfs {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Neither hwloc nor sysfs could describe the machine.
    #[error(
        "no cpu topology: {hwloc}; the sysfs fallback failed too: {sysfs} \
         (is /sys mounted?)"
    )]
    NoTopology {
        /// Why hwloc failed.
        hwloc: String,
        /// Why sysfs failed.
        sysfs: String,
    },
    /// `--nic` names an interface that does not exist.
    #[error("--nic \"{ifname}\": no such network interface (list them with `ip link`)")]
    NicNotFound {
        /// The interface name as given.
        ifname: String,
    },
    /// The shard thread could not be pinned to its cpu.
    #[error(
        "cannot pin shard thread to cpu {cpu}: {reason} (check that the cpu is \
         in the process affinity, or run with --no-pin)"
    )]
    Pin {
        /// The cpu.
        cpu: usize,
        /// What the OS said.
        reason: String,
    },
}

impl PlacementError {
    /// The setting the error is about (`"cpus"` or `"shards"`), for the
    /// caller to name it as the user gave it (a flag or a file key); the
    /// message itself names no flag.
    pub fn setting(&self) -> Option<&'static str> {
        match self {
            PlacementError::BadCpuList { .. }
            | PlacementError::EmptyCpuList
            | PlacementError::UnknownCpu { .. }
            | PlacementError::DuplicateCpu { .. } => Some("cpus"),
            PlacementError::ShardsCpusMismatch { .. }
            | PlacementError::ZeroShards
            | PlacementError::TooManyShards { .. } => Some("shards"),
            _ => None,
        }
    }
}

/// Reads the machine, resolves `opts.nic` and plans the placement.
///
/// hwloc is preferred; if it fails, sysfs is used and the plan carries a
/// warning saying so.
pub fn discover(opts: &PlacementOptions) -> Result<Plan, PlacementError> {
    discover_with(opts, read_hwloc, read_sysfs, nic_numa_node)
}

/// [`discover`] with the readers passed in, so tests can make them fail.
fn discover_with(
    opts: &PlacementOptions,
    hwloc: impl FnOnce() -> Result<Machine, PlacementError>,
    sysfs: impl FnOnce() -> Result<Machine, PlacementError>,
    nic: impl FnOnce(&str) -> Result<Option<usize>, PlacementError>,
) -> Result<Plan, PlacementError> {
    let mut warnings = Vec::new();
    let machine = match hwloc() {
        Ok(machine) => machine,
        Err(hwloc_err) => match sysfs() {
            Ok(machine) => {
                tracing::warn!(error = %hwloc_err, "hwloc failed, using sysfs topology");
                warnings.push(format!("{hwloc_err}; using the topology from sysfs instead"));
                machine
            }
            Err(sysfs_err) => {
                return Err(PlacementError::NoTopology {
                    hwloc: hwloc_err.to_string(),
                    sysfs: sysfs_err.to_string(),
                })
            }
        },
    };
    let nic_node = match &opts.nic {
        Some(ifname) => {
            let node = nic(ifname)?;
            if node.is_none() && machine.numa_nodes().len() > 1 {
                warnings.push(format!(
                    "--nic \"{ifname}\": the kernel does not know its NUMA node \
                     (virtual device?); placing shards without NIC locality"
                ));
            }
            node
        }
        None => None,
    };
    let mut plan = plan(&machine, opts, nic_node)?;
    warnings.append(&mut plan.warnings);
    plan.warnings = warnings;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discover_on_this_machine() {
        let plan = discover(&PlacementOptions::default()).expect("this machine is readable");
        assert!(!plan.shards.is_empty());
        assert!(plan.pinned);
        let machine = read_hwloc().or_else(|_| read_sysfs()).expect("readable");
        for s in &plan.shards {
            assert!(machine.pu(s.cpu).is_some(), "cpu {} not in machine", s.cpu);
        }
        assert_eq!(plan.shards.len(), machine.pus.len());
        assert!(plan.to_string().starts_with("placement: "));
    }

    #[test]
    fn discover_reports_unknown_nic_and_bad_shards() {
        let opts = PlacementOptions { nic: Some("no-such-nic0".to_string()), ..PlacementOptions::default() };
        assert_eq!(discover(&opts), Err(PlacementError::NicNotFound { ifname: "no-such-nic0".to_string() }));
        let opts = PlacementOptions { shards: Some(0), ..PlacementOptions::default() };
        assert_eq!(discover(&opts), Err(PlacementError::ZeroShards));
    }

    #[test]
    fn discover_oversubscribed_without_pin() {
        let opts = PlacementOptions { shards: Some(4096), pin: false, ..PlacementOptions::default() };
        let plan = discover(&opts).expect("unpinned oversubscription plans");
        assert_eq!(plan.shards.len(), 4096);
        assert!(!plan.warnings.is_empty());
    }

    /// Two nodes of two single-thread cores each.
    fn two_nodes(source: TopologySource) -> Machine {
        let pu = |os_index: usize| Pu { os_index, core: os_index, package: 0, numa_node: os_index / 2 };
        Machine { pus: (0..4).map(pu).collect(), source }
    }

    fn hwloc_down() -> Result<Machine, PlacementError> {
        Err(PlacementError::Hwloc { reason: "no luck".to_string() })
    }

    #[test]
    fn falls_back_to_sysfs_with_a_warning() {
        let opts = PlacementOptions::default();
        let plan = discover_with(&opts, hwloc_down, || Ok(two_nodes(TopologySource::Sysfs)), |_| Ok(None))
            .expect("sysfs fallback plans");
        assert_eq!(plan.source, TopologySource::Sysfs);
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.warnings[0].contains("no luck"), "{:?}", plan.warnings);
        assert!(plan.warnings[0].contains("sysfs"), "{:?}", plan.warnings);
        assert!(plan.to_string().contains("topology from sysfs"));

        let both_down = discover_with(
            &opts,
            hwloc_down,
            || Err(PlacementError::NoCpus { reader: TopologySource::Sysfs }),
            |_| Ok(None),
        );
        match both_down {
            Err(e @ PlacementError::NoTopology { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("no luck") && msg.contains("via sysfs"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nic_node_is_resolved_and_unknown_node_warns() {
        let opts = PlacementOptions {
            nic: Some("eth7".to_string()),
            shards: Some(2),
            ..PlacementOptions::default()
        };
        let hw = || Ok(two_nodes(TopologySource::Hwloc));
        let plan = discover_with(&opts, hw, hwloc_down, |name| {
            assert_eq!(name, "eth7");
            Ok(Some(1))
        })
        .expect("plans");
        let cpus: Vec<usize> = plan.shards.iter().map(|s| s.cpu).collect();
        assert_eq!(cpus, vec![2, 3]);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);

        let plan = discover_with(&opts, hw, hwloc_down, |_| Ok(None)).expect("plans");
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.warnings[0].contains("\"eth7\""), "{:?}", plan.warnings);
    }
}
