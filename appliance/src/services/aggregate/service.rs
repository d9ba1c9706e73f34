//! The aggregate service's I/O: receivers, the flush cycle and shutdown.
//!
//! Design (local pre-aggregation, then partials to owners): every shard
//! receives on its own `SO_REUSEPORT` UDP socket and TCP listener and
//! parses in place. A line's key is owned by shard `hash(key) mod N`; a
//! shard applies lines for keys it owns to its own table and lines for
//! other keys to a *partial* table, so between flushes nothing crosses
//! cores. The service runs on its shard group (`shards = "..."`, default
//! every shard): keys are owned by its members only. At each interval the
//! group's first member drives two phases with a group broadcast
//! (parallel, with a deadline, per-shard errors kept apart): (1) every shard drains its partial table into one batch per
//! owner and moves it there with `submit_to`, where it is merged; (2) every
//! owner flushes its keys (Graphite lines to its own connection, stdout,
//! relay datagrams). This moves one record per key per shard per interval
//! instead of one per line, which is what makes it the fast choice.
//!
//! Shutdown, within the runtime's grace period: on SIGTERM the receivers
//! keep reading what clients already sent (a UDP socket until 50 ms of
//! quiet, a TCP connection until it closes or is quiet for 100 ms), for at
//! most half of the grace; then they stop reading (a TCP client still
//! sending sees its connection reset, not a clean close). Only when every
//! receiver has stopped do the shards seal their tables and the first member run the
//! final flush, so whatever was read is flushed, and the final counters
//! agree with the flushed totals. The rest of the grace goes to Graphite;
//! intervals it still has not taken by then are reported lost (a warning
//! and `intervals_dropped`), and the final counters are logged.

use std::cell::RefCell;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netstack::backend::{DatagramBackend, KernelUdp, Received};
use netstack::tcp::{TcpListener, TcpStream};
use netstack::udp::UdpSocket;
use shard::future::{join_all, select, Either};
use shard::ops::RecvMsgOut;
use shard::reactor::BufRing;
use shard::sync::notify::Notify;

use super::config::{AggregateConfig, Exchange};
use super::sink::Outbox;
use crate::services::ServiceId;
use cores::statsd::aggregator::{Aggregator, Partials, Settings, Slice};
use cores::statsd::graphite::Format;
use cores::statsd::origins::OriginBy;
use cores::statsd::parse::DropReason;
use cores::statsd::relay;
use cores::statsd::stats::AggregateStats;
use cores::statsd::stream::{Piece, StreamLines};
use cores::statsd::table::PARTS;

mod streams;

/// Relay datagram payloads at most (a common statsd client size).
const RELAY_DATAGRAM: usize = 1432;

struct ShardState {
    cfg: Arc<AggregateConfig>,
    /// The shards the service runs on: the aggregator's owner `i` (an
    /// index in the group) is shard `members.member(i)`.
    members: shard::Group,
    /// This shard's share of the aggregator: tables, counters, partials
    /// (sans I/O, in `cores`).
    agg: Aggregator,
    outbox: Option<Rc<Outbox>>,
    /// Outboxes a reload replaced (their counters still count).
    retired: Vec<Rc<Outbox>>,
    /// Receive tasks still running (0 after a drain).
    receivers: usize,
    /// The final flush has begun: nothing more is read into the tables.
    sealed: bool,
    /// Told when `receivers` drops to 0 and when `done` is set (the
    /// shutdown waits on these, it does not poll them).
    changed: Rc<Notify>,
    /// The final flush is done: the shard's service may return.
    done: bool,
    /// `Exchange::Records`: batches on their way to an owner.
    shipping: Vec<shard::JoinHandle<()>>,
    /// The XDP program this service's AF_XDP sockets take from (kept for
    /// the run: a reload does not change it), and this shard's sockets.
    xdp: Option<Arc<super::xdp::Attachment>>,
    xdp_receivers: Vec<netstack::backend::XdpCounters>,
    /// A second descriptor of the UDP socket while its receiver runs (so
    /// a scrape or a flush reads the kernel's drop count; closed with the
    /// receiver, so it never keeps the socket in its group longer), and
    /// the drops counted on sockets already closed.
    drop_probe: Option<OwnedFd>,
    kernel_drops_closed: u64,
    /// The Unix socket, held for the run (a reload's config does not carry
    /// it; its file goes when the last holder does).
    _unix: (Option<Arc<super::unix::UnixSocket>>, Option<Arc<super::unix::UnixSocket>>),
}

