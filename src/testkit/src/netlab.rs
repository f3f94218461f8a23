//! A small fake internet in network namespaces the test creates, for egress tests. Nothing in it
//! touches the host's network or any address outside these namespaces.
//!
//! ```text
//!   host netns (plays the host: sandboxes' uplink)          net netns (plays the internet)
//!   wan0 192.0.2.1/24 ─────────────── veth ─────────────── wan0 192.0.2.2/24
//!   listeners on 192.0.2.1:80, 127.0.0.1:80                  lo: 198.51.100.10, 198.51.100.11,
//!   (the host's own services)                                    203.0.113.5, 169.254.169.254
//!   ip_forward = 1 (namespace-local)                         TCP :80 :81 and UDP :80 echo on each
//! ```
#![allow(clippy::panic)] // failing the calling test is the point

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A server the sandbox is allowed to reach in most tests.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// A second server in the same /24.
pub const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
/// A server elsewhere.
pub const OTHER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
/// The cloud metadata address, served by the fake internet.
pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The fake host's own public address (it serves on :80 there too).
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Ports every server listens on (TCP), and the UDP echo port.
pub const PORTS: [u16; 2] = [80, 81];
/// The fake internet's DNS server (port 53, UDP), once [`FakeInternet::serve_dns`] started it.
pub const DNS_SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
pub const UDP_PORT: u16 = 80;

const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Runs `f` on a fresh thread that has joined network namespace `netns` (`/run/netns/<netns>`);
/// sockets it creates live there. Panics (failing the test) if the namespace cannot be joined.
#[allow(clippy::expect_used)]
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("open the network namespace");
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("join it");
        f()
    })
    .join()
    .expect("thread in the network namespace")
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("{args:?}: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("{args:?}: {e}"),
    }
}

fn batch(netns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["-n", netns, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("ip -batch: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let st = child.wait().unwrap_or_else(|e| panic!("ip -batch: {e}"));
    assert!(st.success(), "ip -n {netns} -batch failed:\n{script}");
}

/// The two namespaces and their listeners; removed on drop.
#[derive(Debug)]
pub struct FakeInternet {
    /// Plays the host: pass it as the sandboxes' uplink namespace.
    pub host: String,
    /// Plays the internet.
    pub net: String,
    listeners: Vec<std::os::fd::OwnedFd>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl FakeInternet {
    pub fn new() -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id());
        let (host, net) = (format!("lgt-host-{tag}"), format!("lgt-net-{tag}"));
        sh(&["ip", "netns", "add", &host]);
        sh(&["ip", "netns", "add", &net]);
        let mut me = Self {
            host,
            net,
            listeners: Vec::new(),
        };
        batch(
            &me.host,
            &format!(
                "link set lo up\nlink add wan0 type veth peer name wan0 netns {net}\n\
                 addr add {HOST_ADDR}/24 dev wan0\nlink set wan0 up\n\
                 route add default via 192.0.2.2\n",
                net = me.net
            ),
        );
        let mut net_script =
            "link set lo up\naddr add 192.0.2.2/24 dev wan0\nlink set wan0 up\n".to_owned();
        for a in [SERVER, NEIGHBOUR, OTHER, METADATA, DNS_SERVER] {
            net_script.push_str(&format!("addr add {a}/32 dev lo\n"));
        }
        batch(&me.net, &net_script);
        sh(&[
            "ip",
            "netns",
            "exec",
            &me.host,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        for a in [SERVER, NEIGHBOUR, OTHER, METADATA] {
            for p in PORTS {
                me.serve_tcp(&me.net.clone(), SocketAddr::new(a.into(), p));
            }
            me.serve_udp(&me.net.clone(), SocketAddr::new(a.into(), UDP_PORT));
        }
        for a in [HOST_ADDR, Ipv4Addr::LOCALHOST] {
            me.serve_tcp(&me.host.clone(), SocketAddr::new(a.into(), 80));
        }
        me
    }

    /// A TCP server at `addr` in `netns` that greets every connection with `hello <addr>`.
    #[allow(clippy::expect_used)]
    fn serve_tcp(&mut self, netns: &str, addr: SocketAddr) {
        let l = in_netns(netns, move || {
            TcpListener::bind(addr).expect("bind a test server")
        });
        let fd = l.try_clone().expect("dup").into();
        std::thread::spawn(move || {
            // Until the listener is shut down (accept then fails for good).
            while let Ok((mut conn, _)) = l.accept() {
                let _ = writeln!(conn, "hello {addr}");
            }
        });
        self.listeners.push(fd);
    }

    /// A UDP echo server at `addr` in `netns`.
    #[allow(clippy::expect_used)]
    fn serve_udp(&mut self, netns: &str, addr: SocketAddr) {
        let s = in_netns(netns, move || {
            UdpSocket::bind(addr).expect("bind a test server")
        });
        let fd = s.try_clone().expect("dup").into();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            // Until the socket is shut down (recv then fails, or returns nothing).
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = s.send_to(&buf[..n], from);
            }
        });
        self.listeners.push(fd);
    }
}

