//! `forward`: an L4 TCP load balancer (the job of HAProxy `mode tcp`).
//!
//! Each shard accepts on its own `SO_REUSEPORT` listener and serves every
//! connection it accepted end to end: pick an upstream with its own
//! balancer view (no shared locks), connect with a timeout (trying other
//! upstreams on failure), optionally announce the client with a PROXY
//! header, then relay both directions until both halves are closed.
//!
//! Shared-nothing throughout: the global `--max-conns` and per-upstream
//! limits are split between shards; each upstream is health-checked by
//! exactly one shard, which broadcasts state changes to all; passive
//! ejection (consecutive failed connects) is each shard's own view.
//!
//! The decisions are sans-IO and tested without sockets: `balance` and
//! `maglev` (policies), `health` (rise/fall, ejection), `limits`, `upstream`
//! (the `--upstream` syntax); this file and `relay` do the I/O.

mod metrics;
pub mod proxy_header;
pub mod relay;
mod runtime;
pub mod sni;
mod state;
pub mod stats;
pub mod udp;

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netstack::tcp::{TcpListener, TcpStream};

use ops::metrics::Exposition;

use super::{Descriptors, Listen, Local, Service, ServiceId, UpstreamChange};
use stats::{ForwardStats, UpstreamStats, CONNECT_BUCKETS_US};

use cores::pool::balance::Policy;
use cores::pool::health::HealthConfig;
use cores::pool::upstream::UpstreamSpec;
use relay::Ended;
use state::{ShardState, UpstreamRef};

/// A validated forward configuration, shared read-only by all shards.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// The service's name (logs, metrics, reloads).
    pub name: String,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The pool: literal addresses, and the current addresses of `names`.
    pub upstreams: Vec<UpstreamSpec>,
    /// Upstreams given by name, re-resolved on their TTL (`crate::app::resolve`).
    pub names: Vec<cores::pool::upstream::DnsName>,
    /// Routes by TLS server name to pools of `upstreams`, if any.
    pub sni: Option<sni::SniConfig>,
    /// How to pick an upstream.
    pub policy: Policy,
    /// Connect timeout per attempt.
    pub connect_timeout: Duration,
    /// Close after this long without traffic.
    pub idle_timeout: Duration,
    /// Connections at most, across all shards.
    pub max_conns: u32,
    /// Other upstreams to try after a failed connect.
    pub retries: u32,
    /// PROXY header to send upstream.
    pub proxy_protocol: Option<proxy_header::Version>,
    /// Read a PROXY header from clients.
    pub accept_proxy: bool,
    /// How long a client may take to send its PROXY header.
    pub proxy_header_timeout: Duration,
    /// Active checks (None: disabled) and passive ejection.
    pub health: Option<HealthConfig>,
    /// What an active check sends and expects after connecting.
    pub exchange: cores::pool::check::Exchange,
    /// Passive ejection settings when active checks are off.
    pub passive: HealthConfig,
    /// Relay buffers per shard.
    pub buffers: u16,
    /// Relay buffer size.
    pub buffer_size: usize,
    /// Forward UDP datagrams (sessions per client) instead of TCP.
    pub udp: bool,
    /// The shards it runs on (`None`: every shard).
    pub group: Option<shard::Group>,
    /// Per-client limits (TCP), if any: the listening group is then
    /// steered by client address, so each client's connections meet one
    /// shard's table.
    pub clients: Option<cores::pool::clients::ClientPolicy>,
}

/// This shard's state of the forward service `id`.
fn instance(id: ServiceId) -> Option<Rc<ShardState>> {
    id.state::<ShardState>()
}

/// Serves the forward service `id` on this shard's `listener` until the
/// runtime stops and the connections have finished (the runtime's grace
/// period bounds the wait).
pub async fn serve(id: ServiceId, listener: OwnedFd, cfg: Arc<ForwardConfig>) -> io::Result<()> {
    let state = ShardState::new(id, &cfg)?;
    id.install(state.clone());
    state.start_health_checks();
    if cfg.udp {
        return udp::serve(listener, state).await;
    }
    let listener = TcpListener::from_fd(listener)?;
    let drain = crate::services::accept::Drain::default();
    crate::services::accept::accept_until_stopped(listener, |conn| {
        state.count(|s| s.accepted += 1);
        if !state.try_admit() {
            state.count(|s| s.refused_over_limit += 1);
            let _ = conn.set_reset_on_close();
            return;
        }
        // Only with per-client limits: a getpeername per connection otherwise.
        let peer = if state.limits_clients() { conn.peer_addr().ok() } else { None };
        if !state.admit_client(peer) {
            state.leave();
            let _ = conn.set_reset_on_close();
            return;
        }
        let (state, open) = (state.clone(), drain.enter());
        shard::spawn_local_named("forward-conn", async move {
            handle(&state, conn, peer).await;
            state.leave_client(peer);
            state.leave();
            drop(open);
        })
        .detach();
    })
    .await;
    drain.finished().await;
    Ok(())
}

