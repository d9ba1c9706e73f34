//! Pure planning: which PU each shard runs on. No I/O, so every rule can be
//! exercised on synthetic machines far larger than the build host.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use super::machine::{Machine, Pu, TopologySource};
use super::sysfs::format_cpu_list;
use super::PlacementError;

/// What the operator asked for (typically straight from the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementOptions {
    /// Number of shards; `None` means one per allowed PU.
    pub shards: Option<usize>,
    /// Exact cpus to use, shard `i` on `cpus[i]` (`--cpus`).
    pub cpus: Option<Vec<usize>>,
    /// Pin each shard thread to its PU (`--no-pin` turns this off).
    pub pin: bool,
    /// Interface whose NUMA node should host the first shards (`--nic`).
    pub nic: Option<String>,
}

impl Default for PlacementOptions {
    fn default() -> Self {
        Self { shards: None, cpus: None, pin: true, nic: None }
    }
}

/// The outcome of planning: one entry per shard, in shard order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Which reader described the machine.
    pub source: TopologySource,
    /// Whether shard threads should be pinned (call `apply` only if so).
    pub pinned: bool,
    /// Placement of shard `i` at index `i`.
    pub shards: Vec<ShardPlacement>,
    /// Things the operator should know, ready to print or log.
    pub warnings: Vec<String>,
}

/// Where one shard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardPlacement {
    /// Shard index.
    pub shard: usize,
    /// OS index of the PU.
    pub cpu: usize,
    /// Physical core (machine-wide id).
    pub core: usize,
    /// Package (socket).
    pub package: usize,
    /// NUMA node to bind the shard's memory to.
    pub numa_node: usize,
    /// Another shard shares this physical core (SMT sibling or, when
    /// oversubscribed, the very same PU), so it gets less than a full core.
    pub smt_shared: bool,
}

/// Plans one PU per shard on `machine`.
///
/// `nic_node` is the NUMA node of the NIC (if known): its PUs come first so
/// that packets are handled next to the device that DMAs them.
pub fn plan(
    machine: &Machine,
    opts: &PlacementOptions,
    nic_node: Option<usize>,
) -> Result<Plan, PlacementError> {
    if machine.pus.is_empty() {
        return Err(PlacementError::NoCpus { reader: machine.source });
    }
    if opts.shards == Some(0) {
        return Err(PlacementError::ZeroShards);
    }
    let mut warnings = Vec::new();
    let chosen = match &opts.cpus {
        Some(cpus) => explicit_pus(machine, cpus, opts.shards)?,
        None => automatic_pus(machine, opts, nic_node, &mut warnings)?,
    };
    if let Some(node) = nic_node {
        nic_warnings(machine, &chosen, node, &mut warnings);
    }
    Ok(Plan { source: machine.source, pinned: opts.pin, shards: placements(&chosen), warnings })
}

/// `--cpus`: the operator's order is kept, so shard `i` lands on `cpus[i]`.
fn explicit_pus(machine: &Machine, cpus: &[usize], shards: Option<usize>) -> Result<Vec<Pu>, PlacementError> {
    if cpus.is_empty() {
        return Err(PlacementError::EmptyCpuList);
    }
    if let Some(shards) = shards.filter(|&s| s != cpus.len()) {
        return Err(PlacementError::ShardsCpusMismatch { shards, cpus: cpus.len() });
    }
    let by_index: HashMap<usize, Pu> = machine.pus.iter().map(|pu| (pu.os_index, *pu)).collect();
    let mut seen = BTreeSet::new();
    let mut chosen = Vec::with_capacity(cpus.len());
    for &cpu in cpus {
        if !seen.insert(cpu) {
            return Err(PlacementError::DuplicateCpu { cpu });
        }
        let pu = by_index.get(&cpu).ok_or_else(|| PlacementError::UnknownCpu {
            cpu,
            available: format_cpu_list(&machine.cpu_ids()),
        })?;
        chosen.push(*pu);
    }
    Ok(chosen)
}

