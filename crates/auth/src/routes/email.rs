//! Email sign-in and confirmation: `/otp`, `/magiclink`, `/recover`, `/resend`,
//! `/verify` (reference 7.5, 7.6).

use chrono::{DateTime, Utc};
use ferrobase_proto::{Header, HttpResponse};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{guard, ok, require_object};
use crate::api::{ApiError, ApiRequest};
use crate::flows::{self, Kind, PkceParams, url_encode};
use crate::models::{self, INSTANCE_ID, USER_COLUMNS, User};
use crate::service::State;
use crate::{audit, crypto, tokens, validate};

#[derive(Deserialize, Default)]
struct OtpBody {
    email: Option<String>,
    phone: Option<String>,
    data: Option<Value>,
    create_user: Option<bool>,
    #[serde(flatten)]
    pkce: PkceParams,
}

fn phone_disabled() -> ApiError {
    ApiError::new(422, "phone_provider_disabled", "Unsupported phone provider")
}

/// `POST /otp` and the legacy `POST /magiclink`.
pub async fn otp(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let body: OtpBody = req.json()?;
    if body.phone.as_deref().is_some_and(|p| !p.trim().is_empty()) {
        return Err(phone_disabled());
    }
    let email = validate::email(body.email.as_deref().unwrap_or(""))?;
    let data = require_object(body.data.clone())?;
    let pkce = body.pkce.checked()?;
    let redirect = validate::redirect_to(&state.config, req.query_param("redirect_to").as_deref());
    let aud = guard::audience(state, req);
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let (user_id, kind) = match models::user_by_email(&tx, &email, &aud).await? {
        Some(u) if u.email_confirmed() => {
            flows::check_frequency(state, u.recovery_sent_at)?;
            (u.id, Kind::Magiclink)
        }
        Some(u) => {
            flows::check_frequency(state, u.confirmation_sent_at)?;
            (u.id, Kind::Signup)
        }
        None => {
            if !body.create_user.unwrap_or(true) {
                return Err(ApiError::new(
                    422,
                    "otp_disabled",
                    "Signups not allowed for otp",
                ));
            }
            if state.config.disable_signup {
                return Err(ApiError::new(
                    422,
                    "signup_disabled",
                    "Signups not allowed for this instance",
                ));
            }
            let id = Uuid::new_v4();
            let confirmed = state.config.autoconfirm;
            let mut meta = data.clone();
            if confirmed {
                meta["email_verified"] = json!(true);
            }
            let inserted = tx
                .execute(
                    "insert into auth.users (instance_id, id, aud, role, email, email_confirmed_at,
                       raw_app_meta_data, raw_user_meta_data, created_at, updated_at,
                       is_anonymous, is_super_admin)
                     values ($1, $2, $3, 'authenticated', $4, case when $5 then now() end,
                       '{\"provider\":\"email\",\"providers\":[\"email\"]}'::jsonb, $6, now(), now(),
                       false, false)
                     on conflict (email) where is_sso_user = false do nothing",
                    &[&INSTANCE_ID, &id, &aud, &email, &confirmed, &meta],
                )
                .await?;
            if inserted == 0 {
                // A concurrent request registered the address first.
                return Err(ApiError::new(
                    409,
                    "conflict",
                    "A concurrent request for this email is in progress, please try again",
                ));
            }
            models::upsert_email_identity(&tx, id, &email, confirmed, &data).await?;
            audit::record_signup(state, &tx, &req.remote_addr, id, &email, "email").await?;
            (
                id,
                if confirmed {
                    Kind::Magiclink
                } else {
                    Kind::Signup
                },
            )
        }
    };
    if let Some(challenge) = &pkce {
        let method = if kind == Kind::Signup {
            "email/signup"
        } else {
            "magiclink"
        };
        flows::create_flow_state(&tx, user_id, challenge, method).await?;
    }
    let prepared =
        flows::prepare(state, &tx, user_id, kind, &email, &redirect, pkce.is_some()).await?;
    let actor = audit::Actor {
        id: user_id.to_string(),
        username: email.clone(),
    };
    let action = if kind == Kind::Signup {
        audit::Action::UserConfirmationRequested
    } else {
        audit::Action::UserRecoveryRequested
    };
    audit::record(state, &tx, &req.remote_addr, &actor, action, json!({})).await?;
    flows::send(state, &prepared).await?;
    tx.commit().await?;
    ok(&json!({}))
}

