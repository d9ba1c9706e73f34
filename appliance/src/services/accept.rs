//! What every connection-serving service shares: accepting until a stop
//! (then refusing new connections at once) and counting open connections
//! so a drain can wait for them.

use std::cell::Cell;
use std::rc::Rc;

use shard::sync::notify::Notify;

/// Connections a service has open on this shard, so that it can wait for
/// them to finish when draining (notified by the last one to close, not
/// polled).
#[derive(Debug, Clone, Default)]
pub struct Drain(Rc<Open>);

#[derive(Debug, Default)]
struct Open {
    count: Cell<usize>,
    none_left: Notify,
}

/// One open connection of a [`Drain`].
#[derive(Debug)]
pub struct DrainGuard(Rc<Open>);

impl Drain {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.0.count.get()
    }

    /// Counts a connection until the guard is dropped.
    pub fn enter(&self) -> DrainGuard {
        self.0.count.set(self.0.count.get() + 1);
        DrainGuard(self.0.clone())
    }

    /// Completes once every connection has finished.
    pub async fn finished(&self) {
        self.0.none_left.wait_until(|| self.0.count.get() == 0).await;
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        let left = self.0.count.get().saturating_sub(1);
        self.0.count.set(left);
        if left == 0 {
            self.0.none_left.notify();
        }
    }
}

/// Accepts on `listener` until the runtime is asked to stop, handing each
/// connection to `on_conn`. Running out of descriptors backs off briefly
/// instead of spinning; per-connection accept errors are skipped.
///
/// On a stop it stops listening: the connections clients already made (in
/// the backlog or taken by the kernel's accept) go to `on_conn` like any
/// other, then the listener is closed, so a new connection is refused at
/// once rather than left hanging in a backlog nobody reads.
pub async fn accept_until_stopped(
    listener: netstack::tcp::TcpListener,
    mut on_conn: impl FnMut(netstack::tcp::TcpStream),
) {
    use shard::future::{select, Either};
    let mut incoming = listener.incoming();
    loop {
        match select(shard::stopping(), incoming.next()).await {
            Either::Left(()) => {
                incoming.finish().await.into_iter().for_each(&mut on_conn);
                return;
            }
            Either::Right(Ok(conn)) => on_conn(conn),
            Either::Right(Err(e)) => {
                ops::warn_limited!("accept: {e}; backing off");
                shard::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}
