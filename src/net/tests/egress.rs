//! Sandbox egress paths built for real against a fake internet in namespaces the tests create
//! (see `luminaguard_testkit::netlab`): packets are sent from the sandbox's network namespace and
//! the test checks which ones arrive. Needs root and `ip`/`nft`/`sysctl`; required in CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

mod frames;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use frames::Vm;
use luminaguard_core::{NetworkPolicy, SandboxId};
use luminaguard_net::tap::{FrameFormat, TapOwner};
use luminaguard_net::topology::{
    self, Options, ROUTER_INNER_ADDR, SANDBOX_ADDR, SandboxLink, Step,
};
use luminaguard_net::{Egress, NetNames, Uplink};
use luminaguard_testkit::netlab::{
    FakeInternet, HOST_ADDR, METADATA, NEIGHBOUR, OTHER, SERVER, UDP_PORT, ping_reaches,
    tcp_reaches, udp_reaches,
};
use luminaguard_testkit::privileged;

fn policy(allow: &[&str], deny: &[&str]) -> NetworkPolicy {
    serde_json::from_value(serde_json::json!({"mode": "egress", "allow": allow, "deny": deny}))
        .unwrap()
}

fn id(s: &str) -> SandboxId {
    s.parse().unwrap()
}

struct Lab {
    net: FakeInternet,
    uplink: Uplink,
    lock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        let net = FakeInternet::new();
        let uplink = Uplink {
            netns: Some(net.host.clone()),
            pool: None,
        };
        let dir = tempfile::tempdir().unwrap();
        Self {
            lock: dir.path().join("net.lock"),
            net,
            uplink,
            _dir: dir,
        }
    }

    /// The sandbox's names, with any objects an earlier, aborted run of the test left removed.
    fn fresh(&self, sid: &SandboxId) -> NetNames {
        let names = NetNames::for_sandbox(sid);
        for ns in [&names.router_netns, &names.sandbox_netns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        names
    }

    /// A microVM's path (a tap owned by [`VMM`]) for a fresh sandbox `name` allowed `allow`.
    async fn microvm(&self, name: &str, allow: &str) -> Egress {
        let sid = id(name);
        self.fresh(&sid);
        topology::create_with_link(
            &sid,
            &policy(&[allow], &[]),
            &self.opts(None),
            SandboxLink::Tap(VMM),
        )
        .await
        .unwrap()
    }

    fn opts(&self, fail_at: Option<Step>) -> Options<'_> {
        Options {
            uplink: &self.uplink,
            lock: &self.lock,
            fail_at,
        }
    }

    /// Which of this sandbox's objects still exist.
    fn remaining(&self, names: &NetNames) -> Vec<String> {
        let mut left = Vec::new();
        for ns in [&names.router_netns, &names.sandbox_netns] {
            if std::path::Path::new("/run/netns").join(ns).exists() {
                left.push(format!("netns {ns}"));
            }
        }
        let link = Command::new("ip")
            .args([
                "-n",
                &self.net.host,
                "link",
                "show",
                "dev",
                &names.uplink_host,
            ])
            .output()
            .unwrap();
        if link.status.success() {
            left.push(format!("link {}", names.uplink_host));
        }
        let table = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.net.host,
                "nft",
                "list",
                "table",
                "inet",
            ])
            .arg(&names.table)
            .output()
            .unwrap();
        if table.status.success() {
            left.push(format!("table {}", names.table));
        }
        left
    }
}

#[tokio::test]
async fn an_allowed_host_port_is_reached_and_nothing_else() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let sid = id("egress-hostport");
    lab.fresh(&sid);
    let eg = topology::create(
        &sid,
        &policy(&[&format!("{SERVER}:80")], &[]),
        &lab.opts(None),
    )
    .await
    .unwrap();
    let ns = eg.names.sandbox_netns.clone();
    assert!(tcp_reaches(&ns, SERVER, 80), "the allowed host:port");
    assert!(
        udp_reaches(&ns, SERVER, UDP_PORT),
        "host:port admits UDP too"
    );
    assert!(
        !tcp_reaches(&ns, SERVER, 81),
        "another port of the allowed host"
    );
    assert!(!tcp_reaches(&ns, NEIGHBOUR, 80), "another host, same port");
    assert!(!tcp_reaches(&ns, OTHER, 80), "another network");
    assert!(!tcp_reaches(&ns, METADATA, 80), "cloud metadata");
    assert!(!tcp_reaches(&ns, HOST_ADDR, 80), "the host's own address");
    assert!(
        !tcp_reaches(&ns, eg.addrs.host, 80),
        "the host's end of the uplink"
    );
    assert!(!ping_reaches(&ns, SERVER), "ICMP is not a TCP/UDP port");
    topology::remove(&eg.names, &lab.uplink).await.unwrap();
    assert_eq!(lab.remaining(&eg.names), Vec::<String>::new());
}

