//! Prometheus metrics: the process-wide registry and the `/metrics` listener.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::LazyLock;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prometheus::{Encoder as _, HistogramVec, IntCounterVec, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Duration of handled gRPC calls by method and status code, on services.
pub static GRPC_SERVER_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    prometheus::register_histogram_vec!(
        "ferrobase_grpc_server_duration_seconds",
        "Duration of gRPC calls handled by this service.",
        &["method", "code"],
        vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0
        ]
    )
    .unwrap_or_else(|e| panic!("registering a static metric: {e}"))
});

/// HTTP requests answered by the gateway, by surface and status.
pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "ferrobase_http_requests_total",
        "HTTP requests answered by the gateway.",
        &["surface", "status"]
    )
    .unwrap_or_else(|e| panic!("registering a static metric: {e}"))
});

/// Duration of HTTP requests at the gateway, by surface.
pub static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    prometheus::register_histogram_vec!(
        "ferrobase_http_request_duration_seconds",
        "Duration of HTTP requests at the gateway.",
        &["surface"],
        vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0
        ]
    )
    .unwrap_or_else(|e| panic!("registering a static metric: {e}"))
});

/// Renders every registered metric in the Prometheus text format.
pub fn render() -> String {
    let mut buf = Vec::new();
    let families = prometheus::gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Binds the metrics listener now; serving starts with [`serve`].
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the metrics listener on {addr}: {e}"))
}

/// Serves `GET /metrics` (and answers 404 elsewhere) until `stop` is cancelled.
pub async fn serve(listener: TcpListener, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a metrics connection failed");
                    continue;
                }
            },
        };
        tokio::spawn(async move {
            let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                let resp = if req.uri().path() == "/metrics" {
                    Response::builder()
                        .header("content-type", "text/plain; version=0.0.4")
                        .body(Full::new(Bytes::from(render())))
                } else {
                    Response::builder()
                        .status(404)
                        .body(Full::new(Bytes::from_static(b"not found")))
                };
                Ok::<_, Infallible>(resp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}
