//! `POST /signup`: email and password, or anonymous (reference 7.1).

use chrono::Utc;
use ferrobase_proto::HttpResponse;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{guard, ok, require_object};
use crate::api::{ApiError, ApiRequest};
use crate::flows::{self, Kind, PkceParams};
use crate::models::{self, INSTANCE_ID};
use crate::service::State;
use crate::tokens;
use crate::{audit, crypto, validate};

#[derive(Deserialize, Default)]
struct SignupBody {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    data: Option<Value>,
    #[serde(flatten)]
    pkce: PkceParams,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

pub async fn signup(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let body: SignupBody = req.json()?;
    if state.config.disable_signup {
        return Err(ApiError::new(
            422,
            "signup_disabled",
            "Signups not allowed for this instance",
        ));
    }
    let data = require_object(body.data.clone())?;
    let aud = guard::audience(state, req);
    match (non_empty(&body.email), non_empty(&body.phone)) {
        (Some(_), Some(_)) => Err(ApiError::new(
            400,
            "validation_failed",
            "Only an email address or phone number should be provided on signup.",
        )),
        (None, None) => anonymous(state, req, data, &aud).await,
        (None, Some(_)) => Err(ApiError::new(
            422,
            "phone_provider_disabled",
            "Phone signups are disabled",
        )),
        (Some(email), None) => {
            let password = body.password.as_deref().unwrap_or("");
            if password.is_empty() {
                return Err(ApiError::new(
                    400,
                    "validation_failed",
                    "Signup requires a valid password",
                ));
            }
            validate::password(&state.config, password)?;
            let email = validate::email(email)?;
            let pkce = body.pkce.checked()?;
            email_signup(state, req, &email, password, data, &aud, pkce).await
        }
    }
}

async fn anonymous(
    state: &State,
    req: &ApiRequest,
    data: Value,
    aud: &str,
) -> Result<HttpResponse, ApiError> {
    if !state.config.anonymous_users {
        return Err(ApiError::new(
            422,
            "anonymous_provider_disabled",
            "Anonymous sign-ins are disabled",
        ));
    }
    let id = Uuid::new_v4();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "insert into auth.users (instance_id, id, aud, role, raw_app_meta_data, raw_user_meta_data,
           created_at, updated_at, is_anonymous, is_super_admin)
         values ($1, $2, $3, 'authenticated', '{}'::jsonb, $4, now(), now(), true, false)",
        &[&INSTANCE_ID, &id, &aud, &data],
    )
    .await?;
    audit::record_signup(state, &tx, &req.remote_addr, id, "", "anonymous").await?;
    let (issued, user) =
        tokens::issue_session(state, &tx, id, "anonymous", &guard::client_info(req)).await?;
    let user_json = models::user_json(&tx, &user).await?;
    tx.commit().await?;
    ok(&issued.to_json(user_json))
}

/// The answer to a signup for an email that is already confirmed, when saying
/// so would reveal that the address has an account.
fn obfuscated_user(email: &str, aud: &str, data: &Value) -> Value {
    let now = models::timestamp(Utc::now());
    json!({
        "id": Uuid::new_v4(),
        "aud": aud,
        "role": "",
        "email": email,
        "phone": "",
        "confirmation_sent_at": now,
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": data,
        "identities": [],
        "created_at": now,
        "updated_at": now,
        "is_anonymous": false,
    })
}

fn already_registered() -> ApiError {
    ApiError::new(422, "user_already_exists", "User already registered")
}

async fn email_signup(
    state: &State,
    req: &ApiRequest,
    email: &str,
    password: &str,
    data: Value,
    aud: &str,
    pkce: Option<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let hash = crypto::hash_password(password, state.config.bcrypt_cost).await?;
    let redirect = validate::redirect_to(&state.config, req.query_param("redirect_to").as_deref());
    let autoconfirm = state.config.autoconfirm;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let existing = models::user_by_email(&tx, email, aud).await?;
    let user_id = match existing {
        Some(u) if u.email_confirmed() || autoconfirm => {
            return if autoconfirm {
                Err(already_registered())
            } else {
                ok(&obfuscated_user(email, aud, &data))
            };
        }
        Some(u) => {
            // Unconfirmed: send the confirmation again.
            flows::check_frequency(state, u.confirmation_sent_at)?;
            let action = audit::Action::UserConfirmationRequested;
            audit::record_user(state, &tx, &req.remote_addr, &u, action).await?;
            u.id
        }
        None => {
            let id = Uuid::new_v4();
            let mut user_meta = match &data {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            if autoconfirm {
                user_meta.insert("email_verified".into(), json!(true));
            }
            let inserted = tx
                .query_opt(
                    "insert into auth.users (instance_id, id, aud, role, email, encrypted_password,
                       email_confirmed_at, raw_app_meta_data, raw_user_meta_data, created_at,
                       updated_at, is_anonymous, is_super_admin)
                     values ($1, $2, $3, 'authenticated', $4, $5, case when $6 then now() end,
                       '{\"provider\":\"email\",\"providers\":[\"email\"]}'::jsonb, $7, now(), now(),
                       false, false)
                     on conflict (email) where is_sso_user = false do nothing
                     returning id",
                    &[&INSTANCE_ID, &id, &aud, &email, &hash, &autoconfirm, &Value::Object(user_meta)],
                )
                .await?;
            if inserted.is_none() {
                // Another request registered the address meanwhile.
                return if autoconfirm {
                    Err(already_registered())
                } else {
                    ok(&obfuscated_user(email, aud, &data))
                };
            }
            models::upsert_email_identity(&tx, id, email, autoconfirm, &data).await?;
            audit::record_signup(state, &tx, &req.remote_addr, id, email, "email").await?;
            id
        }
    };
    if autoconfirm {
        let (issued, user) =
            tokens::issue_session(state, &tx, user_id, "password", &guard::client_info(req))
                .await?;
        let user_json = models::user_json(&tx, &user).await?;
        tx.commit().await?;
        return ok(&issued.to_json(user_json));
    }
    if let Some(challenge) = &pkce {
        flows::create_flow_state(&tx, user_id, challenge, "email/signup").await?;
    }
    let prepared = flows::prepare(
        state,
        &tx,
        user_id,
        Kind::Signup,
        email,
        &redirect,
        pkce.is_some(),
    )
    .await?;
    flows::send(state, &prepared).await?;
    let user = models::user_by_id(&tx, user_id)
        .await?
        .ok_or_else(|| ApiError::internal("user vanished during signup"))?;
    let user_json = models::user_json(&tx, &user).await?;
    tx.commit().await?;
    ok(&user_json)
}
