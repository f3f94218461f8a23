//! VM init's network configuration (`luminaguard_agent::guest_net::configure`), run for real in
//! a scratch network namespace holding an `eth0` (what the guest's virtio NIC is called),
//! then read back with `ip`. Needs root; required in CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::net::Ipv4Addr;
use std::process::Command;

use luminaguard_agent::guest_net::{self, GuestNet, GuestNetError};

fn ip(args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// A scratch namespace, removed on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("lgt-guestnet-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        ip(&["netns", "add", &name]);
        Self(name)
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(path).unwrap();
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn the_guest_nic_gets_its_address_and_default_route() {
    if !luminaguard_testkit::privileged("guest network configuration") {
        return;
    }
    let ns = Netns::new("ok");
    // A veth pair with its peer up: an interface with a carrier, as a bound virtio NIC has.
    ip(&[
        "-n", &ns.0, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ]);
    ip(&["-n", &ns.0, "link", "set", "peer0", "up"]);
    let net: GuestNet = "10.255.255.2/30,10.255.255.1".parse().unwrap();
    ns.run(move || {
        guest_net::wait_for_interface("eth0", guest_net::IFACE_TIMEOUT)?;
        guest_net::configure("eth0", &net)
    })
    .unwrap();

    let links = ip(&["-n", &ns.0, "-j", "addr", "show"]);
    let link = |name: &str| {
        links
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifname"] == name)
            .unwrap_or_else(|| panic!("{name}: {links}"))
            .clone()
    };
    let eth0 = link("eth0");
    let v4: Vec<_> = eth0["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .collect();
    assert_eq!(v4.len(), 1, "{eth0}");
    assert_eq!(v4[0]["local"], "10.255.255.2");
    assert_eq!(v4[0]["prefixlen"], 30);
    assert!(eth0["flags"].to_string().contains("\"UP\""), "{eth0}");
    assert!(link("lo")["flags"].to_string().contains("\"UP\""));

    let routes = ip(&["-n", &ns.0, "-j", "-4", "route", "show"]);
    let default = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dst"] == "default")
        .unwrap_or_else(|| panic!("no default route: {routes}"));
    assert_eq!(default["gateway"], "10.255.255.1");
    assert_eq!(default["dev"], "eth0");
    // And the route is used: the gateway is reached through eth0.
    let get = ip(&["-n", &ns.0, "-j", "route", "get", "198.51.100.10"]);
    assert_eq!(get[0]["gateway"], "10.255.255.1", "{get}");
    assert_eq!(get[0]["prefsrc"], "10.255.255.2", "{get}");
}

#[test]
fn a_missing_nic_is_an_error_naming_it() {
    if !luminaguard_testkit::privileged("guest network configuration") {
        return;
    }
    let ns = Netns::new("missing");
    let net = GuestNet {
        addr: Ipv4Addr::new(10, 255, 255, 2),
        prefix: 30,
        gateway: Ipv4Addr::new(10, 255, 255, 1),
    };
    let waited =
        ns.run(|| guest_net::wait_for_interface("eth0", std::time::Duration::from_millis(50)));
    assert!(
        matches!(&waited, Err(GuestNetError::NoInterface { iface, .. }) if iface == "eth0"),
        "{waited:?}"
    );
    let err = ns
        .run(move || guest_net::configure("eth0", &net))
        .unwrap_err();
    assert!(err.to_string().contains("eth0"), "{err}");
}
