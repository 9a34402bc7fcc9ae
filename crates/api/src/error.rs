//! The one place where errors become HTTP responses: every failure leaves as an ARM CloudError
//! (`{"error":{"code","message"[,"target"]}}`) with the status the [`ArmError`] carries.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use skiff_model::ArmError;
use skiff_store::StoreError;

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError(pub ArmError);

impl From<ArmError> for ApiError {
    fn from(e: ArmError) -> Self {
        ApiError(e)
    }
}

impl From<StoreError> for ApiError {
    /// Store failures are internal: logged with their cause, answered without it.
    fn from(e: StoreError) -> Self {
        if e.is_conflict() {
            // Callers retry conflicts themselves; one that escapes is a lost race.
            return ApiError(conflict());
        }
        tracing::error!(error = %e, "store error");
        ApiError(ArmError::internal("An internal error occurred while processing the request. Please retry."))
    }
}

pub(crate) fn conflict() -> ArmError {
    ArmError::conflict("Conflict", "The resource was changed by another request at the same time. Please retry.")
}

/// Build the ARM error response for `err` (also used for errors not raised by a handler).
pub fn error_response(err: &ArmError) -> Response {
    let status = StatusCode::from_u16(err.status).ok().filter(|s| s.is_client_error() || s.is_server_error()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&err.clone().into_cloud_error()).unwrap_or_else(|_| b"{\"error\":{\"code\":\"InternalServerError\",\"message\":\"\"}}".to_vec());
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
