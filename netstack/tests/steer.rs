//! Steering and draining of `SO_REUSEPORT` groups, on loopback with plain
//! threads. Every wait has a deadline; every thread is joined.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use netstack::steer::{
    attach_client_steering, attach_cpu_steering, attach_program, bind_group, detach_steering, local_addr,
    migrate_req_enabled, set_migrate_req, ClientProgram, CpuProgram, ListenOptions, ReuseportGroup, Steering,
    Unmapped, MIGRATE_REQ_SYSCTL,
};
use socket2::Socket;

const LOOPBACK: &str = "127.0.0.1:0";

/// One connection as a listener saw it.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    id: u64,
    /// `SO_INCOMING_CPU`: where the kernel last processed its packets.
    incoming_cpu: Option<usize>,
}

/// Accepts on `fd` until `stop` is set and nothing is pending, reading the
/// 8-byte id each client sends first. `total` counts connections across
/// all acceptors so the test knows when everything arrived.
fn spawn_acceptor(fd: OwnedFd, stop: Arc<AtomicBool>, total: Arc<AtomicUsize>) -> JoinHandle<Vec<Accepted>> {
    thread::spawn(move || {
        let listener = Socket::from(fd);
        // Blocking accept with a timeout: the thread sleeps in the kernel
        // and still notices `stop` every 50 ms.
        listener.set_nonblocking(false).unwrap();
        listener.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut seen = Vec::new();
        loop {
            match listener.accept() {
                Ok((conn, _)) => {
                    seen.push(read_id(conn));
                    total.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if is_timeout(&e) => {
                    if stop.load(Ordering::Relaxed) {
                        return seen;
                    }
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    })
}

fn read_id(conn: Socket) -> Accepted {
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let incoming_cpu = conn.cpu_affinity().ok();
    let mut stream = TcpStream::from(conn);
    let mut id = [0u8; 8];
    stream.read_exact(&mut id).expect("client id");
    Accepted { id: u64::from_le_bytes(id), incoming_cpu }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Connects once per id (each from a fresh ephemeral port) and sends the id.
fn connect_all(addr: SocketAddr, ids: impl Iterator<Item = u64>) -> HashSet<u16> {
    let mut ports = HashSet::new();
    for id in ids {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        ports.insert(stream.local_addr().unwrap().port());
        stream.write_all(&id.to_le_bytes()).unwrap();
    }
    ports
}

/// Waits until `total` reaches `want` or `limit` passes.
fn wait_for(total: &AtomicUsize, want: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    while total.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    total.load(Ordering::Relaxed)
}

/// Runs acceptors on every socket of a group while `clients` runs, and
/// returns what each listener accepted.
fn serve_group<F: FnOnce(SocketAddr)>(fds: Vec<OwnedFd>, expected: usize, clients: F) -> Vec<Vec<Accepted>> {
    let addr = local_addr(&fds[0]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));
    let acceptors: Vec<_> =
        fds.into_iter().map(|fd| spawn_acceptor(fd, Arc::clone(&stop), Arc::clone(&total))).collect();
    clients(addr);
    let got = wait_for(&total, expected, Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let per_listener: Vec<_> = acceptors.into_iter().map(|a| a.join().unwrap()).collect();
    assert_eq!(got, expected, "connections accepted before the deadline");
    per_listener
}

// ---------------------------------------------------------------- pinning

/// Pins the calling thread to `cpu` with `taskset -p` on its thread id
/// (keeps the tests free of unsafe `sched_setaffinity` calls). `Err` when
/// `taskset` is missing or refuses.
fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // "/proc/thread-self" -> "<pid>/task/<tid>"
    let link = fs::read_link("/proc/thread-self")?;
    let tid = link.file_name().and_then(|t| t.to_str()).unwrap_or_default().to_owned();
    let out = Command::new("taskset").args(["-p", "-c", &cpu.to_string(), &tid]).output()?;
    if !out.status.success() {
        return Err(io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    let status = fs::read_to_string("/proc/thread-self/status")?;
    let allowed = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(str::trim);
    if allowed != Some(cpu.to_string().as_str()) {
        return Err(io::Error::other(format!("still allowed on {allowed:?}")));
    }
    Ok(())
}

/// The CPU this thread last ran on (field 39 of /proc/thread-self/stat).
fn current_cpu() -> Option<usize> {
    let stat = fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name; "processor" is field 39.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(39 - 3)?.parse().ok()
}

fn online_cpus() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `work` on a thread pinned to `cpu`; `None` if pinning is impossible.
fn on_cpu<T: Send + 'static>(cpu: usize, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    thread::spawn(move || match pin_current_thread(cpu) {
        Ok(()) => {
            assert_eq!(current_cpu(), Some(cpu), "pinned thread runs on its CPU");
            Some(work())
        }
        Err(e) => {
            eprintln!("cannot pin to CPU {cpu} ({e}); skipping");
            None
        }
    })
    .join()
    .unwrap()
}

// ------------------------------------------------------------ hash spread

#[test]
fn hash_steering_spreads_connections_over_the_group() {
    const N: usize = 4;
    const M: u64 = 2000;
    const CLIENTS: u64 = 4;
    let started = Instant::now();
    let fds = bind_group(LOOPBACK.parse().unwrap(), N, &ListenOptions::default()).unwrap();
    let ports = Arc::new(AtomicUsize::new(0));
    let per_listener = serve_group(fds, M as usize, |addr| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| thread::spawn(move || connect_all(addr, (c..M).step_by(CLIENTS as usize))))
            .collect();
        let distinct: usize = clients.into_iter().map(|c| c.join().unwrap().len()).sum();
        ports.store(distinct, Ordering::Relaxed);
    });

    let mut ids: Vec<u64> = per_listener.iter().flatten().map(|a| a.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..M).collect::<Vec<_>>(), "every id accepted exactly once");
    let counts: Vec<usize> = per_listener.iter().map(Vec::len).collect();
    let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
    println!(
        "hash spread: {M} connections over {N} listeners: {counts:?}, max/min {:.3}, \
         ~{} distinct source ports per client thread, {:?}",
        max as f64 / min as f64,
        ports.load(Ordering::Relaxed) / CLIENTS as usize,
        started.elapsed()
    );
    assert!(counts.iter().all(|&c| c >= M as usize / (4 * N)), "every listener gets a share: {counts:?}");
}

