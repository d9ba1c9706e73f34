//! Topology straight from Linux sysfs, the fallback when hwloc fails, plus
//! the cpulist parser shared with the `--cpus` flag and the NIC locality
//! lookup.
//!
//! Every reader takes a root directory internally so that tests can run it
//! against a synthetic sysfs tree shaped like a large multi-socket machine.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::machine::{Machine, Pu, TopologySource};
use super::PlacementError;

/// Upper bound on cpu numbers (and on the length of a parsed list). Linux
/// caps `NR_CPUS` at 8192 today; the bound only exists so that hostile input
/// like `0-99999999999` cannot make us allocate gigabytes.
pub(crate) const MAX_CPUS: usize = 1 << 16;

/// Parses Linux cpulist syntax such as `0-3,8,10-11`, as found in sysfs and
/// accepted by `taskset -c`.
///
/// Also accepts the kernel's group form `first-last:used/group` (e.g.
/// `0-15:2/8` = 0,1,8,9). Order and duplicates are preserved so that callers
/// can honour the user's order and report repeated cpus. Blank input is the
/// empty set, which is how sysfs spells it (e.g. memory-only NUMA nodes).
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, PlacementError> {
    parse_list(s).map_err(|issue| PlacementError::BadCpuList {
        list: s.to_string(),
        token: issue.token,
        problem: issue.problem,
    })
}

/// Formats cpu numbers in compact cpulist syntax (sorted, deduplicated),
/// the inverse of [`parse_cpu_list`]; handy for messages.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let set: BTreeSet<usize> = cpus.iter().copied().collect();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for cpu in set {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == cpu => *end = cpu,
            _ => runs.push((cpu, cpu)),
        }
    }
    let parts: Vec<String> =
        runs.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    parts.join(",")
}

/// Why a cpulist did not parse; turned into a [`PlacementError`] whose
/// wording depends on where the list came from (flag or sysfs file).
#[derive(Debug)]
struct ListIssue {
    token: String,
    problem: String,
}

fn issue(token: &str, problem: String) -> ListIssue {
    ListIssue { token: token.to_string(), problem }
}

fn parse_list(s: &str) -> Result<Vec<usize>, ListIssue> {
    let s = s.trim();
    let mut out = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    for token in s.split(',') {
        let token = token.trim();
        if token.is_empty() {
            return Err(issue(token, "empty entry between commas".to_string()));
        }
        parse_token(token, &mut out)?;
        if out.len() > MAX_CPUS {
            return Err(issue(token, format!("list names more than {MAX_CPUS} cpus at \"{token}\"")));
        }
    }
    Ok(out)
}

/// One comma-separated entry: `N`, `A-B` or `A-B:used/group`.
fn parse_token(token: &str, out: &mut Vec<usize>) -> Result<(), ListIssue> {
    let (range, group) = match token.split_once(':') {
        Some((range, group)) => (range, Some(group)),
        None => (token, None),
    };
    let (first, last) = match range.split_once('-') {
        Some((a, b)) => (parse_cpu(a)?, parse_cpu(b)?),
        None => {
            let n = parse_cpu(range)?;
            (n, n)
        }
    };
    if last < first {
        return Err(issue(token, format!("range \"{token}\" runs backwards (write {last}-{first})")));
    }
    let (used, size) = match group {
        None => (1, 1),
        Some(group) => parse_group(token, group)?,
    };
    let mut base = first;
    while base <= last {
        out.extend(base..=(base + used - 1).min(last));
        base += size;
    }
    Ok(())
}

/// The `used/group` suffix: take the first `used` cpus of every `group`.
fn parse_group(token: &str, group: &str) -> Result<(usize, usize), ListIssue> {
    let bad = || issue(group, format!("bad group \"{group}\" in \"{token}\" (expected used/size like 2/8)"));
    let (used, size) = group.split_once('/').ok_or_else(bad)?;
    let used = parse_cpu(used).map_err(|_| bad())?;
    let size = parse_cpu(size).map_err(|_| bad())?;
    if used == 0 || size == 0 || used > size {
        return Err(bad());
    }
    Ok((used, size))
}

fn parse_cpu(text: &str) -> Result<usize, ListIssue> {
    // `str::parse` would also take "+3"; cpulists are plain digits only.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(issue(text, format!("bad cpu number \"{text}\"")));
    }
    match text.parse::<usize>() {
        Ok(n) if n < MAX_CPUS => Ok(n),
        _ => Err(issue(text, format!("cpu number \"{text}\" is above the limit {}", MAX_CPUS - 1))),
    }
}

