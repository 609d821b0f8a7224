//! The audit trail in `auth.audit_log_entries`: who did what, when, from where.
//!
//! Entries are written in the transaction of the change they describe, so a
//! rolled-back change leaves no entry; each is stamped with the clock time of
//! its insert, so entries of one transaction keep their order. `FERROBASE_AUTH_AUDIT_LOG=false` turns
//! the trail off.

use crate::api::ApiError;
use crate::models::User;
use crate::service::State;
use deadpool_postgres::GenericClient;
use serde_json::{Value, json};

/// What happened; the names are the ones Supabase dashboards and queries use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Login,
    Logout,
    UserSignedUp,
    UserInvited,
    InviteAccepted,
    UserDeleted,
    UserModified,
    UserUpdatedPassword,
    UserConfirmationRequested,
    UserRecoveryRequested,
    UserReauthenticateRequested,
    TokenRefreshed,
    TokenRevoked,
    FactorInProgress,
    FactorUnenrolled,
    ChallengeCreated,
    VerificationAttempted,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Logout => "logout",
            Self::UserSignedUp => "user_signedup",
            Self::UserInvited => "user_invited",
            Self::InviteAccepted => "invite_accepted",
            Self::UserDeleted => "user_deleted",
            Self::UserModified => "user_modified",
            Self::UserUpdatedPassword => "user_updated_password",
            Self::UserConfirmationRequested => "user_confirmation_requested",
            Self::UserRecoveryRequested => "user_recovery_requested",
            Self::UserReauthenticateRequested => "user_reauthenticate_requested",
            Self::TokenRefreshed => "token_refreshed",
            Self::TokenRevoked => "token_revoked",
            Self::FactorInProgress => "factor_in_progress",
            Self::FactorUnenrolled => "factor_unenrolled",
            Self::ChallengeCreated => "challenge_created",
            Self::VerificationAttempted => "verification_attempted",
        }
    }

    /// The coarse category dashboards filter by.
    pub fn log_type(self) -> &'static str {
        match self {
            Self::Login | Self::Logout => "account",
            Self::UserSignedUp | Self::UserInvited | Self::InviteAccepted | Self::UserDeleted => {
                "team"
            }
            Self::UserModified
            | Self::UserUpdatedPassword
            | Self::UserConfirmationRequested
            | Self::UserRecoveryRequested
            | Self::UserReauthenticateRequested => "user",
            Self::TokenRefreshed | Self::TokenRevoked => "token",
            Self::FactorInProgress
            | Self::FactorUnenrolled
            | Self::ChallengeCreated
            | Self::VerificationAttempted => "factor",
        }
    }
}

/// Who acted: a user, or an administrator (service key) acting on one.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: String,
    pub username: String,
}

impl Actor {
    pub fn user(user: &User) -> Self {
        let username = if user.email.is_empty() {
            user.phone.clone()
        } else {
            user.email.clone()
        };
        Self {
            id: user.id.to_string(),
            username,
        }
    }

    /// The caller of an admin route: the token's subject (not always a UUID).
    pub fn admin(subject: Option<&str>) -> Self {
        Self {
            id: subject.unwrap_or("").to_owned(),
            username: "service_role".to_owned(),
        }
    }
}

/// The entry's JSON payload.
pub fn payload(actor: &Actor, action: Action, traits: Value) -> Value {
    json!({
        "actor_id": actor.id,
        "actor_username": actor.username,
        "actor_via_sso": false,
        "action": action.name(),
        "log_type": action.log_type(),
        "traits": traits,
    })
}

/// SQL inserting one entry from `$1` (payload as text) and `$2` (IP address);
/// used standalone and inside larger statements.
pub const INSERT_SQL: &str = "insert into auth.audit_log_entries (instance_id, id, payload, created_at, ip_address)
     values ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), $1::text::json, clock_timestamp(), left($2::text, 64))";

/// Records `action` by `actor` in the caller's transaction.
pub async fn record(
    state: &State,
    db: &impl GenericClient,
    ip: &str,
    actor: &Actor,
    action: Action,
    traits: Value,
) -> Result<(), ApiError> {
    if !state.config.audit_log {
        return Ok(());
    }
    let insert = db.prepare_cached(INSERT_SQL).await?;
    let body = payload(actor, action, traits).to_string();
    db.execute(&insert, &[&body, &ip]).await?;
    Ok(())
}

/// Records that user `id` (addressed as `username`) signed up with `provider`.
pub async fn record_signup(
    state: &State,
    db: &impl GenericClient,
    ip: &str,
    id: uuid::Uuid,
    username: &str,
    provider: &str,
) -> Result<(), ApiError> {
    let actor = Actor {
        id: id.to_string(),
        username: username.to_owned(),
    };
    let traits = json!({ "provider": provider });
    record(state, db, ip, &actor, Action::UserSignedUp, traits).await
}

/// Records `action` by `user` on itself.
pub async fn record_user(
    state: &State,
    db: &impl GenericClient,
    ip: &str,
    user: &User,
    action: Action,
) -> Result<(), ApiError> {
    record(state, db, ip, &Actor::user(user), action, json!({})).await
}
