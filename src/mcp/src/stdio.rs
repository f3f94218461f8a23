//! The MCP channel on stdin/stdout, one JSON-RPC message a line, answering what is not one.
//!
//! rmcp's own stdio transport drops a line that is not JSON without a word (and answers a
//! JSON value that is not a message with an error that has no `id`). JSON-RPC 2.0 says a
//! server answers both: a parse error is `-32700`, an invalid request `-32600`, each with
//! `"id": null` unless the id could be read. This transport frames lines itself, bounded:
//!
//! - a line longer than [`line_cap`] is answered `-32600` ("too large") and skipped to its
//!   end without being kept — memory stays bounded whatever a client sends;
//! - a line that is not JSON (or not UTF-8) is answered `-32700`;
//! - JSON that is not a JSON-RPC message — a batch, a missing or mistyped `jsonrpc`, `id`,
//!   `method` or `params` — is answered `-32600`, with the request's id when it is a string
//!   or a number;
//! - a well-formed request whose parameters do not fit its method is answered `-32602` with
//!   its id;
//! - a blank line, a notification the SDK does not take and a response to nothing are
//!   skipped (JSON-RPC answers no notification, and a response is not answered);
//! - everything else goes to rmcp as the message it is.
//!
//! An answer is written in the same order as the rest of the channel and before the next
//! line is read, so a client that floods the server with bad lines and reads nothing stops
//! being read (back-pressure, not buffering). Every read and write step is cancellation-safe:
//! rmcp polls [`Transport::receive`] in a `select!`.

use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::model::{
    CallToolRequestParams, ClientRequest, ErrorCode, InitializeRequestParams, JsonRpcMessage,
};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::Settings;

/// The shortest line cap, whatever the file limit.
const MIN_LINE_CAP: usize = 16 << 20;

/// How much of stdin is read at a time.
const READ_BUFFER: usize = 64 << 10;

/// The longest line (one message, without its newline) the server takes.
///
/// The largest message a client legitimately sends is a `write_file` of `max_file` bytes: its
/// `content` is a JSON string, in which one byte of the file takes at most 6 (a control
/// character escaped as `\u001f`). Six times `max_file` plus 1 MiB for the envelope and the
/// other arguments — 25 MiB at the default 4 MiB — so no write the server would take is cut
/// off by the framing, and never less than 16 MiB (what rmcp's transports take). A longer
/// line cannot be a write the server would do, and is refused unread.
pub fn line_cap(settings: &Settings) -> usize {
    let max_file = usize::try_from(settings.max_file).unwrap_or(usize::MAX);
    max_file
        .saturating_mul(6)
        .saturating_add(1 << 20)
        .max(MIN_LINE_CAP)
}

/// The transport on this process's stdin and stdout.
pub fn stdio(settings: &Settings) -> Lines<tokio::io::Stdin, tokio::io::Stdout> {
    let (read, write) = rmcp::transport::stdio();
    Lines::new(read, write, line_cap(settings))
}

/// What the framer found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole line, without its `\n` (a `\r` before it is the line's).
    Line(Vec<u8>),
    /// A line longer than the cap: what was read of it is dropped, and the rest of it will be
    /// skipped as it comes.
    TooLong,
}

/// Splits a byte stream into lines of at most `cap` bytes, keeping at most `cap` bytes.
#[derive(Debug)]
pub struct Framer {
    cap: usize,
    line: Vec<u8>,
    /// Skipping the rest of a line already answered as too long, up to its newline.
    skipping: bool,
}

