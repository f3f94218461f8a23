//! Host↔guest protocol throughput, side by side with a raw Unix-socket floor in the same run.
//!
//! `cargo bench -p luminaguard-agent --bench protocol [-- --quick] [-- --json]`
//!
//! - small request/response pairs per second on one connection, sequential and pipelined, against
//!   a raw echo of same-sized messages over the same kind of socket;
//! - bulk file transfer (agent `ReadFile` of a file on tmpfs, and `WriteFile` to tmpfs) against
//!   the same file I/O plus a raw socket stream, and against a raw socket stream alone.
//!
//! The agent side is the real connection handler (`serve_connection`) in this process, behind a
//! real Unix socket pair; the client is the real host client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // bench code

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use luminaguard_agent::reaper::Reaper;
use luminaguard_agent::server::{AgentContext, serve_connection};
use luminaguard_protocol::message::{ReadFileRequest, WriteFileRequest};
use luminaguard_protocol::{Client, ClientOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

/// Size of a Ping request frame on the wire (12-byte header + 1-byte message), which the raw
/// echo uses as its message size.
const SMALL: usize = 13;

struct Sizes {
    seq_pairs: usize,
    pipelined_pairs: usize,
    window: usize,
    bulk_bytes: usize,
}

#[derive(serde::Serialize)]
struct Row {
    name: &'static str,
    unit: &'static str,
    luminaguard: f64,
    raw_floor: f64,
    ratio: f64,
}

async fn agent_client(ctx: &Arc<AgentContext>) -> Client {
    let (host, guest) = UnixStream::pair().unwrap();
    tokio::spawn(serve_connection(guest, ctx.clone()));
    Client::connect(host, ClientOptions::default())
        .await
        .unwrap()
}

async fn raw_echo_pair() -> (UnixStream, tokio::task::JoinHandle<()>) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let echo = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match b.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if b.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    (a, echo)
}

async fn raw_sequential(n: usize) -> f64 {
    let (mut s, _echo) = raw_echo_pair().await;
    let msg = [7u8; SMALL];
    let mut back = [0u8; SMALL];
    let start = Instant::now();
    for _ in 0..n {
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut back).await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Raw floor for pipelining: one write per message (as each request is its own frame), the
/// reader draining replies concurrently, at most `window` messages outstanding.
async fn raw_pipelined(n: usize, window: usize) -> f64 {
    let (s, _echo) = raw_echo_pair().await;
    let (mut r, mut w) = s.into_split();
    let credits = Arc::new(tokio::sync::Semaphore::new(window));
    let start = Instant::now();
    let reader = tokio::spawn({
        let credits = credits.clone();
        async move {
            let mut buf = vec![0u8; 64 << 10];
            let (mut got, mut done) = (0usize, 0usize);
            while done < n {
                got += r.read(&mut buf).await.unwrap();
                let whole = got / SMALL;
                credits.add_permits(whole - done);
                done = whole;
            }
        }
    });
    let msg = [7u8; SMALL];
    for _ in 0..n {
        credits.acquire().await.unwrap().forget();
        w.write_all(&msg).await.unwrap();
    }
    reader.await.unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

async fn lg_sequential(c: &Client, n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        c.ping().await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn lg_pipelined(c: &Client, n: usize, window: usize) -> f64 {
    let start = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut issued = 0;
    while issued < n || !inflight.is_empty() {
        while issued < n && inflight.len() < window {
            let c = c.clone();
            inflight.push(async move { c.ping().await });
            issued += 1;
        }
        inflight.next().await.unwrap().unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Raw floor for bulk: two blocking threads streaming `bytes` through a Unix socket pair in
/// 1 MiB writes — the kernel's socket throughput with no runtime in the way.
async fn raw_bulk(bytes: usize) -> f64 {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let start = Instant::now();
        let writer = std::thread::spawn(move || {
            let chunk = vec![1u8; 1 << 20];
            for _ in 0..bytes / chunk.len() {
                a.write_all(&chunk).unwrap();
            }
        });
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < bytes {
            got += b.read(&mut buf).unwrap();
        }
        writer.join().unwrap();
        mib_per_s(bytes, start.elapsed())
    })
    .await
    .unwrap()
}

/// Raw floor for a file read: one thread reads the file and writes it to a socket, another
/// drains the socket — the same file I/O as the agent does, with nothing else.
async fn raw_file_read(path: String, bytes: usize) -> f64 {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let start = Instant::now();
        let sender = std::thread::spawn(move || {
            let mut f = std::fs::File::open(path).unwrap();
            let mut chunk = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                a.write_all(&chunk[..n]).unwrap();
            }
        });
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < bytes {
            got += b.read(&mut buf).unwrap();
        }
        sender.join().unwrap();
        mib_per_s(bytes, start.elapsed())
    })
    .await
    .unwrap()
}

