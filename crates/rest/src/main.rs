//! `ferrobase-rest`: reads its configuration, starts, serves until SIGINT or
//! SIGTERM. `ferrobase-rest healthcheck` probes a running instance.

// mimalloc: fewer CPU cycles per request than glibc malloc under many small
// short-lived allocations (headers, JSON, SQL text).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ferrobase_common::service::main::<ferrobase_rest::Application>()
}
