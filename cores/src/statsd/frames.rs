//! Frames out of a DogStatsD stream socket, sans-IO: each message is a
//! 4-byte little-endian length, then that many bytes (a datagram's worth
//! of lines). Chunks go in, whole frames come out; a frame split across
//! chunks is carried over. A length over the limit is an error: the stream
//! cannot be resynchronised, so the connection is to be closed.

/// A length over the limit: what the stream announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong(pub usize);

/// The state between chunks.
#[derive(Debug, Default)]
pub struct Frames {
    carry: Vec<u8>,
    max: usize,
}

impl Frames {
    /// Frames of at most `max` bytes.
    pub fn new(max: usize) -> Frames {
        Frames { carry: Vec::new(), max }
    }

    /// Feeds a chunk; `out` gets every frame it completes, in order.
    pub fn feed(&mut self, chunk: &[u8], mut out: impl FnMut(&[u8])) -> Result<(), TooLong> {
        self.carry.extend_from_slice(chunk);
        let mut at = 0;
        while self.carry.len() - at >= 4 {
            let head: [u8; 4] = self.carry[at..at + 4].try_into().unwrap_or_default();
            let len = u32::from_le_bytes(head) as usize;
            if len > self.max {
                self.carry.clear();
                return Err(TooLong(len));
            }
            if self.carry.len() - at - 4 < len {
                break;
            }
            out(&self.carry[at + 4..at + 4 + len]);
            at += 4 + len;
        }
        self.carry.drain(..at);
        Ok(())
    }

    /// Bytes of an incomplete frame held.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.carry.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_at_any_split() {
        let mut stream = frame(b"a:1|c");
        stream.extend(frame(b""));
        stream.extend(frame(b"b:2|g\nc:3|ms"));
        for cut in 0..stream.len() {
            let mut f = Frames::new(64);
            let mut got: Vec<Vec<u8>> = Vec::new();
            f.feed(&stream[..cut], |p| got.push(p.to_vec())).expect("within limits");
            f.feed(&stream[cut..], |p| got.push(p.to_vec())).expect("within limits");
            assert_eq!(got, [b"a:1|c".to_vec(), Vec::new(), b"b:2|g\nc:3|ms".to_vec()], "cut {cut}");
            assert_eq!(f.pending(), 0);
        }
    }

    #[test]
    fn an_oversized_length_is_an_error() {
        let mut f = Frames::new(8);
        assert_eq!(f.feed(&frame(&[b'x'; 9]), |_| panic!("no frame")), Err(TooLong(9)));
        assert_eq!(f.pending(), 0, "nothing held");
    }
}
