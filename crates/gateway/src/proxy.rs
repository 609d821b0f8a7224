//! Forwarding a client request to its service and relaying the answer.
//!
//! Buffered surfaces (auth, rest, meta) send one `HttpRequest` message with the
//! body read up to the configured limit. Storage streams: the request head, then
//! body chunks as they arrive, and the response likewise, so memory stays bounded
//! whatever the object size.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use ferrobase_common::{AuthContext, RequestId};
use ferrobase_proto::common::v1::{
    HttpRequestHead, HttpRequestPart, HttpResponsePart, http_request_part, http_response_part,
};
use ferrobase_proto::{Header, HttpRequest as ProtoRequest, HttpResponse as ProtoResponse};
use futures::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{API_VERSION_HEADER, EdgeError};
use crate::identity::{self, Keys};
use crate::rate_limit::RateLimiter;
use crate::surface::Surface;
use crate::upstream::Upstreams;

/// Headers that describe one connection, never forwarded across a hop.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What every request handler shares.
pub struct AppState {
    pub keys: Arc<Keys>,
    pub limiter: Option<RateLimiter>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub trust_forwarded_for: bool,
}

/// Handles every request below a service's prefix.
pub async fn forward(
    surface: Surface,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstreams: web::Data<Upstreams>,
) -> HttpResponse {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(RequestId::generate);
    let api_version = req
        .headers()
        .get(API_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let fail = |e: EdgeError| e.render(surface, api_version.as_deref(), &request_id.0);

    let sub_path = match req.path().get(surface.prefix().len()..) {
        Some("") | None => "/",
        Some(p) => p,
    };
    let ctx = match identity::authorize(
        &state.keys,
        surface,
        sub_path,
        identity::api_key(&req).as_deref(),
        identity::bearer(&req).as_deref(),
    ) {
        Ok(ctx) => ctx,
        Err(e) => return fail(e),
    };
    if surface == Surface::Realtime {
        return fail(EdgeError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "realtime is not available yet: WebSocket channels (broadcast, presence, \
             postgres_changes) and the broadcast HTTP API are not served by this deployment",
        ));
    }
    let ip = client_ip(&req, state.trust_forwarded_for);
    if let Some(limiter) = &state.limiter
        && let Some(limited) = limiter.check(req.method().as_str(), req.path(), ip).await
    {
        return fail(EdgeError::rate_limited(limited.retry_after_secs));
    }

    let head = HttpRequestHead {
        method: req.method().as_str().to_owned(),
        path: sub_path.to_owned(),
        query: req.query_string().to_owned(),
        headers: forwarded_headers(&req),
        remote_addr: ip.to_string(),
    };
    let result = if surface == Surface::Storage {
        relay_streaming(&state, &upstreams, head, payload, ctx, request_id.clone()).await
    } else {
        relay_buffered(
            surface,
            &state,
            &upstreams,
            head,
            payload,
            ctx,
            request_id.clone(),
        )
        .await
    };
    result.unwrap_or_else(fail)
}

async fn relay_buffered(
    surface: Surface,
    state: &AppState,
    upstreams: &Upstreams,
    head: HttpRequestHead,
    payload: web::Payload,
    ctx: AuthContext,
    request_id: RequestId,
) -> Result<HttpResponse, EdgeError> {
    let body = read_body(payload, state.max_body_bytes).await?;
    if let Some(limiter) = &state.limiter
        && let Some(limited) = limiter
            .check_body(&head.method, surface.prefix(), &head.path, &body)
            .await
    {
        return Err(EdgeError::rate_limited(limited.retry_after_secs));
    }
    let message = ProtoRequest {
        method: head.method,
        path: head.path,
        query: head.query,
        headers: head.headers,
        body,
        remote_addr: head.remote_addr,
    };
    let mut request = tonic::Request::new(message);
    request.set_timeout(state.request_timeout);
    request.extensions_mut().insert(ctx);
    request.extensions_mut().insert(request_id);
    let call = async {
        let up = upstreams;
        match surface {
            Surface::Auth => match up.auth.clone() {
                Some(mut c) => Some(c.handle(request).await),
                None => None,
            },
            Surface::Rest => match up.rest.clone() {
                Some(mut c) => Some(c.handle(request).await),
                None => None,
            },
            Surface::Meta => match up.meta.clone() {
                Some(mut c) => Some(c.handle(request).await),
                None => None,
            },
            Surface::Storage | Surface::Realtime | Surface::Edge => None,
        }
    };
    match tokio::time::timeout(state.request_timeout, call).await {
        Err(_) => Err(EdgeError::timeout(surface)),
        Ok(None) => Err(EdgeError::not_configured(surface)),
        Ok(Some(Err(status))) => Err(status_error(surface, &status)),
        Ok(Some(Ok(resp))) => response(surface, resp.into_inner()),
    }
}

