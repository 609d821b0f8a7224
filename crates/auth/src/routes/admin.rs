//! The admin API: `/admin/users*`, `/admin/generate_link`, `/invite` (reference 7.10).

use ferrobase_proto::{Header, HttpResponse};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{guard, ok, require_object};
use crate::api::{ApiError, ApiRequest, json_response};
use crate::flows::{self, Kind};
use crate::models::{self, INSTANCE_ID, USER_COLUMNS, User};
use crate::service::State;
use crate::{audit, crypto, validate};

/// Routes below `/admin`.
pub async fn route(state: &State, req: &ApiRequest, path: &str) -> Result<HttpResponse, ApiError> {
    guard::require_admin(state, req).await?;
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", ["users"]) => list(state, req).await,
        ("POST", ["users"]) => create(state, req).await,
        ("GET", ["users", id]) => get(state, parse_id(id)?).await,
        ("PUT", ["users", id]) => update(state, req, parse_id(id)?).await,
        ("DELETE", ["users", id]) => delete(state, req, parse_id(id)?).await,
        ("GET", ["users", id, "factors"]) => factors(state, parse_id(id)?).await,
        ("DELETE", ["users", id, "factors", fid]) => {
            delete_factor(state, parse_id(id)?, parse_id(fid)?).await
        }
        ("POST", ["generate_link"]) => generate_link(state, req).await,
        (_, ["users", ..] | ["generate_link"]) => Err(ApiError::new(
            405,
            "method_not_allowed",
            "Method not allowed",
        )),
        _ => Err(ApiError::not_implemented(&format!(
            "the /admin/{} endpoint",
            parts.first().unwrap_or(&"")
        ))),
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::new(404, "validation_failed", "user_id must be an UUID"))
}

/// Records what an administrator did to user `id` in the audit trail.
async fn audit_admin(
    state: &State,
    req: &ApiRequest,
    db: &impl deadpool_postgres::GenericClient,
    action: audit::Action,
    id: Uuid,
    email: &str,
) -> Result<(), ApiError> {
    let actor = audit::Actor::admin(req.ctx.as_ref().and_then(|c| c.subject.as_deref()));
    let traits = json!({"user_id": id, "user_email": email});
    audit::record(state, db, &req.remote_addr, &actor, action, traits).await
}

/// Reads user `id` as the transaction left it, records `action` on it by the
/// administrator, commits, and answers it.
async fn commit_answering_user(
    state: &State,
    req: &ApiRequest,
    tx: deadpool_postgres::Transaction<'_>,
    id: Uuid,
    action: audit::Action,
) -> Result<HttpResponse, ApiError> {
    let user = models::user_by_id(&tx, id)
        .await?
        .ok_or_else(user_not_found)?;
    audit_admin(state, req, &tx, action, id, &user.email).await?;
    let user_json = models::user_json(&tx, &user).await?;
    tx.commit().await?;
    ok(&user_json)
}

fn user_not_found() -> ApiError {
    ApiError::new(404, "user_not_found", "User not found")
}

fn email_exists() -> ApiError {
    ApiError::new(
        422,
        "email_exists",
        "A user with this email address has already been registered",
    )
}

/// A pagination parameter: absent, empty or 0 is `default`; anything but a
/// non-negative integer is refused.
fn positive(raw: Option<String>, default: i64) -> Result<i64, ApiError> {
    match raw.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => match s.parse::<u64>() {
            Ok(0) => Ok(default),
            Ok(n) => Ok(i64::try_from(n).unwrap_or(i64::MAX)),
            Err(e) => Err(ApiError::new(
                400,
                "validation_failed",
                format!("Bad Pagination Parameters: {e}"),
            )),
        },
    }
}

