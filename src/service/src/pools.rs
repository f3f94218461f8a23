//! Warm pools (`[pools.NAME]` in the configuration): sandboxes made ahead with a pool's
//! settings so that a request for one is served at once. A member is handed out once — its
//! owner, lifetime and persistence become the requester's — and never returns to the pool.
//! Members belong to the service's process (they die with it), are listed as pooled, are
//! replaced after `max_age`, and are destroyed when the service closes.
//!
//! A request naming a pool may repeat the pool's settings but not differ from them: a
//! sandbox with other limits or another network is never silently served from a pool.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use luminaguard_backend::Sandbox;
use luminaguard_core::config::PoolConfig;

use crate::{Caller, CreateOptions, Pending, Service, ServiceError};

/// One ready sandbox.
#[derive(Debug)]
struct Member {
    sandbox: Sandbox,
    made: Instant,
    /// The definition it was made for: after a reload changes it, the member is not the
    /// pool's any more.
    made_for: PoolConfig,
}

/// What the pools are: the configured definitions, replaced on reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Defs {
    pools: BTreeMap<String, PoolConfig>,
    run_pool: Option<String>,
}

/// The ready members of every pool.
#[derive(Debug, Default)]
pub(crate) struct Pools {
    defs: Mutex<Defs>,
    ready: Mutex<HashMap<String, VecDeque<Member>>>,
    /// Woken when a member is taken (or the service closes): the filler makes a new one.
    pub(crate) refill: tokio::sync::Notify,
    /// Set when the service closes: the filler makes no more.
    closing: std::sync::atomic::AtomicBool,
}

impl Pools {
    pub(crate) fn new(config: &luminaguard_core::Config) -> Self {
        Self {
            defs: Mutex::new(Defs {
                pools: config.pools.clone(),
                run_pool: config.daemon.run_pool.clone(),
            }),
            ..Self::default()
        }
    }

