//! Building and running the service: bind, connect, load the schema cache,
//! serve, drain.

use std::future::Future;
use std::sync::Arc;

use ferrobase_common::config::{ConfigErrors, Env, ServiceConfig};
use ferrobase_common::grpc::MAX_MESSAGE_BYTES;
use ferrobase_common::service::{self, Listeners, Service};
use ferrobase_proto::rest::v1::rest_server::RestServer;
use secrecy::ExposeSecret as _;

use crate::config::RestConfig;
use crate::handler::State;
use crate::schema::{Cache, install_watch};
use crate::service::RestService;

/// A built service, listening but not yet serving.
pub struct Application {
    listeners: Listeners,
    state: Arc<State>,
}

impl Service for Application {
    const NAME: &'static str = "ferrobase-rest";
    type Config = RestConfig;

    fn load(env: &Env) -> Result<RestConfig, ConfigErrors> {
        RestConfig::from_env(env)
    }

    fn service_config(config: &RestConfig) -> &ServiceConfig {
        &config.service
    }

    /// Binds the listeners, applies the database bootstrap and loads the schema cache.
    async fn build(config: RestConfig) -> anyhow::Result<Self> {
        let listeners = Listeners::bind(&config.service).await?;
        let pool = service::connect(&config.service, "ferrobase-rest").await?;
        {
            let client = pool
                .get()
                .await
                .map_err(|e| anyhow::anyhow!("connecting to the database: {e}"))?;
            install_watch(&client).await;
        }
        // Requests run on connections of their own (`pg`); this pool only
        // serves the schema cache, the OpenAPI document and plans, so two do.
        pool.resize(config.service.database.pool_size.min(2));
        let requests = crate::pg::Pool::per_worker(
            config.service.database.url.expose_secret(),
            config.service.database.pool_size,
            "ferrobase-rest",
            config.workers,
        )?;
        let cache =
            Arc::new(Cache::new(pool.clone(), requests.clone(), config.schemas.clone()).await?);
        let state = Arc::new(State {
            config,
            pool,
            requests,
            cache,
        });
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
        let url = self
            .state
            .config
            .service
            .database
            .url
            .expose_secret()
            .to_owned();
        tokio::spawn(crate::schema::listen(
            self.state.cache.clone(),
            url,
            token.clone(),
        ));
        let grace = self.state.config.service.process.shutdown_grace;
        let workers = self.state.config.workers;
        let service = RestServer::new(RestService::new(self.state.clone()))
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
        self.state.requests.close();
        self.state.pool.close();
        result
    }
}
