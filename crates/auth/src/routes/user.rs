//! The signed-in user: `GET/PUT /user`, `POST /logout`, `GET /reauthenticate`
//! (reference 7.3, 7.4).

use chrono::Utc;
use ferrobase_proto::HttpResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{guard, ok};
use crate::api::{ApiError, ApiRequest};
use crate::flows::{self, Kind, PkceParams};
use crate::models::{self, User};
use crate::service::State;
use crate::{audit, crypto, validate};

pub async fn get_user(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let caller = guard::require_user(state, req).await?;
    let db = state.pool.get().await?;
    ok(&models::user_json(&db, &caller.user).await?)
}

#[derive(Deserialize, Default)]
struct UpdateBody {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    nonce: Option<String>,
    data: Option<Value>,
    app_metadata: Option<Value>,
    #[serde(flatten)]
    pkce: PkceParams,
}

async fn has_verified_factor(state: &State, user: &User) -> Result<bool, ApiError> {
    let db = state.pool.get().await?;
    Ok(db
        .query_one(
            "select exists(select 1 from auth.mfa_factors where user_id = $1 and status = 'verified')",
            &[&user.id],
        )
        .await?
        .get(0))
}

pub async fn update_user(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let caller = guard::require_user(state, req).await?;
    let body: UpdateBody = req.json()?;
    if body.app_metadata.is_some() && !guard::is_admin(state, req) {
        return Err(ApiError::new(
            403,
            "not_admin",
            "Updating app_metadata requires admin privileges",
        ));
    }
    let data = body
        .data
        .clone()
        .map(|d| super::require_object(Some(d)))
        .transpose()?;
    let password = body.password.as_deref().filter(|p| !p.is_empty());
    let email = body
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(validate::email)
        .transpose()?
        .filter(|e| *e != caller.user.email);
    if body.phone.as_deref().is_some_and(|p| !p.trim().is_empty()) {
        return Err(ApiError::new(
            422,
            "phone_provider_disabled",
            "Phone provider is disabled",
        ));
    }
    if (password.is_some() || email.is_some())
        && caller.aal() != "aal2"
        && has_verified_factor(state, &caller.user).await?
    {
        return Err(ApiError::new(
            401,
            "insufficient_aal",
            "AAL2 session is required to update email or password when MFA is enabled.",
        ));
    }
    let pkce = body.pkce.checked()?;
    let new_hash = match password {
        None => None,
        Some(p) => {
            validate::password(&state.config, p)?;
            Some(crypto::hash_password(p, state.config.bcrypt_cost).await?)
        }
    };
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let user = models::user_by_id_for_update(&tx, caller.user.id)
        .await?
        .ok_or_else(|| ApiError::new(403, "user_not_found", "User not found"))?;
    if let Some(d) = &data {
        tx.execute(
            "update auth.users set raw_user_meta_data = $2, updated_at = now() where id = $1",
            &[&user.id, &models::merge_metadata(&user.user_metadata, d)],
        )
        .await?;
    }
    if let Some(a) = &body.app_metadata {
        let a = super::require_object(Some(a.clone()))?;
        tx.execute(
            "update auth.users set raw_app_meta_data = $2, updated_at = now() where id = $1",
            &[&user.id, &models::merge_metadata(&user.app_metadata, &a)],
        )
        .await?;
    }
    if let (Some(p), Some(hash)) = (password, &new_hash) {
        if crypto::verify_password(
            p,
            user.encrypted_password.as_deref(),
            state.config.bcrypt_cost,
        )
        .await?
        {
            return Err(ApiError::new(
                422,
                "same_password",
                "New password should be different from the old password.",
            ));
        }
        if state.config.secure_password_change {
            check_nonce(state, &tx, &caller, &user, body.nonce.as_deref()).await?;
        }
        tx.execute(
            "update auth.users set encrypted_password = $2, updated_at = now() where id = $1",
            &[&user.id, hash],
        )
        .await?;
        tx.execute(
            "delete from auth.sessions where user_id = $1 and ($2::uuid is null or id <> $2)",
            &[&user.id, &caller.session_id],
        )
        .await?;
    }
    if let Some(new_email) = &email {
        if models::email_taken(&tx, new_email, Some(user.id)).await? {
            return Err(ApiError::new(
                422,
                "email_exists",
                "A user with this email address has already been registered",
            ));
        }
        if user.email.is_empty() && state.config.autoconfirm {
            // An anonymous (or email-less) user links an address at once.
            tx.execute(
                "update auth.users set email = $2, email_confirmed_at = now(), is_anonymous = false,
                   raw_app_meta_data = $3, updated_at = now() where id = $1",
                &[&user.id, new_email, &models::with_provider(&user.app_metadata, "email")],
            )
            .await?;
            models::upsert_email_identity(&tx, user.id, new_email, true, &json!({})).await?;
        } else {
            flows::check_frequency(state, user.email_change_sent_at)?;
            let redirect =
                validate::redirect_to(&state.config, req.query_param("redirect_to").as_deref());
            tx.execute(
                "update auth.users set email_change = $2, email_change_confirm_status = 0,
                   email_change_token_current = '', updated_at = now() where id = $1",
                &[&user.id, new_email],
            )
            .await?;
            if let Some(challenge) = &pkce {
                flows::create_flow_state(&tx, user.id, challenge, "email_change").await?;
            }
            let mut mails = vec![
                flows::prepare(
                    state,
                    &tx,
                    user.id,
                    Kind::EmailChangeNew,
                    new_email,
                    &redirect,
                    pkce.is_some(),
                )
                .await?,
            ];
            if state.config.secure_email_change && !user.email.is_empty() {
                mails.push(
                    flows::prepare(
                        state,
                        &tx,
                        user.id,
                        Kind::EmailChangeCurrent,
                        &user.email,
                        &redirect,
                        pkce.is_some(),
                    )
                    .await?,
                );
            }
            for m in &mails {
                flows::send(state, m).await?;
            }
        }
    }
    let user = models::user_by_id(&tx, user.id)
        .await?
        .ok_or_else(|| ApiError::internal("user vanished during update"))?;
    let action = if new_hash.is_some() {
        audit::Action::UserUpdatedPassword
    } else {
        audit::Action::UserModified
    };
    audit::record_user(state, &tx, &req.remote_addr, &user, action).await?;
    let user_json = models::user_json(&tx, &user).await?;
    tx.commit().await?;
    ok(&user_json)
}