#[tokio::test]
async fn everything_open_still_never_reaches_private_metadata_or_the_host() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let sid = id("egress-open");
    lab.fresh(&sid);
    let eg = topology::create(
        &sid,
        &policy(&["0.0.0.0/0"], &[&format!("{NEIGHBOUR}")]),
        &lab.opts(None),
    )
    .await
    .unwrap();
    let ns = eg.names.sandbox_netns.clone();
    assert!(tcp_reaches(&ns, SERVER, 81));
    assert!(tcp_reaches(&ns, OTHER, 80));
    assert!(ping_reaches(&ns, OTHER), "a CIDR admits ICMP");
    assert!(!tcp_reaches(&ns, NEIGHBOUR, 80), "the deny list wins");
    assert!(!tcp_reaches(&ns, METADATA, 80), "metadata needs naming");
    assert!(!udp_reaches(&ns, METADATA, UDP_PORT));
    assert!(!tcp_reaches(&ns, HOST_ADDR, 80), "the host's own address");
    assert!(
        !tcp_reaches(&ns, eg.addrs.host, 80),
        "the host's end of the uplink"
    );
    topology::remove(&eg.names, &lab.uplink).await.unwrap();
}

#[tokio::test]
async fn naming_the_metadata_endpoint_is_what_opens_it() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let sid = id("egress-metadata");
    lab.fresh(&sid);
    let eg = topology::create(
        &sid,
        &policy(&[&format!("{METADATA}:80")], &[]),
        &lab.opts(None),
    )
    .await
    .unwrap();
    let ns = eg.names.sandbox_netns.clone();
    assert!(tcp_reaches(&ns, METADATA, 80));
    assert!(!tcp_reaches(&ns, SERVER, 80));
    topology::remove(&eg.names, &lab.uplink).await.unwrap();
}

/// The firewall is what blocks and what admits: take its pieces away and watch the probes change.
#[tokio::test]
async fn the_firewall_is_on_the_packet_path() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let sid = id("egress-onpath");
    lab.fresh(&sid);
    let eg = topology::create(
        &sid,
        &policy(&[&format!("{SERVER}:80")], &[]),
        &lab.opts(None),
    )
    .await
    .unwrap();
    let (ns, router, table) = (
        eg.names.sandbox_netns.clone(),
        eg.names.router_netns.clone(),
        eg.names.table.clone(),
    );
    assert!(tcp_reaches(&ns, SERVER, 80) && !tcp_reaches(&ns, SERVER, 81));
    let nft = |args: &[&str]| {
        let st = Command::new("ip")
            .args(["netns", "exec", &router, "nft"])
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "nft {args:?}");
    };
    // Without the jump into the stages, the forward hook's policy drops even the allowed port.
    nft(&["flush", "chain", "inet", &table, "forward"]);
    assert!(!tcp_reaches(&ns, SERVER, 80), "the jump is what admits");
    // With the forward hook's policy turned to accept, the router forwards anything: the blocked
    // port opens.
    nft(&[
        "add",
        "chain",
        "inet",
        &table,
        "forward",
        "{ policy accept; }",
    ]);
    assert!(tcp_reaches(&ns, SERVER, 81), "the policy is what blocks");
    // Without the router's table (its NAT with it), the uplink's table drops what arrives with
    // the sandbox's own source address: it is on the path too.
    nft(&["delete", "table", "inet", &table]);
    assert!(
        !tcp_reaches(&ns, SERVER, 80),
        "the uplink's anti-spoofing rule"
    );
    topology::remove(&eg.names, &lab.uplink).await.unwrap();
    assert_eq!(lab.remaining(&eg.names), Vec::<String>::new());
}

