//! Who may use the console: a one-time login link (`luminaguard console url`, minted for the
//! user who asked the daemon over its socket) becomes a session — an `HttpOnly`,
//! `SameSite=Strict` cookie naming a random id — and every form a session is shown carries its
//! CSRF token. Tokens and ids are 32 random bytes, compared in constant time, kept in memory
//! only (a daemon restart logs everyone out).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A login link is good this long, once.
pub const LINK_TTL: Duration = Duration::from_secs(300);
/// A session lasts this long after its last request.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "lg_session";

/// A random token: 32 bytes, hex.
pub fn token() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Equal, in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A logged-in person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Whom the console acts for (the user the link was minted for).
    pub uid: u32,
    pub gid: u32,
    /// What every form of this session carries.
    pub csrf: String,
    last: Instant,
}

#[derive(Debug)]
struct Link {
    uid: u32,
    gid: u32,
    expires: Instant,
}

/// The links and sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    links: Mutex<HashMap<String, Link>>,
    sessions: Mutex<HashMap<String, Session>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sessions {
    /// A one-time login token for `uid`.
    pub fn mint(&self, uid: u32, gid: u32) -> Result<String, getrandom::Error> {
        let t = token()?;
        let now = Instant::now();
        let mut links = lock(&self.links);
        links.retain(|_, l| l.expires > now);
        links.insert(
            t.clone(),
            Link {
                uid,
                gid,
                expires: now + LINK_TTL,
            },
        );
        Ok(t)
    }

    /// Uses login token `t` (once): the new session's id and the session.
    pub fn login(&self, t: &str) -> Option<(String, Session)> {
        let link = {
            let mut links = lock(&self.links);
            let key = links.keys().find(|k| same(k, t)).cloned()?;
            links.remove(&key)?
        };
        if link.expires <= Instant::now() {
            return None;
        }
        let id = token().ok()?;
        let session = Session {
            uid: link.uid,
            gid: link.gid,
            csrf: token().ok()?,
            last: Instant::now(),
        };
        lock(&self.sessions).insert(id.clone(), session.clone());
        Some((id, session))
    }

    /// The session of cookie value `id`, if it is live (its idle time restarts).
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| now.duration_since(s.last) < SESSION_IDLE);
        let key = sessions.keys().find(|k| same(k, id)).cloned()?;
        let s = sessions.get_mut(&key)?;
        s.last = now;
        Some(s.clone())
    }

    /// Whether session `id` is live, without counting this as its use (an open page's event
    /// stream does not keep an unattended session alive).
    pub fn alive(&self, id: &str) -> bool {
        let now = Instant::now();
        lock(&self.sessions)
            .iter()
            .any(|(k, s)| same(k, id) && now.duration_since(s.last) < SESSION_IDLE)
    }

    /// Ends session `id`.
    pub fn logout(&self, id: &str) {
        lock(&self.sessions).retain(|k, _| !same(k, id));
    }
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`), if there is exactly one.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let mut found = header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'));
    let first = found.next()?;
    // Two cookies of one name (one planted by a sibling site): trust neither.
    found.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_link_logs_in_once() {
        let s = Sessions::default();
        let t = s.mint(1000, 1000).unwrap();
        let (id, session) = s.login(&t).unwrap();
        assert_eq!(session.uid, 1000);
        assert!(s.login(&t).is_none(), "a link is good once");
        assert_eq!(s.get(&id).unwrap().csrf, session.csrf);
        assert!(s.get("00").is_none());
        s.logout(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn cookies_are_read_strictly() {
        assert_eq!(cookie("a=1; lg_session=abc", COOKIE), Some("abc"));
        assert_eq!(cookie("lg_session=abc; lg_session=def", COOKIE), None);
        assert_eq!(cookie("xlg_session=abc", COOKIE), None);
        assert_eq!(cookie("", COOKIE), None);
    }

    proptest! {
        #[test]
        fn any_cookie_header_is_parsed_without_panic(h in "\\PC{0,200}") {
            let _ = cookie(&h, COOKIE);
        }

        #[test]
        fn same_is_equality(a in "[0-9a-f]{0,8}", b in "[0-9a-f]{0,8}") {
            prop_assert_eq!(same(&a, &b), a == b);
        }
    }
}
