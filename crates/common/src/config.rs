//! Typed configuration read from environment variables prefixed `FERROBASE_`.
//!
//! Loading goes through [`Loader`], which collects every problem instead of
//! stopping at the first, so one start-up failure names all the variables to fix.
//! The variables come from an [`Env`] map, never read ad hoc, so tests build
//! configurations without touching process state.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

/// A snapshot of environment variables.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The current process environment.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    /// An environment made of the given pairs only.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Sets one variable, returning the changed environment.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// The value of `name`; an empty value counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

impl fmt::Debug for Env {
    // Values may be secrets: list names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

/// One configuration problem, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is required but not set")]
    Missing { name: String },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: String, reason: String },
}

/// Every problem found while loading a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Reads typed values from an [`Env`], collecting problems.
pub struct Loader<'a> {
    env: &'a Env,
    errors: Vec<ConfigError>,
}

impl<'a> Loader<'a> {
    pub fn new(env: &'a Env) -> Self {
        Self {
            env,
            errors: Vec::new(),
        }
    }

    /// The raw value, if set.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.env.get(name).map(str::to_owned)
    }

    /// A value that must be set; records a problem and returns an empty string when it is not.
    pub fn required(&mut self, name: &str) -> String {
        match self.env.get(name) {
            Some(v) => v.to_owned(),
            None => {
                self.errors.push(ConfigError::Missing {
                    name: name.to_owned(),
                });
                String::new()
            }
        }
    }

    /// A secret that must be set.
    pub fn required_secret(&mut self, name: &str) -> SecretString {
        SecretString::from(self.required(name))
    }

    /// A parsed value, or `default` when unset.
    pub fn parse_or<T>(&mut self, name: &str, default: T) -> T
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.env.get(name) {
            None => default,
            Some(raw) => match raw.trim().parse() {
                Ok(v) => v,
                Err(e) => {
                    self.invalid(name, e.to_string());
                    default
                }
            },
        }
    }

    /// A parsed value, or `None` when unset.
    pub fn parse_optional<T>(&mut self, name: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let raw = self.env.get(name)?;
        match raw.trim().parse() {
            Ok(v) => Some(v),
            Err(e) => {
                self.invalid(name, e.to_string());
                None
            }
        }
    }

    /// A boolean (`true/false/1/0/yes/no/on/off`), or `default` when unset.
    pub fn bool_or(&mut self, name: &str, default: bool) -> bool {
        match self.env.get(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) => match v.as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    self.invalid(name, format!("expected true or false, got {v:?}"));
                    default
                }
            },
        }
    }

    /// `FERROBASE_WORKERS`: the serving threads of a process, the number of
    /// cores when unset, at least one.
    pub fn workers(&mut self) -> usize {
        self.parse_or("FERROBASE_WORKERS", cores()).max(1)
    }

    /// A duration given in milliseconds, or `default` when unset.
    pub fn millis_or(&mut self, name: &str, default: Duration) -> Duration {
        Duration::from_millis(self.parse_or(name, default.as_millis() as u64))
    }

    /// A socket address, or `default` when unset.
    pub fn addr_or(&mut self, name: &str, default: &str) -> SocketAddr {
        let fallback = default
            .parse()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        self.parse_or(name, fallback)
    }

    /// Records a problem with `name`.
    pub fn invalid(&mut self, name: &str, reason: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            name: name.to_owned(),
            reason: reason.into(),
        });
    }

    /// Returns `value` if no problem was recorded.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for containers and log collectors.
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("expected json or pretty, got {other:?}")),
        }
    }
}

/// Settings every process shares: logs, metrics, shutdown.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    pub log_format: LogFormat,
    /// `None` disables the metrics listener.
    pub metrics_addr: Option<SocketAddr>,
    pub shutdown_grace: Duration,
}

impl ProcessConfig {
    pub fn load(l: &mut Loader<'_>) -> Self {
        let log_format = l.parse_or("FERROBASE_LOG_FORMAT", LogFormat::Json);
        let metrics_addr = match l.optional("FERROBASE_METRICS_ADDR").as_deref() {
            Some("off") => None,
            _ => Some(l.addr_or("FERROBASE_METRICS_ADDR", "0.0.0.0:9100")),
        };
        let shutdown_grace = l.millis_or("FERROBASE_SHUTDOWN_GRACE_MS", Duration::from_secs(10));
        Self {
            log_format,
            metrics_addr,
            shutdown_grace,
        }
    }
}

