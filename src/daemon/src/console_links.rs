//! The console's login links, minted through this API: the web console
//! (luminaguard-console, served by the same daemon on TCP) has no peer credentials to know
//! whom it serves, so a person asks here — over the Unix socket, as themselves — for a one-time
//! link that logs their browser in as them (`luminaguard console url`).

use axum::extract::{Extension, State};
use luminaguard_api::types::{ConsoleLink, ErrorBody};
use luminaguard_service::Caller;

use crate::AppState;
use crate::error::ApiError;

/// What mints the links (the console, handed to the daemon by the binary).
pub trait ConsoleLinks: Send + Sync + std::fmt::Debug + 'static {
    /// A one-time login link for `caller`, and how long it is good.
    fn login_link(&self, caller: &Caller) -> Result<ConsoleLink, ApiError>;
}

/// A one-time link that logs a browser into the console as the caller (good once, for five
/// minutes). `501` when the daemon serves no console.
#[utoipa::path(post, path = "/v1/console/login",
    responses((status = 200, body = ConsoleLink), (status = 501, body = ErrorBody)))]
pub async fn login(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<axum::Json<ConsoleLink>, ApiError> {
    let console = st.console.as_deref().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "host-unsupported",
            "this daemon serves no console: start it with `luminaguard daemon --console 127.0.0.1:PORT`",
        )
    })?;
    Ok(axum::Json(console.login_link(&caller)?))
}