#[derive(Deserialize, Default)]
struct RecoverBody {
    email: Option<String>,
    #[serde(flatten)]
    pkce: PkceParams,
}

/// `POST /recover`: `{}` whether or not the address has an account.
pub async fn recover(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let body: RecoverBody = req.json()?;
    let email = validate::email(body.email.as_deref().unwrap_or(""))?;
    let pkce = body.pkce.checked()?;
    let redirect = validate::redirect_to(&state.config, req.query_param("redirect_to").as_deref());
    let aud = guard::audience(state, req);
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    if let Some(u) = models::user_by_email(&tx, &email, &aud).await? {
        flows::check_frequency(state, u.recovery_sent_at)?;
        if let Some(challenge) = &pkce {
            flows::create_flow_state(&tx, u.id, challenge, "recovery").await?;
        }
        let prepared = flows::prepare(
            state,
            &tx,
            u.id,
            Kind::Recovery,
            &email,
            &redirect,
            pkce.is_some(),
        )
        .await?;
        let action = audit::Action::UserRecoveryRequested;
        audit::record_user(state, &tx, &req.remote_addr, &u, action).await?;
        flows::send(state, &prepared).await?;
    }
    tx.commit().await?;
    ok(&json!({}))
}

#[derive(Deserialize, Default)]
struct ResendBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    #[serde(flatten)]
    pkce: PkceParams,
}

/// `POST /resend`.
pub async fn resend(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let body: ResendBody = req.json()?;
    let kind = body.kind.as_deref().unwrap_or("");
    match kind {
        "signup" | "email_change" => {}
        "sms" | "phone_change" => return Err(phone_disabled()),
        _ => {
            return Err(ApiError::new(
                400,
                "validation_failed",
                "Missing one of these types: signup, email_change, sms, phone_change",
            ));
        }
    }
    if body.phone.as_deref().is_some_and(|p| !p.trim().is_empty()) {
        return Err(phone_disabled());
    }
    let email = validate::email(body.email.as_deref().unwrap_or(""))?;
    let pkce = body.pkce.checked()?;
    let redirect = validate::redirect_to(&state.config, req.query_param("redirect_to").as_deref());
    let aud = guard::audience(state, req);
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let mut mails = Vec::new();
    if kind == "signup" {
        if let Some(u) = models::user_by_email(&tx, &email, &aud).await?
            && !u.email_confirmed()
        {
            flows::check_frequency(state, u.confirmation_sent_at)?;
            if let Some(c) = &pkce {
                flows::create_flow_state(&tx, u.id, c, "email/signup").await?;
            }
            mails.push(
                flows::prepare(
                    state,
                    &tx,
                    u.id,
                    Kind::Signup,
                    &email,
                    &redirect,
                    pkce.is_some(),
                )
                .await?,
            );
        }
    } else {
        let sql = format!(
            "select {USER_COLUMNS} from auth.users where instance_id = $1 and aud = $2
               and (lower(email) = $3 or email_change = $3) and email_change <> '' limit 1"
        );
        if let Some(u) = tx
            .query_opt(&sql, &[&INSTANCE_ID, &aud, &email])
            .await?
            .map(|r| User::from_row(&r))
        {
            flows::check_frequency(state, u.email_change_sent_at)?;
            if let Some(c) = &pkce {
                flows::create_flow_state(&tx, u.id, c, "email_change").await?;
            }
            mails.push(
                flows::prepare(
                    state,
                    &tx,
                    u.id,
                    Kind::EmailChangeNew,
                    &u.email_change,
                    &redirect,
                    pkce.is_some(),
                )
                .await?,
            );
            if state.config.secure_email_change && !u.email.is_empty() {
                mails.push(
                    flows::prepare(
                        state,
                        &tx,
                        u.id,
                        Kind::EmailChangeCurrent,
                        &u.email,
                        &redirect,
                        pkce.is_some(),
                    )
                    .await?,
                );
            }
        }
    }
    for m in &mails {
        flows::send(state, m).await?;
    }
    tx.commit().await?;
    ok(&json!({}))
}

