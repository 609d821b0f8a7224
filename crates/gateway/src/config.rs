//! The gateway's configuration, read from `FERROBASE_*` environment variables
//! (see `docs/configuration.md`).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use ferrobase_common::config::{ConfigErrors, Env, JwtConfig, Loader, ProcessConfig};
use secrecy::SecretString;

use crate::surface::Surface;

/// One rate-limit rule: at most `limit` requests per `window` per client IP
/// for requests whose method and path match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRule {
    /// `None` matches every method.
    pub method: Option<String>,
    /// A public path prefix such as `/auth/v1/token`.
    pub path_prefix: String,
    pub limit: u64,
    pub window: Duration,
    /// Whose budget a request spends.
    pub key: RateKey,
}

/// What a rate rule counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client's IP address.
    Ip,
    /// A top-level string field of the JSON request body (such as `email`),
    /// trimmed and lowercased; requests without it are not counted by the rule.
    BodyField(String),
}

impl RateRule {
    /// Parses `METHOD /path=N/SECONDS` (`*` or no method matches all methods),
    /// optionally followed by `by ip` (the default) or `by <field>` to count
    /// by a field of the JSON body, e.g. `POST /auth/v1/otp=5/3600 by email`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (target, budget) = raw
            .split_once('=')
            .ok_or_else(|| format!("{raw:?}: expected METHOD /path=N/SECONDS"))?;
        let (budget, key) = match budget.split_once(" by ") {
            None => (budget, RateKey::Ip),
            Some((budget, key)) => {
                let key = key.trim();
                let valid = !key.is_empty()
                    && key.len() <= 64
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    return Err(format!(
                        "{raw:?}: expected `by ip` or `by <field>` with a lowercase JSON field name"
                    ));
                }
                let key = if key == "ip" {
                    RateKey::Ip
                } else {
                    RateKey::BodyField(key.to_owned())
                };
                (budget, key)
            }
        };
        let mut words = target.split_whitespace();
        let (method, path) = match (words.next(), words.next(), words.next()) {
            (Some(p), None, None) => (None, p),
            (Some(m), Some(p), None) => ((m != "*").then(|| m.to_ascii_uppercase()), p),
            _ => return Err(format!("{raw:?}: expected METHOD /path=N/SECONDS")),
        };
        if !path.starts_with('/') {
            return Err(format!("{raw:?}: the path must start with /"));
        }
        if matches!(key, RateKey::BodyField(_)) && path.starts_with("/storage/") {
            return Err(format!(
                "{raw:?}: storage bodies are streamed, so they cannot be counted by a body field"
            ));
        }
        let (n, secs) = budget
            .split_once('/')
            .ok_or_else(|| format!("{raw:?}: expected N/SECONDS after ="))?;
        let limit: u64 = n
            .trim()
            .parse()
            .map_err(|_| format!("{raw:?}: {n:?} is not a count"))?;
        let secs: u64 = secs
            .trim()
            .parse()
            .map_err(|_| format!("{raw:?}: {secs:?} is not a number of seconds"))?;
        if limit == 0 || secs == 0 {
            return Err(format!("{raw:?}: count and seconds must be positive"));
        }
        Ok(Self {
            method,
            path_prefix: path.to_owned(),
            limit,
            window: Duration::from_secs(secs),
            key,
        })
    }

    /// True when this rule counts the request.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.matches_split(method, path, "")
    }

    /// [`Self::matches`] for the path `head` followed by `tail`, without
    /// joining them (a surface prefix and the path below it).
    pub fn matches_split(&self, method: &str, head: &str, tail: &str) -> bool {
        let prefix = self.path_prefix.as_str();
        let path_matches = match prefix.strip_prefix(head) {
            Some(rest) => tail.starts_with(rest),
            None => head.starts_with(prefix),
        };
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path_matches
    }
}

/// gRPC URLs of the services; `None` means not configured.
#[derive(Debug, Clone, Default)]
pub struct UpstreamUrls {
    pub auth: Option<String>,
    pub rest: Option<String>,
    pub storage: Option<String>,
    pub meta: Option<String>,
    pub realtime: Option<String>,
}

impl UpstreamUrls {
    pub fn get(&self, surface: Surface) -> Option<&str> {
        match surface {
            Surface::Auth => self.auth.as_deref(),
            Surface::Rest => self.rest.as_deref(),
            Surface::Storage => self.storage.as_deref(),
            Surface::Meta => self.meta.as_deref(),
            Surface::Realtime => self.realtime.as_deref(),
            Surface::Edge => None,
        }
    }
}