#[tokio::test]
async fn lookalike_and_longest_ids_get_their_own_working_objects() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let long = format!("{}z", "x".repeat(63));
    let allow = policy(&[&format!("{SERVER}:80")], &[]);
    let mut made = Vec::new();
    for s in ["task-1", "task_1", long.as_str()] {
        lab.fresh(&id(s));
        made.push(
            topology::create(&id(s), &allow, &lab.opts(None))
                .await
                .unwrap(),
        );
    }
    assert_ne!(made[0].names.table, made[1].names.table);
    assert_ne!(made[0].addrs, made[1].addrs, "uplink addresses are unique");
    for eg in &made {
        assert!(
            tcp_reaches(&eg.names.sandbox_netns, SERVER, 80),
            "{}",
            eg.names.table
        );
        assert!(!tcp_reaches(&eg.names.sandbox_netns, SERVER, 81));
    }
    for eg in &made {
        topology::remove(&eg.names, &lab.uplink).await.unwrap();
        assert_eq!(lab.remaining(&eg.names), Vec::<String>::new());
    }
}

#[tokio::test]
async fn a_failure_at_any_step_leaves_nothing_behind() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let sid = id("egress-inject");
    let names = lab.fresh(&sid);
    let allow = policy(&[&format!("{SERVER}:80")], &[]);
    let mut injected = Vec::new();
    for link in [SandboxLink::Veth, SandboxLink::Tap(VMM)] {
        for step in Step::for_link(&link) {
            let err = topology::create_with_link(&sid, &allow, &lab.opts(Some(step)), link)
                .await
                .expect_err("an injected failure must fail the set-up");
            assert!(err.to_string().contains(&step.to_string()), "{err}");
            assert_eq!(
                lab.remaining(&names),
                Vec::<String>::new(),
                "{link:?}, after {step}"
            );
            injected.push(step);
        }
    }
    for step in Step::ALL {
        assert!(injected.contains(&step), "{step} was never injected");
    }
    // A step a link does not run cannot fail it.
    let eg = topology::create_with_link(
        &sid,
        &allow,
        &lab.opts(Some(Step::ConfigureSandbox)),
        SandboxLink::Tap(VMM),
    )
    .await
    .unwrap();
    topology::remove(&eg.names, &lab.uplink).await.unwrap();
    assert_eq!(lab.remaining(&names), Vec::<String>::new());
    // And a real one: an uplink namespace that does not forward.
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.net.host,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=0",
        ])
        .status()
        .unwrap();
    let err = topology::create(&sid, &allow, &lab.opts(None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("net.ipv4.ip_forward"), "{err}");
    assert_eq!(lab.remaining(&names), Vec::<String>::new());
}

#[tokio::test]
async fn gc_finds_and_removes_leftovers_of_dead_sandboxes_only() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let allow = policy(&[&format!("{SERVER}:80")], &[]);
    let (live, dead, dead_vm) = (id("gc-live"), id("gc-dead"), id("gc-dead-vm"));
    for s in [&live, &dead, &dead_vm] {
        lab.fresh(s);
    }
    let kept = topology::create(&live, &allow, &lab.opts(None))
        .await
        .unwrap();
    let lost = topology::create(&dead, &allow, &lab.opts(None))
        .await
        .unwrap();
    // A microVM's: a router namespace (with its tap) and an uplink, no sandbox namespace.
    let lost_vm =
        topology::create_with_link(&dead_vm, &allow, &lab.opts(None), SandboxLink::Tap(VMM))
            .await
            .unwrap();
    let found = topology::leftovers(std::slice::from_ref(&live), &lab.uplink)
        .await
        .unwrap();
    // Other tests run in parallel: only assert about this test's sandboxes.
    assert!(found.netns.contains(&lost.names.router_netns));
    assert!(found.netns.contains(&lost.names.sandbox_netns));
    assert!(found.netns.contains(&lost_vm.names.router_netns));
    assert!(!found.netns.contains(&kept.names.router_netns));
    let mut uplinks = vec![
        lost.names.uplink_host.clone(),
        lost_vm.names.uplink_host.clone(),
    ];
    uplinks.sort();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(found.links.clone()), uplinks);
    assert_eq!(sorted(found.registered.clone()), uplinks);
    let mine = topology::Leftovers {
        netns: vec![
            lost.names.router_netns.clone(),
            lost.names.sandbox_netns.clone(),
            lost_vm.names.router_netns.clone(),
        ],
        ..found
    };
    topology::remove_leftovers(&mine, &lab.uplink)
        .await
        .unwrap();
    assert_eq!(lab.remaining(&lost.names), Vec::<String>::new());
    assert_eq!(lab.remaining(&lost_vm.names), Vec::<String>::new());
    assert_eq!(
        (vmm_taps(None), vmm_taps(Some(&lab.net.host))),
        (vec![], vec![]),
        "the tap went with its namespace"
    );
    assert!(
        tcp_reaches(&kept.names.sandbox_netns, SERVER, 80),
        "the live one still works"
    );
    topology::remove(&kept.names, &lab.uplink).await.unwrap();
}

