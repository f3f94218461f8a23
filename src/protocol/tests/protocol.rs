//! Protocol tests: framing under fragmentation and hostile input, and the multiplexing client
//! against a scripted fake agent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use luminaguard_protocol::frame::{HEADER_LEN, encode_frame, encode_frame_parts};
use luminaguard_protocol::handshake::{Hello, HelloReply};
use luminaguard_protocol::message::*;
use luminaguard_protocol::{
    Client, ClientError, ClientOptions, FrameCodec, FrameError, Incoming, MAX_FRAME_LEN,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::UnixStream;
use tokio_util::codec::{Decoder, FramedRead};

type HostCodec = FrameCodec<Reply, Request>;
type AgentCodec = FrameCodec<Request, Reply>;

fn encode<T: serde::Serialize + luminaguard_protocol::frame::Message>(
    id: u64,
    body: &T,
    buf: &mut BytesMut,
) {
    encode_frame(id, body, buf, MAX_FRAME_LEN).unwrap();
}

/// Feeds `bytes` to a decoder in random-sized chunks (1 byte to `max_chunk`).
fn decode_fragmented(bytes: &[u8], max_chunk: usize, seed: u64) -> Vec<Incoming<Request>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut codec = AgentCodec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let n = rng.random_range(1..=max_chunk).min(bytes.len() - pos);
        buf.extend_from_slice(&bytes[pos..pos + n]);
        pos += n;
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
    }
    assert!(buf.is_empty(), "bytes left over after the last frame");
    out
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..2048)
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        arb_bytes().prop_map(|b| Request::Input(b.into())),
        Just(Request::InputEnd),
        Just(Request::Cancel),
        (
            prop::collection::vec(".{0,20}", 1..5),
            prop::collection::vec((".{0,10}", ".{0,10}"), 0..4),
            any::<bool>(),
            prop::option::of(".{0,20}"),
            any::<bool>(),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>()),
        )
            .prop_map(
                |(argv, env, clear_env, cwd, stdin, timeout_ms, output_limit)| {
                    Request::Exec(ExecRequest {
                        argv,
                        env,
                        clear_env,
                        cwd,
                        stdin,
                        timeout_ms,
                        output_limit,
                    })
                }
            ),
        (".{0,40}", any::<u64>(), prop::option::of(any::<u64>())).prop_map(
            |(path, offset, limit)| Request::ReadFile(ReadFileRequest {
                path,
                offset,
                limit
            })
        ),
        (".{0,40}", any::<u32>(), any::<bool>()).prop_map(|(path, mode, parents)| Request::Mkdir {
            path,
            mode,
            parents
        }),
        Just(Request::Shutdown),
        prop::collection::vec(any::<u8>(), 0..600).prop_map(|entropy| Request::Reseed { entropy }),
        any::<u64>().prop_map(|unix_nanos| Request::SetClock { unix_nanos }),
        (any::<u64>(), any::<u64>()).prop_map(|(lower_bytes, layer_bytes)| {
            Request::ReviewSetup(luminaguard_protocol::ReviewSetupRequest {
                lower_bytes,
                layer_bytes,
            })
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(max_entries, max_file_bytes)| {
            Request::ReviewExport(luminaguard_protocol::ReviewExportRequest {
                max_entries,
                max_file_bytes,
            })
        }),
    ]
}

fn arb_reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        Just(Reply::Pong),
        any::<u32>().prop_map(|pid| Reply::Started { pid }),
        arb_bytes().prop_map(|b| Reply::Stdout(b.into())),
        arb_bytes().prop_map(|b| Reply::Data(b.into())),
        (
            prop::option::of(any::<i32>()),
            prop::option::of(any::<i32>()),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(|(code, signal, timed_out, output_bytes)| Reply::Exited(
                ExitStatus {
                    code,
                    signal,
                    timed_out,
                    output_bytes,
                    ..Default::default()
                }
            )),
        ".{0,60}".prop_map(|m| Reply::Error(ErrorReply::new(ErrorCode::NotFound, m))),
    ]
}

