//! `ferrobase`: the operator's tool.
//!
//! - `ferrobase keys [--jwt-secret S] [--years N]` prints the anon and
//!   service_role API keys for the project secret (or `FERROBASE_JWT_SECRET`).
//! - `ferrobase bootstrap [--db-url URL]` applies the shared database bootstrap
//!   (or to `FERROBASE_DB_URL`).
//! - `ferrobase bench gateway|auth ...` run the benchmarks behind `scripts/bench`
//!   (see `bench.rs`).

// A command-line tool: stdout is its output.
#![allow(clippy::print_stdout)]

mod bench;

use std::process::ExitCode;

const USAGE: &str = "usage:
  ferrobase keys [--jwt-secret SECRET] [--years N]
  ferrobase bootstrap [--db-url URL]
  ferrobase bench gateway --gateway URL --grpc URL --apikey KEY [--connections N] [--seconds S] [--out FILE]
  ferrobase bench auth --gateway URL --apikey KEY --service-key KEY [--bcrypt-cost N]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("keys") => keys(&args[1..]),
        Some("bootstrap") => bootstrap(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(anyhow::anyhow!("{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrobase: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The value following `--name`, if given.
pub(crate) fn flag(args: &[String], name: &str) -> anyhow::Result<Option<String>> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .cloned()
            .map(Some)
            .ok_or_else(|| anyhow::anyhow!("{name} needs a value")),
    }
}

fn keys(args: &[String]) -> anyhow::Result<()> {
    let secret = flag(args, "--jwt-secret")?
        .or_else(|| {
            std::env::var("FERROBASE_JWT_SECRET")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .ok_or_else(|| anyhow::anyhow!("pass --jwt-secret or set FERROBASE_JWT_SECRET"))?;
    if secret.len() < ferrobase_common::config::JwtConfig::MIN_SECRET_LEN {
        anyhow::bail!("the JWT secret must be at least 32 characters long");
    }
    let years: u64 = flag(args, "--years")?.map_or(Ok(10), |y| y.parse())?;
    let lifetime = years * 365 * 24 * 3600;
    let anon = ferrobase_common::jwt::mint_api_key(secret.as_bytes(), "anon", lifetime)?;
    let service = ferrobase_common::jwt::mint_api_key(secret.as_bytes(), "service_role", lifetime)?;
    println!("FERROBASE_ANON_KEY={anon}");
    println!("FERROBASE_SERVICE_ROLE_KEY={service}");
    Ok(())
}

fn bootstrap(args: &[String]) -> anyhow::Result<()> {
    let url = flag(args, "--db-url")?
        .or_else(|| {
            std::env::var("FERROBASE_DB_URL")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .ok_or_else(|| anyhow::anyhow!("pass --db-url or set FERROBASE_DB_URL"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(ferrobase_common::bootstrap::run_url(&url))?;
    eprintln!("ferrobase: database bootstrap applied");
    Ok(())
}
