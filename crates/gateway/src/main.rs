//! `ferrobase-gateway`: reads its configuration, starts, serves until SIGINT or
//! SIGTERM. `ferrobase-gateway healthcheck` probes a running gateway.

// mimalloc: fewer CPU cycles per request than glibc malloc under many small
// short-lived allocations (headers, JSON, SQL text).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use ferrobase_common::config::Env;
use ferrobase_gateway::{Application, GatewayConfig};

fn main() -> ExitCode {
    let env = Env::from_process();
    let config = match GatewayConfig::from_env(&env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrobase-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return healthcheck(config.listen);
    }
    let _telemetry =
        match ferrobase_common::telemetry::init("ferrobase-gateway", config.process.log_format) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("ferrobase-gateway: {e:#}");
                return ExitCode::FAILURE;
            }
        };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "starting the runtime failed");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let app = Application::build(config).await?;
        tracing::info!(port = app.port(), "gateway listening");
        app.run_until_stopped(ferrobase_common::shutdown::signal())
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "gateway stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// Exits 0 when `GET /health` on this machine's gateway answers 200.
fn healthcheck(listen: SocketAddr) -> ExitCode {
    let addr = SocketAddr::from(([127, 0, 0, 1], listen.port()));
    let probe = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.1 200"))
    };
    match probe() {
        Ok(true) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
