//! Test upstreams: plain std servers, one thread per connection, that the
//! e2e tests put behind the appliance.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A test upstream: accepts connections and runs `serve` on each (one
/// thread per connection); stops accepting when dropped.
#[derive(Debug)]
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts one on a free port.
    pub fn start(serve: fn(usize, TcpStream), id: usize) -> Upstream {
        Upstream::start_at("127.0.0.1:0".parse().expect("addr"), serve, id)
    }

    /// Starts one on `at`.
    pub fn start_at(at: SocketAddr, serve: fn(usize, TcpStream), id: usize) -> Upstream {
        let listener = TcpListener::bind(at).expect("bind upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).expect("blocking");
                        std::thread::spawn(move || serve(id, s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Upstream { addr, stop, thread: Some(thread) }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Echoes everything, then half-closes when the client did.
pub fn echo(_: usize, mut s: TcpStream) {
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = s.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Says which upstream it is, then closes.
pub fn identify(id: usize, mut s: TcpStream) {
    let _ = s.write_all(&[id as u8]);
}

/// Says which upstream it is, then keeps the connection until the client
/// closes it (for tests that count open connections).
pub fn identify_and_hold(id: usize, mut s: TcpStream) {
    if s.write_all(&[id as u8]).is_err() {
        return;
    }
    let mut buf = [0u8; 256];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            return;
        }
    }
}

/// Reads the first bytes, then resets the connection (SO_LINGER 0).
pub fn reset_after_read(_: usize, mut s: TcpStream) {
    let mut buf = [0u8; 64];
    let _ = s.read(&mut buf);
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
}