/// Reads the topology of the cpus this thread may run on from `/sys`.
pub fn read_sysfs() -> Result<Machine, PlacementError> {
    read_sysfs_at(Path::new("/sys"), &thread_affinity()?)
}

/// cpus in the calling thread's affinity mask, read from `/proc` so that no
/// fixed-size `cpu_set_t` limits us on machines with more than 1024 cpus.
pub(crate) fn thread_affinity() -> Result<Vec<usize>, PlacementError> {
    // thread-self needs Linux 3.17; /proc/self reports the main thread,
    // which is still right for the usual call from main before spawning.
    let thread = Path::new("/proc/thread-self/status");
    let process = Path::new("/proc/self/status");
    match fs::read_to_string(thread) {
        Ok(text) => affinity_from_status(thread, &text),
        Err(_) => match fs::read_to_string(process) {
            Ok(text) => affinity_from_status(process, &text),
            Err(e) => Err(sysfs_error(process, &e)),
        },
    }
}

fn affinity_from_status(path: &Path, status: &str) -> Result<Vec<usize>, PlacementError> {
    let line = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).ok_or_else(|| {
        PlacementError::Sysfs { path: path.to_path_buf(), reason: "no Cpus_allowed_list line".to_string() }
    })?;
    parse_file_list(path, line)
}

/// Parses a cpulist that came from a file; errors name the file rather than
/// the `--cpus` flag.
fn parse_file_list(path: &Path, text: &str) -> Result<Vec<usize>, PlacementError> {
    parse_list(text).map_err(|issue| PlacementError::Sysfs {
        path: path.to_path_buf(),
        reason: format!("bad cpu list \"{}\": {}", text.trim(), issue.problem),
    })
}

fn sysfs_error(path: &Path, err: &io::Error) -> PlacementError {
    PlacementError::Sysfs { path: path.to_path_buf(), reason: err.to_string() }
}

/// Reads a whole file, mapping "does not exist" to `None` because sysfs
/// omits attributes the platform does not know.
fn read_optional(path: &Path) -> Result<Option<String>, PlacementError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(sysfs_error(path, &e)),
    }
}

fn read_optional_int(path: &Path) -> Result<Option<i64>, PlacementError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    text.trim().parse::<i64>().map(Some).map_err(|_| PlacementError::Sysfs {
        path: path.to_path_buf(),
        reason: format!("expected an integer, found \"{}\"", text.trim()),
    })
}

/// Identifies a physical core before ids are made dense and machine-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CoreKey {
    /// Lowest cpu among the SMT siblings (most reliable: no id ambiguity).
    Siblings(usize),
    /// `(physical_package_id, core_id)`, as core ids repeat across packages.
    Ids(i64, i64),
    /// Nothing known: the cpu is its own core.
    Alone(usize),
}

/// What sysfs says about one cpu, before renumbering.
#[derive(Debug)]
struct RawPu {
    os_index: usize,
    package: i64,
    core: CoreKey,
    numa_node: usize,
}

/// [`read_sysfs`] against any sysfs-shaped tree and affinity list.
pub(crate) fn read_sysfs_at(root: &Path, affinity: &[usize]) -> Result<Machine, PlacementError> {
    let cpu_dir = root.join("devices/system/cpu");
    let online_path = cpu_dir.join("online");
    // Ids are assigned over every online cpu, not just the allowed ones, so
    // that core and package numbers do not shift with `taskset`.
    let online: BTreeSet<usize> = match read_optional(&online_path)? {
        Some(text) => parse_file_list(&online_path, &text)?.into_iter().collect(),
        None => affinity.iter().copied().collect(),
    };
    let nodes = read_node_map(&root.join("devices/system/node"))?;
    let mut raw = Vec::with_capacity(online.len());
    for &cpu in &online {
        let topo = cpu_dir.join(format!("cpu{cpu}/topology"));
        raw.push(read_raw_pu(&topo, cpu, nodes.get(&cpu).copied().unwrap_or(0))?);
    }
    // The affinity mask may still name cpus that went offline; the
    // intersection drops them.
    let allowed: BTreeSet<usize> = affinity.iter().copied().collect();
    let pus: Vec<Pu> = renumber(raw).into_iter().filter(|pu| allowed.contains(&pu.os_index)).collect();
    if pus.is_empty() {
        return Err(PlacementError::NoCpus { reader: TopologySource::Sysfs });
    }
    Ok(Machine { pus, source: TopologySource::Sysfs })
}

