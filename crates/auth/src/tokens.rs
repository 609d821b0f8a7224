//! Access tokens, sessions and refresh tokens (reference sections 5 and 6).
//!
//! Refresh tokens are random strings handed to the client once; the database
//! keeps only their SHA-256, so `token` and `parent` in `auth.refresh_tokens`
//! hold hashes. Refreshing one session is serialized by a row lock on its
//! `auth.sessions` row.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use secrecy::ExposeSecret as _;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::ApiError;
use crate::audit;
use crate::crypto;
use crate::models::{self, INSTANCE_ID, User};
use crate::service::State;
use ferrobase_common::db::PipelinedTransaction;

/// Characters of a refresh token.
const REFRESH_TOKEN_LEN: usize = 32;
/// How long refreshes of one session wait for each other before answering 409.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// One entry of the `amr` claim.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Amr {
    pub method: String,
    pub timestamp: i64,
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: String,
    sub: String,
    aud: &'a str,
    exp: i64,
    iat: i64,
    email: &'a str,
    phone: &'a str,
    app_metadata: &'a Value,
    user_metadata: &'a Value,
    role: &'a str,
    aal: &'a str,
    amr: &'a [Amr],
    session_id: String,
    is_anonymous: bool,
}

/// A session as issued to a client.
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub expires_at: i64,
}

impl Issued {
    /// The tokens of `session` for `user`: a new access token (see
    /// [`mint_access_token`]) beside `refresh_token`.
    pub fn mint(
        state: &State,
        user: &User,
        session: Uuid,
        aal: &str,
        amr: &[Amr],
        refresh_token: String,
    ) -> Result<Self, ApiError> {
        let (access_token, expires_at) = mint_access_token(state, user, session, aal, amr)?;
        Ok(Self {
            access_token,
            refresh_token,
            expires_in: state.config.jwt_exp.as_secs(),
            expires_at,
        })
    }

    /// The Session object, with `user` as given.
    pub fn to_json(&self, user: Value) -> Value {
        json!({
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "expires_at": self.expires_at,
            "refresh_token": self.refresh_token,
            "user": user,
        })
    }
}

/// Signs an access token for `user` in `session_id`: with the configured
/// signing key (ES256/RS256, its `kid` in the header), else HS256 and the
/// project secret.
fn mint_access_token(
    state: &State,
    user: &User,
    session_id: Uuid,
    aal: &str,
    amr: &[Amr],
) -> Result<(String, i64), ApiError> {
    let iat = Utc::now().timestamp();
    let exp = iat + state.config.jwt_exp.as_secs() as i64;
    let role = if user.role.is_empty() {
        "authenticated"
    } else {
        &user.role
    };
    let claims = AccessClaims {
        iss: state.config.issuer(),
        sub: user.id.to_string(),
        aud: &user.aud,
        exp,
        iat,
        email: &user.email,
        phone: &user.phone,
        app_metadata: &user.app_metadata,
        user_metadata: &user.user_metadata,
        role,
        aal,
        amr,
        session_id: session_id.to_string(),
        is_anonymous: user.is_anonymous,
    };
    let token = match state.config.jwt_keys.signer() {
        Some(key) => key.sign(&claims),
        None => {
            let secret = state.config.service.jwt.secret.expose_secret();
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )
        }
    }
    .map_err(ApiError::internal)?;
    Ok((token, exp))
}

async fn insert_refresh_token(
    db: &impl GenericClient,
    user: Uuid,
    session: Uuid,
    parent: Option<&str>,
) -> Result<String, ApiError> {
    let token = crypto::random_alnum(REFRESH_TOKEN_LEN);
    let insert = db
        .prepare_cached(
            "insert into auth.refresh_tokens
               (instance_id, token, user_id, revoked, created_at, updated_at, parent, session_id)
             values ($1, $2, $3, false, now(), now(), $4, $5)",
        )
        .await?;
    db.execute(
        &insert,
        &[
            &INSTANCE_ID,
            &crypto::sha256_hex(&token),
            &user.to_string(),
            &parent,
            &session,
        ],
    )
    .await?;
    Ok(token)
}

const SESSION_AMR_SQL: &str = "select authentication_method, updated_at from auth.mfa_amr_claims
 where session_id = $1 order by updated_at desc";

