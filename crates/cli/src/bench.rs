//! `ferrobase bench gateway`: what the gateway hop costs.
//!
//! The same minimal call, the auth service's `GET /health`, is driven at a fixed
//! concurrency twice in one run: through the gateway over HTTP (API key check,
//! JWT verification, CORS, request id, gRPC hop) and straight to the service over
//! gRPC with the same caller context. The report gives requests per second and
//! p50/p99 latency of both, the overhead, and the ratio, so results from a noisy
//! shared machine are read against a baseline taken in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrobase_common::grpc::ClientContextLayer;
use ferrobase_common::{AuthContext, RequestId};
use ferrobase_proto::auth::v1::auth_client::AuthClient;
use ferrobase_proto::{Header, HttpRequest};
use serde_json::json;
use tower_layer::Layer as _;

use crate::flag;

/// One measured side.
#[derive(Debug, Clone)]
struct Sample {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    /// Latencies in microseconds, sorted.
    latencies: Vec<u64>,
}

impl Sample {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[idx] as f64 / 1000.0
    }
}

/// Runs `connections` workers calling `call` until `duration` has passed.
async fn drive<F, Fut>(connections: usize, duration: Duration, call: F) -> Sample
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let deadline = start + duration;
    let workers = (0..connections).map(|_| {
        let call = call.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                if call().await {
                    latencies.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        })
    });
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in futures::future::join_all(workers).await {
        let (l, e) = w.unwrap_or_default();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Sample {
        requests: latencies.len(),
        errors,
        elapsed,
        latencies,
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("gateway") => gateway(&args[1..]),
        _ => anyhow::bail!("usage: ferrobase bench gateway --gateway URL --grpc URL --apikey KEY"),
    }
}

fn gateway(args: &[String]) -> anyhow::Result<()> {
    let gateway_url =
        flag(args, "--gateway")?.ok_or_else(|| anyhow::anyhow!("--gateway URL is required"))?;
    let grpc_url =
        flag(args, "--grpc")?.ok_or_else(|| anyhow::anyhow!("--grpc URL is required"))?;
    let apikey =
        flag(args, "--apikey")?.ok_or_else(|| anyhow::anyhow!("--apikey KEY is required"))?;
    let connections: usize = flag(args, "--connections")?.map_or(Ok(64), |v| v.parse())?;
    let seconds: u64 = flag(args, "--seconds")?.map_or(Ok(10), |v| v.parse())?;
    let out = flag(args, "--out")?;
    let duration = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .timeout(Duration::from_secs(10))
            .build()?;
        let url = format!("{}/auth/v1/health", gateway_url.trim_end_matches('/'));
        let probe = http.get(&url).header("apikey", &apikey).send().await?;
        anyhow::ensure!(probe.status().is_success(), "GET {url} answered {}", probe.status());

        let endpoint = tonic::transport::Endpoint::from_shared(grpc_url.clone())?.tcp_nodelay(true);
        let channel = endpoint.connect().await?;
        let grpc = AuthClient::new(ClientContextLayer.layer(channel));
        let ctx = AuthContext::from_claims(json!({"role": "anon", "iss": "ferrobase"}));

        let direct_call = {
            let grpc = grpc.clone();
            move || {
                let mut grpc = grpc.clone();
                let ctx = ctx.clone();
                async move {
                    let mut req = tonic::Request::new(HttpRequest {
                        method: "GET".into(),
                        path: "/health".into(),
                        query: String::new(),
                        headers: vec![Header { name: "apikey".into(), value: String::new() }],
                        body: Default::default(),
                        remote_addr: "127.0.0.1".into(),
                    });
                    req.extensions_mut().insert(ctx);
                    req.extensions_mut().insert(RequestId::generate());
                    grpc.handle(req).await.is_ok_and(|r| r.get_ref().status == 200)
                }
            }
        };
        let gateway_call = move || {
            let req = http.get(&url).header("apikey", &apikey);
            async move {
                match req.send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        };
        // Warm both paths, then measure the baseline first and the gateway second.
        drive(connections, Duration::from_secs(1), direct_call.clone()).await;
        drive(connections, Duration::from_secs(1), gateway_call.clone()).await;
        let direct = drive(connections, duration, direct_call).await;
        let through = drive(connections, duration, gateway_call).await;
        let report = json!({
            "benchmark": "gateway",
            "call": "GET /auth/v1/health (gateway) vs ferrobase.auth.v1.Auth/Handle GET /health (direct gRPC)",
            "connections": connections,
            "seconds": seconds,
            "direct": side(&direct),
            "gateway": side(&through),
            "overhead_p50_ms": through.percentile_ms(0.5) - direct.percentile_ms(0.5),
            "overhead_p99_ms": through.percentile_ms(0.99) - direct.percentile_ms(0.99),
            "gateway_to_direct_rps_ratio": through.rps() / direct.rps(),
        });
        let text = serde_json::to_string_pretty(&report)?;
        println!("{text}");
        if let Some(path) = out {
            std::fs::write(&path, format!("{text}\n"))?;
        }
        anyhow::ensure!(direct.requests > 0 && through.requests > 0, "no request succeeded");
        Ok(())
    })
}

fn side(s: &Sample) -> serde_json::Value {
    json!({
        "requests": s.requests,
        "errors": s.errors,
        "rps": (s.rps() * 10.0).round() / 10.0,
        "p50_ms": s.percentile_ms(0.5),
        "p99_ms": s.percentile_ms(0.99),
    })
}