fn automatic_pus(
    machine: &Machine,
    opts: &PlacementOptions,
    nic_node: Option<usize>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Pu>, PlacementError> {
    let order = spread_order(machine, nic_node);
    let shards = opts.shards.unwrap_or(order.len());
    if shards > order.len() {
        if opts.pin {
            return Err(PlacementError::TooManyShards { shards, pus: order.len() });
        }
        warnings.push(format!(
            "{shards} shards on {} cpus: shards share cpus (oversubscribed, \
             fine for tests but expect poor latency)",
            order.len()
        ));
    }
    Ok(order.iter().cycle().take(shards).copied().collect())
}

/// Orders the PUs in which shards should take them.
///
/// Nodes are filled one at a time (the NIC's first, then ascending) so that
/// shards that talk to each other share memory and caches. Within a node,
/// the first PU of every core comes before any second PU, because SMT
/// siblings split one core's execution resources and a shard on its own core
/// is worth more than a sibling.
fn spread_order(machine: &Machine, nic_node: Option<usize>) -> Vec<Pu> {
    // node -> core -> PUs; BTreeMaps keep the result deterministic.
    let mut nodes: BTreeMap<usize, BTreeMap<usize, Vec<Pu>>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for pu in &machine.pus {
        if seen.insert(pu.os_index) {
            nodes.entry(pu.numa_node).or_default().entry(pu.core).or_default().push(*pu);
        }
    }
    let mut node_order: Vec<usize> = nodes.keys().copied().collect();
    if let Some(nic) = nic_node {
        // Stable sort: NIC node first, the rest keep ascending order.
        node_order.sort_by_key(|&n| n != nic);
    }
    let mut order = Vec::with_capacity(seen.len());
    for node in node_order {
        if let Some(cores) = nodes.get(&node) {
            spread_node(cores, &mut order);
        }
    }
    order
}

/// Appends one node's PUs: round `r` takes the `r`-th PU of every core.
fn spread_node(cores: &BTreeMap<usize, Vec<Pu>>, order: &mut Vec<Pu>) {
    let mut cores: Vec<Vec<Pu>> = cores.values().cloned().collect();
    for pus in &mut cores {
        pus.sort_by_key(|pu| pu.os_index);
    }
    // Package first so a node spanning sockets fills one socket at a time.
    cores.sort_by_key(|pus| pus.first().map(|pu| (pu.package, pu.os_index)));
    let rounds = cores.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..rounds {
        order.extend(cores.iter().filter_map(|pus| pus.get(round).copied()));
    }
}

fn nic_warnings(machine: &Machine, chosen: &[Pu], nic: usize, warnings: &mut Vec<String>) {
    let local_pus = machine.pus.iter().filter(|pu| pu.numa_node == nic).count();
    if local_pus == 0 {
        warnings.push(format!(
            "the NIC is on NUMA node {nic}, which has no cpus available to this \
             process: every shard is remote to the NIC (check taskset/cgroup cpuset)"
        ));
        return;
    }
    let remote = chosen.iter().filter(|pu| pu.numa_node != nic).count();
    if remote > 0 {
        warnings.push(format!(
            "{remote} of {} shards are not on the NIC's NUMA node {nic} ({local_pus} \
             cpus there): their traffic crosses the socket interconnect",
            chosen.len()
        ));
    }
}

fn placements(chosen: &[Pu]) -> Vec<ShardPlacement> {
    let mut per_core: HashMap<usize, usize> = HashMap::new();
    for pu in chosen {
        *per_core.entry(pu.core).or_default() += 1;
    }
    chosen
        .iter()
        .enumerate()
        .map(|(shard, pu)| ShardPlacement {
            shard,
            cpu: pu.os_index,
            core: pu.core,
            package: pu.package,
            numa_node: pu.numa_node,
            smt_shared: per_core.get(&pu.core).copied().unwrap_or(0) > 1,
        })
        .collect()
}

impl Plan {
    /// Human-readable note for one shard: who it shares hardware with.
    fn note(&self, me: &ShardPlacement) -> String {
        let others = |same: &dyn Fn(&ShardPlacement) -> bool| -> Vec<usize> {
            self.shards.iter().filter(|s| s.shard != me.shard && same(s)).map(|s| s.shard).collect()
        };
        let same_cpu = others(&|s| s.cpu == me.cpu);
        if !same_cpu.is_empty() {
            return format!("shares cpu with shard {}", short_list(&same_cpu));
        }
        let same_core = others(&|s| s.core == me.core);
        if !same_core.is_empty() {
            return format!("smt sibling of shard {}", short_list(&same_core));
        }
        String::new()
    }
}

/// Keeps notes one line long even when hundreds of unpinned shards share a
/// cpu.
fn short_list(shards: &[usize]) -> String {
    const SHOWN: usize = 3;
    let head: Vec<String> = shards.iter().take(SHOWN).map(usize::to_string).collect();
    let mut text = head.join(",");
    if shards.len() > SHOWN {
        text.push_str(&format!(" and {} more", shards.len() - SHOWN));
    }
    text
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.shards.len();
        let mut lines = vec![format!(
            "placement: {n} shard{}, {}, topology from {}",
            if n == 1 { "" } else { "s" },
            if self.pinned { "pinned" } else { "not pinned" },
            self.source
        )];
        let headers = ["shard", "cpu", "core", "package", "numa", "note"].map(String::from);
        let rows: Vec<[String; 6]> = self
            .shards
            .iter()
            .map(|s| {
                [
                    s.shard.to_string(),
                    s.cpu.to_string(),
                    s.core.to_string(),
                    s.package.to_string(),
                    s.numa_node.to_string(),
                    self.note(s),
                ]
            })
            .collect();
        let mut widths = headers.clone().map(|h| h.len());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        lines.push(table_row(&headers, &widths, false));
        lines.extend(rows.iter().map(|row| table_row(row, &widths, true)));
        lines.extend(self.warnings.iter().map(|w| format!("warning: {w}")));
        f.write_str(&lines.join("\n"))
    }
}

