//! TOTP multi-factor authentication: `/factors` enroll, challenge, verify,
//! unenroll (reference 7.9).

use chrono::{Duration, Utc};
use ferrobase_proto::HttpResponse;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::guard::{self, Caller};
use super::ok;
use crate::api::{ApiError, ApiRequest};
use crate::flows::url_encode;
use crate::models::{self, FACTOR_COLUMNS, Factor};
use crate::service::State;
use crate::{audit, crypto, tokens};

/// How long an unverified factor and a challenge stay usable.
const LIFETIME_SECS: i64 = 300;
const MAX_FRIENDLY_NAME: usize = 256;

/// Routes below `/factors`.
pub async fn route(state: &State, req: &ApiRequest, rest: &str) -> Result<HttpResponse, ApiError> {
    let caller = guard::require_user(state, req).await?;
    if caller.user.is_anonymous {
        return Err(ApiError::new(
            403,
            "no_authorization",
            "Anonymous user not allowed to perform these actions",
        ));
    }
    let parts: Vec<&str> = rest
        .trim_start_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    match (req.method.as_str(), parts.as_slice()) {
        ("POST", []) => enroll(state, req, &caller).await,
        ("POST", [id, "challenge"]) => challenge(state, req, &caller, parse_id(id)?).await,
        ("POST", [id, "verify"]) => verify(state, req, &caller, parse_id(id)?).await,
        ("DELETE", [id]) => unenroll(state, req, &caller, parse_id(id)?).await,
        _ => Err(ApiError::new(404, "not_found", "Not Found")),
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::new(404, "mfa_factor_not_found", "Factor not found"))
}

/// Records what the caller did with one of their factors.
async fn audit_factor(
    state: &State,
    req: &ApiRequest,
    db: &impl deadpool_postgres::GenericClient,
    caller: &Caller,
    action: audit::Action,
    factor: Uuid,
) -> Result<(), ApiError> {
    let actor = audit::Actor::user(&caller.user);
    let traits = json!({"factor_id": factor});
    audit::record(state, db, &req.remote_addr, &actor, action, traits).await
}

fn insufficient_aal(message: &str) -> ApiError {
    ApiError::new(422, "insufficient_aal", message)
}

async fn own_factor(state: &State, caller: &Caller, id: Uuid) -> Result<Factor, ApiError> {
    let db = state.pool.get().await?;
    let sql =
        format!("select {FACTOR_COLUMNS} from auth.mfa_factors where id = $1 and user_id = $2");
    db.query_opt(&sql, &[&id, &caller.user.id])
        .await?
        .map(|r| Factor::from_row(&r))
        .ok_or_else(|| ApiError::new(404, "mfa_factor_not_found", "Factor not found"))
}

#[derive(Deserialize, Default)]
struct EnrollBody {
    factor_type: Option<String>,
    friendly_name: Option<String>,
    issuer: Option<String>,
}

