//! Schema migrations a service applies to the schema it owns, at start.
//!
//! Migrations are plain SQL, embedded in the binary, applied in version order,
//! each in its own transaction, under an advisory lock so replicas starting
//! together apply each one once. `<schema>.schema_migrations` records what ran.

use tokio_postgres::Client;

/// One migration: a version that sorts in order (e.g. `20240101000000`) and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: &'static str,
    pub sql: &'static str,
}

/// Applies every migration of `schema` not yet recorded; returns how many ran.
pub async fn apply(
    client: &mut Client,
    schema: &str,
    migrations: &[Migration],
) -> anyhow::Result<usize> {
    if !schema.chars().all(|c| c.is_ascii_lowercase() || c == '_') || schema.is_empty() {
        anyhow::bail!("invalid schema name {schema:?}");
    }
    let lock_key = lock_key(schema);
    client
        .execute("select pg_advisory_lock($1)", &[&lock_key])
        .await
        .map_err(|e| anyhow::anyhow!("taking the {schema} migration lock: {e}"))?;
    let result = apply_locked(client, schema, migrations).await;
    // Release even when a migration failed; the session ends soon anyway.
    let _ = client
        .execute("select pg_advisory_unlock($1)", &[&lock_key])
        .await;
    result
}

async fn apply_locked(
    client: &mut Client,
    schema: &str,
    migrations: &[Migration],
) -> anyhow::Result<usize> {
    client
        .batch_execute(&format!(
            "create schema if not exists {schema};
             create table if not exists {schema}.schema_migrations (
               version text primary key,
               applied_at timestamptz not null default now()
             );"
        ))
        .await
        .map_err(|e| anyhow::anyhow!("creating {schema}.schema_migrations: {e}"))?;
    let applied: Vec<String> = client
        .query(
            &format!("select version from {schema}.schema_migrations"),
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut ordered: Vec<&Migration> = migrations.iter().collect();
    ordered.sort_by_key(|m| m.version);
    let mut ran = 0;
    for m in ordered {
        if applied.iter().any(|v| v == m.version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(m.sql)
            .await
            .map_err(|e| anyhow::anyhow!("applying {schema} migration {}: {e}", m.version))?;
        tx.execute(
            &format!("insert into {schema}.schema_migrations (version) values ($1)"),
            &[&m.version],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(schema, version = m.version, "applied migration");
        ran += 1;
    }
    Ok(ran)
}

/// A stable advisory lock key per schema.
fn lock_key(schema: &str) -> i64 {
    // FNV-1a: stable across builds and platforms, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"ferrobase-migrations:".iter().chain(schema.as_bytes()) {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}
