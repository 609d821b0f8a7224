//! Running one request's statements: a transaction as the caller's role, with
//! the claims and request GUCs set, pipelined with the main statement so a
//! read costs one round trip.

use bytes::BytesMut;
use deadpool_postgres::Pool;
use tokio_postgres::Row;
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

use crate::api::ApiError;
use crate::error::from_pg;
use crate::plan::Params;

/// A parameter sent as text whatever its type: the server parses it with the
/// type's input function, so bad values fail as PostgreSQL would (`22P02`).
#[derive(Debug)]
pub struct TextParam<'a>(pub Option<&'a str>);

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            None => Ok(IsNull::Yes),
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// The transaction-local settings of one request.
#[derive(Debug, Clone)]
pub struct Settings {
    pub search_path: String,
    pub role: String,
    pub claims: String,
    pub method: String,
    pub path: String,
    pub headers: String,
    pub cookies: String,
    pub statement_timeout: Option<String>,
    pub timezone: Option<String>,
    /// Whether the role is the anonymous one (a 42501 is then 401, not 403).
    pub anon: bool,
    /// The impersonated role's own settings (`ALTER ROLE anon SET ...`), a JSON object.
    pub role_settings: String,
}

impl Settings {
    /// The statement applying these settings, and its values. The parts for
    /// the role's own settings, a statement timeout and a time zone are only
    /// there when there is something to set, so the common request runs the
    /// smallest statement (each variant is prepared once per connection).
    fn statement(&self) -> (String, Vec<TextParam<'_>>) {
        let mut sql = String::from(SET_SQL);
        let mut params: Vec<TextParam<'_>> = [
            self.search_path.as_str(),
            self.role.as_str(),
            self.claims.as_str(),
            self.method.as_str(),
            self.path.as_str(),
            self.headers.as_str(),
            self.cookies.as_str(),
        ]
        .into_iter()
        .map(|v| TextParam(Some(v)))
        .collect();
        let role_settings = self.role_settings.trim();
        if !role_settings.is_empty() && role_settings != "{}" {
            params.push(TextParam(Some(role_settings)));
            sql.push_str(&format!(
                ", (select count(set_config(key, value, true)) from json_each_text(${}::json))",
                params.len()
            ));
        }
        for (name, value) in [
            ("statement_timeout", &self.statement_timeout),
            ("timezone", &self.timezone),
        ] {
            if let Some(v) = value {
                params.push(TextParam(Some(v.as_str())));
                sql.push_str(&format!(", set_config('{name}', ${}, true)", params.len()));
            }
        }
        (sql, params)
    }
}

// The role must be one `authenticator` may switch to; any other existing role
// (a superuser, say) is replaced by a name that fails as an unknown role does.
// `to_regrole` of the quoted name finds the role by its exact name (or null).
const SET_SQL: &str = "select set_config('search_path', $1, true), \
     set_config('role', case when to_regrole(quote_ident($2)) is null \
       or pg_catalog.pg_has_role('authenticator', to_regrole(quote_ident($2))::oid, 'member') \
       then $2 else 'ferrobase: role not allowed' end, true), \
     set_config('request.jwt.claims', $3, true), set_config('request.method', $4, true), \
     set_config('request.path', $5, true), set_config('request.headers', $6, true), \
     set_config('request.cookies', $7, true)";

/// Most values one statement binds (PostgreSQL's protocol allows 65535).
const MAX_PARAMS: usize = 10_000;

/// Statements a connection keeps prepared before its cache is emptied.
const MAX_CACHED_STATEMENTS: usize = 512;

/// What the main statement of a request returns (one row).
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub total: Option<i64>,
    pub page_total: i64,
    pub body: String,
    pub response_headers: Option<String>,
    pub response_status: Option<String>,
    pub location: Option<String>,
    pub inserted: Option<i64>,
    /// `EXPLAIN` row estimate, when asked for.
    pub planned: Option<i64>,
}

