//! The outermost middleware: a request id and a root span for every request,
//! and the request metrics.
//!
//! A client's `X-Request-Id` is kept when it is sane, otherwise one is made;
//! either way it is echoed on the response and forwarded to the service. The
//! root span's parent is the caller's W3C trace context when it sent one.

use std::time::Instant;

use actix_web::HttpMessage as _;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use ferrobase_common::RequestId;
use ferrobase_common::metrics::{HTTP_DURATION, HTTP_REQUESTS};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::surface::Surface;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Assigns the request id, opens the root span and records metrics.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::parse)
        .unwrap_or_else(RequestId::generate);
    let surface = Surface::of_path(req.path());
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        http.method = %req.method(),
        http.target = %req.path(),
        surface = surface.name(),
        request_id = %request_id.0,
        http.status_code = tracing::field::Empty,
    );
    // Continue the caller's trace when it sent W3C trace context.
    let mut carrier = http::HeaderMap::new();
    for name in ["traceparent", "tracestate"] {
        if let Some(v) = req
            .headers()
            .get(name)
            .and_then(|v| http::HeaderValue::from_bytes(v.as_bytes()).ok())
        {
            carrier.insert(name, v);
        }
    }
    if !carrier.is_empty() {
        let _ = span.set_parent(ferrobase_common::grpc::extract_trace_context(&carrier));
    }
    req.extensions_mut().insert(request_id.clone());
    let start = Instant::now();
    let mut resp = next.call(req).instrument(span.clone()).await?;
    let status = resp.status().as_u16();
    span.record("http.status_code", status);
    HTTP_REQUESTS
        .with_label_values(&[surface.name(), &status.to_string()])
        .inc();
    HTTP_DURATION
        .with_label_values(&[surface.name()])
        .observe(start.elapsed().as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&request_id.0) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    Ok(resp)
}
