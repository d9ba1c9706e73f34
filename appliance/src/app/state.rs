//! The running appliance's shared state: its configuration in force, where
//! it listens, its placement, readiness and reload outcomes. Shared by the
//! main thread, the signal thread and shard 0 (the admin endpoint and the
//! reload task); never touched on a hot path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::config::AppConfig;

/// The running appliance, as the admin endpoint and reloads see it.
#[derive(Debug)]
pub struct App {
    /// When the appliance started.
    pub started: Instant,
    /// The config file SIGHUP re-reads (None: the embedded default or flags).
    pub path: Option<PathBuf>,
    /// Shard placement.
    pub placement: Vec<shard::placement::ShardPlacement>,
    /// Where every service listens.
    pub listening: Vec<crate::app::Listening>,
    /// Where the admin endpoint listens.
    pub admin_addr: Option<SocketAddr>,
    /// The listening sockets offered to a successor (binary upgrades).
    pub offer: crate::app::upgrade::Offer,
    /// The process this one took over from, if started with `--upgrade`.
    pub upgraded_from: Option<u32>,
    /// What re-resolving upstream names found.
    pub dns: crate::app::resolve::DnsStatus,
    serving: AtomicUsize,
    config: Mutex<AppConfig>,
    reloads: Mutex<ReloadStatus>,
    failure: Mutex<Option<String>>,
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
        path: Option<PathBuf>,
        plan: &shard::placement::Plan,
        listening: Vec<crate::app::Listening>,
        admin_addr: Option<SocketAddr>,
        offer: crate::app::upgrade::Offer,
        upgraded_from: Option<u32>,
    ) -> Arc<App> {
        Arc::new(App {
            started: Instant::now(),
            path,
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