async fn list(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let page = positive(req.query_param("page"), 1)?;
    let per_page = positive(req.query_param("per_page"), 50)?.min(1000);
    let page = page.min(i64::MAX / per_page / 2);
    let filter = req.query_param("filter").unwrap_or_default();
    let pattern = format!(
        "%{}%",
        filter
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let aud = guard::audience(state, req);
    let db = state.pool.get().await?;
    let where_ = "instance_id = $1 and aud = $2
        and ($3 = '%%' or email ilike $3 or raw_user_meta_data->>'full_name' ilike $3)";
    let total: i64 = db
        .query_one(
            &format!("select count(*) from auth.users where {where_}"),
            &[&INSTANCE_ID, &aud, &pattern],
        )
        .await?
        .get(0);
    let sql = format!(
        "select {USER_COLUMNS} from auth.users where {where_}
         order by {} nulls last, id limit $4 offset $5",
        sort_clause(req.query_param("sort").as_deref())
    );
    let rows = db
        .query(
            &sql,
            &[
                &INSTANCE_ID,
                &aud,
                &pattern,
                &per_page,
                &((page - 1) * per_page),
            ],
        )
        .await?;
    let listed: Vec<User> = rows.iter().map(User::from_row).collect();
    let ids: Vec<Uuid> = listed.iter().map(|u| u.id).collect();
    let factor_rows = db
        .query(
            &format!(
                "select {} from auth.mfa_factors where user_id = any($1) order by created_at",
                models::FACTOR_COLUMNS
            ),
            &[&ids],
        )
        .await?;
    let all_factors: Vec<models::Factor> =
        factor_rows.iter().map(models::Factor::from_row).collect();
    let users: Vec<Value> = listed
        .iter()
        .map(|u| {
            let fs: Vec<models::Factor> = all_factors
                .iter()
                .filter(|f| f.user_id == u.id)
                .cloned()
                .collect();
            u.to_json(None, &fs)
        })
        .collect();
    let mut resp = json_response(200, &json!({"users": users, "aud": aud}));
    let last = ((total + per_page - 1) / per_page).max(1);
    let base = format!("{}/admin/users", state.config.issuer());
    let mut links = Vec::new();
    if page < last {
        links.push(format!(
            "<{base}?page={}&per_page={per_page}>; rel=\"next\"",
            page + 1
        ));
    }
    links.push(format!(
        "<{base}?page={last}&per_page={per_page}>; rel=\"last\""
    ));
    resp.headers.push(Header {
        name: "x-total-count".into(),
        value: total.to_string(),
    });
    resp.headers.push(Header {
        name: "link".into(),
        value: links.join(", "),
    });
    Ok(resp)
}

/// `sort=<column> [asc|desc]` over a fixed set of columns; newest first by default.
fn sort_clause(raw: Option<&str>) -> &'static str {
    let mut words = raw.unwrap_or("").split_whitespace();
    let column = words.next().unwrap_or("");
    let asc = words.next().is_some_and(|d| d.eq_ignore_ascii_case("asc"));
    match (column, asc) {
        ("email", true) => "email asc",
        ("email", false) => "email desc",
        ("last_sign_in_at", true) => "last_sign_in_at asc",
        ("last_sign_in_at", false) => "last_sign_in_at desc",
        ("updated_at", true) => "updated_at asc",
        ("updated_at", false) => "updated_at desc",
        ("created_at", true) => "created_at asc",
        _ => "created_at desc",
    }
}

async fn get(state: &State, id: Uuid) -> Result<HttpResponse, ApiError> {
    let db = state.pool.get().await?;
    let user = models::user_by_id(&db, id)
        .await?
        .ok_or_else(user_not_found)?;
    ok(&models::user_json(&db, &user).await?)
}

/// The body of admin create and update.
#[derive(Deserialize, Default)]
struct AdminUserParams {
    id: Option<Uuid>,
    aud: Option<String>,
    role: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    password_hash: Option<String>,
    email_confirm: Option<bool>,
    phone_confirm: Option<bool>,
    user_metadata: Option<Value>,
    app_metadata: Option<Value>,
    ban_duration: Option<String>,
}