/// One client connection, end to end; `known` is its address when the
/// accept already asked for it.
async fn handle(state: &ShardState, client: TcpStream, known: Option<SocketAddr>) {
    // TCP_NODELAY comes from the listener (netstack::steer::ListenOptions).
    let cfg = state.cfg();
    let (peer, dest, early) = if cfg.accept_proxy {
        match proxy_header::read_inbound(&client, cfg.proxy_header_timeout).await {
            Ok(inbound) => (inbound.client.or_else(|| client.peer_addr().ok()), inbound.dest, inbound.rest),
            Err(e) => {
                if e.kind() == io::ErrorKind::TimedOut {
                    state.count(|s| s.proxy_header_timeouts += 1);
                } else {
                    state.count(|s| s.bad_proxy_headers += 1);
                }
                tracing::debug!("inbound PROXY header: {e}");
                return;
            }
        }
    } else {
        // A getpeername per connection only when something uses it.
        let wanted = cfg.policy.uses_client() || cfg.proxy_protocol.is_some();
        let peer = known.or_else(|| if wanted { client.peer_addr().ok() } else { None });
        (peer, None, Vec::new())
    };
    let (pool, early) = match &cfg.sni {
        None => (0, early),
        Some(sni) => match route(state, sni, &client, early).await {
            Some(routed) => routed,
            None => return,
        },
    };
    let Some((u, upstream)) = connect(state, &cfg, peer, pool).await else {
        state.count(|s| s.refused_no_upstream += 1);
        let _ = client.set_reset_on_close();
        return;
    };
    let mut preamble = Vec::new();
    if let (Some(version), Some(peer)) = (cfg.proxy_protocol, peer) {
        // The destination the client's own header named, if any: a chain
        // of proxies keeps the original one.
        let local = dest.unwrap_or_else(|| client.local_addr().unwrap_or(cfg.listen));
        preamble = proxy_header::encode(version, peer, local);
    }
    preamble.extend_from_slice(&early);
    let (ended, moved) = if preamble.is_empty() || upstream.send_all(preamble).await.0.is_ok() {
        relay::relay(&client, &upstream, &state.buffers, cfg.idle_timeout).await
    } else {
        (Ended::Error, relay::Moved::default())
    };
    state.count_upstream(&u, |s| {
        s.active = s.active.saturating_sub(1);
        s.bytes_up += moved.up;
        s.bytes_down += moved.down;
    });
    state.count(|s| {
        s.bytes_up += moved.up;
        s.bytes_down += moved.down;
        s.slow_reader_sends += moved.waited;
        match ended {
            Ended::Closed => {}
            Ended::Idle => s.idle_closed += 1,
            Ended::Reset | Ended::Error => s.resets += 1,
        }
    });
    state.release(&u);
}

/// Reads the ClientHello and picks the pool by its server name, counting
/// the outcome: the pool and the bytes read, or `None` when the client is
/// refused (reset) or gone.
async fn route(
    state: &ShardState,
    sni: &sni::SniConfig,
    client: &TcpStream,
    early: Vec<u8>,
) -> Option<(usize, Vec<u8>)> {
    let (hello, read) = match sni::read_hello(client, early, sni.hello_timeout).await {
        Ok(r) => r,
        Err(e) => {
            if e.kind() == io::ErrorKind::TimedOut {
                state.count(|s| s.client_hello_timeouts += 1);
                let _ = client.set_reset_on_close();
            }
            tracing::debug!("ClientHello: {e}");
            return None;
        }
    };
    let decision = sni::decide(sni, &hello);
    state.count(|s| match (&hello, decision) {
        (_, sni::Decision::Route(_)) => s.sni_routed += 1,
        (_, sni::Decision::Unmatched) => s.sni_unmatched += 1,
        (cores::sni::Hello::NoName, _) => s.sni_missing += 1,
        _ => s.sni_malformed += 1,
    });
    match decision.pool() {
        Some(pool) => Some((pool, read)),
        None => {
            state.count(|s| s.refused_sni += 1);
            let _ = client.set_reset_on_close();
            None
        }
    }
}