impl Framer {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            line: Vec::new(),
            skipping: false,
        }
    }

    /// Takes bytes from the front of `input`: returns how many it took (the caller drops
    /// them from its buffer) and the frame they completed, if any. Stops after one frame.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Frame>) {
        let newline = input.iter().position(|b| *b == b'\n');
        let take = newline.map_or(input.len(), |i| i + 1);
        let content = &input[..newline.unwrap_or(input.len())];
        if self.skipping {
            if newline.is_some() {
                self.skipping = false;
            }
            return (take, None);
        }
        if self.line.len().saturating_add(content.len()) > self.cap {
            self.line = Vec::new();
            self.skipping = newline.is_none();
            return (take, Some(Frame::TooLong));
        }
        self.line.extend_from_slice(content);
        match newline {
            Some(_) => (take, Some(Frame::Line(std::mem::take(&mut self.line)))),
            None => (take, None),
        }
    }

    /// Bytes of an unfinished line held (never more than the cap).
    pub fn held(&self) -> usize {
        self.line.len()
    }
}

/// What a line is to the server.
#[derive(Debug)]
pub enum Classified {
    /// A message for rmcp.
    Message(Box<RxJsonRpcMessage<RoleServer>>),
    /// Not one: this error response is the answer.
    Answer(Value),
    /// Nothing to do (a blank line, a notification or response that cannot be taken).
    Skip(&'static str),
}

/// UTF-8 byte order mark. RFC 8259 §8.1 lets a parser ignore one at the start.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Classifies one line (without its `\n`).
pub fn classify(line: &[u8]) -> Classified {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix(BOM).unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Classified::Skip("a blank line");
    }
    let typed_error = match serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(line) {
        Ok(m) => return misfit(&m).unwrap_or(Classified::Message(Box::new(m))),
        Err(e) => e,
    };
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return Classified::Answer(error(
                Value::Null,
                ErrorCode::PARSE_ERROR,
                format!("Parse error: the line is not JSON: {e}"),
            ));
        }
    };
    let Some(object) = value.as_object() else {
        let what = match &value {
            Value::Array(a) if a.is_empty() => "an empty array",
            Value::Array(_) => "a batch (an array), which MCP does not take",
            _ => "not an object",
        };
        return invalid(Value::Null, format!("Invalid Request: {what}"));
    };
    // An id an answer can name: a string or a number (JSON-RPC 2.0 §5).
    let id = match object.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id.clone()),
        _ => None,
    };
    let answer_id = id.clone().unwrap_or(Value::Null);
    if object.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return invalid(
            answer_id,
            "Invalid Request: \"jsonrpc\" must be \"2.0\"".into(),
        );
    }
    match (object.get("method"), object.get("id")) {
        (Some(Value::String(method)), None) => {
            // A notification: never answered, even when it cannot be taken.
            tracing::debug!(%method, error = %typed_error, "skipping a notification the server cannot take");
            Classified::Skip("a notification the server cannot take")
        }
        (Some(Value::String(method)), Some(_)) => {
            let Some(id) = id else {
                return invalid(
                    Value::Null,
                    "Invalid Request: \"id\" must be a string or a number".into(),
                );
            };
            if !id.is_string() && !id.as_number().is_some_and(|n| n.is_i64()) {
                return invalid(
                    id,
                    "Invalid Request: \"id\" must be a string or an integer (that fits 64 bits)"
                        .into(),
                );
            }
            match object.get("params") {
                None | Some(Value::Object(_) | Value::Array(_)) => Classified::Answer(error(
                    id,
                    ErrorCode::INVALID_PARAMS,
                    format!("Invalid params for {method}: {typed_error}"),
                )),
                Some(_) => invalid(
                    id,
                    "Invalid Request: \"params\" must be an object or an array".into(),
                ),
            }
        }
        (Some(_), _) => invalid(
            answer_id,
            "Invalid Request: \"method\" must be a string".into(),
        ),
        (None, Some(_)) if object.contains_key("result") || object.contains_key("error") => {
            tracing::debug!(error = %typed_error, "skipping a response the server cannot take");
            Classified::Skip("a response the server cannot take")
        }
        (None, _) => invalid(
            answer_id,
            "Invalid Request: neither a request (no \"method\") nor a response".into(),
        ),
    }
}

/// The MCP requests a client sends a server. rmcp takes one whose parameters do not fit as a
/// custom request, which the handler would answer "method not found" — misleading for a
/// method that exists.
const STANDARD_REQUESTS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
    "completion/complete",
    "logging/setLevel",
];