fn read_raw_pu(topo: &Path, cpu: usize, numa_node: usize) -> Result<RawPu, PlacementError> {
    // Some arm64 firmware reports -1 for the package; treat as one package.
    let package = read_optional_int(&topo.join("physical_package_id"))?.filter(|&p| p >= 0).unwrap_or(0);
    let mut core = None;
    for name in ["core_cpus_list", "thread_siblings_list"] {
        let path = topo.join(name);
        if let Some(text) = read_optional(&path)? {
            let siblings = parse_file_list(&path, &text)?;
            core = siblings.iter().min().map(|&m| CoreKey::Siblings(m.min(cpu)));
            break;
        }
    }
    let core = match core {
        Some(key) => key,
        None => match read_optional_int(&topo.join("core_id"))? {
            Some(id) => CoreKey::Ids(package, id),
            None => CoreKey::Alone(cpu),
        },
    };
    Ok(RawPu { os_index: cpu, package, core, numa_node })
}

/// Maps cpu -> NUMA node from `nodeN/cpulist`. No node directory at all
/// (kernel built without NUMA) means everything is node 0.
fn read_node_map(node_dir: &Path) -> Result<BTreeMap<usize, usize>, PlacementError> {
    let entries = match fs::read_dir(node_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(sysfs_error(node_dir, &e)),
    };
    let mut map = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| sysfs_error(node_dir, &e))?;
        let name = entry.file_name();
        let Some(node) =
            name.to_str().and_then(|n| n.strip_prefix("node")).and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let path = entry.path().join("cpulist");
        if let Some(text) = read_optional(&path)? {
            for cpu in parse_file_list(&path, &text)? {
                map.insert(cpu, node);
            }
        }
    }
    Ok(map)
}

/// Makes package and core ids dense and machine-wide, numbering cores in
/// package order and then by their lowest cpu, which matches hwloc's logical
/// numbering on ordinary machines.
fn renumber(raw: Vec<RawPu>) -> Vec<Pu> {
    let packages: BTreeSet<i64> = raw.iter().map(|p| p.package).collect();
    let package_id = |raw_id: i64| packages.iter().position(|&p| p == raw_id).unwrap_or(0);
    let mut first_cpu: BTreeMap<CoreKey, (usize, usize)> = BTreeMap::new();
    for pu in &raw {
        let entry = first_cpu.entry(pu.core).or_insert((package_id(pu.package), pu.os_index));
        entry.1 = entry.1.min(pu.os_index);
    }
    let mut order: Vec<(usize, usize, CoreKey)> =
        first_cpu.iter().map(|(k, &(pkg, cpu))| (pkg, cpu, *k)).collect();
    order.sort();
    let core_id: BTreeMap<CoreKey, usize> =
        order.iter().enumerate().map(|(id, &(_, _, key))| (key, id)).collect();
    let mut pus: Vec<Pu> = raw
        .iter()
        .map(|pu| Pu {
            os_index: pu.os_index,
            core: core_id.get(&pu.core).copied().unwrap_or(0),
            package: package_id(pu.package),
            numa_node: pu.numa_node,
        })
        .collect();
    pus.sort_by_key(|pu| pu.os_index);
    pus
}

/// NUMA node of the PCI device behind a network interface.
///
/// `Ok(None)` when the kernel does not know (virtual interfaces such as
/// loopback have no `device`, and single-node machines report -1).
pub fn nic_numa_node(ifname: &str) -> Result<Option<usize>, PlacementError> {
    nic_numa_node_at(Path::new("/sys"), ifname)
}