impl Outcome {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            total: row.try_get(0)?,
            page_total: row.try_get::<_, Option<i64>>(1)?.unwrap_or(0),
            body: row.try_get::<_, Option<String>>(2)?.unwrap_or_default(),
            response_headers: row
                .try_get::<_, Option<String>>(3)?
                .filter(|s| !s.is_empty()),
            response_status: row
                .try_get::<_, Option<String>>(4)?
                .filter(|s| !s.is_empty()),
            location: row.try_get(5)?,
            inserted: row.try_get(6)?,
            planned: None,
        })
    }
}

/// Whether the transaction is read only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

fn as_params(p: &Params) -> Vec<TextParam<'_>> {
    p.values.iter().map(|v| TextParam(v.as_deref())).collect()
}

fn dyn_params<'a>(p: &'a [TextParam<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    p.iter().map(|x| x as &(dyn ToSql + Sync)).collect()
}

fn planned_rows(rows: &[Row]) -> Option<i64> {
    let v: serde_json::Value = rows.first()?.try_get(0).ok()?;
    v.get(0)?
        .get("Plan")?
        .get("Plan Rows")?
        .as_f64()
        .map(|f| f as i64)
}

/// Runs `sql` in a transaction as described by `settings`; `decide` says
/// whether to commit (writes only: reads always end with the pipeline).
pub async fn run(
    pool: &Pool,
    settings: &Settings,
    access: Access,
    sql: &str,
    params: &Params,
    explain: Option<(&str, &Params)>,
    decide: impl FnOnce(&Outcome) -> Result<bool, ApiError>,
) -> Result<Outcome, ApiError> {
    let anon = settings.anon;
    if params.values.len() > MAX_PARAMS {
        return Err(ApiError::new(
            400,
            "PGRST100",
            format!(
                "The request uses more than {MAX_PARAMS} values; combine them, e.g. with in.(...)"
            ),
        ));
    }
    let client = pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Timeout(_) => ApiError::new(
            504,
            "PGRST003",
            "Timed out acquiring connection from connection pool.",
        ),
        deadpool_postgres::PoolError::Backend(e) => from_pg(&e, anon),
        other => {
            tracing::warn!(error = %other, "database pool failed");
            ApiError::new(
                503,
                "PGRST001",
                "Database client error. Retrying the connection.",
            )
        }
    })?;
    if client.statement_cache.size() > MAX_CACHED_STATEMENTS {
        client.statement_cache.clear();
    }
    let (set_sql, set_params) = settings.statement();
    let set = client
        .prepare_cached(&set_sql)
        .await
        .map_err(|e| from_pg(&e, anon))?;
    let set_dyn = dyn_params(&set_params);
    let main_params = as_params(params);
    let main_dyn = dyn_params(&main_params);
    let begin = match access {
        Access::ReadOnly => "begin isolation level read committed read only",
        Access::ReadWrite => "begin isolation level read committed read write",
    };
    let explain_params = explain.map(|(_, p)| as_params(p));
    let explain_dyn = explain_params.as_deref().map(dyn_params);
    let client_ref = &**client;
    // A read-only transaction ends in the same pipeline, but only once every
    // statement before it has been sent: a statement not yet prepared waits
    // for its parse, and must still run inside the transaction.
    let (main_sent, main_sent_rx) = tokio::sync::oneshot::channel::<()>();
    let (explain_sent, explain_sent_rx) = tokio::sync::oneshot::channel::<()>();
    let (began, was_set, main, planned, ended) = futures::join!(
        client_ref.batch_execute(begin),
        client_ref.query(&set, &set_dyn),
        async {
            let st = client.prepare_cached(sql).await;
            let st = match st {
                Ok(st) => st,
                Err(e) => {
                    let _ = main_sent.send(());
                    return Err(e);
                }
            };
            send_then_wait(client_ref.query(&st, &main_dyn), main_sent).await
        },
        async {
            match (explain, explain_dyn.as_deref()) {
                (Some((esql, _)), Some(p)) => {
                    let st = match client_ref.prepare(esql).await {
                        Ok(st) => st,
                        Err(e) => {
                            let _ = explain_sent.send(());
                            return Err(e);
                        }
                    };
                    send_then_wait(client_ref.query(&st, p), explain_sent)
                        .await
                        .map(Some)
                }
                _ => {
                    let _ = explain_sent.send(());
                    Ok(None)
                }
            }
        },
        async {
            if access != Access::ReadOnly {
                return None;
            }
            let _ = main_sent_rx.await;
            let _ = explain_sent_rx.await;
            Some(client_ref.batch_execute("commit").await)
        },
    );
    let result = (|| {
        began.map_err(|e| from_pg(&e, anon))?;
        was_set.map_err(|e| from_pg(&e, anon))?;
        let rows = main.map_err(|e| from_pg(&e, anon))?;
        let planned = planned.map_err(|e| from_pg(&e, anon))?;
        let row = rows
            .first()
            .ok_or_else(|| ApiError::internal("the main statement returned no row"))?;
        let mut outcome = Outcome::from_row(row).map_err(ApiError::internal)?;
        outcome.planned = planned.as_deref().and_then(planned_rows);
        Ok(outcome)
    })();
    let commit = match &result {
        Ok(outcome) => decide(outcome),
        Err(_) => Ok(false),
    };
    let end = if matches!(commit, Ok(true)) {
        "commit"
    } else {
        "rollback"
    };
    let ended = match ended {
        Some(done) => done,
        None => client_ref.batch_execute(end).await,
    };
    if let Err(e) = ended
        && result.is_ok()
        && commit.is_ok()
    {
        return Err(from_pg(&e, anon));
    }
    let outcome = result?;
    commit?;
    Ok(outcome)
}