fn default_issuer(state: &State) -> String {
    if let Some(i) = &state.config.mfa_issuer {
        return i.clone();
    }
    let site = &state.config.site_url;
    site.split_once("://")
        .map_or(site.as_str(), |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .to_owned()
}

async fn enroll(
    state: &State,
    req: &ApiRequest,
    caller: &Caller,
) -> Result<HttpResponse, ApiError> {
    let body: EnrollBody = req.json()?;
    match body.factor_type.as_deref() {
        Some("totp") => {}
        Some("phone") => {
            return Err(ApiError::new(
                422,
                "mfa_phone_enroll_not_enabled",
                "MFA enroll is disabled for Phone",
            ));
        }
        Some("webauthn") => {
            return Err(ApiError::new(
                422,
                "mfa_webauthn_enroll_not_enabled",
                "MFA enroll is disabled for WebAuthn",
            ));
        }
        _ => {
            return Err(ApiError::new(
                400,
                "validation_failed",
                "factor_type needs to be totp, phone or webauthn",
            ));
        }
    }
    let name = body.friendly_name.unwrap_or_default().trim().to_owned();
    if name.chars().count() > MAX_FRIENDLY_NAME {
        return Err(ApiError::new(
            400,
            "validation_failed",
            "friendly_name is too long",
        ));
    }
    let issuer = body
        .issuer
        .filter(|i| !i.trim().is_empty())
        .unwrap_or_else(|| default_issuer(state));
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    // Serialize enrollments of one user.
    models::user_by_id_for_update(&tx, caller.user.id).await?;
    tx.execute(
        "delete from auth.mfa_factors where user_id = $1 and status = 'unverified'
           and created_at < now() - make_interval(secs => $2)",
        &[&caller.user.id, &(LIFETIME_SECS as f64)],
    )
    .await?;
    let verified: i64 = tx
        .query_one(
            "select count(*) from auth.mfa_factors where user_id = $1 and status = 'verified'",
            &[&caller.user.id],
        )
        .await?
        .get(0);
    if verified as usize >= state.config.mfa_max_factors {
        return Err(ApiError::new(
            422,
            "too_many_enrolled_mfa_factors",
            "Maximum number of verified factors reached, unenroll to continue",
        ));
    }
    if verified > 0 && caller.aal() != "aal2" {
        return Err(insufficient_aal("AAL2 required to enroll a new factor"));
    }
    if !name.is_empty() {
        let taken: bool = tx
            .query_one(
                "select exists(select 1 from auth.mfa_factors where user_id = $1 and friendly_name = $2)",
                &[&caller.user.id, &name],
            )
            .await?
            .get(0);
        if taken {
            return Err(ApiError::new(
                422,
                "mfa_factor_name_conflict",
                format!("A factor with the friendly name \"{name}\" for this user already exists"),
            ));
        }
    }
    let secret = crypto::base32_encode(&crypto::random_bytes(20));
    let account = if caller.user.email.is_empty() {
        caller.user.phone.clone()
    } else {
        caller.user.email.clone()
    };
    let uri = format!(
        "otpauth://totp/{}:{}?algorithm=SHA1&digits=6&issuer={}&period=30&secret={secret}",
        url_encode(&issuer),
        url_encode(&account),
        url_encode(&issuer),
    );
    let qr = qrcode::QrCode::new(uri.as_bytes())
        .map_err(ApiError::internal)?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    let id = Uuid::new_v4();
    tx.execute(
        "insert into auth.mfa_factors (id, user_id, friendly_name, factor_type, status, created_at,
           updated_at, secret)
         values ($1, $2, $3, 'totp', 'unverified', now(), now(), $4)",
        &[&id, &caller.user.id, &name, &secret],
    )
    .await?;
    audit_factor(state, req, &tx, caller, audit::Action::FactorInProgress, id).await?;
    tx.commit().await?;
    ok(&json!({
        "id": id,
        "type": "totp",
        "friendly_name": name,
        "totp": {"qr_code": qr, "secret": secret, "uri": uri},
    }))
}

async fn challenge(
    state: &State,
    req: &ApiRequest,
    caller: &Caller,
    factor_id: Uuid,
) -> Result<HttpResponse, ApiError> {
    let factor = own_factor(state, caller, factor_id).await?;
    if factor.factor_type != "totp" {
        return Err(ApiError::new(
            422,
            "mfa_phone_challenge_not_enabled",
            "MFA challenge is disabled for this factor type",
        ));
    }
    let ip = req
        .remote_addr
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|i| i.to_string());
    let id = Uuid::new_v4();
    let db = state.pool.get().await?;
    let created: chrono::DateTime<Utc> = db
        .query_one(
            "insert into auth.mfa_challenges (id, factor_id, created_at, ip_address)
             values ($1, $2, now(), coalesce($3::text, '0.0.0.0')::inet) returning created_at",
            &[&id, &factor.id, &ip],
        )
        .await?
        .get(0);
    db.execute(
        "update auth.mfa_factors set last_challenged_at = clock_timestamp(), updated_at = now()
         where id = $1",
        &[&factor.id],
    )
    .await?;
    audit_factor(
        state,
        req,
        &db,
        caller,
        audit::Action::ChallengeCreated,
        factor.id,
    )
    .await?;
    ok(&json!({
        "id": id,
        "type": "totp",
        "expires_at": (created + Duration::seconds(LIFETIME_SECS)).timestamp(),
    }))
}

#[derive(Deserialize, Default)]
struct VerifyBody {
    challenge_id: Option<String>,
    code: Option<String>,
}

