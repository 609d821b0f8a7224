//! Test support: an auth service on port 0 over a fresh database of the
//! private PostgreSQL, called over real gRPC the way the gateway calls it.

mod smtp;

use ferrobase_common::service::Service as _;
use std::time::Duration;

use ferrobase_auth::{Application, AuthConfig};
use ferrobase_common::config::Env;
use ferrobase_common::grpc::{ClientContext, ClientContextLayer};
use ferrobase_common::jwt::KeyStore;
use ferrobase_common::{AuthContext, RequestId};
use ferrobase_proto::auth::v1::GetVerificationKeysRequest;
use ferrobase_proto::auth::v1::auth_client::AuthClient;
use ferrobase_proto::{Header, HttpRequest};
use ferrobase_testkit::{JWT_SECRET, TestDatabase};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use tower_layer::Layer as _;

pub use smtp::SmtpSink;

pub struct TestAuth {
    pub db: TestDatabase,
    pub port: u16,
    /// The development outbox the service writes mails to.
    pub outbox: tempfile::TempDir,
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

/// Starts a second service on the database of `auth`, with `extra` variables.
pub async fn spawn_beside(auth: &TestAuth, extra: &[(&str, &str)]) -> TestAuth {
    // Its own (unused) database handle keeps the shared one owned by `auth`.
    let db = ferrobase_testkit::postgres().create_database().await;
    let mut env = env_for(&db).with("FERROBASE_DB_URL", auth.db.url.as_str());
    for (k, v) in extra {
        env = env.with(*k, *v);
    }
    spawn_on(db, env).await
}

/// Starts the service on `db` with exactly `env`.
pub async fn spawn_on(db: TestDatabase, env: Env) -> TestAuth {
    let outbox = tempfile::tempdir().unwrap_or_else(|e| panic!("outbox dir: {e}"));
    let env = if env.get("FERROBASE_AUTH_OUTBOX_DIR").is_some() {
        env
    } else {
        env.with(
            "FERROBASE_AUTH_OUTBOX_DIR",
            outbox.path().to_string_lossy().into_owned(),
        )
    };
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
        outbox,
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

/// The context the gateway forwards for the service_role API key.
pub fn service_ctx() -> AuthContext {
    AuthContext::from_claims(serde_json::json!({"role": "service_role", "iss": "ferrobase"}))
}

/// The context the gateway forwards for `Authorization: Bearer <token>`
/// verified with `store`, or carrying why it failed.
pub fn verified_ctx(store: &KeyStore, token: &str) -> AuthContext {
    match store.verify(token) {
        Ok(claims) => AuthContext::from_claims(claims),
        Err(e) => {
            let mut ctx = anon_ctx();
            ctx.token_error = Some(e.to_string());
            ctx
        }
    }
}

/// A mail the service wrote to the outbox.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct OutboxMail {
    pub to: String,
    pub subject: String,
    pub body: String,
    pub kind: String,
    pub link: String,
    pub otp: String,
    pub token_hash: String,
    pub redirect_to: String,
}

/// The claims of a JWT, unverified (the service signed it; tests inspect it).
pub fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap_or_default();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_else(|e| panic!("jwt payload: {e}"));
    serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("jwt payload json: {e}"))
}

impl TestAuth {
    /// The key set the service serves the gateway over `GetVerificationKeys`.
    pub async fn served_jwks(&self) -> Value {
        let served = self
            .client
            .clone()
            .get_verification_keys(GetVerificationKeysRequest {})
            .await
            .unwrap_or_else(|s| panic!("GetVerificationKeys: {s}"))
            .into_inner()
            .jwks_json;
        serde_json::from_str(&served).unwrap_or_else(|e| panic!("served keys json: {e}"))
    }

    /// What the gateway verifies bearers with: the project secret plus the
    /// public keys this service serves.
    pub async fn verifier(&self) -> KeyStore {
        let mut store = KeyStore::with_secret(JWT_SECRET.as_bytes());
        store
            .set_jwks(&self.served_jwks().await.to_string())
            .unwrap_or_else(|e| panic!("served keys: {e}"));
        store
    }

    /// A call with a user's access token, as the gateway forwards it: the
    /// token verified with the secret and this service's public keys.
    pub async fn user(&self, method: &str, path: &str, body: Option<Value>, token: &str) -> Reply {
        let bearer = format!("Bearer {token}");
        let ctx = verified_ctx(&self.verifier().await, token);
        self.call(method, path, body, ctx, &[("authorization", &bearer)])
            .await
    }

    /// A call with the service_role key as bearer.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let key = ferrobase_testkit::api_key("service_role");
        self.user(method, path, body, &key).await
    }

    /// Every mail in the outbox, oldest first.
    pub fn mails(&self) -> Vec<OutboxMail> {
        let mut names: Vec<_> = std::fs::read_dir(self.outbox.path())
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|p| {
                let raw = std::fs::read(p).unwrap_or_else(|e| panic!("reading mail: {e}"));
                serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("mail json: {e}"))
            })
            .collect()
    }

    /// The newest mail to `to`.
    pub fn last_mail_to(&self, to: &str) -> OutboxMail {
        self.mails()
            .into_iter()
            .rev()
            .find(|m| m.to == to)
            .unwrap_or_else(|| panic!("no mail to {to}"))
    }

    /// Signs up with email and password (autoconfirm on) and returns the session.
    pub async fn sign_up(&self, email: &str, password: &str) -> Value {
        let r = self
            .anon(
                "POST",
                "/signup",
                Some(serde_json::json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(r.status, 200, "signup: {:?}", r.body);
        r.body
    }

    /// Signs in with email and password and returns the session.
    pub async fn sign_in(&self, email: &str, password: &str) -> Value {
        let r = self
            .anon(
                "POST",
                "/token?grant_type=password",
                Some(serde_json::json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(r.status, 200, "sign in: {:?}", r.body);
        r.body
    }

    /// Exchanges a refresh token.
    pub async fn refresh(&self, token: &str) -> Reply {
        self.anon(
            "POST",
            "/token?grant_type=refresh_token",
            Some(serde_json::json!({"refresh_token": token})),
        )
        .await
    }
}

/// A string field of a JSON value.
pub fn s(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
        .to_owned()
}
