//! A small HTTP/1.1 server for the admin endpoint, on the shard runtime.
//!
//! Requests are parsed with `httparse`; everything an untrusted client can
//! make us hold is bounded: the request head (`max_request` bytes), the
//! number of concurrent connections (`max_connections`; the rest are
//! closed at once and counted) and how long a client may take to send a
//! request (`timeout`). Only `GET` and `HEAD` without a body are served;
//! anything else gets a 4xx and is counted.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use netstack::tcp::{TcpListener, TcpStream};
use shard::future::{select, Either};

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD` or `POST` (without a body: its parameters are in the
    /// query string).
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The query string (after `?`), if any.
    pub query: Option<String>,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<String>,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Response {
    /// A response with a body.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Response {
        Response { status, content_type, body: body.into() }
    }

    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    /// A JSON response.
    pub fn json(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "application/json", body)
    }

    fn encode(&self, head_only: bool, keep_alive: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Why a request could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRequest {
    /// Not HTTP/1.x, or a malformed head.
    Malformed,
    /// The head exceeded the limit, or a body was announced.
    TooLarge,
    /// A method other than GET, HEAD and POST.
    Method,
}

impl BadRequest {
    fn response(&self) -> Response {
        match self {
            BadRequest::Malformed => Response::text(400, "bad request\n"),
            BadRequest::TooLarge => Response::text(413, "request too large\n"),
            BadRequest::Method => Response::text(405, "only GET, HEAD and POST (without a body)\n"),
        }
    }
}

/// Parses a request head from `buf`: `Ok(None)` when more bytes are
/// needed, `Ok(Some((request, consumed)))` when complete.
pub fn parse(buf: &[u8], max_request: usize) -> Result<Option<(Request, usize)>, BadRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_request => return Err(BadRequest::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadRequest::TooLarge),
        Err(_) => return Err(BadRequest::Malformed),
    };
    if consumed > max_request {
        return Err(BadRequest::TooLarge);
    }
    let method = req.method.unwrap_or_default().to_string();
    let mut keep_alive = req.version == Some(1);
    let mut authorization = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(String::from_utf8_lossy(h.value).into_owned());
        }
        if h.name.eq_ignore_ascii_case("content-length") && h.value != b"0" {
            return Err(BadRequest::TooLarge);
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(BadRequest::TooLarge);
        }
        if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            keep_alive = if keep_alive { !v.contains("close") } else { v.contains("keep-alive") };
        }
    }
    if !matches!(method.as_str(), "GET" | "HEAD" | "POST") {
        return Err(BadRequest::Method);
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    Ok(Some((Request { method, path, query, keep_alive, authorization }, consumed)))
}

/// Server limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head accepted (bytes).
    pub max_request: usize,
    /// Connections served at once; more are closed immediately.
    pub max_connections: usize,
    /// Time a client has to send each request.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_request: 8192, max_connections: 64, timeout: Duration::from_secs(5) }
    }
}

/// The server's own counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HttpStats {
    /// Requests answered with 2xx.
    pub ok: u64,
    /// Requests answered with 404.
    pub not_found: u64,
    /// Requests refused with 400, 405 or 413.
    pub bad: u64,
    /// Clients that took longer than the timeout.
    pub timeouts: u64,
    /// Connections closed at once because too many were open.
    pub refused: u64,
}

/// Closes after an error response without resetting it away: the client
/// may still be sending (an oversized request), and closing with unread
/// data makes the kernel send a reset that can destroy the response in
/// flight. Half-close, then read and discard for a bounded time and size.
async fn linger(conn: &TcpStream) {
    let _ = conn.shutdown_write().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let mut discarded = 0usize;
    while discarded < 1 << 20 {
        let read = shard::time::timeout_at(deadline, conn.recv(Vec::with_capacity(16384))).await;
        match read {
            Ok((Ok(n), _)) if n > 0 => discarded += n,
            _ => return,
        }
    }
}

/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response>>>;

/// Routes a request to a response (404 for unknown paths is the router's).
pub type Router = Rc<dyn Fn(Request) -> ResponseFuture>;

/// Shared state of one server.
#[derive(Debug, Default)]
pub struct Server {
    stats: Cell<HttpStats>,
    open: Cell<usize>,
    limits: Limits,
}

impl Server {
    /// A server with these limits.
    pub fn new(limits: Limits) -> Rc<Server> {
        Rc::new(Server { limits, ..Server::default() })
    }

    /// The counters.
    pub fn stats(&self) -> HttpStats {
        self.stats.get()
    }

    fn count(&self, f: impl FnOnce(&mut HttpStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Serves `listener` until `until` completes, then answers what was
    /// already accepted or queued (waiting at most one request timeout).
    pub async fn serve(
        self: Rc<Self>,
        listener: TcpListener,
        router: Router,
        until: impl Future<Output = ()>,
    ) {
        let mut until = std::pin::pin!(until);
        let mut incoming = listener.incoming();
        loop {
            let conn = match select(until.as_mut(), incoming.next()).await {
                Either::Left(()) => break,
                Either::Right(Ok(conn)) => conn,
                Either::Right(Err(e)) => {
                    tracing::warn!("admin accept: {e}");
                    shard::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if let Some(task) = self.spawn_connection(conn, &router) {
                task.detach();
            }
        }
        // What the accept took meanwhile, or clients already queued, are
        // answered rather than closed unseen (the listening socket may live
        // on in a successor process, whose clients must not see a reset),
        // within one request timeout.
        let last: Vec<_> =
            incoming.finish().await.into_iter().filter_map(|c| self.spawn_connection(c, &router)).collect();
        let deadline = std::time::Instant::now() + self.limits.timeout;
        let _ = shard::time::timeout_at(deadline, shard::future::join_all(last)).await;
    }

    fn spawn_connection(self: &Rc<Self>, conn: TcpStream, router: &Router) -> Option<shard::JoinHandle<()>> {
        if self.open.get() >= self.limits.max_connections {
            self.count(|s| s.refused += 1);
            return None;
        }
        self.open.set(self.open.get() + 1);
        let (server, router) = (self.clone(), router.clone());
        Some(shard::spawn_local_named("admin-conn", async move {
            server.connection(conn, &router).await;
            server.open.set(server.open.get() - 1);
        }))
    }

    async fn connection(&self, conn: TcpStream, router: &Router) {
        let mut pending = Vec::new();
        loop {
            let deadline = std::time::Instant::now() + self.limits.timeout;
            let read = shard::time::timeout_at(deadline, self.read_request(&conn, &mut pending)).await;
            let (request, consumed) = match read {
                Err(_) => {
                    self.count(|s| s.timeouts += 1);
                    let _ = conn.send_all(Response::text(408, "timeout\n").encode(false, false)).await;
                    return;
                }
                Ok(None) => return,
                Ok(Some(Err(bad))) => {
                    self.count(|s| s.bad += 1);
                    let _ = conn.send_all(bad.response().encode(false, false)).await;
                    linger(&conn).await;
                    return;
                }
                Ok(Some(Ok(r))) => r,
            };
            pending.drain(..consumed);
            let response = router(request.clone()).await;
            self.count(|s| match response.status {
                200..=299 => s.ok += 1,
                404 => s.not_found += 1,
                _ => {}
            });
            let bytes = response.encode(request.method == "HEAD", request.keep_alive);
            if conn.send_all(bytes).await.0.is_err() || !request.keep_alive {
                return;
            }
        }
    }

    /// Reads until a whole head is buffered: `None` on a clean close.
    async fn read_request(
        &self,
        conn: &TcpStream,
        pending: &mut Vec<u8>,
    ) -> Option<Result<(Request, usize), BadRequest>> {
        loop {
            match parse(pending, self.limits.max_request) {
                Ok(Some(r)) => return Some(Ok(r)),
                Err(e) => return Some(Err(e)),
                Ok(None) => {}
            }
            let room = self.limits.max_request.saturating_sub(pending.len()).max(1);
            let (n, buf) = conn.recv(Vec::with_capacity(room.min(4096))).await;
            match n {
                Ok(0) | Err(_) if pending.is_empty() => return None,
                Ok(0) | Err(_) => return Some(Err(BadRequest::Malformed)),
                Ok(_) => pending.extend_from_slice(&buf),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        let (r, n) = parse(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\nrest", 8192).unwrap().unwrap();
        assert_eq!(n, 38);
        assert_eq!(r.path, "/metrics");
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert!(r.keep_alive);
        let (r, _) = parse(b"HEAD / HTTP/1.0\r\n\r\n", 8192).unwrap().unwrap();
        assert!(!r.keep_alive);
        let (r, _) = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 8192).unwrap().unwrap();
        assert!(!r.keep_alive);
    }

    #[test]
    fn refuses_bad_requests() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n", 8192), Ok(None));
        assert_eq!(parse(b"\x00\x01garbage\r\n\r\n", 8192), Err(BadRequest::Malformed));
        assert_eq!(parse(b"PUT / HTTP/1.1\r\n\r\n", 8192), Err(BadRequest::Method));
        let (post, _) = parse(b"POST /x?a=1 HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n", 8192)
            .expect("valid")
            .expect("complete");
        assert_eq!((post.method.as_str(), post.authorization.as_deref()), ("POST", Some("Bearer t")));
        let body = parse(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 8192);
        assert_eq!(body, Err(BadRequest::TooLarge), "no bodies");
        let body = b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse(body, 8192), Err(BadRequest::TooLarge));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        assert_eq!(parse(long.as_bytes(), 64), Err(BadRequest::TooLarge));
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..40 {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(parse(many.as_bytes(), 8192), Err(BadRequest::TooLarge));
    }

    #[test]
    fn encodes_responses() {
        let r = Response::text(404, "no\n");
        let text = String::from_utf8(r.encode(false, true)).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Content-Length: 3\r\n"));
        assert!(text.ends_with("\r\n\r\nno\n"));
        let head = String::from_utf8(r.encode(true, false)).unwrap();
        assert!(head.ends_with("Connection: close\r\n\r\n"));
    }
}