async fn verify(
    state: &State,
    req: &ApiRequest,
    caller: &Caller,
    factor_id: Uuid,
) -> Result<HttpResponse, ApiError> {
    let body: VerifyBody = req.json()?;
    let factor = own_factor(state, caller, factor_id).await?;
    let challenge_id = body
        .challenge_id
        .as_deref()
        .and_then(|c| Uuid::parse_str(c).ok())
        .ok_or_else(|| ApiError::new(400, "validation_failed", "challenge_id must be a UUID"))?;
    let code = body.code.unwrap_or_default();
    let session = caller.session_id.ok_or_else(|| {
        ApiError::new(
            403,
            "session_not_found",
            "Session from session_id claim in JWT does not exist",
        )
    })?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "select created_at, verified_at, host(ip_address) from auth.mfa_challenges
             where id = $1 and factor_id = $2 for update",
            &[&challenge_id, &factor.id],
        )
        .await?
    else {
        return Err(ApiError::new(
            404,
            "mfa_challenge_not_found",
            "Challenge not found",
        ));
    };
    let created: chrono::DateTime<Utc> = row.get(0);
    let verified_at: Option<chrono::DateTime<Utc>> = row.get(1);
    let ip: Option<String> = row.get(2);
    if verified_at.is_some() || Utc::now() > created + Duration::seconds(LIFETIME_SECS) {
        tx.execute(
            "delete from auth.mfa_challenges where id = $1",
            &[&challenge_id],
        )
        .await?;
        tx.commit().await?;
        return Err(ApiError::new(
            422,
            "mfa_challenge_expired",
            "MFA challenge has expired, verify against another challenge or create a new challenge.",
        ));
    }
    let caller_ip = req
        .remote_addr
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|i| i.to_string())
        .unwrap_or_else(|| "0.0.0.0".into());
    if ip.as_deref().is_some_and(|ip| ip != caller_ip) {
        return Err(ApiError::new(
            422,
            "mfa_ip_address_mismatch",
            "Challenge and verify IP addresses mismatch.",
        ));
    }
    let secret = factor
        .secret
        .as_deref()
        .and_then(crypto::base32_decode)
        .ok_or_else(|| ApiError::internal("factor without a usable secret"))?;
    let now = Utc::now().timestamp().max(0) as u64;
    if code.len() != 6 || !crypto::totp_matches(&secret, &code, now) {
        return Err(ApiError::new(
            422,
            "mfa_verification_failed",
            "Invalid TOTP code entered",
        ));
    }
    tx.execute(
        "update auth.mfa_challenges set verified_at = now() where id = $1",
        &[&challenge_id],
    )
    .await?;
    tx.execute(
        "update auth.mfa_factors set status = 'verified', updated_at = now() where id = $1",
        &[&factor.id],
    )
    .await?;
    let updated = tx
        .execute(
            "update auth.sessions set aal = 'aal2', factor_id = $2, updated_at = now()
             where id = $1 and user_id = $3",
            &[&session, &factor.id, &caller.user.id],
        )
        .await?;
    if updated == 0 {
        return Err(ApiError::new(
            403,
            "session_not_found",
            "Session from session_id claim in JWT does not exist",
        ));
    }
    tokens::add_amr(&tx, session, "totp").await?;
    let user = models::user_by_id(&tx, caller.user.id)
        .await?
        .ok_or_else(|| ApiError::new(403, "user_not_found", "User not found"))?;
    let issued = tokens::reissue_session(state, &tx, &user, session).await?;
    let action = audit::Action::VerificationAttempted;
    audit_factor(state, req, &tx, caller, action, factor.id).await?;
    let user_json = models::user_json(&tx, &user).await?;
    tx.commit().await?;
    ok(&issued.to_json(user_json))
}

async fn unenroll(
    state: &State,
    req: &ApiRequest,
    caller: &Caller,
    factor_id: Uuid,
) -> Result<HttpResponse, ApiError> {
    let factor = own_factor(state, caller, factor_id).await?;
    if factor.status == "verified" && caller.aal() != "aal2" {
        return Err(insufficient_aal(
            "AAL2 required to unenroll verified factor",
        ));
    }
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("delete from auth.mfa_factors where id = $1", &[&factor.id])
        .await?;
    // Sessions raised by this factor fall back to one factor.
    tx.execute(
        "delete from auth.mfa_amr_claims where authentication_method = 'totp'
           and session_id in (select id from auth.sessions where factor_id = $1)",
        &[&factor.id],
    )
    .await?;
    tx.execute(
        "update auth.sessions set aal = 'aal1', factor_id = null, updated_at = now() where factor_id = $1",
        &[&factor.id],
    )
    .await?;
    audit_factor(
        state,
        req,
        &tx,
        caller,
        audit::Action::FactorUnenrolled,
        factor.id,
    )
    .await?;
    tx.commit().await?;
    ok(&json!({"id": factor.id}))
}
