//! The JSON body of an admin action. Read whether or not the client said
//! `Content-Type: application/json` (the guard has already refused any other type, and a body
//! without one only from clients that are not browsers), and refused with a JSON error like
//! every other admin answer, where axum's own extractor answers in plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

/// `JsonBody(body)`: the request body parsed as JSON into `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| error(e.status(), &e.body_text()))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))
    }
}

/// An admin error: `{"error": ..., "status": ...}`.
pub fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": message, "status": status.as_u16()})),
    )
        .into_response()
}
