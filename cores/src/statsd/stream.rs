//! Lines out of a byte stream (statsd over TCP), sans-IO: chunks go in,
//! runs of complete lines come out, a line split across chunks is carried
//! over. A line longer than the limit is reported once and skipped up to
//! its newline, so the carry never holds more than one limit's worth.

/// What a chunk yields.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Complete `\n`-terminated lines (or, at the end of the stream, the
    /// last unterminated one).
    Lines(&'a [u8]),
    /// A line over the limit was dropped.
    TooLong,
}

/// The state between chunks.
#[derive(Debug, Default)]
pub struct StreamLines {
    carry: Vec<u8>,
    skipping: bool,
    max_len: usize,
}

impl StreamLines {
    /// Lines of at most `max_len` bytes (plus `\r\n`).
    pub fn new(max_len: usize) -> StreamLines {
        StreamLines { carry: Vec::new(), skipping: false, max_len }
    }

    /// Feeds a chunk; `out` gets the complete lines it finishes.
    pub fn feed(&mut self, mut chunk: &[u8], mut out: impl FnMut(Piece<'_>)) {
        if self.skipping {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    chunk = &chunk[i + 1..];
                    self.skipping = false;
                }
                None => return,
            }
        }
        let (head, tail) = match chunk.iter().rposition(|&b| b == b'\n') {
            Some(i) => chunk.split_at(i + 1),
            None => (&[][..], chunk),
        };
        if !head.is_empty() {
            if self.carry.is_empty() {
                out(Piece::Lines(head));
            } else {
                self.carry.extend_from_slice(head);
                out(Piece::Lines(&self.carry));
                self.carry.clear();
            }
        }
        self.carry.extend_from_slice(tail);
        // +1 leaves room for a `\r` before the newline.
        if self.carry.len() > self.max_len + 1 {
            self.carry.clear();
            self.skipping = true;
            out(Piece::TooLong);
        }
    }

    /// The stream ended: whatever is carried is the last line.
    pub fn finish(&mut self, mut out: impl FnMut(Piece<'_>)) {
        if !self.carry.is_empty() && !self.skipping {
            out(Piece::Lines(&self.carry));
        }
        self.carry.clear();
        self.skipping = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(chunks: &[&[u8]], max: usize) -> (Vec<u8>, usize) {
        let mut s = StreamLines::new(max);
        let (mut got, mut long) = (Vec::new(), 0);
        let mut sink = |p: Piece<'_>| match p {
            Piece::Lines(l) => {
                got.extend_from_slice(l);
                if !l.ends_with(b"\n") {
                    got.push(b'\n');
                }
            }
            Piece::TooLong => long += 1,
        };
        for c in chunks {
            s.feed(c, &mut sink);
        }
        s.finish(&mut sink);
        (got, long)
    }

    #[test]
    fn joins_split_lines() {
        assert_eq!(run(&[b"a:1|c\nb:", b"2|c\nc:3", b"|c"], 64), (b"a:1|c\nb:2|c\nc:3|c\n".to_vec(), 0));
    }

    #[test]
    fn skips_long_lines_only() {
        let long = [b'x'; 40];
        let (got, n) = run(&[b"ok:1|c\n", &long, &long, b"still long\nnext:1|c\n"], 16);
        assert_eq!((got, n), (b"ok:1|c\nnext:1|c\n".to_vec(), 1));
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_lines(
            lines in proptest::collection::vec("[a-z:|0-9]{0,12}", 0..20),
            cuts in proptest::collection::vec(0usize..200, 0..10),
        ) {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                chunks.push(&bytes[at..c]);
                at = c;
            }
            prop_assert_eq!(run(&chunks, 64), (bytes.to_vec(), 0));
        }
    }
}
