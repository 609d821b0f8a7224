//! Test support: a gateway on port 0 in front of an echoing stand-in service.
//!
//! The stand-in implements every service's gRPC API and answers with what it
//! received (request, auth context, request id), so tests can see exactly what
//! the gateway forwarded. The services themselves are tested in their own crates.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use ferrobase_common::config::{Env, LogFormat};
use ferrobase_common::grpc::ServerContextLayer;
use ferrobase_common::{AuthContext, RequestId};
use ferrobase_gateway::{Application, GatewayConfig};
use ferrobase_proto::auth::v1::auth_server::{Auth, AuthServer};
use ferrobase_proto::auth::v1::{GetVerificationKeysRequest, GetVerificationKeysResponse};
use ferrobase_proto::common::v1::{
    HttpRequestPart, HttpResponseHead, HttpResponsePart, http_request_part, http_response_part,
};
use ferrobase_proto::meta::v1::meta_server::{Meta, MetaServer};
use ferrobase_proto::rest::v1::rest_server::{Rest, RestServer};
use ferrobase_proto::storage::v1::storage_server::{Storage, StorageServer};
use ferrobase_proto::{Header, HttpRequest, HttpResponse};
use futures::{Stream, StreamExt as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

pub use ferrobase_testkit::{JWT_SECRET, api_key, token, user_token};

/// Spans recorded by every test of this binary.
pub fn spans() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        ferrobase_common::telemetry::install("gateway-tests", LogFormat::Pretty, "warn", provider)
            .unwrap_or_else(|e| panic!("installing telemetry: {e}"));
        exporter
    })
}

#[derive(Clone, Default)]
pub struct Echo;

fn echo(req: Request<HttpRequest>) -> HttpResponse {
    let ctx = req.extensions().get::<AuthContext>().cloned();
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let r = req.into_inner();
    let headers: serde_json::Map<String, Value> = r
        .headers
        .iter()
        .map(|h| (h.name.clone(), Value::from(h.value.clone())))
        .collect();
    let body = json!({
        "method": r.method, "path": r.path, "query": r.query, "headers": headers,
        "body": String::from_utf8_lossy(&r.body), "remote_addr": r.remote_addr,
        "role": ctx.as_ref().map(|c| c.role.clone()),
        "subject": ctx.as_ref().and_then(|c| c.subject.clone()),
        "claims": ctx.as_ref().map(|c| c.claims.clone()),
        "token_error": ctx.as_ref().and_then(|c| c.token_error.clone()),
        "request_id": request_id,
    });
    HttpResponse {
        status: 200,
        headers: vec![
            Header {
                name: "content-type".into(),
                value: "application/json".into(),
            },
            Header {
                name: "content-range".into(),
                value: "0-0/1".into(),
            },
        ],
        body: body.to_string().into(),
    }
}

async fn unary(req: Request<HttpRequest>) -> Result<Response<HttpResponse>, Status> {
    match req.get_ref().path.as_str() {
        "/slow" => tokio::time::sleep(Duration::from_secs(30)).await,
        "/pause" => tokio::time::sleep(Duration::from_millis(600)).await,
        "/teapot" => {
            return Ok(Response::new(HttpResponse {
                status: 418,
                headers: vec![Header {
                    name: "x-teapot".into(),
                    value: "short and stout".into(),
                }],
                body: "i am a teapot".into(),
            }));
        }
        "/grpc-error" => return Err(Status::internal("database password is hunter2")),
        _ => {}
    }
    Ok(Response::new(echo(req)))
}

#[tonic::async_trait]
impl Auth for Echo {
    async fn handle(&self, req: Request<HttpRequest>) -> Result<Response<HttpResponse>, Status> {
        unary(req).await
    }
    async fn get_verification_keys(
        &self,
        _req: Request<GetVerificationKeysRequest>,
    ) -> Result<Response<GetVerificationKeysResponse>, Status> {
        Ok(Response::new(GetVerificationKeysResponse {
            jwks_json: r#"{"keys":[]}"#.into(),
        }))
    }
}

#[tonic::async_trait]
impl Rest for Echo {
    async fn handle(&self, req: Request<HttpRequest>) -> Result<Response<HttpResponse>, Status> {
        unary(req).await
    }
}