/// A subquery answering, as JSON array text of [`Amr`]s (for
/// [`models::from_json_text`]), the `amr` claim of
/// the session whose id is the SQL expression `session_id`, as
/// [`session_amr`] reads it.
fn amr_json_sql(session_id: &str) -> String {
    format!(
        "(select coalesce(json_agg(json_build_object('method', c.authentication_method,
     'timestamp', floor(extract(epoch from c.updated_at))::int8) order by c.updated_at desc), '[]')::text
   from auth.mfa_amr_claims c where c.session_id = {session_id})"
    )
}

fn amr_from_rows(rows: &[tokio_postgres::Row]) -> Vec<Amr> {
    rows.iter()
        .map(|r| Amr {
            method: r.get(0),
            timestamp: r.get::<_, DateTime<Utc>>(1).timestamp(),
        })
        .collect()
}

/// The `amr` claim of a session, newest first.
pub async fn session_amr(db: &impl GenericClient, session: Uuid) -> Result<Vec<Amr>, ApiError> {
    let select = db.prepare_cached(SESSION_AMR_SQL).await?;
    let rows = db.query(&select, &[&session]).await?;
    Ok(amr_from_rows(&rows))
}

/// Records that `session` was authenticated by `method` now.
pub async fn add_amr(db: &impl GenericClient, session: Uuid, method: &str) -> Result<(), ApiError> {
    db.execute(
        "insert into auth.mfa_amr_claims (id, session_id, created_at, updated_at, authentication_method)
         values (gen_random_uuid(), $1, now(), now(), $2)
         on conflict (session_id, authentication_method) do update set updated_at = now()",
        &[&session, &method],
    )
    .await?;
    Ok(())
}

/// Client details recorded on a session.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Starts a session for `user` authenticated by `method` and issues its tokens.
/// Also records the sign-in time. Runs on `db` (a transaction when the caller has one).
pub async fn issue_session(
    state: &State,
    db: &impl GenericClient,
    user_id: Uuid,
    method: &str,
    client: &ClientInfo,
) -> Result<(Issued, User), ApiError> {
    let session = Uuid::new_v4();
    let ip: Option<std::net::IpAddr> = client.ip.as_deref().and_then(|ip| ip.parse().ok());
    db.execute(
        "update auth.users set last_sign_in_at = now(), updated_at = now() where id = $1",
        &[&user_id],
    )
    .await?;
    let timebox = state.config.sessions_timebox.map(|d| d.as_secs_f64());
    db.execute(
        "insert into auth.sessions (id, user_id, created_at, updated_at, aal, refreshed_at,
           user_agent, ip, not_after)
         values ($1, $2, now(), now(), 'aal1', now() at time zone 'utc', $3, $4::text::inet,
           now() + make_interval(secs => $5::float8))",
        &[
            &session,
            &user_id,
            &client.user_agent,
            &ip.map(|i| i.to_string()),
            &timebox,
        ],
    )
    .await?;
    add_amr(db, session, method).await?;
    let user = models::user_by_id(db, user_id)
        .await?
        .ok_or_else(|| ApiError::internal("user vanished while signing in"))?;
    audit::record(
        state,
        db,
        client.ip.as_deref().unwrap_or(""),
        &audit::Actor::user(&user),
        audit::Action::Login,
        json!({"method": method}),
    )
    .await?;
    let refresh = insert_refresh_token(db, user_id, session, None).await?;
    let amr = session_amr(db, session).await?;
    let issued = Issued::mint(state, &user, session, "aal1", &amr, refresh)?;
    Ok((issued, user))
}

/// A fresh access token and refresh token for an existing session (after MFA
/// raised its level): the old tokens of the session are revoked.
pub async fn reissue_session(
    state: &State,
    db: &impl GenericClient,
    user: &User,
    session: Uuid,
) -> Result<Issued, ApiError> {
    // The newest live token becomes the parent, so a client still holding it
    // gets the reuse interval rather than a revoked session.
    let parent: Option<String> = db
        .query_opt(
            "select token from auth.refresh_tokens where session_id = $1 and not revoked
             order by id desc limit 1",
            &[&session],
        )
        .await?
        .and_then(|r| r.get(0));
    db.execute(
        "update auth.refresh_tokens set revoked = true, updated_at = now()
         where session_id = $1 and not revoked",
        &[&session],
    )
    .await?;
    let refresh = insert_refresh_token(db, user.id, session, parent.as_deref()).await?;
    let aal: String = db
        .query_one(
            "select coalesce(aal::text, 'aal1') from auth.sessions where id = $1",
            &[&session],
        )
        .await?
        .get(0);
    let amr = session_amr(db, session).await?;
    Issued::mint(state, user, session, &aal, &amr, refresh)
}