    fn defs(&self) -> Defs {
        // Replaced whole under the lock: a panic elsewhere cannot leave it half-written.
        self.defs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn def(&self, name: &str) -> Option<PoolConfig> {
        self.defs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pools
            .get(name)
            .cloned()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Member>>> {
        // Each operation is one push or pop: a panic elsewhere leaves the queues consistent.
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How many members each pool has ready, against its size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub ready: usize,
    pub size: u32,
}

/// What a pool's members are made with. They are made able to outlive their creator (a
/// long-lived sandbox's keeper and socket), but not handed over: until taken, they die with
/// the service's process. The agent's own lifetime is a backstop covering the wait and the
/// lifetime.
fn member_options(def: &PoolConfig, defaults_lifetime: Duration) -> CreateOptions {
    let lifetime = def.lifetime.unwrap_or(defaults_lifetime);
    CreateOptions {
        persistent: true,
        memory: def.memory,
        pids: def.pids,
        cpus: def.cpus,
        timeout: def.timeout,
        lifetime: Some(def.max_age().saturating_add(lifetime)),
        backend: def.backend,
        image: def.image.clone(),
        template: def.template.clone(),
        net_allow: def.net.clone(),
        net_deny: def.net_deny.clone(),
        ..CreateOptions::default()
    }
}

/// Why `opts` cannot be served from pool `name` (`def`), if it cannot: any setting it gives
/// that is not the pool's.
pub fn mismatch(name: &str, def: &PoolConfig, opts: &CreateOptions) -> Option<String> {
    let mut diffs = Vec::new();
    let mut differs = |what: &str, asked: Option<String>, pool: Option<String>| {
        if let Some(asked) = asked
            && Some(&asked) != pool.as_ref()
        {
            let pool = pool.unwrap_or_else(|| "the default".into());
            diffs.push(format!("{what} {asked} (the pool's: {pool})"));
        }
    };
    let text = |d: Option<Duration>| d.map(|d| humantime::format_duration(d).to_string());
    differs(
        "memory",
        opts.memory.map(|m| m.to_string()),
        def.memory.map(|m| m.to_string()),
    );
    differs(
        "pids",
        opts.pids.map(|p| p.to_string()),
        def.pids.map(|p| p.to_string()),
    );
    differs(
        "cpus",
        opts.cpus.map(|c| c.to_string()),
        def.cpus.map(|c| c.to_string()),
    );
    differs("timeout", text(opts.timeout), text(def.timeout));
    differs("lifetime", text(opts.lifetime), text(def.lifetime));
    differs(
        "backend",
        opts.backend.map(|b| b.to_string()),
        def.backend.map(|b| b.to_string()),
    );
    differs("image", opts.image.clone(), def.image.clone());
    differs("template", opts.template.clone(), def.template.clone());
    let rules = |r: &[luminaguard_core::EgressRule]| {
        (!r.is_empty()).then(|| {
            r.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
    };
    differs("net", rules(&opts.net_allow), rules(&def.net));
    differs("net-deny", rules(&opts.net_deny), rules(&def.net_deny));
    if let Some(w) = &opts.workspace {
        diffs.push(format!(
            "workspace {} (a pool's sandboxes are made before anyone asks: they have none)",
            w.display()
        ));
    }
    for m in &opts.mounts {
        diffs.push(format!(
            "mount {m} (a pool's sandboxes are made before anyone asks: they have the \
             configuration's mounts only)"
        ));
    }
    if opts.review {
        diffs.push("review (a pool's sandboxes write no overlay)".into());
    }
    if opts.no_cgroup {
        diffs.push("no-cgroup (a pool's sandboxes have their limits)".into());
    }
    if opts.id.is_some() {
        diffs.push("a name (a pool's sandboxes have theirs already)".into());
    }
    (!diffs.is_empty()).then(|| {
        format!(
            "pool {name} cannot serve this request: {}",
            diffs.join("; ")
        )
    })
}

impl Service {
    /// Settles which pool one-shot run `opts` is served from: the one it names, else the
    /// configured `daemon.run_pool` when the run asks for nothing that pool does not give (a
    /// run asking for other settings is made as usual, not refused: it named no pool).
    pub fn choose_run_pool(&self, opts: &mut CreateOptions) {
        if opts.pool.is_some() {
            return;
        }
        let defs = self.pools.defs();
        let Some(name) = defs.run_pool else {
            return;
        };
        if let Some(def) = defs.pools.get(&name)
            && mismatch(&name, def, opts).is_none()
        {
            opts.pool = Some(name);
        }
    }

    /// How full each configured pool is.
    pub fn pool_status(&self) -> Vec<PoolStatus> {
        let defs = self.pools.defs();
        let ready = self.pools.lock();
        defs.pools
            .iter()
            .map(|(name, def)| PoolStatus {
                name: name.clone(),
                ready: ready.get(name).map_or(0, VecDeque::len),
                size: def.size,
            })
            .collect()
    }

    /// Hands a member of pool `name` to `caller` with `opts`'s persistence (one is made now if
    /// none is ready). The caller commits it as any new sandbox.
    pub(crate) async fn take_pooled(
        &self,
        caller: &Caller,
        name: &str,
        opts: &CreateOptions,
    ) -> Result<Pending, ServiceError> {
        let def = self
            .pools
            .def(name)
            .ok_or_else(|| ServiceError::NotFound(format!("no pool named {name}")))?;
        let def = &def;
        if let Some(why) = mismatch(name, def, opts) {
            return Err(ServiceError::InvalidSpec(why));
        }
        let taken = loop {
            let next = self
                .pools
                .lock()
                .get_mut(name)
                .and_then(VecDeque::pop_front);
            match next {
                // Past its age (the filler has not replaced it yet): never handed out.
                Some(m) if m.made.elapsed() >= def.max_age() || !m.made_for.makes_same_as(def) => {
                    self.discard_member(m).await;
                }
                Some(m) => break Some(m.sandbox),
                None => break None,
            }
        };
        self.pools.refill.notify_one();
        let mut sandbox = match taken {
            Some(s) => s,
            None => {
                tracing::info!(pool = name, "pool empty: making a sandbox now");
                self.make_member(name, def).await?
            }
        };
        let lifetime = def.lifetime.unwrap_or(self.config.defaults.lifetime);
        let now = luminaguard_backend::state::now_unix_ms();
        let meta = &mut sandbox.meta;
        meta.user = Some(caller.uid);
        meta.pool = None;
        meta.persistent = opts.persistent;
        meta.expires_unix_ms =
            Some(now.saturating_add(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX)));
        // A long-lived one's record is written when it is committed (handed over); only a
        // disposable one's is written here.
        if !opts.persistent
            && let Err(e) = meta.save(&sandbox.dir).await
        {
            let _ = sandbox.destroy().await;
            return Err(ServiceError::internal("handing out a pooled sandbox", e));
        }
        Ok(Pending {
            service: self.clone(),
            sandbox,
            session: None,
        })
    }

    /// Makes one member of pool `name`, recorded as pooled.
    async fn make_member(&self, name: &str, def: &PoolConfig) -> Result<Sandbox, ServiceError> {
        let me = Caller {
            uid: self.euid,
            gid: nix::unistd::getegid().as_raw(),
            pid: None,
            session: None,
            front: None,
        };
        let opts = member_options(def, self.config.defaults.lifetime);
        let mut sandbox = self.create_unpooled(&me, opts).await?.sandbox;
        sandbox.meta.pool = Some(name.to_owned());
        if let Err(e) = sandbox.meta.save(&sandbox.dir).await {
            let _ = sandbox.destroy().await;
            return Err(ServiceError::internal("recording a pooled sandbox", e));
        }
        Ok(sandbox)
    }

    async fn discard_member(&self, m: Member) {
        let id = m.sandbox.id.clone();
        if let Err(e) = m.sandbox.destroy().await {
            tracing::warn!(%id, error = %e, "destroying a pooled sandbox");
        }
    }

    /// Brings every pool to its size: replaces members past `max_age`, makes missing ones (one
    /// at a time per pool: a host is not flooded with boots). A failed create is logged and
    /// retried on the next round. Returns when the next member ages out.
    pub async fn fill_pools(&self) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        let defs = self.pools.defs();
        // Members made for a pool a reload removed while they were being made.
        let orphans: Vec<Member> = {
            let mut ready = self.pools.lock();
            let gone: Vec<String> = ready
                .keys()
                .filter(|n| !defs.pools.contains_key(*n))
                .cloned()
                .collect();
            gone.iter()
                .filter_map(|n| ready.remove(n))
                .flatten()
                .collect()
        };
        for m in orphans {
            self.discard_member(m).await;
        }
        for (name, def) in &defs.pools {
            let stale: Vec<Member> = {
                let mut ready = self.pools.lock();
                let queue = ready.entry(name.clone()).or_default();
                let (old, fresh): (Vec<Member>, Vec<Member>) = queue.drain(..).partition(|m| {
                    m.made.elapsed() >= def.max_age() || !m.made_for.makes_same_as(def)
                });
                queue.extend(fresh);
                old
            };
            for m in stale {
                self.discard_member(m).await;
            }
            loop {
                if self
                    .pools
                    .closing
                    .load(std::sync::atomic::Ordering::Acquire)
                {
                    return None;
                }
                let have = self.pools.lock().get(name).map_or(0, VecDeque::len);
                if have >= usize::try_from(def.size).unwrap_or(usize::MAX) {
                    break;
                }
                match self.make_member(name, def).await {
                    Ok(sandbox) => self
                        .pools
                        .lock()
                        .entry(name.clone())
                        .or_default()
                        .push_back(Member {
                            sandbox,
                            made: Instant::now(),
                            made_for: def.clone(),
                        }),
                    Err(e) => {
                        tracing::warn!(pool = name, error = %e, "cannot fill the pool");
                        next = Some(next.map_or(RETRY, |n| n.min(RETRY)));
                        break;
                    }
                }
            }
            let oldest = self
                .pools
                .lock()
                .get(name)
                .and_then(|q| q.iter().map(|m| m.made.elapsed()).max());
            if let Some(age) = oldest {
                let due = def.max_age().saturating_sub(age);
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        next
    }

    /// Replaces the pools' definitions with `config`'s (a reloaded configuration): the members
    /// of a pool that is gone or whose settings changed are destroyed, a pool that shrank
    /// loses its oldest extras, and the filler is woken to make what is missing. Returns what
    /// changed, one line per pool.
    pub async fn reload_pools(&self, config: &luminaguard_core::Config) -> Vec<String> {
        let new = Defs {
            pools: config.pools.clone(),
            run_pool: config.daemon.run_pool.clone(),
        };
        let old = std::mem::replace(
            &mut *self
                .pools
                .defs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            new.clone(),
        );
        let mut changes = Vec::new();
        for (name, def) in &new.pools {
            match old.pools.get(name) {
                None => changes.push(format!("pool {name}: added (size {})", def.size)),
                Some(was) if was == def => {}
                Some(was) if was.makes_same_as(def) => {
                    changes.push(format!("pool {name}: size {} → {}", was.size, def.size));
                }
                Some(_) => changes.push(format!("pool {name}: settings changed, members remade")),
            }
        }
        for name in old.pools.keys().filter(|n| !new.pools.contains_key(*n)) {
            changes.push(format!("pool {name}: removed"));
        }
        if old.run_pool != new.run_pool {
            changes.push(format!(
                "run_pool: {} → {}",
                old.run_pool.as_deref().unwrap_or("none"),
                new.run_pool.as_deref().unwrap_or("none")
            ));
        }
        let gone: Vec<Member> = {
            let mut ready = self.pools.lock();
            let mut gone = Vec::new();
            for (name, queue) in ready.iter_mut() {
                let Some(def) = new.pools.get(name) else {
                    gone.extend(queue.drain(..));
                    continue;
                };
                let (stale, kept): (Vec<Member>, Vec<Member>) = queue
                    .drain(..)
                    .partition(|m| !m.made_for.makes_same_as(def));
                gone.extend(stale);
                queue.extend(kept);
                let size = usize::try_from(def.size).unwrap_or(usize::MAX);
                while queue.len() > size {
                    gone.extend(queue.pop_front());
                }
            }
            ready.retain(|name, _| new.pools.contains_key(name));
            gone
        };
        for m in gone {
            self.discard_member(m).await;
        }
        self.pools.refill.notify_one();
        changes
    }

    /// Resolves when a pool member has been taken (the filler's cue); `false` once the
    /// pools are closing.
    pub async fn pool_taken(&self) -> bool {
        self.pools.refill.notified().await;
        !self
            .pools
            .closing
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Tells the filler to stop (it finishes the sandbox it is making, then returns).
    pub fn stop_filling(&self) {
        self.pools
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.pools.refill.notify_one();
    }

    /// Destroys every ready member (the service is closing).
    pub(crate) async fn drain_pools(&self) {
        let all: Vec<Member> = self
            .pools
            .lock()
            .drain()
            .flat_map(|(_, q)| q.into_iter())
            .collect();
        for m in all {
            self.discard_member(m).await;
        }
    }
}

/// How soon a pool that failed to fill is tried again.
const RETRY: Duration = Duration::from_secs(10);
