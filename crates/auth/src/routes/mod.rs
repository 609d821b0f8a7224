//! The `/auth/v1` routes.

mod admin;
mod email;
pub mod guard;
mod meta;
mod mfa;
mod signup;
mod token;
mod user;

use ferrobase_proto::HttpResponse;
use serde_json::{Map, Value};

use crate::api::{ApiError, ApiRequest, json_response};
use crate::service::State;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Answers one request.
pub async fn dispatch(state: &State, req: &ApiRequest) -> HttpResponse {
    let result = route(state, req).await;
    result.unwrap_or_else(|e| req.error(&e))
}

/// A 200 JSON answer.
fn ok(body: &Value) -> Result<HttpResponse, ApiError> {
    Ok(json_response(200, body))
}

/// A metadata object from a body field: absent or `null` is `{}`, anything but an object is refused.
fn require_object(v: Option<Value>) -> Result<Value, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(Value::Object(m)) => Ok(Value::Object(m)),
        Some(_) => Err(ApiError::new(
            400,
            "bad_json",
            "Could not parse request body as JSON: metadata must be an object",
        )),
    }
}

fn method_not_allowed() -> ApiError {
    ApiError::new(405, "method_not_allowed", "Method not allowed")
}

async fn route(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    if req.body.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            413,
            "request_entity_too_large",
            "Request body too large",
        ));
    }
    let path = req.path.trim_end_matches('/');
    match (req.method.as_str(), path) {
        ("GET", "/health") => Ok(meta::health()),
        ("GET", "/settings") => Ok(meta::settings(&state.config)),
        ("GET", "/.well-known/jwks.json") => Ok(meta::jwks(state)),
        (_, "/health" | "/settings" | "/.well-known/jwks.json") => Err(method_not_allowed()),
        ("POST", "/signup") => signup::signup(state, req).await,
        ("POST", "/token") => token::token(state, req).await,
        ("POST", "/logout") => user::logout(state, req).await,
        ("GET", "/user") => user::get_user(state, req).await,
        ("PUT", "/user") => user::update_user(state, req).await,
        ("GET" | "POST", "/reauthenticate") => user::reauthenticate(state, req).await,
        ("POST", "/otp" | "/magiclink") => email::otp(state, req).await,
        ("POST", "/recover") => email::recover(state, req).await,
        ("POST", "/resend") => email::resend(state, req).await,
        ("POST", "/verify") => email::verify_post(state, req).await,
        ("GET", "/verify") => email::verify_get(state, req).await,
        ("POST", "/invite") => admin::invite(state, req).await,
        ("GET", "/user/identities/authorize") | ("DELETE", _)
            if path.starts_with("/user/identities/") =>
        {
            // Linking and unlinking identities is manual linking, which this
            // deployment does not offer.
            guard::require_user(state, req).await?;
            Err(ApiError::new(
                404,
                "manual_linking_disabled",
                "Manual linking is disabled",
            ))
        }
        (_, p) if p == "/factors" || p.starts_with("/factors/") => {
            mfa::route(state, req, &p["/factors".len()..]).await
        }
        (_, p) if p.starts_with("/admin/") => admin::route(state, req, &p["/admin".len()..]).await,
        (
            _,
            "/signup" | "/token" | "/logout" | "/user" | "/reauthenticate" | "/otp" | "/magiclink"
            | "/recover" | "/resend" | "/verify" | "/invite",
        ) => Err(method_not_allowed()),
        ("POST", "/sso") => Err(ApiError::new(
            404,
            "saml_provider_disabled",
            "SAML 2.0 is disabled",
        )),
        (_, p) => Err(not_served(p)),
    }
}

/// The answer for an endpoint not served yet, naming it.
fn not_served(path: &str) -> ApiError {
    const KNOWN: [&str; 6] = [
        "/authorize",
        "/callback",
        "/sso",
        "/user/identities",
        "/passkeys",
        "/oauth",
    ];
    match KNOWN
        .iter()
        .find(|k| path == **k || path.starts_with(&format!("{k}/")))
    {
        Some(k) => ApiError::not_implemented(&format!("the {k} endpoint")),
        None => ApiError::new(404, "not_found", "Not Found"),
    }
}