pub(crate) fn nic_numa_node_at(root: &Path, ifname: &str) -> Result<Option<usize>, PlacementError> {
    let not_found = || PlacementError::NicNotFound { ifname: ifname.to_string() };
    // Keep the name from walking out of /sys/class/net.
    if ifname.is_empty() || ifname.contains('/') || ifname == "." || ifname == ".." {
        return Err(not_found());
    }
    let dev: PathBuf = root.join("class/net").join(ifname);
    match fs::metadata(&dev) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(sysfs_error(&dev, &e)),
    }
    let node = read_optional_int(&dev.join("device/numa_node"))?;
    Ok(node.and_then(|n| usize::try_from(n).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn cpu_list_good() {
        let cases: &[(&str, &[usize])] = &[
            ("0", &[0]),
            ("0-3,8,10-11", &[0, 1, 2, 3, 8, 10, 11]),
            (" 2 , 0-1\n", &[2, 0, 1]),
            ("", &[]),
            ("\n", &[]),
            ("5-5", &[5]),
            ("1,1", &[1, 1]),
            ("0-15:2/8", &[0, 1, 8, 9]),
            ("0-9:2/4", &[0, 1, 4, 5, 8, 9]),
            ("65535", &[65535]),
        ];
        for (input, want) in cases {
            assert_eq!(parse_cpu_list(input).ok().as_deref(), Some(*want), "{input:?}");
        }
    }

    #[test]
    fn cpu_list_bad() {
        let cases: &[(&str, &str)] = &[
            ("0-x", "x"),
            ("x", "x"),
            ("1,,2", ""),
            ("1,", ""),
            ("-3", ""),
            ("3-", ""),
            ("3-1", "3-1"),
            ("+3", "+3"),
            ("0 - 3", "0 "),
            ("65536", "65536"),
            ("0-99999999999999999999999", "99999999999999999999999"),
            ("0-7:0/4", "0/4"),
            ("0-7:5/4", "5/4"),
            ("0-7:2", "2"),
            ("0x10", "0x10"),
        ];
        for (input, token) in cases {
            match parse_cpu_list(input) {
                Err(PlacementError::BadCpuList { list, token: t, .. }) => {
                    assert_eq!(list, *input);
                    assert_eq!(t, *token, "{input:?}");
                }
                other => panic!("{input:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn cpu_list_error_message_names_flag_token_and_fix() {
        let err = parse_cpu_list("0-x").err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("\"0-x\": bad cpu number \"x\" (expected a list like 0-3,8)"));
    }

    #[test]
    fn cpu_list_length_is_bounded() {
        let huge = ["0-65535"; 3].join(",");
        assert!(parse_cpu_list(&huge).is_err());
    }

    #[test]
    fn format_round_trips() {
        assert_eq!(format_cpu_list(&[11, 0, 1, 2, 3, 8, 10, 3]), "0-3,8,10-11");
        assert_eq!(format_cpu_list(&[]), "");
        let cpus = [0, 2, 4, 5, 6, 100];
        assert_eq!(parse_cpu_list(&format_cpu_list(&cpus)).ok(), Some(cpus.to_vec()));
    }

    proptest! {
        #[test]
        fn cpu_list_never_panics(s in ".{0,40}") {
            let _ = parse_cpu_list(&s);
        }

        #[test]
        fn cpu_list_never_panics_on_listish(s in "[0-9,:/ -]{0,24}") {
            if let Ok(cpus) = parse_cpu_list(&s) {
                prop_assert!(cpus.iter().all(|&c| c < MAX_CPUS));
            }
        }

        #[test]
        fn cpu_list_round_trip(set in proptest::collection::btree_set(0usize..300, 0..40)) {
            let cpus: Vec<usize> = set.into_iter().collect();
            prop_assert_eq!(parse_cpu_list(&format_cpu_list(&cpus)).ok(), Some(cpus));
        }
    }

    /// A throwaway directory tree standing in for `/sys`.
    struct FakeSys(PathBuf);

    impl FakeSys {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "placement-sysfs-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            Self(dir)
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("create fake sysfs dir");
            }
            fs::write(&path, text).expect("write fake sysfs file");
        }
    }

    impl Drop for FakeSys {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// 2 packages x 8 cores x SMT2 with Linux numbering: cpu c and c+16 are
    /// siblings, package 0 holds cores 0-7, and core ids restart per package.
    fn two_socket_smt() -> FakeSys {
        let sys = FakeSys::new();
        for cpu in 0..32 {
            let core = cpu % 16;
            let pkg = core / 8;
            let t = format!("devices/system/cpu/cpu{cpu}/topology");
            sys.write(&format!("{t}/physical_package_id"), &format!("{pkg}\n"));
            sys.write(&format!("{t}/core_id"), &format!("{}\n", core % 8));
            sys.write(&format!("{t}/core_cpus_list"), &format!("{core},{}\n", core + 16));
        }
        sys.write("devices/system/cpu/online", "0-31\n");
        sys.write("devices/system/node/node0/cpulist", "0-7,16-23\n");
        sys.write("devices/system/node/node1/cpulist", "8-15,24-31\n");
        sys.write("devices/system/node/node2/cpulist", "\n");
        sys
    }

    #[test]
    fn sysfs_two_socket_smt() {
        let sys = two_socket_smt();
        let all: Vec<usize> = (0..32).collect();
        let m = read_sysfs_at(&sys.0, &all).expect("fake sysfs parses");
        assert_eq!(m.source, TopologySource::Sysfs);
        assert_eq!(m.cpu_ids(), all);
        for pu in &m.pus {
            let core = pu.os_index % 16;
            assert_eq!(pu.core, core, "cpu {}", pu.os_index);
            assert_eq!(pu.package, core / 8);
            assert_eq!(pu.numa_node, core / 8);
        }
    }

    #[test]
    fn sysfs_respects_affinity_and_online() {
        let sys = two_socket_smt();
        sys.write("devices/system/cpu/online", "0-30\n");
        let m = read_sysfs_at(&sys.0, &[1, 9, 30, 31]).expect("fake sysfs parses");
        assert_eq!(m.cpu_ids(), vec![1, 9, 30]);
        // Ids do not depend on which cpus are allowed.
        let ids: Vec<(usize, usize)> = m.pus.iter().map(|p| (p.core, p.package)).collect();
        assert_eq!(ids, vec![(1, 0), (9, 1), (14, 1)]);
        assert!(matches!(read_sysfs_at(&sys.0, &[31]), Err(PlacementError::NoCpus { .. })));
    }

    #[test]
    fn sysfs_core_id_fallback_and_no_numa() {
        let sys = FakeSys::new();
        // Older kernels: no sibling lists; core ids repeat across packages.
        for (cpu, pkg, core) in [(0, 0, 0), (1, 0, 0), (2, 1, 0), (3, -1, 5)] {
            let t = format!("devices/system/cpu/cpu{cpu}/topology");
            sys.write(&format!("{t}/physical_package_id"), &format!("{pkg}\n"));
            sys.write(&format!("{t}/core_id"), &format!("{core}\n"));
        }
        sys.write("devices/system/cpu/cpu4/topology/.keep", "");
        let m = read_sysfs_at(&sys.0, &[0, 1, 2, 3, 4]).expect("fake sysfs parses");
        let cores: Vec<usize> = m.pus.iter().map(|p| p.core).collect();
        assert_eq!(cores, vec![0, 0, 3, 1, 2]);
        assert!(m.pus.iter().all(|p| p.numa_node == 0));
        let packages: Vec<usize> = m.pus.iter().map(|p| p.package).collect();
        assert_eq!(packages, vec![0, 0, 1, 0, 0]);
    }

    #[test]
    fn sysfs_bad_file_names_path() {
        let sys = two_socket_smt();
        sys.write("devices/system/cpu/cpu3/topology/physical_package_id", "zero\n");
        let err = read_sysfs_at(&sys.0, &[3]).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("cpu3/topology/physical_package_id"), "{err}");
        assert!(err.contains("\"zero\""), "{err}");
    }

    #[test]
    fn nic_lookup() {
        let sys = FakeSys::new();
        sys.write("class/net/eth0/device/numa_node", "1\n");
        sys.write("class/net/eth1/device/numa_node", "-1\n");
        sys.write("class/net/lo/address", "00:00:00:00:00:00\n");
        assert_eq!(nic_numa_node_at(&sys.0, "eth0").ok(), Some(Some(1)));
        assert_eq!(nic_numa_node_at(&sys.0, "eth1").ok(), Some(None));
        assert_eq!(nic_numa_node_at(&sys.0, "lo").ok(), Some(None));
        for bad in ["eth9", "", "..", "../../etc"] {
            match nic_numa_node_at(&sys.0, bad) {
                Err(e @ PlacementError::NicNotFound { .. }) => {
                    assert!(e.to_string().contains(&format!("\"{bad}\"")));
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn real_loopback_has_no_node() {
        if Path::new("/sys/class/net/lo").exists() {
            assert_eq!(nic_numa_node("lo").ok(), Some(None));
        }
        assert!(matches!(nic_numa_node("no-such-nic0"), Err(PlacementError::NicNotFound { .. })));
    }

    #[test]
    fn real_affinity_is_nonempty() {
        let cpus = thread_affinity().expect("/proc is readable");
        assert!(!cpus.is_empty());
    }
}
