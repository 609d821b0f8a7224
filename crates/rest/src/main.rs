//! `ferrobase-rest`: reads its configuration, starts, serves until SIGINT or
//! SIGTERM. `ferrobase-rest healthcheck` probes a running instance.

use std::process::ExitCode;

use ferrobase_common::config::Env;
use ferrobase_rest::{Application, RestConfig};

fn main() -> ExitCode {
    let config = match RestConfig::from_env(&Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrobase-rest: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferrobase-rest: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let serving = runtime.block_on(ferrobase_common::health::probe_grpc(
            config.service.grpc_addr,
            "",
        ));
        return if serving {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let _telemetry = match ferrobase_common::telemetry::init(
        "ferrobase-rest",
        config.service.process.log_format,
    ) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("ferrobase-rest: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let app = Application::build(config).await?;
        tracing::info!(port = app.port(), "rest service listening");
        app.run_until_stopped(ferrobase_common::shutdown::signal())
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "rest service stopped with an error"
            );
            ExitCode::FAILURE
        }
    }
}