/// A shard's state of one aggregate service, kept in the shard's slot for
/// the service (see [`ServiceId`]).
type Shard = Rc<RefCell<ShardState>>;

/// Runs `f` on this shard's state of the service `id` (`None` if it does
/// not run here). Receivers look their state up once and use
/// [`with_shard`] on the per-datagram path.
fn with<R>(id: ServiceId, f: impl FnOnce(&mut ShardState) -> R) -> Option<R> {
    let shard = id.state::<RefCell<ShardState>>()?;
    let r = with_shard(&shard, f);
    Some(r)
}

fn with_shard<R>(shard: &Shard, f: impl FnOnce(&mut ShardState) -> R) -> R {
    f(&mut shard.borrow_mut())
}

/// A copy of this shard's Prometheus series (`None` outside the service
/// or when it keeps none).
pub fn prometheus(id: ServiceId) -> Option<cores::statsd::exporter::Snapshot> {
    with(id, |st| st.agg.prometheus()).flatten()
}

/// This shard's AF_XDP sockets' figures, and the program's counts from
/// the group's first member (empty outside the service or on the kernel
/// backend).
pub fn xdp_stats(
    id: ServiceId,
) -> (Vec<super::xdp::QueueStats>, Option<netstack::xdp::program::ProgramCounters>) {
    with(id, |st| {
        let first = st.members.index_of(shard::shard_id()) == Some(0);
        let program = st.xdp.as_ref().filter(|_| first).and_then(|a| a.counters().ok());
        (super::xdp::shard_queues(&st.xdp_receivers), program)
    })
    .unwrap_or_default()
}

/// This shard's `n` worst origins under the per-origin limits, raw.
pub fn origin_offenders(id: ServiceId, n: usize) -> Vec<(Vec<u8>, u64)> {
    with(id, |st| st.agg.origin_offenders(n)).unwrap_or_default()
}

/// This shard's counters (all zero outside the service).
pub fn shard_stats(id: ServiceId) -> AggregateStats {
    with(id, |st| {
        let mut s = st.agg.stats().clone();
        s.keys = st.agg.keys() as u64;
        s.kernel_drops = st.kernel_drops_closed + st.drop_probe.as_ref().map_or(0, probe_drops);
        s.held_intervals = st.outbox.as_ref().map_or(0, |o| o.held() as u64);
        for o in st.outbox.iter().chain(&st.retired) {
            s.flush_errors += o.errors.get();
            s.intervals_dropped += o.dropped.get();
            s.graphite_lines += o.lines.get();
        }
        s
    })
    .unwrap_or_default()
}

/// Every shard's counters, summed (from any shard).
pub async fn gather_stats(id: ServiceId) -> Result<AggregateStats, shard::SubmitError> {
    shard::map_reduce(
        move || async move { shard_stats(id) },
        AggregateStats::default(),
        |mut a, b| {
            a.merge(&b);
            a
        },
    )
    .await
}

/// Lines another shard received for keys this shard owns.
fn ingest_shipped(id: ServiceId, data: &[u8]) {
    with(id, |st| st.agg.ingest_shipped(data));
}

/// Datagrams taken from the backend at once (the old loop yielded every 64
/// datagrams; a burst is the same slice of work).
const BURST: usize = 64;

/// Records mode: bytes of lines a batch collects before it is shipped.
const RECORD_BATCH: usize = 32 * 1024;

