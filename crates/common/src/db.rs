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

/// Worker `index`'s share of `total` connections split among `workers`: sizes
/// differ by one at most (the first workers take the remainder), and every
/// worker gets at least one.
pub fn worker_share(total: usize, workers: usize, index: usize) -> usize {
    let workers = workers.max(1);
    (total / workers + usize::from(index < total % workers)).max(1)
}

/// A service's pool split among its serving worker threads
/// ([`crate::grpc::serve_on_workers`]): a request takes a connection of its own
/// worker's part, whose connection task runs on that worker's thread, so its
/// statements never wait on another thread; elsewhere the first part serves.
#[derive(Clone)]
pub struct WorkerPools {
    parts: std::sync::Arc<[Pool]>,
}

impl WorkerPools {
    /// Pools of `config.pool_size` connections in all, one per worker
    /// ([`worker_share`] each). They open connections on first use, so each
    /// connection's task runs on the worker that first needed it.
    pub fn new(
        config: &DatabaseConfig,
        application_name: &str,
        workers: usize,
    ) -> anyhow::Result<Self> {
        let workers = workers.max(1);
        let parts = (0..workers)
            .map(|i| {
                let part = DatabaseConfig {
                    pool_size: worker_share(config.pool_size, workers, i),
                    ..config.clone()
                };
                self::pool(&part, application_name)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            parts: parts.into(),
        })
    }

    /// A connection of the calling worker's part.
    pub async fn get(&self) -> Result<deadpool_postgres::Object, deadpool_postgres::PoolError> {
        self.here().get().await
    }

    /// The calling worker's part (the first one off the workers).
    pub fn here(&self) -> &Pool {
        let i = crate::grpc::current_worker().unwrap_or(0) % self.parts.len();
        &self.parts[i]
    }

    /// Closes every part.
    pub fn close(&self) {
        for part in self.parts.iter() {
            part.close();
        }
    }
}

/// A transaction on a pooled connection whose `BEGIN` and `COMMIT` travel in
/// the same network flight as the statements around them, instead of costing
/// a round trip each (tokio-postgres sends a statement when its future is
/// first polled, so futures joined in order are pipelined in that order).
///
/// The caller sends `BEGIN` joined with its first statement and `COMMIT`
/// joined after its last ones; when a statement before it fails, PostgreSQL
/// turns that `COMMIT` into a rollback. Every statement must already be
/// prepared (`prepare_cached` before `BEGIN`), or a statement could be sent
/// after the `COMMIT` queued behind it. A transaction dropped before
/// [`Self::finished`] (an early return, an error, a cancelled request) is
/// rolled back on a background task before its connection returns to the
/// pool; a connection whose rollback fails is closed instead of reused.
pub struct PipelinedTransaction {
    client: Option<deadpool_postgres::Object>,
}

impl PipelinedTransaction {
    /// Takes `client`, on which the caller is about to send `BEGIN`.
    pub fn new(client: deadpool_postgres::Object) -> Self {
        Self {
            client: Some(client),
        }
    }

    /// The connection, for the transaction's statements.
    pub fn client(&self) -> &deadpool_postgres::Object {
        // Only `finished` and `drop` take it, and both consume the value.
        self.client.as_ref().unwrap_or_else(|| unreachable!())
    }

    /// The caller's `COMMIT` (or `ROLLBACK`) succeeded: the connection is
    /// clean and goes back to the pool as it is.
    pub fn finished(mut self) {
        drop(self.client.take());
    }
}

impl Drop for PipelinedTransaction {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = client.batch_execute("ROLLBACK").await {
                        tracing::warn!(error = %e, "rolling back an abandoned transaction failed; closing its connection");
                        drop(deadpool_postgres::Object::take(client));
                    }
                });
            }
            Err(_) => drop(deadpool_postgres::Object::take(client)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::worker_share;

    #[test]
    fn shares_add_up_and_differ_by_one_at_most() {
        let shares: Vec<usize> = (0..4).map(|i| worker_share(10, 4, i)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        assert_eq!(worker_share(6, 2, 1), 3);
        assert_eq!(worker_share(1, 3, 2), 1, "every worker gets one");
        assert_eq!(worker_share(5, 0, 0), 5, "no workers count as one");
    }
}
