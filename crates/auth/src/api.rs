//! The HTTP side of the service: a forwarded request in, a response out, and
//! errors in the shape auth-js and supabase-py parse.

use bytes::Bytes;
use ferrobase_common::wire;
use ferrobase_common::{AuthContext, RequestId};
use ferrobase_proto::{Header, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One client request, as the gateway forwarded it.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: String,
    /// Path below `/auth/v1`, percent-encoded.
    pub path: String,
    pub query: String,
    pub headers: Vec<Header>,
    pub body: Bytes,
    pub remote_addr: String,
    /// The caller as the gateway verified it; `None` only for calls that bypassed the gateway.
    pub ctx: Option<AuthContext>,
    pub request_id: String,
}

impl ApiRequest {
    /// Builds a request from a gRPC call's message and extensions.
    pub fn from_grpc(req: tonic::Request<HttpRequest>) -> Self {
        let ctx = req.extensions().get::<AuthContext>().cloned();
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map_or_else(|| RequestId::generate().0, |r| r.0.clone());
        let r = req.into_inner();
        Self {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
            body: r.body,
            remote_addr: r.remote_addr,
            ctx,
            request_id,
        }
    }

    /// The first value of a (lower-case) header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }

    /// The decoded value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        wire::query_pairs(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The body as JSON of type `T`; an empty body reads as `{}`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let body: &[u8] = if self.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.body
        };
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                400,
                "bad_json",
                format!("Could not parse request body as JSON: {e}"),
            )
        })
    }

    /// Renders an error for this request (its API version selects the format).
    pub fn error(&self, err: &ApiError) -> HttpResponse {
        let (headers, body) = wire::auth_error(
            err.status,
            &err.code,
            &err.message,
            self.header(wire::API_VERSION_HEADER),
            &self.request_id,
            err.extra.as_ref(),
        );
        let mut resp = json_response(err.status, &body);
        for (name, value) in headers {
            resp.headers.push(Header {
                name: name.to_owned(),
                value,
            });
        }
        resp
    }
}

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    /// The `error_code` clients branch on (`invalid_credentials`, `weak_password`, ...).
    pub code: String,
    pub message: String,
    /// Keys merged into the body (e.g. `weak_password`).
    pub extra: Option<Value>,
}

impl ApiError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            extra: None,
        }
    }

    /// A failure inside the service: logged here with its cause, shown as a generic 500.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "auth request failed");
        Self::new(
            500,
            "unexpected_failure",
            "Unexpected failure, please check server logs for more information",
        )
    }

    /// An endpoint this deployment does not serve yet: 501 naming what is missing.
    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            501,
            "not_implemented",
            format!("{what} is not implemented by this auth service yet"),
        )
    }
}

/// A JSON response.
pub fn json_response(status: u16, body: &Value) -> HttpResponse {
    HttpResponse {
        status: u32::from(status),
        headers: vec![Header {
            name: "content-type".into(),
            value: "application/json".into(),
        }],
        body: Bytes::from(body.to_string()),
    }
}
