//! CORS as Supabase answers it: any origin, preflights answered at the edge
//! without an API key, and the response headers clients read exposed.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse};

/// Methods a browser may use.
pub const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Headers the clients send, allowed when a preflight does not list its own.
pub const ALLOW_HEADERS: &str = "authorization, x-client-info, apikey, content-type, prefer, \
    accept-profile, content-profile, range, x-retry-count, x-upsert, x-supabase-api-version, \
    traceparent, tracestate, baggage, x-request-id, cache-control, x-metadata";

/// Response headers the clients read.
pub const EXPOSE_HEADERS: &str = "Content-Encoding, Content-Location, Content-Range, Content-Type, \
    Content-Length, Content-Disposition, Date, ETag, Last-Modified, Location, Server, \
    Transfer-Encoding, Range-Unit, Preference-Applied, X-Supabase-Api-Version, X-Total-Count, \
    Link, X-Request-Id, x-sb-error-code, Retry-After, Upload-Offset, Upload-Length, \
    Upload-Metadata, Tus-Resumable, Tus-Version, Tus-Max-Size, Tus-Extension";

/// Answers preflights and decorates every other response.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let is_preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if is_preflight {
        let allow_headers = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static(ALLOW_HEADERS));
        let resp = HttpResponse::Ok()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
            .insert_header((header::VARY, "Origin, Access-Control-Request-Headers"))
            .finish();
        return Ok(req.into_response(resp));
    }
    let mut resp = next.call(req).await?.map_into_boxed_body();
    let headers = resp.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    Ok(resp)
}
