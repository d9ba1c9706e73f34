//! HTTP/1.1 keep-alive responses, sans-IO: feed received bytes to a
//! [`ResponseReader`] until it says a whole response (headers and a
//! `Content-Length` body) has arrived. One request is outstanding per
//! connection, so bytes past the end of a response are a protocol error.

/// Why a response cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    /// The header block does not parse.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    /// Neither Content-Length nor a status without a body.
    #[error("HTTP response without Content-Length (chunked or close-delimited bodies are not supported)")]
    NoLength,
    /// More bytes than one response.
    #[error("{0} bytes after the end of the response (none were asked for)")]
    Trailing(usize),
    /// The header block is larger than we accept.
    #[error("HTTP response headers larger than {0} bytes")]
    TooLarge(usize),
}

/// A complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body length.
    pub body: usize,
    /// The server will close the connection (`Connection: close`).
    pub close: bool,
}

const MAX_HEAD: usize = 16 * 1024;

/// Accumulates one response.
#[derive(Debug, Default)]
pub struct ResponseReader {
    buf: Vec<u8>,
    /// Header length and the parsed head once the headers are complete.
    head: Option<(usize, Response)>,
    /// Body bytes seen so far (the body itself is not kept).
    body_seen: usize,
}

impl ResponseReader {
    /// Ready for the next response.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.head = None;
        self.body_seen = 0;
    }

    /// Feeds received bytes; `Ok(Some(_))` once the response is complete.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<Response>, HttpError> {
        let data = match self.head {
            Some(_) => data,
            None => {
                self.buf.extend_from_slice(data);
                let Some((len, resp)) = parse_head(&self.buf)? else {
                    return Ok(None);
                };
                self.head = Some((len, resp));
                let rest = self.buf.len() - len;
                self.body_seen = 0;
                // The body bytes that came with the head.
                return self.body(rest);
            }
        };
        self.body(data.len())
    }

    fn body(&mut self, n: usize) -> Result<Option<Response>, HttpError> {
        let Some((_, resp)) = self.head else { return Ok(None) };
        self.body_seen += n;
        if self.body_seen > resp.body {
            return Err(HttpError::Trailing(self.body_seen - resp.body));
        }
        Ok((self.body_seen == resp.body).then_some(resp))
    }
}

fn parse_head(buf: &[u8]) -> Result<Option<(usize, Response)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HttpError::TooLarge(MAX_HEAD)),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    let status = r.code.unwrap_or(0);
    let mut body = None;
    let mut close = r.version == Some(0);
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok());
            body = Some(v.ok_or_else(|| HttpError::Malformed("bad Content-Length".into()))?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::NoLength);
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    let body = match body {
        Some(b) => b,
        None if no_body => 0,
        None => return Err(HttpError::NoLength),
    };
    Ok(Some((len, Response { status, body, close })))
}

/// The GET request `loadgen tcp-rr --http` sends.
pub fn request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: appliance-loadgen\r\n\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\n\r\nok";

    #[test]
    fn whole_response_at_once() {
        let mut r = ResponseReader::default();
        assert_eq!(r.feed(OK), Ok(Some(Response { status: 200, body: 2, close: false })));
    }

    #[test]
    fn split_at_every_byte() {
        for cut in 0..OK.len() {
            let mut r = ResponseReader::default();
            let first = r.feed(&OK[..cut]).unwrap();
            assert_eq!(first, None, "cut {cut}");
            let second = r.feed(&OK[cut..]).unwrap();
            assert_eq!(second.map(|x| x.status), Some(200), "cut {cut}");
        }
    }

    #[test]
    fn byte_by_byte_then_reset_for_the_next() {
        let mut r = ResponseReader::default();
        for round in 0..2 {
            let mut done = None;
            for (i, b) in OK.iter().enumerate() {
                let got = r.feed(std::slice::from_ref(b)).unwrap();
                assert!(got.is_none() || i == OK.len() - 1, "round {round}: early at {i}");
                done = got;
            }
            assert!(done.is_some());
            r.reset();
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut r = ResponseReader::default();
        let two = [OK, OK].concat();
        assert_eq!(r.feed(&two), Err(HttpError::Trailing(OK.len())));
    }

    #[test]
    fn chunked_and_missing_length_are_refused() {
        let mut r = ResponseReader::default();
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(r.feed(chunked), Err(HttpError::NoLength));
        r.reset();
        assert_eq!(r.feed(b"HTTP/1.1 200 OK\r\n\r\n"), Err(HttpError::NoLength));
    }

    #[test]
    fn no_body_statuses_and_close() {
        let mut r = ResponseReader::default();
        let got = r.feed(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!(got, Some(Response { status: 204, body: 0, close: true }));
    }

    #[test]
    fn garbage_is_malformed() {
        let mut r = ResponseReader::default();
        assert!(matches!(r.feed(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(HttpError::Malformed(_))));
    }
}