/// Polls `query` once, which writes its messages to the connection, signals
/// `sent`, then waits for the answer.
async fn send_then_wait<F, T>(query: F, sent: tokio::sync::oneshot::Sender<()>) -> T
where
    F: std::future::Future<Output = T>,
{
    let mut query = std::pin::pin!(query);
    let first = futures::poll!(query.as_mut());
    let _ = sent.send(());
    match first {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => query.await,
    }
}

/// Runs `sql` (returning text rows) in a transaction that is always rolled back.
pub async fn run_rows(
    pool: &Pool,
    settings: &Settings,
    sql: &str,
    params: &Params,
) -> Result<Vec<String>, ApiError> {
    let anon = settings.anon;
    if params.values.len() > MAX_PARAMS {
        return Err(ApiError::new(
            400,
            "PGRST100",
            format!(
                "The request uses more than {MAX_PARAMS} values; combine them, e.g. with in.(...)"
            ),
        ));
    }
    let client = pool.get().await.map_err(|_| {
        ApiError::new(
            504,
            "PGRST003",
            "Timed out acquiring connection from connection pool.",
        )
    })?;
    let (set_sql, set_params) = settings.statement();
    let set = client
        .prepare_cached(&set_sql)
        .await
        .map_err(|e| from_pg(&e, anon))?;
    let set_dyn = dyn_params(&set_params);
    let main_params = as_params(params);
    let main_dyn = dyn_params(&main_params);
    let c = &**client;
    let (began, was_set, main) =
        futures::join!(c.batch_execute("begin"), c.query(&set, &set_dyn), async {
            let st = c.prepare(sql).await?;
            c.query(&st, &main_dyn).await
        },);
    let _ = c.batch_execute("rollback").await;
    began.map_err(|e| from_pg(&e, anon))?;
    was_set.map_err(|e| from_pg(&e, anon))?;
    let rows = main.map_err(|e| from_pg(&e, anon))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            r.try_get::<_, String>(0).ok().or_else(|| {
                r.try_get::<_, serde_json::Value>(0)
                    .ok()
                    .map(|v| v.to_string())
            })
        })
        .collect())
}