/// Records mode: ships this shard's waiting lines to their owners (those
/// over `min` bytes), each batch one message; the owners apply them.
fn ship_records(id: ServiceId, min: usize) {
    let Some(batches) = with(id, |st| {
        let members = &st.members;
        st.agg.take_records(min).into_iter().map(|(owner, b)| (members.member(owner), b)).collect::<Vec<_>>()
    }) else {
        return;
    };
    for (owner, batch) in batches {
        let task = shard::spawn_local_named("statsd-ship", async move {
            if let Err(e) = shard::submit_to(owner, move || async move { ingest_shipped(id, &batch) }).await {
                tracing::warn!("aggregate: shipping lines to shard {owner}: {e}");
            }
        });
        with(id, |st| st.shipping.push(task));
    }
}

/// Records mode: everything received so far has reached its owner.
async fn records_delivered(id: ServiceId) {
    ship_records(id, 0);
    let tasks = with(id, |st| std::mem::take(&mut st.shipping)).unwrap_or_default();
    for t in tasks {
        let _ = t.await;
    }
}

/// A datagram: its complete lines; the cut last line of a truncated one
/// is dropped as too long.
fn on_datagram<B: AsRef<[u8]>>(shard: &Shard, d: &Received<B>) {
    on_payload(shard, d.payload(), d.truncated, d.source.map(|a| a.ip()), None);
}

/// A datagram's payload (cut to the receive buffer when `truncated`), from
/// `source`; with `tags` (a Unix socket client's origin), those are added
/// to every line, in `scratch`.
fn on_payload(
    shard: &Shard,
    mut payload: &[u8],
    truncated: bool,
    source: Option<std::net::IpAddr>,
    tags: Option<(&str, &mut Vec<u8>)>,
) {
    with_shard(shard, |st| {
        if st.sealed {
            return;
        }
        let stats = st.agg.stats_mut();
        stats.datagrams += 1;
        if truncated {
            stats.truncated += 1;
            let (service, max) = (&st.cfg.name, st.cfg.max_datagram);
            ops::warn_limited!(
                %service,
                "a datagram larger than max_datagram ({max} bytes) was cut there: its last line is dropped \
                 (counted as truncated); raise max_datagram"
            );
            let end = payload.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if end < payload.len() {
                let stats = st.agg.stats_mut();
                stats.lines += 1;
                stats.dropped[DropReason::TooLong.index()] += 1;
            }
            payload = &payload[..end];
        }
        match tags {
            Some((tags, scratch)) => {
                cores::statsd::tagging::add_tags(payload, tags.as_bytes(), scratch);
                st.agg.ingest_from(scratch, source);
            }
            None => st.agg.ingest_from(payload, source),
        }
    });
}

/// DogStatsD datagrams from the Unix socket (see `super::unix`), until a
/// stop; then what has arrived, until quiet or the end of the receiving
/// part of the grace.
async fn recv_unix(
    id: ServiceId,
    socket: Arc<super::unix::UnixSocket>,
    max: usize,
    records: bool,
    origin: bool,
) -> io::Result<()> {
    let fd = socket.for_shard()?;
    let guard = ReceiverGuard::enter(id).ok_or_else(not_running)?;
    let shard = &guard.0;
    let (mut buf, mut scratch) = (vec![0u8; max], Vec::new());
    let mut origins = super::unix::Origins::default();
    let mut end = None;
    loop {
        loop {
            match netstack::unix::recv_creds(std::os::fd::AsFd::as_fd(&fd), &mut buf) {
                Ok((n, truncated, creds)) => {
                    let tags = creds.filter(|_| origin).map(|c| origins.tags(c.pid));
                    let tags = tags.map(|t| (t, &mut scratch));
                    on_payload(shard, &buf[..n], truncated, None, tags);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    ops::warn_limited!("statsd unix receive: {e}");
                    shard::time::sleep(Duration::from_millis(10)).await;
                    break;
                }
            }
        }
        if records {
            ship_records(id, 0);
        }
        let ready = netstack::unix::readable(&fd);
        match end {
            Some(end) => {
                let Some(wait) = drain_wait(id, end, Duration::from_millis(50)) else { break };
                if shard::time::timeout(wait, ready).await.is_err() {
                    break;
                }
            }
            None => {
                if let Either::Left(()) = select(shard::stopping(), std::pin::pin!(ready)).await {
                    end = Some(receive_deadline());
                }
            }
        }
    }
    // Drained: close this shard's copy and the shared one, so a client
    // sending from now on is refused (`ECONNREFUSED`) once every shard is
    // done, instead of queueing datagrams nobody will read.
    drop(fd);
    socket.close();
    records_delivered(id).await;
    Ok(())
}