fn refresh_not_found() -> ApiError {
    ApiError::new(
        400,
        "refresh_token_not_found",
        "Invalid Refresh Token: Refresh Token Not Found",
    )
}

fn done(result: Result<(Issued, Value), ApiError>) -> Attempt {
    Attempt::Done(Box::new(result))
}

enum Attempt {
    Done(Box<Result<(Issued, Value), ApiError>>),
    Contended,
}

/// `grant_type=refresh_token`: rotates `token` and answers the new session
/// and the full user object.
pub async fn refresh(state: &State, token: &str, ip: &str) -> Result<(Issued, Value), ApiError> {
    if token.is_empty() || token.len() > 255 {
        return Err(refresh_not_found());
    }
    let hash = crypto::sha256_hex(token);
    if let Some(done) = refresh_at_once(state, &hash, ip).await? {
        return Ok(done);
    }
    let started = Instant::now();
    loop {
        match try_refresh(state, &hash, ip).await? {
            Attempt::Done(result) => return *result,
            Attempt::Contended if started.elapsed() < LOCK_WAIT => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Attempt::Contended => {
                return Err(ApiError::new(
                    409,
                    "conflict",
                    "Too many concurrent token refresh requests on the same session or refresh token",
                ));
            }
        }
    }
}

fn is_contention(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::LOCK_NOT_AVAILABLE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// Locks a refresh token (by its hash) and its session, without waiting (a
/// refresh of the same session in flight makes the caller retry shortly),
/// and reads the user: its columns first, then the session's and the token's.
static LOCK_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let user_columns = &*models::USER_COLUMNS_OF_U;
    format!(
        "select {user_columns}, s.id, coalesce(s.aal::text, 'aal1'), s.not_after,
                coalesce(s.refreshed_at at time zone 'utc', s.created_at), t.revoked
         from auth.refresh_tokens t
         join auth.sessions s on s.id = t.session_id
         join auth.users u on u.id = s.user_id
         where t.token = $1
         for update of s, t nowait"
    )
});

/// The common refresh as one statement, committed on its own: locks the
/// token `$1` (a hash) and its session without waiting and, only when the
/// token is not revoked, the session neither past `not_after` nor idle longer
/// than `$4` seconds (null: no limit) and the user not banned, revokes the
/// token, touches the session, records `token_refreshed` when `$5`, from the
/// IP `$6`, and inserts the child `$3`. Answers the user's columns, then the
/// session's id and level, its `amr` claim, the user's identities and
/// factors (JSON array texts, read in the statement's snapshot: the rotation
/// changes none of them); no row when any condition failed.
static REFRESH_AT_ONCE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let user_columns = &*models::USER_COLUMNS_OF_U;
    format!(
        "with locked as (
   select {user_columns}, s.id as session_id, coalesce(s.aal::text, 'aal1') as session_aal
   from auth.refresh_tokens t
   join auth.sessions s on s.id = t.session_id
   join auth.users u on u.id = s.user_id
   where t.token = $1 and t.revoked is not true
     and (s.not_after is null or s.not_after >= now())
     and (u.banned_until is null or u.banned_until <= now())
     and ($4::float8 is null
          or coalesce(s.refreshed_at at time zone 'utc', s.created_at) is null
          or coalesce(s.refreshed_at at time zone 'utc', s.created_at)
             + make_interval(secs => $4::float8) >= now())
   for update of s, t nowait
 ), revoked as (
   update auth.refresh_tokens set revoked = true, updated_at = now()
   where token = $1 and exists (select 1 from locked)
 ), touched as (
   update auth.sessions set refreshed_at = now() at time zone 'utc', updated_at = now()
   where id = (select session_id from locked)
 ), audited as (
   insert into auth.audit_log_entries (instance_id, id, payload, created_at, ip_address)
   select $2, gen_random_uuid(),
     json_build_object('action', 'token_refreshed', 'actor_id', id::text,
       'actor_username', case when coalesce(email, '') = '' then coalesce(phone, '') else email end,
       'actor_via_sso', false, 'log_type', 'token', 'traits', '{{}}'::json),
     clock_timestamp(), left($6::text, 64)
   from locked where $5::bool
 ), inserted as (
   insert into auth.refresh_tokens
     (instance_id, token, user_id, revoked, created_at, updated_at, parent, session_id)
   select $2, $3, id::text, false, now(), now(), $1, session_id from locked
 )
 select locked.*, {amr}, {identities}, {factors} from locked",
        amr = amr_json_sql("locked.session_id"),
        identities = models::identities_json_sql("locked.id"),
        factors = models::factors_json_sql("locked.id"),
    )
});

