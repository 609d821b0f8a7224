//! Test support: an auth service on port 0 over a fresh database of the
//! private PostgreSQL, called over real gRPC the way the gateway calls it.

use std::time::Duration;

use ferrobase_auth::{Application, AuthConfig};
use ferrobase_common::config::Env;
use ferrobase_common::grpc::{ClientContext, ClientContextLayer};
use ferrobase_common::{AuthContext, RequestId};
use ferrobase_proto::auth::v1::auth_client::AuthClient;
use ferrobase_proto::{Header, HttpRequest};
use ferrobase_testkit::{JWT_SECRET, TestDatabase};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use tower_layer::Layer as _;

pub struct TestAuth {
    pub db: TestDatabase,
    pub port: u16,
    client: AuthClient<ClientContext<Channel>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A response as a client sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<Header>,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }
}

/// The environment the tests run the service with, on `db`.
pub fn env_for(db: &TestDatabase) -> Env {
    Env::from_pairs([
        ("FERROBASE_GRPC_ADDR", "127.0.0.1:0"),
        ("FERROBASE_METRICS_ADDR", "off"),
        ("FERROBASE_DB_URL", db.url.as_str()),
        ("FERROBASE_DB_POOL_SIZE", "4"),
        ("FERROBASE_JWT_SECRET", JWT_SECRET),
        ("FERROBASE_AUTH_AUTOCONFIRM", "true"),
        ("FERROBASE_BCRYPT_COST", "4"),
    ])
}

/// Starts the service on a fresh database with `extra` variables.
pub async fn spawn(extra: &[(&str, &str)]) -> TestAuth {
    let db = ferrobase_testkit::postgres().create_database().await;
    let mut env = env_for(&db);
    for (k, v) in extra {
        env = env.with(*k, *v);
    }
    spawn_on(db, env).await
}

/// Starts the service on `db` with exactly `env`.
pub async fn spawn_on(db: TestDatabase, env: Env) -> TestAuth {
    let config = AuthConfig::from_env(&env).unwrap_or_else(|e| panic!("config: {e}"));
    let app = Application::build(config)
        .await
        .unwrap_or_else(|e| panic!("build: {e:#}"));
    let port = app.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap_or_else(|e| panic!("endpoint: {e}"))
        .timeout(Duration::from_secs(30));
    let client = AuthClient::new(ClientContextLayer.layer(endpoint.connect_lazy()));
    TestAuth {
        db,
        port,
        client,
        _stop: stop,
    }
}

impl TestAuth {
    /// Sends one HTTP request as the gateway would, with `ctx` as the caller.
    pub async fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<Value>,
        ctx: AuthContext,
        headers: &[(&str, &str)],
    ) -> Reply {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut all: Vec<Header> = vec![
            Header {
                name: "content-type".into(),
                value: "application/json".into(),
            },
            Header {
                name: "x-supabase-api-version".into(),
                value: "2024-01-01".into(),
            },
        ];
        for (k, v) in headers {
            all.retain(|h| h.name != *k);
            all.push(Header {
                name: (*k).to_owned(),
                value: (*v).to_owned(),
            });
        }
        let mut request = tonic::Request::new(HttpRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers: all,
            body: body.map(|b| b.to_string()).unwrap_or_default().into(),
            remote_addr: "127.0.0.1".into(),
        });
        request.extensions_mut().insert(ctx);
        request.extensions_mut().insert(RequestId::generate());
        let resp = self
            .client
            .clone()
            .handle(request)
            .await
            .unwrap_or_else(|s| panic!("grpc: {s}"))
            .into_inner();
        let body = if resp.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&resp.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&resp.body).into_owned()))
        };
        Reply {
            status: resp.status,
            headers: resp.headers,
            body,
        }
    }

    /// A call as an anonymous client with the anon API key.
    pub async fn anon(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call(method, path, body, anon_ctx(), &[]).await
    }
}

/// The context the gateway forwards for the anon API key.
pub fn anon_ctx() -> AuthContext {
    let claims = serde_json::json!({"role": "anon", "iss": "ferrobase"});
    AuthContext::from_claims(claims)
}