/// Counts a running receiver for the shutdown barrier.
struct ReceiverGuard(Shard);

impl ReceiverGuard {
    /// `None` when the service does not run on this shard.
    fn enter(id: ServiceId) -> Option<ReceiverGuard> {
        let shard = id.state::<RefCell<ShardState>>()?;
        with_shard(&shard, |st| st.receivers += 1);
        Some(ReceiverGuard(shard))
    }
}

impl Drop for ReceiverGuard {
    fn drop(&mut self) {
        with_shard(&self.0, |st| {
            st.receivers -= 1;
            if st.receivers == 0 {
                st.changed.notify();
            }
        });
    }
}

fn not_running() -> io::Error {
    io::Error::other("the aggregate service's state is not installed on this shard")
}

async fn recv_udp(id: ServiceId, fd: OwnedFd, buffers: u16, size: usize, records: bool) -> io::Result<()> {
    let guard = ReceiverGuard::enter(id).ok_or_else(not_running)?;
    let probe = fd.try_clone()?;
    with_shard(&guard.0, |st| st.drop_probe = Some(probe));
    let backend = KernelUdp::new(UdpSocket::from_fd(fd)?, buffers, size)?;
    let r = receive(id, &guard.0, backend, records).await;
    with_shard(&guard.0, |st| {
        if let Some(probe) = st.drop_probe.take() {
            st.kernel_drops_closed += probe_drops(&probe);
        }
    });
    r
}

/// The kernel's drop count of a socket (0 if it cannot be read).
fn probe_drops(fd: &OwnedFd) -> u64 {
    netstack::sockopt::receive_drops(fd).unwrap_or(0)
}

/// Datagrams from one AF_XDP socket; holding `_attached` keeps the XDP
/// program attached while the socket receives.
async fn recv_xdp(
    id: ServiceId,
    backend: netstack::backend::XdpUdp,
    _attached: Arc<super::xdp::Attachment>,
    records: bool,
) -> io::Result<()> {
    let guard = ReceiverGuard::enter(id).ok_or_else(not_running)?;
    receive(id, &guard.0, backend, records).await
}