/// The statement of a common refresh ([`REFRESH_AT_ONCE_SQL`]), for the
/// benchmark that measures what the database alone makes of it.
pub fn refresh_statement() -> &'static str {
    &REFRESH_AT_ONCE_SQL
}

/// Refreshes in one statement: [`REFRESH_AT_ONCE_SQL`], which also reads the
/// session object. `None` when the token needs [`try_refresh`]: unknown,
/// revoked (the reuse rules), expired, banned, or locked by a concurrent
/// refresh.
async fn refresh_at_once(
    state: &State,
    hash: &str,
    ip: &str,
) -> Result<Option<(Issued, Value)>, ApiError> {
    let client = state.pool.get().await?;
    let rotate = client.prepare_cached(&REFRESH_AT_ONCE_SQL).await?;
    let new_token = crypto::random_alnum(REFRESH_TOKEN_LEN);
    let new_hash = crypto::sha256_hex(&new_token);
    let idle_limit = state
        .config
        .sessions_inactivity_timeout
        .map(|d| d.as_secs_f64());
    let audited = state.config.audit_log;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&hash, &INSTANCE_ID, &new_hash, &idle_limit, &audited, &ip];
    let row = match client.query_opt(&rotate, &params).await {
        Ok(Some(row)) => row,
        Ok(None) => return Ok(None),
        Err(e) if is_contention(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let user = User::from_row(&row);
    let at = models::user_column_count();
    let session: Uuid = row.get(at);
    let aal: String = row.get(at + 1);
    let amr: Vec<Amr> = models::from_json_text(row.get(at + 2), "amr")?;
    let identities: Vec<models::Identity> = models::from_json_text(row.get(at + 3), "identities")?;
    let factors: Vec<models::Factor> = models::from_json_text(row.get(at + 4), "factors")?;
    let issued = Issued::mint(state, &user, session, &aal, &amr, new_token)?;
    Ok(Some((issued, user.to_json(Some(&identities), &factors))))
}

/// The state of a revoked refresh token, read under the locks.
const TOKEN_STATE_SQL: &str = "select updated_at,
        exists(select 1 from auth.refresh_tokens c where c.parent = t.token and not c.revoked),
        exists(select 1 from auth.refresh_tokens c where c.parent = t.token)
 from auth.refresh_tokens t where token = $1";

/// Rotates: revokes the token `$1` (unless it already is), touches the
/// session `$5`, records the audit entry `$6` (JSON text; null for none) from
/// the IP `$7` and inserts the child token `$3`, in one statement.
const ROTATE_SQL: &str = "with revoked as (
   update auth.refresh_tokens set revoked = true, updated_at = now()
   where token = $1 and revoked is not true
 ), touched as (
   update auth.sessions set refreshed_at = now() at time zone 'utc', updated_at = now()
   where id = $5
 ), audited as (
   insert into auth.audit_log_entries (instance_id, id, payload, created_at, ip_address)
   select $2, gen_random_uuid(), $6::text::json, clock_timestamp(), left($7::text, 64)
   where $6::text is not null
 )
 insert into auth.refresh_tokens
   (instance_id, token, user_id, revoked, created_at, updated_at, parent, session_id)
 values ($2, $3, $4, false, now(), now(), $1, $5)";