async fn relay_streaming(
    state: &AppState,
    upstreams: &Upstreams,
    head: HttpRequestHead,
    mut payload: web::Payload,
    ctx: AuthContext,
    request_id: RequestId,
) -> Result<HttpResponse, EdgeError> {
    let surface = Surface::Storage;
    let Some(mut client) = upstreams.storage.clone() else {
        return Err(EdgeError::not_configured(surface));
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<HttpRequestPart>(4);
    let (broken_tx, broken_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    // The payload lives on this worker's thread; a local task feeds the gRPC stream.
    actix_web::rt::spawn(async move {
        let first = HttpRequestPart {
            part: Some(http_request_part::Part::Head(head)),
        };
        if tx.send(first).await.is_err() {
            return;
        }
        while let Some(chunk) = payload.next().await {
            match chunk {
                Ok(bytes) => {
                    let part = HttpRequestPart {
                        part: Some(http_request_part::Part::Body(bytes)),
                    };
                    if tx.send(part).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "client body ended early, aborting the upload");
                    let _ = broken_tx.send(());
                    return;
                }
            }
        }
        let _ = done_tx.send(());
    });
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.extensions_mut().insert(ctx);
    request.extensions_mut().insert(request_id);
    let timeout = state.request_timeout;
    // The answer may take as long as the upload; time out only once the body is sent.
    let deadline = async move {
        if done_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(timeout).await;
    };
    let broken = async move {
        if broken_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let resp = tokio::select! {
        r = client.handle(request) => r.map_err(|s| status_error(surface, &s))?,
        () = deadline => return Err(EdgeError::timeout(surface)),
        // Dropping the call cancels the gRPC stream, so the service discards the partial upload.
        () = broken => return Err(EdgeError::new(
            StatusCode::BAD_REQUEST, "invalid_request", "the request body could not be read",
        )),
    };
    let mut stream = resp.into_inner();
    let head = match tokio::time::timeout(timeout, stream.message()).await {
        Err(_) => return Err(EdgeError::timeout(surface)),
        Ok(Err(status)) => return Err(status_error(surface, &status)),
        Ok(Ok(Some(HttpResponsePart {
            part: Some(http_response_part::Part::Head(head)),
        }))) => head,
        Ok(Ok(_)) => {
            tracing::error!("storage answered without a response head");
            return Err(EdgeError::bad_gateway(surface));
        }
    };
    let mut builder = response_builder(surface, head.status, &head.headers)?;
    let body = stream.map(|part| match part {
        Ok(HttpResponsePart {
            part: Some(http_response_part::Part::Body(bytes)),
        }) => Ok(bytes),
        Ok(_) => Err(std::io::Error::other(
            "unexpected part in a storage response body",
        )),
        Err(status) => Err(std::io::Error::other(status.message().to_owned())),
    });
    Ok(builder.streaming(body))
}

/// Reads the whole body, refusing one larger than `limit` as early as possible.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, EdgeError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => EdgeError::too_large(limit),
            _ => EdgeError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request body could not be read",
            ),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(EdgeError::too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The client's address: the peer, or, behind a trusted proxy, the hop that
/// proxy appended last to `X-Forwarded-For` (earlier entries are the client's own words).
fn client_ip(req: &HttpRequest, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok());
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    req.peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip())
}

fn forwarded_headers(req: &HttpRequest) -> Vec<Header> {
    req.headers()
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some(Header {
                name: name.as_str().to_owned(),
                value: value.to_str().ok()?.to_owned(),
            })
        })
        .collect()
}

fn response_builder(
    surface: Surface,
    status: u32,
    headers: &[Header],
) -> Result<actix_web::HttpResponseBuilder, EdgeError> {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| {
            tracing::error!(status, "service answered an invalid HTTP status");
            EdgeError::bad_gateway(surface)
        })?;
    let mut builder = HttpResponse::build(status);
    for h in headers {
        if HOP_BY_HOP.contains(&h.name.as_str()) || h.name == "content-length" {
            continue;
        }
        builder.append_header((h.name.as_str(), h.value.as_str()));
    }
    Ok(builder)
}

fn response(surface: Surface, resp: ProtoResponse) -> Result<HttpResponse, EdgeError> {
    Ok(response_builder(surface, resp.status, &resp.headers)?.body(resp.body))
}

/// A gRPC failure of the service, as the client sees it.
fn status_error(surface: Surface, status: &tonic::Status) -> EdgeError {
    use tonic::Code;
    match status.code() {
        Code::Unavailable => {
            tracing::warn!(%surface, error = %status.message(), "service unavailable");
            EdgeError::unavailable(surface)
        }
        Code::DeadlineExceeded | Code::Cancelled => EdgeError::timeout(surface),
        Code::Unimplemented => EdgeError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            status.message(),
        ),
        Code::ResourceExhausted => EdgeError::rate_limited(1),
        _ => {
            tracing::error!(%surface, code = ?status.code(), error = %status.message(), "service failed");
            EdgeError::bad_gateway(surface)
        }
    }
}
