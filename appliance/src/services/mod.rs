//! The services: I/O shells around the protocol cores (`cores`), each run
//! on every shard by the runner (`crate::app`), which drives them through
//! one small trait, [`Service`]: where a service listens, what it needs of
//! the descriptor budget, serving a shard, whether and how a new
//! configuration reloads it, its metrics and its status. Adding a service
//! means implementing it; nothing in the runner matches on kinds.
//!
//! - [`echo`]: a TCP echo service (the bundled upstream for demos, tests
//!   and benchmarks);
//! - [`forward`]: the L4 load balancer;
//! - [`aggregate`]: the statsd / DogStatsD aggregator;
//! - [`accept`]: accepting and draining, shared by the three;
//! - `counters`: writing their counter sets into the metrics exposition.

pub mod accept;
pub mod aggregate;
pub(crate) mod counters;
pub mod echo;
pub mod forward;

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use ops::metrics::Exposition;

/// A future that stays on its shard.
pub type Local<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// One listener group of a service: an address, bound once per shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// Where.
    pub addr: SocketAddr,
    /// UDP (else TCP).
    pub udp: bool,
    /// `SO_RCVBUF` for its sockets, when the service wants one.
    pub recv_buffer: Option<usize>,
    /// Steer the group by client address (IPv4 and IPv6 prefix bits), so
    /// one client always reaches one shard (per-client limits).
    pub by_client: Option<(u8, u8)>,
}

/// What a service asks of the process's descriptors (`crate::app::fds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Descriptors {
    /// Descriptors one connection (or session) takes; 0: it takes none.
    pub per_conn: u64,
    /// Its own connection limit, across shards (`None`: none of its own).
    pub limit: Option<u64>,
    /// Descriptors it keeps open besides connections and listeners, per
    /// shard (Graphite and relay sockets) and in all (health checks).
    pub reserve_per_shard: u64,
    /// See `reserve_per_shard`.
    pub reserve: u64,
}

/// A setting that cannot work with the runtime it is to run on: the field
/// (snake_case key) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// A run-time change to a service's upstreams (the admin endpoint's API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamChange {
    /// A new upstream.
    Add(cores::pool::upstream::UpstreamSpec),
    /// A new weight or state for the upstream named so.
    Set {
        /// Its name (`HOST:PORT` as configured).
        upstream: String,
        /// The new weight, if any.
        weight: Option<u32>,
        /// The new state, if any.
        state: Option<cores::pool::upstream::AdminState>,
    },
    /// The upstream named so leaves the pool (its connections finish).
    Remove(String),
    /// A name's new answer: its upstreams become these addresses' (those
    /// that stay keep their weight and state).
    Resolved {
        /// The name's `HOST:PORT`.
        name: String,
        /// Its addresses now.
        addrs: Vec<std::net::IpAddr>,
    },
}

