//! Changing the running configuration from shard 0: SIGHUP reloads, the
//! upstream API and new DNS answers each read the running configuration,
//! apply a new one on every shard and write it back, one at a time.

use std::cell::Cell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use shard::future::{select, Either};
use shard::sync::notify::Notify;

use crate::app::state::App;
use crate::services::{ServiceId, UpstreamChange};

/// Applies `change` to the service named `name` on every shard, then makes
/// it the running configuration (one change at a time): the service's
/// position and new value, or an HTTP status and why not.
pub async fn apply(
    app: &App,
    name: &str,
    change: &UpstreamChange,
) -> Result<(usize, crate::config::Service), (u16, String)> {
    let _turn = one_at_a_time().await;
    if !until_serving(app).await {
        return Err((503, "not every shard serves its services yet (starting or stopping): retry".into()));
    }
    let found =
        app.config().services.iter().enumerate().find(|(_, s)| s.name() == name).map(|(i, s)| (i, s.clone()));
    let Some((i, service)) = found else {
        return Err((404, format!("no service {name:?}")));
    };
    let new = match service.change_upstreams(change) {
        None => return Err((400, format!("{} {name:?} has no upstreams", service.kind()))),
        Some(Err(e)) => return Err((409, e)),
        Some(Ok(new)) => new,
    };
    service.reload(ServiceId(i as u64), new.clone()).await.map_err(|e| (500, format!("applying: {e}")))?;
    app.config().services[i] = new.clone();
    Ok((i, new))
}

/// How long a change waits for every shard to serve its services.
const SERVING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits (up to [`SERVING_WAIT`]) until every shard serves its services:
/// a change applied before that would reach some shards and fail on the
/// others, leaving them disagreeing. False when that does not happen in
/// time, or when the appliance stops.
pub async fn until_serving(app: &App) -> bool {
    let deadline = std::time::Instant::now() + SERVING_WAIT;
    while !app.all_serving() {
        if shard::is_stopping() || std::time::Instant::now() >= deadline {
            return false;
        }
        shard::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    true
}

thread_local! {
    /// Whether a change is being applied on this shard (shard 0, where the
    /// admin endpoint and SIGHUP reloads run), and its waiters.
    static TURN: Rc<(Cell<bool>, Notify)> = Rc::new((Cell::new(false), Notify::default()));
}

/// Holds the turn to change the running configuration until dropped.
#[derive(Debug)]
pub struct Turn(Rc<(Cell<bool>, Notify)>);

/// Waits for the turn: runtime API changes and SIGHUP reloads never
/// interleave (each reads the running configuration, applies, and writes
/// it back).
pub async fn one_at_a_time() -> Turn {
    let turn = TURN.with(Rc::clone);
    turn.1.wait_until(|| !turn.0.get()).await;
    turn.0.set(true);
    Turn(turn)
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.0 .0.set(false);
        self.0 .1.notify();
    }
}

/// Waits for a wake-up byte from a helper thread (the signal or the DNS
/// thread) on `fd`: false once stopping, or when the thread is gone.
pub async fn woken(fd: &OwnedFd) -> bool {
    let read = shard::ops::read(fd.as_raw_fd(), Vec::with_capacity(64));
    match select(shard::stopping(), read).await {
        Either::Left(()) => false,
        Either::Right((n, _)) => matches!(n, Ok(n) if n > 0),
    }
}
