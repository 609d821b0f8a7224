//! Running one request's statements: a transaction as the caller's role, with
//! the claims and request GUCs set, sent as one pipeline with the main
//! statement ([`crate::pg`]) so a read costs one round trip.

use bytes::BytesMut;
use deadpool_postgres::Pool;
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

use crate::api::ApiError;
use crate::error::{connection_failed, from_conn, from_db, from_pg};
use crate::pg::{self, Answer, Row, Statement, TxStatus};
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
    fn statement(&self, access: Access) -> (String, Vec<Option<&str>>) {
        let mut sql = String::from(SET_SQL);
        if access == Access::ReadOnly {
            sql.push_str(", set_config('transaction_read_only', 'on', true)");
        }
        let mut params: Vec<Option<&str>> = [
            self.search_path.as_str(),
            self.role.as_str(),
            self.claims.as_str(),
            self.method.as_str(),
            self.path.as_str(),
            self.headers.as_str(),
            self.cookies.as_str(),
        ]
        .into_iter()
        .map(Some)
        .collect();
        let role_settings = self.role_settings.trim();
        if !role_settings.is_empty() && role_settings != "{}" {
            params.push(Some(role_settings));
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
                params.push(Some(v.as_str()));
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
    fn from_row(row: &Row) -> Result<Self, String> {
        let text = |i: usize| row.text(i).filter(|s| !s.is_empty()).map(str::to_owned);
        Ok(Self {
            total: row.int8(0)?,
            page_total: row.int8(1)?.unwrap_or(0),
            body: row.text(2).unwrap_or_default().to_owned(),
            response_headers: text(3),
            response_status: text(4),
            location: row.text(5).map(str::to_owned),
            inserted: row.int8(6)?,
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

fn text_params(p: &Params) -> Vec<Option<&str>> {
    p.values.iter().map(Option::as_deref).collect()
}

/// The row estimate of an `EXPLAIN (FORMAT JSON)` answer.
fn planned_rows(rows: &[Row]) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(rows.first()?.text(0)?).ok()?;
    v.get(0)?
        .get("Plan")?
        .get("Plan Rows")?
        .as_f64()
        .map(|f| f as i64)
}

fn too_many_values(params: &Params) -> Option<ApiError> {
    (params.values.len() > MAX_PARAMS).then(|| {
        ApiError::new(
            400,
            "PGRST100",
            format!(
                "The request uses more than {MAX_PARAMS} values; combine them, e.g. with in.(...)"
            ),
        )
    })
}

/// The rows of a statement that ran, or its error.
fn rows_of(answer: Option<&Answer>, anon: bool) -> Result<&[Row], ApiError> {
    match answer {
        Some(Answer::Rows(rows)) => Ok(rows),
        Some(Answer::Failed(e)) => Err(from_db(e, anon)),
        Some(Answer::Skipped) | None => Err(ApiError::internal("a statement was not run")),
    }
}

/// Decides from a statement's outcome whether to commit, or refuses the outcome.
pub type Decide<'a> = Box<dyn FnOnce(&Outcome) -> Result<bool, ApiError> + Send + 'a>;

/// How a request's transaction ends.
pub enum End<'a> {
    /// Commit (`true`) or roll back whatever the outcome, known before the
    /// statement runs: the end travels in the statement's pipeline.
    Known(bool),
    /// Commit or not as the outcome says (or refuse it): a write's end then
    /// costs a second round trip.
    Decided(Decide<'a>),
}

/// Runs `sql` in a transaction as described by `settings`, ended as `end` says.
///
/// A read sends everything in one pipeline: the settings (read only among
/// them), `sql` and the `EXPLAIN` of `explain` (for planned counts), which
/// run as one transaction that the pipeline's end commits; a failing
/// statement makes the server skip the rest and roll the transaction back.
/// An [`End::Decided`] read can still refuse the answer, but a read changed
/// nothing. A write pipelines `BEGIN`, the settings and `sql`, then its
/// `COMMIT` or `ROLLBACK`: in the same pipeline when the end is
/// [`End::Known`], after the outcome is checked when it is [`End::Decided`].
pub async fn run(
    pool: &pg::Pool,
    settings: &Settings,
    access: Access,
    sql: &str,
    params: &Params,
    explain: Option<(&str, &Params)>,
    end: End<'_>,
) -> Result<Outcome, ApiError> {
    let anon = settings.anon;
    if let Some(e) = too_many_values(params) {
        return Err(e);
    }
    let mut conn = pool.get().await.map_err(|e| match e {
        pg::PoolError::Timeout(_) => ApiError::new(
            504,
            "PGRST003",
            "Timed out acquiring connection from connection pool.",
        ),
        pg::PoolError::Backend(e) => from_conn(&e, anon),
        other => {
            tracing::warn!(error = %other, "database pool failed");
            connection_failed()
        }
    })?;
    let (set_sql, set_params) = settings.statement(access);
    let main_params = text_params(params);
    let explain_params = explain.map(|(_, p)| text_params(p));
    let read_only = access == Access::ReadOnly;
    // A read runs in the implicit transaction of its pipeline, which the
    // `Sync` ends; the settings make it read only, and every connection starts
    // with read committed as its default isolation (see `pg`).
    let mut statements = Vec::with_capacity(4);
    if !read_only {
        statements.push(Statement::cached(
            "begin isolation level read committed read write",
            &[],
        ));
    }
    statements.push(Statement::cached(&set_sql, &set_params));
    statements.push(Statement::cached(sql, &main_params));
    if let (Some((esql, _)), Some(p)) = (explain, explain_params.as_deref()) {
        statements.push(Statement::once(esql, p));
    }
    let known = match end {
        End::Known(commit) => Some(commit),
        End::Decided(_) => None,
    };
    if let (false, Some(commit)) = (read_only, known) {
        statements.push(Statement::cached(
            if commit { "commit" } else { "rollback" },
            &[],
        ));
    }
    let answers = conn
        .pipeline(&statements)
        .await
        .map_err(|e| from_conn(&e, anon))?;
    let result = (|| {
        // The first error is the one to answer; every statement after it was skipped.
        if let Some(Answer::Failed(e)) = answers.iter().find(|a| matches!(a, Answer::Failed(_))) {
            return Err(from_db(e, anon));
        }
        let main = if read_only { 1 } else { 2 };
        let rows = rows_of(answers.get(main), anon)?;
        let planned = match explain {
            Some(_) => planned_rows(rows_of(answers.get(main + 1), anon)?),
            None => None,
        };
        let row = rows
            .first()
            .ok_or_else(|| ApiError::internal("the main statement returned no row"))?;
        let mut outcome = Outcome::from_row(row).map_err(ApiError::internal)?;
        outcome.planned = planned;
        Ok(outcome)
    })();
    let commit = match (&result, end) {
        (Err(_), _) => Ok(false),
        (Ok(outcome), End::Decided(decide)) => decide(outcome),
        (Ok(_), End::Known(commit)) => Ok(commit),
    };
    // A decided write's transaction is still open; so is any transaction a
    // failed statement left behind, or one a read's statements left (a
    // function cannot, but nothing is assumed).
    let ended = read_only || known.is_some();
    if !ended || conn.status() != TxStatus::Idle {
        let last = if !ended && matches!(commit, Ok(true)) {
            "commit"
        } else {
            "rollback"
        };
        let closed = conn
            .pipeline(&[Statement::cached(last, &[])])
            .await
            .map_err(|e| from_conn(&e, anon))
            .and_then(|answers| rows_of(answers.first(), anon).map(|_| ()));
        if let Err(e) = closed
            && result.is_ok()
            && commit.is_ok()
        {
            return Err(e);
        }
    }
    let outcome = result?;
    commit?;
    Ok(outcome)
}

/// Runs `sql` (returning text rows) in a transaction that is always rolled back.
pub async fn run_rows(
    pool: &Pool,
    settings: &Settings,
    sql: &str,
    params: &Params,
) -> Result<Vec<String>, ApiError> {
    let anon = settings.anon;
    if let Some(e) = too_many_values(params) {
        return Err(e);
    }
    let client = pool.get().await.map_err(|_| {
        ApiError::new(
            504,
            "PGRST003",
            "Timed out acquiring connection from connection pool.",
        )
    })?;
    let (set_sql, set_params) = settings.statement(Access::ReadWrite);
    let set = client
        .prepare_cached(&set_sql)
        .await
        .map_err(|e| from_pg(&e, anon))?;
    let set_params: Vec<TextParam<'_>> = set_params.into_iter().map(TextParam).collect();
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