/// A service as the runner drives it. One value per configured service,
/// shared by every shard (settings only: per-shard state lives in the
/// shard's slot for the service's [`ServiceId`]).
pub trait Service: std::fmt::Debug + Send + Sync + 'static {
    /// Its name (logs, metrics, reloads).
    fn name(&self) -> &str;
    /// Its kind (`forward`, ...).
    fn kind(&self) -> &'static str;
    /// Its listener groups, in the order `serve` takes their sockets.
    fn listens(&self) -> Vec<Listen>;
    /// The shards it runs on (`None`: every shard).
    fn group(&self) -> Option<&shard::Group>;
    /// The shards it runs on, in a runtime of `count` shards.
    fn members(&self, count: usize) -> shard::Group {
        self.group().cloned().unwrap_or_else(|| shard::Group::all(count))
    }
    /// Settings that depend on the shard count.
    fn check_for_shards(&self, _shards: usize) -> Result<(), SettingError> {
        Ok(())
    }
    /// What it needs of the descriptor budget.
    fn descriptors(&self) -> Descriptors;
    /// A copy whose own connection limit is `conns`, when the budget
    /// cannot give it what it asks (`None`: it has no limit of its own).
    fn limited_to(&self, _conns: u64) -> Option<Arc<dyn Service>> {
        None
    }
    /// Sets up what it needs besides its listeners before the shards start,
    /// given where those were bound (`listens()` order, ports resolved):
    /// the service carrying it, or `None` when there is nothing to set up.
    /// An aggregator on AF_XDP attaches its XDP program here.
    ///
    /// `inherit(path)` gives the Unix socket bound at `path` that a binary
    /// upgrade handed over, if any: a service binding one takes it instead.
    fn prepare(
        &self,
        _bound: &[SocketAddr],
        _inherit: &mut dyn FnMut(&std::path::Path) -> Option<OwnedFd>,
    ) -> Result<Option<Arc<dyn Service>>, String> {
        Ok(None)
    }
    /// Copies of the sockets it bound in `prepare` (Unix sockets), offered
    /// to a successor on a binary upgrade.
    fn prepared_sockets(&self) -> Vec<OwnedFd> {
        Vec::new()
    }
    /// Serves one shard with that shard's socket of each listener group,
    /// at most `conn_limit` connections at once where it has no limit of
    /// its own; ends once drained after a stop.
    fn serve(
        self: Arc<Self>,
        id: ServiceId,
        sockets: Vec<OwnedFd>,
        conn_limit: usize,
    ) -> Local<'static, std::io::Result<()>>;
    /// What `new` (of the same name) changes that a reload cannot: `None`
    /// when it can be reloaded.
    fn restart_needed(&self, new: &dyn Service) -> Option<String>;
    /// Applies `new` on every shard (checked by `restart_needed`).
    fn reload(&self, _id: ServiceId, _new: Arc<dyn Service>) -> Local<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    /// Writes its metrics.
    fn metrics<'a>(
        &'a self,
        _id: ServiceId,
        _e: &'a mut Exposition,
    ) -> Local<'a, Result<(), shard::SubmitError>> {
        Box::pin(async { Ok(()) })
    }
    /// Its own exposition, served at `/metrics/<name>` (an aggregate's
    /// series), if it keeps one.
    fn exposition(&self, _id: ServiceId) -> Option<Local<'static, Result<String, shard::SubmitError>>> {
        None
    }
    /// Its part of `/status` beyond name, kind and listeners.
    fn status(&self, _id: ServiceId) -> Local<'static, Result<serde_json::Value, shard::SubmitError>> {
        Box::pin(async { Ok(serde_json::json!({})) })
    }
    /// A copy with `change` applied to its upstreams, for the runner to
    /// apply as a reload (`None`: this kind has no upstreams).
    fn change_upstreams(&self, _change: &UpstreamChange) -> Option<Result<Arc<dyn Service>, String>> {
        None
    }
    /// Its upstreams given by name, to re-resolve on their TTL.
    fn dns_names(&self) -> &[cores::pool::upstream::DnsName] {
        &[]
    }
    /// For `restart_needed` and `reload` to see the other value's type.
    fn as_any(&self) -> &dyn Any;
}

/// `f()` on every shard, indexed by shard.
pub(crate) async fn on_every_shard<T: Send + 'static>(
    f: impl Fn() -> T + Clone + Send + 'static,
) -> Result<Vec<T>, shard::SubmitError> {
    let mut all = shard::map_reduce(
        move || {
            let f = f.clone();
            async move { (shard::shard_id(), f()) }
        },
        Vec::new(),
        |mut acc, x| {
            acc.push(x);
            acc
        },
    )
    .await?;
    all.sort_by_key(|(shard, _)| *shard);
    Ok(all.into_iter().map(|(_, v)| v).collect())
}

/// Which service of the running configuration a per-shard state belongs
/// to. The runner assigns it (the service's position in the
/// configuration, which a reload cannot change) and hands it to the
/// service, whose per-shard state is kept under it in the shard's slots
/// (`shard::slots`): cross-shard work (a reload, a scrape, a health
/// broadcast, a flush) carries the id and finds the state on the shard it
/// runs on. No service keeps a thread-local singleton, so a process can run
/// several instances of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceId(pub u64);

impl ServiceId {
    /// Keeps `state` as this service's state on the current shard.
    pub fn install<T: 'static>(self, state: Rc<T>) {
        shard::slots::put(self.0, state);
    }

    /// This service's state on the current shard, if it runs here.
    pub fn state<T: 'static>(self) -> Option<Rc<T>> {
        shard::slots::get(self.0)
    }

    /// Forgets this service's state on the current shard.
    pub fn uninstall(self) {
        shard::slots::remove(self.0);
    }
}