/// A request for a method that exists whose parameters do not fit it: `-32602` with its id.
fn misfit(m: &RxJsonRpcMessage<RoleServer>) -> Option<Classified> {
    let JsonRpcMessage::Request(r) = m else {
        return None;
    };
    let ClientRequest::CustomRequest(c) = &r.request else {
        return None;
    };
    if !STANDARD_REQUESTS.contains(&c.method.as_str()) {
        return None;
    }
    let params = c.params.clone().unwrap_or(Value::Null);
    let why = match c.method.as_str() {
        "tools/call" => serde_json::from_value::<CallToolRequestParams>(params).err(),
        "initialize" => serde_json::from_value::<InitializeRequestParams>(params).err(),
        _ => None,
    }
    .map_or_else(
        || "they are not what it takes".to_owned(),
        |e| e.to_string(),
    );
    Some(Classified::Answer(error(
        r.id.clone().into_json_value(),
        ErrorCode::INVALID_PARAMS,
        format!("Invalid params for {}: {why}", c.method),
    )))
}

fn invalid(id: Value, message: String) -> Classified {
    Classified::Answer(error(id, ErrorCode::INVALID_REQUEST, message))
}

/// A JSON-RPC error response (`"id": null` when the request's could not be read).
fn error(id: Value, code: ErrorCode, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code.0, "message": message}})
}

/// The answer to a line over the cap.
fn too_large(cap: usize) -> Value {
    error(
        Value::Null,
        ErrorCode::INVALID_REQUEST,
        format!("Invalid Request: too large: a line of more than {cap} bytes, skipped unread"),
    )
}

/// The server's end of a line-delimited JSON-RPC channel.
pub struct Lines<R, W> {
    read: BufReader<R>,
    framer: Framer,
    write: Arc<tokio::sync::Mutex<Writer<W>>>,
    /// An answer not handed to the writer yet (kept here across a cancelled wait for it).
    pending: Option<Vec<u8>>,
    /// An answer the writer holds that is not flushed yet (a flush was cancelled).
    unflushed: bool,
}

impl<R, W> std::fmt::Debug for Lines<R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("framer", &self.framer)
            .finish()
    }
}

/// The write end: what is queued is written whole, in order, even across cancelled writes
/// (the bytes stay here until written).
struct Writer<W> {
    out: Option<W>,
    queue: Vec<u8>,
    /// How much of `queue` is written.
    done: usize,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    fn queue(&mut self, line: &[u8]) {
        if self.done == self.queue.len() {
            self.queue.clear();
            self.done = 0;
        }
        self.queue.extend_from_slice(line);
        self.queue.push(b'\n');
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let Some(out) = self.out.as_mut() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the MCP channel is closed",
            ));
        };
        while self.done < self.queue.len() {
            let n = out.write(&self.queue[self.done..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.done += n;
        }
        self.queue.clear();
        self.done = 0;
        out.flush().await
    }
}

impl<R, W> Lines<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// A channel reading `read`, writing `write`, taking lines of at most `cap` bytes.
    pub fn new(read: R, write: W, cap: usize) -> Self {
        Self {
            read: BufReader::with_capacity(READ_BUFFER, read),
            framer: Framer::new(cap),
            write: Arc::new(tokio::sync::Mutex::new(Writer {
                out: Some(write),
                queue: Vec::new(),
                done: 0,
            })),
            pending: None,
            unflushed: false,
        }
    }

    /// Writes the pending answer (and anything queued before it); false when the channel is
    /// gone. Cancellation-safe: until the writer has the answer it is in `self.pending`, and
    /// once it has it, it stays queued there until written.
    async fn answer(&mut self) -> bool {
        let mut w = self.write.lock().await;
        if let Some(a) = self.pending.take() {
            w.queue(&a);
            self.unflushed = true;
        }
        match w.flush().await {
            Ok(()) => {
                self.unflushed = false;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "writing an error answer on the MCP channel");
                false
            }
        }
    }
}

