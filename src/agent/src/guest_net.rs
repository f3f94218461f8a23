//! The guest's network interface, for a microVM with an egress policy: VM init reads
//! `luminaguard.net=ADDR/PREFIX,GATEWAY` from the kernel command line ([`GuestNet`]) and, once
//! the `virtio_net` module has bound the VM's NIC, configures it ([`configure`]) — the guest
//! kernel has no `CONFIG_IP_PNP` (`ip=`), and the guest image need not hold `ip`.
//!
//! The classic `SIOC*` ioctls on an `AF_INET` socket are enough for one IPv4 address and a
//! default route: `lo` up, the address and netmask, the interface up, `default via GATEWAY`.
//! Without the parameter, nothing is configured and a VM has no NIC anyway.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The name the guest kernel gives the first virtio NIC (no udev renames it in the initramfs).
pub const GUEST_IFACE: &str = "eth0";
/// How long to wait for the NIC to appear after its driver is loaded.
pub const IFACE_TIMEOUT: Duration = Duration::from_secs(5);

/// The guest's IPv4 configuration: its address and prefix, and its gateway (the router).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestNet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// Why a network configuration was refused or could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestNetError {
    #[error("{value:?} is not ADDR/PREFIX,GATEWAY: {reason}")]
    Parse { value: String, reason: &'static str },
    #[error("network interface {iface} did not appear within {waited:.1?}")]
    NoInterface { iface: String, waited: Duration },
    #[error("network interface {iface}: {what}: {errno}")]
    Ioctl {
        iface: String,
        what: &'static str,
        errno: nix::Error,
    },
    #[error("network interface name {0:?} is invalid")]
    Name(String),
}

impl GuestNet {
    fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix))
                .unwrap_or(0),
        )
    }
}

impl FromStr for GuestNet {
    type Err = GuestNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| GuestNetError::Parse {
            value: s.chars().take(64).collect(),
            reason,
        };
        let (cidr, gateway) = s.split_once(',').ok_or_else(|| bad("no gateway"))?;
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| bad("no prefix length"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("bad address"))?;
        let gateway: Ipv4Addr = gateway.parse().map_err(|_| bad("bad gateway"))?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 2 {
            return Err(bad("bad prefix length"));
        }
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("the prefix length must be 8 to 30"));
        }
        let net = GuestNet {
            addr,
            prefix,
            gateway,
        };
        let m = u32::from(net.mask());
        let (a, g) = (u32::from(addr), u32::from(gateway));
        let host = |x: u32| x & !m != 0 && x & !m != !m; // neither network nor broadcast
        if a & m != g & m {
            return Err(bad("the gateway is not on the address's network"));
        }
        if a == g || !host(a) || !host(g) {
            return Err(bad(
                "the address and gateway must be two hosts of the network",
            ));
        }
        Ok(net)
    }
}

nix::ioctl_write_ptr_bad!(siocsifaddr, nix::libc::SIOCSIFADDR, nix::libc::ifreq);
nix::ioctl_write_ptr_bad!(siocsifnetmask, nix::libc::SIOCSIFNETMASK, nix::libc::ifreq);
nix::ioctl_read_bad!(siocgifflags, nix::libc::SIOCGIFFLAGS, nix::libc::ifreq);
nix::ioctl_write_ptr_bad!(siocsifflags, nix::libc::SIOCSIFFLAGS, nix::libc::ifreq);
nix::ioctl_write_ptr_bad!(siocaddrt, nix::libc::SIOCADDRT, RtEntry);

/// `struct rtentry` (`<linux/route.h>`), which glibc's headers have and the `libc` crate does
/// not define for every target.
#[repr(C)]
struct RtEntry {
    rt_pad1: nix::libc::c_ulong,
    rt_dst: nix::libc::sockaddr,
    rt_gateway: nix::libc::sockaddr,
    rt_genmask: nix::libc::sockaddr,
    rt_flags: nix::libc::c_ushort,
    rt_pad2: nix::libc::c_short,
    rt_pad3: nix::libc::c_ulong,
    rt_pad4: *mut nix::libc::c_void,
    rt_metric: nix::libc::c_short,
    rt_dev: *mut nix::libc::c_char,
    rt_mtu: nix::libc::c_ulong,
    rt_window: nix::libc::c_ulong,
    rt_irtt: nix::libc::c_ushort,
}

/// `struct sockaddr` holding an IPv4 address (`struct sockaddr_in`'s layout, port 0).
fn sockaddr(addr: Ipv4Addr) -> nix::libc::sockaddr {
    let mut sa_data = [0 as nix::libc::c_char; 14];
    // sin_port (2 bytes, 0) then sin_addr (network order).
    for (d, b) in sa_data[2..6].iter_mut().zip(addr.octets()) {
        *d = b as nix::libc::c_char;
    }
    nix::libc::sockaddr {
        sa_family: nix::libc::AF_INET as nix::libc::sa_family_t,
        sa_data,
    }
}

