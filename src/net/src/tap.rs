//! Tap devices for microVMs, made and opened with the TUN ioctls (`ip link add type tun` over
//! netlink is refused by the kernel; `ip tuntap` is these same ioctls).
//!
//! A tap device belongs to the network namespace of the process that opened `/dev/net/tun`, so
//! both creating one in a sandbox's router namespace and attaching to it later happen on a
//! dedicated thread that has joined that namespace (`setns` changes only the calling thread's
//! namespace; a thread of its own keeps the change away from tokio's worker and blocking pools).
//!
//! The device is made **persistent** (`TUNSETPERSIST`) and **owned** by the VMM's uid and gid
//! (`TUNSETOWNER`, `TUNSETGROUP`), so that it outlives the set-up's file descriptor and either:
//!
//! - a VMM without `CAP_NET_ADMIN` can attach to it by name from inside the router namespace
//!   (Firecracker opens its `host_dev_name`), or
//! - LuminaGuard attaches to it ([`open`]) and hands the descriptor to the VMM (QEMU's
//!   `-netdev tap,fd=N`), which then needs neither the router namespace nor any capability.
//!
//! Persistence keeps nothing beyond the namespace: deleting the router namespace unregisters the
//! device with every other link in it. An open descriptor holds a reference on the namespace,
//! though: while a VMM keeps its tap open, the (then nameless) namespace and the device live on,
//! with no uplink left in it, until the VMM exits.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `IFF_TAP`: Ethernet frames (not bare IP packets).
const IFF_TAP: i16 = 0x0002;
/// `IFF_NO_PI`: no 4-byte packet-information header before each frame.
const IFF_NO_PI: i16 = 0x1000;
/// `IFF_VNET_HDR`: a `virtio_net_hdr` before each frame (offloads), as QEMU and Firecracker use.
const IFF_VNET_HDR: i16 = 0x4000;

/// Longest interface name (IFNAMSIZ − 1).
const NAME_MAX: usize = 15;

/// `struct ifreq` as the TUN ioctls read it: the name, the flags, and the rest of the 40-byte
/// union (the kernel copies `sizeof(struct ifreq)` bytes).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _rest: [u8; 22],
}

const INT: usize = std::mem::size_of::<nix::libc::c_int>();
nix::ioctl_write_ptr_bad!(tun_set_iff, nix::request_code_write!(b'T', 202, INT), IfReq);
nix::ioctl_write_int_bad!(tun_set_persist, nix::request_code_write!(b'T', 203, INT));
nix::ioctl_write_int_bad!(tun_set_owner, nix::request_code_write!(b'T', 204, INT));
nix::ioctl_write_int_bad!(tun_set_group, nix::request_code_write!(b'T', 206, INT));

/// Who may attach to a tap device without `CAP_NET_ADMIN`: the VMM's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapOwner {
    pub uid: u32,
    pub gid: u32,
}

/// How frames cross a tap descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFormat {
    /// Each frame preceded by a `virtio_net_hdr`: what QEMU (`vnet_hdr=on`) and Firecracker use.
    VnetHdr,
    /// Bare Ethernet frames (tests speaking frames themselves).
    Plain,
}

impl FrameFormat {
    fn flags(self) -> i16 {
        match self {
            Self::VnetHdr => IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            Self::Plain => IFF_TAP | IFF_NO_PI,
        }
    }
}

/// Why a tap device could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("invalid tap device name {0:?} (1 to 15 bytes, no '/', NUL or whitespace)")]
    Name(String),
    #[error("cannot join network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open /dev/net/tun: {0}")]
    Open(std::io::Error),
    #[error("tap device {name}: {what} failed: {source}")]
    Ioctl {
        name: String,
        what: &'static str,
        source: nix::Error,
    },
    #[error("tap device {name}: uid or gid {id} does not fit the ioctl's argument")]
    Id { name: String, id: u32 },
    #[error("cannot start a thread to enter the network namespace: {0}")]
    Thread(std::io::Error),
    #[error("the thread working in the network namespace died")]
    ThreadDied,
}

