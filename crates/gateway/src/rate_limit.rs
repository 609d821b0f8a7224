//! Rate limits counted in Redis, so every gateway replica shares the budget.
//!
//! A fixed window per rule and client IP: the first request of a window sets
//! the key's expiry, later ones increment it. When Redis cannot be reached the
//! gateway lets requests through and logs a warning: an outage of the limiter
//! must not become an outage of the API.

use std::net::IpAddr;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::config::{RateKey, RateRule};

/// A request over its budget: retry after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
}

/// The configured rules and the Redis connection that counts them.
pub struct RateLimiter {
    rules: Vec<RateRule>,
    redis: ConnectionManager,
    prefix: String,
    script: Script,
}

const COUNT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
";

impl RateLimiter {
    /// Connects to Redis; fails when it cannot be reached at start.
    pub async fn connect(url: &str, prefix: String, rules: Vec<RateRule>) -> anyhow::Result<Self> {
        let client =
            redis::Client::open(url).map_err(|e| anyhow::anyhow!("FERROBASE_REDIS_URL: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(std::time::Duration::from_secs(2))
            .set_response_timeout(std::time::Duration::from_secs(1))
            .set_number_of_retries(2);
        let redis = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to Redis for rate limits: {e}"))?;
        Ok(Self {
            rules,
            redis,
            prefix,
            script: Script::new(COUNT),
        })
    }

    /// Counts the request against every matching rule keyed by IP; `Some`
    /// when one is exhausted.
    pub async fn check(&self, method: &str, path: &str, ip: IpAddr) -> Option<Limited> {
        let mut limited = None;
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.key == RateKey::Ip && rule.matches(method, path) {
                let key = format!("{}rl:{index}:{ip}", self.prefix);
                limited = worst(limited, self.count(rule, &key).await);
            }
        }
        limited
    }

    /// True when some rule counts `method` on the path `surface` + `path` by a
    /// field of its body, so [`Self::check_body`] needs to read the body.
    fn counts_body(&self, method: &str, surface: &str, path: &str) -> bool {
        self.rules.iter().any(|r| {
            matches!(r.key, RateKey::BodyField(_)) && r.matches_split(method, surface, path)
        })
    }

    /// Counts the request against every matching rule keyed by a body field.
    /// A body that is not a JSON object, or lacks the field, is not counted
    /// (the service answers it with its own validation error).
    pub async fn check_body(
        &self,
        method: &str,
        surface: &str,
        path: &str,
        body: &[u8],
    ) -> Option<Limited> {
        if !self.counts_body(method, surface, path) {
            return None;
        }
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
            return None;
        };
        let mut limited = None;
        for (index, rule) in self.rules.iter().enumerate() {
            let RateKey::BodyField(field) = &rule.key else {
                continue;
            };
            if !rule.matches_split(method, surface, path) {
                continue;
            }
            let Some(value) = fields.get(field).and_then(|v| v.as_str()) else {
                continue;
            };
            let value = value.trim().to_lowercase();
            if value.is_empty() {
                continue;
            }
            // Hashed, so Redis never holds the addresses themselves.
            let key = format!("{}rl:{index}:{field}:{}", self.prefix, digest_hex(&value));
            limited = worst(limited, self.count(rule, &key).await);
        }
        limited
    }

    /// Spends one request of `rule`'s budget under `key`.
    async fn count(&self, rule: &RateRule, key: &str) -> Option<Limited> {
        let window_ms = rule.window.as_millis() as u64;
        let mut conn = self.redis.clone();
        let counted: Result<(u64, i64), _> = self
            .script
            .key(key)
            .arg(window_ms)
            .invoke_async(&mut conn)
            .await;
        match counted {
            Ok((n, ttl_ms)) if n > rule.limit => Some(Limited {
                retry_after_secs: (ttl_ms.max(0) as u64).div_ceil(1000).max(1),
            }),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable, letting the request through");
                None
            }
        }
    }
}

/// The longer wait of two verdicts.
fn worst(a: Option<Limited>, b: Option<Limited>) -> Option<Limited> {
    [a, b]
        .into_iter()
        .flatten()
        .max_by_key(|l| l.retry_after_secs)
}

fn digest_hex(value: &str) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    let digest = sha2::Sha256::digest(value.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest.iter() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}
