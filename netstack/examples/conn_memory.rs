//! Measures what an idle TCP connection costs on a shard: user-space memory
//! (RSS growth per connection while each has a receive armed through a
//! provided-buffer ring) and kernel socket memory (from /proc/net/sockstat).
//!
//! Run: `cargo run --release -p netstack --example conn_memory [CONNECTIONS]`

use std::net::{SocketAddr, TcpStream as StdTcp};
use std::sync::mpsc;
use std::time::Duration;

use netstack::tcp::TcpListener;
use shard::reactor::BufRing;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Pages of memory the kernel charges to TCP sockets, system-wide.
fn tcp_mem_pages() -> u64 {
    let s = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Object size of a kernel slab cache (root can read /proc/slabinfo).
fn slab_objsize(cache: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let line = s.lines().find(|l| l.split_whitespace().next() == Some(cache))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(4000);
    let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let clients = std::thread::spawn(move || {
        let Ok(addr) = addr_rx.recv() else { return };
        let conns: Vec<StdTcp> = (0..n).filter_map(|_| StdTcp::connect(addr).ok()).collect();
        println!("clients connected: {}", conns.len());
        let _ = done_rx.recv_timeout(Duration::from_secs(60));
    });
    let result = shard::run_single(move || async move {
        let listener = TcpListener::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let group = BufRing::new(256, 16 << 10).expect("buffer ring");
        let (rss0, mem0) = (rss_kib(), tcp_mem_pages());
        addr_tx.send(listener.local_addr()).expect("address");
        let mut incoming = listener.incoming();
        for _ in 0..n {
            let Ok(conn) = incoming.next().await else { break };
            let group = group.clone();
            shard::spawn_local(async move {
                let mut rx = conn.recv_stream(&group);
                while let Ok(Some(_)) = rx.next().await {}
            })
            .detach();
        }
        shard::time::sleep(Duration::from_millis(200)).await;
        let (rss1, mem1) = (rss_kib(), tcp_mem_pages());
        let in_use = group.in_use();
        let _ = done_tx.send(());
        (rss1.saturating_sub(rss0), mem1.saturating_sub(mem0), in_use)
    });
    let Ok((rss, pages, in_use)) = result else {
        eprintln!("runtime failed: {result:?}");
        std::process::exit(1);
    };
    let _ = clients.join();
    println!("idle connections: {n}, receive buffers held: {in_use}");
    println!(
        "user space: {} KiB RSS growth = {:.0} bytes per connection (task, operation slot, fd)",
        rss,
        rss as f64 * 1024.0 / n as f64
    );
    println!(
        "kernel: {} pages of TCP memory for both ends = {:.0} bytes per connection pair",
        pages,
        pages as f64 * 4096.0 / n as f64
    );
    let per_socket: u64 = ["TCP", "sock_inode_cache", "filp"].iter().filter_map(|c| slab_objsize(c)).sum();
    if per_socket > 0 {
        println!("kernel objects per socket (TCP + socket inode + file): {per_socket} bytes");
    }
}
