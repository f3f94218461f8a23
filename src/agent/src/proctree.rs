//! Finding and killing an exec's whole process tree.
//!
//! Each exec runs in its own session (the child calls `setsid`). Its tree is every live process
//! in that session, plus every descendant of its main process that left the session (by
//! following parent pids). To kill the tree without racing a process that forks while we look,
//! every member is stopped first, the tree is looked up again until no new member appears, and
//! only then is everything killed. Processes that both left the session *and* were orphaned
//! before the kill cannot be attributed; a per-sandbox cgroup (process backend) or the VM itself
//! bounds those.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// One line of `/proc/<pid>/stat` that matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: i32,
    pub ppid: i32,
    pub sid: i32,
    pub zombie: bool,
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ppid pgrp session …`; `comm` may hold spaces
/// and parentheses, so fields are read after the *last* `)`.
pub fn parse_stat(text: &str) -> Option<ProcEntry> {
    let (head, tail) = text.rsplit_once(')')?;
    let pid = head.split_whitespace().next()?.parse().ok()?;
    let mut f = tail.split_whitespace();
    let state = f.next()?;
    let ppid = f.next()?.parse().ok()?;
    let _pgrp = f.next()?;
    let sid = f.next()?.parse().ok()?;
    Some(ProcEntry {
        pid,
        ppid,
        sid,
        zombie: state == "Z" || state == "X",
    })
}

/// Every process visible in `/proc` (blocking; call from a blocking context).
pub fn scan() -> Vec<ProcEntry> {
    #[allow(clippy::disallowed_methods)] // called from spawn_blocking only
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(|pid| {
            #[allow(clippy::disallowed_methods)]
            let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            parse_stat(&text)
        })
        .collect()
}

/// Live members of the tree rooted at `root` whose session is `sid`, never including `exclude`.
pub fn tree_members(procs: &[ProcEntry], root: i32, sid: i32, exclude: i32) -> HashSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let live: HashMap<i32, &ProcEntry> = procs
        .iter()
        .filter(|p| !p.zombie)
        .map(|p| (p.pid, p))
        .collect();
    let mut members: HashSet<i32> = live
        .values()
        .filter(|p| p.sid == sid)
        .map(|p| p.pid)
        .collect();
    if live.contains_key(&root) {
        members.insert(root);
    }
    // Descendants of anything already in the set (by parent pid), to a fixed point.
    let mut frontier: Vec<i32> = members.iter().copied().collect();
    while let Some(pid) = frontier.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            if live.contains_key(&child) && members.insert(child) {
                frontier.push(child);
            }
        }
    }
    members.remove(&exclude);
    members.remove(&1);
    members.remove(&0);
    members
}

/// Stops, then kills, every member of the tree; returns how many were killed. Blocking.
pub fn kill_tree(root: i32, sid: i32) -> usize {
    let me = std::process::id() as i32;
    let mut stopped: HashSet<i32> = HashSet::new();
    // Each round stops the members found; a member forked after the scan is found next round,
    // and a stopped process cannot fork again. Bounded in case something keeps escaping.
    for _ in 0..64 {
        let members = tree_members(&scan(), root, sid, me);
        let new: Vec<i32> = members.difference(&stopped).copied().collect();
        if new.is_empty() {
            break;
        }
        for pid in new {
            if kill(Pid::from_raw(pid), Signal::SIGSTOP).is_ok() {
                stopped.insert(pid);
            }
        }
    }
    // A pidfd taken while the process is stopped (so its pid cannot have been reused) lets us
    // wait for the kill to take effect: SIGKILL is only queued when kill() returns, and the
    // caller reports the exec finished, so the tree must really be dead by then.
    let pidfds: Vec<OwnedFd> = stopped.iter().filter_map(|&pid| pidfd_open(pid)).collect();
    for &pid in &stopped {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    wait_exited(pidfds, DEATH_DEADLINE);
    stopped.len()
}

/// How long a SIGKILLed process may take to die before we give up waiting (it is still killed;
/// only the wait is bounded: a process stuck in uninterruptible sleep must not hang the agent).
const DEATH_DEADLINE: Duration = Duration::from_secs(5);

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits until every pidfd reports its process exited (a pidfd polls readable on exit), or the
/// deadline passes.
fn wait_exited(mut pidfds: Vec<OwnedFd>, deadline: Duration) {
    let end = Instant::now() + deadline;
    while !pidfds.is_empty() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(
                remaining = pidfds.len(),
                "killed processes did not exit within {deadline:?}"
            );
            return;
        }
        let mut polls: Vec<libc::pollfd> = pidfds
            .iter()
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `polls` is a valid array of `polls.len()` pollfd structs for the whole call.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, ms) };
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
        let done: HashSet<i32> = polls
            .iter()
            .filter(|p| p.revents != 0)
            .map(|p| p.fd)
            .collect();
        pidfds.retain(|fd| !done.contains(&fd.as_raw_fd()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_hostile_comm() {
        let e = parse_stat("42 (a) b) (c) S 7 42 40 0 -1 4194560 0").unwrap();
        assert_eq!(
            e,
            ProcEntry {
                pid: 42,
                ppid: 7,
                sid: 40,
                zombie: false
            }
        );
        assert!(parse_stat("9 (x) Z 1 9 9 0").unwrap().zombie);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn tree_includes_session_and_escaped_descendants() {
        let p = |pid, ppid, sid, zombie| ProcEntry {
            pid,
            ppid,
            sid,
            zombie,
        };
        let procs = [
            p(1, 0, 1, false),
            p(100, 1, 1, false),     // the agent
            p(200, 100, 200, false), // exec main, session leader
            p(201, 200, 200, false), // child in session
            p(202, 201, 300, false), // left the session (setsid) but still a descendant
            p(203, 202, 300, false), // its child
            p(204, 100, 200, false), // orphan still in the session (reparented to the agent)
            p(205, 200, 200, true),  // zombie: nothing to kill
            p(300, 1, 300, false),   // unrelated process sharing sid 300 but not a descendant
        ];
        let m = tree_members(&procs, 200, 200, 100);
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort();
        assert_eq!(v, vec![200, 201, 202, 203, 204]);
    }
}
