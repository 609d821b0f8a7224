//! The rest service's configuration (see `docs/configuration.md`).

use std::time::Duration;

use ferrobase_common::config::{ConfigErrors, Env, Loader, ServiceConfig};

/// Everything the rest service needs to start.
#[derive(Debug, Clone)]
pub struct RestConfig {
    pub service: ServiceConfig,
    /// Exposed schemas; the first is the default profile.
    pub schemas: Vec<String>,
    /// Largest number of rows a read returns (the count is not capped).
    pub max_rows: Option<u64>,
    /// Schemas appended to `search_path` after the requested one.
    pub extra_search_path: Vec<String>,
    /// `statement_timeout` of each request's transaction; `None` keeps the role's.
    pub statement_timeout: Option<Duration>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Serving worker threads, each with its connections and its share of
    /// the request connection pool.
    pub workers: usize,
}

fn list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl RestConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigErrors> {
        let mut l = Loader::new(env);
        let service = ServiceConfig::load(&mut l);
        let schemas = list(
            &l.optional("FERROBASE_REST_SCHEMAS")
                .unwrap_or_else(|| "public".into()),
        );
        if schemas.is_empty() {
            l.invalid("FERROBASE_REST_SCHEMAS", "must name at least one schema");
        }
        let max_rows = l.parse_optional::<u64>("FERROBASE_REST_MAX_ROWS");
        let extra_search_path = list(
            &l.optional("FERROBASE_REST_EXTRA_SEARCH_PATH")
                .unwrap_or_else(|| "public, extensions".into()),
        );
        let statement_timeout = l
            .parse_optional::<u64>("FERROBASE_REST_STATEMENT_TIMEOUT_MS")
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        let max_body_bytes = l.parse_or("FERROBASE_REST_MAX_BODY_BYTES", 10 * 1024 * 1024usize);
        let workers = l.workers();
        let config = Self {
            service,
            schemas,
            max_rows,
            extra_search_path,
            statement_timeout,
            max_body_bytes,
            workers,
        };
        l.finish(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Env {
        Env::from_pairs([
            ("FERROBASE_DB_URL", "postgres://localhost/db"),
            ("FERROBASE_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ])
    }

    #[test]
    fn defaults() {
        let c = RestConfig::from_env(&base()).unwrap();
        assert_eq!(c.schemas, vec!["public"]);
        assert_eq!(c.extra_search_path, vec!["public", "extensions"]);
        assert_eq!(c.max_rows, None);
        assert_eq!(c.statement_timeout, None);
        assert!(c.workers >= 1);
    }

    #[test]
    fn parses_lists_and_rejects_bad_numbers() {
        let env = base()
            .with("FERROBASE_REST_SCHEMAS", " public , personal ")
            .with("FERROBASE_REST_MAX_ROWS", "1000")
            .with("FERROBASE_REST_STATEMENT_TIMEOUT_MS", "2500")
            .with("FERROBASE_WORKERS", "3");
        let c = RestConfig::from_env(&env).unwrap();
        assert_eq!(c.schemas, vec!["public", "personal"]);
        assert_eq!(c.max_rows, Some(1000));
        assert_eq!(c.statement_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.workers, 3);
        let err = RestConfig::from_env(&base().with("FERROBASE_REST_MAX_ROWS", "lots"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("FERROBASE_REST_MAX_ROWS"), "{err}");
    }
}