/// Connects to an upstream of pool `pool`, trying up to `retries` others
/// after failures.
async fn connect(
    state: &ShardState,
    cfg: &ForwardConfig,
    client: Option<SocketAddr>,
    pool: usize,
) -> Option<(UpstreamRef, TcpStream)> {
    let mut tried = Vec::new();
    for attempt in 0..=cfg.retries {
        let u = state.pick(client, &tried, pool)?;
        tried.push(u.addr);
        if attempt > 0 {
            state.count(|s| s.retries += 1);
        }
        let started = Instant::now();
        match TcpStream::connect_nodelay_timeout(u.addr, cfg.connect_timeout).await {
            Ok(conn) => {
                let took = started.elapsed();
                let bucket = stats::bucket(took);
                state.count_upstream(&u, |s| {
                    s.active += 1;
                    s.total += 1;
                    s.connect_time[bucket] += 1;
                    s.connect_time_sum_us += took.as_micros() as u64;
                });
                state.connect_result(&u, true);
                return Some((u, conn));
            }
            Err(e) if is_local(&e) => {
                // Our shortage, not the upstream's failure: neither its
                // error count nor its health hears of it.
                ops::warn_limited!(service = %cfg.name, upstream = %u.addr, "connect: {e} (on our side)");
                state.count(|s| s.local_connect_errors += 1);
                state.release(&u);
                return None;
            }
            Err(e) => {
                tracing::debug!(service = %cfg.name, upstream = %u.addr, "connect: {e}");
                state.count_upstream(&u, |s| s.connect_errors += 1);
                state.connect_result(&u, false);
                state.release(&u);
            }
        }
    }
    None
}