/// 500 create/remove cycles — process sandboxes and microVMs alternating — leave no namespace,
/// link or table.
#[tokio::test]
async fn five_hundred_cycles_leave_nothing() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let allow = policy(&[&format!("{SERVER}:80")], &["203.0.113.0/24"]);
    let cycles: usize = std::env::var("LUMINAGUARD_NET_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    for i in 0..cycles {
        let sid = id(&format!("cycle-{i}"));
        lab.fresh(&sid);
        let link = if i % 2 == 0 {
            SandboxLink::Veth
        } else {
            SandboxLink::Tap(VMM)
        };
        let eg = topology::create_with_link(&sid, &allow, &lab.opts(None), link)
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        topology::remove(&eg.names, &lab.uplink)
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
    }
    let found = topology::leftovers(&[], &lab.uplink).await.unwrap();
    assert!(
        found.links.is_empty() && found.registered.is_empty(),
        "{found:?}"
    );
    for i in 0..cycles {
        let names = NetNames::for_sandbox(&id(&format!("cycle-{i}")));
        assert_eq!(lab.remaining(&names), Vec::<String>::new(), "cycle {i}");
    }
    assert_eq!(
        (vmm_taps(None), vmm_taps(Some(&lab.net.host))),
        (vec![], vec![]),
        "no tap device outlived its router namespace"
    );
}

/// The VMM identity the tap tests give their devices (no such account needs to exist).
const VMM: TapOwner = TapOwner {
    uid: 4_242_000,
    gid: 4_242_001,
};

/// `ip -d -j <args>` in a namespace (the current one for `None`).
fn links(netns: Option<&str>, args: &[&str]) -> Vec<serde_json::Value> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(["-d", "-j"]).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(serde_json::Value::Array(v)) => v,
        _ => Vec::new(),
    }
}

/// Tap devices owned by the tests' VMM identity in a namespace (the current one for `None`):
/// a tap that outlived its router namespace would have been pushed to another one.
fn vmm_taps(netns: Option<&str>) -> Vec<String> {
    links(netns, &["link", "show", "type", "tun"])
        .into_iter()
        .filter(|l| l["linkinfo"]["info_data"]["user"] == VMM.uid)
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}

/// What came back for one probe from the "VM".
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// The UDP echo server's datagram.
    Echo(Vec<u8>),
    /// A TCP SYN-ACK from the server.
    SynAck,
    /// ICMP destination unreachable, "communication administratively prohibited" (code 13),
    /// about this destination and port.
    Prohibited,
    Nothing,
}

const WAIT: Duration = Duration::from_secs(2);

fn udp_probe(vm: &mut Vm, dst: std::net::Ipv4Addr, port: u16, sport: u16) -> Answer {
    let data = format!("hello from the vm to {dst}:{port}").into_bytes();
    vm.send(&frames::udp(vm.ip, sport, dst, port, &data));
    vm.receive(WAIT, |p| {
        if let Some((from, to, got)) = p.udp()
            && p.src == dst
            && from == port
            && to == sport
        {
            return Some(Answer::Echo(got.to_vec()));
        }
        match p.unreachable() {
            Some((13, d, dp)) if d == dst && dp == port => Some(Answer::Prohibited),
            _ => None,
        }
    })
    .unwrap_or(Answer::Nothing)
}

fn tcp_probe(vm: &mut Vm, dst: std::net::Ipv4Addr, port: u16, sport: u16) -> Answer {
    vm.send(&frames::tcp(vm.ip, sport, dst, port, 0x4c47_0001, 0x02));
    let answer = vm
        .receive(WAIT, |p| {
            if let Some((from, to, flags)) = p.tcp()
                && p.src == dst
                && from == port
                && to == sport
                && flags & 0x12 == 0x12
            {
                return Some(Answer::SynAck);
            }
            match p.unreachable() {
                Some((13, d, dp)) if d == dst && dp == port => Some(Answer::Prohibited),
                _ => None,
            }
        })
        .unwrap_or(Answer::Nothing);
    if answer == Answer::SynAck {
        // Reset the half-open connection rather than leave the server retrying.
        vm.send(&frames::tcp(vm.ip, sport, dst, port, 0x4c47_0002, 0x04));
    }
    answer
}

