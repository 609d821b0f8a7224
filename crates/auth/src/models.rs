//! Rows of schema `auth` and the JSON shapes clients parse (reference section 3).

use chrono::{DateTime, SecondsFormat, Utc};
use deadpool_postgres::GenericClient;
use serde_json::{Map, Value, json};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::api::ApiError;

/// The instance every row belongs to.
pub const INSTANCE_ID: Uuid = Uuid::nil();

/// The columns [`User::from_row`] reads, in its order.
pub const USER_COLUMNS: &str = "id, aud, role, email, encrypted_password, email_confirmed_at, \
    invited_at, confirmation_sent_at, recovery_sent_at, email_change, email_change_sent_at, \
    last_sign_in_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at, phone, \
    phone_confirmed_at, phone_change, phone_change_sent_at, confirmed_at, banned_until, \
    reauthentication_sent_at, deleted_at, is_anonymous, confirmation_token, recovery_token, \
    email_change_token_new, email_change_token_current, reauthentication_token";

/// [`USER_COLUMNS`] qualified with the table alias `u`, for joins.
pub static USER_COLUMNS_OF_U: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    USER_COLUMNS
        .split(',')
        .map(|c| format!("u.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
});

/// How many columns [`USER_COLUMNS`] names: where the columns after them start.
pub fn user_column_count() -> usize {
    USER_COLUMNS.split(',').count()
}

/// One `auth.users` row.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub aud: String,
    pub role: String,
    pub email: String,
    pub encrypted_password: Option<String>,
    pub email_confirmed_at: Option<DateTime<Utc>>,
    pub invited_at: Option<DateTime<Utc>>,
    pub confirmation_sent_at: Option<DateTime<Utc>>,
    pub recovery_sent_at: Option<DateTime<Utc>>,
    pub email_change: String,
    pub email_change_sent_at: Option<DateTime<Utc>>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    pub app_metadata: Value,
    pub user_metadata: Value,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub phone: String,
    pub phone_confirmed_at: Option<DateTime<Utc>>,
    pub phone_change: String,
    pub phone_change_sent_at: Option<DateTime<Utc>>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub banned_until: Option<DateTime<Utc>>,
    pub reauthentication_sent_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub is_anonymous: bool,
    pub confirmation_token: String,
    pub recovery_token: String,
    pub email_change_token_new: String,
    pub email_change_token_current: String,
    pub reauthentication_token: String,
}

fn object_or_empty(v: Option<Value>) -> Value {
    match v {
        Some(Value::Object(m)) => Value::Object(m),
        _ => Value::Object(Map::new()),
    }
}

impl User {
    pub fn from_row(r: &Row) -> Self {
        let s = |i: usize| r.get::<_, Option<String>>(i).unwrap_or_default();
        Self {
            id: r.get(0),
            aud: s(1),
            role: s(2),
            email: s(3),
            encrypted_password: r.get(4),
            email_confirmed_at: r.get(5),
            invited_at: r.get(6),
            confirmation_sent_at: r.get(7),
            recovery_sent_at: r.get(8),
            email_change: s(9),
            email_change_sent_at: r.get(10),
            last_sign_in_at: r.get(11),
            app_metadata: object_or_empty(r.get(12)),
            user_metadata: object_or_empty(r.get(13)),
            created_at: r.get(14),
            updated_at: r.get(15),
            phone: s(16),
            phone_confirmed_at: r.get(17),
            phone_change: s(18),
            phone_change_sent_at: r.get(19),
            confirmed_at: r.get(20),
            banned_until: r.get(21),
            reauthentication_sent_at: r.get(22),
            deleted_at: r.get(23),
            is_anonymous: r.get(24),
            confirmation_token: s(25),
            recovery_token: s(26),
            email_change_token_new: s(27),
            email_change_token_current: s(28),
            reauthentication_token: s(29),
        }
    }

    pub fn is_banned(&self) -> bool {
        self.banned_until.is_some_and(|t| t > Utc::now())
    }

    pub fn email_confirmed(&self) -> bool {
        self.email_confirmed_at.is_some()
    }

