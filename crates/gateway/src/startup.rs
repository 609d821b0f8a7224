//! Building and running the gateway: bind first, then connect, then serve
//! until told to stop, then drain.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use ferrobase_common::jwt::KeyStore;
use ferrobase_proto::auth::v1::GetVerificationKeysRequest;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::identity::Keys;
use crate::proxy::{self, AppState};
use crate::rate_limit::RateLimiter;
use crate::surface::Surface;
use crate::upstream::Upstreams;
use crate::{cors, request};

/// How often the gateway refreshes the auth service's public keys.
const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// The first wait before asking again when the auth service did not answer
/// (it may still be starting); it doubles up to [`KEY_REFRESH_INTERVAL`], so
/// tokens signed with its keys are not refused for minutes after a start.
const KEY_RETRY_FIRST: Duration = Duration::from_secs(1);

/// A built gateway, listening but not yet serving.
pub struct Application {
    port: u16,
    server: Server,
    metrics: Option<tokio::net::TcpListener>,
    key_refresh: Option<(Upstreams, Arc<Keys>, Option<String>)>,
    grace: Duration,
}

impl Application {
    /// Binds the listeners and prepares every dependency. Port 0 picks a free port.
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .map_err(|e| anyhow::anyhow!("binding the gateway on {}: {e}", config.listen))?;
        let port = listener.local_addr()?.port();
        let metrics = match config.process.metrics_addr {
            Some(addr) => Some(ferrobase_common::metrics::bind(addr).await?),
            None => None,
        };
        let keys = Arc::new(Keys::new(
            KeyStore::from_config(&config.jwt)
                .map_err(|e| anyhow::anyhow!("FERROBASE_JWT_JWKS: {e}"))?,
        ));
        let upstreams = Upstreams::new(&config.upstreams, config.connect_timeout)?;
        let limiter = match (&config.redis_url, config.rate_limits.is_empty()) {
            (Some(url), false) => Some(
                RateLimiter::connect(
                    url.expose_secret(),
                    config.redis_prefix.clone(),
                    config.rate_limits.clone(),
                )
                .await?,
            ),
            _ => None,
        };
        let state = web::Data::new(AppState {
            keys: keys.clone(),
            limiter,
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout,
            trust_forwarded_for: config.trust_forwarded_for,
        });
        let (urls, connect_timeout) = (config.upstreams.clone(), config.connect_timeout);
        let server = HttpServer::new(move || {
            // Each worker thread gets its own channels, so a call and its
            // connection run on one thread instead of hopping between runtimes.
            let upstreams = Upstreams::new(&urls, connect_timeout).unwrap_or_else(|e| {
                // Unreachable: the same URLs were accepted above.
                tracing::error!(error = %e, "building service clients failed");
                Upstreams::default()
            });
            App::new()
                .app_data(state.clone())
                .app_data(web::Data::new(upstreams))
                .wrap(from_fn(cors::middleware))
                .wrap(from_fn(request::middleware))
                .configure(routes)
                .default_service(web::to(not_found))
        })
        .workers(config.workers)
        .disable_signals()
        .shutdown_timeout(config.process.shutdown_grace.as_secs().max(1))
        .listen(listener)?
        .run();
        let key_refresh = upstreams
            .auth
            .is_some()
            .then(|| (upstreams, keys, config.jwt.jwks.clone()));
        Ok(Self {
            port,
            server,
            metrics,
            key_refresh,
            grace: config.process.shutdown_grace,
        })
    }

    /// The port the gateway listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `stop` resolves, then stops accepting and drains.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let background = CancellationToken::new();
        if let Some(listener) = self.metrics {
            tokio::spawn(ferrobase_common::metrics::serve(
                listener,
                background.clone(),
            ));
        }
        if let Some((upstreams, keys, configured)) = self.key_refresh {
            tokio::spawn(refresh_keys(
                upstreams,
                keys,
                configured,
                background.clone(),
            ));
        }
        let handle = self.server.handle();
        let server = self.server;
        tokio::pin!(server);
        let result = tokio::select! {
            r = &mut server => r.map_err(anyhow::Error::from),
            () = stop => {
                tracing::info!(grace_ms = self.grace.as_millis() as u64, "stopping: draining requests");
                // The server future itself carries out the stop, so keep polling it.
                tokio::spawn(async move { handle.stop(true).await });
                server.await.map_err(anyhow::Error::from)
            }
        };
        background.cancel();
        result
    }
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health));
    for surface in Surface::SERVICES {
        cfg.service(web::scope(surface.prefix()).default_service(web::to(
            move |req, payload, state, upstreams| {
                proxy::forward(surface, req, payload, state, upstreams)
            },
        )));
    }
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok", "name": "ferrobase-gateway"}))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("application/json; charset=utf-8")
        .body(json!({"message": "no Route matched with those values"}).to_string())
}

/// Keeps the public keys of the auth service (plus any configured ones) current.
async fn refresh_keys(
    upstreams: Upstreams,
    keys: Arc<Keys>,
    configured: Option<String>,
    stop: CancellationToken,
) {
    let Some(mut auth) = upstreams.auth else {
        return;
    };
    let mut wait = Duration::ZERO;
    let mut retry = KEY_RETRY_FIRST;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let served = match auth
            .get_verification_keys(GetVerificationKeysRequest {})
            .await
        {
            Ok(resp) => {
                (wait, retry) = (KEY_REFRESH_INTERVAL, KEY_RETRY_FIRST);
                resp.into_inner().jwks_json
            }
            Err(status) => {
                tracing::debug!(
                    code = ?status.code(),
                    retry_ms = retry.as_millis() as u64,
                    "auth keys not available yet"
                );
                (wait, retry) = (retry, (retry * 2).min(KEY_REFRESH_INTERVAL));
                continue;
            }
        };
        let mut all: Vec<Value> = Vec::new();
        for doc in configured.iter().chain(std::iter::once(&served)) {
            if let Ok(Value::Object(mut set)) = serde_json::from_str::<Value>(doc)
                && let Some(Value::Array(list)) = set.remove("keys")
            {
                all.extend(list);
            }
        }
        match keys.set_jwks(&json!({"keys": all}).to_string()) {
            Ok(n) => tracing::debug!(keys = n, "verification keys refreshed"),
            Err(e) => tracing::warn!(error = %e, "the auth service served unusable keys"),
        }
    }
}
