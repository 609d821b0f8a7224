//! gRPC plumbing shared by the gateway (client side) and every service
//! (server side): tower layers that carry the caller's [`AuthContext`], the
//! request id and the W3C trace context in metadata, and the server scaffolding
//! with health, reflection and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::auth_context::{AuthContext, REQUEST_ID_HEADER, RequestId};
use crate::metrics::GRPC_SERVER_DURATION;

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes the current span's trace context into `headers`.
pub fn inject_trace_context(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers));
    });
}

/// Reads a W3C trace context from `headers`.
pub fn extract_trace_context(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// The largest gRPC message a Ferrobase client or server accepts or sends
/// (buffered request and response bodies travel as one message).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Client side: copies the [`AuthContext`] and [`RequestId`] found in a
/// request's extensions, and the current trace context, into its metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientContextLayer;

impl<S> Layer<S> for ClientContextLayer {
    type Service = ClientContext<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientContext { inner }
    }
}

/// The service made by [`ClientContextLayer`].
#[derive(Debug, Clone)]
pub struct ClientContext<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for ClientContext<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(ctx) = req.extensions().get::<AuthContext>().cloned() {
            ctx.write_headers(req.headers_mut());
        }
        if let Some(v) = req
            .extensions()
            .get::<RequestId>()
            .and_then(|id| HeaderValue::from_str(&id.0).ok())
        {
            req.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        inject_trace_context(req.headers_mut());
        self.inner.call(req)
    }
}

/// Server side: opens a span whose parent is the caller's trace context, puts
/// the caller's [`AuthContext`] and [`RequestId`] into the request's extensions,
/// and records the call's duration.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerContextLayer;

impl<S> Layer<S> for ServerContextLayer {
    type Service = ServerContext<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerContext { inner }
    }
}

/// The service made by [`ServerContextLayer`].
#[derive(Debug, Clone)]
pub struct ServerContext<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, RB> Service<http::Request<B>> for ServerContext<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_owned();
        let request_id = req
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(RequestId::parse);
        let span = tracing::info_span!(
            "grpc.server",
            otel.kind = "server",
            rpc.method = %method,
            request_id = request_id.as_ref().map_or("", |r| r.0.as_str()),
        );
        let _ = span.set_parent(extract_trace_context(req.headers()));
        match AuthContext::from_headers(req.headers()) {
            Ok(Some(ctx)) => {
                req.extensions_mut().insert(ctx);
            }
            Ok(None) => {}
            Err(reason) => {
                // The handler sees no context and refuses; the gateway never sends this.
                tracing::warn!(parent: &span, %reason, "ignoring malformed auth context metadata");
            }
        }
        if let Some(id) = request_id {
            req.extensions_mut().insert(id);
        }
        // The clone is ready only if polled; swap so the ready one handles this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let start = Instant::now();
        Box::pin(
            async move {
                let result = inner.call(req).await;
                let code = match &result {
                    Ok(resp) => resp
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("0")
                        .to_owned(),
                    Err(_) => "transport".to_owned(),
                };
                GRPC_SERVER_DURATION
                    .with_label_values(&[method.as_str(), code.as_str()])
                    .observe(start.elapsed().as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}

/// The gRPC reflection service for every Ferrobase package and gRPC health.
pub fn reflection() -> anyhow::Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ferrobase_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| anyhow::anyhow!("building the reflection service: {e}"))
}

/// Serves `service` on `listener` with health and reflection beside it, until
/// `stop` is cancelled; then reports NOT_SERVING, stops accepting and drains
/// in-flight calls for at most `grace`.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    stop: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(S::NAME, tonic_health::ServingStatus::Serving)
        .await;
    let reflection = reflection()?;
    let draining = stop.clone();
    let reporter_on_stop = reporter.clone();
    let shutdown = async move {
        draining.cancelled().await;
        reporter_on_stop
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        reporter_on_stop
            .set_service_status(S::NAME, tonic_health::ServingStatus::NotServing)
            .await;
    };
    // The builder's `tcp_nodelay` applies only to listeners it binds itself,
    // so the accepted sockets get it here. Without it a response's trailers
    // frame waits for the peer's delayed ACK of the data: about 40 ms.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .layer(ServerContextLayer)
        .add_service(health)
        .add_service(reflection)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown);
    let mut result = Ok(());
    crate::shutdown::drain_with_deadline(
        async {
            if let Err(e) = server.await {
                result = Err(anyhow::anyhow!("gRPC server failed: {e}"));
            }
        },
        stop.cancelled(),
        grace,
    )
    .await;
    result
}