/// A microVM's path: a persistent tap `sbx0` in the router namespace, owned by the VMM, no
/// sandbox namespace — and the test, playing the guest, speaks raw Ethernet frames on it: the
/// allowed UDP and TCP port answer, everything else is refused by the router table with ICMP
/// "administratively prohibited".
#[tokio::test]
async fn a_microvm_tap_reaches_the_allowed_port_and_is_refused_the_rest() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let eg = lab.microvm("egress-tap", &format!("{SERVER}:80")).await;
    assert_eq!(eg.link, SandboxLink::Tap(VMM));
    assert!(
        !eg.sandbox_netns_path().exists(),
        "a microVM gets no sandbox namespace"
    );
    let sbx0 = links(
        Some(&eg.names.router_netns),
        &["addr", "show", "dev", eg.tap_name()],
    );
    let [sbx0] = sbx0.as_slice() else {
        panic!("{sbx0:?}")
    };
    assert_eq!(
        sbx0["linkinfo"]["info_data"],
        serde_json::json!({"type": "tap", "pi": false, "vnet_hdr": true, "multi_queue": false,
            "persist": true, "user": VMM.uid, "group": VMM.gid}),
        "{sbx0}"
    );
    assert_eq!(sbx0["addr_info"][0]["local"], ROUTER_INNER_ADDR.to_string());
    assert_eq!(sbx0["addr_info"][0]["prefixlen"], 30);
    // Up, and persisting with nobody attached (hence no carrier yet).
    let flags = sbx0["flags"].to_string();
    assert!(
        flags.contains("\"UP\"") && flags.contains("NO-CARRIER"),
        "{flags}"
    );

    let tap = eg.open_tap(FrameFormat::Plain).await.unwrap();
    let mut vm = Vm::new(tap, SANDBOX_ADDR, ROUTER_INNER_ADDR);
    assert_eq!(
        udp_probe(&mut vm, SERVER, UDP_PORT, 40_001),
        Answer::Echo(format!("hello from the vm to {SERVER}:{UDP_PORT}").into_bytes()),
        "the allowed host:port, over UDP"
    );
    assert_eq!(
        tcp_probe(&mut vm, SERVER, 80, 40_002),
        Answer::SynAck,
        "and TCP"
    );
    assert_eq!(
        tcp_probe(&mut vm, SERVER, 81, 40_003),
        Answer::Prohibited,
        "another port of the allowed host"
    );
    assert_eq!(
        udp_probe(&mut vm, NEIGHBOUR, UDP_PORT, 40_004),
        Answer::Prohibited,
        "another host"
    );
    assert_eq!(
        udp_probe(&mut vm, METADATA, UDP_PORT, 40_005),
        Answer::Prohibited,
        "cloud metadata"
    );
    assert_eq!(
        tcp_probe(&mut vm, HOST_ADDR, 80, 40_006),
        Answer::Prohibited,
        "the host's own address"
    );
    drop(vm);

    topology::remove(&eg.names, &lab.uplink).await.unwrap();
    assert_eq!(lab.remaining(&eg.names), Vec::<String>::new());
    assert_eq!(
        (vmm_taps(None), vmm_taps(Some(&lab.net.host))),
        (vec![], vec![]),
        "the persistent tap went with its namespace, not to another one"
    );
}

nix::ioctl_write_ptr_bad!(
    tun_set_iff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<nix::libc::c_int>()),
    [u8; 40]
);