/// A Go duration (`"24h"`, `"1h30m"`, `"90s"`, `"none"`) in seconds; `None` for `"none"`.
fn parse_ban_duration(raw: &str) -> Result<Option<f64>, ApiError> {
    let bad = || ApiError::new(400, "validation_failed", "invalid format for ban duration");
    let s = raw.trim();
    if s == "none" {
        return Ok(None);
    }
    if s == "0" {
        return Ok(Some(0.0));
    }
    let mut total = 0.0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * factor;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e11 {
        return Err(bad());
    }
    Ok(Some(total))
}

async fn password_hash_of(state: &State, p: &AdminUserParams) -> Result<Option<String>, ApiError> {
    if let Some(h) = p.password_hash.as_deref().filter(|h| !h.is_empty()) {
        let bcrypt_like = (h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$"))
            && h.len() == 60;
        if !bcrypt_like {
            return Err(ApiError::new(
                400,
                "validation_failed",
                "Invalid password hash format: only bcrypt hashes are supported",
            ));
        }
        return Ok(Some(h.to_owned()));
    }
    match p.password.as_deref().filter(|p| !p.is_empty()) {
        Some(pw) => {
            validate::password(&state.config, pw)?;
            Ok(Some(
                crypto::hash_password(pw, state.config.bcrypt_cost).await?,
            ))
        }
        None => Ok(None),
    }
}

impl AdminUserParams {
    /// The validated email and phone; blank values count as absent.
    fn contact(&self) -> Result<(Option<String>, Option<String>), ApiError> {
        let present = |v: &Option<String>| {
            v.as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
        };
        let email = present(&self.email)
            .as_deref()
            .map(validate::email)
            .transpose()?;
        let phone = present(&self.phone)
            .as_deref()
            .map(validate::phone)
            .transpose()?;
        Ok((email, phone))
    }
}

async fn create(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let p: AdminUserParams = req.json()?;
    let (email, phone) = p.contact()?;
    if email.is_none() && phone.is_none() {
        return Err(ApiError::new(
            400,
            "validation_failed",
            "Cannot create a user without either an email or phone",
        ));
    }
    let user_meta = require_object(p.user_metadata.clone())?;
    let app_extra = require_object(p.app_metadata.clone())?;
    let provider = if email.is_some() { "email" } else { "phone" };
    let mut app_meta = json!({"provider": provider, "providers": [provider]});
    if phone.is_some() && email.is_some() {
        app_meta["providers"] = json!(["email", "phone"]);
    }
    let app_meta = models::merge_metadata(&app_meta, &app_extra);
    let hash = match password_hash_of(state, &p).await? {
        Some(h) => h,
        None => crypto::hash_password(&crypto::random_alnum(32), state.config.bcrypt_cost).await?,
    };
    let ban = p
        .ban_duration
        .as_deref()
        .map(parse_ban_duration)
        .transpose()?
        .flatten();
    let id = p.id.unwrap_or_else(Uuid::new_v4);
    let aud = p
        .aud
        .clone()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| guard::audience(state, req));
    let role = p
        .role
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "authenticated".into());
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    if let Some(e) = &email
        && models::email_taken(&tx, e, None).await?
    {
        return Err(email_exists());
    }
    if let Some(ph) = &phone {
        let taken: bool = tx
            .query_one(
                "select exists(select 1 from auth.users where phone = $1)",
                &[ph],
            )
            .await?
            .get(0);
        if taken {
            return Err(ApiError::new(
                422,
                "phone_exists",
                "A user with this phone number has already been registered",
            ));
        }
    }
    let email_confirm = p.email_confirm.unwrap_or(false);
    let phone_confirm = p.phone_confirm.unwrap_or(false);
    let mut user_meta = user_meta;
    if email_confirm && email.is_some() {
        user_meta["email_verified"] = json!(true);
    }
    let inserted = tx
        .execute(
            "insert into auth.users (instance_id, id, aud, role, email, phone, encrypted_password,
               email_confirmed_at, phone_confirmed_at, raw_app_meta_data, raw_user_meta_data,
               banned_until, created_at, updated_at, is_anonymous, is_super_admin)
             values ($1, $2, $3, $4, $5, $6, $7, case when $8 then now() end,
               case when $9 then now() end, $10, $11,
               case when $12::float8 is null then null else now() + make_interval(secs => $12::float8) end,
               now(), now(), false, false)
             on conflict do nothing",
            &[
                &INSTANCE_ID, &id, &aud, &role, &email, &phone, &hash, &email_confirm,
                &phone_confirm, &app_meta, &user_meta, &ban,
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(ApiError::new(
            422,
            "email_exists",
            "A user with this email address or id has already been registered",
        ));
    }
    if let Some(e) = &email {
        models::upsert_email_identity(&tx, id, e, email_confirm, &json!({})).await?;
    }
    if let Some(ph) = &phone {
        tx.execute(
            "insert into auth.identities (id, provider_id, user_id, identity_data, provider,
               last_sign_in_at, created_at, updated_at)
             values (gen_random_uuid(), $1, $2, $3, 'phone', now(), now(), now())
             on conflict do nothing",
            &[
                &id.to_string(),
                &id,
                &json!({"sub": id.to_string(), "phone": ph, "email_verified": false, "phone_verified": phone_confirm}),
            ],
        )
        .await?;
    }
    commit_answering_user(state, req, tx, id, audit::Action::UserSignedUp).await
}

