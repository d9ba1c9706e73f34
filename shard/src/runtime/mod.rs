//! Starting, running and stopping the shards.
//!
//! [`Builder`] plans the placement; [`Runtime::run`] starts one thread per
//! shard (pinned, memory bound to its node), wires the mesh, runs the main
//! future on shard 0 and, when it completes (or [`RuntimeHandle::stop`] is
//! called, or a shard fails), stops every shard: tasks get a grace period
//! to finish, then are cancelled, in-flight I/O is cancelled and awaited,
//! and the first fatal error is returned.

pub mod api;
pub mod group;
mod shard_loop;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use thiserror::Error;

use crate::executor::Home;

/// [`Runtime::shared_state`]: what the shards share, their mesh endpoints,
/// and the eventfds.
type SharedState = (Arc<Shared>, Vec<mesh::Endpoint>, Vec<std::os::fd::OwnedFd>);
use crate::mesh::{self, mail::Mailbox, MeshShared, WakeMode};
use crate::placement::{self, PlacementError, PlacementOptions, Plan};

/// Why the runtime failed.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The placement plan could not be made.
    #[error("placement: {0}")]
    Placement(#[from] PlacementError),
    /// A shard could not set up its io_uring.
    #[error("shard {shard}: io_uring setup failed: {source} (is io_uring disabled by kernel.io_uring_disabled or a seccomp filter?)")]
    Uring {
        /// The shard.
        shard: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// A shard's io_uring_enter failed.
    #[error("shard {shard}: io_uring_enter failed: {source}")]
    Enter {
        /// The shard.
        shard: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// A shard thread could not be started.
    #[error("could not start shard thread {shard}: {source}")]
    Spawn {
        /// The shard.
        shard: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// The shard loop itself panicked (a bug in the runtime).
    #[error("shard {shard} panicked: {message}")]
    ShardPanicked {
        /// The shard.
        shard: usize,
        /// The panic message.
        message: String,
    },
    /// The main future panicked.
    #[error("the main task panicked: {0}")]
    MainPanicked(String),
    /// The runtime stopped before the main future completed.
    #[error("the runtime stopped before the main task completed")]
    Stopped,
}

/// Configures and plans a runtime.
#[derive(Debug, Clone)]
pub struct Builder {
    placement: PlacementOptions,
    ring_entries: u32,
    mesh_capacity: usize,
    task_budget: usize,
    stall_threshold: Duration,
    grace: Duration,
    wake_mode: WakeMode,
    idle_poll: Duration,
    name: String,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            placement: PlacementOptions::default(),
            ring_entries: 1024,
            mesh_capacity: 256,
            task_budget: 128,
            stall_threshold: Duration::from_millis(10),
            grace: Duration::from_secs(5),
            wake_mode: WakeMode::default(),
            idle_poll: Duration::from_micros(50),
            name: "shard".to_string(),
        }
    }
}

impl Builder {
    /// Defaults: one shard per allowed CPU, pinned.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Number of shards (default: one per allowed CPU).
    pub fn shards(mut self, n: usize) -> Builder {
        self.placement.shards = Some(n);
        self
    }

    /// Explicit CPUs, one shard each.
    pub fn cpus(mut self, cpus: Vec<usize>) -> Builder {
        self.placement.cpus = Some(cpus);
        self
    }

    /// Whether to pin shard threads (default true).
    pub fn pin(mut self, pin: bool) -> Builder {
        self.placement.pin = pin;
        self
    }

    /// Prefer CPUs on this NIC's NUMA node.
    pub fn nic(mut self, nic: Option<String>) -> Builder {
        self.placement.nic = nic;
        self
    }

    /// All placement options at once.
    pub fn placement(mut self, opts: PlacementOptions) -> Builder {
        self.placement = opts;
        self
    }

    /// Submission queue entries per shard ring.
    pub fn ring_entries(mut self, n: u32) -> Builder {
        self.ring_entries = n.max(8);
        self
    }

    /// Capacity of each cross-shard ring (messages).
    pub fn mesh_capacity(mut self, n: usize) -> Builder {
        self.mesh_capacity = n.clamp(2, 1 << 20);
        self
    }

    /// Tasks run per loop turn before the shard polls I/O again.
    pub fn task_budget(mut self, n: usize) -> Builder {
        self.task_budget = n.max(1);
        self
    }

    /// A task poll longer than this is reported as a stall.
    pub fn stall_threshold(mut self, d: Duration) -> Builder {
        self.stall_threshold = d;
        self
    }

    /// How long tasks may run on after a stop is requested.
    pub fn grace(mut self, d: Duration) -> Builder {
        self.grace = d;
        self
    }

    /// How shards wake each other.
    pub fn wake_mode(mut self, mode: WakeMode) -> Builder {
        self.wake_mode = mode;
        self
    }

    /// How long an idle shard keeps polling for completions and mail before
    /// it parks (default 50 us; zero parks at once). Polling burns the idle
    /// core for that long but saves the tens of microseconds a cross-core
    /// wake-up costs when more work is about to arrive.
    pub fn idle_poll(mut self, d: Duration) -> Builder {
        self.idle_poll = d;
        self
    }

    /// Thread name prefix.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = name.into();
        self
    }

    /// Reads the machine and plans placement.
    pub fn build(self) -> Result<Runtime, RuntimeError> {
        let plan = placement::discover(&self.placement)?;
        Ok(Runtime { plan, cfg: self })
    }
}

