//! The refresh ceiling of `bench auth`: what PostgreSQL alone makes of the
//! statement one common refresh sends (`ferrobase_auth::tokens`), each pgbench
//! client chaining its own session's tokens as each HTTP worker does.
//!
//! Client `c`'s `n`-th transaction rotates the token stored as `bench-c-(n-1)`
//! into `bench-c-n`: the auth service's own statement with its parameters
//! written in (the stack's instance, no idle limit, audited, from 127.0.0.1).
//! The chains start from live tokens the HTTP phases left, renamed; afterwards
//! the rows are counted, so a chain that broke (and then rotated nothing,
//! cheaply) cannot pass for throughput.

use serde_json::{Value, json};

use super::Watched;
use super::rest::{pgbench, tempfile_with};

/// The pgbench script of one chained refresh.
pub fn script() -> anyhow::Result<String> {
    let sql = ferrobase_auth::tokens::refresh_statement()
        .replace("$1", "('bench-' || :client_id || '-' || :prev)")
        .replace(
            "$2",
            &format!("'{}'::uuid", ferrobase_auth::models::INSTANCE_ID),
        )
        .replace("$3", "('bench-' || :client_id || '-' || :n)")
        .replace("$4", "null")
        .replace("$5", "true")
        .replace("$6", "'127.0.0.1'");
    anyhow::ensure!(
        !sql.contains('$'),
        "the refresh statement has a parameter the ceiling does not fill: {sql}"
    );
    // `n` starts at 0 for every client (`-D n=0`) and keeps its value from
    // one transaction to the next.
    Ok(format!("\\set prev :n\n\\set n :n + 1\n{sql};\n"))
}

/// The auth tables the refresh and `GET /user` phases read and write.
const AUTH_TABLES: &str = "auth.refresh_tokens, auth.sessions, auth.users, auth.identities, \
    auth.mfa_factors, auth.mfa_amr_claims, auth.audit_log_entries";

/// Vacuums and analyzes the auth tables, as pgbench vacuums its own before a
/// run: each database-bound phase, and the ceiling, then starts from tables
/// without the dead rows of the phase before, instead of depending on whether
/// an autovacuum pass falls into its window (one that did cost a run about a
/// fifth of its refreshes).
pub async fn vacuum(db_url: &str) -> anyhow::Result<()> {
    let (db, connection) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(connection);
    db.batch_execute(&format!("vacuum (analyze) {AUTH_TABLES}"))
        .await?;
    drop(db);
    let _ = task.await;
    Ok(())
}

/// Runs the ceiling for `clients` chains over `seconds` and checks every
/// reported transaction rotated a token.
pub async fn measure(
    pgbench_bin: &str,
    db_url: &str,
    clients: usize,
    seconds: u64,
    postgres: Option<&Watched>,
) -> anyhow::Result<Value> {
    let (db, connection) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let seeded = db
        .execute(
            "with live as (
               select id, row_number() over (order by id) - 1 as client
               from auth.refresh_tokens
               where revoked is not true and token not like 'bench-%'
               order by id limit $1)
             update auth.refresh_tokens r set token = 'bench-' || live.client || '-0'
             from live where r.id = live.id",
            &[&(clients as i64)],
        )
        .await?;
    anyhow::ensure!(
        seeded == clients as u64,
        "only {seeded} live refresh tokens to start {clients} chains from"
    );
    let script = tempfile_with(&script()?)?;
    let args: Vec<String> = [
        "-n",
        "-M",
        "prepared",
        "-D",
        "n=0",
        "-c",
        &clients.to_string(),
        "-j",
        "2",
        "-T",
        &seconds.to_string(),
        "-f",
        &script.path,
        db_url,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let shown = format!(
        "pgbench -n -M prepared -D n=0 -c {clients} -j 2 -T {seconds} -f <refresh.sql> <database as postgres>"
    );
    let before = postgres.and_then(Watched::ticks);
    let bin = pgbench_bin.to_owned();
    let run = tokio::task::spawn_blocking(move || pgbench(&bin, &args, &shown)).await??;
    let after = postgres.and_then(Watched::ticks);
    let text = std::fs::read_to_string(&script.path)?;
    drop(script);
    let counted = db
        .query_one(
            "select count(*) filter (where token like 'bench-%'),
                    count(*) filter (where token like 'bench-%' and revoked is not true)
             from auth.refresh_tokens",
            &[],
        )
        .await?;
    let (rows, live): (i64, i64) = (counted.get(0), counted.get(1));
    let rotations = (rows - clients as i64).max(0) as u64;
    let transactions = run.transactions.unwrap_or(0);
    anyhow::ensure!(
        rotations == transactions && live == clients as i64 && run.failed.unwrap_or(0) == 0,
        "the refresh ceiling is not trustworthy: pgbench reported {transactions} transactions \
         ({} failed) but {rotations} tokens were rotated and {live} chains are live",
        run.failed.unwrap_or(0)
    );
    let postgres_us = before
        .zip(after)
        .map(|(b, a)| (a.saturating_sub(b) as f64 / super::TICKS_PER_SECOND) * 1e6)
        .map(|us| (us / transactions.max(1) as f64 * 10.0).round() / 10.0);
    let mut report = run.json();
    report["rotations_counted"] = json!(rotations);
    report["postgres_us_per_refresh"] = json!(postgres_us);
    report["script"] = json!(text);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_fills_every_parameter_and_chains_per_client() {
        let s = script().unwrap_or_else(|e| panic!("{e}"));
        assert!(s.starts_with("\\set prev :n\n\\set n :n + 1\n"));
        assert!(s.contains("where t.token = ('bench-' || :client_id || '-' || :prev)"));
        assert!(s.contains("('bench-' || :client_id || '-' || :n)"));
        assert!(!s.contains('$'));
        assert!(s.trim_end().ends_with(';'));
    }
}
