//! A command's output kept bounded: its first and last bytes, with how much of the middle
//! was dropped — memory stays the same whatever the command prints.

use std::collections::VecDeque;

/// One stream's output: at most `limit` bytes kept (half head, half tail).
#[derive(Debug)]
pub struct Bounded {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    half: usize,
    /// Bytes dropped from the middle.
    dropped: u64,
}

impl Bounded {
    pub fn new(limit: usize) -> Self {
        let half = limit / 2;
        Self {
            head: Vec::new(),
            tail: VecDeque::new(),
            half,
            dropped: 0,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        let room = self.half.saturating_sub(self.head.len());
        let take = room.min(data.len());
        self.head.extend_from_slice(&data[..take]);
        data = &data[take..];
        if data.is_empty() {
            return;
        }
        if data.len() >= self.half {
            self.dropped += (self.tail.len() + data.len() - self.half) as u64;
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.half..]);
            return;
        }
        let over = (self.tail.len() + data.len()).saturating_sub(self.half);
        self.tail.drain(..over);
        self.dropped += over as u64;
        self.tail.extend(data);
    }

    pub fn truncated(&self) -> bool {
        self.dropped > 0
    }

    /// The text kept (invalid UTF-8 replaced), the cut marked where it is.
    pub fn text(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            out.push_str(&format!(
                "\n[... {} bytes of output dropped here ...]\n",
                self.dropped
            ));
        }
        let (a, b) = self.tail.as_slices();
        let mut tail = Vec::with_capacity(a.len() + b.len());
        tail.extend_from_slice(a);
        tail.extend_from_slice(b);
        out.push_str(&String::from_utf8_lossy(&tail));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Bounded;

    #[test]
    fn short_output_is_kept_whole() {
        let mut b = Bounded::new(16);
        b.push(b"hello ");
        b.push(b"world");
        assert!(!b.truncated());
        assert_eq!(b.text(), "hello world");
    }

    #[test]
    fn long_output_keeps_head_and_tail_and_counts_the_rest() {
        let mut b = Bounded::new(8);
        for chunk in [&b"abcdef"[..], b"ghij", b"klmnopqrstuvwxyz"] {
            b.push(chunk);
        }
        assert!(b.truncated());
        assert_eq!(
            b.text(),
            "abcd\n[... 18 bytes of output dropped here ...]\nwxyz"
        );
        let mut one_by_one = Bounded::new(8);
        for c in b"abcdefghijklmnopqrstuvwxyz" {
            one_by_one.push(&[*c]);
        }
        assert_eq!(one_by_one.text(), b.text());
    }
}