async fn update(state: &State, req: &ApiRequest, id: Uuid) -> Result<HttpResponse, ApiError> {
    let p: AdminUserParams = req.json()?;
    let (email, phone) = p.contact()?;
    let user_meta = p
        .user_metadata
        .clone()
        .map(|v| require_object(Some(v)))
        .transpose()?;
    let app_meta = p
        .app_metadata
        .clone()
        .map(|v| require_object(Some(v)))
        .transpose()?;
    let hash = password_hash_of(state, &p).await?;
    let ban = p
        .ban_duration
        .as_deref()
        .map(parse_ban_duration)
        .transpose()?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let user = models::user_by_id_for_update(&tx, id)
        .await?
        .ok_or_else(user_not_found)?;
    if let Some(role) = p.role.as_deref().filter(|r| !r.is_empty()) {
        tx.execute(
            "update auth.users set role = $2 where id = $1",
            &[&id, &role],
        )
        .await?;
    }
    if let Some(aud) = p.aud.as_deref().filter(|a| !a.is_empty()) {
        tx.execute("update auth.users set aud = $2 where id = $1", &[&id, &aud])
            .await?;
    }
    if let Some(e) = &email
        && *e != user.email
    {
        if models::email_taken(&tx, e, Some(id)).await? {
            return Err(email_exists());
        }
        tx.execute(
            "update auth.users set email = $2, email_change = '', email_change_token_new = '',
               email_change_token_current = '', is_anonymous = false where id = $1",
            &[&id, e],
        )
        .await?;
        let confirmed = p.email_confirm.unwrap_or(false) || user.email_confirmed();
        models::upsert_email_identity(&tx, id, e, confirmed, &json!({})).await?;
        tx.execute(
            "update auth.users set raw_app_meta_data = $2 where id = $1",
            &[&id, &models::with_provider(&user.app_metadata, "email")],
        )
        .await?;
    }
    if let Some(ph) = &phone
        && *ph != user.phone
    {
        let taken: bool = tx
            .query_one(
                "select exists(select 1 from auth.users where phone = $1 and id <> $2)",
                &[ph, &id],
            )
            .await?
            .get(0);
        if taken {
            return Err(ApiError::new(
                422,
                "phone_exists",
                "A user with this phone number has already been registered",
            ));
        }
        tx.execute("update auth.users set phone = $2 where id = $1", &[&id, ph])
            .await?;
    }
    match p.email_confirm {
        Some(true) => {
            tx.execute(
                "update auth.users set email_confirmed_at = coalesce(email_confirmed_at, now()),
                   raw_user_meta_data = coalesce(raw_user_meta_data, '{}'::jsonb) || '{\"email_verified\":true}'
                 where id = $1",
                &[&id],
            )
            .await?;
        }
        Some(false) => {
            tx.execute(
                "update auth.users set email_confirmed_at = null where id = $1",
                &[&id],
            )
            .await?;
        }
        None => {}
    }
    match p.phone_confirm {
        Some(true) => {
            tx.execute(
                "update auth.users set phone_confirmed_at = coalesce(phone_confirmed_at, now()) where id = $1",
                &[&id],
            )
            .await?;
        }
        Some(false) => {
            tx.execute(
                "update auth.users set phone_confirmed_at = null where id = $1",
                &[&id],
            )
            .await?;
        }
        None => {}
    }
    if let Some(h) = &hash {
        tx.execute(
            "update auth.users set encrypted_password = $2 where id = $1",
            &[&id, h],
        )
        .await?;
        tx.execute("delete from auth.sessions where user_id = $1", &[&id])
            .await?;
    }
    if let Some(m) = &user_meta {
        tx.execute(
            "update auth.users set raw_user_meta_data = $2 where id = $1",
            &[&id, &models::merge_metadata(&user.user_metadata, m)],
        )
        .await?;
    }
    if let Some(m) = &app_meta {
        let current: Option<Value> = tx
            .query_one(
                "select raw_app_meta_data from auth.users where id = $1",
                &[&id],
            )
            .await?
            .get(0);
        tx.execute(
            "update auth.users set raw_app_meta_data = $2 where id = $1",
            &[
                &id,
                &models::merge_metadata(&current.unwrap_or_else(|| json!({})), m),
            ],
        )
        .await?;
    }
    if let Some(ban) = ban {
        tx.execute(
            "update auth.users set banned_until =
               case when $2::float8 is null then null else now() + make_interval(secs => $2::float8) end
             where id = $1",
            &[&id, &ban],
        )
        .await?;
        if ban.is_some_and(|s| s > 0.0) {
            tx.execute("delete from auth.sessions where user_id = $1", &[&id])
                .await?;
        }
    }
    tx.execute(
        "update auth.users set updated_at = now() where id = $1",
        &[&id],
    )
    .await?;
    commit_answering_user(state, req, tx, id, audit::Action::UserModified).await
}