// ----------------------------------------------------------- CPU steering

const BURST: u64 = 200;

/// Connects a burst from a client pinned to each CPU in turn; returns, per
/// client CPU, how many of its connections each listener accepted.
fn bursts_per_cpu(fds: Vec<OwnedFd>, cpus: usize) -> Vec<Vec<usize>> {
    let listeners = fds.len();
    let per_listener = serve_group(fds, cpus * BURST as usize, |addr| {
        for cpu in 0..cpus {
            let ids = (cpu as u64 * BURST)..((cpu as u64 + 1) * BURST);
            on_cpu(cpu, move || connect_all(addr, ids)).expect("pinning worked a moment ago");
        }
    });
    let mut matrix = vec![vec![0; listeners]; cpus];
    let mut incoming: BTreeMap<(usize, Option<usize>), usize> = BTreeMap::new();
    for (listener, accepted) in per_listener.iter().enumerate() {
        for a in accepted {
            let client_cpu = (a.id / BURST) as usize;
            matrix[client_cpu][listener] += 1;
            *incoming.entry((client_cpu, a.incoming_cpu)).or_default() += 1;
        }
    }
    println!("  (client cpu, SO_INCOMING_CPU) -> connections: {incoming:?}");
    matrix
}

/// Whether pinning works at all here (checked once, before counting on it).
fn pinned_ok() -> bool {
    online_cpus() >= 2 && on_cpu(0, || ()).is_some()
}

#[test]
fn cpu_steering_sends_each_cpu_to_its_shard() {
    if !pinned_ok() {
        eprintln!("skipping: needs 2 CPUs and taskset");
        return;
    }
    // Identity (`ld cpu; ret a`) and swapped (compare chain) mappings.
    for shard_cpus in [[0u32, 1], [1, 0]] {
        let fds = ReuseportGroup::new(LOOPBACK.parse().unwrap(), 2)
            .steering(Steering::Cpu)
            .shard_cpus(shard_cpus.to_vec())
            .bind_tcp()
            .unwrap();
        let matrix = bursts_per_cpu(fds, 2);
        println!("cpu steering {shard_cpus:?}: [client cpu][listener] = {matrix:?}");
        for (cpu, row) in matrix.iter().enumerate() {
            let shard = shard_cpus.iter().position(|&c| c as usize == cpu).unwrap();
            // On loopback the SYN is processed in the softirq of the CPU
            // that sent it (no RPS on `lo`), so the program sees the
            // client's CPU.
            assert_eq!(row[shard], BURST as usize, "client on CPU {cpu} -> shard {shard}: {row:?}");
        }
    }
}

