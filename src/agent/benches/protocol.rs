//! Host↔guest protocol throughput, side by side with a raw Unix-socket floor in the same run.
//!
//! `cargo bench -p luminaguard-agent --bench protocol [-- --quick] [-- --json] [-- --only WORD]`
//!
//! - small request/response pairs per second on one connection, sequential and pipelined, against
//!   a raw echo of same-sized messages over the same kind of socket;
//! - bulk file transfer (agent `ReadFile` of a file on tmpfs, and `WriteFile` to tmpfs) against
//!   the same file I/O plus a raw socket stream, and against a raw socket stream alone;
//! - the `sandbox cp` path: `WriteFile` fed from a host file through `tokio::fs::File`, against a
//!   raw file → socket → file copy.
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
    /// CPU time per round (median), see [`Sample`].
    luminaguard_cpu_ms: f64,
    raw_floor_cpu_ms: f64,
    /// Minor page faults per round (median).
    luminaguard_faults: f64,
    raw_floor_faults: f64,
}

/// One measurement: a rate, and what it cost this process (both ends of every measurement run
/// in it) in CPU time (user + system, all threads) and minor page faults. Unlike wall time, CPU
/// time barely moves when other work competes for the machine's cores.
#[derive(Clone, Copy)]
struct Sample {
    rate: f64,
    cpu_ms: f64,
    faults: f64,
}

fn rusage() -> libc::rusage {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the (zeroed, hence initialised) buffer it gets.
    unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()), 0);
        ru.assume_init()
    }
}

fn cpu_time(ru: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Started right where the transfer starts (after any setup such as removing old files).
struct Meter {
    start: Instant,
    ru: libc::rusage,
}

impl Meter {
    fn start() -> Self {
        Self {
            start: Instant::now(),
            ru: rusage(),
        }
    }

    /// `amount` units done since the start.
    fn rate(self, amount: f64) -> Sample {
        let elapsed = self.start.elapsed();
        let now = rusage();
        Sample {
            rate: amount / elapsed.as_secs_f64(),
            cpu_ms: (cpu_time(&now) - cpu_time(&self.ru)).as_secs_f64() * 1e3,
            faults: (now.ru_minflt - self.ru.ru_minflt) as f64,
        }
    }
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

async fn raw_sequential(n: usize) -> Sample {
    let (mut s, _echo) = raw_echo_pair().await;
    let msg = [7u8; SMALL];
    let mut back = [0u8; SMALL];
    let start = Meter::start();
    for _ in 0..n {
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut back).await.unwrap();
    }
    start.rate(n as f64)
}

/// Raw floor for pipelining: one write per message (as each request is its own frame), the
/// reader draining replies concurrently, at most `window` messages outstanding.
async fn raw_pipelined(n: usize, window: usize) -> Sample {
    let (s, _echo) = raw_echo_pair().await;
    let (mut r, mut w) = s.into_split();
    let credits = Arc::new(tokio::sync::Semaphore::new(window));
    let start = Meter::start();
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
    start.rate(n as f64)
}

async fn lg_sequential(c: &Client, n: usize) -> Sample {
    let start = Meter::start();
    for _ in 0..n {
        c.ping().await.unwrap();
    }
    start.rate(n as f64)
}

async fn lg_pipelined(c: &Client, n: usize, window: usize) -> Sample {
    let start = Meter::start();
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
    start.rate(n as f64)
}

/// Raw floor for bulk: two blocking threads streaming `bytes` through a Unix socket pair in
/// 1 MiB writes — the kernel's socket throughput with no runtime in the way.
async fn raw_bulk(bytes: usize) -> Sample {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let start = Meter::start();
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
        start.rate(mib(bytes))
    })
    .await
    .unwrap()
}

/// Raw floor for a file read: one thread reads the file and writes it to a socket, another
/// drains the socket — the same file I/O as the agent does, with nothing else.
async fn raw_file_read(path: String, bytes: usize) -> Sample {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let start = Meter::start();
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
        start.rate(mib(bytes))
    })
    .await
    .unwrap()
}

/// Raw floor for a file write: socket to file, plus the fsync the agent does.
async fn raw_file_write(path: String, bytes: usize) -> Sample {
    let _ = tokio::fs::remove_file(&path).await;
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let start = Meter::start();
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
        start.rate(mib(bytes))
    })
    .await
    .unwrap()
}