#[tonic::async_trait]
impl Meta for Echo {
    async fn handle(&self, req: Request<HttpRequest>) -> Result<Response<HttpResponse>, Status> {
        unary(req).await
    }
}

type PartStream = Pin<Box<dyn Stream<Item = Result<HttpResponsePart, Status>> + Send>>;

#[tonic::async_trait]
impl Storage for Echo {
    type HandleStream = PartStream;

    /// Answers with the request's role and path in headers and echoes the body back chunk by chunk.
    async fn handle(
        &self,
        req: Request<Streaming<HttpRequestPart>>,
    ) -> Result<Response<Self::HandleStream>, Status> {
        let ctx = req.extensions().get::<AuthContext>().cloned();
        let mut parts = req.into_inner();
        let head = match parts.message().await? {
            Some(HttpRequestPart {
                part: Some(http_request_part::Part::Head(h)),
            }) => h,
            _ => return Err(Status::invalid_argument("the head comes first")),
        };
        let role = ctx.map(|c| c.role).unwrap_or_default();
        let first = HttpResponsePart {
            part: Some(http_response_part::Part::Head(HttpResponseHead {
                status: 200,
                headers: vec![
                    Header {
                        name: "x-role".into(),
                        value: role,
                    },
                    Header {
                        name: "x-path".into(),
                        value: head.path,
                    },
                ],
            })),
        };
        let body = parts.map(|p| match p {
            Ok(HttpRequestPart {
                part: Some(http_request_part::Part::Body(b)),
            }) => Ok(HttpResponsePart {
                part: Some(http_response_part::Part::Body(b)),
            }),
            Ok(_) => Err(Status::invalid_argument("only body parts after the head")),
            Err(s) => Err(s),
        });
        let stream = futures::stream::once(async { Ok(first) }).chain(body);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Starts the echoing stand-in on a free port.
pub async fn spawn_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .layer(ServerContextLayer)
            .add_service(AuthServer::new(Echo))
            .add_service(RestServer::new(Echo).max_decoding_message_size(64 << 20))
            .add_service(MetaServer::new(Echo))
            .add_service(StorageServer::new(Echo))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    addr
}

/// A running gateway; stops when dropped.
pub struct TestGateway {
    pub url: String,
    pub client: reqwest::Client,
    stop: tokio::sync::oneshot::Sender<()>,
    stopped: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestGateway {
    /// Asks the gateway to stop and waits until it has drained.
    pub async fn shut_down(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.stopped.await?
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.url))
    }
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.url))
    }
}

/// Starts a gateway whose every service is the echoing stand-in, with `extra` variables on top.
pub async fn spawn_gateway(extra: &[(&str, &str)]) -> TestGateway {
    let echo = spawn_echo().await;
    let echo_url = format!("http://{echo}");
    let mut env = Env::from_pairs([
        ("FERROBASE_HOST", "127.0.0.1"),
        ("FERROBASE_PORT", "0"),
        ("FERROBASE_METRICS_ADDR", "off"),
        ("FERROBASE_WORKERS", "1"),
        ("FERROBASE_JWT_SECRET", JWT_SECRET),
        ("FERROBASE_AUTH_URL", echo_url.as_str()),
        ("FERROBASE_REST_URL", echo_url.as_str()),
        ("FERROBASE_STORAGE_URL", echo_url.as_str()),
        ("FERROBASE_META_URL", echo_url.as_str()),
    ]);
    for (k, v) in extra {
        env = env.with(*k, *v);
    }
    spawn_gateway_with(env).await
}

/// Starts a gateway with exactly `env`.
pub async fn spawn_gateway_with(env: Env) -> TestGateway {
    spans();
    let config = GatewayConfig::from_env(&env).unwrap_or_else(|e| panic!("config: {e}"));
    let app = Application::build(config)
        .await
        .unwrap_or_else(|e| panic!("build: {e:#}"));
    let url = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"));
    TestGateway {
        url,
        client,
        stop,
        stopped,
    }
}

/// The JSON body of a response.
pub async fn json_of(resp: reqwest::Response) -> Value {
    let text = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("reading body: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}
