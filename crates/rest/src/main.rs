//! `ferrobase-rest`: reads its configuration, starts, serves until SIGINT or
//! SIGTERM. `ferrobase-rest healthcheck` probes a running instance.

fn main() -> std::process::ExitCode {
    ferrobase_common::service::main::<ferrobase_rest::Application>()
}