/// Datagrams in bursts from a datagram backend (the kernel socket today;
/// a kernel-bypass backend plugs in here without touching the rest),
/// until a stop; then what has arrived, until quiet or the end of the
/// receiving part of the grace.
async fn receive<B: DatagramBackend>(
    id: ServiceId,
    shard: &Shard,
    mut backend: B,
    records: bool,
) -> io::Result<()> {
    let mut burst = Vec::with_capacity(BURST);
    loop {
        match select(shard::stopping(), backend.recv_burst(&mut burst, BURST)).await {
            Either::Left(()) => break,
            Either::Right(Ok(_)) => {
                burst.drain(..).for_each(|d| on_datagram(shard, &d));
                if records {
                    ship_records(id, RECORD_BATCH);
                }
            }
            Either::Right(Err(e)) => {
                tracing::warn!("statsd udp receive: {e}");
                shard::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // A busy socket always has a datagram ready: let the flush and the
        // other tasks run between bursts.
        if records {
            ship_records(id, 0);
        }
        shard::yield_now().await;
    }
    let end = receive_deadline();
    while let Some(wait) = drain_wait(id, end, Duration::from_millis(50)) {
        match shard::time::timeout(wait, backend.recv_burst(&mut burst, BURST)).await {
            Ok(Ok(_)) => burst.drain(..).for_each(|d| on_datagram(shard, &d)),
            _ => break,
        }
    }
    records_delivered(id).await;
    Ok(())
}

/// When receivers stop reading after a stop: half of what is left of the
/// grace period, so the other half is the final flush's.
fn receive_deadline() -> Instant {
    let now = Instant::now();
    match shard::stop_deadline() {
        Some(d) => now + d.saturating_duration_since(now) / 2,
        None => now,
    }
}

/// How long a draining receiver may wait for more (`quiet` at most), or
/// `None` once it must stop: past `end`, or the tables are sealed.
fn drain_wait(id: ServiceId, end: Instant, quiet: Duration) -> Option<Duration> {
    let left = end.saturating_duration_since(Instant::now());
    if left.is_zero() || with(id, |st| st.sealed).unwrap_or(true) {
        return None;
    }
    Some(left.min(quiet))
}

/// Seconds since the epoch (0 if the clock is before it).
pub(super) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Phase 1 on one shard: its waiting records (records mode) and its
/// partials, one batch per owner, merged there.
async fn ship_partials(id: ServiceId) {
    records_delivered(id).await;
    let Some((batches, members)) = with(id, |st| (st.agg.drain_partials(), st.members.clone())) else {
        return;
    };
    let mut waits = Vec::new();
    for (owner, batch) in batches.into_iter().enumerate().filter(|(_, b)| !b.is_empty()) {
        let owner = members.member(owner);
        waits.push(shard::submit_to(owner, move || async move { merge_batch(id, batch) }));
    }
    for r in join_all(waits).await {
        if let Err(e) = r {
            tracing::warn!("aggregate: shipping partials: {e}");
        }
    }
}

fn merge_batch(id: ServiceId, batch: Partials) {
    with(id, |st| st.agg.merge(batch));
}

/// Keys per flush slice: a slice's Graphite text (~140 bytes per counter
/// key) is written before the next slice is formatted, so a flush of a
/// million keys never holds the whole interval's text at once while
/// Graphite keeps up.
const SLICE_KEYS: usize = 16_384;
/// Queued Graphite bytes above which a flush waits before the next slice.
const SLICE_BACKLOG: usize = 4 << 20;

/// Phase 2 on one owner: its keys to every output, slice by slice.
async fn emit(id: ServiceId, ts: u64) {
    let Some((cfg, outbox, keys)) = with(id, |st| (st.cfg.clone(), st.outbox.clone(), st.agg.keys())) else {
        return;
    };
    let until = Instant::now() + cfg.flush_interval / 2;
    let slices = (keys / SLICE_KEYS + 1).min(usize::from(PARTS));
    for i in 0..slices {
        let parts = slice_bounds(i, slices)..slice_bounds(i + 1, slices);
        let Some(slice) = with(id, |st| st.agg.flush_slice(parts, ts, i == 0)) else { return };
        let Slice { graphite: out, lines, relays } = slice;
        if cfg.flush_stdout && !out.is_empty() {
            let _ = io::stdout().lock().write_all(&out);
        }
        if let Some(o) = &outbox {
            o.push(out, lines, ts);
            // Until Graphite took most of it (or cannot take it now).
            let drained = o.progress(|o| !o.is_healthy() || o.pending_bytes() <= SLICE_BACKLOG);
            let _ = shard::time::timeout_at(until, drained).await;
        }
        send_relays(id, &cfg.relays, relays).await;
    }
    with(id, |st| st.agg.stats_mut().last_flush_timestamp_seconds = unix_now());
}

fn slice_bounds(i: usize, slices: usize) -> u8 {
    // i <= slices <= PARTS, so this is at most PARTS.
    (i * usize::from(PARTS) / slices) as u8
}

async fn send_relays(id: ServiceId, addrs: &[SocketAddr], payloads: Vec<Vec<u8>>) {
    for (addr, payload) in addrs.iter().zip(payloads).filter(|(_, p)| !p.is_empty()) {
        let any: SocketAddr = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().unwrap_or(*addr);
        let socket = match UdpSocket::bind(any) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(relay = %addr, "relay socket: {e}");
                with(id, |st| st.agg.stats_mut().relay_errors += 1);
                continue;
            }
        };
        for d in relay::datagrams(&payload, RELAY_DATAGRAM) {
            let (r, _) = socket.send_to(d.to_vec(), *addr).await;
            if r.is_err() {
                with(id, |st| st.agg.stats_mut().relay_errors += 1);
            }
        }
    }
}