/// Everything the gateway needs to start.
#[derive(Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub jwt: JwtConfig,
    pub upstreams: UpstreamUrls,
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key the gateway writes.
    pub redis_prefix: String,
    pub rate_limits: Vec<RateRule>,
    pub max_body_bytes: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub trust_forwarded_for: bool,
    /// HTTP worker threads.
    pub workers: usize,
    pub process: ProcessConfig,
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("listen", &self.listen)
            .field("upstreams", &self.upstreams)
            .field("redis", &self.redis_url.is_some())
            .field("rate_limits", &self.rate_limits)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl GatewayConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigErrors> {
        let mut l = Loader::new(env);
        let host: std::net::IpAddr = l.parse_or("FERROBASE_HOST", [0, 0, 0, 0].into());
        let port: u16 = l.parse_or("FERROBASE_PORT", 8000);
        let jwt = JwtConfig::load(&mut l);
        if let Some(jwks) = &jwt.jwks
            && let Err(e) = ferrobase_common::jwt::KeyStore::with_secret(b"").set_jwks(jwks)
        {
            l.invalid("FERROBASE_JWT_JWKS", e);
        }
        let mut upstream = |name: &str| {
            let url = l.optional(name)?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                l.invalid(name, "expected an http:// or https:// URL");
                return None;
            }
            Some(url)
        };
        let upstreams = UpstreamUrls {
            auth: upstream("FERROBASE_AUTH_URL"),
            rest: upstream("FERROBASE_REST_URL"),
            storage: upstream("FERROBASE_STORAGE_URL"),
            meta: upstream("FERROBASE_META_URL"),
            realtime: upstream("FERROBASE_REALTIME_URL"),
        };
        let redis_url = l.optional("FERROBASE_REDIS_URL").map(SecretString::from);
        let mut rate_limits = Vec::new();
        for raw in l
            .optional("FERROBASE_RATE_LIMITS")
            .unwrap_or_default()
            .split(',')
        {
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            match RateRule::parse(raw) {
                Ok(rule) => rate_limits.push(rule),
                Err(e) => l.invalid("FERROBASE_RATE_LIMITS", e),
            }
        }
        if !rate_limits.is_empty() && redis_url.is_none() {
            l.invalid(
                "FERROBASE_REDIS_URL",
                "required when FERROBASE_RATE_LIMITS is set",
            );
        }
        let redis_prefix = l
            .optional("FERROBASE_REDIS_PREFIX")
            .unwrap_or_else(|| "ferrobase:".into());
        let max_body_bytes = l.parse_or("FERROBASE_MAX_BODY_BYTES", 10 * 1024 * 1024);
        let connect_timeout = l.millis_or("FERROBASE_CONNECT_TIMEOUT_MS", Duration::from_secs(2));
        let request_timeout = l.millis_or("FERROBASE_REQUEST_TIMEOUT_MS", Duration::from_secs(30));
        let trust_forwarded_for = l.bool_or("FERROBASE_TRUST_FORWARDED_FOR", false);
        let workers = l.workers();
        let process = ProcessConfig::load(&mut l);
        let config = Self {
            listen: SocketAddr::new(host, port),
            jwt,
            upstreams,
            redis_url,
            redis_prefix,
            rate_limits,
            max_body_bytes,
            connect_timeout,
            request_timeout,
            trust_forwarded_for,
            workers,
            process,
        };
        l.finish(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rate_rules() {
        let r = RateRule::parse("POST /auth/v1/token=30/60").unwrap();
        assert_eq!(r.method.as_deref(), Some("POST"));
        assert!(r.matches("post", "/auth/v1/token"));
        assert!(!r.matches("GET", "/auth/v1/token"));
        assert_eq!(r.key, RateKey::Ip);
        let any = RateRule::parse("/rest/v1=100/1").unwrap();
        assert!(any.matches("DELETE", "/rest/v1/todos"));
        let by_email = RateRule::parse("POST /auth/v1/otp=5/3600 by email").unwrap();
        assert_eq!(by_email.key, RateKey::BodyField("email".into()));
        assert_eq!((by_email.limit, by_email.window.as_secs()), (5, 3600));
        // A split path matches as the joined one does.
        for (head, tail, joined) in [
            ("/auth/v1", "/otp", true),
            ("/auth/v1", "/otpx", true),
            ("/auth/v1", "/token", false),
            ("/auth", "/v1/otp", true),
            ("/rest/v1", "/otp", false),
            ("/auth/v1/otp", "", true),
        ] {
            assert_eq!(
                by_email.matches_split("POST", head, tail),
                joined,
                "{head}{tail}"
            );
            assert_eq!(by_email.matches("POST", &format!("{head}{tail}")), joined);
        }
        assert!(!by_email.matches_split("GET", "/auth/v1", "/otp"));
        let by_ip = RateRule::parse("POST /auth/v1/otp=5/60 by ip").unwrap();
        assert_eq!(by_ip.key, RateKey::Ip);
        for bad in [
            "POST /x=1/1 by",
            "POST /x=1/1 by Email",
            "POST /x=1/1 by e-mail",
            "POST /storage/v1/object=1/1 by email",
            "POST /x",
            "POST x=1/1",
            "POST /x=0/1",
            "POST /x=a/1",
            "A B C=1/1",
        ] {
            assert!(RateRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_what_is_wrong() {
        let env = Env::from_pairs([
            ("FERROBASE_RATE_LIMITS", "POST /auth/v1/token=30/60"),
            ("FERROBASE_REST_URL", "rest:50051"),
        ]);
        let err = GatewayConfig::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("FERROBASE_JWT_SECRET is required"), "{err}");
        assert!(err.contains("FERROBASE_REDIS_URL"), "{err}");
        assert!(err.contains("FERROBASE_REST_URL"), "{err}");
    }
}