fn ifreq(name: &str, flags: i16) -> Result<IfReq, TapError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && !name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace());
    if !ok {
        return Err(TapError::Name(name.to_owned()));
    }
    let mut req = IfReq {
        name: [0; 16],
        flags,
        _rest: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    Ok(req)
}

/// Runs `f` on a thread of its own that has joined the network namespace at `netns` (a file such
/// as `/run/netns/<name>`); the thread ends with `f`.
async fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> Result<T, TapError> + Send + 'static,
) -> Result<T, TapError> {
    let path = netns.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("lg-netns".into())
        .spawn(move || {
            let joined = File::open(&path).and_then(|ns| {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
            let result = match joined {
                Ok(()) => f(),
                Err(source) => Err(TapError::Netns { path, source }),
            };
            let _ = tx.send(result);
        })
        .map_err(TapError::Thread)?;
    rx.await.map_err(|_| TapError::ThreadDied)?
}

/// Opens `/dev/net/tun` (in the calling thread's network namespace) and attaches to — or
/// creates — tap device `name` with `flags`.
fn attach(name: &str, flags: i16) -> Result<File, TapError> {
    let req = ifreq(name, flags)?;
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(TapError::Open)?;
    // SAFETY: `tun` is an open descriptor for the whole call, and `req` a valid, initialised
    // `struct ifreq` the kernel only reads (it writes back the name, within the 40 bytes).
    unsafe { tun_set_iff(tun.as_raw_fd(), &req) }.map_err(|source| TapError::Ioctl {
        name: name.to_owned(),
        what: "TUNSETIFF",
        source,
    })?;
    Ok(tun)
}

/// Creates the persistent tap device `name` in the network namespace at `netns`, owned by
/// `owner`, for a VMM that speaks `virtio_net_hdr` frames. Nothing is left if it fails: the
/// device is made persistent last, and until then closing the descriptor removes it.
pub async fn create_persistent(netns: &Path, name: &str, owner: TapOwner) -> Result<(), TapError> {
    let name = name.to_owned();
    in_netns(netns, move || {
        let tun = attach(&name, FrameFormat::VnetHdr.flags())?;
        let fd = tun.as_raw_fd();
        let ioctl = |what: &'static str| {
            let name = name.clone();
            move |source| TapError::Ioctl { name, what, source }
        };
        let arg = |id: u32| {
            nix::libc::c_int::try_from(id).map_err(|_| TapError::Id {
                name: name.clone(),
                id,
            })
        };
        let (uid, gid) = (arg(owner.uid)?, arg(owner.gid)?);
        // SAFETY: `fd` is `tun`'s open descriptor; the ioctl takes an integer.
        unsafe { tun_set_owner(fd, uid) }.map_err(ioctl("TUNSETOWNER"))?;
        // SAFETY: as above.
        unsafe { tun_set_group(fd, gid) }.map_err(ioctl("TUNSETGROUP"))?;
        // SAFETY: as above.
        unsafe { tun_set_persist(fd, 1) }.map_err(ioctl("TUNSETPERSIST"))?;
        tracing::debug!(%name, uid = owner.uid, gid = owner.gid, "persistent tap device created");
        Ok(())
    })
    .await
}

/// Attaches to the existing tap device `name` in the network namespace at `netns` and returns
/// the descriptor (to hand to a VMM, or for a test to speak frames on). The device must exist:
/// a missing one is an error, not a new device — the ioctl would make a fresh one, which is
/// removed again here.
pub async fn open(netns: &Path, name: &str, format: FrameFormat) -> Result<OwnedFd, TapError> {
    let name = name.to_owned();
    in_netns(netns, move || {
        // Asked of the thread's namespace (`/sys/class/net` would show the mount's).
        if let Err(source) = nix::net::if_::if_nametoindex(name.as_str()) {
            return Err(TapError::Ioctl {
                name,
                what: "finding the device",
                source,
            });
        }
        Ok(OwnedFd::from(attach(&name, format.flags())?))
    })
    .await
}
