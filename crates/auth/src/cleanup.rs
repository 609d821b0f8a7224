//! Removing what no request can use any more, so the `auth` tables stay
//! bounded: rotated refresh tokens, sessions long past their end, PKCE flow
//! states, MFA challenges and factors never verified.
//!
//! Every replica runs the same pass on a timer. Each rule deletes a bounded
//! batch of rows chosen `for update skip locked`, so replicas and requests
//! never wait for each other, and a pass repeats a rule only while its
//! batches come back full. Rows are kept a day past the moment they became
//! useless (three days for sessions, whose tokens go first): long enough for
//! reuse detection, debugging and clocks that disagree.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::AuthConfig;
use crate::service::State;

/// Rows one statement of a rule removes at most.
const BATCH: i64 = 500;
/// Sessions one statement removes at most: each takes its refresh tokens and
/// `amr` claims along (foreign keys `on delete cascade`).
const SESSION_BATCH: i64 = 50;
/// Batches one rule runs at most per pass; the rest waits for the next pass.
const MAX_BATCHES: usize = 20;

/// One cleanup rule: a description for logs and a statement deleting at most
/// `batch` rows.
struct Rule {
    what: &'static str,
    sql: String,
    batch: i64,
}

/// The rules for `config`: the fixed ones, then those of the session limits
/// it sets.
fn rules(config: &AuthConfig) -> Vec<Rule> {
    let delete = |what: &'static str, table: &str, chosen: &str| Rule {
        what,
        sql: format!(
            "delete from auth.{table} where id in \
             (select id from auth.{table} where {chosen} limit $1 for update skip locked)"
        ),
        batch: if table == "sessions" {
            SESSION_BATCH
        } else {
            BATCH
        },
    };
    let mut rules = vec![
        delete(
            "refresh tokens revoked over a day ago",
            "refresh_tokens",
            "revoked and updated_at < now() - interval '24 hours'",
        ),
        delete(
            "sessions ended over three days ago",
            "sessions",
            "not_after < now() - interval '72 hours'",
        ),
        delete(
            "PKCE flow states over a day old",
            "flow_state",
            "created_at < now() - interval '24 hours'",
        ),
        delete(
            "MFA challenges over a day old",
            "mfa_challenges",
            "created_at < now() - interval '24 hours'",
        ),
        delete(
            "MFA factors left unverified for over a day",
            "mfa_factors",
            "status = 'unverified' and created_at < now() - interval '24 hours'",
        ),
    ];
    if let Some(timebox) = config.sessions_timebox {
        rules.push(delete(
            "sessions past their timebox by over a day",
            "sessions",
            &format!(
                "created_at + make_interval(secs => {}) < now() - interval '24 hours'",
                timebox.as_secs()
            ),
        ));
    }
    if let Some(idle) = config.sessions_inactivity_timeout {
        // The same last activity the refresh checks: the last refresh, or the
        // session's start when it was never refreshed.
        rules.push(delete(
            "sessions idle past the inactivity timeout by over a day",
            "sessions",
            &format!(
                "coalesce(refreshed_at at time zone 'utc', created_at) \
                 + make_interval(secs => {}) < now() - interval '24 hours'",
                idle.as_secs()
            ),
        ));
    }
    rules
}

/// Runs every rule once, each until a batch comes back short or
/// [`MAX_BATCHES`] ran. Answers how many rows went.
async fn run_once(pool: &deadpool_postgres::Pool, rules: &[Rule]) -> anyhow::Result<u64> {
    let client = pool
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the database: {e}"))?;
    let mut removed = 0;
    for rule in rules {
        for _ in 0..MAX_BATCHES {
            let n = client
                .execute(&rule.sql, &[&rule.batch])
                .await
                .map_err(|e| anyhow::anyhow!("removing {}: {e}", rule.what))?;
            removed += n;
            if n > 0 {
                tracing::debug!(rows = n, what = rule.what, "removed stale auth rows");
            }
            if n < rule.batch.unsigned_abs() {
                break;
            }
        }
    }
    Ok(removed)
}

/// Runs [`run_once`] every `every`, the first right away, until `stop` is
/// cancelled. A failed pass is logged and tried again at the next tick.
pub async fn run_every(every: Duration, state: Arc<State>, stop: CancellationToken) {
    let rules = rules(&state.config);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match run_once(state.pool.here(), &rules).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "removed stale auth rows"),
            Err(e) => tracing::warn!(error = %e, "auth cleanup pass failed"),
        }
    }
}
