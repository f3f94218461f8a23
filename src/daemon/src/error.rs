//! Every failure an API client sees: a status and a JSON body `{"error": code, "detail":
//! text}` whose code is stable (the service's [`ErrorCode`]s, and the HTTP layer's own:
//! `bad-request`, `unauthorized`, `too-large`, `unavailable`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use luminaguard_api::types::ErrorBody;
use luminaguard_service::{ErrorCode, ServiceError};

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code.to_owned(),
            detail: self.detail.clone(),
        }
    }
}

/// The status for a service error's kind.
/// The stable code of a failed response, attached to it as an extension.
#[derive(Debug, Clone, Copy)]
pub struct Failed(pub &'static str);

pub fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::InvalidSpec => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::HostUnsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let code = e.code();
        if code == ErrorCode::Internal {
            tracing::warn!(error = %e, "request failed");
        }
        Self::new(status(code), code.as_str(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        // For the metrics, which count failures by their stable code.
        resp.extensions_mut().insert(Failed(self.code));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_code_has_a_distinct_status() {
        let codes = [
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::InvalidSpec,
            ErrorCode::Forbidden,
            ErrorCode::HostUnsupported,
            ErrorCode::TooLarge,
            ErrorCode::Internal,
        ];
        let mut statuses: Vec<u16> = codes.iter().map(|c| status(*c).as_u16()).collect();
        statuses.sort_unstable();
        statuses.dedup();
        assert_eq!(statuses.len(), codes.len());
    }
}
