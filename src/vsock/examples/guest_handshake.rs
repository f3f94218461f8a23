//! Reaches a guest agent through a VMM's hybrid-vsock socket and runs the protocol handshake.
//!
//!     cargo run -p luminaguard-vsock --example guest_handshake -- \
//!         <uds_path> <port> [deadline_s] [accept_port]
//!
//! Retries until the guest listens (or the deadline passes), handshakes, asks the agent for its
//! guest info, and prints the timings. With `accept_port`, also listens on
//! `<uds_path>_<accept_port>` for one guest-initiated connection and prints what it sends.
//! Used to prove the microVM recipe by hand.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use luminaguard_protocol::{Client, ClientOptions};
use luminaguard_vsock::{Backoff, connect_with_retry, listen};
use tokio::io::AsyncReadExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(uds), Some(port)) = (args.next(), args.next()) else {
        return Err("usage: guest_handshake <uds_path> <port> [deadline_s] [accept_port]".into());
    };
    let uds = PathBuf::from(uds);
    let port: u32 = port.parse()?;
    let deadline = Duration::from_secs_f64(args.next().map_or(Ok(30.0), |s| s.parse())?);
    let accept_port: Option<u32> = args.next().map(|s| s.parse()).transpose()?;

    let start = Instant::now();
    let inbound = match accept_port {
        Some(p) => {
            let listener = listen(&uds, p)?;
            println!(
                "listening for guest connections on {}",
                listener.path().display()
            );
            Some(tokio::spawn(async move {
                let mut stream = listener.accept().await?;
                let mut got = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut got))
                    .await;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((start.elapsed(), got))
            }))
        }
        None => None,
    };
    let host = connect_with_retry(&uds, port, deadline, Backoff::default()).await?;
    let connected = start.elapsed();
    println!(
        "vsock: connected to guest port {port} (OK {}) after {connected:?}",
        host.local_port
    );

    let client = Client::connect(host.stream, ClientOptions::default()).await?;
    let handshaken = start.elapsed();
    let peer = client.peer();
    println!(
        "handshake: version {} software {:?} capabilities {:?} after {handshaken:?} ({:?} after connect)",
        peer.version,
        peer.software,
        peer.capabilities,
        handshaken.saturating_sub(connected)
    );

    let rtt = client.ping().await?;
    let info = client.info().await?;
    println!("ping: {rtt:?}");
    println!("guest: {info:?}");
    if let Some(task) = inbound {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(joined) => {
                let (at, got) = joined?.map_err(|e| e.to_string())?;
                println!(
                    "guest-initiated connection after {at:?}: {:?}",
                    String::from_utf8_lossy(&got)
                );
            }
            Err(_) => println!("no guest-initiated connection within 5 s of the handshake"),
        }
    }
    Ok(())
}
