//! The shape every gRPC service binary shares: the thin `main`, the
//! listeners bound before anything slow, the database pool with the bootstrap
//! applied, and serving until a signal with a drain deadline.
//!
//! A service implements [`Service`] on its `Application` and its `main` is one
//! line: `ferrobase_common::service::main::<Application>()`.

use std::future::Future;
use std::process::ExitCode;

use deadpool_postgres::Pool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigErrors, Env, ServiceConfig};

/// A gRPC service binary.
pub trait Service: Sized + Send + 'static {
    /// The binary's name, e.g. `ferrobase-auth`.
    const NAME: &'static str;
    type Config: Send + 'static;

    /// Reads and validates the configuration.
    fn load(env: &Env) -> Result<Self::Config, ConfigErrors>;
    /// The part of the configuration every service has.
    fn service_config(config: &Self::Config) -> &ServiceConfig;
    /// Binds, connects and prepares; nothing is served yet.
    fn build(config: Self::Config) -> impl Future<Output = anyhow::Result<Self>> + Send;
    /// The bound gRPC port.
    fn port(&self) -> u16;
    /// Serves until `stop` resolves, then drains.
    fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The whole of a service's `main`: configuration, `healthcheck`, telemetry,
/// runtime, build, serve until SIGINT or SIGTERM.
pub fn main<S: Service>() -> ExitCode {
    let name = S::NAME;
    let config = match S::load(&Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let addr = S::service_config(&config).grpc_addr;
        let serving = runtime.block_on(crate::health::probe_grpc(addr, ""));
        return if serving {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let format = S::service_config(&config).process.log_format;
    let _telemetry = match crate::telemetry::init(name, format) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let app = S::build(config).await?;
        tracing::info!(port = app.port(), "{name} listening");
        app.run_until_stopped(crate::shutdown::signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{name} stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// The listeners of a service, bound first so a port clash fails fast.
pub struct Listeners {
    pub grpc: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(config: &ServiceConfig) -> anyhow::Result<Self> {
        let addr = config.grpc_addr;
        let grpc = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding the gRPC listener on {addr}: {e}"))?;
        let metrics = match config.process.metrics_addr {
            Some(addr) => Some(crate::metrics::bind(addr).await?),
            None => None,
        };
        Ok(Self { grpc, metrics })
    }

    /// The bound gRPC port.
    pub fn port(&self) -> u16 {
        self.grpc.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Starts the metrics listener (if any) and turns `stop` into a token that
    /// background tasks and the gRPC server watch. Returns the gRPC listener and the token.
    pub fn start(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> (TcpListener, CancellationToken) {
        let token = CancellationToken::new();
        if let Some(listener) = self.metrics {
            tokio::spawn(crate::metrics::serve(listener, token.clone()));
        }
        let trigger = token.clone();
        tokio::spawn(async move {
            stop.await;
            trigger.cancel();
        });
        (self.grpc, token)
    }
}

/// The service's pool, with the shared database bootstrap applied through it.
pub async fn connect(config: &ServiceConfig, application_name: &str) -> anyhow::Result<Pool> {
    let pool = crate::db::pool(&config.database, application_name)?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the database: {e}"))?;
    crate::bootstrap::run(&mut client).await?;
    drop(client);
    Ok(pool)
}
