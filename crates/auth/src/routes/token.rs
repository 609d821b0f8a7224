//! `POST /token`: password, refresh_token and pkce grants (reference 7.2).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ferrobase_proto::HttpResponse;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{guard, ok};
use crate::api::{ApiError, ApiRequest, json_response};
use crate::models::{self, USER_COLUMNS, User};
use crate::service::State;
use crate::{crypto, tokens, validate};

/// Lifetime of a PKCE auth code.
const FLOW_STATE_LIFETIME_SECS: i64 = 300;

pub async fn token(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    match req.query_param("grant_type").as_deref() {
        Some("password") => password(state, req).await,
        Some("refresh_token") => refresh(state, req).await,
        Some("pkce") => pkce(state, req).await,
        Some("id_token") => id_token(req),
        Some("web3") => Err(ApiError::new(
            422,
            "web3_provider_disabled",
            "Web3 provider is disabled",
        )),
        _ => Err(ApiError::new(
            400,
            "invalid_credentials",
            "unsupported_grant_type",
        )),
    }
}

#[derive(Deserialize, Default)]
struct IdTokenBody {
    provider: Option<String>,
    issuer: Option<String>,
}

/// `grant_type=id_token`: no OpenID Connect provider is configured in this
/// deployment, so every issuer is refused as GoTrue refuses a disabled one.
fn id_token(req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let body: IdTokenBody = req.json()?;
    let issuer = match body.provider.as_deref().unwrap_or("") {
        "google" => "https://accounts.google.com".to_owned(),
        "apple" => "https://appleid.apple.com".to_owned(),
        "facebook" => "https://www.facebook.com".to_owned(),
        "" => body.issuer.unwrap_or_default(),
        other => other.to_owned(),
    };
    if issuer.is_empty() {
        return Err(ApiError::new(
            400,
            "validation_failed",
            "provider or client_id and issuer required",
        ));
    }
    Err(ApiError::new(
        400,
        "provider_disabled",
        format!("Provider (issuer {issuer:?}) is not enabled"),
    ))
}

#[derive(Deserialize, Default)]
struct PasswordBody {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(400, "invalid_credentials", "Invalid login credentials")
}

async fn password(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let body: PasswordBody = req.json()?;
    let email = body
        .email
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let phone = body
        .phone
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let password = body.password.unwrap_or_default();
    let aud = guard::audience(state, req);
    let user = {
        let db = state.pool.get().await?;
        match (email, phone) {
            (Some(_), Some(_)) => {
                return Err(ApiError::new(
                    400,
                    "validation_failed",
                    "Only an email address or phone number should be provided on login.",
                ));
            }
            (None, None) => {
                return Err(ApiError::new(
                    400,
                    "validation_failed",
                    "missing email or phone",
                ));
            }
            (Some(e), None) if e.len() <= 255 => {
                models::user_by_email(&db, &e.to_lowercase(), &aud).await?
            }
            (None, Some(p)) => match validate::phone(p) {
                Ok(p) => {
                    let sql = format!(
                        "select {USER_COLUMNS} from auth.users
                         where instance_id = $1 and phone = $2 and aud = $3 limit 1"
                    );
                    db.query_opt(&sql, &[&models::INSTANCE_ID, &p, &aud])
                        .await?
                        .map(|r| User::from_row(&r))
                }
                Err(_) => None,
            },
            _ => None,
        }
    };
    let hash = user.as_ref().and_then(|u| u.encrypted_password.clone());
    let matches = !password.is_empty()
        && password.len() <= 72
        && crypto::verify_password(&password, hash.as_deref(), state.config.bcrypt_cost).await?;
    let Some(user) = user.filter(|_| matches) else {
        return Err(invalid_credentials());
    };
    if user.is_banned() {
        return Err(ApiError::new(400, "user_banned", "User is banned"));
    }
    if email.is_some() && !user.email_confirmed() {
        return Err(ApiError::new(
            400,
            "email_not_confirmed",
            "Email not confirmed",
        ));
    }
    if phone.is_some() && user.phone_confirmed_at.is_none() {
        return Err(ApiError::new(
            400,
            "phone_not_confirmed",
            "Phone not confirmed",
        ));
    }
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let (issued, user) =
        tokens::issue_session(state, &tx, user.id, "password", &guard::client_info(req)).await?;
    tx.execute(
        "update auth.identities set last_sign_in_at = now() where user_id = $1 and provider = 'email'",
        &[&user.id],
    )
    .await?;
    let user_json = models::user_json(&tx, &user).await?;
    tx.commit().await?;
    let mut session = issued.to_json(user_json);
    if let Some((message, reasons)) = validate::password_weakness(&state.config, &password) {
        session["weak_password"] = json!({"message": message, "reasons": reasons});
    }
    ok(&session)
}