/// Numbers are right-aligned under their headings; the note column is last
/// and left-aligned, and trailing blanks are trimmed.
fn table_row(cells: &[String], widths: &[usize], numeric: bool) -> String {
    let last = cells.len().saturating_sub(1);
    let cells: Vec<String> = cells
        .iter()
        .zip(widths)
        .enumerate()
        .map(
            |(i, (cell, &w))| {
                if numeric && i < last {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            },
        )
        .collect();
    cells.join("  ").trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Synthetic machine, numbered like Linux on x86: all first threads of
    /// every core come first (cpu = core), then all second threads (cpu =
    /// core + cores), and so on. Nodes and packages split cores evenly.
    fn synthetic(packages: usize, nodes_per_package: usize, cores_per_node: usize, smt: usize) -> Machine {
        let cores = packages * nodes_per_package * cores_per_node;
        let mut pus = Vec::new();
        for thread in 0..smt {
            for core in 0..cores {
                let node = core / cores_per_node;
                pus.push(Pu {
                    os_index: thread * cores + core,
                    core,
                    package: node / nodes_per_package,
                    numa_node: node,
                });
            }
        }
        pus.sort_by_key(|pu| pu.os_index);
        Machine { pus, source: TopologySource::Hwloc }
    }

    /// 2 sockets x 2 NUMA nodes x 4 cores x SMT2 = 32 PUs; core c has PUs
    /// c and c + 16; node n holds cores 4n..4n+3.
    fn big() -> Machine {
        synthetic(2, 2, 4, 2)
    }

    fn opts(shards: Option<usize>) -> PlacementOptions {
        PlacementOptions { shards, ..PlacementOptions::default() }
    }

    fn cpus(plan: &Plan) -> Vec<usize> {
        plan.shards.iter().map(|s| s.cpu).collect()
    }

    #[test]
    fn defaults() {
        let o = PlacementOptions::default();
        assert_eq!((o.shards, o.cpus.as_ref(), o.pin, o.nic.as_ref()), (None, None, true, None));
    }

    #[test]
    fn spreads_over_cores_before_siblings_and_fills_node_first() {
        let m = big();
        let p = plan(&m, &opts(Some(6)), None).expect("valid plan");
        // Node 0: four cores (cpus 0-3), then their siblings (16, 17).
        assert_eq!(cpus(&p), vec![0, 1, 2, 3, 16, 17]);
        assert!(p.shards.iter().all(|s| s.numa_node == 0 && s.package == 0));
        let shared: Vec<bool> = p.shards.iter().map(|s| s.smt_shared).collect();
        assert_eq!(shared, vec![true, true, false, false, true, true]);
        assert!(p.warnings.is_empty());
        assert!(p.pinned);

        let p = plan(&m, &opts(Some(10)), None).expect("valid plan");
        assert_eq!(cpus(&p), vec![0, 1, 2, 3, 16, 17, 18, 19, 4, 5]);
        assert_eq!(p.shards[8].numa_node, 1);
        assert_eq!(p.shards[8].package, 0);
    }

    #[test]
    fn default_uses_every_pu_once() {
        let m = big();
        let p = plan(&m, &PlacementOptions::default(), None).expect("valid plan");
        assert_eq!(p.shards.len(), 32);
        let want: Vec<usize> =
            [0..4, 16..20, 4..8, 20..24, 8..12, 24..28, 12..16, 28..32].into_iter().flatten().collect();
        assert_eq!(cpus(&p), want);
        assert!(p.shards.iter().all(|s| s.smt_shared));
        assert!(p.shards.iter().enumerate().all(|(i, s)| s.shard == i));
    }

    #[test]
    fn nic_node_goes_first() {
        let m = big();
        let p = plan(&m, &opts(Some(4)), Some(2)).expect("valid plan");
        assert_eq!(cpus(&p), vec![8, 9, 10, 11]);
        assert!(p.shards.iter().all(|s| s.numa_node == 2 && s.package == 1));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);

        // Spill over: NIC node 3 first, then 0, 1, 2 ascending.
        let p = plan(&m, &opts(Some(12)), Some(3)).expect("valid plan");
        assert_eq!(&cpus(&p)[..10], &[12, 13, 14, 15, 28, 29, 30, 31, 0, 1]);
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("4 of 12 shards"), "{:?}", p.warnings);
    }

    #[test]
    fn nic_node_without_cpus_warns() {
        let p = plan(&big(), &opts(Some(2)), Some(7)).expect("valid plan");
        assert_eq!(cpus(&p), vec![0, 1]);
        assert!(p.warnings[0].contains("node 7"), "{:?}", p.warnings);
    }

    #[test]
    fn explicit_cpus() {
        let m = big();
        let mut o = PlacementOptions { cpus: Some(vec![17, 1, 30]), ..PlacementOptions::default() };
        let p = plan(&m, &o, None).expect("valid plan");
        assert_eq!(cpus(&p), vec![17, 1, 30]);
        let shared: Vec<bool> = p.shards.iter().map(|s| s.smt_shared).collect();
        assert_eq!(shared, vec![true, true, false]);
        assert_eq!((p.shards[2].numa_node, p.shards[2].package), (3, 1));

        o.shards = Some(3);
        assert!(plan(&m, &o, None).is_ok());
        o.shards = Some(2);
        assert_eq!(plan(&m, &o, None), Err(PlacementError::ShardsCpusMismatch { shards: 2, cpus: 3 }));
        o.shards = None;

        o.cpus = Some(vec![1, 32]);
        match plan(&m, &o, None) {
            Err(e @ PlacementError::UnknownCpu { cpu: 32, .. }) => {
                assert!(e.to_string().contains("0-31"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        o.cpus = Some(vec![1, 2, 1]);
        assert_eq!(plan(&m, &o, None), Err(PlacementError::DuplicateCpu { cpu: 1 }));
        o.cpus = Some(vec![]);
        assert_eq!(plan(&m, &o, None), Err(PlacementError::EmptyCpuList));
    }

    #[test]
    fn oversubscription() {
        let m = synthetic(1, 1, 2, 1);
        let mut o = opts(Some(4));
        match plan(&m, &o, None) {
            Err(e @ PlacementError::TooManyShards { shards: 4, pus: 2 }) => {
                let msg = e.to_string();
                assert!(msg.contains("--no-pin") && msg.contains('2'), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        o.pin = false;
        let p = plan(&m, &o, None).expect("unpinned oversubscription is allowed");
        assert_eq!(cpus(&p), vec![0, 1, 0, 1]);
        assert!(!p.pinned);
        assert!(p.shards.iter().all(|s| s.smt_shared));
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("4 shards on 2 cpus"));
    }

    #[test]
    fn zero_shards_and_empty_machine() {
        assert_eq!(plan(&big(), &opts(Some(0)), None), Err(PlacementError::ZeroShards));
        let mut o = opts(Some(0));
        o.pin = false;
        assert_eq!(plan(&big(), &o, None), Err(PlacementError::ZeroShards));
        let empty = Machine { pus: vec![], source: TopologySource::Sysfs };
        assert!(matches!(
            plan(&empty, &PlacementOptions::default(), None),
            Err(PlacementError::NoCpus { .. })
        ));
    }

    #[test]
    fn display_table() {
        let m = synthetic(1, 1, 2, 2);
        let mut o = opts(Some(3));
        o.pin = true;
        let text = plan(&m, &o, None).expect("valid plan").to_string();
        let want = "\
placement: 3 shards, pinned, topology from hwloc
shard  cpu  core  package  numa  note
    0    0     0        0     0  smt sibling of shard 2
    1    1     1        0     0
    2    2     0        0     0  smt sibling of shard 0";
        assert_eq!(text, want);

        let m = synthetic(1, 1, 1, 1);
        let mut o = opts(Some(2));
        o.pin = false;
        let text = plan(&m, &o, None).expect("valid plan").to_string();
        assert!(text.starts_with("placement: 2 shards, not pinned, topology from hwloc\n"));
        assert!(text.contains("shares cpu with shard 1"), "{text}");
        assert!(text.contains("\nwarning: 2 shards on 1 cpus"), "{text}");

        let mut o = opts(Some(9));
        o.pin = false;
        let text = plan(&m, &o, None).expect("valid plan").to_string();
        assert!(text.contains("shares cpu with shard 1,2,3 and 5 more\n"), "{text}");
    }

    /// Arbitrary machine: per node a list of cores with 1-4 PUs each, and
    /// scrambled (but unique) os indices, as firmware numbering varies.
    fn arb_machine() -> impl Strategy<Value = Machine> {
        let nodes = proptest::collection::vec(proptest::collection::vec(1usize..=4, 1..6), 1..5);
        (nodes, any::<u64>()).prop_map(|(nodes, seed)| {
            let mut pus = Vec::new();
            let mut core = 0;
            for (node, cores) in nodes.iter().enumerate() {
                for &threads in cores {
                    for _ in 0..threads {
                        pus.push(Pu { os_index: 0, core, package: node / 2, numa_node: node * 3 % 7 });
                    }
                    core += 1;
                }
            }
            // Deterministic shuffle of os indices from the seed.
            let n = pus.len();
            let mut ids: Vec<usize> = (0..n).collect();
            let mut x = seed | 1;
            for i in (1..n).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ids.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for (pu, id) in pus.iter_mut().zip(ids) {
                pu.os_index = id;
            }
            Machine { pus, source: TopologySource::Hwloc }
        })
    }

    proptest! {
        #[test]
        fn plan_invariants(
            m in arb_machine(),
            frac in 0.0f64..=1.0,
            nic in proptest::option::of(0usize..8),
        ) {
            let shards = ((m.pus.len() as f64 * frac).ceil() as usize).max(1);
            let p = plan(&m, &opts(Some(shards)), nic).expect("shards <= pus plans");
            prop_assert_eq!(p.shards.len(), shards);
            let used: BTreeSet<usize> = p.shards.iter().map(|s| s.cpu).collect();
            prop_assert_eq!(used.len(), shards, "PUs must be distinct");
            for s in &p.shards {
                let pu = m.pu(s.cpu).expect("planned cpu exists");
                prop_assert_eq!((pu.core, pu.numa_node), (s.core, s.numa_node));
            }
            // Never a second PU of a core while a core on that node is idle.
            let mut per_core: HashMap<usize, usize> = HashMap::new();
            for s in &p.shards {
                *per_core.entry(s.core).or_default() += 1;
            }
            for s in p.shards.iter().filter(|s| per_core[&s.core] > 1) {
                let idle = m.pus.iter().any(|pu| {
                    pu.numa_node == s.numa_node && !per_core.contains_key(&pu.core)
                });
                prop_assert!(!idle, "core {} doubled up while node {} has an idle core", s.core, s.numa_node);
            }
            // Nodes are filled one after another: each node forms one run of
            // shards, and every run but the last uses all of its node's PUs.
            let mut runs: Vec<(usize, usize)> = Vec::new();
            for s in &p.shards {
                match runs.last_mut() {
                    Some((node, len)) if *node == s.numa_node => *len += 1,
                    _ => runs.push((s.numa_node, 1)),
                }
            }
            let nodes: BTreeSet<usize> = runs.iter().map(|r| r.0).collect();
            prop_assert_eq!(nodes.len(), runs.len(), "node visited twice");
            for &(node, len) in &runs[..runs.len() - 1] {
                prop_assert_eq!(len, m.pus.iter().filter(|pu| pu.numa_node == node).count());
            }
            if let Some(nic) = nic.filter(|n| m.numa_nodes().contains(n)) {
                prop_assert_eq!(runs[0].0, nic, "NIC node first");
            }
        }
    }
}
