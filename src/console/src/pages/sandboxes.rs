//! The session user's sandboxes (root: everyone's), as the daemon's `GET /v1/sandboxes` lists
//! them for the same caller, with what each uses of its cgroup's limits; and destroying one,
//! after a confirmation page (no JavaScript needed), through the service as
//! `DELETE /v1/sandboxes/{id}` does.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use luminaguard_core::{NetworkPolicy, SandboxId};
use luminaguard_service::ServiceError;
use luminaguard_service::inspect::Inspection;
use serde::Deserialize;

use super::figures::{bytes, duration};
use super::{Authed, render};
use crate::Console;

/// One sandbox as the page shows it.
struct Row {
    id: String,
    uid: String,
    user_name: Option<String>,
    backend: String,
    state: String,
    pool: Option<String>,
    age: String,
    left: String,
    memory: String,
    pids: String,
    cpu: String,
    /// Why there are no figures, if there are none.
    usage_note: Option<String>,
    /// `off`, or `allowlist` with `allow` (and `deny`).
    network: &'static str,
    allow: Vec<String>,
    deny: Vec<String>,
}

#[derive(Template)]
#[template(path = "sandboxes.html")]
struct SandboxesPage {
    csrf: String,
    root: bool,
    rows: Vec<Row>,
}

#[derive(Template)]
#[template(path = "destroy.html")]
struct ConfirmPage {
    csrf: String,
    id: String,
    backend: String,
    age: String,
}

pub(crate) async fn page(State(console): State<Arc<Console>>, who: Authed) -> Response {
    let caller = who.caller();
    let list = match console.service.inspect(&caller).await {
        Ok(list) => list,
        Err(e) => return service_error(&e, "listing your sandboxes"),
    };
    render(&SandboxesPage {
        csrf: who.session.csrf,
        root: caller.is_root(),
        rows: list.into_iter().map(row).collect(),
    })
}

/// `GET /sandboxes/{id}/destroy`: "Destroy sandbox X?", with the form that does it.
pub(crate) async fn confirm(
    State(console): State<Arc<Console>>,
    who: Authed,
    Path(id): Path<String>,
) -> Response {
    let id = match sandbox_id(&id) {
        Ok(id) => id,
        Err(refused) => return refused.into_response(),
    };
    // Another user's sandbox is not found, as through the API.
    match console.service.get(&who.caller(), &id).await {
        Ok(l) => render(&ConfirmPage {
            csrf: who.session.csrf,
            id: l.id,
            backend: l.backend,
            age: duration(l.age_ms),
        }),
        Err(e) => service_error(&e, &format!("sandbox {id}")),
    }
}

#[derive(Deserialize)]
pub(crate) struct DestroyForm {
    /// Missing is refused like a wrong one (403), not as a malformed form.
    #[serde(default)]
    csrf: String,
}

/// `POST /sandboxes/{id}/destroy`: destroys it, then back to the list.
pub(crate) async fn destroy(
    State(console): State<Arc<Console>>,
    who: Authed,
    Path(id): Path<String>,
    Form(f): Form<DestroyForm>,
) -> Response {
    if let Err(refused) = who.check(&f.csrf) {
        return refused.into_response();
    }
    let id = match sandbox_id(&id) {
        Ok(id) => id,
        Err(refused) => return refused.into_response(),
    };
    match console.service.destroy(&who.caller(), &id).await {
        Ok(()) => Redirect::to("/sandboxes").into_response(),
        Err(e) => service_error(&e, &format!("destroying sandbox {id}")),
    }
}

/// A path that names no sandbox: `400`, saying why.
struct BadId(String);

impl IntoResponse for BadId {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            format!("invalid sandbox id: {}", self.0),
        )
            .into_response()
    }
}

/// A path's id (the same parse as the API's).
fn sandbox_id(raw: &str) -> Result<SandboxId, BadId> {
    raw.parse::<SandboxId>().map_err(|e| BadId(e.to_string()))
}

/// The service's refusal with the API's status for it.
fn service_error(e: &ServiceError, doing: &str) -> Response {
    let status = luminaguard_daemon::error::status(e.code());
    (status, format!("{doing}: {}: {e}", e.code().as_str())).into_response()
}

fn row(i: Inspection) -> Row {
    let l = i.listing;
    let (network, allow, deny) = match i.network {
        Some(NetworkPolicy::Egress { allow, deny }) => (
            "allowlist",
            allow.iter().map(ToString::to_string).collect(),
            deny.iter().map(ToString::to_string).collect(),
        ),
        Some(NetworkPolicy::None) => ("off", Vec::new(), Vec::new()),
        None => ("not recorded", Vec::new(), Vec::new()),
    };
    let (memory, pids, cpu, usage_note) = match i.usage {
        Ok(u) => (
            format!(
                "{} of {}",
                u.memory_bytes.map_or_else(|| "—".into(), bytes),
                u.memory_limit.map_or_else(|| "no limit".into(), bytes)
            ),
            format!(
                "{} of {}",
                u.pids.map_or_else(|| "—".into(), |n| n.to_string()),
                u.pids_limit
                    .map_or_else(|| "no limit".into(), |n| n.to_string())
            ),
            format!(
                "{}; limit {}",
                u.cpu_usec.map_or_else(
                    || "time not accounted (no cpuacct with cpu)".into(),
                    |us| format!("{:.1} s", us as f64 / 1e6)
                ),
                u.cpu_limit_millis.map_or_else(
                    || "none".into(),
                    |m| format!("{:.2} CPU", m as f64 / 1000.0)
                )
            ),
            None,
        ),
        Err(why) => ("—".into(), "—".into(), "—".into(), Some(why)),
    };
    Row {
        uid: l
            .user
            .map_or_else(|| "root (old record)".into(), |u| u.to_string()),
        user_name: i.user_name,
        backend: match &l.accel {
            Some(a) => format!("{} ({a})", l.backend),
            None => l.backend.clone(),
        },
        state: l.state.to_string(),
        pool: l.pool,
        age: duration(l.age_ms),
        left: l
            .expires_in_ms
            .map_or_else(|| "no lifetime".into(), duration),
        memory,
        pids,
        cpu,
        usage_note,
        network,
        allow,
        deny,
        id: l.id,
    }
}
