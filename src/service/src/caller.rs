//! Who a request comes from. The service acts for a caller and applies the owner rule to every
//! request: a caller sees and touches only the sandboxes it created; root sees all.

/// The user a request is made for: this process's own user for the in-process CLI, the peer
/// credentials of the connection (`SO_PEERCRED`) for the daemon.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The calling process, when known (for logs and the audit trail; never for decisions, as
    /// a pid can be reused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The front-end's session this request belongs to (an MCP session and its client), when
    /// one process serves several: named on every audit record the request makes (else the
    /// service-wide one, [`crate::Service::set_session`]), and what an [`crate::ask::Asker`]
    /// is told so that it asks that session's person. Never used for decisions.
    #[serde(skip)]
    pub session: Option<std::sync::Arc<str>>,
    /// The daemon's own front-end that took the request (`console`), set by the daemon's code
    /// and never by a client: the audit records' actor `kind`. (A session is a label a client
    /// chooses; this is not.)
    #[serde(skip)]
    pub front: Option<&'static str>,
}

impl Caller {
    /// This process: its effective uid and gid.
    pub fn current() -> Self {
        Self {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            pid: i32::try_from(std::process::id()).ok(),
            session: None,
            front: None,
        }
    }

    /// This caller acting for front-end session `session`.
    #[must_use]
    pub fn in_session(&self, session: impl Into<std::sync::Arc<str>>) -> Self {
        Self {
            session: Some(session.into()),
            ..self.clone()
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether this caller may see and use a sandbox that belongs to `user` (`None`: a record
    /// of an older version, root's alone).
    pub fn may_use(&self, user: Option<u32>) -> bool {
        self.is_root() || user == Some(self.uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_uses_its_own_sandboxes_and_root_uses_all() {
        let user = Caller {
            uid: 1000,
            gid: 1000,
            pid: None,
            session: None,
            front: None,
        };
        let root = Caller {
            uid: 0,
            gid: 0,
            pid: None,
            session: None,
            front: None,
        };
        assert!(user.may_use(Some(1000)));
        assert!(!user.may_use(Some(1001)));
        assert!(!user.may_use(Some(0)));
        assert!(!user.may_use(None));
        assert!(root.may_use(Some(1000)) && root.may_use(None));
    }
}
