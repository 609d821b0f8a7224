//! The PostgreSQL connection pool.

use std::str::FromStr as _;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::ExposeSecret as _;
use tokio_postgres::NoTls;

use crate::config::DatabaseConfig;

/// Builds a pool for `config`; connections open lazily on first use.
pub fn pool(config: &DatabaseConfig, application_name: &str) -> anyhow::Result<Pool> {
    let mut pg = tokio_postgres::Config::from_str(config.url.expose_secret())
        .map_err(|e| anyhow::anyhow!("FERROBASE_DB_URL is not a valid PostgreSQL URL: {e}"))?;
    if pg.get_application_name().is_none() {
        pg.application_name(application_name);
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(std::time::Duration::from_secs(10)))
        .create_timeout(Some(std::time::Duration::from_secs(10)))
        .build()
        .map_err(|e| anyhow::anyhow!("building the database pool: {e}"))
}
