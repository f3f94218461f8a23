//! Who may connect: the peer credentials of each connection (`SO_PEERCRED`, from the kernel,
//! not from anything the client says) decide. Root, the daemon's own user, and members of the
//! daemon's group may use the API — each as itself: the service's owner rule then gives every
//! uid its own sandboxes only. The socket's mode (`0660`, group-owned) is the first gate; this
//! is the second, for a socket whose mode was loosened or that was passed in by systemd.

use luminaguard_service::Caller;
use nix::unistd::{Gid, Group, Uid, User};

/// The connection rules.
#[derive(Debug, Clone)]
pub struct Authorizer {
    euid: u32,
    /// The group whose members may connect, when it exists.
    group: Option<(String, u32)>,
}

impl Authorizer {
    /// For a daemon running as this process's user, admitting members of `group` (which may
    /// not exist: then only root and the daemon's user connect). Blocking (reads the group
    /// database).
    pub fn new_blocking(group: &str) -> Self {
        let group = match Group::from_name(group) {
            Ok(Some(g)) => Some((g.name, g.gid.as_raw())),
            Ok(None) => {
                tracing::warn!(
                    group,
                    "no such group: only root and the daemon's own user may connect"
                );
                None
            }
            Err(e) => {
                tracing::warn!(group, error = %e, "cannot read the group database: only root and the daemon's own user may connect");
                None
            }
        };
        Self {
            euid: nix::unistd::geteuid().as_raw(),
            group,
        }
    }

    /// The group's gid, when it exists (for the socket's ownership).
    pub fn gid(&self) -> Option<u32> {
        self.group.as_ref().map(|(_, gid)| *gid)
    }

    /// The caller a connection from `uid`/`gid`/`pid` acts as, or why it may not connect.
    /// Blocking (may read the user and group databases).
    pub fn admit_blocking(&self, uid: u32, gid: u32, pid: Option<i32>) -> Result<Caller, String> {
        let caller = Caller {
            uid,
            gid,
            pid,
            session: None,
            front: None,
        };
        if uid == 0 || uid == self.euid {
            return Ok(caller);
        }
        let Some((name, group_gid)) = &self.group else {
            return Err(format!(
                "uid {uid} may not use this daemon: it admits only root and uid {}",
                self.euid
            ));
        };
        if gid == *group_gid || member(uid, *group_gid) {
            return Ok(caller);
        }
        Err(format!(
            "uid {uid} may not use this daemon: not a member of group {name}"
        ))
    }
}

/// Whether the user `uid` is in group `gid` (as primary group or listed member).
fn member(uid: u32, gid: u32) -> bool {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    if user.gid.as_raw() == gid {
        return true;
    }
    matches!(Group::from_gid(Gid::from_raw(gid)), Ok(Some(g)) if g.mem.contains(&user.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_daemons_user_are_admitted_others_only_through_the_group() {
        let auth = Authorizer {
            euid: 4242,
            group: None,
        };
        assert!(auth.admit_blocking(0, 0, None).is_ok());
        assert!(auth.admit_blocking(4242, 4242, None).is_ok());
        let err = auth.admit_blocking(5000, 5000, None).unwrap_err();
        assert!(err.contains("uid 5000"), "{err}");
        let auth = Authorizer {
            euid: 4242,
            group: Some(("lg".into(), 777)),
        };
        // Primary gid of the connecting process is the group.
        assert!(auth.admit_blocking(5000, 777, Some(1)).is_ok());
        let err = auth.admit_blocking(5000, 5000, None).unwrap_err();
        assert!(err.contains("group lg"), "{err}");
    }
}