proptest! {
    #[test]
    fn request_frames_round_trip(reqs in prop::collection::vec((any::<u64>(), arb_request()), 1..20), seed in any::<u64>()) {
        let mut buf = BytesMut::new();
        for (id, r) in &reqs {
            encode(*id, r, &mut buf);
        }
        let got = decode_fragmented(&buf, 64, seed);
        prop_assert_eq!(got.len(), reqs.len());
        for ((id, r), item) in reqs.iter().zip(got) {
            prop_assert_eq!(item, Incoming::Frame(luminaguard_protocol::Frame::new(*id, r.clone())));
        }
    }

    #[test]
    fn reply_frames_round_trip(id in any::<u64>(), reply in arb_reply()) {
        let mut buf = BytesMut::new();
        encode(id, &reply, &mut buf);
        let mut codec = HostCodec::default();
        let got = codec.decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(got, Incoming::Frame(luminaguard_protocol::Frame::new(id, reply)));
        prop_assert!(buf.is_empty());
    }

    /// Arbitrary bytes never panic the decoder and never make it hold more than one frame's limit.
    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut codec = AgentCodec::with_max_frame_len(1024);
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(FrameError::TooLarge { .. } | FrameError::TooShort(_)) => break,
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
        prop_assert!(buf.capacity() <= 4096 + 1024 + HEADER_LEN);
    }
}

#[test]
fn ten_thousand_pipelined_frames_survive_any_fragmentation() {
    let mut buf = BytesMut::new();
    for id in 1..=10_000u64 {
        let req = if id % 3 == 0 {
            Request::Input(vec![id as u8; (id % 700) as usize].into())
        } else {
            Request::Stat {
                path: format!("/f/{id}"),
                follow_symlinks: id % 2 == 0,
            }
        };
        encode(id, &req, &mut buf);
    }
    for (max_chunk, seed) in [(1, 1), (7, 2), (4096, 3), (1 << 20, 4)] {
        let got = decode_fragmented(&buf, max_chunk, seed);
        let ids: Vec<u64> = got
            .iter()
            .map(|i| match i {
                Incoming::Frame(f) => f.id,
                Incoming::Malformed { id, error } => panic!("frame {id} malformed: {error}"),
            })
            .collect();
        assert_eq!(
            ids,
            (1..=10_000).collect::<Vec<_>>(),
            "chunks up to {max_chunk}"
        );
    }
}

#[test]
fn oversize_frame_is_refused_before_buffering() {
    let mut codec = AgentCodec::default();
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&((MAX_FRAME_LEN + 1) as u32).to_le_bytes());
    match codec.decode(&mut buf) {
        Err(FrameError::TooLarge { len, max }) => {
            assert_eq!((len, max), (MAX_FRAME_LEN + 1, MAX_FRAME_LEN))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(
        buf.capacity() < 1024,
        "decoder reserved {} bytes for a refused frame",
        buf.capacity()
    );
    let mut buf = BytesMut::from(&3u32.to_le_bytes()[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::TooShort(3))
    ));
}

#[test]
fn encoder_refuses_messages_over_the_limit() {
    let mut buf = BytesMut::new();
    let err = encode_frame(1, &Request::Input(vec![0; 2048].into()), &mut buf, 1024).unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
    assert!(buf.is_empty(), "failed encode left bytes behind");
}