#[test]
fn unmapped_cpus_fall_back_to_hash_or_modulo() {
    if !pinned_ok() {
        eprintln!("skipping: needs 2 CPUs and taskset");
        return;
    }
    // Shard 0 on CPU 1, shard 1 on a CPU that does not exist here: CPU 0
    // has no shard.
    for unmapped in [Unmapped::Modulo, Unmapped::Hash] {
        let fds = bind_group(LOOPBACK.parse().unwrap(), 2, &ListenOptions::default()).unwrap();
        attach_program(&fds[1], &CpuProgram::new(&[1, 7], unmapped).unwrap()).unwrap();
        let matrix = bursts_per_cpu(fds, 2);
        println!("unmapped CPU 0 with {unmapped:?}: [client cpu][listener] = {matrix:?}");
        assert_eq!(matrix[1], [BURST as usize, 0], "CPU 1 is mapped to shard 0");
        match unmapped {
            // 0 % 2 = socket 0.
            Unmapped::Modulo => assert_eq!(matrix[0], [BURST as usize, 0]),
            // Hashed over both (200 flows all on one side: p = 2^-199).
            Unmapped::Hash => assert!(matrix[0].iter().all(|&n| n > 0), "{:?}", matrix[0]),
        }
    }
}

#[test]
fn detach_returns_to_hash_steering() {
    if !pinned_ok() {
        eprintln!("skipping: needs 2 CPUs and taskset");
        return;
    }
    let fds = bind_group(LOOPBACK.parse().unwrap(), 2, &ListenOptions::default()).unwrap();
    assert!(!detach_steering(&fds[0]).unwrap(), "nothing attached yet");
    attach_cpu_steering(&fds[0], &[0, 1]).unwrap();
    assert!(detach_steering(&fds[1]).unwrap(), "detached through another member");
    let matrix = bursts_per_cpu(fds, 2);
    println!("after detach: [client cpu][listener] = {matrix:?}");
    assert!(matrix.iter().flatten().all(|&n| n > 0), "hashed again: {matrix:?}");
}

/// Steering by client: every connection from one source address, whatever
/// its port, reaches the listener `ClientProgram::select` names.
#[test]
fn client_steering_keeps_each_address_on_one_listener() {
    let fds = bind_group(LOOPBACK.parse().unwrap(), 3, &ListenOptions::default()).unwrap();
    attach_client_steering(&fds[0], 3, 32, 64).unwrap();
    let program = ClientProgram::new(3, 32, 64).unwrap();
    let clients: Vec<std::net::Ipv4Addr> = (2..10).map(|i| std::net::Ipv4Addr::new(127, 0, 0, i)).collect();
    let per_client = 6u64;
    let sources = clients.clone();
    let per_listener = serve_group(fds, clients.len() * per_client as usize, move |addr| {
        for (c, ip) in sources.iter().enumerate() {
            for k in 0..per_client {
                let s = Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
                s.bind(&SocketAddr::from((*ip, 0)).into()).unwrap();
                s.connect_timeout(&addr.into(), Duration::from_secs(2)).expect("connect");
                let mut stream = TcpStream::from(s);
                stream.write_all(&(c as u64 * per_client + k).to_le_bytes()).unwrap();
            }
        }
    });
    for (c, ip) in clients.iter().enumerate() {
        let want = program.select((*ip).into()) as usize;
        let on: Vec<usize> = per_listener
            .iter()
            .enumerate()
            .filter(|(_, seen)| seen.iter().any(|a| a.id / per_client == c as u64))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(on, [want], "client {ip}: every connection on listener {want}");
    }
    let used = per_listener.iter().filter(|seen| !seen.is_empty()).count();
    assert!(used >= 2, "eight clients spread over the group: {used} listeners used");
}

#[test]
fn cpu_steering_applies_to_udp_groups() {
    if !pinned_ok() {
        eprintln!("skipping: needs 2 CPUs and taskset");
        return;
    }
    let fds = ReuseportGroup::new(LOOPBACK.parse().unwrap(), 2)
        .steering(Steering::Cpu)
        .shard_cpus(vec![1, 0])
        .bind_udp()
        .unwrap();
    let addr = local_addr(&fds[0]).unwrap();
    let receivers: Vec<UdpSocket> = fds.into_iter().map(UdpSocket::from).collect();
    for cpu in 0..2u64 {
        // A fresh socket (and port) per datagram, so the hash would spread them.
        on_cpu(cpu as usize, move || {
            for i in 0..BURST {
                let client = UdpSocket::bind(LOOPBACK).unwrap();
                client.send_to(&(cpu * BURST + i).to_le_bytes(), addr).unwrap();
            }
        })
        .unwrap();
    }
    let mut matrix = [[0usize; 2]; 2];
    for (listener, socket) in receivers.iter().enumerate() {
        let mut buf = [0u8; 8];
        // Non-blocking: everything sent has been queued by now (loopback
        // delivers in the sender's softirq).
        while let Ok(8) = socket.recv(&mut buf) {
            matrix[(u64::from_le_bytes(buf) / BURST) as usize][listener] += 1;
        }
    }
    println!("udp cpu steering [1, 0]: [client cpu][socket] = {matrix:?}");
    assert_eq!(matrix, [[0, BURST as usize], [BURST as usize, 0]]);
}

