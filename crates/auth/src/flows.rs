//! Email one-time tokens and links: minting, storing (hashed), mailing, and
//! PKCE flow states.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use crate::api::ApiError;
use crate::crypto;
use crate::mailer::Mail;
use crate::service::State;

/// What an email token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Signup,
    Invite,
    Magiclink,
    Recovery,
    EmailChangeCurrent,
    EmailChangeNew,
    Reauthentication,
}

impl Kind {
    /// The `auth.users` column holding the token and its `*_sent_at` column.
    fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Signup | Self::Invite => (
                "confirmation_token",
                "confirmation_sent_at",
                "confirmation_token",
            ),
            Self::Magiclink | Self::Recovery => {
                ("recovery_token", "recovery_sent_at", "recovery_token")
            }
            Self::EmailChangeCurrent => (
                "email_change_token_current",
                "email_change_sent_at",
                "email_change_token_current",
            ),
            Self::EmailChangeNew => (
                "email_change_token_new",
                "email_change_sent_at",
                "email_change_token_new",
            ),
            Self::Reauthentication => (
                "reauthentication_token",
                "reauthentication_sent_at",
                "reauthentication_token",
            ),
        }
    }

    /// The `type` of its `/verify` link.
    pub fn verify_type(self) -> &'static str {
        match self {
            Self::Signup => "signup",
            Self::Invite => "invite",
            Self::Magiclink => "magiclink",
            Self::Recovery => "recovery",
            Self::EmailChangeCurrent | Self::EmailChangeNew => "email_change",
            Self::Reauthentication => "reauthentication",
        }
    }

    fn subject(self) -> &'static str {
        match self {
            Self::Signup => "Confirm Your Signup",
            Self::Invite => "You have been invited",
            Self::Magiclink => "Your Magic Link",
            Self::Recovery => "Reset Your Password",
            Self::EmailChangeCurrent | Self::EmailChangeNew => "Confirm Email Change",
            Self::Reauthentication => "Confirm Reauthentication",
        }
    }
}

/// A minted token, ready to mail or to hand to an admin.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub kind: Kind,
    pub to: String,
    pub otp: String,
    /// What is stored and what the link carries (`pkce_` prefixed in a PKCE flow).
    pub token_hash: String,
    pub link: String,
    pub redirect_to: String,
}

/// Percent-encodes a query component.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Refuses a mail sent to the same user for the same purpose too recently.
pub fn check_frequency(state: &State, last_sent: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    let freq = state.config.smtp_max_frequency;
    if let Some(t) = last_sent {
        let elapsed = (Utc::now() - t).to_std().unwrap_or_default();
        if elapsed < freq {
            let wait = (freq - elapsed).as_secs().max(1);
            return Err(ApiError::new(
                429,
                "over_email_send_rate_limit",
                format!("For security purposes, you can only request this after {wait} seconds."),
            ));
        }
    }
    Ok(())
}

/// Mints a token of `kind` for `user` addressed to `to`, stores its hash on the
/// user (and in `auth.one_time_tokens`) and builds the link.
pub async fn prepare(
    state: &State,
    db: &impl GenericClient,
    user: Uuid,
    kind: Kind,
    to: &str,
    redirect_to: &str,
    pkce: bool,
) -> Result<Prepared, ApiError> {
    let otp = crypto::random_digits(state.config.mailer_otp_length);
    let mut token_hash = crypto::otp_hash(to, &otp);
    if pkce {
        token_hash = format!("pkce_{token_hash}");
    }
    let (column, sent_at, ott_type) = kind.columns();
    db.execute(
        &format!("update auth.users set {column} = $2, {sent_at} = now(), updated_at = now() where id = $1"),
        &[&user, &token_hash],
    )
    .await?;
    db.execute(
        "insert into auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at, updated_at)
         values (gen_random_uuid(), $1, $2::text::auth.one_time_token_type, $3, $4, now(), now())
         on conflict (user_id, token_type) do update
           set token_hash = excluded.token_hash, relates_to = excluded.relates_to, updated_at = now()",
        &[&user, &ott_type, &token_hash, &to],
    )
    .await?;
    let link = if kind == Kind::Reauthentication {
        String::new()
    } else {
        format!(
            "{}/verify?token={}&type={}&redirect_to={}",
            state.config.issuer(),
            url_encode(&token_hash),
            kind.verify_type(),
            url_encode(redirect_to)
        )
    };
    Ok(Prepared {
        kind,
        to: to.to_owned(),
        otp,
        token_hash,
        link,
        redirect_to: redirect_to.to_owned(),
    })
}

