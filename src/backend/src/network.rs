//! A microVM's egress path, built the same way by every microVM backend: the sandbox's router
//! namespace with a persistent tap `sbx0` owned by the VMM's identity
//! (`luminaguard_net::topology`, `SandboxLink::Tap`), and — for a policy naming domains — the
//! sandbox's DNS-pinning resolver ([`crate::resolver`]). What the VMM does with the tap (QEMU
//! inherits an open descriptor; Firecracker joins the namespace and opens it by name) is the
//! backend's.

use std::path::Path;

use luminaguard_cgroup::Cgroup;
use luminaguard_net::tap::TapOwner;
use luminaguard_net::topology::{self, SandboxLink};
use luminaguard_net::{Egress, Uplink};

use crate::resolver::{self, DnsOptions};
use crate::{BackendError, CreateRequest, SandboxMeta, VmmIdentity};

/// Where a backend's microVMs reach the world, and how their names are resolved.
#[derive(Debug, Clone, Copy)]
pub struct MicrovmNetwork<'a> {
    /// The backend's name, for errors.
    pub backend: &'static str,
    pub uplink: &'a Uplink,
    /// `None`: a policy naming a domain is refused.
    pub dns: Option<&'a DnsOptions>,
}

/// A microVM's egress path, up.
#[derive(Debug)]
pub struct MicrovmPath {
    pub egress: Egress,
    /// A resolver serves the guest's names (the guest's `resolv.conf` must name it).
    pub resolver: bool,
}

impl MicrovmNetwork<'_> {
    /// For `req`'s egress policy: records the uplink (before anything exists, so a failed or
    /// abandoned create still removes it), builds the path with a tap owned by `who`, and
    /// starts the resolver for a policy naming domains (in `cgroup`, when there is one).
    /// `None` for no policy: no NIC at all.
    pub async fn create(
        &self,
        req: &CreateRequest,
        dir: &Path,
        meta: &mut SandboxMeta,
        who: &VmmIdentity,
        cgroup: Option<&Cgroup>,
    ) -> Result<Option<MicrovmPath>, BackendError> {
        let policy = &req.spec.network;
        if policy.is_none() {
            return Ok(None);
        }
        // Known before anything is built: a host without a resolver fails at once.
        let dns = resolver::plan(self.backend, self.dns, policy, self.uplink).await?;
        meta.net = Some(self.uplink.clone());
        meta.save(dir).await?;
        let opts = topology::Options {
            uplink: self.uplink,
            lock: &req.runtime.root().join("net.lock"),
            fail_at: None,
        };
        let owner = TapOwner {
            uid: who.uid,
            gid: who.gid,
        };
        let egress = topology::create_with_link(&req.id, policy, &opts, SandboxLink::Tap(owner))
            .await
            .map_err(|e| BackendError::Setup {
                backend: self.backend,
                step: "set up network egress",
                reason: e.to_string(),
            })?;
        if let Some(planned) = &dns {
            resolver::start(self.backend, planned, &egress, dir, meta, cgroup).await?;
        }
        Ok(Some(MicrovmPath {
            egress,
            resolver: dns.is_some(),
        }))
    }
}