fn ifreq(iface: &str) -> Result<nix::libc::ifreq, GuestNetError> {
    if iface.is_empty() || iface.len() >= nix::libc::IFNAMSIZ || iface.contains(['\0', '/']) {
        return Err(GuestNetError::Name(iface.to_owned()));
    }
    // SAFETY: `ifreq` is plain old data (a name array and a union of plain data): all zeroes is
    // a valid value.
    let mut req: nix::libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = b as nix::libc::c_char;
    }
    Ok(req)
}

/// An `AF_INET` datagram socket: the handle the interface ioctls go through.
fn control_socket() -> Result<OwnedFd, nix::Error> {
    nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
}

fn set_up(sock: &OwnedFd, iface: &str) -> Result<(), GuestNetError> {
    let err = |what| {
        let iface = iface.to_owned();
        move |errno| GuestNetError::Ioctl { iface, what, errno }
    };
    let mut req = ifreq(iface)?;
    // SAFETY: `sock` is open; `req` is a valid `ifreq` naming the interface, which the kernel
    // fills (GIFFLAGS) or reads (SIFFLAGS).
    unsafe { siocgifflags(sock.as_raw_fd(), &mut req) }.map_err(err("SIOCGIFFLAGS"))?;
    // SAFETY: the union's flags member was just written by the kernel.
    unsafe { req.ifr_ifru.ifru_flags |= nix::libc::IFF_UP as nix::libc::c_short };
    // SAFETY: as above.
    unsafe { siocsifflags(sock.as_raw_fd(), &req) }.map_err(err("SIOCSIFFLAGS"))?;
    Ok(())
}

/// Waits until `iface` exists (the driver binds the device while its module loads; this
/// covers a probe that finishes a little later). Blocking: VM init runs it before any runtime
/// exists.
#[allow(clippy::disallowed_methods)] // no executor to block
pub fn wait_for_interface(iface: &str, limit: Duration) -> Result<(), GuestNetError> {
    let t0 = Instant::now();
    loop {
        if nix::net::if_::if_nametoindex(iface).is_ok() {
            return Ok(());
        }
        if t0.elapsed() >= limit {
            return Err(GuestNetError::NoInterface {
                iface: iface.to_owned(),
                waited: t0.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Brings `lo` up and gives `iface` the address, the netmask and the default route of `net`.
/// Works in the calling thread's network namespace.
pub fn configure(iface: &str, net: &GuestNet) -> Result<(), GuestNetError> {
    let err = |what| {
        let iface = iface.to_owned();
        move |errno| GuestNetError::Ioctl { iface, what, errno }
    };
    let sock = control_socket().map_err(err("socket(AF_INET)"))?;
    set_up(&sock, "lo")?;
    let mut req = ifreq(iface)?;
    req.ifr_ifru.ifru_addr = sockaddr(net.addr);
    // SAFETY: `sock` is open; `req` is a valid `ifreq` holding an AF_INET address.
    unsafe { siocsifaddr(sock.as_raw_fd(), &req) }.map_err(err("SIOCSIFADDR"))?;
    req.ifr_ifru.ifru_netmask = sockaddr(net.mask());
    // SAFETY: as above, with the netmask.
    unsafe { siocsifnetmask(sock.as_raw_fd(), &req) }.map_err(err("SIOCSIFNETMASK"))?;
    set_up(&sock, iface)?;
    let route = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr(net.gateway),
        rt_genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_flags: nix::libc::RTF_UP | nix::libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        // The kernel finds the interface from the gateway's (on-link) network.
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: `sock` is open; `route` is a valid `struct rtentry` with no device pointer.
    unsafe { siocaddrt(sock.as_raw_fd(), &route) }.map_err(err("SIOCADDRT (default route)"))?;
    tracing::info!(%iface, addr = %net.addr, prefix = net.prefix, gateway = %net.gateway, "network configured");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sandbox_link() {
        assert_eq!(
            "10.255.255.2/30,10.255.255.1".parse::<GuestNet>(),
            Ok(GuestNet {
                addr: Ipv4Addr::new(10, 255, 255, 2),
                prefix: 30,
                gateway: Ipv4Addr::new(10, 255, 255, 1),
            })
        );
        let n: GuestNet = "192.168.7.9/24,192.168.7.1"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.mask(), Ipv4Addr::new(255, 255, 255, 0));
    }

    #[test]
    fn refuses_what_cannot_be_configured() {
        for bad in [
            "",
            "10.255.255.2",
            "10.255.255.2/30",
            "10.255.255.2,10.255.255.1",
            "10.255.255.2/31,10.255.255.1",
            "10.255.255.2/7,10.255.255.1",
            "10.255.255.2/+30,10.255.255.1",
            "10.255.255.2/030,10.255.255.1",
            "10.255.255.2/30,10.255.255.5",
            "10.255.255.2/30,10.255.255.2",
            "10.255.255.3/30,10.255.255.1",
            "10.255.255.0/30,10.255.255.1",
            "10.255.255.2/30,10.255.255.1,x",
            "::1/30,10.255.255.1",
            "10.255.255.2/30 ,10.255.255.1",
        ] {
            assert!(bad.parse::<GuestNet>().is_err(), "{bad:?} accepted");
        }
    }
}
