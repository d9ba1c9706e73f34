//! A shard's Graphite connection: flush payloads queue here and one task
//! writes them over TCP, connecting on demand and reconnecting with
//! exponential backoff (100 ms to 5 s). The queue holds at most `limit`
//! intervals and `limit_bytes` bytes (the newest interval is always kept);
//! when Graphite is away longer, the oldest interval is dropped and
//! counted. A payload cut by a failed send is sent again whole
//! (Graphite keeps the last value per path and timestamp, so a repeat is
//! harmless).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use netstack::tcp::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One interval's payload, its line count and its timestamp.
type Queued = (Vec<u8>, u64, u64);

/// The queue and connection to one Graphite receiver, on one shard.
#[derive(Debug)]
pub struct Outbox {
    addr: SocketAddr,
    limit: usize,
    limit_bytes: usize,
    queue: RefCell<VecDeque<Queued>>,
    conn: RefCell<Option<Rc<TcpStream>>>,
    sending: Cell<bool>,
    healthy: Cell<bool>,
    /// Replaced by a reload: the writer stops after its current payload.
    retired: Cell<bool>,
    /// Where payloads pushed after the reload go (a flush that started
    /// before it); `None`: Graphite was removed, they are dropped.
    successor: RefCell<Option<Rc<Outbox>>>,
    /// Failed connects and sends.
    pub errors: Cell<u64>,
    /// Intervals dropped from a full queue.
    pub dropped: Cell<u64>,
    /// Lines written.
    pub lines: Cell<u64>,
    /// Told after every payload written or failed and when the writer
    /// stops, for [`Outbox::progress`].
    moved: shard::sync::notify::Notify,
}

impl Outbox {
    /// An outbox for `addr` holding at most `limit` intervals of at most
    /// `limit_bytes` in all.
    pub fn new(addr: SocketAddr, limit: usize, limit_bytes: usize) -> Rc<Outbox> {
        Rc::new(Outbox {
            addr,
            limit: limit.max(1),
            limit_bytes,
            queue: RefCell::default(),
            conn: RefCell::default(),
            sending: Cell::new(false),
            healthy: Cell::new(true),
            retired: Cell::new(false),
            successor: RefCell::default(),
            errors: Cell::new(0),
            dropped: Cell::new(0),
            lines: Cell::new(0),
            moved: Default::default(),
        })
    }

    /// Queues `lines` lines of the interval flushed at `ts` and makes sure
    /// the writer task runs. Payloads of the same interval share one queue
    /// entry (the queue limit counts intervals).
    pub fn push(self: &Rc<Self>, mut payload: Vec<u8>, lines: u64, ts: u64) {
        if payload.is_empty() {
            return;
        }
        if self.retired.get() {
            match self.successor.borrow().as_ref() {
                Some(next) => next.push(payload, lines, ts),
                None => self.dropped.set(self.dropped.get() + 1),
            }
            return;
        }
        {
            let mut q = self.queue.borrow_mut();
            match q.back_mut() {
                Some((p, n, t)) if *t == ts => {
                    p.append(&mut payload);
                    *n += lines;
                }
                _ => q.push_back((payload, lines, ts)),
            }
        }
        self.trim();
        if !self.sending.replace(true) {
            shard::spawn_local_named("graphite", self.clone().write_all()).detach();
        }
    }

    fn trim(&self) {
        let mut q = self.queue.borrow_mut();
        let mut bytes: usize = q.iter().map(|e| e.0.len()).sum();
        while q.len() > self.limit || (q.len() > 1 && bytes > self.limit_bytes) {
            if let Some(old) = q.pop_front() {
                bytes -= old.0.len();
            }
            self.dropped.set(self.dropped.get() + 1);
        }
    }

    /// Hands every queued interval to `next` (a reload moved Graphite) and
    /// stops this outbox's writer after the payload it is sending, if any
    /// (which goes to `next` too if it fails). Without `next` (Graphite
    /// removed) the queue is dropped and counted.
    pub fn retire_into(&self, next: Option<Rc<Outbox>>) {
        self.retired.set(true);
        let queued = std::mem::take(&mut *self.queue.borrow_mut());
        match &next {
            Some(n) => queued.into_iter().for_each(|(p, lines, ts)| n.push(p, lines, ts)),
            None => self.dropped.set(self.dropped.get() + queued.len() as u64),
        }
        *self.successor.borrow_mut() = next;
        *self.conn.borrow_mut() = None;
    }