/// Runs `main` on a single unpinned shard and returns its output: for tools,
/// tests and examples that need the runtime but not the machine.
pub fn run_single<F, Fut, T>(main: F) -> Result<T, RuntimeError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    Builder::new().shards(1).pin(false).build()?.run(main)
}

/// A planned runtime, ready to run.
#[derive(Debug)]
pub struct Runtime {
    plan: Plan,
    cfg: Builder,
}

/// State every shard of one runtime shares (read-mostly).
#[derive(Debug)]
pub(crate) struct Shared {
    pub n: usize,
    pub homes: Vec<Arc<Home>>,
    pub mesh: Arc<MeshShared>,
    pub stopping: AtomicBool,
    pub error: Mutex<Option<RuntimeError>>,
    pub ready: AtomicUsize,
    pub parked_at_exit: AtomicUsize,
    pub grace: Duration,
    pub budget: usize,
    pub stall_threshold: Duration,
    pub ring_entries: u32,
    pub idle_poll: Duration,
}

impl Shared {
    /// Asks every shard to stop; idempotent, callable from any thread.
    pub(crate) fn request_stop(&self) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            for h in &self.homes {
                crate::reactor::write_eventfd(h.eventfd);
            }
        }
    }

    /// Records a fatal error (the first one wins) and stops the runtime.
    pub(crate) fn fail(&self, err: RuntimeError) {
        {
            let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(err);
            }
        }
        self.request_stop();
    }
}

/// Stops a running runtime from any thread (a signal handler thread, say).
#[derive(Debug, Clone)]
pub struct RuntimeHandle {
    shared: Arc<OnceLock<Arc<Shared>>>,
}

impl RuntimeHandle {
    /// Requests a graceful stop: every shard stops, tasks get the grace
    /// period. Does nothing if the runtime is not running yet or anymore.
    pub fn stop(&self) {
        if let Some(s) = self.shared.get() {
            s.request_stop();
        }
    }

    /// Whether a stop was requested (from any thread; `shard::is_stopping`
    /// only works on a shard).
    pub fn is_stopping(&self) -> bool {
        self.shared.get().is_some_and(|s| s.stopping.load(Ordering::SeqCst))
    }
}

