//! A sandbox's DNS-pinning resolver (`luminaguard_net::resolver_service`), started the same way
//! by every backend: whether a policy needs one and where it asks upstream (decided before
//! anything is built), then the process and its pin helper — recorded, in the sandbox's cgroup,
//! ready — before the sandbox itself starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use luminaguard_cgroup::Cgroup;
use luminaguard_core::NetworkPolicy;
use luminaguard_core::runtime::SandboxFile;
use luminaguard_net::resolver_service::{self, ServiceConfig};
use luminaguard_net::{Egress, Uplink};

use crate::{BackendError, ProcessRef, SandboxMeta};

/// How a backend's sandboxes get their resolver.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// A binary with the `dns-resolver` subcommand (the `luminaguard` binary).
    pub exe: PathBuf,
    /// `None`: the uplink's `resolv.conf` decides ([`resolver_service::upstream_for`]).
    pub upstream: Option<SocketAddr>,
}

/// The resolver a sandbox will get: its binary, its upstream, and what it serves.
#[derive(Debug, Clone)]
pub struct Planned {
    exe: PathBuf,
    upstream: SocketAddr,
    policy: NetworkPolicy,
    uplink: Uplink,
}

fn setup(
    backend: &'static str,
    step: &'static str,
    reason: impl std::fmt::Display,
) -> BackendError {
    BackendError::Setup {
        backend,
        step,
        reason: reason.to_string(),
    }
}

/// `None` when `policy` names no domain; else the resolver it will get — an error, before
/// anything is built, when the backend has none or no upstream is known.
pub async fn plan(
    backend: &'static str,
    dns: Option<&DnsOptions>,
    policy: &NetworkPolicy,
    uplink: &Uplink,
) -> Result<Option<Planned>, BackendError> {
    if !resolver_service::needs_resolver(policy) {
        return Ok(None);
    }
    let Some(dns) = dns else {
        return Err(setup(
            backend,
            "set up network egress",
            "the policy names domains, which needs LuminaGuard's DNS-pinning resolver, and this \
             backend was built without one: name addresses instead (CIDR, IP or IP:port)",
        ));
    };
    let upstream = match dns.upstream {
        Some(u) => u,
        None => resolver_service::upstream_for(uplink)
            .await
            .map_err(|e| setup(backend, "find the upstream DNS resolver", e))?,
    };
    Ok(Some(Planned {
        exe: dns.exe.clone(),
        upstream,
        policy: policy.clone(),
        uplink: uplink.clone(),
    }))
}

/// Starts sandbox `meta.id`'s resolver for its egress path. The resolver is recorded in
/// `meta.helpers` before it is waited for, then its pin helper; both go in `cgroup` (their
/// memory and processes count against the sandbox). Its log is the sandbox's
/// [`SandboxFile::ResolverLog`].
pub async fn start(
    backend: &'static str,
    planned: &Planned,
    egress: &Egress,
    dir: &Path,
    meta: &mut SandboxMeta,
    cgroup: Option<&Cgroup>,
) -> Result<(), BackendError> {
    let step = "start the DNS resolver";
    let config = ServiceConfig::for_egress(
        &meta.id,
        egress,
        &planned.policy,
        &planned.uplink,
        planned.upstream,
    );
    let log = dir.join(SandboxFile::ResolverLog.file_name());
    let pending = resolver_service::spawn(&planned.exe, &config, &log)
        .await
        .map_err(|e| setup(backend, step, e))?;
    let record = |pid: u32| {
        i32::try_from(pid)
            .ok()
            .and_then(ProcessRef::of)
            .ok_or_else(|| setup(backend, step, format!("process {pid} exited at once")))
    };
    let resolver = record(pending.pid())?;
    meta.helpers.push(resolver);
    meta.save(dir).await?;
    let pin_helper = record(pending.ready().await.map_err(|e| setup(backend, step, e))?)?;
    meta.helpers.push(pin_helper);
    meta.save(dir).await?;
    if let Some(cg) = cgroup.cloned() {
        let pids = [resolver.pid, pin_helper.pid];
        tokio::task::spawn_blocking(move || pids.into_iter().try_for_each(|p| cg.add(p)))
            .await?
            .map_err(|e| setup(backend, step, e))?;
    }
    Ok(())
}
