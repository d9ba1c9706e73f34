//! The shard context: everything one shard thread owns, reachable from its
//! tasks through a thread-local. Nothing in it is shared with other shards
//! except through the `Arc`s the mesh hands out.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use crate::executor::{Executor, Home};
use crate::mesh::Endpoint;
use crate::reactor::Reactor;
use crate::runtime::Shared;
use crate::time::Timers;

pub(crate) struct Context {
    pub id: usize,
    pub count: usize,
    pub reactor: Reactor,
    pub executor: Executor,
    pub timers: Timers,
    pub mesh: Endpoint,
    pub shared: Arc<Shared>,
    pub turns: Cell<u64>,
    pub parks: Cell<u64>,
    /// How long the next idle poll may spin (adapted between 0 and the
    /// configured `idle_poll`, see `shard_loop::poll_then_park`).
    pub poll_window: Cell<std::time::Duration>,
    /// Set once the runtime asked this shard to stop.
    pub stopping: Cell<bool>,
    /// Once stopping: when the grace period ends and what is left is
    /// cancelled.
    pub stop_deadline: Cell<Option<std::time::Instant>>,
    pub stop_waiters: crate::sync::waiters::WaiterSet,
    /// Values kept per shard by key (see [`crate::slots`]).
    pub slots: RefCell<std::collections::HashMap<u64, Rc<dyn std::any::Any>>>,
}

impl Context {
    /// Whether `home` belongs to a shard of this context's runtime.
    pub(crate) fn same_runtime(&self, home: &Arc<Home>) -> bool {
        self.shared.homes.get(home.shard).is_some_and(|h| Arc::ptr_eq(h, home))
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Context>>> = const { RefCell::new(None) };
}

/// Runs `f` with the current shard's context.
///
/// # Panics
/// When called from a thread that is not a shard: every runtime operation
/// needs its shard, so this is a programming error, like using a tokio type
/// outside a tokio runtime.
pub(crate) fn with<R>(f: impl FnOnce(&Context) -> R) -> R {
    match try_with(f) {
        Some(r) => r,
        None => panic!("this operation must run on a shard thread (inside shard::Runtime::run)"),
    }
}

/// Runs `f` with the current shard's context itself, for values that keep
/// a (weak) reference to their shard, like operations.
///
/// # Panics
/// Off a shard thread, as [`with`].
pub(crate) fn with_rc<R>(f: impl FnOnce(&Rc<Context>) -> R) -> R {
    let r = CURRENT.try_with(|c| c.borrow().as_ref().map(f)).ok().flatten();
    match r {
        Some(r) => r,
        None => panic!("this operation must run on a shard thread (inside shard::Runtime::run)"),
    }
}

/// Runs `f` with the current shard's context, if this thread is a shard.
pub(crate) fn try_with<R>(f: impl FnOnce(&Context) -> R) -> Option<R> {
    let ctx = CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()?;
    Some(f(&ctx))
}

/// The current shard's context, for futures that use it across awaits.
pub(crate) fn current() -> Rc<Context> {
    match CURRENT.try_with(|c| c.borrow().clone()).ok().flatten() {
        Some(c) => c,
        None => panic!("this operation must run on a shard thread (inside shard::Runtime::run)"),
    }
}

pub(crate) fn enter(ctx: Rc<Context>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(ctx));
}

pub(crate) fn leave() -> Option<Rc<Context>> {
    CURRENT.with(|c| c.borrow_mut().take())
}