#[derive(Deserialize, Default)]
struct RefreshBody {
    refresh_token: Option<String>,
}

async fn refresh(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let body: RefreshBody = req.json()?;
    let Some(token) = body.refresh_token.filter(|t| !t.is_empty()) else {
        return Ok(json_response(
            400,
            &json!({"error": "invalid_request", "error_description": "refresh_token required"}),
        ));
    };
    let (issued, user_json) = tokens::refresh(state, &token, &req.remote_addr).await?;
    ok(&issued.to_json(user_json))
}

#[derive(Deserialize, Default)]
struct PkceBody {
    auth_code: Option<String>,
    code_verifier: Option<String>,
}

/// Checks a PKCE verifier against the saved challenge.
pub fn verifier_matches(method: &str, challenge: &str, verifier: &str) -> bool {
    match method.to_ascii_lowercase().as_str() {
        "s256" => {
            let digest = crypto::sha256(verifier.as_bytes());
            crypto::constant_time_eq(&URL_SAFE_NO_PAD.encode(digest), challenge)
        }
        "plain" => crypto::constant_time_eq(verifier, challenge),
        _ => false,
    }
}

async fn pkce(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    let body: PkceBody = req.json()?;
    let (Some(code), Some(verifier)) = (
        body.auth_code.filter(|s| !s.is_empty()),
        body.code_verifier.filter(|s| !s.is_empty()),
    ) else {
        return Err(ApiError::new(
            400,
            "validation_failed",
            "invalid request: both auth code and code verifier should be non-empty",
        ));
    };
    if !(43..=128).contains(&verifier.len()) {
        return Err(ApiError::new(
            400,
            "validation_failed",
            "code verifier should be at least 43 characters and at most 128 characters",
        ));
    }
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "select id, user_id, code_challenge_method::text, code_challenge, authentication_method,
                    coalesce(auth_code_issued_at, created_at)
             from auth.flow_state where auth_code = $1 and auth_code_issued_at is not null
             for update",
            &[&code],
        )
        .await?
    else {
        return Err(ApiError::new(
            404,
            "flow_state_not_found",
            "invalid flow state, no valid flow state found",
        ));
    };
    let flow_id: Uuid = row.get(0);
    let user_id: Option<Uuid> = row.get(1);
    let method: String = row.get(2);
    let challenge: String = row.get(3);
    let auth_method: String = row.get(4);
    let issued_at: DateTime<Utc> = row.get(5);
    if Utc::now() > issued_at + chrono::Duration::seconds(FLOW_STATE_LIFETIME_SECS) {
        tx.execute("delete from auth.flow_state where id = $1", &[&flow_id])
            .await?;
        tx.commit().await?;
        return Err(ApiError::new(
            422,
            "flow_state_expired",
            "invalid flow state, flow state has expired",
        ));
    }
    if !verifier_matches(&method, &challenge, &verifier) {
        return Err(ApiError::new(
            400,
            "bad_code_verifier",
            "code challenge does not match previously saved code verifier",
        ));
    }
    tx.execute("delete from auth.flow_state where id = $1", &[&flow_id])
        .await?;
    let user_id = user_id.ok_or_else(|| ApiError::new(404, "user_not_found", "User not found"))?;
    let (issued, user) =
        tokens::issue_session(state, &tx, user_id, &auth_method, &guard::client_info(req)).await?;
    let user_json = models::user_json(&tx, &user).await?;
    tx.commit().await?;
    ok(&issued.to_json(user_json))
}
