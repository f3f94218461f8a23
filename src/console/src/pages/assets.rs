//! The console's stylesheet and script, embedded in the binary: it works offline, and the CSP
//! allows no other.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Authed;

/// Every asset behind the session too: without the link, nothing of the console answers.
pub(crate) async fn asset(_who: Authed, Path(name): Path<String>) -> Response {
    let (kind, body) = match name.as_str() {
        "console.css" => (
            "text/css; charset=utf-8",
            include_str!("../../assets/console.css"),
        ),
        "console.js" => (
            "text/javascript; charset=utf-8",
            include_str!("../../assets/console.js"),
        ),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}