/// One flush of every member shard, driven from the group's first.
async fn flush_all(id: ServiceId, prefix: &str, deadline: Duration) {
    let ts = unix_now();
    let group = members(id);
    let shipped = group.broadcast(move || async move { ship_partials(id).await }, deadline).await;
    for (shard, r) in group.members().iter().zip(shipped) {
        if let Err(e) = r {
            tracing::warn!("aggregate flush, shard {shard}: {e}");
        }
    }
    let emitted = group.broadcast(move || emit(id, ts), deadline).await;
    for (shard, r) in group.members().iter().zip(emitted) {
        if let Err(e) = r {
            tracing::warn!("aggregate flush, shard {shard}: {e}");
        }
    }
    report_stats(id, prefix, ts).await;
}

/// The service's own counters as `<prefix>.aggregate.<name>` gauges (totals
/// since start), from the group's first member.
async fn report_stats(id: ServiceId, prefix: &str, ts: u64) {
    let Ok(total) = gather_stats(id).await else { return };
    let mut out = Vec::new();
    let dot = if prefix.is_empty() { "" } else { "." };
    for (name, v) in total.pairs() {
        out.extend_from_slice(format!("{prefix}{dot}aggregate.{name} {v} {ts}\n").as_bytes());
    }
    let Some((stdout, outbox)) = with(id, |st| (st.cfg.flush_stdout, st.outbox.clone())) else { return };
    if stdout {
        let _ = io::stdout().lock().write_all(&out);
    }
    if let Some(o) = outbox {
        let n = total.pairs().len() as u64;
        o.push(out, n, ts);
    }
}