    /// The user as clients see it; `identities` `None` renders as JSON `null`.
    pub fn to_json(&self, identities: Option<&[Identity]>, factors: &[Factor]) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("aud".into(), json!(self.aud));
        m.insert("role".into(), json!(self.role));
        m.insert("email".into(), json!(self.email));
        let optional = [
            ("email_confirmed_at", self.email_confirmed_at),
            ("phone_confirmed_at", self.phone_confirmed_at),
            ("confirmed_at", self.confirmed_at),
            ("invited_at", self.invited_at),
            ("confirmation_sent_at", self.confirmation_sent_at),
            ("recovery_sent_at", self.recovery_sent_at),
            ("email_change_sent_at", self.email_change_sent_at),
            ("phone_change_sent_at", self.phone_change_sent_at),
            ("reauthentication_sent_at", self.reauthentication_sent_at),
            ("last_sign_in_at", self.last_sign_in_at),
            ("banned_until", self.banned_until),
            ("deleted_at", self.deleted_at),
        ];
        for (k, v) in optional {
            if let Some(t) = v {
                m.insert(k.into(), json!(timestamp(t)));
            }
        }
        if !self.email_change.is_empty() {
            m.insert("new_email".into(), json!(self.email_change));
        }
        if !self.phone_change.is_empty() {
            m.insert("new_phone".into(), json!(self.phone_change));
        }
        m.insert("phone".into(), json!(self.phone));
        m.insert("app_metadata".into(), self.app_metadata.clone());
        m.insert("user_metadata".into(), self.user_metadata.clone());
        m.insert(
            "identities".into(),
            identities.map_or(Value::Null, |ids| {
                Value::Array(ids.iter().map(Identity::to_json).collect())
            }),
        );
        if !factors.is_empty() {
            m.insert(
                "factors".into(),
                Value::Array(factors.iter().map(Factor::to_json).collect()),
            );
        }
        m.insert("created_at".into(), json!(opt_timestamp(self.created_at)));
        m.insert("updated_at".into(), json!(opt_timestamp(self.updated_at)));
        m.insert("is_anonymous".into(), json!(self.is_anonymous));
        Value::Object(m)
    }
}

/// RFC 3339 with microseconds and `Z`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn opt_timestamp(t: Option<DateTime<Utc>>) -> String {
    t.map(timestamp).unwrap_or_default()
}

/// One `auth.identities` row.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Identity {
    pub id: Uuid,
    pub provider_id: String,
    pub user_id: Uuid,
    pub identity_data: Value,
    pub provider: String,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub email: Option<String>,
}

impl Identity {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "identity_id": self.id,
            "id": self.provider_id,
            "user_id": self.user_id,
            "identity_data": self.identity_data,
            "provider": self.provider,
            "last_sign_in_at": opt_timestamp(self.last_sign_in_at),
            "created_at": opt_timestamp(self.created_at),
            "updated_at": opt_timestamp(self.updated_at),
        });
        if let Some(e) = &self.email {
            v["email"] = json!(e);
        }
        v
    }
}

/// One `auth.mfa_factors` row.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Factor {
    pub id: Uuid,
    pub user_id: Uuid,
    pub friendly_name: Option<String>,
    pub factor_type: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub secret: Option<String>,
    pub phone: Option<String>,
    pub last_challenged_at: Option<DateTime<Utc>>,
}

/// The columns [`Factor::from_row`] reads, named as [`Factor`]'s fields.
pub const FACTOR_COLUMNS: &str = "id, user_id, friendly_name, factor_type::text, status::text, \
    created_at, updated_at, secret, phone, last_challenged_at";

impl Factor {
    pub fn from_row(r: &Row) -> Self {
        Self {
            id: r.get(0),
            user_id: r.get(1),
            friendly_name: r.get(2),
            factor_type: r.get(3),
            status: r.get(4),
            created_at: r.get(5),
            updated_at: r.get(6),
            secret: r.get(7),
            phone: r.get(8),
            last_challenged_at: r.get(9),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "factor_type": self.factor_type,
            "status": self.status,
            "created_at": timestamp(self.created_at),
            "updated_at": timestamp(self.updated_at),
            "last_challenged_at": self.last_challenged_at.map(timestamp),
            "phone": self.phone.clone().unwrap_or_default(),
        });
        if let Some(n) = self.friendly_name.as_deref().filter(|n| !n.is_empty()) {
            v["friendly_name"] = json!(n);
        }
        v
    }
}

