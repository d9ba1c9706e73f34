//! The executor: a single-threaded run queue of `!Send` tasks.
//!
//! Tasks are allocated with `async-task`; the scheduling is ours. A task
//! woken on its own shard goes straight to the back of the local queue. A
//! task woken from another shard travels home over the mesh (a `Wake`
//! message on the ring from the waking shard), and from a thread that is
//! not a shard through the home shard's foreign queue and eventfd.
//!
//! Each loop turn runs at most a budget of tasks before the shard goes back
//! to its rings, so a flood of ready tasks cannot starve I/O, and every poll
//! is timed so a task that hogs the core is reported (see `stall.rs`).

pub mod stall;
pub mod task;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use async_task::Runnable;

use crate::context;
use crate::mesh::mail::Mailbox;
use stall::StallDetector;
use task::CatchUnwind;
pub use task::{JoinError, JoinHandle, TaskMeta};

/// A task ready to run.
pub(crate) type Job = Runnable<TaskMeta>;

/// The part of a shard's executor other threads may touch: where foreign
/// threads leave woken tasks and how they wake the shard.
#[derive(Debug)]
pub(crate) struct Home {
    pub shard: usize,
    pub shards: usize,
    pub foreign: Mutex<Vec<Job>>,
    pub mailbox: Arc<Mailbox>,
    pub eventfd: i32,
    /// The shard's thread, known once it started.
    pub thread: std::sync::OnceLock<std::thread::ThreadId>,
}

impl Home {
    /// Queues a job woken on a thread that is not a shard of this runtime.
    pub(crate) fn push_foreign(&self, job: Job) {
        match self.foreign.lock() {
            Ok(mut q) => q.push(job),
            Err(poisoned) => poisoned.into_inner().push(job),
        }
        if self.mailbox.notify(self.shards) {
            crate::reactor::write_eventfd(self.eventfd);
        }
    }

    pub(crate) fn take_foreign(&self) -> Vec<Job> {
        match self.foreign.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

/// Where a woken task goes: see the module docs.
fn schedule(home: &Arc<Home>, job: Job) {
    let mut job = Some(job);
    context::try_with(|c| {
        if Arc::ptr_eq(&c.executor.home, home) {
            if let Some(j) = job.take() {
                c.executor.queue.borrow_mut().push_back(j);
            }
        } else if c.same_runtime(home) {
            if let Some(j) = job.take() {
                // The mesh hands the job back when the ring is full.
                job = c.mesh.wake_remote(home.shard, j);
            }
        }
    });
    if let Some(job) = job {
        home.push_foreign(job);
    }
}

pub(crate) struct Executor {
    pub(crate) home: Arc<Home>,
    pub(crate) queue: RefCell<VecDeque<Job>>,
    next_id: Cell<u64>,
    alive: Rc<RefCell<std::collections::BTreeMap<u64, &'static str>>>,
    stall: StallDetector,
    polls: Cell<u64>,
    spawned: Cell<u64>,
}

/// Counts live tasks: incremented at spawn, decremented when the task's
/// future is dropped (finished or cancelled).
struct AliveGuard(Rc<RefCell<std::collections::BTreeMap<u64, &'static str>>>, u64);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.borrow_mut().remove(&self.1);
    }
}

impl Executor {
    pub(crate) fn new(home: Arc<Home>, stall: StallDetector) -> Executor {
        Executor {
            home,
            queue: RefCell::new(VecDeque::with_capacity(256)),
            next_id: Cell::new(0),
            alive: Rc::default(),
            stall,
            polls: Cell::new(0),
            spawned: Cell::new(0),
        }
    }

    /// Tasks spawned on this shard that have not finished.
    pub(crate) fn alive(&self) -> usize {
        self.alive.borrow().len()
    }

    /// Names of the tasks alive now (for the shutdown report), at most `max`.
    pub(crate) fn alive_names(&self, max: usize) -> Vec<&'static str> {
        self.alive.borrow().values().take(max).copied().collect()
    }

    pub(crate) fn polls(&self) -> u64 {
        self.polls.get()
    }

    pub(crate) fn spawned(&self) -> u64 {
        self.spawned.get()
    }

    pub(crate) fn stalls(&self) -> u64 {
        self.stall.count()
    }

    pub(crate) fn spawn<F>(&self, name: &'static str, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.spawned.set(self.spawned.get() + 1);
        self.alive.borrow_mut().insert(id, name);
        let guard = AliveGuard(self.alive.clone(), id);
        let home = self.home.clone();
        let wrapped = async move {
            let _guard = guard;
            CatchUnwind::new(fut).await
        };
        let (runnable, task) = async_task::Builder::new()
            .metadata(TaskMeta { id, name })
            .spawn_local(move |_| wrapped, move |job| schedule(&home, job));
        runnable.schedule();
        JoinHandle::new(task)
    }

    /// Pushes jobs that arrived from elsewhere (mesh or foreign queue).
    pub(crate) fn enqueue(&self, job: Job) {
        self.queue.borrow_mut().push_back(job);
    }

    pub(crate) fn has_ready(&self) -> bool {
        !self.queue.borrow().is_empty()
    }

    /// Runs up to `budget` ready tasks; returns how many ran.
    pub(crate) fn run(&self, budget: usize) -> usize {
        let mut ran = 0;
        // One clock read per poll: each poll's end is the next one's start.
        let mut start = crate::clock::coarse_ns();
        while ran < budget {
            let Some(job) = self.queue.borrow_mut().pop_front() else {
                break;
            };
            let (id, name) = (job.metadata().id, job.metadata().name);
            job.run();
            let end = crate::clock::coarse_ns();
            self.stall.check(end.saturating_sub(start), id, name);
            start = end;
            ran += 1;
        }
        self.polls.set(self.polls.get() + ran as u64);
        ran
    }

    /// Drops every queued job, cancelling those tasks (shutdown).
    pub(crate) fn drop_queued(&self) -> usize {
        let mut n = 0;
        loop {
            let batch: Vec<Job> = self.queue.borrow_mut().drain(..).collect();
            if batch.is_empty() {
                return n;
            }
            n += batch.len();
            drop(batch);
        }
    }
}