impl<R, W> Transport<RoleServer> for Lines<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let line = serde_json::to_vec(&item);
        let write = Arc::clone(&self.write);
        async move {
            let line = line.map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("encoding a message for the MCP channel: {e}"),
                )
            })?;
            let mut w = write.lock().await;
            w.queue(&line);
            w.flush().await
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        if (self.pending.is_some() || self.unflushed) && !self.answer().await {
            return None;
        }
        loop {
            let frame = loop {
                let available = match self.read.fill_buf().await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the MCP channel");
                        return None;
                    }
                };
                if available.is_empty() {
                    if self.framer.held() > 0 {
                        tracing::debug!(
                            bytes = self.framer.held(),
                            "the MCP channel ended in the middle of a line; it is dropped"
                        );
                    }
                    return None;
                }
                // No await between the framer taking bytes and the reader dropping them.
                let (used, frame) = self.framer.feed(available);
                self.read.consume(used);
                if let Some(f) = frame {
                    break f;
                }
            };
            let answer = match frame {
                Frame::TooLong => {
                    tracing::warn!(cap = self.framer.cap, "a line over the cap: refused unread");
                    too_large(self.framer.cap)
                }
                Frame::Line(line) => match classify(&line) {
                    Classified::Message(m) => return Some(*m),
                    Classified::Skip(what) => {
                        tracing::debug!("skipping {what}");
                        continue;
                    }
                    Classified::Answer(a) => {
                        tracing::debug!(answer = %a, "a line that is not a message");
                        a
                    }
                },
            };
            // Kept before the first await: a receive cancelled from here on still answers.
            self.pending = Some(answer.to_string().into_bytes());
            if !self.answer().await {
                return None;
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        let mut w = self.write.lock().await;
        let flushed = w.flush().await;
        if let Some(mut out) = w.out.take() {
            let _ = out.shutdown().await;
        }
        flushed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn answer_of(line: &[u8]) -> Value {
        match classify(line) {
            Classified::Answer(a) => a,
            other => panic!("{}: {other:?}", String::from_utf8_lossy(line)),
        }
    }

    #[test]
    fn lines_that_are_not_messages_are_answered_as_json_rpc_says() {
        for (line, code, id) in [
            (&br#"{this is not json"#[..], -32700, Value::Null),
            (b"\xff\xfe", -32700, Value::Null),
            (br#"{"a": "\xff"}"#, -32700, Value::Null),
            (b"[]", -32600, Value::Null),
            (
                br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                -32600,
                Value::Null,
            ),
            (b"42", -32600, Value::Null),
            (
                br#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#,
                -32600,
                json!(7),
            ),
            (br#"{"id":"x","method":"ping"}"#, -32600, json!("x")),
            (br#"{"jsonrpc":"2.0","id":3,"method":5}"#, -32600, json!(3)),
            (
                br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
                -32600,
                Value::Null,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                -32600,
                json!(1.5),
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":3}"#,
                -32600,
                json!(1),
            ),
            (br#"{"jsonrpc":"2.0","id":1}"#, -32600, json!(1)),
            (
                br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":1}}"#,
                -32602,
                json!(9),
            ),
            (
                br#"{"jsonrpc":"2.0","id":"i","method":"initialize","params":[]}"#,
                -32602,
                json!("i"),
            ),
            (
                br#"{"jsonrpc":"2.0","id":4,"method":"tools/call"}"#,
                -32602,
                json!(4),
            ),
        ] {
            let a = answer_of(line);
            assert_eq!(a["jsonrpc"], "2.0", "{a}");
            assert_eq!(
                a["error"]["code"],
                code,
                "{}: {a}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(a["id"], id, "{}: {a}", String::from_utf8_lossy(line));
            assert!(a["error"]["message"].is_string(), "{a}");
        }
    }

    #[test]
    fn messages_blank_lines_and_stray_notifications_are_not_answered() {
        for line in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#[..],
            b"\xEF\xBB\xBF{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\r",
            br#"{"jsonrpc":"2.0","id":2,"method":"no/such/method","params":{}}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ] {
            assert!(
                matches!(classify(line), Classified::Message(_)),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        for line in [
            &b""[..],
            b"\r",
            b"  \t",
            br#"{"jsonrpc":"2.0","method":"notifications/no-such-thing","params":5}"#,
            br#"{"jsonrpc":"2.0","id":null,"result":{}}"#,
        ] {
            assert!(
                matches!(classify(line), Classified::Skip(_)),
                "{}: {:?}",
                String::from_utf8_lossy(line),
                classify(line)
            );
        }
    }

    #[test]
    fn the_cap_fits_the_largest_write_the_server_takes() {
        let s = Settings::default();
        let content = "\u{1}".repeat(usize::try_from(s.max_file).unwrap());
        let line = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "write_file", "arguments": {"path": "/workspace/x", "content": content}}})
        .to_string();
        assert!(
            line.len() <= line_cap(&s),
            "{} > {}",
            line.len(),
            line_cap(&s)
        );
        assert!(line_cap(&s) >= MIN_LINE_CAP);
    }

    /// Feeds `input` to a framer in pieces cut at `cuts`, as reads would come.
    fn frames(cap: usize, input: &[u8], cuts: &[usize]) -> (Vec<Frame>, usize) {
        let mut f = Framer::new(cap);
        let mut out = Vec::new();
        let mut most = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.push(input.len());
        points.sort_unstable();
        let mut start = 0;
        for end in points {
            let mut piece = &input[start..end];
            while !piece.is_empty() {
                let (used, frame) = f.feed(piece);
                assert!(used > 0 && used <= piece.len());
                piece = &piece[used..];
                out.extend(frame);
                most = most.max(f.held());
            }
            start = end;
        }
        (out, most)
    }

    /// What a framer should find: each `\n`-ended line, or TooLong for one over the cap.
    fn expected(cap: usize, input: &[u8]) -> Vec<Frame> {
        let mut lines: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
        lines.pop(); // after the last newline: unfinished (or empty)
        let mut out: Vec<Frame> = lines
            .into_iter()
            .map(|l| {
                if l.len() > cap {
                    Frame::TooLong
                } else {
                    Frame::Line(l.to_vec())
                }
            })
            .collect();
        // An unfinished last line already over the cap is refused before its end comes.
        let tail = input.rsplit(|b| *b == b'\n').next().unwrap_or_default();
        if tail.len() > cap {
            out.push(Frame::TooLong);
        }
        out
    }

    fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'x')], 0..40),
            "[a-z{}\":,\\r\\n ]{0,40}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Wherever the reads split the stream, the framer finds the same lines, refuses
        /// exactly the lines over the cap, and never holds more than the cap.
        #[test]
        fn framing_is_the_same_wherever_the_stream_is_split(
            parts in proptest::collection::vec(line_bytes(), 0..8),
            cap in 0usize..24,
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let input: Vec<u8> = parts.concat();
            let (got, most) = frames(cap, &input, &cuts);
            prop_assert_eq!(got, expected(cap, &input));
            prop_assert!(most <= cap);
        }

        /// A CRLF line is the same message as an LF line.
        #[test]
        fn crlf_and_lf_lines_are_the_same_message(id in any::<i64>(), method in "[a-z/]{1,12}") {
            let line = json!({"jsonrpc": "2.0", "id": id, "method": method}).to_string();
            let lf = classify(line.as_bytes());
            let crlf = classify(format!("{line}\r").as_bytes());
            prop_assert_eq!(format!("{lf:?}"), format!("{crlf:?}"));
        }

        /// Any line gets at most one answer, and an answer is a JSON-RPC error response.
        #[test]
        fn any_line_is_a_message_an_error_answer_or_skipped(line in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Classified::Answer(a) = classify(&line) {
                prop_assert_eq!(&a["jsonrpc"], "2.0");
                let code = a["error"]["code"].as_i64().unwrap();
                prop_assert!([-32700, -32600, -32602].contains(&code), "{}", a);
                prop_assert!(a.get("id").is_some());
            }
        }
    }
}