impl FakeInternet {
    /// Serves DNS (UDP) at [`DNS_SERVER`]`:53`: an A record (TTL 60 s) for each name of `zone`,
    /// NXDOMAIN for other names, and no records (NOERROR) for other types of a known name.
    #[allow(clippy::expect_used)]
    pub fn serve_dns(&mut self, zone: &[(&str, Ipv4Addr)]) -> SocketAddr {
        use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
        use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};
        let addr = SocketAddr::new(DNS_SERVER.into(), 53);
        let zone: Vec<(Name, Ipv4Addr)> = zone
            .iter()
            .map(|(n, a)| (Name::from_ascii(format!("{n}.")).expect("a DNS name"), *a))
            .collect();
        let s = in_netns(&self.net.clone(), move || {
            UdpSocket::bind(addr).expect("bind the test DNS server")
        });
        let fd = s.try_clone().expect("dup").into();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                if n == 0 {
                    break;
                }
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if q.metadata.message_type != MessageType::Query {
                    continue;
                }
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.metadata.recursion_available = true;
                r.queries = q.queries.clone();
                if let Some(query) = q.queries.first() {
                    let asked = query.name();
                    let known: Vec<Ipv4Addr> = zone
                        .iter()
                        .filter(|(n, _)| n.eq_case(asked) || n == asked)
                        .map(|(_, a)| *a)
                        .collect();
                    if known.is_empty() {
                        r.metadata.response_code = ResponseCode::NXDomain;
                    } else if query.query_type() == RecordType::A {
                        r.answers = known
                            .into_iter()
                            .map(|a| Record::from_rdata(asked.clone(), 60, RData::A(A(a))))
                            .collect();
                    }
                }
                if let Ok(bytes) = r.to_vec() {
                    let _ = s.send_to(&bytes, from);
                }
            }
        });
        self.listeners.push(fd);
        addr
    }
}

impl Default for FakeInternet {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FakeInternet {
    fn drop(&mut self) {
        for fd in &self.listeners {
            // Wakes the thread blocked on it.
            let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        for ns in [&self.host, &self.net] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// From `netns`: does a TCP connection to `ip:port` get the server's greeting?
pub fn tcp_reaches(netns: &str, ip: impl Into<IpAddr>, port: u16) -> bool {
    let to = SocketAddr::new(ip.into(), port);
    in_netns(netns, move || {
        let Ok(mut s) = TcpStream::connect_timeout(&to, PROBE_TIMEOUT) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        got.starts_with("hello")
    })
}

/// From `netns`: does a UDP datagram to `ip:port` come back?
pub fn udp_reaches(netns: &str, ip: impl Into<IpAddr>, port: u16) -> bool {
    let to = SocketAddr::new(ip.into(), port);
    in_netns(netns, move || {
        let Ok(s) = UdpSocket::bind("0.0.0.0:0") else {
            return false;
        };
        let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
        if s.send_to(b"ping", to).is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.recv_from(&mut buf), Ok((4, from)) if from == to && &buf[..4] == b"ping")
    })
}

/// From `netns`: does an ICMP echo request to `ip` get a reply? (A raw socket: needs root.)
pub fn ping_reaches(netns: &str, ip: Ipv4Addr) -> bool {
    in_netns(netns, move || {
        use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn};
        let Ok(fd) = nix::sys::socket::socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Icmp,
        ) else {
            return false;
        };
        let s = std::net::UdpSocket::from(fd); // only for its timeout setter
        let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
        // Echo request: type 8, code 0, checksum, id, sequence.
        let mut pkt = [8u8, 0, 0, 0, 0x4c, 0x47, 0, 1];
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        let to = SockaddrIn::from(std::net::SocketAddrV4::new(ip, 0));
        if nix::sys::socket::sendto(
            s.as_raw_fd(),
            &pkt,
            &to,
            nix::sys::socket::MsgFlags::empty(),
        )
        .is_err()
        {
            return false;
        }
        let mut buf = [0u8; 128];
        while let Ok(n) = nix::unistd::read(&s, &mut buf) {
            // The reply carries the IP header (20 bytes without options) first.
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            let from = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
            if n >= ihl + 8 && from == ip && buf[ihl] == 0 && buf[ihl + 4..ihl + 6] == [0x4c, 0x47]
            {
                return true;
            }
        }
        false
    })
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