    /// Gives up on everything queued (shutdown, Graphite still away): the
    /// intervals are counted as dropped. Returns `(intervals, lines)`.
    pub fn abandon(&self) -> (u64, u64) {
        let queued = std::mem::take(&mut *self.queue.borrow_mut());
        let lines = queued.iter().map(|q| q.1).sum();
        let n = queued.len() as u64;
        self.dropped.set(self.dropped.get() + n);
        self.moved.notify();
        (n, lines)
    }

    /// Bytes queued and not yet handed to the socket.
    pub fn pending_bytes(&self) -> usize {
        self.queue.borrow().iter().map(|q| q.0.len()).sum()
    }

    /// Intervals queued (the one being sent included).
    pub fn held(&self) -> usize {
        self.queue.borrow().len()
    }

    /// The last connect or send worked (so waiting for the queue to
    /// drain makes sense).
    pub fn is_healthy(&self) -> bool {
        self.healthy.get()
    }

    /// Completes once `ready(self)` holds, looking again after each payload
    /// the writer moves (or fails to) and when it stops: no polling.
    pub async fn progress(&self, ready: impl Fn(&Outbox) -> bool) {
        self.moved.wait_until(|| ready(self)).await;
    }

    /// Nothing queued and nothing being written.
    pub fn is_idle(&self) -> bool {
        !self.sending.get() && self.queue.borrow().is_empty()
    }

    async fn write_all(self: Rc<Self>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.retired.get() {
                break;
            }
            let next = self.queue.borrow_mut().pop_front();
            let Some((payload, lines, ts)) = next else { break };
            match self.send(payload).await {
                Ok(()) => {
                    self.healthy.set(true);
                    self.lines.set(self.lines.get() + lines);
                    backoff = BACKOFF_MIN;
                    self.moved.notify();
                }
                Err((_, payload)) if self.retired.get() => {
                    // Replaced meanwhile: the successor (if any) takes it.
                    self.errors.set(self.errors.get() + 1);
                    self.push(payload, lines, ts);
                    break;
                }
                Err((e, payload)) => {
                    tracing::warn!(graphite = %self.addr, "graphite: {e}; retrying in {backoff:?}");
                    self.errors.set(self.errors.get() + 1);
                    self.healthy.set(false);
                    self.queue.borrow_mut().push_front((payload, lines, ts));
                    self.trim();
                    self.moved.notify();
                    shard::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.sending.set(false);
        self.moved.notify();
    }

    async fn send(&self, payload: Vec<u8>) -> Result<(), (std::io::Error, Vec<u8>)> {
        let existing = self.conn.borrow().clone().filter(|c| still_open(c));
        let conn = match existing {
            Some(c) => c,
            None => match TcpStream::connect_timeout(self.addr, CONNECT_TIMEOUT).await {
                Ok(c) => {
                    let c = Rc::new(c);
                    *self.conn.borrow_mut() = Some(c.clone());
                    c
                }
                Err(e) => return Err((e, payload)),
            },
        };
        let (r, payload) = conn.send_all(payload).await;
        r.map_err(|e| {
            *self.conn.borrow_mut() = None;
            (e, payload)
        })
    }
}

/// Whether a Graphite connection can still take a payload. Graphite never
/// writes to us, so a readable socket means the receiver closed or reset it
/// (a restart, say). Writing into such a socket would succeed locally and
/// lose the whole payload with the reset that follows, so it is replaced
/// before the write instead.
fn still_open(conn: &TcpStream) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(conn).recv_with_flags(&mut probe, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        Ok(0) => false,
        Ok(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::Outbox;

    /// While Graphite is away the queue keeps at most its byte bound (the
    /// newest interval always), dropping and counting older intervals.
    #[test]
    fn held_intervals_are_bounded_in_bytes() {
        shard::run_single(|| async {
            // Nothing listens on port 1 of loopback: every connect fails.
            let out = Outbox::new("127.0.0.1:1".parse().unwrap(), 100, 1000);
            for ts in 0..5u64 {
                out.push(vec![b'x'; 400], 1, ts);
            }
            assert!(out.pending_bytes() <= 1000, "{} bytes held", out.pending_bytes());
            assert!(out.dropped.get() >= 2, "{} intervals dropped", out.dropped.get());
            out.push(vec![b'y'; 5000], 1, 9);
            assert_eq!(out.pending_bytes(), 5000, "the newest interval is kept whatever its size");
            let (intervals, _) = out.abandon();
            assert_eq!(intervals, 1);
        })
        .expect("runtime");
    }
}
