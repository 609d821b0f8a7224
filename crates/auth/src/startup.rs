//! Building and running the service: bind, connect, migrate, serve, drain.

use std::future::Future;
use std::sync::Arc;

use ferrobase_common::config::{ConfigErrors, Env, ServiceConfig};
use ferrobase_common::grpc::MAX_MESSAGE_BYTES;
use ferrobase_common::service::{self, Listeners, Service};
use ferrobase_proto::auth::v1::auth_server::AuthServer;

use crate::config::AuthConfig;
use crate::migrations::MIGRATIONS;
use crate::service::{AuthService, State};

/// A built service, listening but not yet serving.
pub struct Application {
    listeners: Listeners,
    state: Arc<State>,
}

impl Service for Application {
    const NAME: &'static str = "ferrobase-auth";
    type Config = AuthConfig;

    fn load(env: &Env) -> Result<AuthConfig, ConfigErrors> {
        AuthConfig::from_env(env)
    }

    fn service_config(config: &AuthConfig) -> &ServiceConfig {
        &config.service
    }

    /// Binds the listeners, then applies the database bootstrap and the `auth` migrations.
    async fn build(config: AuthConfig) -> anyhow::Result<Self> {
        let listeners = Listeners::bind(&config.service).await?;
        let pool = service::connect(&config.service, "ferrobase-auth").await?;
        {
            let mut client = pool
                .get()
                .await
                .map_err(|e| anyhow::anyhow!("connecting to the database: {e}"))?;
            ferrobase_common::migrate::apply(&mut client, "auth", MIGRATIONS).await?;
        }
        // Requests get pools of their own, whose connections open on the
        // workers; the connection opened here for the migrations closes.
        pool.close();
        let pool = ferrobase_common::db::WorkerPools::new(
            &config.service.database,
            "ferrobase-auth",
            config.workers,
        )?;
        let state = Arc::new(State::new(config, pool)?);
        let keys = state.config.jwt_keys.keys().len();
        match state.config.jwt_keys.signer() {
            Some(key) => tracing::info!(
                kid = key.kid(),
                alg = ?key.alg(),
                public_keys = keys,
                "access tokens are signed with an asymmetric key"
            ),
            None => tracing::info!(
                public_keys = keys,
                "access tokens are signed with HS256 and the project secret"
            ),
        }
        Ok(Self { listeners, state })
    }

    /// The gRPC port (useful when built with port 0).
    fn port(&self) -> u16 {
        self.listeners.port()
    }

    /// Serves until `stop` resolves, then drains within the configured grace.
    async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (listener, token) = self.listeners.start(stop);
        if let Some(every) = self.state.config.cleanup_interval {
            tokio::spawn(crate::cleanup::run_every(
                every,
                self.state.clone(),
                token.clone(),
            ));
        }
        let grace = self.state.config.service.process.shutdown_grace;
        let workers = self.state.config.workers;
        let service = AuthServer::new(AuthService::new(self.state.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let result = ferrobase_common::grpc::serve_on_workers(
            listener,
            service,
            token.clone(),
            grace,
            workers,
        )
        .await;
        token.cancel();
        self.state.pool.close();
        result
    }
}