impl From<tokio_postgres::Error> for ApiError {
    /// A unique violation lost to a concurrent request becomes the conflict it
    /// stands for; anything else is a 500.
    fn from(e: tokio_postgres::Error) -> Self {
        let unique = e
            .as_db_error()
            .filter(|d| *d.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
            .map(|d| d.constraint().unwrap_or("").to_owned());
        match unique.as_deref() {
            Some("users_email_partial_key") => ApiError::new(
                422,
                "email_exists",
                "A user with this email address has already been registered",
            ),
            Some("users_phone_key") => ApiError::new(
                422,
                "phone_exists",
                "A user with this phone number has already been registered",
            ),
            Some("mfa_factors_user_friendly_name_unique") => ApiError::new(
                422,
                "mfa_factor_name_conflict",
                "A factor with this friendly name for this user already exists",
            ),
            Some(_) => ApiError::new(
                409,
                "conflict",
                "The request conflicts with a concurrent change, please try again",
            ),
            None if e.code().is_some_and(|c| {
                *c == tokio_postgres::error::SqlState::UNTRANSLATABLE_CHARACTER
                    || *c == tokio_postgres::error::SqlState::CHARACTER_NOT_IN_REPERTOIRE
            }) =>
            {
                ApiError::new(
                    400,
                    "validation_failed",
                    "Input contains characters that cannot be stored (such as NUL)",
                )
            }
            None => ApiError::internal(e),
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ApiError::internal(e)
    }
}

/// The user with `id`, whatever its audience.
pub async fn user_by_id(db: &impl GenericClient, id: Uuid) -> Result<Option<User>, ApiError> {
    let sql = format!("select {USER_COLUMNS} from auth.users where id = $1");
    let select = db.prepare_cached(&sql).await?;
    Ok(db
        .query_opt(&select, &[&id])
        .await?
        .map(|r| User::from_row(&r)))
}

/// The user with `id`, locked for update.
pub async fn user_by_id_for_update(
    db: &impl GenericClient,
    id: Uuid,
) -> Result<Option<User>, ApiError> {
    let sql = format!("select {USER_COLUMNS} from auth.users where id = $1 for update");
    Ok(db
        .query_opt(&sql, &[&id])
        .await?
        .map(|r| User::from_row(&r)))
}

/// The user with `email` (already lower-cased) in `aud`.
pub async fn user_by_email(
    db: &impl GenericClient,
    email: &str,
    aud: &str,
) -> Result<Option<User>, ApiError> {
    let sql = format!(
        "select {USER_COLUMNS} from auth.users
         where instance_id = $1 and lower(email) = $2 and aud = $3 and is_sso_user = false
         limit 1"
    );
    Ok(db
        .query_opt(&sql, &[&INSTANCE_ID, &email, &aud])
        .await?
        .map(|r| User::from_row(&r)))
}

/// Whether any non-SSO user already holds `email`, in any audience (the unique index spans them).
pub async fn email_taken(
    db: &impl GenericClient,
    email: &str,
    except: Option<Uuid>,
) -> Result<bool, ApiError> {
    let row = db
        .query_one(
            "select exists(select 1 from auth.users where lower(email) = $1
               and is_sso_user = false and ($2::uuid is null or id <> $2))",
            &[&email, &except],
        )
        .await?;
    Ok(row.get(0))
}

/// A user's identities, oldest first (`$1`: the user).
pub static IDENTITIES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("select {IDENTITY_COLUMNS} from auth.identities where user_id = $1 order by created_at")
});

/// The columns [`identities_from_rows`] reads, named as [`Identity`]'s fields.
const IDENTITY_COLUMNS: &str = "id, provider_id, user_id, identity_data, provider, \
    last_sign_in_at, created_at, updated_at, email";

/// A user's MFA factors, oldest first (`$1`: the user).
pub static FACTORS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("select {FACTOR_COLUMNS} from auth.mfa_factors where user_id = $1 order by created_at")
});

/// A subquery answering, as JSON array text for [`from_json_text`], the
/// identities of the user whose id is the SQL expression `user_id`, in the
/// order of [`IDENTITIES_SQL`].
pub fn identities_json_sql(user_id: &str) -> String {
    format!(
        "(select coalesce(json_agg(i order by i.created_at), '[]')::text
   from (select {IDENTITY_COLUMNS} from auth.identities where user_id = {user_id}) i)"
    )
}

