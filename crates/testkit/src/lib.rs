//! Real infrastructure for Ferrobase's tests.
//!
//! Each test binary gets its own private PostgreSQL (`initdb` in a temporary
//! directory, `wal_level=logical`, a free port on 127.0.0.1) and its own private
//! Redis, started once on first use. Each test then takes a fresh database
//! ([`Postgres::create_database`], dropped when the handle drops) and a unique
//! Redis key prefix, so tests run in parallel without seeing each other.
//!
//! The servers are supervised by a small watchdog shell process that stops them
//! and removes their files as soon as the test process exits, however it exits.

mod servers;

pub use servers::{Postgres, Redis, TestDatabase, postgres, redis};

use serde_json::{Value, json};

/// The JWT secret tests run the stack with.
pub const JWT_SECRET: &str = "ferrobase-test-secret-with-at-least-32-characters";

/// A private RSA JWK (2048 bits, kid `test-rsa-2048`, `key_ops` sign and
/// verify) for RS256 tests. Made for the tests only; it guards nothing.
pub const TEST_RSA_JWK: &str = include_str!("test-rsa-2048.jwk.json");

/// An API key for `role` signed with [`JWT_SECRET`], valid for an hour.
pub fn api_key(role: &str) -> String {
    ferrobase_common::jwt::mint_api_key(JWT_SECRET.as_bytes(), role, 3600)
        .unwrap_or_else(|e| panic!("minting a test API key: {e}"))
}

/// A token with the given claims signed with [`JWT_SECRET`].
pub fn token(claims: Value) -> String {
    ferrobase_common::jwt::sign_hs256(JWT_SECRET.as_bytes(), &claims)
        .unwrap_or_else(|e| panic!("signing a test token: {e}"))
}

/// A user access token for `sub`, expiring in `exp_in` seconds (negative: already expired).
pub fn user_token(sub: &str, exp_in: i64) -> String {
    let now = ferrobase_common::jwt::now_secs() as i64;
    token(json!({
        "sub": sub, "role": "authenticated", "aud": "authenticated",
        "iat": now, "exp": now + exp_in, "email": "user@example.com",
    }))
}

/// A unique prefix for Redis keys (and other shared names) of one test.
pub fn unique_prefix() -> String {
    format!("t{}:", uuid::Uuid::new_v4().simple())
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("finding a free port: {e}"))
}