#[tokio::test]
async fn truncated_frame_is_an_error_at_eof() {
    let mut buf = BytesMut::new();
    encode(5, &Request::Ping, &mut buf);
    encode(6, &Request::Input(vec![1; 100].into()), &mut buf);
    let cut = &buf[..buf.len() - 10];
    let mut framed = FramedRead::new(cut, AgentCodec::default());
    assert!(matches!(framed.next().await, Some(Ok(Incoming::Frame(f))) if f.id == 5));
    match framed.next().await {
        Some(Err(FrameError::Truncated { have, need })) => assert!(have < need),
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn unknown_message_type_is_reported_with_its_id_and_decoding_continues() {
    let mut buf = BytesMut::new();
    // A frame whose payload is variant index 200 — a message type this build does not know.
    buf.extend_from_slice(&9u32.to_le_bytes());
    buf.extend_from_slice(&77u64.to_le_bytes());
    buf.extend_from_slice(&[200]);
    // Trailing garbage after a valid message.
    buf.extend_from_slice(&10u32.to_le_bytes());
    buf.extend_from_slice(&78u64.to_le_bytes());
    buf.extend_from_slice(&[1, 0xff]); // Ping + one stray byte
    encode(79, &Request::Ping, &mut buf);
    let got = decode_fragmented(&buf, 3, 9);
    assert!(
        matches!(&got[0], Incoming::Malformed { id: 77, error } if error.contains("undecodable"))
    );
    assert!(matches!(&got[1], Incoming::Malformed { id: 78, error } if error.contains("trailing")));
    assert_eq!(
        got[2],
        Incoming::Frame(luminaguard_protocol::Frame::new(79, Request::Ping))
    );
}

/// Bulk data crosses the codec without a copy: the encoder hands the caller's `Bytes` back as
/// the trailer, and the decoder's trailer is a slice of the buffer the frame was read into.
#[test]
fn bulk_data_is_neither_copied_on_encode_nor_on_decode() {
    let data = bytes::Bytes::from(vec![7u8; 300 << 10]);
    let mut head = BytesMut::new();
    let trailer =
        encode_frame_parts(9, &Request::Input(data.clone()), &mut head, MAX_FRAME_LEN).unwrap();
    assert_eq!(
        trailer.as_ptr(),
        data.as_ptr(),
        "encoder copied the trailer"
    );
    assert_eq!(
        head.len(),
        HEADER_LEN + 1,
        "header is length, id and the variant tag"
    );

    let mut buf = BytesMut::new();
    buf.extend_from_slice(&head);
    buf.extend_from_slice(&trailer);
    encode(10, &Request::InputEnd, &mut buf);
    let range = buf.as_ptr_range();
    let mut codec = AgentCodec::default();
    let Some(Incoming::Frame(f)) = codec.decode(&mut buf).unwrap() else {
        panic!("no frame")
    };
    let Request::Input(got) = f.body else {
        panic!("not input: {:?}", f.body)
    };
    assert_eq!(got, data);
    assert!(
        range.contains(&got.as_ptr()),
        "decoded trailer was copied out of the read buffer"
    );
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Incoming::Frame(luminaguard_protocol::Frame::new(
            10,
            Request::InputEnd
        )))
    );
}

/// The regression corpus of the `frame_decoder` fuzz target: every input must decode without a
/// panic (the fuzz target itself needs nightly and runs outside CI).
#[test]
fn fuzz_corpus_replays_cleanly() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/frame_decoder");
    #[allow(clippy::disallowed_methods)]
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        entries.len() >= 8,
        "corpus at {dir:?} has only {} inputs",
        entries.len()
    );
    for path in entries {
        #[allow(clippy::disallowed_methods)]
        let bytes = std::fs::read(&path).unwrap();
        luminaguard_protocol::frame::fuzz_decode_all(&bytes);
    }
}

/// The corpus's valid seeds are frames of this protocol version (a wire-format change that
/// forgets the corpus fails here), and its hostile ones are refused the way they are meant to be.
#[test]
fn fuzz_corpus_seeds_match_the_wire_format() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/frame_decoder");
    let decode = |name: &str| {
        #[allow(clippy::disallowed_methods)]
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let mut codec = FrameCodec::<Request, ()>::with_max_frame_len(64 << 10);
        let mut buf = BytesMut::from(&bytes[..]);
        let mut out = Vec::new();
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
        assert!(buf.is_empty(), "{name}: bytes left over");
        out
    };
    let frame = |id, body| Incoming::Frame(luminaguard_protocol::Frame::new(id, body));
    assert_eq!(
        decode("hello"),
        vec![frame(0, Request::Hello(Hello::ours("test")))]
    );
    let Incoming::Frame(old) = &decode("hello-v1")[0] else {
        panic!("a version-1 hello must still decode")
    };
    assert!(matches!(&old.body, Request::Hello(h) if h.max_version == 1));
    assert_eq!(
        decode("input-then-end"),
        vec![
            frame(4, Request::Input(bytes::Bytes::from_static(b"hello"))),
            frame(4, Request::InputEnd)
        ]
    );
    let bulk: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        decode("input-bulk"),
        vec![
            frame(5, Request::Input(bulk.into())),
            frame(5, Request::InputEnd)
        ]
    );
    assert_eq!(
        decode("input-empty"),
        vec![frame(6, Request::Input(bytes::Bytes::new()))]
    );
    assert_eq!(decode("two-pings").len(), 2);
    assert!(matches!(
        &decode("huge-inner-length")[0],
        Incoming::Malformed { id: 11, .. }
    ));
    assert!(
        matches!(&decode("trailing-bytes")[0], Incoming::Malformed { error, .. } if error.contains("trailing"))
    );
}