/// With secure password change on, sessions older than a day must present the
/// code mailed by `GET /reauthenticate`.
async fn check_nonce(
    state: &State,
    db: &impl deadpool_postgres::GenericClient,
    caller: &guard::Caller,
    user: &User,
    nonce: Option<&str>,
) -> Result<(), ApiError> {
    let recent = match caller.session_id {
        Some(s) => db
            .query_one(
                "select coalesce(created_at > now() - interval '24 hours', false)
                 from auth.sessions where id = $1",
                &[&s],
            )
            .await?
            .get::<_, bool>(0),
        None => false,
    };
    let Some(nonce) = nonce.filter(|n| !n.is_empty()) else {
        if recent {
            return Ok(());
        }
        return Err(ApiError::new(
            400,
            "reauthentication_needed",
            "Password update requires reauthentication",
        ));
    };
    let expected = crypto::otp_hash(&user.email, nonce);
    let fresh = user.reauthentication_sent_at.is_some_and(|t| {
        Utc::now() < t + chrono::Duration::from_std(state.config.mailer_otp_exp).unwrap_or_default()
    });
    if user.reauthentication_token.is_empty()
        || !fresh
        || !crypto::constant_time_eq(&user.reauthentication_token, &expected)
    {
        return Err(ApiError::new(
            400,
            "reauthentication_not_valid",
            "Requires reauthentication",
        ));
    }
    db.execute(
        "update auth.users set reauthentication_token = '' where id = $1",
        &[&user.id],
    )
    .await?;
    flows::clear_one_time_token(db, user.id, Kind::Reauthentication).await?;
    Ok(())
}

pub async fn logout(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let caller = guard::require_user(state, req).await?;
    let scope = req.query_param("scope").unwrap_or_else(|| "global".into());
    let mut client = state.pool.get().await?;
    let db = client.transaction().await?;
    // A token without a session stands for all of the user's sessions.
    let scope = match (scope.as_str(), caller.session_id) {
        ("local" | "others", None) => "global".to_owned(),
        _ => scope,
    };
    match scope.as_str() {
        "global" | "" => {
            db.execute(
                "delete from auth.sessions where user_id = $1",
                &[&caller.user.id],
            )
            .await?;
        }
        "local" => {
            if let Some(s) = caller.session_id {
                db.execute("delete from auth.sessions where id = $1", &[&s])
                    .await?;
            }
        }
        "others" => {
            db.execute(
                "delete from auth.sessions where user_id = $1 and ($2::uuid is null or id <> $2)",
                &[&caller.user.id, &caller.session_id],
            )
            .await?;
        }
        other => {
            return Err(ApiError::new(
                400,
                "validation_failed",
                format!(
                    "Unsupported logout scope {:?}",
                    other.chars().take(32).collect::<String>()
                ),
            ));
        }
    }
    audit::record(
        state,
        &db,
        &req.remote_addr,
        &audit::Actor::user(&caller.user),
        audit::Action::Logout,
        json!({"scope": scope}),
    )
    .await?;
    db.commit().await?;
    Ok(HttpResponse {
        status: 204,
        headers: vec![],
        body: Default::default(),
    })
}

pub async fn reauthenticate(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let caller = guard::require_user(state, req).await?;
    let user = &caller.user;
    if user.email.is_empty() {
        return Err(ApiError::new(
            422,
            "validation_failed",
            "Reauthentication requires the user to have an email or a phone number",
        ));
    }
    flows::check_frequency(state, user.reauthentication_sent_at)?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let prepared = flows::prepare(
        state,
        &tx,
        user.id,
        Kind::Reauthentication,
        &user.email,
        "",
        false,
    )
    .await?;
    audit::record_user(
        state,
        &tx,
        &req.remote_addr,
        user,
        audit::Action::UserReauthenticateRequested,
    )
    .await?;
    flows::send(state, &prepared).await?;
    tx.commit().await?;
    ok(&json!({}))
}