#[derive(Deserialize, Default)]
struct DeleteBody {
    should_soft_delete: Option<bool>,
}

async fn delete(state: &State, req: &ApiRequest, id: Uuid) -> Result<HttpResponse, ApiError> {
    let body: DeleteBody = req.json()?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let user = models::user_by_id_for_update(&tx, id)
        .await?
        .ok_or_else(user_not_found)?;
    audit_admin(state, req, &tx, audit::Action::UserDeleted, id, &user.email).await?;
    if body.should_soft_delete.unwrap_or(false) {
        tx.execute("delete from auth.sessions where user_id = $1", &[&id])
            .await?;
        tx.execute("delete from auth.identities where user_id = $1", &[&id])
            .await?;
        tx.execute("delete from auth.mfa_factors where user_id = $1", &[&id])
            .await?;
        tx.execute(
            "update auth.users set deleted_at = now(), updated_at = now(), email = null, phone = null,
               encrypted_password = '', confirmation_token = '', recovery_token = '',
               email_change = '', email_change_token_new = '', email_change_token_current = '',
               raw_app_meta_data = '{}'::jsonb, raw_user_meta_data = '{}'::jsonb
             where id = $1",
            &[&id],
        )
        .await?;
    } else {
        tx.execute("delete from auth.users where id = $1", &[&id])
            .await?;
    }
    tx.commit().await?;
    ok(&json!({}))
}

