//! `ferrobase`: the operator's tool.
//!
//! - `ferrobase keys [--jwt-secret S] [--years N]` prints the anon and
//!   service_role API keys for the project secret (or `FERROBASE_JWT_SECRET`).
//! - `ferrobase keys generate-jwk [--verify-only]` prints a new ES256 private
//!   JWK with a random `kid`, as a JSON array for `FERROBASE_AUTH_JWT_KEYS`.
//! - `ferrobase bootstrap [--db-url URL]` applies the shared database bootstrap
//!   (or to `FERROBASE_DB_URL`).
//! - `ferrobase bench gateway|auth|rest ...` run the benchmarks behind `scripts/bench`
//!   (see `bench.rs`).

// A command-line tool: stdout is its output.
#![allow(clippy::print_stdout)]

mod bench;

use std::process::ExitCode;

const USAGE: &str = "usage:
  ferrobase keys [--jwt-secret SECRET] [--years N]
  ferrobase keys generate-jwk [--verify-only]
  ferrobase bootstrap [--db-url URL]
  ferrobase bench gateway --gateway URL --grpc URL --apikey KEY [--connections N] [--seconds S] [--out FILE]
  ferrobase bench auth --gateway URL --apikey KEY --service-key KEY [--bcrypt-cost N]
  ferrobase bench rest --gateway URL --apikey KEY --pgbench PATH --db-url URL --authenticator-url URL
      [--scale N] [--pgbench-threads N] [--gateway-pid PID] [--rest-pid PID] [--postgres-pid PID]
      [--pool-size N] [--connections N] [--seconds S] [--out FILE]
      [--peer URL --peer-name NAME --peer-pid PID | --peer-unavailable REASON]";

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
    if args.first().map(String::as_str) == Some("generate-jwk") {
        println!("{}", generate_jwk(&args[1..])?);
        return Ok(());
    }
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

/// A JSON array holding one new ES256 private JWK: `key_ops` `["sign",
/// "verify"]`, or `["verify"]` with `--verify-only` (a key introduced ahead
/// of a rotation). The output is a secret: it holds the private key.
fn generate_jwk(args: &[String]) -> anyhow::Result<String> {
    let verify_only = match args {
        [] => false,
        [flag] if flag == "--verify-only" => true,
        _ => anyhow::bail!("usage: ferrobase keys generate-jwk [--verify-only]"),
    };
    let jwk = ferrobase_common::jwk::generate_es256(!verify_only).map_err(anyhow::Error::msg)?;
    Ok(serde_json::Value::Array(vec![jwk]).to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferrobase_common::jwk::PrivateKeySet;

    #[test]
    fn generated_jwks_are_accepted_by_the_auth_variable() {
        let signing = PrivateKeySet::parse(&generate_jwk(&[]).unwrap()).unwrap();
        let key = signing.signer().unwrap();
        assert_eq!(key.public_jwk()["alg"], "ES256");
        let standby = generate_jwk(&["--verify-only".to_owned()]).unwrap();
        let standby = PrivateKeySet::parse(&standby).unwrap();
        assert!(standby.signer().is_none());
        assert_ne!(standby.keys()[0].kid(), key.kid());
        assert!(generate_jwk(&["--bogus".to_owned()]).is_err());
    }
}
