//! The `/auth/v1` routes.

mod meta;

use ferrobase_proto::HttpResponse;

use crate::api::{ApiError, ApiRequest};
use crate::service::State;

/// Answers one request.
pub async fn dispatch(state: &State, req: &ApiRequest) -> HttpResponse {
    let result = route(state, req).await;
    result.unwrap_or_else(|e| req.error(&e))
}

async fn route(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let path = req.path.trim_end_matches('/');
    match (req.method.as_str(), path) {
        ("GET", "/health") => Ok(meta::health()),
        ("GET", "/settings") => Ok(meta::settings(&state.config)),
        ("GET", "/.well-known/jwks.json") => Ok(meta::jwks(state)),
        (_, "/health" | "/settings" | "/.well-known/jwks.json") => Err(ApiError::new(
            405,
            "method_not_allowed",
            "Method not allowed",
        )),
        (_, p) => Err(not_served(p)),
    }
}

/// The answer for an endpoint not served yet, naming it.
fn not_served(path: &str) -> ApiError {
    const KNOWN: [&str; 16] = [
        "/signup",
        "/token",
        "/logout",
        "/user",
        "/recover",
        "/otp",
        "/magiclink",
        "/verify",
        "/resend",
        "/reauthenticate",
        "/factors",
        "/invite",
        "/admin",
        "/authorize",
        "/callback",
        "/sso",
    ];
    match KNOWN
        .iter()
        .find(|k| path == **k || path.starts_with(&format!("{k}/")))
    {
        Some(k) => ApiError::not_implemented(&format!("the {k} endpoint")),
        None => ApiError::new(404, "not_found", "Not Found"),
    }
}