/// Raw floor for `sandbox cp` into a sandbox: one thread reads the source file and writes it to a
/// socket, another writes the socket to the destination file and fsyncs it.
async fn raw_file_copy(src: String, dst: String, bytes: usize) -> Sample {
    let _ = tokio::fs::remove_file(&dst).await;
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let start = Meter::start();
        let sender = std::thread::spawn(move || {
            let mut f = std::fs::File::open(src).unwrap();
            let mut chunk = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                a.write_all(&chunk[..n]).unwrap();
            }
        });
        let mut f = std::fs::File::create(&dst).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < bytes {
            let n = b.read(&mut buf).unwrap();
            f.write_all(&buf[..n]).unwrap();
            got += n;
        }
        f.sync_all().unwrap();
        sender.join().unwrap();
        start.rate(mib(bytes))
    })
    .await
    .unwrap()
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn scratch_dir() -> tempfile::TempDir {
    // tmpfs keeps the disk out of a protocol measurement when the host has one.
    match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

async fn lg_read_bulk(c: &Client, path: &str, bytes: usize) -> Sample {
    let start = Meter::start();
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
    start.rate(mib(bytes))
}

async fn lg_write_bulk(c: &Client, path: &str, data: &[u8]) -> Sample {
    // Measure the transfer, not tmpfs freeing the previous round's file on rename.
    let _ = tokio::fs::remove_file(path).await;
    let start = Meter::start();
    let req = WriteFileRequest {
        path: path.to_owned(),
        mode: 0o600,
        parents: false,
    };
    let n = c.write_file_from(req, &mut &data[..]).await.unwrap();
    assert_eq!(n as usize, data.len());
    start.rate(mib(data.len()))
}

/// What `sandbox cp HOST_FILE ID:/path` does: `write_file_from` a `tokio::fs::File`.
async fn lg_write_bulk_from_file(c: &Client, src: &str, path: &str, bytes: usize) -> Sample {
    let _ = tokio::fs::remove_file(path).await;
    let start = Meter::start();
    let mut file = tokio::fs::File::open(src).await.unwrap();
    let req = WriteFileRequest {
        path: path.to_owned(),
        mode: 0o600,
        parents: false,
    };
    let n = c.write_file_from(req, &mut file).await.unwrap();
    assert_eq!(n as usize, bytes);
    start.rate(mib(bytes))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().any(|a| a == "--json");
    // `--only WORD`: run only the measures whose name contains WORD (for profiling one path).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
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
            confine: None,
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
                if only.as_deref().is_none_or(|w| $name.contains(w)) {
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    for _ in 0..rounds {
                        a.push($ours.await);
                        b.push($floor.await);
                    }
                    let m = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
                    let (l, r) = (m(&a, |s| s.rate), m(&b, |s| s.rate));
                    rows.push(Row {
                        name: $name,
                        unit: $unit,
                        luminaguard: l,
                        raw_floor: r,
                        ratio: l / r,
                        luminaguard_cpu_ms: m(&a, |s| s.cpu_ms),
                        raw_floor_cpu_ms: m(&b, |s| s.cpu_ms),
                        luminaguard_faults: m(&a, |s| s.faults),
                        raw_floor_faults: m(&b, |s| s.faults),
                    });
                }
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
        measure!(
            "bulk write from a host file (sandbox cp)",
            "MiB/s",
            lg_write_bulk_from_file(&c, &file, &out, b),
            raw_file_copy(file.clone(), out.clone(), b)
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
        "{:<40} {:>11} {:>10} {:>6}  {:<7} {:>15} {:>15}",
        "measure", "luminaguard", "raw floor", "ratio", "unit", "cpu ms lg/raw", "faults lg/raw"
    );
    for r in &rows {
        println!(
            "{:<40} {:>11.0} {:>10.0} {:>5.2}x  {:<7} {:>7.0}/{:<7.0} {:>7.0}/{:<7.0}",
            r.name,
            r.luminaguard,
            r.raw_floor,
            r.ratio,
            r.unit,
            r.luminaguard_cpu_ms,
            r.raw_floor_cpu_ms,
            r.luminaguard_faults,
            r.raw_floor_faults
        );
    }
}