#[derive(Deserialize, Default)]
struct VerifyBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    token: Option<String>,
    token_hash: Option<String>,
}

fn otp_expired() -> ApiError {
    ApiError::new(403, "otp_expired", "Token has expired or is invalid")
}

/// What a successful verification produced.
enum Verified {
    /// A session (and, for PKCE tokens, the flow's auth code).
    Session(Value, Option<String>, tokens::Issued),
    /// The first of two email change confirmations.
    Pending,
}

/// Which token column a verification type is checked against.
fn candidates(kind: &str) -> Option<&'static [(&'static str, Kind)]> {
    const SIGNUP: &[(&str, Kind)] = &[("confirmation_token", Kind::Signup)];
    const INVITE: &[(&str, Kind)] = &[("confirmation_token", Kind::Invite)];
    const MAGIC: &[(&str, Kind)] = &[("recovery_token", Kind::Magiclink)];
    const RECOVERY: &[(&str, Kind)] = &[("recovery_token", Kind::Recovery)];
    const EMAIL: &[(&str, Kind)] = &[
        ("confirmation_token", Kind::Signup),
        ("recovery_token", Kind::Magiclink),
    ];
    const CHANGE: &[(&str, Kind)] = &[
        ("email_change_token_new", Kind::EmailChangeNew),
        ("email_change_token_current", Kind::EmailChangeCurrent),
    ];
    match kind {
        "signup" => Some(SIGNUP),
        "invite" => Some(INVITE),
        "magiclink" => Some(MAGIC),
        "recovery" => Some(RECOVERY),
        "email" => Some(EMAIL),
        "email_change" => Some(CHANGE),
        _ => None,
    }
}