// ---- client against a scripted fake agent ------------------------------------------------------

/// A reader that returns at most a random number of bytes per read.
struct Chunky<R> {
    inner: R,
    rng: StdRng,
    max: usize,
}

impl<R: AsyncRead + Unpin> AsyncRead for Chunky<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let max = self.max;
        let n = self.rng.random_range(1..=max).min(buf.remaining());
        let mut tmp = vec![0u8; n];
        let mut small = ReadBuf::new(&mut tmp);
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, &mut small) {
            Poll::Ready(Ok(())) => {
                buf.put_slice(small.filled());
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// The agent end of a socket pair, after it has accepted the handshake.
struct FakeAgent {
    read: FramedRead<tokio::net::unix::OwnedReadHalf, AgentCodec>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl FakeAgent {
    async fn recv(&mut self) -> luminaguard_protocol::Frame<Request> {
        match self.read.next().await {
            Some(Ok(Incoming::Frame(f))) => f,
            other => panic!("fake agent expected a frame, got {other:?}"),
        }
    }
    async fn send_raw(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.unwrap();
    }
    async fn send(&mut self, id: u64, reply: Reply) {
        let mut buf = BytesMut::new();
        encode(id, &reply, &mut buf);
        self.send_raw(&buf).await;
    }
}

fn opts() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// Connects a client whose reads are randomly fragmented to a fake agent that accepts the hello.
async fn pair(options: ClientOptions, max_read: usize) -> (Client, FakeAgent) {
    let (host, agent) = UnixStream::pair().unwrap();
    let (ar, aw) = agent.into_split();
    let mut fake = FakeAgent {
        read: FramedRead::new(ar, AgentCodec::default()),
        write: aw,
    };
    let (hr, hw) = host.into_split();
    let chunky = Chunky {
        inner: hr,
        rng: StdRng::seed_from_u64(42),
        max: max_read,
    };
    let (client, ()) = tokio::join!(
        async { Client::connect_split(chunky, hw, options).await.unwrap() },
        async {
            let hello = fake.recv().await;
            assert_eq!(hello.id, 0);
            assert!(matches!(hello.body, Request::Hello(_)));
            fake.send(
                0,
                Reply::Hello(HelloReply::Accepted {
                    version: luminaguard_protocol::handshake::MAX_VERSION,
                    capabilities: vec!["exec".into()],
                    software: "fake".into(),
                }),
            )
            .await;
        }
    );
    (client, fake)
}

/// An agent that claims to accept a version this host does not speak is refused, not used.
#[tokio::test]
async fn client_refuses_an_agent_accepting_a_version_it_does_not_speak() {
    let (host, agent) = UnixStream::pair().unwrap();
    let server = tokio::spawn(async move {
        let (ar, mut aw) = agent.into_split();
        let mut read = FramedRead::new(ar, AgentCodec::default());
        let Some(Ok(Incoming::Frame(_hello))) = read.next().await else {
            panic!("no hello")
        };
        let mut buf = BytesMut::new();
        encode(
            0,
            &Reply::Hello(HelloReply::Accepted {
                version: 1,
                capabilities: vec![],
                software: "v1 agent".into(),
            }),
            &mut buf,
        );
        aw.write_all(&buf).await.unwrap();
        read
    });
    match Client::connect(host, opts()).await {
        Err(ClientError::Incompatible(m)) => assert!(m.contains("version 1"), "{m}"),
        other => panic!("expected Incompatible, got {other:?}"),
    }
    server.await.unwrap();
}

/// Streams the client's write path end to end against a fake agent: a file's worth of input
/// arrives intact, in order, in chunks of at most `MAX_CHUNK`.
#[tokio::test]
async fn write_file_from_streams_chunks_in_order() {
    let (client, mut fake) = pair(opts(), 1 << 16).await;
    let data: Vec<u8> = (0..(3 * luminaguard_protocol::MAX_CHUNK + 12345))
        .map(|i| (i % 251) as u8)
        .collect();
    let upload = tokio::spawn({
        let (c, data) = (client.clone(), data.clone());
        async move {
            let req = WriteFileRequest {
                path: "/x".into(),
                mode: 0o600,
                parents: false,
            };
            c.write_file_from(req, &mut &data[..]).await
        }
    });
    let open = fake.recv().await;
    assert!(matches!(open.body, Request::WriteFile(_)));
    let mut got = Vec::new();
    loop {
        let f = fake.recv().await;
        assert_eq!(f.id, open.id);
        match f.body {
            Request::Input(chunk) => {
                assert!(chunk.len() <= luminaguard_protocol::MAX_CHUNK);
                got.extend_from_slice(&chunk);
            }
            Request::InputEnd => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got == data, "uploaded bytes differ");
    fake.send(
        open.id,
        Reply::Written {
            bytes: got.len() as u64,
        },
    )
    .await;
    assert_eq!(upload.await.unwrap().unwrap(), data.len() as u64);
}

#[tokio::test]
async fn ten_thousand_requests_in_one_burst_each_get_their_own_reply() {
    const N: u64 = 10_000;
    let (client, mut fake) = pair(opts(), 1500).await;
    assert_eq!(client.peer().capabilities, vec!["exec".to_string()]);
    let calls: FuturesUnordered<_> = (0..N)
        .map(|i| {
            let c = client.clone();
            async move {
                let st = c.stat(&format!("/file/{i}"), false).await?;
                Ok::<_, ClientError>((i, st.size))
            }
        })
        .collect();
    let agent = async {
        // Read every request first, then answer all of them at once, in a shuffled order.
        let mut reqs = Vec::new();
        while reqs.len() < N as usize {
            let f = fake.recv().await;
            let Request::Stat { path, .. } = f.body else {
                panic!("unexpected {:?}", f.body)
            };
            let n: u64 = path.rsplit('/').next().unwrap().parse().unwrap();
            reqs.push((f.id, n));
        }
        reqs.shuffle(&mut StdRng::seed_from_u64(7));
        let mut burst = BytesMut::new();
        for (id, n) in reqs {
            let stat = FileStat {
                kind: FileKind::File,
                size: n,
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime_unix_ms: 0,
                symlink_target: None,
            };
            encode(id, &Reply::Stat(stat), &mut burst);
        }
        fake.send_raw(&burst).await;
        fake
    };
    let (results, _fake) = tokio::join!(calls.collect::<Vec<_>>(), agent);
    let mut seen = HashSet::new();
    for r in results {
        let (i, size) = r.unwrap();
        assert_eq!(i, size, "reply routed to the wrong request");
        assert!(seen.insert(i), "request {i} answered twice");
    }
    assert_eq!(seen.len(), N as usize);
}

#[tokio::test]
async fn agent_death_fails_every_pending_call_promptly() {
    let (client, mut fake) = pair(opts(), 64).await;
    let pending: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn({
                let c = client.clone();
                async move { c.ping().await }
            })
        })
        .collect();
    for _ in 0..5 {
        fake.recv().await;
    }
    drop(fake);
    for p in pending {
        match p.await.unwrap() {
            Err(ClientError::Closed(reason)) => assert!(reason.contains("closed"), "{reason}"),
            other => panic!("expected Closed, got {other:?}"),
        }
    }
    assert!(client.is_closed());
    assert!(matches!(client.ping().await, Err(ClientError::Closed(_))));
}

#[tokio::test]
async fn silence_is_a_timeout_not_a_hang() {
    let options = ClientOptions {
        request_timeout: Duration::from_millis(200),
        ..opts()
    };
    let (client, _fake) = pair(options, 64).await;
    match client.ping().await {
        Err(ClientError::Timeout { what, .. }) => assert_eq!(what, "a reply"),
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_reply_fails_only_its_own_call() {
    let (client, mut fake) = pair(opts(), 64).await;
    let a = tokio::spawn({
        let c = client.clone();
        async move { c.ping().await }
    });
    let ida = fake.recv().await.id;
    let b = tokio::spawn({
        let c = client.clone();
        async move { c.ping().await }
    });
    let idb = fake.recv().await.id;
    let mut raw = BytesMut::new();
    raw.extend_from_slice(&9u32.to_le_bytes());
    raw.extend_from_slice(&ida.to_le_bytes());
    raw.extend_from_slice(&[250]);
    fake.send_raw(&raw).await;
    fake.send(idb, Reply::Pong).await;
    assert_eq!(
        a.await.unwrap().unwrap_err().remote_code(),
        Some(ErrorCode::Malformed)
    );
    b.await.unwrap().unwrap();
}

#[tokio::test]
async fn oversize_reply_closes_the_connection_with_the_reason() {
    let (client, mut fake) = pair(opts(), 64).await;
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.ping().await }
    });
    fake.recv().await;
    fake.send_raw(&((MAX_FRAME_LEN as u32) + 1).to_le_bytes())
        .await;
    match call.await.unwrap() {
        Err(ClientError::Closed(reason)) => assert!(reason.contains("exceeds"), "{reason}"),
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[tokio::test]
async fn remote_errors_and_wrong_reply_kinds_surface() {
    let (client, mut fake) = pair(opts(), 64).await;
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.stat("/nope", true).await }
    });
    let id = fake.recv().await.id;
    fake.send(
        id,
        Reply::Error(ErrorReply::new(ErrorCode::NotFound, "/nope: no such file")),
    )
    .await;
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::NotFound));
    assert!(err.to_string().contains("/nope"), "{err}");

    let call = tokio::spawn({
        let c = client.clone();
        async move { c.info().await }
    });
    let id = fake.recv().await.id;
    fake.send(id, Reply::Pong).await;
    assert!(matches!(call.await.unwrap(), Err(ClientError::Protocol(m)) if m.contains("pong")));
}