// ---------------------------------------------------------------- drain

/// Set in the child that runs the drain test inside its own network namespace.
const IN_NETNS: &str = "STEER_TEST_IN_NETNS";

/// Puts `tcp_migrate_req` back on drop, also when the test panics.
struct MigrateReqGuard {
    previous: bool,
}

impl MigrateReqGuard {
    fn set(on: bool) -> io::Result<MigrateReqGuard> {
        Ok(MigrateReqGuard { previous: set_migrate_req(on)? })
    }
}

impl Drop for MigrateReqGuard {
    fn drop(&mut self) {
        if let Err(e) = set_migrate_req(self.previous) {
            eprintln!("could not restore {MIGRATE_REQ_SYSCTL} to {}: {e}", self.previous);
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct DrainOutcome {
    /// Clients whose connection listener B accepted (and answered).
    accepted: usize,
    /// Clients that got `ECONNRESET`.
    reset: usize,
    /// Clients that saw anything else (EOF, timeout).
    other: usize,
}

/// Queues `k` connections on a 2-listener group with nobody accepting,
/// closes listener A, then accepts everything B has and asks each client
/// what happened to it.
fn drain_once(k: u64) -> DrainOutcome {
    let fds = bind_group(LOOPBACK.parse().unwrap(), 2, &ListenOptions::default()).unwrap();
    let addr = local_addr(&fds[0]).unwrap();
    let mut clients: Vec<TcpStream> = (0..k)
        .map(|id| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
            s.write_all(&id.to_le_bytes()).unwrap();
            s
        })
        .collect();
    // connect() returns once the client sent its final ACK; give the
    // listeners a moment to move every handshake into an accept queue.
    thread::sleep(Duration::from_millis(100));
    let [a, b]: [OwnedFd; 2] = fds.try_into().unwrap();
    drop(a); // shard A stops listening with its queue full
    let answered = accept_and_answer(Socket::from(b));

    let mut outcome = DrainOutcome::default();
    for (id, client) in (0..k).zip(clients.iter_mut()) {
        client.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut echo = [0u8; 8];
        match client.read_exact(&mut echo) {
            Ok(()) => {
                assert_eq!(u64::from_le_bytes(echo), id);
                outcome.accepted += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => outcome.reset += 1,
            Err(_) => outcome.other += 1,
        }
    }
    assert_eq!(answered, outcome.accepted, "B answered exactly the clients that saw an answer");
    outcome
}

/// Accepts from a non-blocking listener until it has been empty for 200 ms
/// (at most 3 s), echoing each client's id back. Returns the count.
fn accept_and_answer(listener: Socket) -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = Instant::now();
    let mut answered = 0;
    while Instant::now() < deadline && last.elapsed() < Duration::from_millis(200) {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut stream = TcpStream::from(conn);
                let mut id = [0u8; 8];
                stream.read_exact(&mut id).unwrap();
                stream.write_all(&id).unwrap();
                answered += 1;
                last = Instant::now();
            }
            Err(e) if is_timeout(&e) => thread::sleep(Duration::from_millis(2)),
            Err(e) => panic!("accept: {e}"),
        }
    }
    answered
}

/// Re-runs the test `name` in a child process inside a fresh network
/// namespace (`unshare --net`, loopback brought up), so the sysctl it sets
/// never touches the machine's namespace. `false` if namespaces are not
/// available here; panics if the child fails.
fn run_in_fresh_netns(name: &str) -> bool {
    let probe = Command::new("unshare").args(["--net", "--", "ip", "link", "set", "lo", "up"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("no fresh network namespace here (needs root, unshare, ip); using this one");
        return false;
    }
    let out = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(IN_NETNS, "1")
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "drain test in a fresh network namespace failed: {}", out.status);
    true
}

