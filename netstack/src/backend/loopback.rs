//! An in-memory backend pair: what one end sends, the other receives. For
//! testing services without sockets (deterministic, no kernel involved).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use shard::sync::waiters::WaiterSet;

use super::{DatagramBackend, Outgoing, Received};

/// A received loopback datagram (owned bytes).
pub type LoopbackBuf = Vec<u8>;

#[derive(Debug, Default)]
struct Queue {
    items: RefCell<VecDeque<(Vec<u8>, SocketAddr)>>,
    waiters: WaiterSet,
    capacity: usize,
    dropped: std::cell::Cell<u64>,
}

/// One end of a loopback pair (shard-local).
#[derive(Debug)]
pub struct Loopback {
    addr: SocketAddr,
    rx: Rc<Queue>,
    tx: Rc<Queue>,
    key: Option<u64>,
}

impl Loopback {
    /// Two connected ends with the given addresses; each direction holds
    /// at most `capacity` datagrams (more are dropped and counted, as a
    /// full socket buffer would).
    pub fn pair(a: SocketAddr, b: SocketAddr, capacity: usize) -> (Loopback, Loopback) {
        let ab = Rc::new(Queue { capacity, ..Queue::default() });
        let ba = Rc::new(Queue { capacity, ..Queue::default() });
        (
            Loopback { addr: a, rx: ba.clone(), tx: ab.clone(), key: None },
            Loopback { addr: b, rx: ab, tx: ba, key: None },
        )
    }

    /// This end's address (the source of what it sends).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams this end sent that the other end's full queue dropped.
    pub fn dropped(&self) -> u64 {
        self.tx.dropped.get()
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.rx.waiters.remove(k);
        }
    }
}

impl DatagramBackend for Loopback {
    type Buf = LoopbackBuf;

    async fn recv_burst(&mut self, out: &mut Vec<Received<Vec<u8>>>, max: usize) -> io::Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        std::future::poll_fn(|cx| {
            if self.rx.items.borrow().is_empty() {
                self.key = Some(self.rx.waiters.register(self.key, cx.waker()));
                return std::task::Poll::Pending;
            }
            if let Some(k) = self.key.take() {
                self.rx.waiters.remove(k);
            }
            let mut items = self.rx.items.borrow_mut();
            let n = items.len().min(max);
            out.extend(items.drain(..n).map(|(buf, source)| Received {
                buf,
                source: Some(source),
                truncated: false,
            }));
            std::task::Poll::Ready(Ok(n))
        })
        .await
    }

    async fn send_burst(&mut self, burst: &mut Vec<Outgoing>) -> io::Result<usize> {
        let mut sent = 0;
        {
            let mut items = self.tx.items.borrow_mut();
            for o in burst.drain(..) {
                if items.len() >= self.tx.capacity {
                    self.tx.dropped.set(self.tx.dropped.get() + 1);
                    continue;
                }
                items.push_back((o.payload, self.addr));
                sent += 1;
            }
        }
        if sent > 0 {
            self.tx.waiters.wake_all();
        }
        Ok(sent)
    }
}