/// The project's JWT verification settings.
#[derive(Clone)]
pub struct JwtConfig {
    pub secret: SecretString,
    /// Optional JSON Web Key Set of public keys.
    pub jwks: Option<String>,
}

impl JwtConfig {
    /// The smallest secret accepted, as the Supabase tooling requires.
    pub const MIN_SECRET_LEN: usize = 32;

    pub fn load(l: &mut Loader<'_>) -> Self {
        use secrecy::ExposeSecret;
        let secret = l.required_secret("FERROBASE_JWT_SECRET");
        let len = secret.expose_secret().len();
        if len > 0 && len < Self::MIN_SECRET_LEN {
            l.invalid(
                "FERROBASE_JWT_SECRET",
                format!("must be at least {} characters long", Self::MIN_SECRET_LEN),
            );
        }
        let jwks = l.optional("FERROBASE_JWT_JWKS");
        Self { secret, jwks }
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("jwks", &self.jwks.is_some())
            .finish_non_exhaustive()
    }
}

/// The cores this process may use (2 when that cannot be told).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Connection settings for PostgreSQL.
#[derive(Clone)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub pool_size: usize,
}

/// The pool size a service gets unless it sets its own default or
/// `FERROBASE_DB_POOL_SIZE` is given: `2 × cores + 2`.
pub fn default_pool_size() -> usize {
    cores() * 2 + 2
}

impl DatabaseConfig {
    /// Reads the URL and the pool size, `default_pool` unless
    /// `FERROBASE_DB_POOL_SIZE` is set.
    pub fn load(l: &mut Loader<'_>, default_pool: usize) -> Self {
        let url = l.required_secret("FERROBASE_DB_URL");
        let pool_size = l.parse_or("FERROBASE_DB_POOL_SIZE", default_pool);
        if pool_size == 0 {
            l.invalid("FERROBASE_DB_POOL_SIZE", "must be at least 1");
        }
        Self { url, pool_size }
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// What every gRPC service reads: where to listen, the database, the JWT keys.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub grpc_addr: SocketAddr,
    pub database: DatabaseConfig,
    pub jwt: JwtConfig,
    pub process: ProcessConfig,
}

impl ServiceConfig {
    /// The common settings, with [`default_pool_size`] connections.
    pub fn load(l: &mut Loader<'_>) -> Self {
        Self::load_with_pool(l, default_pool_size())
    }

    /// The common settings, with `default_pool` connections unless
    /// `FERROBASE_DB_POOL_SIZE` says otherwise.
    pub fn load_with_pool(l: &mut Loader<'_>, default_pool: usize) -> Self {
        Self {
            grpc_addr: l.addr_or("FERROBASE_GRPC_ADDR", "0.0.0.0:50051"),
            database: DatabaseConfig::load(l, default_pool),
            jwt: JwtConfig::load(l),
            process: ProcessConfig::load(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_missing_variable() {
        let env = Env::from_pairs([("FERROBASE_DB_POOL_SIZE", "many")]);
        let mut l = Loader::new(&env);
        let _ = ServiceConfig::load(&mut l);
        let err = l.finish(()).unwrap_err().to_string();
        assert!(err.contains("FERROBASE_DB_URL is required"), "{err}");
        assert!(err.contains("FERROBASE_JWT_SECRET is required"), "{err}");
        assert!(err.contains("FERROBASE_DB_POOL_SIZE is invalid"), "{err}");
    }

    #[test]
    fn short_secret_is_refused_and_not_printed() {
        let env = Env::from_pairs([("FERROBASE_JWT_SECRET", "tooshort-secret-value")]);
        let mut l = Loader::new(&env);
        let jwt = JwtConfig::load(&mut l);
        assert!(!format!("{jwt:?}").contains("tooshort"));
        let err = l.finish(()).unwrap_err().to_string();
        assert!(err.contains("at least 32"), "{err}");
        assert!(!err.contains("tooshort"), "{err}");
    }

    #[test]
    fn defaults_apply_and_metrics_can_be_off() {
        let env = Env::from_pairs([
            ("FERROBASE_DB_URL", "postgres://localhost/db"),
            ("FERROBASE_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("FERROBASE_METRICS_ADDR", "off"),
        ]);
        let mut l = Loader::new(&env);
        let cfg = ServiceConfig::load(&mut l);
        let cfg = l.finish(cfg).unwrap();
        assert_eq!(cfg.grpc_addr.port(), 50051);
        assert_eq!(cfg.process.metrics_addr, None);
        assert_eq!(cfg.process.log_format, LogFormat::Json);
        assert!(!format!("{cfg:?}").contains("postgres://"));
    }
}