async fn verify_token(
    state: &State,
    req: &ApiRequest,
    kind: &str,
    email: Option<&str>,
    token: Option<&str>,
    token_hash: Option<&str>,
) -> Result<Verified, ApiError> {
    let cands = candidates(kind).ok_or_else(|| {
        ApiError::new(
            400,
            "validation_failed",
            "Verify requires a verification type",
        )
    })?;
    let aud = guard::audience(state, req);
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let mut found: Option<(User, Kind, String)> = None;
    for (column, k) in cands {
        let hashes: Vec<String> = match (token_hash, email, token) {
            (Some(h), _, _) if h.len() <= 128 => vec![h.to_owned()],
            (None, Some(e), Some(t)) if t.len() <= 64 => {
                let e = e.trim().to_lowercase();
                let h = crypto::otp_hash(&e, t.trim());
                vec![h.clone(), format!("pkce_{h}")]
            }
            _ => return Err(otp_expired()),
        };
        let sql = format!(
            "select {USER_COLUMNS} from auth.users
             where instance_id = $1 and aud = $2 and {column} = any($3) and {column} <> ''
             limit 1 for update"
        );
        if let Some(r) = tx.query_opt(&sql, &[&INSTANCE_ID, &aud, &hashes]).await? {
            let user = User::from_row(&r);
            let stored = match *column {
                "confirmation_token" => user.confirmation_token.clone(),
                "recovery_token" => user.recovery_token.clone(),
                "email_change_token_new" => user.email_change_token_new.clone(),
                _ => user.email_change_token_current.clone(),
            };
            found = Some((user, *k, stored));
            break;
        }
    }
    let Some((user, kind, stored)) = found else {
        return Err(otp_expired());
    };
    let sent_at: Option<DateTime<Utc>> = match kind {
        Kind::Signup | Kind::Invite => user.confirmation_sent_at,
        Kind::Magiclink | Kind::Recovery => user.recovery_sent_at,
        _ => user.email_change_sent_at,
    };
    let exp = chrono::Duration::from_std(state.config.mailer_otp_exp).unwrap_or_default();
    if sent_at.is_none_or(|t| Utc::now() >= t + exp) {
        return Err(otp_expired());
    }
    if user.is_banned() {
        return Err(ApiError::new(403, "user_banned", "User is banned"));
    }
    let id = user.id;
    let method = match kind {
        Kind::Signup | Kind::Invite => {
            tx.execute(
                "update auth.users set confirmation_token = '',
                   email_confirmed_at = coalesce(email_confirmed_at, now()),
                   raw_user_meta_data = coalesce(raw_user_meta_data, '{}'::jsonb) || '{\"email_verified\":true}',
                   updated_at = now() where id = $1",
                &[&id],
            )
            .await?;
            models::upsert_email_identity(&tx, id, &user.email, true, &json!({})).await?;
            let action = if kind == Kind::Invite {
                audit::Action::InviteAccepted
            } else {
                audit::Action::UserSignedUp
            };
            audit::record_user(state, &tx, &req.remote_addr, &user, action).await?;
            if kind == Kind::Invite {
                "invite"
            } else {
                "otp"
            }
        }
        Kind::Magiclink | Kind::Recovery => {
            tx.execute(
                "update auth.users set recovery_token = '',
                   email_confirmed_at = coalesce(email_confirmed_at, now()), updated_at = now()
                 where id = $1",
                &[&id],
            )
            .await?;
            if user.email_confirmed_at.is_none() {
                models::upsert_email_identity(&tx, id, &user.email, true, &json!({})).await?;
            }
            if kind == Kind::Recovery {
                "recovery"
            } else {
                "magiclink"
            }
        }
        _ => {
            let column = if kind == Kind::EmailChangeNew {
                "email_change_token_new"
            } else {
                "email_change_token_current"
            };
            tx.execute(
                &format!("update auth.users set {column} = '', email_change_confirm_status = 1 where id = $1"),
                &[&id],
            )
            .await?;
            let other_pending = if kind == Kind::EmailChangeNew {
                !user.email_change_token_current.is_empty()
            } else {
                !user.email_change_token_new.is_empty()
            };
            flows::clear_one_time_token(&tx, id, kind).await?;
            if other_pending && state.config.secure_email_change {
                tx.commit().await?;
                return Ok(Verified::Pending);
            }
            let new_email = user.email_change.clone();
            if new_email.is_empty() || models::email_taken(&tx, &new_email, Some(id)).await? {
                return Err(otp_expired());
            }
            tx.execute(
                "update auth.users set email = $2, email_change = '', email_change_token_new = '',
                   email_change_token_current = '', email_change_confirm_status = 0,
                   email_confirmed_at = now(), is_anonymous = false, raw_app_meta_data = $3,
                   updated_at = now() where id = $1",
                &[
                    &id,
                    &new_email,
                    &models::with_provider(&user.app_metadata, "email"),
                ],
            )
            .await?;
            models::upsert_email_identity(&tx, id, &new_email, true, &json!({})).await?;
            "email_change"
        }
    };
    flows::clear_one_time_token(&tx, id, kind).await?;
    tx.execute(
        "update auth.users set raw_app_meta_data = $2 where id = $1",
        &[&id, &models::with_provider(&user.app_metadata, "email")],
    )
    .await?;
    let mut auth_code = None;
    if stored.starts_with("pkce_") {
        let flow_method = match kind {
            Kind::Signup => "email/signup",
            Kind::Invite => "invite",
            Kind::Magiclink => "magiclink",
            Kind::Recovery => "recovery",
            _ => "email_change",
        };
        auth_code = tx
            .query_opt(
                "update auth.flow_state set auth_code_issued_at = now(), updated_at = now()
                 where id = (select id from auth.flow_state where user_id = $1
                   and authentication_method = $2 order by created_at desc limit 1)
                 returning auth_code",
                &[&id, &flow_method],
            )
            .await?
            .map(|r| r.get(0));
    }
    let (issued, user) =
        tokens::issue_session(state, &tx, id, method, &guard::client_info(req)).await?;
    let user_json = models::user_json(&tx, &user).await?;
    tx.commit().await?;
    Ok(Verified::Session(user_json, auth_code, issued))
}