impl Runtime {
    /// The placement plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.plan.shards.len()
    }

    /// Runs `main` on shard 0 while every shard serves; returns its output
    /// once it completes and all shards have stopped.
    pub fn run<F, Fut, T>(self, main: F) -> Result<T, RuntimeError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        self.run_with_handle(RuntimeHandle { shared: Arc::new(OnceLock::new()) }, main)
    }

    /// A handle to stop the runtime `run` will start; take it before `run`.
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle { shared: Arc::new(OnceLock::new()) }
    }

    /// What every shard shares (homes with their eventfds, the mesh), one
    /// mesh endpoint per shard, and the eventfds, which the caller owns
    /// until every shard is gone.
    fn shared_state(&self) -> Result<SharedState, RuntimeError> {
        let n = self.plan.shards.len();
        let mut eventfds = Vec::with_capacity(n);
        let mut homes = Vec::with_capacity(n);
        for shard in 0..n {
            // Made here, before any shard runs, so foreign threads can wake
            // a shard from the start.
            let fd = crate::reactor::new_eventfd().map_err(|source| RuntimeError::Uring { shard, source })?;
            homes.push(Arc::new(Home {
                shard,
                shards: n,
                foreign: Mutex::new(Vec::new()),
                mailbox: Arc::new(Mailbox::new(n)),
                eventfd: std::os::fd::AsRawFd::as_raw_fd(&fd),
                thread: OnceLock::new(),
            }));
            eventfds.push(fd);
        }
        let mesh_shared = Arc::new(MeshShared {
            n,
            mode: self.cfg.wake_mode,
            homes: homes.clone(),
            ring_fds: (0..n).map(|_| AtomicI32::new(-1)).collect(),
            space_wanted: (0..n * n).map(|_| AtomicBool::new(false)).collect(),
        });
        let endpoints = mesh::build(&mesh_shared, self.cfg.mesh_capacity);
        let shared = Arc::new(Shared {
            n,
            homes,
            mesh: mesh_shared,
            stopping: AtomicBool::new(false),
            error: Mutex::new(None),
            ready: AtomicUsize::new(0),
            parked_at_exit: AtomicUsize::new(0),
            grace: self.cfg.grace,
            budget: self.cfg.task_budget,
            stall_threshold: self.cfg.stall_threshold,
            ring_entries: self.cfg.ring_entries,
            idle_poll: self.cfg.idle_poll,
        });
        Ok((shared, endpoints, eventfds))
    }

    /// As [`Runtime::run`], with a handle from [`Runtime::handle`].
    pub fn run_with_handle<F, Fut, T>(self, handle: RuntimeHandle, main: F) -> Result<T, RuntimeError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let n = self.plan.shards.len();
        let (shared, endpoints, eventfds) = self.shared_state()?;
        let _ = handle.shared.set(shared.clone());
        let output: Arc<Mutex<Option<Result<T, RuntimeError>>>> = Arc::new(Mutex::new(None));
        let mut main = Some(main);
        let mut threads = Vec::with_capacity(n);
        for (shard, endpoint) in endpoints.into_iter().enumerate() {
            let start = shard_loop::Start {
                shard,
                placement: self.plan.shards[shard],
                pin: self.plan.pinned,
                shared: shared.clone(),
                endpoint,
                main: if shard == 0 {
                    main.take().map(|m| shard_loop::boxed_main(m, output.clone()))
                } else {
                    None
                },
            };
            let name = format!("{}-{shard}", self.cfg.name);
            match std::thread::Builder::new().name(name).spawn(move || shard_loop::run(start)) {
                Ok(t) => threads.push(t),
                Err(source) => {
                    shared.fail(RuntimeError::Spawn { shard, source });
                    break;
                }
            }
        }
        for (shard, t) in threads.into_iter().enumerate() {
            if let Err(payload) = t.join() {
                let message = crate::executor::task::panic_message(&*payload);
                shared.fail(RuntimeError::ShardPanicked { shard, message });
            }
        }
        drop(eventfds);
        let error = shared.error.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(e) = error {
            return Err(e);
        }
        let out = output.lock().unwrap_or_else(|p| p.into_inner()).take();
        out.unwrap_or(Err(RuntimeError::Stopped))
    }
}
