//! The running appliance's shared state: its configuration in force, where
//! it listens, its placement, readiness and reload outcomes. Shared by the
//! main thread, the signal thread and shard 0 (the admin endpoint and the
//! reload task); never touched on a hot path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::config::AppConfig;

/// The running appliance, as the admin endpoint and reloads see it.
#[derive(Debug)]
pub struct App {
    /// When the appliance started.
    pub started: Instant,
    /// Where SIGHUP reads the configuration again.
    pub source: ConfigSource,
    /// Shard placement.
    pub placement: Vec<shard::placement::ShardPlacement>,
    /// Where every service listens.
    pub listening: Vec<crate::app::Listening>,
    /// Where the admin endpoint listens.
    pub admin_addr: Option<SocketAddr>,
    /// The listening sockets offered to a successor (binary upgrades).
    pub offer: Offer,
    /// The process this one took over from, if started with `--upgrade`.
    pub upgraded_from: Option<u32>,
    /// What re-resolving upstream names found.
    pub dns: DnsStatus,
    serving: AtomicUsize,
    config: Mutex<AppConfig>,
    reloads: Mutex<ReloadStatus>,
    failure: Mutex<Option<String>>,
}

/// Where the configuration came from, and so what SIGHUP reads again.
pub enum ConfigSource {
    /// The file given with `--config`.
    File(PathBuf),
    /// A service's command-line flags, validated again on SIGHUP, which
    /// reads the files they name (a mapping file, say) again.
    Flags(Box<dyn Fn() -> Result<AppConfig, String> + Send + Sync>),
    /// The embedded default: nothing to read again.
    Embedded,
}

impl ConfigSource {
    /// How `/status` names it.
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Flags(_) => "command-line flags".into(),
            ConfigSource::Embedded => "embedded default".into(),
        }
    }
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Outcome of SIGHUP reloads.
#[derive(Debug, Default, Clone)]
pub struct ReloadStatus {
    /// Reloads applied.
    pub ok: u64,
    /// Reloads refused (invalid file, or a change that needs a restart).
    pub failed: u64,
    /// Why the last refused reload was refused.
    pub last_error: Option<String>,
}

impl App {
    /// The shared state of a starting appliance.
    pub fn new(
        config: AppConfig,
        source: ConfigSource,
        plan: &shard::placement::Plan,
        listening: Vec<crate::app::Listening>,
        admin_addr: Option<SocketAddr>,
        offer: Offer,
        upgraded_from: Option<u32>,
    ) -> Arc<App> {
        Arc::new(App {
            started: Instant::now(),
            source,
            placement: plan.shards.clone(),
            listening,
            admin_addr,
            offer,
            upgraded_from,
            dns: Default::default(),
            serving: AtomicUsize::new(0),
            config: Mutex::new(config),
            reloads: Mutex::default(),
            failure: Mutex::default(),
        })
    }

    /// A shard has started all its services.
    pub fn shard_serving(&self) {
        self.serving.fetch_add(1, Ordering::SeqCst);
    }

    /// Every shard serves and the appliance is not draining.
    pub fn ready(&self) -> bool {
        self.all_serving() && !shard::is_stopping()
    }

    /// Every shard has started its services (from any thread).
    pub fn all_serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst) == self.placement.len()
    }

    /// The configuration in force.
    pub fn config(&self) -> MutexGuard<'_, AppConfig> {
        self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the process must exit with an error once drained (an upgrade
    /// that failed after this process started serving).
    pub fn failure(&self) -> MutexGuard<'_, Option<String>> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reload bookkeeping.
    pub fn reloads(&self) -> MutexGuard<'_, ReloadStatus> {
        self.reloads.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The listening sockets this process offers to a successor: a copy
/// (`dup`) of each, so the sockets outlive this process's own listeners.
/// Withdrawn (the copies closed) when the process starts to drain, so that
/// after a plain SIGTERM its listeners really close and new connections are
/// refused at once.
#[derive(Debug)]
pub struct Offer {
    /// `None` once withdrawn.
    groups: Mutex<Option<Vec<Offered>>>,
    handed_over: AtomicBool,
    /// Wakes shard 0's admin task to stop accepting (the successor takes
    /// the admin listener), and whether it has.
    admin_stop: Mutex<Option<std::os::unix::net::UnixStream>>,
    admin_closed: AtomicBool,
}

impl Offer {
    /// An offer, empty; `enabled` false (no upgrade socket): nothing is
    /// ever kept.
    pub fn new(enabled: bool) -> Offer {
        Offer {
            groups: Mutex::new(enabled.then(Vec::new)),
            handed_over: AtomicBool::new(false),
            admin_stop: Mutex::new(None),
            admin_closed: AtomicBool::new(false),
        }
    }

    /// Keeps a copy of a group's sockets, described by `what` in logs.
    pub fn add(&self, what: String, fds: &[OwnedFd]) -> std::io::Result<()> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(groups) = groups.as_mut() {
            let copies = fds.iter().map(OwnedFd::try_clone).collect::<std::io::Result<Vec<_>>>()?;
            groups.push((what, copies));
        }
        Ok(())
    }

    /// Closes the copies: nothing is offered any more.
    pub fn withdraw(&self) {
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// The groups offered (`None` once withdrawn), locked.
    pub fn groups(&self) -> MutexGuard<'_, Option<Vec<Offered>>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A successor took over.
    pub fn hand_over(&self) {
        self.handed_over.store(true, Ordering::SeqCst);
    }

    /// The end the admin task watches: written once, when a successor
    /// takes over, so that this process stops accepting admin requests
    /// while its shards still answer them.
    pub fn admin_stop_signal(&self) -> std::io::Result<OwnedFd> {
        let (rx, tx) = std::os::unix::net::UnixStream::pair()?;
        *self.admin_stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        Ok(OwnedFd::from(rx))
    }

    /// The admin task has stopped accepting.
    pub fn admin_closed(&self) {
        self.admin_closed.store(true, Ordering::SeqCst);
    }

    /// Has the admin task stop accepting, and waits (up to `limit`) until it
    /// has: the successor then answers every admin request. Returns at
    /// once without an admin endpoint.
    pub fn close_admin(&self, limit: std::time::Duration) {
        use std::io::Write as _;
        let Some(mut tx) = self.admin_stop.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        if tx.write_all(&[1]).is_err() {
            return;
        }
        let deadline = std::time::Instant::now() + limit;
        while !self.admin_closed.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Whether a successor took over (so this process must not speak for
    /// the service to systemd, nor serve the admin endpoint, any more).
    pub fn handed_over(&self) -> bool {
        self.handed_over.load(Ordering::SeqCst)
    }
}

/// One offered group: what it is (for logs), copies of its sockets.
pub type Offered = (String, Vec<OwnedFd>);

/// What the thread knows of one name, for `/status` and `/metrics`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NameStatus {
    /// The addresses of the last answer that was applied.
    pub addresses: Vec<String>,
    /// Lookups that answered.
    pub lookups_ok: u64,
    /// Lookups that failed or answered no address (the last answer stays).
    pub lookups_failed: u64,
    /// Answers that changed the pool.
    pub changes: u64,
    /// Why the last failed lookup failed.
    pub last_error: Option<String>,
}

/// Every name's status, by (service, `HOST:PORT`).
#[derive(Debug, Default)]
pub struct DnsStatus(Mutex<BTreeMap<(String, String), NameStatus>>);

impl DnsStatus {
    /// The table.
    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, String), NameStatus>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
