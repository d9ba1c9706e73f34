//! Applying a placement to the calling shard thread: pin it to its PU and
//! point its memory allocations at its NUMA node.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;

use hwlocality::cpu::binding::CpuBindingFlags;
use hwlocality::cpu::cpuset::CpuSet;
use hwlocality::memory::binding::{MemoryBindingFlags, MemoryBindingPolicy};
use hwlocality::memory::nodeset::NodeSet;
use hwlocality::Topology;

use super::hwloc::shared_topology;
use super::plan::ShardPlacement;
use super::sysfs::MAX_CPUS;
use super::PlacementError;

/// Pins the calling thread to `p.cpu` and binds its memory to `p.numa_node`.
///
/// Must run on the shard thread itself: both bindings apply to the caller.
/// Failing to pin is an error, because a floating shard silently loses the
/// point of thread-per-core. Failing to bind memory is not (single-node
/// machines and some containers refuse it, and first-touch allocation is
/// usually local anyway), so it comes back as a warning for the caller to
/// log.
pub fn apply(p: &ShardPlacement) -> Result<Vec<String>, PlacementError> {
    let mut warnings = Vec::new();
    let pin_error = |reason: String| PlacementError::Pin { cpu: p.cpu, reason };
    if p.cpu >= MAX_CPUS {
        return Err(pin_error(format!("cpu numbers stop at {}", MAX_CPUS - 1)));
    }
    match shared_topology() {
        Ok(topology) => {
            if let Err(hwloc_err) = pin_hwloc(topology, p.cpu) {
                // hwloc refuses cpus missing from its (load-time) view; the
                // kernel has the final word, so ask it directly.
                pin_libc(p.cpu).map_err(|os_err| {
                    pin_error(format!("hwloc: {hwloc_err}; sched_setaffinity: {os_err}"))
                })?;
            }
            if let Err(why) = bind_memory(topology, p.numa_node) {
                warnings
                    .push(format!("shard {}: memory not bound to NUMA node {}: {why}", p.shard, p.numa_node));
            }
        }
        Err(hwloc_err) => {
            pin_libc(p.cpu).map_err(|os_err| pin_error(os_err.to_string()))?;
            warnings.push(format!(
                "shard {}: memory not bound to NUMA node {}: {hwloc_err}",
                p.shard, p.numa_node
            ));
        }
    }
    tracing::debug!(shard = p.shard, cpu = p.cpu, numa_node = p.numa_node, "shard thread placed");
    Ok(warnings)
}

fn pin_hwloc(topology: &Topology, cpu: usize) -> Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu);
    topology.bind_cpu(&set, CpuBindingFlags::THREAD).map_err(|e| e.to_string())
}

fn bind_memory(topology: &Topology, node: usize) -> Result<(), String> {
    if node >= MAX_CPUS {
        return Err(format!("node numbers stop at {}", MAX_CPUS - 1));
    }
    let mut set = NodeSet::new();
    set.set(node);
    // Without STRICT, Linux gets MPOL_PREFERRED(_MANY): allocations spill to
    // other nodes when this one is full instead of failing, which is the
    // right trade for a server that must not OOM on a busy node.
    topology
        .bind_memory(&set, MemoryBindingPolicy::Bind, MemoryBindingFlags::THREAD)
        .map_err(|e| e.to_string())
}

/// Pins the calling thread without hwloc.
///
/// The mask is sized from `cpu` rather than using `cpu_set_t`, which stops
/// at 1024 cpus; the kernel takes any length that is a multiple of a word.
fn pin_libc(cpu: usize) -> Result<(), io::Error> {
    let word_bits = libc::c_ulong::BITS as usize;
    let min_words = size_of::<libc::cpu_set_t>() / size_of::<libc::c_ulong>();
    let words = (cpu / word_bits + 1).max(min_words);
    let mut mask: Vec<libc::c_ulong> = vec![0; words];
    mask[cpu / word_bits] |= 1 << (cpu % word_bits);
    // SAFETY: `mask` is a live, initialised buffer of exactly `words * size_of::<c_ulong>()` bytes, the length we pass, and it is word-aligned like `cpu_set_t` (an array of `unsigned long`), whose bit layout (bit `i % word_bits` of word `i / word_bits`) we follow. The kernel only reads from it during the call, and pid 0 means the calling thread, so no other thread or memory is affected.
    let rc = unsafe {
        libc::sched_setaffinity(
            0,
            words * size_of::<libc::c_ulong>(),
            mask.as_ptr().cast::<libc::cpu_set_t>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::super::sysfs::thread_affinity;
    use super::*;
    use std::thread;

    fn placement(cpu: usize) -> ShardPlacement {
        ShardPlacement { shard: 0, cpu, core: 0, package: 0, numa_node: 0, smt_shared: false }
    }

    /// Runs `f` on a fresh thread so that pinning cannot leak into the test
    /// harness's threads.
    fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        match thread::spawn(f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    #[test]
    fn apply_pins_to_the_planned_cpu() {
        let plan =
            super::super::discover(&super::super::PlacementOptions::default()).expect("discover works here");
        // The last shard is the most interesting: not cpu 0 on multi-cpu hosts.
        let Some(&p) = plan.shards.last() else {
            panic!("plan has no shards");
        };
        let (result, after) = on_thread(move || (apply(&p), thread_affinity()));
        let warnings = result.expect("pinning to a planned cpu works");
        assert_eq!(after.expect("affinity readable"), vec![p.cpu]);
        for w in warnings {
            assert!(w.contains("NUMA node"), "{w}");
        }
    }

    #[test]
    fn libc_fallback_pins() {
        let before = thread_affinity().expect("affinity readable");
        let Some(&cpu) = before.first() else {
            panic!("no cpus");
        };
        let (result, after) = on_thread(move || (pin_libc(cpu), thread_affinity()));
        result.expect("sched_setaffinity works");
        assert_eq!(after.expect("affinity readable"), vec![cpu]);
        // The spawning thread is untouched.
        assert_eq!(thread_affinity().expect("affinity readable"), before);
    }

    #[test]
    fn bad_cpus_are_errors_not_panics() {
        for cpu in [MAX_CPUS - 1, MAX_CPUS, usize::MAX] {
            let (before, result, after) = on_thread(move || {
                let before = thread_affinity();
                (before, apply(&placement(cpu)), thread_affinity())
            });
            match result {
                Err(e @ PlacementError::Pin { .. }) => {
                    assert!(e.to_string().contains(&cpu.to_string()), "{e}");
                }
                other => panic!("cpu {cpu}: {other:?}"),
            }
            // A failed pin leaves the thread where it was.
            assert_eq!(before.ok(), after.ok());
        }
    }

    #[test]
    fn memory_binding_failure_is_a_warning() {
        let result = on_thread(|| {
            let cpu = thread_affinity().ok().and_then(|c| c.first().copied()).unwrap_or(0);
            let mut p = placement(cpu);
            p.numa_node = 4000;
            apply(&p)
        });
        let warnings = result.expect("pinning still succeeds");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("NUMA node 4000"), "{warnings:?}");
    }
}