async fn factors(state: &State, id: Uuid) -> Result<HttpResponse, ApiError> {
    let db = state.pool.get().await?;
    models::user_by_id(&db, id)
        .await?
        .ok_or_else(user_not_found)?;
    let fs = models::factors(&db, id).await?;
    ok(&Value::Array(
        fs.iter().map(models::Factor::to_json).collect(),
    ))
}

async fn delete_factor(state: &State, user: Uuid, factor: Uuid) -> Result<HttpResponse, ApiError> {
    let db = state.pool.get().await?;
    let fs = models::factors(&db, user).await?;
    let f = fs
        .into_iter()
        .find(|f| f.id == factor)
        .ok_or_else(|| ApiError::new(404, "mfa_factor_not_found", "Factor not found"))?;
    db.execute("delete from auth.mfa_factors where id = $1", &[&factor])
        .await?;
    ok(&f.to_json())
}

#[derive(Deserialize, Default)]
struct InviteBody {
    email: Option<String>,
    data: Option<Value>,
}

/// `POST /invite`.
pub async fn invite(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    guard::require_admin(state, req).await?;
    let body: InviteBody = req.json()?;
    let email = validate::email(body.email.as_deref().unwrap_or(""))?;
    let data = require_object(body.data)?;
    let redirect = validate::redirect_to(&state.config, req.query_param("redirect_to").as_deref());
    let aud = guard::audience(state, req);
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let id = invited_user(&tx, &email, &aud, &data).await?;
    let prepared = flows::prepare(state, &tx, id, Kind::Invite, &email, &redirect, false).await?;
    flows::send(state, &prepared).await?;
    tx.execute(
        "update auth.users set invited_at = now() where id = $1",
        &[&id],
    )
    .await?;
    commit_answering_user(state, req, tx, id, audit::Action::UserInvited).await
}

/// The user an invitation goes to: created unless it exists unconfirmed.
async fn invited_user(
    tx: &deadpool_postgres::Transaction<'_>,
    email: &str,
    aud: &str,
    data: &Value,
) -> Result<Uuid, ApiError> {
    match models::user_by_email(tx, email, aud).await? {
        Some(u) if u.email_confirmed() => Err(email_exists()),
        Some(u) => Ok(u.id),
        None => {
            if models::email_taken(tx, email, None).await? {
                return Err(email_exists());
            }
            let id = Uuid::new_v4();
            tx.execute(
                "insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data,
                   raw_user_meta_data, invited_at, created_at, updated_at, is_anonymous, is_super_admin)
                 values ($1, $2, $3, 'authenticated', $4,
                   '{\"provider\":\"email\",\"providers\":[\"email\"]}'::jsonb, $5, now(), now(), now(),
                   false, false)",
                &[&INSTANCE_ID, &id, &aud, &email, data],
            )
            .await?;
            models::upsert_email_identity(tx, id, email, false, data).await?;
            Ok(id)
        }
    }
}

#[derive(Deserialize, Default)]
struct GenerateLinkBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    email: Option<String>,
    password: Option<String>,
    data: Option<Value>,
    new_email: Option<String>,
    redirect_to: Option<String>,
}

