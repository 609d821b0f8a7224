//! Rate limits counted in Redis, so every gateway replica shares the budget.
//!
//! A fixed window per rule and client IP: the first request of a window sets
//! the key's expiry, later ones increment it. When Redis cannot be reached the
//! gateway lets requests through and logs a warning: an outage of the limiter
//! must not become an outage of the API.

use std::net::IpAddr;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::config::RateRule;

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

    /// Counts the request against every matching rule; `Some` when one is exhausted.
    pub async fn check(&self, method: &str, path: &str, ip: IpAddr) -> Option<Limited> {
        let mut limited: Option<Limited> = None;
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.matches(method, path) {
                continue;
            }
            let key = format!("{}rl:{index}:{ip}", self.prefix);
            let window_ms = rule.window.as_millis() as u64;
            let mut conn = self.redis.clone();
            let counted: Result<(u64, i64), _> = self
                .script
                .key(&key)
                .arg(window_ms)
                .invoke_async(&mut conn)
                .await;
            match counted {
                Ok((n, ttl_ms)) if n > rule.limit => {
                    let secs = (ttl_ms.max(0) as u64).div_ceil(1000).max(1);
                    limited = Some(Limited {
                        retry_after_secs: limited.map_or(secs, |l| l.retry_after_secs.max(secs)),
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "rate limiter unavailable, letting the request through")
                }
            }
        }
        limited
    }
}