/// Whether a failed connect failed on our side (out of descriptors, local
/// ports or kernel memory) rather than at the upstream.
pub(crate) fn is_local(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// Applies a reloaded configuration of the service `id` on every shard
/// (established connections keep going).
pub async fn reload(id: ServiceId, cfg: Arc<ForwardConfig>) -> Result<(), String> {
    let members = state::members_of(&cfg);
    let results = members
        .invoke(move || {
            let cfg = cfg.clone();
            async move {
                match instance(id) {
                    Some(state) => {
                        state.reload(&cfg);
                        Ok(())
                    }
                    None => Err(format!("forward service {:?} is not running", cfg.name)),
                }
            }
        })
        .await;
    for (shard, r) in members.members().iter().zip(results) {
        r.map_err(|e| format!("shard {shard}: {e}"))??;
    }
    Ok(())
}

/// The service `id`'s counters, one entry per shard (index = shard).
pub async fn gather_per_shard(id: ServiceId) -> Result<Vec<stats::ForwardStats>, shard::SubmitError> {
    let per_shard = shard::map_reduce(
        move || async move { (shard::shard_id(), instance(id).map(|s| s.snapshot()).unwrap_or_default()) },
        Vec::new(),
        |mut acc, item| {
            acc.push(item);
            acc
        },
    )
    .await?;
    let mut out = vec![stats::ForwardStats::default(); per_shard.len()];
    for (shard, s) in per_shard {
        if let Some(slot) = out.get_mut(shard) {
            *slot = s;
        }
    }
    Ok(out)
}

/// The service `name`'s counters summed over shards (upstream `up` is 1
/// when any shard sees it eligible).
pub async fn gather_stats(id: ServiceId) -> Result<stats::ForwardStats, shard::SubmitError> {
    let per_shard = gather_per_shard(id).await?;
    Ok(per_shard.iter().fold(stats::ForwardStats::default(), |mut acc, s| {
        acc.merge(s);
        acc
    }))
}

impl crate::services::Service for ForwardConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn group(&self) -> Option<&shard::Group> {
        self.group.as_ref()
    }

    fn kind(&self) -> &'static str {
        "forward"
    }

    fn listens(&self) -> Vec<Listen> {
        let by_client = self.clients.map(|c| (c.v4_prefix, c.v6_prefix));
        vec![Listen { addr: self.listen, udp: self.udp, recv_buffer: None, by_client }]
    }

    fn descriptors(&self) -> Descriptors {
        // A relayed connection is the client's socket and the upstream's; a
        // UDP session is its upstream socket. One health check per upstream.
        Descriptors {
            per_conn: if self.udp { 1 } else { 2 },
            limit: Some(u64::from(self.max_conns)),
            reserve_per_shard: 0,
            reserve: self.upstreams.len() as u64,
        }
    }

    fn limited_to(&self, conns: u64) -> Option<Arc<dyn Service>> {
        let max_conns = u32::try_from(conns).unwrap_or(u32::MAX).max(1);
        Some(Arc::new(ForwardConfig { max_conns, ..self.clone() }))
    }

    fn serve(
        self: Arc<Self>,
        id: ServiceId,
        sockets: Vec<OwnedFd>,
        _: usize,
    ) -> Local<'static, io::Result<()>> {
        Box::pin(async move {
            let listener = sockets.into_iter().next().ok_or_else(|| io::Error::other("listener missing"))?;
            serve(id, listener, self).await
        })
    }

    fn restart_needed(&self, new: &dyn Service) -> Option<String> {
        let new = new.as_any().downcast_ref::<ForwardConfig>()?;
        let fixed = |c: &ForwardConfig| (c.buffers, c.buffer_size, c.accept_proxy);
        (fixed(self) != fixed(new)).then(|| "buffers, buffer_size or accept_proxy".to_string())
    }

    fn reload(&self, id: ServiceId, new: Arc<dyn Service>) -> Local<'static, Result<(), String>> {
        Box::pin(async move {
            let cfg = (*new).as_any().downcast_ref::<ForwardConfig>().ok_or("not a forward service")?;
            for u in &cfg.upstreams {
                tracing::info!(service = %cfg.name, upstream = %u, "pool member");
            }
            reload(id, Arc::new(cfg.clone())).await
        })
    }

    fn metrics<'a>(
        &'a self,
        id: ServiceId,
        e: &'a mut Exposition,
    ) -> Local<'a, Result<(), shard::SubmitError>> {
        Box::pin(async move {
            let per_shard = gather_per_shard(id).await?;
            metrics::service(e, &self.name, &per_shard);
            let names: Vec<&str> = self.upstreams.iter().map(|u| u.name.as_str()).collect();
            metrics::upstreams(e, &self.name, &names, &per_shard);
            metrics::admin_states(e, &self.name, &self.upstreams);
            Ok(())
        })
    }

    fn status(&self, id: ServiceId) -> Local<'static, Result<serde_json::Value, shard::SubmitError>> {
        let cfg = self.clone();
        Box::pin(async move {
            let stats = gather_stats(id).await?;
            let upstreams: Vec<_> = cfg
                .upstreams
                .iter()
                .zip(stats.upstreams.iter().chain(std::iter::repeat(&Default::default())))
                .map(|(spec, s)| {
                    let ms = |q| {
                        crate::services::counters::bucket_quantile(&CONNECT_BUCKETS_US, &s.connect_time, q)
                            .map(|us| us as f64 / 1000.0)
                    };
                    serde_json::json!({
                        "name": spec.name, "addr": spec.addr.to_string(), "weight": spec.weight,
                        "state": runtime::state_of(spec), "max_conns": spec.max_conns,
                        "up": s.up == 1, "active": s.active, "connections": s.total,
                        "connect_errors": s.connect_errors,
                        "counters": crate::services::counters::as_json(UpstreamStats::FIELDS, &s.values()),
                        "connect_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99)},
                    })
                })
                .collect();
            Ok(serde_json::json!({
                "transport": if cfg.udp { "udp" } else { "tcp" },
                "balance": cfg.policy.as_str(),
                "chart": "accepted",
                "active": stats.active,
                "accepted": stats.accepted,
                "counters": crate::services::counters::as_json(ForwardStats::FIELDS, &stats.values()),
                "upstreams": upstreams,
            }))
        })
    }

    fn dns_names(&self) -> &[cores::pool::upstream::DnsName] {
        &self.names
    }

    fn change_upstreams(&self, change: &UpstreamChange) -> Option<Result<Arc<dyn Service>, String>> {
        Some(self.changed(change).map(|c| Arc::new(c) as Arc<dyn Service>))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::is_local;
    use std::io;

    /// Failures on our side are told apart from the upstream's, so they
    /// are never held against its health.
    #[test]
    fn local_failures_are_not_the_upstreams() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM, libc::EADDRNOTAVAIL] {
            assert!(is_local(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        for errno in [libc::ECONNREFUSED, libc::ETIMEDOUT, libc::EHOSTUNREACH, libc::ECONNRESET] {
            assert!(!is_local(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
    }
}