/// Shard 0's flush cycle; after a stop, the final flush once every
/// receiver has drained, then the Graphite queues, then release the shards.
async fn flush_cycle(id: ServiceId) {
    let current = || with(id, |st| st.cfg.clone());
    let Some(mut cfg) = current() else { return };
    let mut ticks = shard::time::interval(cfg.flush_interval);
    ticks.tick().await;
    loop {
        if let Either::Left(()) = select(shard::stopping(), ticks.tick()).await {
            break;
        }
        let deadline = (cfg.flush_interval / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        flush_all(id, &cfg.prefix, deadline).await;
        // A reload takes effect from the next interval on.
        let Some(now) = current() else { break };
        if now.flush_interval != cfg.flush_interval {
            ticks = shard::time::interval(now.flush_interval);
            ticks.tick().await;
        }
        cfg = now;
    }
    final_flush(id, current().unwrap_or(cfg)).await;
    members(id)
        .invoke(move || async move {
            with(id, |st| {
                st.done = true;
                st.changed.notify();
            })
        })
        .await;
}

/// Waits, on every shard at once and until `until` at most, for `ready` to
/// hold of the service's state there; each shard looks again only when
/// its state says something changed.
async fn settled(id: ServiceId, until: Instant, ready: fn(&ShardState) -> bool) {
    members(id)
        .invoke(move || async move {
            let Some(shard) = id.state::<RefCell<ShardState>>() else { return };
            let changed = shard.borrow().changed.clone();
            let _ = shard::time::timeout_at(until, changed.wait_until(|| ready(&shard.borrow()))).await;
        })
        .await;
}

/// Waits, on every shard at once and until `until` at most, for the
/// shard's Graphite queue to be written out.
async fn graphite_idle(id: ServiceId, until: Instant) {
    members(id)
        .invoke(move || async move {
            let Some(outbox) = with(id, |st| st.outbox.clone()).flatten() else { return };
            let _ = shard::time::timeout_at(until, outbox.progress(|o| o.is_idle())).await;
        })
        .await;
}

/// After a stop: wait for every receiver to stop reading (they stop by
/// themselves at the receive deadline; a little slack, then the tables are
/// sealed regardless), flush once more, give Graphite the rest of the
/// grace, then report what it did not take and the final counters.
async fn final_flush(id: ServiceId, cfg: Arc<AggregateConfig>) {
    let stop_deadline = shard::stop_deadline().unwrap_or_else(|| Instant::now() + Duration::from_secs(5));
    let receivers_by = receive_deadline() + Duration::from_millis(200);
    settled(id, receivers_by, |st| st.receivers == 0).await;
    members(id).invoke(move || async move { with(id, |st| st.sealed = true) }).await;
    // The main task ends a little before the runtime's deadline: finish
    // before it, so the report below is written.
    let finish_by = stop_deadline.checked_sub(Duration::from_millis(200)).unwrap_or(stop_deadline);
    let flush_deadline = finish_by.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    flush_all(id, &cfg.prefix, flush_deadline).await;
    graphite_idle(id, finish_by).await;
    let lost =
        shard::map_reduce(
            move || async move {
                with(id, |st| st.outbox.as_ref().map(|o| o.abandon())).flatten().unwrap_or((0, 0))
            },
            (0, 0),
            |a, b| (a.0 + b.0, a.1 + b.1),
        )
        .await
        .unwrap_or((0, 0));
    if lost.0 > 0 {
        let graphite = cfg.graphite.map(|a| a.to_string()).unwrap_or_default();
        tracing::warn!(
            service = %cfg.name,
            %graphite,
            intervals = lost.0,
            lines = lost.1,
            "graphite did not take the last flush intervals before the grace period ended: they are lost \
             (raise [runtime] grace, or fix Graphite)"
        );
    }
    if let Ok(total) = gather_stats(id).await {
        let fields: Vec<String> = total.pairs().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        tracing::info!(service = %cfg.name, "aggregate stopped, final counters: {}", fields.join(" "));
    }
}

/// The aggregator core's settings for one of `shards` member shards.
fn settings_of(cfg: &AggregateConfig, shards: usize) -> Settings {
    Settings {
        max_keys: cfg.keys_per_shard(shards),
        max_idle_flushes: cfg.max_idle_flushes(),
        max_line: cfg.max_line_length,
        records: cfg.exchange == Exchange::Records,
        exact_samples: cfg.exact_samples,
        rules: cfg.rules.clone(),
        origins: cfg.origins.clone(),
        relays: cfg.relays.clone(),
        graphite: cfg.graphite.is_some() || cfg.flush_stdout,
        prometheus: cfg.prometheus.clone(),
        format: Format {
            prefix: cfg.prefix.clone(),
            percentiles: cfg.percentiles.clone(),
            interval_secs: cfg.flush_interval.as_secs_f64(),
        },
    }
}

/// Applies a reloaded configuration on every shard: outputs (Graphite,
/// relays, stdout), prefix, percentiles, flush interval and key limits.
/// Queued Graphite intervals move to a new Graphite address. Sockets,
/// buffers, the exchange and the line length need a restart (refused
/// before this runs, see `reload::reloadable`). The interval being
/// collected when the flush interval changes reports its rates over the
/// new length.
pub async fn reload(id: ServiceId, cfg: Arc<AggregateConfig>) -> Result<(), String> {
    let group = members(id);
    let results = group
        .invoke(move || {
            let cfg = cfg.clone();
            async move {
                with(id, |st| reconfigure(st, cfg))
                    .ok_or_else(|| "the aggregate service is not running".to_string())
            }
        })
        .await;
    for (shard, r) in group.members().iter().zip(results) {
        r.map_err(|e| format!("shard {shard}: {e}"))??;
    }
    Ok(())
}

/// The shards the service `id` runs on (from this shard's state: call it
/// on a member).
fn members(id: ServiceId) -> shard::Group {
    with(id, |st| st.members.clone()).unwrap_or_else(|| shard::Group::all(shard::shard_count()))
}

fn reconfigure(st: &mut ShardState, cfg: Arc<AggregateConfig>) {
    st.agg.reconfigure(settings_of(&cfg, st.members.len()));
    let queue = |c: &AggregateConfig| (c.graphite, c.graphite_queue, c.graphite_queue_bytes);
    if queue(&st.cfg) != queue(&cfg) {
        let next = cfg
            .graphite
            .map(|a| Outbox::new(a, cfg.graphite_queue, cfg.queue_bytes_per_shard(st.members.len())));
        if let Some(old) = st.outbox.take() {
            old.retire_into(next.clone());
            st.retired.push(old);
        }
        st.outbox = next;
    }
    st.cfg = cfg;
}

/// Runs the service `id` on this shard with its sockets (bound by
/// `crate::app`); returns after the final flush. Must run on every member
/// of the service's shard group (the first drives the flush cycle). Its
/// per-shard state is kept in the shard's slot for `id`, so several
/// aggregate services (on their own ports) run side by side.
pub async fn serve_shard(
    id: ServiceId,
    udp: Option<OwnedFd>,
    tcp: Option<OwnedFd>,
    cfg: Arc<AggregateConfig>,
    max_conns: usize,
) -> io::Result<()> {
    let members = cfg.group.clone().unwrap_or_else(|| shard::Group::all(shard::shard_count()));
    let me = members.index_of(shard::shard_id()).ok_or_else(|| io::Error::other("not a member shard"))?;
    let shards = members.len();
    let leader = me == 0;
    let state = ShardState {
        cfg: cfg.clone(),
        members,
        agg: Aggregator::new(me, shards, settings_of(&cfg, shards)),
        outbox: cfg.graphite.map(|a| Outbox::new(a, cfg.graphite_queue, cfg.queue_bytes_per_shard(shards))),
        retired: Vec::new(),
        receivers: 0,
        sealed: false,
        changed: Rc::default(),
        done: false,
        shipping: Vec::new(),
        xdp: cfg.xdp.clone(),
        xdp_receivers: Vec::new(),
        drop_probe: None,
        kernel_drops_closed: 0,
        _unix: (cfg.unix.clone(), cfg.unix_stream.clone()),
    };
    id.install(Rc::new(RefCell::new(state)));
    let records = cfg.exchange == Exchange::Records;
    let mut tasks = Vec::new();
    if let Some(fd) = udp {
        tasks.push(shard::spawn_local_named(
            "statsd-udp",
            recv_udp(id, fd, cfg.udp_buffers, cfg.max_datagram + RecvMsgOut::PAYLOAD_OFFSET, records),
        ));
    }
    if let Some(att) = &cfg.xdp {
        for backend in super::xdp::bind_shard(att, me, shards).await {
            with(id, |st| st.xdp_receivers.push(backend.counters()));
            tasks.push(shard::spawn_local_named("statsd-xdp", recv_xdp(id, backend, att.clone(), records)));
        }
    }
    if let Some(unix) = &cfg.unix {
        let origin = cfg.origin_detection;
        let max = cfg.max_datagram;
        tasks
            .push(shard::spawn_local_named("statsd-unix", recv_unix(id, unix.clone(), max, records, origin)));
    }
    if let Some(listener) = &cfg.unix_stream {
        let accept = streams::accept_unix_stream(id, listener.for_shard()?, cfg.clone(), max_conns);
        tasks.push(shard::spawn_local_named("statsd-unix-accept", accept));
    }
    if let Some(fd) = tcp {
        let accept = streams::accept_tcp(id, fd, cfg.max_line_length, records, max_conns);
        tasks.push(shard::spawn_local_named("statsd-accept", accept));
    }
    // The group's first member drives the flush cycle.
    let cycle = leader.then(|| shard::spawn_local_named("aggregate-flush", flush_cycle(id)));
    let mut result = Ok(());
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(io::Error::other(format!("receiver: {e}"))),
        }
    }
    if let Some(c) = cycle {
        let _ = c.await;
    }
    if let Some(shard) = id.state::<RefCell<ShardState>>() {
        let changed = shard.borrow().changed.clone();
        changed.wait_until(|| shard.borrow().done).await;
    }
    result
}
