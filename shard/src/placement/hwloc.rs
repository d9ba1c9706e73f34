//! Topology through hwloc, the preferred reader: it copes with firmware
//! quirks and non-Linux systems that raw sysfs parsing would not.

use std::sync::OnceLock;

use hwlocality::cpu::binding::CpuBindingFlags;
use hwlocality::object::types::ObjectType;
use hwlocality::object::TopologyObject;
use hwlocality::Topology;

use super::machine::{Machine, Pu, TopologySource};
use super::PlacementError;

/// The process-wide hwloc topology, loaded on first use.
///
/// Loading walks all of sysfs (milliseconds on big machines), so discovery
/// and every shard thread's [`apply`](super::apply) share one copy;
/// `Topology` is `Send + Sync` and binding calls only read it. A failed load
/// is remembered too, so shard threads do not each retry it.
pub(crate) fn shared_topology() -> Result<&'static Topology, PlacementError> {
    static TOPOLOGY: OnceLock<Result<Topology, String>> = OnceLock::new();
    TOPOLOGY.get_or_init(load).as_ref().map_err(|reason| PlacementError::Hwloc { reason: reason.clone() })
}

fn load() -> Result<Topology, String> {
    let topology = Topology::new().map_err(|e| e.to_string())?;
    // HWLOC_XMLFILE / HWLOC_SYNTHETIC make hwloc describe some other
    // machine; planning or binding against that would be wrong.
    if topology.is_this_system() {
        Ok(topology)
    } else {
        Err("the topology does not describe this machine \
             (is HWLOC_XMLFILE or HWLOC_SYNTHETIC set?)"
            .to_string())
    }
}

/// Reads the PUs this thread may run on, with their core, package and NUMA
/// node, through hwloc.
pub fn read_hwloc() -> Result<Machine, PlacementError> {
    machine_from(shared_topology()?)
}

fn machine_from(topology: &Topology) -> Result<Machine, PlacementError> {
    let allowed = topology.allowed_cpuset();
    // hwloc's allowed set reflects cgroups but not `taskset`; the thread's
    // current binding (its affinity mask) covers that. If the binding cannot
    // be read, the cgroup view is still a correct, if looser, answer.
    let bound = topology.cpu_binding(CpuBindingFlags::THREAD).ok();
    let core_count = topology.objects_with_type(ObjectType::Core).len();
    let mut pus = Vec::new();
    for pu in topology.objects_with_type(ObjectType::PU) {
        let Some(os_index) = pu.os_index() else {
            continue;
        };
        let usable = allowed.is_set(os_index) && bound.as_ref().is_none_or(|b| b.is_set(os_index));
        if usable {
            pus.push(describe(pu, os_index, core_count));
        }
    }
    if pus.is_empty() {
        return Err(PlacementError::NoCpus { reader: TopologySource::Hwloc });
    }
    pus.sort_by_key(|pu| pu.os_index);
    Ok(Machine { pus, source: TopologySource::Hwloc })
}

fn describe(pu: &TopologyObject, os_index: usize, core_count: usize) -> Pu {
    // Logical indices are dense and machine-wide, unlike Core OS indices,
    // which restart in every package. A PU without a Core parent (some
    // platforms do not report cores) is treated as a core of its own, with
    // an id past every real core.
    let core = pu
        .first_ancestor_with_type(ObjectType::Core)
        .map_or(core_count + pu.logical_index(), TopologyObject::logical_index);
    let package = pu.first_ancestor_with_type(ObjectType::Package).map_or(0, TopologyObject::logical_index);
    // The nodeset lists every node local to the PU, which on machines with
    // HBM or CXL memory includes memory-only nodes; those get higher OS
    // indices than the DRAM node, so the lowest one is the right default.
    let numa_node = pu.nodeset().and_then(|nodes| nodes.first_set()).map_or(0, usize::from);
    Pu { os_index, core, package, numa_node }
}

#[cfg(test)]
mod tests {
    use super::super::sysfs::read_sysfs;
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn reads_this_machine() {
        let m = read_hwloc().expect("hwloc loads here");
        assert_eq!(m.source, TopologySource::Hwloc);
        assert!(!m.pus.is_empty());
        let ids: BTreeSet<usize> = m.pus.iter().map(|p| p.os_index).collect();
        assert_eq!(ids.len(), m.pus.len(), "os indices are unique");
    }

    /// Groups cpus by a key, so that the two readers can be compared without
    /// depending on how each numbers cores.
    fn partition(m: &Machine, key: impl Fn(&Pu) -> usize) -> BTreeSet<Vec<usize>> {
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for pu in &m.pus {
            groups.entry(key(pu)).or_default().push(pu.os_index);
        }
        groups.into_values().collect()
    }

    #[test]
    fn sysfs_agrees_with_hwloc() {
        let hw = read_hwloc().expect("hwloc loads here");
        let fs = read_sysfs().expect("sysfs is readable here");
        assert_eq!(hw.cpu_ids(), fs.cpu_ids());
        assert_eq!(partition(&hw, |p| p.core), partition(&fs, |p| p.core));
        assert_eq!(partition(&hw, |p| p.package), partition(&fs, |p| p.package));
        let nodes = |m: &Machine| m.pus.iter().map(|p| (p.os_index, p.numa_node)).collect::<Vec<_>>();
        assert_eq!(nodes(&hw), nodes(&fs));
    }
}