/// Raw floor for a file write: socket to file, plus the fsync the agent does.
async fn raw_file_write(path: String, bytes: usize) -> f64 {
    let _ = tokio::fs::remove_file(&path).await;
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let start = Instant::now();
        let sender = std::thread::spawn(move || {
            let chunk = vec![1u8; 1 << 20];
            for _ in 0..bytes / chunk.len() {
                a.write_all(&chunk).unwrap();
            }
        });
        let mut f = std::fs::File::create(&path).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < bytes {
            let n = b.read(&mut buf).unwrap();
            f.write_all(&buf[..n]).unwrap();
            got += n;
        }
        f.sync_all().unwrap();
        sender.join().unwrap();
        mib_per_s(bytes, start.elapsed())
    })
    .await
    .unwrap()
}

fn mib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn scratch_dir() -> tempfile::TempDir {
    // tmpfs keeps the disk out of a protocol measurement when the host has one.
    match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

async fn lg_read_bulk(c: &Client, path: &str, bytes: usize) -> f64 {
    let start = Instant::now();
    let mut sink = tokio::io::sink();
    let n = c
        .read_file_to(
            ReadFileRequest {
                path: path.to_owned(),
                offset: 0,
                limit: None,
            },
            &mut sink,
        )
        .await
        .unwrap();
    assert_eq!(n as usize, bytes);
    mib_per_s(bytes, start.elapsed())
}

async fn lg_write_bulk(c: &Client, path: &str, data: &[u8]) -> f64 {
    // Measure the transfer, not tmpfs freeing the previous round's file on rename.
    let _ = tokio::fs::remove_file(path).await;
    let start = Instant::now();
    let req = WriteFileRequest {
        path: path.to_owned(),
        mode: 0o600,
        parents: false,
    };
    let n = c.write_file_from(req, &mut &data[..]).await.unwrap();
    assert_eq!(n as usize, data.len());
    mib_per_s(data.len(), start.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().any(|a| a == "--json");
    let sizes = if quick {
        Sizes {
            seq_pairs: 2_000,
            pipelined_pairs: 20_000,
            window: 64,
            bulk_bytes: 64 << 20,
        }
    } else {
        Sizes {
            seq_pairs: 20_000,
            pipelined_pairs: 300_000,
            window: 64,
            bulk_bytes: 1 << 30,
        }
    };
    let rounds = if quick { 1 } else { 3 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows = rt.block_on(async {
        let ctx = Arc::new(AgentContext {
            reaper: Reaper::start().unwrap(),
            audit: None,
            shutdown: CancellationToken::new(),
        });
        let c = agent_client(&ctx).await;
        let dir = scratch_dir();
        let file = dir.path().join("bulk.bin");
        let data = vec![0xa5u8; sizes.bulk_bytes];
        tokio::fs::write(&file, &data).await.unwrap();
        let file = file.to_str().unwrap().to_owned();
        let out = dir.path().join("written.bin").to_str().unwrap().to_owned();

        let mut rows = Vec::new();
        // Alternates ours and the floor each round so drift affects both alike.
        macro_rules! measure {
            ($name:expr, $unit:expr, $ours:expr, $floor:expr) => {{
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for _ in 0..rounds {
                    a.push($ours.await);
                    b.push($floor.await);
                }
                let (l, r) = (median(a), median(b));
                rows.push(Row {
                    name: $name,
                    unit: $unit,
                    luminaguard: l,
                    raw_floor: r,
                    ratio: l / r,
                });
            }};
        }
        let (seq, pip, w, b) = (
            sizes.seq_pairs,
            sizes.pipelined_pairs,
            sizes.window,
            sizes.bulk_bytes,
        );
        measure!(
            "small pairs, sequential",
            "pairs/s",
            lg_sequential(&c, seq),
            raw_sequential(seq)
        );
        measure!(
            "small pairs, 64 in flight",
            "pairs/s",
            lg_pipelined(&c, pip, w),
            raw_pipelined(pip, w)
        );
        measure!(
            "bulk read, vs raw socket alone",
            "MiB/s",
            lg_read_bulk(&c, &file, b),
            raw_bulk(b)
        );
        measure!(
            "bulk read file (guest->host)",
            "MiB/s",
            lg_read_bulk(&c, &file, b),
            raw_file_read(file.clone(), b)
        );
        measure!(
            "bulk write file (host->guest)",
            "MiB/s",
            lg_write_bulk(&c, &out, &data),
            raw_file_write(out.clone(), b)
        );
        rows
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap());
        return;
    }
    println!(
        "host<->guest protocol over a Unix socket ({} round(s), median){}",
        rounds,
        if quick { " [quick]" } else { "" }
    );
    println!(
        "{:<40} {:>14} {:>14} {:>8}  unit",
        "measure", "luminaguard", "raw floor", "ratio"
    );
    for r in &rows {
        println!(
            "{:<40} {:>14.0} {:>14.0} {:>7.2}x  {}",
            r.name, r.luminaguard, r.raw_floor, r.ratio, r.unit
        );
    }
}