/// One attempt at rotating the token whose hash is `hash`, for the tokens
/// [`refresh_at_once`] leaves alone: every check happens here, under the locks,
/// with the reuse rules for revoked tokens. The statements are prepared once
/// per connection and the independent ones are pipelined, so a refresh costs
/// two round trips to the database: begin with the lock and the user, then the
/// rest of the reads, the rotation and commit.
async fn try_refresh(state: &State, hash: &str, ip: &str) -> Result<Attempt, ApiError> {
    let client = state.pool.get().await?;
    // Everything the pipelines below send is prepared first: after the first
    // refresh on a connection these are cache hits and cost nothing.
    let (lock, rotate, ..) = tokio::try_join!(
        client.prepare_cached(&LOCK_SQL),
        client.prepare_cached(ROTATE_SQL),
        client.prepare_cached(SESSION_AMR_SQL),
        client.prepare_cached(&models::IDENTITIES_SQL),
        client.prepare_cached(&models::FACTORS_SQL),
    )?;
    let tx = PipelinedTransaction::new(client);
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&hash];
    let (begun, locked) = tokio::join!(
        tx.client().batch_execute("begin"),
        tx.client().query_opt(&lock, &key),
    );
    begun?;
    let row = match locked {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(done(Err(refresh_not_found()))),
        Err(e) if is_contention(&e) => return Ok(Attempt::Contended),
        Err(e) => return Err(e.into()),
    };
    let db = tx.client();
    let user = User::from_row(&row);
    let user_id = user.id;
    // The session's columns follow the user's.
    let at = models::user_column_count();
    let session: Uuid = row.get(at);
    let aal: String = row.get(at + 1);
    let not_after: Option<DateTime<Utc>> = row.get(at + 2);
    let last_refresh: Option<DateTime<Utc>> = row.get(at + 3);
    let revoked: bool = row.get::<_, Option<bool>>(at + 4).unwrap_or(false);
    if let (Some(limit), Some(last)) = (state.config.sessions_inactivity_timeout, last_refresh)
        && Utc::now() > last + chrono::Duration::from_std(limit).unwrap_or_default()
    {
        return Ok(done(Err(ApiError::new(
            400,
            "session_expired",
            "Invalid Refresh Token: Session Expired (Inactivity)",
        ))));
    }
    if not_after.is_some_and(|t| t < Utc::now()) {
        return Ok(done(Err(ApiError::new(
            400,
            "session_expired",
            "Invalid Refresh Token: Session Expired",
        ))));
    }
    if user.is_banned() {
        return Ok(done(Err(ApiError::new(
            400,
            "user_banned",
            "Invalid Refresh Token: User Banned",
        ))));
    }
    if revoked {
        // Rare: a rotated token came back. Within the reuse interval (or while
        // its child is unused) it still works; otherwise assume it leaked and
        // end every token of the session.
        let token_row = db.query_one(TOKEN_STATE_SQL, &[&hash]).await?;
        let revoked_at: Option<DateTime<Utc>> = token_row.get(0);
        let has_unused_child: bool = token_row.get(1);
        // Only rotation gives a token children; one revoked with its whole
        // session after a reuse has none and never comes back.
        let was_rotated: bool = token_row.get(2);
        let interval = chrono::Duration::from_std(state.config.refresh_token_reuse_interval)
            .unwrap_or_default();
        let within = was_rotated && revoked_at.is_some_and(|t| Utc::now() <= t + interval);
        if !(within || has_unused_child) {
            db.execute(
                "update auth.refresh_tokens set revoked = true, updated_at = now()
                 where session_id = $1 and not revoked",
                &[&session],
            )
            .await?;
            audit::record(
                state,
                db,
                ip,
                &audit::Actor::user(&user),
                audit::Action::TokenRevoked,
                json!({"reason": "refresh_token_reused", "session_id": session}),
            )
            .await?;
            db.batch_execute("commit").await?;
            tx.finished();
            tracing::warn!(%session, "refresh token reused after rotation; session tokens revoked");
            return Ok(done(Err(ApiError::new(
                400,
                "refresh_token_already_used",
                "Invalid Refresh Token: Already Used",
            ))));
        }
    }
    // Read what the session object needs, rotate and commit in one flight.
    let new_token = crypto::random_alnum(REFRESH_TOKEN_LEN);
    let new_hash = crypto::sha256_hex(&new_token);
    let user_text = user_id.to_string();
    let entry = state.config.audit_log.then(|| {
        audit::payload(
            &audit::Actor::user(&user),
            audit::Action::TokenRefreshed,
            json!({}),
        )
        .to_string()
    });
    let rotation: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &hash,
        &INSTANCE_ID,
        &new_hash,
        &user_text,
        &session,
        &entry,
        &ip,
    ];
    let (reads, committed) = tokio::join!(
        async {
            tokio::try_join!(
                session_amr(db, session),
                models::identities(db, user_id),
                models::factors(db, user_id),
                async { Ok::<_, ApiError>(db.execute(&rotate, &rotation).await?) },
            )
        },
        db.batch_execute("commit"),
    );
    let (amr, identities, factors, _) = reads?;
    committed?;
    tx.finished();
    let issued = Issued::mint(state, &user, session, &aal, &amr, new_token)?;
    Ok(done(Ok((
        issued,
        user.to_json(Some(&identities), &factors),
    ))))
}
