//! Plain, I/O-free model of the CPUs this process may run on.
//!
//! Both topology readers (hwloc and sysfs) produce this model so that the
//! planner can be tested on synthetic machines without touching the host.

use std::collections::BTreeSet;
use std::fmt;

/// The processing units (hardware threads) this process is allowed to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Allowed PUs, sorted by OS index.
    pub pus: Vec<Pu>,
    /// Which reader produced this model.
    pub source: TopologySource,
}

/// One processing unit (a hardware thread, what Linux calls a "cpu").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pu {
    /// OS index, the number Linux uses in affinity masks and `/proc`.
    pub os_index: usize,
    /// Physical core id, unique machine-wide (PUs with the same id are SMT
    /// siblings).
    pub core: usize,
    /// Package (socket) id.
    pub package: usize,
    /// OS index of the NUMA node whose memory is local to this PU.
    pub numa_node: usize,
}

/// Where the topology information came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopologySource {
    /// Read through hwloc (preferred: handles odd firmware and more OSes).
    Hwloc,
    /// Read directly from Linux sysfs (fallback when hwloc fails).
    Sysfs,
}

impl fmt::Display for TopologySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopologySource::Hwloc => "hwloc",
            TopologySource::Sysfs => "sysfs",
        })
    }
}

impl Machine {
    /// Looks up a PU by its OS index.
    pub fn pu(&self, os_index: usize) -> Option<&Pu> {
        self.pus.iter().find(|pu| pu.os_index == os_index)
    }

    /// OS indices of all allowed PUs, ascending.
    pub fn cpu_ids(&self) -> Vec<usize> {
        let ids: BTreeSet<usize> = self.pus.iter().map(|pu| pu.os_index).collect();
        ids.into_iter().collect()
    }

    /// NUMA nodes that have at least one allowed PU, ascending.
    pub fn numa_nodes(&self) -> Vec<usize> {
        let nodes: BTreeSet<usize> = self.pus.iter().map(|pu| pu.numa_node).collect();
        nodes.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let pu = |os_index, numa_node| Pu { os_index, core: os_index, package: 0, numa_node };
        let m = Machine { pus: vec![pu(3, 1), pu(1, 0), pu(2, 1)], source: TopologySource::Sysfs };
        assert_eq!(m.cpu_ids(), vec![1, 2, 3]);
        assert_eq!(m.numa_nodes(), vec![0, 1]);
        assert_eq!(m.pu(2).map(|p| p.numa_node), Some(1));
        assert!(m.pu(7).is_none());
        assert_eq!(TopologySource::Hwloc.to_string(), "hwloc");
    }
}
