//! Who may call: user routes and admin routes (reference section 2).

use deadpool_postgres::GenericClient;
use serde_json::Value;
use uuid::Uuid;

use crate::api::{ApiError, ApiRequest};
use crate::models::{self, User};
use crate::service::State;
use crate::tokens::ClientInfo;

/// A signed-in caller of a user route.
pub struct Caller {
    pub user: User,
    pub session_id: Option<Uuid>,
    pub claims: Value,
}

impl Caller {
    /// The `aal` claim of the caller's token.
    pub fn aal(&self) -> &str {
        self.claims
            .get("aal")
            .and_then(Value::as_str)
            .unwrap_or("aal1")
    }
}

fn no_authorization() -> ApiError {
    ApiError::new(
        401,
        "no_authorization",
        "This endpoint requires a valid Bearer token",
    )
}

fn bad_jwt(message: impl Into<String>) -> ApiError {
    ApiError::new(403, "bad_jwt", message)
}

fn has_bearer(req: &ApiRequest) -> bool {
    req.header("authorization").is_some_and(|v| {
        v.split_once(' ')
            .is_some_and(|(s, t)| s.eq_ignore_ascii_case("bearer") && !t.trim().is_empty())
    })
}

/// The verified claims of the caller's bearer, refusing a missing or bad one.
fn bearer_claims(req: &ApiRequest) -> Result<&Value, ApiError> {
    let ctx = req.ctx.as_ref().ok_or_else(no_authorization)?;
    if let Some(e) = &ctx.token_error {
        return Err(bad_jwt(format!(
            "invalid JWT: unable to parse or verify signature, {e}"
        )));
    }
    if ctx.subject.is_none() && !has_bearer(req) {
        return Err(no_authorization());
    }
    Ok(&ctx.claims)
}

fn session_claim(claims: &Value) -> Result<Option<Uuid>, ApiError> {
    match claims.get("session_id").and_then(Value::as_str) {
        None | Some("") => Ok(None),
        Some(s) => Uuid::parse_str(s)
            .map(Some)
            .map_err(|_| bad_jwt("invalid claim: session_id claim must be a UUID")),
    }
}

fn session_not_found() -> ApiError {
    ApiError::new(
        403,
        "session_not_found",
        "Session from session_id claim in JWT does not exist",
    )
}

async fn session_exists(
    state: &State,
    session: Uuid,
    user: Option<Uuid>,
) -> Result<bool, ApiError> {
    let db = state.pool.get().await?;
    session_live(&db, session, user).await
}

/// True when `session` exists (for `user`, when given) and has not ended.
async fn session_live(
    db: &impl GenericClient,
    session: Uuid,
    user: Option<Uuid>,
) -> Result<bool, ApiError> {
    let select = db
        .prepare_cached(
            "select exists(select 1 from auth.sessions where id = $1
               and ($2::uuid is null or user_id = $2)
               and (not_after is null or not_after > now()))",
        )
        .await?;
    Ok(db.query_one(&select, &[&session, &user]).await?.get(0))
}

/// Resolves the caller of a user route: a verified token naming a live user and session.
pub async fn require_user(state: &State, req: &ApiRequest) -> Result<Caller, ApiError> {
    let claims = bearer_claims(req)?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad_jwt("invalid claim: missing sub claim"))?;
    let id =
        Uuid::parse_str(sub).map_err(|_| bad_jwt("invalid claim: sub claim must be a UUID"))?;
    let session_id = session_claim(claims);
    let db = state.pool.get().await?;
    // The user and the session are read in one flight; errors keep their order.
    let (user, live) = tokio::try_join!(models::user_by_id(&db, id), async {
        match session_id {
            Ok(Some(s)) => session_live(&db, s, Some(id)).await,
            _ => Ok(true),
        }
    })?;
    let user = user.filter(|u| u.deleted_at.is_none()).ok_or_else(|| {
        ApiError::new(
            403,
            "user_not_found",
            "User from sub claim in JWT does not exist",
        )
    })?;
    drop(db);
    let session_id = session_id?;
    if !live {
        return Err(session_not_found());
    }
    if user.is_banned() {
        return Err(ApiError::new(403, "user_banned", "User is banned"));
    }
    Ok(Caller {
        user,
        session_id,
        claims: claims.clone(),
    })
}

/// True when the caller's role is an admin role.
pub fn is_admin(state: &State, req: &ApiRequest) -> bool {
    req.ctx
        .as_ref()
        .is_some_and(|c| c.token_error.is_none() && state.config.admin_roles.contains(&c.role))
}

/// Admits only admin roles (`/admin/*`, `/invite`). The gateway's context
/// stands for the bearer; without an `Authorization` header it is the API
/// key's, so a service_role key alone is enough, as behind Kong.
pub async fn require_admin(state: &State, req: &ApiRequest) -> Result<(), ApiError> {
    let ctx = req.ctx.as_ref().ok_or_else(no_authorization)?;
    if let Some(e) = &ctx.token_error {
        return Err(bad_jwt(format!(
            "invalid JWT: unable to parse or verify signature, {e}"
        )));
    }
    let admin = state.config.admin_roles.contains(&ctx.role);
    if !admin && !has_bearer(req) {
        return Err(no_authorization());
    }
    if !admin {
        return Err(ApiError::new(403, "not_admin", "User not allowed"));
    }
    if let Some(s) = session_claim(&ctx.claims)?
        && !session_exists(state, s, None).await?
    {
        return Err(session_not_found());
    }
    Ok(())
}

/// The audience of the request: `X-JWT-AUD`, else the caller's `aud` (not for
/// admin roles), else the configured default.
pub fn audience(state: &State, req: &ApiRequest) -> String {
    if let Some(a) = req.header("x-jwt-aud").filter(|a| !a.is_empty()) {
        return a.to_owned();
    }
    if !is_admin(state, req)
        && let Some(a) = req
            .ctx
            .as_ref()
            .and_then(|c| c.claims.get("aud"))
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
    {
        return a.to_owned();
    }
    state.config.jwt_aud.clone()
}

/// Where the request came from, for the session row.
pub fn client_info(req: &ApiRequest) -> ClientInfo {
    ClientInfo {
        ip: Some(req.remote_addr.clone()).filter(|s| !s.is_empty()),
        user_agent: req
            .header("user-agent")
            .map(|s| s.chars().take(512).collect()),
    }
}