#[tokio::test]
async fn refused_or_missing_handshake_is_a_clear_error() {
    let (host, agent) = UnixStream::pair().unwrap();
    let server = tokio::spawn(async move {
        let (ar, mut aw) = agent.into_split();
        let mut read = FramedRead::new(ar, AgentCodec::default());
        let Some(Ok(Incoming::Frame(f))) = read.next().await else {
            panic!("no hello")
        };
        let Request::Hello(h) = f.body else {
            panic!("not a hello")
        };
        assert_eq!(
            h,
            Hello {
                software: h.software.clone(),
                ..Hello::ours("")
            }
        );
        let mut buf = BytesMut::new();
        encode(
            0,
            &Reply::Hello(HelloReply::Refused {
                reason: "too old".into(),
                min_version: 7,
                max_version: 9,
            }),
            &mut buf,
        );
        aw.write_all(&buf).await.unwrap();
    });
    match Client::connect(host, opts()).await {
        Err(ClientError::Incompatible(m)) => {
            assert!(m.contains("too old") && m.contains("7..=9"), "{m}")
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    server.await.unwrap();

    let (host, _silent) = UnixStream::pair().unwrap();
    let options = ClientOptions {
        handshake_timeout: Duration::from_millis(100),
        ..opts()
    };
    assert!(matches!(
        Client::connect(host, options).await,
        Err(ClientError::Timeout { what: "hello", .. })
    ));
}

#[tokio::test]
async fn dropping_a_stream_cancels_it_on_the_agent() {
    let (client, mut fake) = pair(opts(), 64).await;
    let exec = client
        .exec(ExecRequest {
            argv: vec!["sleep".into(), "100".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let started = fake.recv().await;
    assert!(
        matches!(&started.body, Request::Exec(e) if e.timeout_ms == Some(300_000)),
        "default exec timeout is sent"
    );
    drop(exec);
    let cancel = fake.recv().await;
    assert_eq!((cancel.id, cancel.body), (started.id, Request::Cancel));
}
