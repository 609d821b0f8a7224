//! gRPC plumbing shared by the gateway (client side) and every service
//! (server side): tower layers that carry the caller's [`AuthContext`], the
//! request id and the W3C trace context in metadata, and the server scaffolding
//! with health, reflection and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::server::{Connected, TcpConnectInfo};
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

thread_local! {
    static WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The index of the [`serve_on_workers`] worker thread the caller runs on;
/// `None` elsewhere.
pub fn current_worker() -> Option<usize> {
    WORKER.with(std::cell::Cell::get)
}

/// An accepted connection, counted among its worker's open ones until dropped.
struct Counted {
    inner: tokio::net::TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Serves `service` on `listener` with health and reflection beside it, until
/// `stop` is cancelled; then reports NOT_SERVING, stops accepting and drains
/// in-flight calls for at most `grace`.
///
/// The calls run on `workers` threads of their own, each running a
/// single-threaded runtime, as the gateway's HTTP workers do. Each accepted
/// connection goes to the worker with the fewest open ones and stays there
/// with every task its calls spawn, so a call never hops between threads: the
/// answer's frames leave in one write, not split by another thread flushing
/// the connection halfway. Code on a worker finds its index with
/// [`current_worker`] (to keep per-worker resources such as database
/// connections on the same thread).
pub async fn serve_on_workers<S>(
    listener: TcpListener,
    service: S,
    stop: CancellationToken,
    grace: Duration,
    workers: usize,
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
    let mut queues = Vec::new();
    let mut finished = Vec::new();
    for index in 0..workers.max(1) {
        let (connections, queue) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        let open = Arc::new(AtomicUsize::new(0));
        let (done, result) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        let (health, reflection, service) = (health.clone(), reflection.clone(), service.clone());
        let (stop, counter) = (stop.clone(), open.clone());
        std::thread::Builder::new()
            .name(format!("grpc-worker-{index}"))
            .spawn(move || {
                WORKER.with(|w| w.set(Some(index)));
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| anyhow::anyhow!("starting worker {index}'s runtime: {e}"))
                    .and_then(|runtime| {
                        runtime.block_on(async move {
                            let incoming = tokio_stream::wrappers::UnboundedReceiverStream::new(
                                queue,
                            )
                            .map(move |std| {
                                let inner = tokio::net::TcpStream::from_std(std)?;
                                Ok::<_, std::io::Error>(Counted {
                                    inner,
                                    open: counter.clone(),
                                })
                            });
                            tonic::transport::Server::builder()
                                .layer(ServerContextLayer)
                                .add_service(health)
                                .add_service(reflection)
                                .add_service(service)
                                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                                .await
                                .map_err(|e| anyhow::anyhow!("gRPC worker {index} failed: {e}"))
                        })
                    });
                let _ = done.send(served);
            })
            .map_err(|e| anyhow::anyhow!("starting gRPC worker {index}: {e}"))?;
        queues.push((connections, open));
        finished.push(result);
    }
    let accepting = async {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Without it a response's trailers frame waits for the peer's
            // delayed ACK of the data: about 40 ms.
            let _ = stream.set_nodelay(true);
            let Ok(stream) = stream.into_std() else {
                continue;
            };
            let Some((queue, open)) = queues
                .iter()
                .min_by_key(|(_, open)| open.load(Ordering::Relaxed))
            else {
                break;
            };
            open.fetch_add(1, Ordering::Relaxed);
            if queue.send(stream).is_err() {
                open.fetch_sub(1, Ordering::Relaxed);
            }
        }
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status(S::NAME, tonic_health::ServingStatus::NotServing)
            .await;
        // Closing the queues ends each worker's incoming connections.
        drop(queues);
    };
    let mut result = Ok(());
    crate::shutdown::drain_with_deadline(
        async {
            accepting.await;
            for worker in finished {
                match worker.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => result = Err(e),
                    Err(_) => result = Err(anyhow::anyhow!("a gRPC worker thread panicked")),
                }
            }
        },
        stop.cancelled(),
        grace,
    )
    .await;
    result
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ferrobase_proto::HttpRequest;
    use ferrobase_proto::rest::v1::rest_client::RestClient;
    use tonic::transport::Endpoint;

    use super::*;

    /// Stands in for the rest service: records, for each call, the worker it
    /// ran on and the worker a task it spawned ran on, then refuses the call.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Seen>>>);

    /// The worker a call ran on, and the worker of a task it spawned.
    type Seen = (Option<usize>, Option<usize>);

    impl NamedService for Recorder {
        const NAME: &'static str = "ferrobase.rest.v1.Rest";
    }

    impl Service<http::Request<Body>> for Recorder {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            let seen = self.0.clone();
            Box::pin(async move {
                let here = current_worker();
                let spawned = tokio::spawn(async { current_worker() })
                    .await
                    .unwrap_or_else(|e| panic!("spawned task: {e}"));
                seen.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((here, spawned));
                Ok(tonic::Status::unimplemented("recorded").into_http())
            })
        }
    }

    #[tokio::test]
    async fn connections_spread_over_workers_and_their_calls_stay_on_them() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let url = format!(
            "http://{}",
            listener
                .local_addr()
                .unwrap_or_else(|e| panic!("addr: {e}"))
        );
        let recorder = Recorder::default();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_on_workers(
            listener,
            recorder.clone(),
            stop.clone(),
            Duration::from_secs(5),
            2,
        ));
        assert_eq!(current_worker(), None, "the test's thread is no worker");
        // Three connections held open at once: the third goes to the first
        // worker again, as both then have one.
        let mut clients = Vec::new();
        for _ in 0..3 {
            let channel = Endpoint::from_shared(url.clone())
                .unwrap_or_else(|e| panic!("endpoint: {e}"))
                .connect()
                .await
                .unwrap_or_else(|e| panic!("connect: {e}"));
            let mut client = RestClient::new(channel);
            let status = client
                .handle(HttpRequest::default())
                .await
                .expect_err("the recorder refuses every call");
            assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
            clients.push(client);
        }
        let seen = recorder
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        assert_eq!(
            seen,
            vec![(Some(0), Some(0)), (Some(1), Some(1)), (Some(0), Some(0))]
        );
        stop.cancel();
        let served = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap_or_else(|_| panic!("the server did not stop"))
            .unwrap_or_else(|e| panic!("server task: {e}"));
        assert!(served.is_ok(), "{served:?}");
    }
}