#[test]
fn drain_resets_queued_connections_unless_migrate_req() {
    const K: u64 = 64;
    let outer = migrate_req_enabled().ok();
    if std::env::var_os(IN_NETNS).is_none()
        && run_in_fresh_netns("drain_resets_queued_connections_unless_migrate_req")
    {
        // Per namespace: the child's setting did not leak into ours.
        assert_eq!(migrate_req_enabled().ok(), outer, "{MIGRATE_REQ_SYSCTL} of this namespace unchanged");
        return;
    }
    if let Err(e) = migrate_req_enabled() {
        eprintln!("skipping: {MIGRATE_REQ_SYSCTL}: {e}");
        return;
    }
    let off = match MigrateReqGuard::set(false) {
        Ok(_guard) => drain_once(K),
        Err(e) => return eprintln!("skipping: cannot write {MIGRATE_REQ_SYSCTL} ({e}); needs root"),
    };
    let on = {
        let _guard = MigrateReqGuard::set(true).unwrap();
        assert!(migrate_req_enabled().unwrap());
        drain_once(K)
    };
    println!(
        "drain of {K} queued connections (in netns: {}): tcp_migrate_req=0 -> {off:?}; tcp_migrate_req=1 -> {on:?}",
        std::env::var_os(IN_NETNS).is_some()
    );
    assert_eq!(off.accepted + off.reset, K as usize, "{off:?}");
    assert!(off.reset > 0, "A's queue is reset without migration: {off:?}");
    assert_eq!(on, DrainOutcome { accepted: K as usize, reset: 0, other: 0 }, "all migrated to B");
}

// ------------------------------------------------------------ properties

/// The CPU steering program builder: what the program selects matches the
/// mapping for every CPU, and the kernel accepts every program it makes.
mod properties {
    use std::collections::BTreeSet;

    use netstack::steer::{
        attach_program, bind_group, CpuProgram, Insn, ListenOptions, Unmapped, MAX_MAPPED_SHARDS,
    };
    use proptest::prelude::*;

    /// Distinct CPUs, one per shard, in any order.
    fn mapping(max_shards: usize) -> impl Strategy<Value = Vec<u32>> {
        proptest::collection::btree_set(0u32..4096, 1..=max_shards)
            .prop_map(|set: BTreeSet<u32>| set.into_iter().collect::<Vec<_>>())
            .prop_shuffle()
    }

    fn unmapped() -> impl Strategy<Value = Unmapped> {
        prop_oneof![Just(Unmapped::Hash), Just(Unmapped::Modulo)]
    }

    /// What the mapping says should happen to a packet processed on `cpu`.
    fn expected(shard_cpus: &[u32], unmapped: Unmapped, cpu: u32) -> Option<u32> {
        match shard_cpus.iter().position(|&c| c == cpu) {
            Some(index) => Some(index as u32),
            None => match unmapped {
                Unmapped::Hash => None,
                Unmapped::Modulo => Some(cpu % shard_cpus.len() as u32),
            },
        }
    }

    proptest! {
        #[test]
        fn program_selects_the_mapped_shard(cpus in mapping(64), fallback in unmapped(), extra in 0u32..8192) {
            let program = CpuProgram::new(&cpus, fallback).unwrap();
            prop_assert_eq!(program.instructions()[0], Insn::LOAD_CPU);
            prop_assert!(program.instructions().len() <= 2 * cpus.len() + 3);
            for cpu in cpus.iter().copied().chain([extra, 0, 1]) {
                prop_assert_eq!(program.select(cpu), expected(&cpus, fallback, cpu), "cpu {}", cpu);
            }
        }

        #[test]
        fn identity_mappings_are_short(n in 1usize..=MAX_MAPPED_SHARDS, fallback in unmapped()) {
            let cpus: Vec<u32> = (0..n as u32).collect();
            let program = CpuProgram::new(&cpus, fallback).unwrap();
            prop_assert!(program.instructions().len() <= 3);
            prop_assert_eq!(program.select(n as u32 - 1), Some(n as u32 - 1));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn the_kernel_accepts_every_program(cpus in mapping(MAX_MAPPED_SHARDS), fallback in unmapped()) {
            let group = bind_group("127.0.0.1:0".parse().unwrap(), 1, &ListenOptions::default()).unwrap();
            let program = CpuProgram::new(&cpus, fallback).unwrap();
            prop_assert!(attach_program(&group[0], &program).is_ok(), "{} instructions", program.instructions().len());
        }
    }
}
