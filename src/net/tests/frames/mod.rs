//! Just enough Ethernet, ARP, IPv4, UDP, TCP and ICMP to play a microVM on a tap device: build
//! frames with correct checksums, and read the ones that come back.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

pub type Mac = [u8; 6];

const ETH_IPV4: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// The Internet checksum (RFC 1071) of `chunks` laid end to end (each of even length but the
/// last).
pub fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for c in chunks {
        for pair in c.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn ether(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ARP request or reply (`op` 1 or 2) for IPv4 over Ethernet.
pub fn arp(op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0x00, 6, 4];
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&sha);
    p.extend_from_slice(&spa.octets());
    p.extend_from_slice(&tha);
    p.extend_from_slice(&tpa.octets());
    p
}

pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(20 + payload.len()).unwrap();
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0x4c, 0x47, 0x40, 0]); // id, don't fragment
    h.extend_from_slice(&[64, proto, 0, 0]); // ttl, protocol, checksum (below)
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = checksum(&[&h]);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    p
}

pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, data: &[u8]) -> Vec<u8> {
    let len = 8 + data.len();
    let mut u = Vec::with_capacity(len);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    let sum = match checksum(&[&pseudo(src, dst, PROTO_UDP, len), &u]) {
        0 => 0xffff,
        s => s,
    };
    u[6..8].copy_from_slice(&sum.to_be_bytes());
    ipv4(src, dst, PROTO_UDP, &u)
}

/// A TCP segment without options: `flags` 0x02 is SYN.
pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, seq: u32, flags: u8) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes()); // ack
    t.extend_from_slice(&[5 << 4, flags]);
    t.extend_from_slice(&64240u16.to_be_bytes()); // window
    t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
    let sum = checksum(&[&pseudo(src, dst, PROTO_TCP, t.len()), &t]);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    ipv4(src, dst, PROTO_TCP, &t)
}

/// An IPv4 packet read back, checked.
#[derive(Debug, Clone)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub payload: Vec<u8>,
}

impl Packet {
    fn parse(b: &[u8]) -> Option<Self> {
        let ihl = usize::from(b.first()? & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]));
        if b[0] >> 4 != 4 || ihl < 20 || total < ihl || b.len() < total {
            return None;
        }
        assert_eq!(
            checksum(&[&b[..ihl]]),
            0,
            "IPv4 header checksum of a received packet"
        );
        let at = |i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
        Some(Self {
            src: at(12),
            dst: at(16),
            proto: b[9],
            payload: b[ihl..total].to_vec(),
        })
    }

    /// Source port, destination port and data of a UDP datagram (its checksum verified).
    pub fn udp(&self) -> Option<(u16, u16, &[u8])> {
        let u = &self.payload;
        if self.proto != PROTO_UDP || u.len() < 8 {
            return None;
        }
        if u[6..8] != [0, 0] {
            let sum = checksum(&[&pseudo(self.src, self.dst, PROTO_UDP, u.len()), u]);
            assert_eq!(sum, 0, "UDP checksum of a received datagram");
        }
        let port = |i: usize| u16::from_be_bytes([u[i], u[i + 1]]);
        Some((port(0), port(2), &u[8..]))
    }

    /// Source port, destination port and flags of a TCP segment.
    pub fn tcp(&self) -> Option<(u16, u16, u8)> {
        let t = &self.payload;
        if self.proto != PROTO_TCP || t.len() < 20 {
            return None;
        }
        let port = |i: usize| u16::from_be_bytes([t[i], t[i + 1]]);
        Some((port(0), port(2), t[13]))
    }

    /// An ICMP destination-unreachable's code, and the destination address and port of the
    /// packet it is about.
    pub fn unreachable(&self) -> Option<(u8, Ipv4Addr, u16)> {
        let i = &self.payload;
        if self.proto != PROTO_ICMP || i.len() < 8 || i[0] != 3 {
            return None;
        }
        let inner = &i[8..];
        let ihl = usize::from(inner.first()? & 0x0f) * 4;
        let dst = Ipv4Addr::new(*inner.get(16)?, inner[17], inner[18], inner[19]);
        let dport = u16::from_be_bytes([*inner.get(ihl + 2)?, *inner.get(ihl + 3)?]);
        Some((i[1], dst, dport))
    }
}

/// A "virtual machine" at the other end of a tap: it answers ARP for its address and hands
/// every IPv4 packet addressed to it to the caller.
pub struct Vm {
    tap: std::fs::File,
    pub mac: Mac,
    pub ip: Ipv4Addr,
    gateway: Ipv4Addr,
    gateway_mac: Option<Mac>,
}

impl Vm {
    pub fn new(tap: OwnedFd, ip: Ipv4Addr, gateway: Ipv4Addr) -> Self {
        let tap = std::fs::File::from(tap);
        let flags = nix::fcntl::fcntl(&tap, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&tap, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
        Self {
            tap,
            mac: [0x52, 0x54, 0x00, 0x4c, 0x47, 0x01],
            ip,
            gateway,
            gateway_mac: None,
        }
    }

    fn write(&mut self, frame: &[u8]) {
        self.tap.write_all(frame).expect("write a frame to the tap");
    }

    /// Reads frames until `want` accepts an IPv4 packet addressed to us, or `wait` passes;
    /// answers ARP requests for our address and notes the gateway's ARP replies on the way.
    pub fn receive<T>(
        &mut self,
        wait: Duration,
        mut want: impl FnMut(&Packet) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            let n = match self.tap.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) => panic!("reading the tap: {e}"),
            };
            let f = &buf[..n];
            if n < 14 || (f[..6] != self.mac && f[..6] != [0xff; 6]) {
                continue;
            }
            let body = &f[14..];
            match u16::from_be_bytes([f[12], f[13]]) {
                ETH_ARP if body.len() >= 28 => {
                    let op = u16::from_be_bytes([body[6], body[7]]);
                    let sha: Mac = body[8..14].try_into().unwrap();
                    let spa = Ipv4Addr::new(body[14], body[15], body[16], body[17]);
                    let tpa = Ipv4Addr::new(body[24], body[25], body[26], body[27]);
                    if op == 1 && tpa == self.ip {
                        let reply = arp(2, self.mac, self.ip, sha, spa);
                        self.write(&ether(sha, self.mac, ETH_ARP, &reply));
                    } else if op == 2 && spa == self.gateway {
                        self.gateway_mac = Some(sha);
                    }
                }
                ETH_IPV4 => {
                    if let Some(p) = Packet::parse(body)
                        && p.dst == self.ip
                        && let Some(t) = want(&p)
                    {
                        return Some(t);
                    }
                }
                _ => {} // IPv6 neighbour discovery and the like
            }
        }
        None
    }

    /// The gateway's MAC address, by ARP.
    pub fn gateway_mac(&mut self) -> Mac {
        for _ in 0..5 {
            if let Some(m) = self.gateway_mac {
                return m;
            }
            let req = arp(1, self.mac, self.ip, [0; 6], self.gateway);
            self.write(&ether([0xff; 6], self.mac, ETH_ARP, &req));
            self.receive(Duration::from_millis(300), |_| None::<()>);
        }
        self.gateway_mac.expect("the gateway answers ARP")
    }

    /// Sends an IPv4 packet through the gateway.
    pub fn send(&mut self, packet: &[u8]) {
        let gw = self.gateway_mac();
        let frame = ether(gw, self.mac, ETH_IPV4, packet);
        self.write(&frame);
    }
}