/// Attaches to `sbx0` in `router` the way a VMM does by name (Firecracker): from inside the
/// namespace, as `uid`/`gid` with no supplementary groups and no capability. Returns the
/// `TUNSETIFF` error, if any.
fn attach_as(router: &str, uid: u32, gid: u32) -> Result<(), nix::Error> {
    let path = format!("/run/netns/{router}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        // Opened while still root: /dev/net/tun is mode 0600 here (a jailer makes its own node
        // for the VMM). The device's owner is checked at TUNSETIFF, with the caller's identity.
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .unwrap();
        // Raw system calls change this thread's credentials only (libc's wrappers would change
        // every thread's); the thread ends right after.
        use nix::libc::{SYS_setgroups, SYS_setresgid, SYS_setresuid, syscall};
        // SAFETY: plain system calls on integers; a null list with length 0 for setgroups.
        unsafe {
            assert_eq!(syscall(SYS_setgroups, 0, std::ptr::null::<u32>()), 0);
            assert_eq!(syscall(SYS_setresgid, gid, gid, gid), 0);
            assert_eq!(syscall(SYS_setresuid, uid, uid, uid), 0);
        }
        let mut req = [0u8; 40];
        req[..4].copy_from_slice(b"sbx0");
        req[16..18].copy_from_slice(&(0x0002i16 | 0x1000 | 0x4000).to_ne_bytes()); // TAP|NO_PI|VNET_HDR
        // SAFETY: `tun` is open; `req` is a 40-byte `struct ifreq`.
        unsafe { tun_set_iff(std::os::fd::AsRawFd::as_raw_fd(&tun), &req) }.map(drop)
    })
    .join()
    .unwrap()
}

/// The tap is owned by the VMM's identity: that uid and gid attach to it by name without any
/// capability; another uid or another gid is refused.
#[tokio::test]
async fn only_the_vmm_identity_attaches_to_the_tap_by_name() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let eg = lab
        .microvm("egress-tap-owner", &format!("{SERVER}:80"))
        .await;
    let router = eg.names.router_netns.clone();
    assert_eq!(
        attach_as(&router, VMM.uid + 1, VMM.gid),
        Err(nix::Error::EPERM)
    );
    assert_eq!(
        attach_as(&router, VMM.uid, VMM.gid + 1),
        Err(nix::Error::EPERM)
    );
    assert_eq!(attach_as(&router, VMM.uid, VMM.gid), Ok(()));
    topology::remove(&eg.names, &lab.uplink).await.unwrap();
    assert_eq!(lab.remaining(&eg.names), Vec::<String>::new());
}

/// Unlike a process (no raw sockets), a guest writes whatever frames it likes: a packet with a
/// source address other than the guest's is dropped on arrival in the router namespace (strict
/// reverse-path filtering), before the forward hook — where a probe table counts it.
#[tokio::test]
async fn a_microvm_cannot_forge_its_source_address() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let eg = lab.microvm("egress-tap-spoof", "0.0.0.0/0").await;
    let router = eg.names.router_netns.clone();
    let forged = std::net::Ipv4Addr::new(10, 1, 2, 3);
    let nft = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &router, "nft"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    nft(&["add", "table", "ip", "probe"]);
    nft(&[
        "add",
        "chain",
        "ip",
        "probe",
        "seen",
        "{ type filter hook forward priority -300; policy accept; }",
    ]);
    for src in [forged, SANDBOX_ADDR] {
        nft(&[
            "add",
            "rule",
            "ip",
            "probe",
            "seen",
            "ip",
            "saddr",
            &src.to_string(),
            "counter",
        ]);
    }
    let mut vm = Vm::new(
        eg.open_tap(FrameFormat::Plain).await.unwrap(),
        SANDBOX_ADDR,
        ROUTER_INNER_ADDR,
    );
    assert!(matches!(
        udp_probe(&mut vm, SERVER, UDP_PORT, 40_011),
        Answer::Echo(_)
    ));
    for port in [40_012, 40_013] {
        vm.send(&frames::udp(forged, port, SERVER, UDP_PORT, b"forged"));
    }
    // Whatever the router did with them, it has done it by the time this probe's reply is back.
    assert!(matches!(
        udp_probe(&mut vm, SERVER, UDP_PORT, 40_014),
        Answer::Echo(_)
    ));
    drop(vm);
    let listing: serde_json::Value =
        serde_json::from_slice(&nft(&["-j", "list", "table", "ip", "probe"])).unwrap();
    let counts: Vec<u64> = listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["rule"]["expr"].as_array())
        .filter_map(|e| e.iter().find_map(|x| x["counter"]["packets"].as_u64()))
        .collect();
    assert_eq!(counts.len(), 2, "{listing}");
    assert_eq!(counts[0], 0, "forged packets forwarded");
    assert!(counts[1] >= 2, "the probe table counts: {counts:?}");
    topology::remove(&eg.names, &lab.uplink).await.unwrap();
    assert_eq!(lab.remaining(&eg.names), Vec::<String>::new());
}