async fn generate_link(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let body: GenerateLinkBody = req.json()?;
    let email = validate::email(body.email.as_deref().unwrap_or(""))?;
    let data = require_object(body.data.clone())?;
    let requested = body
        .redirect_to
        .clone()
        .or_else(|| req.query_param("redirect_to"));
    let redirect = validate::redirect_to(&state.config, requested.as_deref());
    let aud = guard::audience(state, req);
    let kind = body.kind.as_deref().unwrap_or("");
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let existing = models::user_by_email(&tx, &email, &aud).await?;
    let (user_id, kind, to) = match kind {
        "signup" => {
            let password = body.password.as_deref().unwrap_or("");
            if password.is_empty() {
                return Err(ApiError::new(
                    400,
                    "validation_failed",
                    "Signup requires a valid password",
                ));
            }
            validate::password(&state.config, password)?;
            let id = match existing {
                Some(u) if u.email_confirmed() => return Err(email_exists()),
                Some(u) => u.id,
                None => create_unconfirmed(state, &tx, &email, &aud, &data, Some(password)).await?,
            };
            (id, Kind::Signup, email.clone())
        }
        "magiclink" => match existing {
            Some(u) => (u.id, Kind::Magiclink, email.clone()),
            None => {
                let id = create_unconfirmed(state, &tx, &email, &aud, &data, None).await?;
                (id, Kind::Signup, email.clone())
            }
        },
        "recovery" => {
            let u = existing.ok_or_else(user_not_found)?;
            (u.id, Kind::Recovery, email.clone())
        }
        "invite" => {
            let id = invited_user(&tx, &email, &aud, &data).await?;
            tx.execute(
                "update auth.users set invited_at = now() where id = $1",
                &[&id],
            )
            .await?;
            (id, Kind::Invite, email.clone())
        }
        "email_change_current" | "email_change_new" => {
            let u = existing.ok_or_else(user_not_found)?;
            let new_email = validate::email(body.new_email.as_deref().unwrap_or(""))?;
            if models::email_taken(&tx, &new_email, Some(u.id)).await? {
                return Err(email_exists());
            }
            tx.execute(
                "update auth.users set email_change = $2, email_change_confirm_status = 0 where id = $1",
                &[&u.id, &new_email],
            )
            .await?;
            if kind == "email_change_current" {
                (u.id, Kind::EmailChangeCurrent, email.clone())
            } else {
                (u.id, Kind::EmailChangeNew, new_email)
            }
        }
        _ => {
            return Err(ApiError::new(400, "validation_failed", "Invalid link type"));
        }
    };
    let prepared = flows::prepare(state, &tx, user_id, kind, &to, &redirect, false).await?;
    let user = models::user_by_id(&tx, user_id)
        .await?
        .ok_or_else(user_not_found)?;
    let mut out = match models::user_json(&tx, &user).await? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    tx.commit().await?;
    out.insert("action_link".into(), json!(prepared.link));
    out.insert("email_otp".into(), json!(prepared.otp));
    out.insert("hashed_token".into(), json!(prepared.token_hash));
    // The type asked for: email change links name which address they confirm.
    let verification_type = match kind {
        Kind::EmailChangeCurrent => "email_change_current",
        Kind::EmailChangeNew => "email_change_new",
        other => other.verify_type(),
    };
    out.insert("verification_type".into(), json!(verification_type));
    out.insert("redirect_to".into(), json!(prepared.redirect_to));
    ok(&Value::Object(out))
}

async fn create_unconfirmed(
    state: &State,
    tx: &deadpool_postgres::Transaction<'_>,
    email: &str,
    aud: &str,
    data: &Value,
    password: Option<&str>,
) -> Result<Uuid, ApiError> {
    if models::email_taken(tx, email, None).await? {
        return Err(email_exists());
    }
    let hash = match password {
        Some(p) => Some(crypto::hash_password(p, state.config.bcrypt_cost).await?),
        None => None,
    };
    let id = Uuid::new_v4();
    tx.execute(
        "insert into auth.users (instance_id, id, aud, role, email, encrypted_password,
           raw_app_meta_data, raw_user_meta_data, created_at, updated_at, is_anonymous, is_super_admin)
         values ($1, $2, $3, 'authenticated', $4, $5,
           '{\"provider\":\"email\",\"providers\":[\"email\"]}'::jsonb, $6, now(), now(), false, false)",
        &[&INSTANCE_ID, &id, &aud, &email, &hash, data],
    )
    .await?;
    models::upsert_email_identity(tx, id, email, false, data).await?;
    Ok(id)
}
