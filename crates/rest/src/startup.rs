//! Building and running the service: bind, connect, load the schema cache,
//! serve, drain.

use std::future::Future;
use std::sync::Arc;

use ferrobase_proto::rest::v1::rest_server::RestServer;
use secrecy::ExposeSecret as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::RestConfig;
use crate::handler::State;
use crate::schema::{Cache, install_watch};
use crate::service::RestService;

/// The largest gRPC message the service accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A built service, listening but not yet serving.
pub struct Application {
    listener: TcpListener,
    metrics: Option<TcpListener>,
    state: Arc<State>,
}

impl Application {
    /// Binds the listeners, applies the database bootstrap and loads the schema cache.
    pub async fn build(config: RestConfig) -> anyhow::Result<Self> {
        let addr = config.service.grpc_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding the gRPC listener on {addr}: {e}"))?;
        let metrics = match config.service.process.metrics_addr {
            Some(addr) => Some(ferrobase_common::metrics::bind(addr).await?),
            None => None,
        };
        let pool = ferrobase_common::db::pool(&config.service.database, "ferrobase-rest")?;
        {
            let mut client = pool
                .get()
                .await
                .map_err(|e| anyhow::anyhow!("connecting to the database: {e}"))?;
            ferrobase_common::bootstrap::run(&mut client).await?;
            install_watch(&client).await;
        }
        let cache = Arc::new(Cache::new(pool.clone(), config.schemas.clone()).await?);
        let state = Arc::new(State {
            config,
            pool,
            cache,
        });
        Ok(Self {
            listener,
            metrics,
            state,
        })
    }

    /// The gRPC port (useful when built with port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `stop` resolves, then drains within the configured grace.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        if let Some(listener) = self.metrics {
            tokio::spawn(ferrobase_common::metrics::serve(listener, token.clone()));
        }
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
        let trigger = token.clone();
        tokio::spawn(async move {
            stop.await;
            trigger.cancel();
        });
        let grace = self.state.config.service.process.shutdown_grace;
        let service = RestServer::new(RestService::new(self.state.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let result =
            ferrobase_common::grpc::serve(self.listener, service, token.clone(), grace).await;
        token.cancel();
        self.state.pool.close();
        result
    }
}