/// A subquery answering, as JSON array text for [`from_json_text`], the MFA
/// factors of the user whose id is the SQL expression `user_id`, in the order
/// of [`FACTORS_SQL`].
pub fn factors_json_sql(user_id: &str) -> String {
    format!(
        "(select coalesce(json_agg(f order by f.created_at), '[]')::text
   from (select {FACTOR_COLUMNS} from auth.mfa_factors where user_id = {user_id}) f)"
    )
}

/// A value the database answered as JSON text, such as the arrays of
/// [`identities_json_sql`] and [`factors_json_sql`]; `what` names it in the error.
pub fn from_json_text<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, ApiError> {
    serde_json::from_str(text)
        .map_err(|e| ApiError::internal(format!("unreadable {what} from the database: {e}")))
}

/// Identities from rows of [`IDENTITIES_SQL`] (or its variants).
fn identities_from_rows(rows: &[tokio_postgres::Row]) -> Vec<Identity> {
    rows.iter()
        .map(|r| Identity {
            id: r.get(0),
            provider_id: r.get(1),
            user_id: r.get(2),
            identity_data: r.get(3),
            provider: r.get(4),
            last_sign_in_at: r.get(5),
            created_at: r.get(6),
            updated_at: r.get(7),
            email: r.get(8),
        })
        .collect()
}

pub async fn identities(db: &impl GenericClient, user_id: Uuid) -> Result<Vec<Identity>, ApiError> {
    let select = db.prepare_cached(&IDENTITIES_SQL).await?;
    let rows = db.query(&select, &[&user_id]).await?;
    Ok(identities_from_rows(&rows))
}

pub async fn factors(db: &impl GenericClient, user_id: Uuid) -> Result<Vec<Factor>, ApiError> {
    let select = db.prepare_cached(&FACTORS_SQL).await?;
    let rows = db.query(&select, &[&user_id]).await?;
    Ok(rows.iter().map(Factor::from_row).collect())
}

/// The full user object of `user`: identities and factors loaded.
pub async fn user_json(db: &impl GenericClient, user: &User) -> Result<Value, ApiError> {
    let (ids, fs) = tokio::try_join!(identities(db, user.id), factors(db, user.id))?;
    Ok(user.to_json(Some(&ids), &fs))
}

/// Inserts or refreshes the `email` identity of a user.
pub async fn upsert_email_identity(
    db: &impl GenericClient,
    user: Uuid,
    email: &str,
    verified: bool,
    extra: &Value,
) -> Result<(), ApiError> {
    let mut data = match extra {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    data.insert("sub".into(), json!(user.to_string()));
    data.insert("email".into(), json!(email));
    data.insert("email_verified".into(), json!(verified));
    data.insert("phone_verified".into(), json!(false));
    db.execute(
        "insert into auth.identities
           (id, provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
         values (gen_random_uuid(), $1, $2, $3, 'email', now(), now(), now())
         on conflict (provider_id, provider) do update
           set identity_data = auth.identities.identity_data || jsonb_build_object(
                 'email', excluded.identity_data->'email',
                 'email_verified', excluded.identity_data->'email_verified'),
               updated_at = now()",
        &[&user.to_string(), &user, &Value::Object(data)],
    )
    .await?;
    Ok(())
}

/// Merges `patch` into a JSON object shallowly; `null` values delete keys.
pub fn merge_metadata(base: &Value, patch: &Value) -> Value {
    let mut out = match base {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    if let Value::Object(p) = patch {
        for (k, v) in p {
            if v.is_null() {
                out.remove(k);
            } else {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Adds `provider` to `app_metadata.providers` (and sets `provider` when unset).
pub fn with_provider(app_metadata: &Value, provider: &str) -> Value {
    let mut m = match app_metadata {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut providers: Vec<Value> = m
        .get("providers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !providers.iter().any(|p| p == provider) {
        providers.push(json!(provider));
    }
    if !m.get("provider").is_some_and(Value::is_string) {
        m.insert("provider".into(), json!(provider));
    }
    m.insert("providers".into(), Value::Array(providers));
    Value::Object(m)
}
