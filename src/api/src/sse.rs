//! Server-sent events as the daemon sends them (`GET /v1/events`): read incrementally from
//! whatever chunks the body arrives in, bounded, never trusting the other side to end a line.

use bytes::BytesMut;

/// The longest event accepted (the daemon's are well under a kilobyte).
pub const MAX_EVENT: usize = 64 << 10;

/// One event: its name (`message` when it gives none) and its data lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Why a stream cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event of more than {MAX_EVENT} bytes")]
    TooLong,
    #[error("an event line that is not UTF-8")]
    NotUtf8,
}

/// An incremental reader: [`Sse::push`] what arrives, take [`Sse::next_event`]s out.
#[derive(Debug, Default)]
pub struct Sse {
    buf: BytesMut,
    event: Option<String>,
    data: Option<String>,
    /// Bytes of the event being read (its lines so far).
    size: usize,
    /// The stream was refused: nothing more is read from it.
    failed: bool,
}

impl Sse {
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next whole event, if one has arrived. After an error, nothing more.
    pub fn next_event(&mut self) -> Option<Result<SseEvent, SseError>> {
        if self.failed {
            return None;
        }
        let next = self.read();
        if let Some(Err(_)) = &next {
            self.failed = true;
            self.buf = BytesMut::new();
        }
        next
    }

    fn read(&mut self) -> Option<Result<SseEvent, SseError>> {
        loop {
            let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.size + self.buf.len() > MAX_EVENT {
                    return Some(Err(SseError::TooLong));
                }
                return None;
            };
            let line = self.buf.split_to(nl + 1);
            self.size += line.len();
            if self.size > MAX_EVENT {
                return Some(Err(SseError::TooLong));
            }
            let mut line = &line[..nl];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let Ok(line) = std::str::from_utf8(line) else {
                return Some(Err(SseError::NotUtf8));
            };
            if line.is_empty() {
                // The blank line ends an event; one without data is none (a keep-alive).
                self.size = 0;
                let event = self.event.take();
                if let Some(data) = self.data.take() {
                    return Some(Ok(SseEvent {
                        event: event.unwrap_or_else(|| "message".into()),
                        data,
                    }));
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // a comment
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event = Some(value.to_owned()),
                "data" => match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                },
                _ => {} // id, retry, and anything else: not used here
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;
    use proptest::prelude::*;

    const STREAM: &str = ":\n\nevent: created\ndata: {\"kind\":\"created\"}\n\n\
                          event: lagged\r\ndata: 3\r\n\r\ndata: a\ndata: b\nid: 7\n\n: ping\n\n";

    fn all(chunks: &[&[u8]]) -> Vec<Result<SseEvent, SseError>> {
        let mut sse = Sse::default();
        let mut out = Vec::new();
        for c in chunks {
            sse.push(c);
            while let Some(e) = sse.next_event() {
                out.push(e);
            }
        }
        out
    }

    fn ev(event: &str, data: &str) -> Result<SseEvent, SseError> {
        Ok(SseEvent {
            event: event.into(),
            data: data.into(),
        })
    }

    #[test]
    fn events_comments_and_keep_alives() {
        assert_eq!(
            all(&[STREAM.as_bytes()]),
            [
                ev("created", "{\"kind\":\"created\"}"),
                ev("lagged", "3"),
                ev("message", "a\nb")
            ]
        );
    }

    #[test]
    fn an_endless_line_is_refused_not_buffered() {
        let mut sse = Sse::default();
        let chunk = [b'a'; 4096];
        let mut refused = false;
        for _ in 0..(MAX_EVENT / chunk.len() + 2) {
            sse.push(&chunk);
            if let Some(e) = sse.next_event() {
                assert_eq!(e, Err(SseError::TooLong));
                refused = true;
                break;
            }
        }
        assert!(refused);
        let many = "data: x\n".repeat(MAX_EVENT / 8 + 1);
        assert_eq!(all(&[many.as_bytes()]), [Err(SseError::TooLong)]);
    }

    proptest! {
        /// However the stream is cut into chunks, the same events come out.
        #[test]
        fn chunking_changes_nothing(cuts in proptest::collection::vec(0usize..STREAM.len(), 0..12)) {
            let bytes = STREAM.as_bytes();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&bytes[at..c.max(at)]);
                at = c.max(at);
            }
            chunks.push(&bytes[at..]);
            prop_assert_eq!(all(&chunks), all(&[bytes]));
        }

        /// Any bytes: events or a refusal, never a panic.
        #[test]
        fn any_bytes_are_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = all(&[&bytes]);
        }
    }
}
