//! `ferrobase-auth`: reads its configuration, starts, serves until SIGINT or
//! SIGTERM. `ferrobase-auth healthcheck` probes a running instance.

fn main() -> std::process::ExitCode {
    ferrobase_common::service::main::<ferrobase_auth::Application>()
}