/// Forgets a user's token of `kind` in `auth.one_time_tokens`.
pub async fn clear_one_time_token(
    db: &impl GenericClient,
    user: Uuid,
    kind: Kind,
) -> Result<(), ApiError> {
    let (_, _, ott_type) = kind.columns();
    db.execute(
        "delete from auth.one_time_tokens where user_id = $1 and token_type = $2::text::auth.one_time_token_type",
        &[&user, &ott_type],
    )
    .await?;
    Ok(())
}

/// Counts one mail against the project's hourly cap, refusing it when the
/// cap is spent. The count lives in the database so every replica shares it;
/// windows are clock hours.
async fn spend_email_budget(state: &State) -> Result<(), ApiError> {
    let cap = state.config.email_sent_per_hour;
    if cap == 0 {
        return Ok(());
    }
    let db = state.pool.get().await?;
    let count = db
        .prepare_cached(
            "insert into auth.email_send_windows as w (window_start, sent)
             values (date_trunc('hour', now()), 1)
             on conflict (window_start) do update set sent = w.sent + 1
             returning sent",
        )
        .await?;
    let sent: i32 = db.query_one(&count, &[]).await?.get(0);
    if sent == 1 {
        // A new hour: forget the old ones.
        db.execute(
            "delete from auth.email_send_windows where window_start < date_trunc('hour', now())",
            &[],
        )
        .await?;
    }
    if sent as i64 > i64::from(cap) {
        return Err(ApiError::new(
            429,
            "over_email_send_rate_limit",
            "Email rate limit exceeded",
        ));
    }
    Ok(())
}

/// Mails a prepared token, within the project's hourly cap.
pub async fn send(state: &State, p: &Prepared) -> Result<(), ApiError> {
    spend_email_budget(state).await?;
    let body = if p.kind == Kind::Reauthentication {
        format!("Enter the code: {}\n", p.otp)
    } else {
        format!(
            "{}\n\nFollow this link:\n{}\n\nOr enter the code: {}\n",
            p.kind.subject(),
            p.link,
            p.otp
        )
    };
    let mail = Mail {
        to: p.to.clone(),
        subject: p.kind.subject().to_owned(),
        body,
        kind: p.kind.verify_type().to_owned(),
        link: p.link.clone(),
        otp: p.otp.clone(),
        token_hash: p.token_hash.clone(),
        redirect_to: p.redirect_to.clone(),
    };
    state.mailer.send(&mail).await.map_err(|e| {
        tracing::error!(error = %e, kind = %mail.kind, "sending mail failed");
        ApiError::new(
            500,
            "unexpected_failure",
            format!("Error sending {} email", p.kind.verify_type()),
        )
    })
}

/// Optional PKCE parameters of a request.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct PkceParams {
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

impl PkceParams {
    /// `Some((challenge, method))` when PKCE was asked for; a half-given pair is an error.
    pub fn checked(&self) -> Result<Option<(String, String)>, ApiError> {
        let c = self.code_challenge.as_deref().filter(|s| !s.is_empty());
        let m = self
            .code_challenge_method
            .as_deref()
            .filter(|s| !s.is_empty());
        match (c, m) {
            (None, None) => Ok(None),
            (Some(c), Some(m)) => {
                let m = m.to_ascii_lowercase();
                if m != "s256" && m != "plain" {
                    return Err(ApiError::new(
                        400,
                        "validation_failed",
                        format!("code challenge method not supported: {m}"),
                    ));
                }
                if !(43..=128).contains(&c.len()) {
                    return Err(ApiError::new(
                        400,
                        "validation_failed",
                        "code challenge has to be between 43 and 128 characters",
                    ));
                }
                Ok(Some((c.to_owned(), m)))
            }
            _ => Err(ApiError::new(
                400,
                "validation_failed",
                "PKCE flow requires code_challenge_method and code_challenge",
            )),
        }
    }
}

/// Saves a PKCE flow state for `user`; its `auth_code` is what `/verify` hands out.
pub async fn create_flow_state(
    db: &impl GenericClient,
    user: Uuid,
    challenge: &(String, String),
    method: &str,
) -> Result<(), ApiError> {
    db.execute(
        "insert into auth.flow_state (id, user_id, auth_code, code_challenge_method, code_challenge,
           provider_type, authentication_method, created_at, updated_at)
         values (gen_random_uuid(), $1, $2, $3::text::auth.code_challenge_method, $4, 'email', $5, now(), now())",
        &[&user, &Uuid::new_v4().to_string(), &challenge.1, &challenge.0, &method],
    )
    .await?;
    Ok(())
}
