//! The gateway's own refusals, rendered in the error shape each surface's
//! official client parses.
//!
//! | surface | body |
//! |---|---|
//! | API key checks (any surface) | `{"message", "hint"}` |
//! | auth | `{"code", "message"}` with `X-Supabase-Api-Version: 2024-01-01` when the request asked for it, else `{"code": <status>, "error_code", "msg"}`; always `x-sb-error-code` |
//! | rest | `{"code", "details", "hint", "message"}`; 401 adds `WWW-Authenticate` |
//! | storage | `{"statusCode": "<status>", "error", "message"}` |
//! | meta, realtime, edge | `{"error": <message>, "code"}` |

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use ferrobase_common::wire;
use serde_json::json;

use crate::surface::Surface;

pub use ferrobase_common::wire::API_VERSION_HEADER;

/// A refusal made by the gateway itself.
#[derive(Debug, Clone)]
pub struct EdgeError {
    pub status: StatusCode,
    /// Machine-readable code (auth `error_code`, rest `code`, storage `error`).
    pub code: String,
    pub message: String,
    pub hint: Option<String>,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
    /// Rendered as the Kong-style `{"message","hint"}` body whatever the surface.
    pub api_key_shape: bool,
}

impl EdgeError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            hint: None,
            retry_after: None,
            api_key_shape: false,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn missing_api_key() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "no_api_key",
            "No API key found in request",
        )
        .with_hint("No `apikey` request header or url param was found.");
        e.api_key_shape = true;
        e
    }

    pub fn invalid_api_key() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Invalid API key",
        )
        .with_hint("Double check your Supabase `anon` or `service_role` API key.");
        e.api_key_shape = true;
        e
    }

    pub fn not_configured(surface: Surface) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!("the {surface} service is not configured on this gateway"),
        )
    }

    pub fn unavailable(surface: Surface) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!("the {surface} service is unavailable, try again later"),
        )
    }

    pub fn timeout(surface: Surface) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            format!("the {surface} service did not answer in time"),
        )
    }

    pub fn bad_gateway(surface: Surface) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("the {surface} service failed to answer"),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_entity_too_large",
            format!("Request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "over_request_rate_limit",
            "Request rate limit reached",
        );
        e.retry_after = Some(retry_after.max(1));
        e
    }

    /// Renders this refusal for `surface`. `api_version` is the request's
    /// `X-Supabase-Api-Version`; `request_id` goes into auth's 5xx bodies.
    pub fn render(
        &self,
        surface: Surface,
        api_version: Option<&str>,
        request_id: &str,
    ) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            resp.insert_header(("retry-after", secs.to_string()));
        }
        let body = if self.api_key_shape {
            json!({"message": self.message, "hint": self.hint})
        } else {
            match surface {
                Surface::Auth => {
                    let (headers, body) = wire::auth_error(
                        self.status.as_u16(),
                        &self.code,
                        &self.message,
                        api_version,
                        request_id,
                        None,
                    );
                    for (name, value) in headers {
                        resp.insert_header((name, value));
                    }
                    body
                }
                Surface::Rest => {
                    if self.status == StatusCode::UNAUTHORIZED {
                        let desc = self.message.replace('"', "'");
                        resp.insert_header((
                            "www-authenticate",
                            format!(r#"Bearer error="invalid_token", error_description="{desc}""#),
                        ));
                    }
                    wire::rest_error(&self.code, &self.message, None, self.hint.as_deref())
                }
                Surface::Storage => json!({
                    "statusCode": self.status.as_u16().to_string(), "error": self.code, "message": self.message,
                }),
                // Realtime and postgres-meta clients read the readable text from `error`.
                Surface::Meta | Surface::Realtime | Surface::Edge => {
                    json!({"error": self.message, "code": self.code})
                }
            }
        };
        resp.content_type("application/json; charset=utf-8")
            .body(body.to_string())
    }
}