/// `POST /verify`.
pub async fn verify_post(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let body: VerifyBody = req.json()?;
    let kind = body.kind.as_deref().unwrap_or("");
    if matches!(kind, "sms" | "phone_change")
        || body.phone.as_deref().is_some_and(|p| !p.is_empty())
    {
        // No SMS provider is configured, so no phone code was ever issued:
        // every one is wrong, once the number itself is well formed.
        validate::phone(body.phone.as_deref().unwrap_or(""))?;
        return Err(otp_expired());
    }
    let token_hash = body.token_hash.as_deref().filter(|s| !s.is_empty());
    let email = body.email.as_deref().filter(|s| !s.is_empty());
    let token = body.token.as_deref().filter(|s| !s.is_empty());
    if token_hash.is_none() && (email.is_none() || token.is_none()) {
        return Err(ApiError::new(
            400,
            "validation_failed",
            "Only the token_hash and type should be provided, or an email and a token",
        ));
    }
    match verify_token(state, req, kind, email, token, token_hash).await? {
        Verified::Pending => ok(&json!({
            "msg": "Confirmation link accepted. Please proceed to confirm link sent to the other email",
            "code": "200",
        })),
        Verified::Session(user, _, issued) => ok(&issued.to_json(user)),
    }
}

fn see_other(location: String) -> HttpResponse {
    HttpResponse {
        status: 303,
        headers: vec![Header {
            name: "location".into(),
            value: location,
        }],
        body: Default::default(),
    }
}

/// `GET /verify?token&type&redirect_to`: always a 303 back to the app.
pub async fn verify_get(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let redirect = validate::redirect_to(&state.config, req.query_param("redirect_to").as_deref());
    let kind = req.query_param("type").unwrap_or_default();
    let token = req.query_param("token").unwrap_or_default();
    let pkce = token.starts_with("pkce_");
    let result = if token.is_empty() {
        Err(otp_expired())
    } else {
        verify_token(state, req, &kind, None, None, Some(&token)).await
    };
    let sep = |s: &str| if s.contains('?') { '&' } else { '?' };
    let location = match result {
        Ok(Verified::Pending) => format!(
            "{redirect}#message={}&sb=",
            url_encode(
                "Confirmation link accepted. Please proceed to confirm link sent to the other email"
            )
        ),
        Ok(Verified::Session(_, Some(code), _)) => {
            format!("{redirect}{}code={}", sep(&redirect), url_encode(&code))
        }
        Ok(Verified::Session(_, None, issued)) => format!(
            "{redirect}#access_token={}&expires_at={}&expires_in={}&refresh_token={}&sb=&token_type=bearer&type={}",
            issued.access_token,
            issued.expires_at,
            issued.expires_in,
            issued.refresh_token,
            url_encode(&kind)
        ),
        Err(e) if e.status >= 500 => return Err(e),
        Err(e) => {
            let error = if e.status == 403 {
                "access_denied"
            } else {
                "invalid_request"
            };
            let description = if e.code == "otp_expired" {
                "Email link is invalid or has expired".to_owned()
            } else {
                e.message.clone()
            };
            let params = format!(
                "error={error}&error_code={}&error_description={}&sb=",
                url_encode(&e.code),
                url_encode(&description)
            );
            if pkce {
                format!("{redirect}{}{params}", sep(&redirect))
            } else {
                format!("{redirect}#{params}")
            }
        }
    };
    Ok(see_other(location))
}
