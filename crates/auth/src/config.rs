//! The auth service's configuration (see `docs/configuration.md`).

use std::path::PathBuf;
use std::time::Duration;

use ferrobase_common::config::{ConfigErrors, Env, Loader, ServiceConfig};
use ferrobase_common::jwk::PrivateKeySet;
use secrecy::SecretString;

/// Everything the auth service needs to start.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub service: ServiceConfig,
    /// Serving worker threads, each with its connections and its share of
    /// the database pool.
    pub workers: usize,
    /// The app's URL: the default redirect target of email links.
    pub site_url: String,
    /// The public URL of the gateway; the JWT issuer is `<this>/auth/v1`.
    pub external_url: String,
    /// Lifetime of access tokens.
    pub jwt_exp: Duration,
    /// Asymmetric keys (`FERROBASE_AUTH_JWT_KEYS`): the one marked `sign`
    /// signs access tokens (else HS256 with the project secret), all are
    /// published as the public key set.
    pub jwt_keys: PrivateKeySet,
    /// The default audience of users and tokens.
    pub jwt_aud: String,
    /// Roles allowed on `/admin/*` and `/invite`.
    pub admin_roles: Vec<String>,
    pub disable_signup: bool,
    /// Confirm email sign-ups at once (no confirmation mail).
    pub autoconfirm: bool,
    pub anonymous_users: bool,
    pub password_min_length: usize,
    /// Character groups a password must each draw at least one character from.
    pub password_required_characters: Vec<String>,
    pub bcrypt_cost: u32,
    /// How long a revoked refresh token may still be exchanged (concurrent tabs).
    pub refresh_token_reuse_interval: Duration,
    /// Glob patterns of redirect targets accepted besides the site URL.
    pub redirect_allow_list: Vec<String>,
    /// Lifetime of email OTPs and links.
    pub mailer_otp_exp: Duration,
    /// Digits of email OTPs.
    pub mailer_otp_length: usize,
    /// Least time between two mails of one kind to one user.
    pub smtp_max_frequency: Duration,
    /// Most mails the project sends per clock hour, across every replica; 0 for no cap.
    pub email_sent_per_hour: u32,
    /// Record sign-ins, sign-ups, refreshes, user changes... in `auth.audit_log_entries`.
    pub audit_log: bool,
    /// Email changes need confirming from both the old and the new address.
    pub secure_email_change: bool,
    /// Password changes of sessions older than a day need a reauthentication nonce.
    pub secure_password_change: bool,
    /// Where mails are also written as JSON files (development outbox).
    pub outbox_dir: Option<PathBuf>,
    pub smtp: Option<SmtpConfig>,
    /// Sender address of mails.
    pub smtp_admin_email: String,
    pub smtp_sender_name: String,
    /// Longest life of a session whatever its refreshes; `None` for no limit.
    pub sessions_timebox: Option<Duration>,
    /// A session not refreshed for this long ends; `None` for no limit.
    pub sessions_inactivity_timeout: Option<Duration>,
    /// Issuer shown by authenticator apps; defaults to the site URL host.
    pub mfa_issuer: Option<String>,
    /// Most verified factors a user may hold.
    pub mfa_max_factors: usize,
    /// How often stale rows are removed ([`crate::cleanup`]); `None` for never.
    pub cleanup_interval: Option<Duration>,
}

/// An SMTP relay.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub pass: Option<Secret>,
    pub tls: SmtpTls,
    /// PEM file of extra trusted root certificates (a private CA).
    pub ca_file: Option<PathBuf>,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Implicit TLS on port 465, otherwise STARTTLS when the relay offers it;
    /// credentials are never sent over an unprotected connection.
    Auto,
    /// Implicit TLS from the first byte.
    Tls,
    /// STARTTLS, required.
    StartTls,
    /// Plain text, credentials included (a relay on a trusted network).
    None,
}

impl std::str::FromStr for SmtpTls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "tls" => Ok(Self::Tls),
            "starttls" => Ok(Self::StartTls),
            "none" => Ok(Self::None),
            other => Err(format!(
                "expected auto, tls, starttls or none, got {other:?}"
            )),
        }
    }
}

/// A secret that never prints.
#[derive(Clone)]
pub struct Secret(pub SecretString);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

fn list(raw: Option<String>, sep: char) -> Vec<String> {
    raw.unwrap_or_default()
        .split(sep)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Auth's pool size unless `FERROBASE_DB_POOL_SIZE` is set: at least
/// [`MIN_DEFAULT_POOL`], more on machines whose common default is larger.
fn default_pool_size() -> usize {
    ferrobase_common::config::default_pool_size().max(MIN_DEFAULT_POOL)
}

/// Auth's requests mostly write: a refresh or a sign-in ends with a commit that
/// waits for its WAL flush, and one flush carries the commits of every
/// connection waiting on it. So auth keeps more connections than the common
/// `2 × cores + 2`, which suits reads. On 2 cores, 24 connections served about
/// 40% more chained refreshes than 6 (about 2,150 against 3,000 a second), 16
/// about 20% more, and 32 no more than 24.
const MIN_DEFAULT_POOL: usize = 24;

impl AuthConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigErrors> {
        let mut l = Loader::new(env);
        let service = ServiceConfig::load_with_pool(&mut l, default_pool_size());
        let site_url = l
            .optional("FERROBASE_SITE_URL")
            .unwrap_or_else(|| "http://localhost:3000".into())
            .trim_end_matches('/')
            .to_owned();
        let external_url = l
            .optional("FERROBASE_API_EXTERNAL_URL")
            .unwrap_or_else(|| "http://localhost:8000".into())
            .trim_end_matches('/')
            .to_owned();
        let jwt_exp = Duration::from_secs(l.parse_or("FERROBASE_JWT_EXP", 3600u64));
        if jwt_exp.is_zero() {
            l.invalid("FERROBASE_JWT_EXP", "must be at least 1");
        }
        let jwt_keys = match l
            .optional("FERROBASE_AUTH_JWT_KEYS")
            .filter(|v| !v.trim().is_empty())
        {
            None => PrivateKeySet::default(),
            Some(raw) => PrivateKeySet::parse(&raw).unwrap_or_else(|reason| {
                l.invalid("FERROBASE_AUTH_JWT_KEYS", reason);
                PrivateKeySet::default()
            }),
        };
        let jwt_aud = l
            .optional("FERROBASE_JWT_AUD")
            .unwrap_or_else(|| "authenticated".into());
        let mut admin_roles = list(l.optional("FERROBASE_JWT_ADMIN_ROLES"), ',');
        if admin_roles.is_empty() {
            admin_roles = vec!["service_role".into(), "supabase_admin".into()];
        }
        let disable_signup = l.bool_or("FERROBASE_AUTH_DISABLE_SIGNUP", false);
        let autoconfirm = l.bool_or("FERROBASE_AUTH_AUTOCONFIRM", false);
        let anonymous_users = l.bool_or("FERROBASE_AUTH_ANONYMOUS_USERS", false);
        let password_min_length = l.parse_or("FERROBASE_PASSWORD_MIN_LENGTH", 6usize);
        if password_min_length < 6 {
            l.invalid("FERROBASE_PASSWORD_MIN_LENGTH", "must be at least 6");
        }
        let password_required_characters =
            list(l.optional("FERROBASE_PASSWORD_REQUIRED_CHARACTERS"), ':');
        let bcrypt_cost = l.parse_or("FERROBASE_BCRYPT_COST", 10u32);
        if !(4..=31).contains(&bcrypt_cost) {
            l.invalid("FERROBASE_BCRYPT_COST", "must be between 4 and 31");
        }
        let refresh_token_reuse_interval =
            Duration::from_secs(l.parse_or("FERROBASE_REFRESH_TOKEN_REUSE_INTERVAL", 10u64));
        let redirect_allow_list = list(l.optional("FERROBASE_AUTH_REDIRECT_ALLOW_LIST"), ',');
        let mailer_otp_exp = Duration::from_secs(l.parse_or("FERROBASE_MAILER_OTP_EXP", 86400u64));
        let mailer_otp_length = l.parse_or("FERROBASE_MAILER_OTP_LENGTH", 6usize);
        if !(6..=10).contains(&mailer_otp_length) {
            l.invalid("FERROBASE_MAILER_OTP_LENGTH", "must be between 6 and 10");
        }
        let smtp_max_frequency =
            Duration::from_secs(l.parse_or("FERROBASE_SMTP_MAX_FREQUENCY", 60u64));
        let email_sent_per_hour = l.parse_or("FERROBASE_RATE_LIMIT_EMAIL_SENT", 30u32);
        let audit_log = l.bool_or("FERROBASE_AUTH_AUDIT_LOG", true);
        let workers = l.workers();
        let secure_email_change = l.bool_or("FERROBASE_MAILER_SECURE_EMAIL_CHANGE", true);
        let secure_password_change = l.bool_or("FERROBASE_SECURE_PASSWORD_CHANGE", false);
        let outbox_dir = l.optional("FERROBASE_AUTH_OUTBOX_DIR").map(PathBuf::from);
        let smtp = match l.optional("FERROBASE_SMTP_HOST") {
            Some(host) if !host.trim().is_empty() => Some(SmtpConfig {
                host: host.trim().to_owned(),
                port: l.parse_or("FERROBASE_SMTP_PORT", 25u16),
                user: l.optional("FERROBASE_SMTP_USER").filter(|s| !s.is_empty()),
                pass: l
                    .optional("FERROBASE_SMTP_PASS")
                    .filter(|s| !s.is_empty())
                    .map(|p| Secret(SecretString::from(p))),
                tls: l.parse_or("FERROBASE_SMTP_TLS", SmtpTls::Auto),
                ca_file: l
                    .optional("FERROBASE_SMTP_CA_FILE")
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from),
            }),
            _ => None,
        };
        let smtp_admin_email = l
            .optional("FERROBASE_SMTP_ADMIN_EMAIL")
            .unwrap_or_else(|| "noreply@localhost".into());
        let smtp_sender_name = l
            .optional("FERROBASE_SMTP_SENDER_NAME")
            .unwrap_or_else(|| "Ferrobase".into());
        let secs_or_off = |v: u64| (v > 0).then(|| Duration::from_secs(v));
        let sessions_timebox = secs_or_off(l.parse_or("FERROBASE_SESSIONS_TIMEBOX", 0u64));
        let sessions_inactivity_timeout =
            secs_or_off(l.parse_or("FERROBASE_SESSIONS_INACTIVITY_TIMEOUT", 0u64));
        let mfa_issuer = l.optional("FERROBASE_MFA_ISSUER").filter(|s| !s.is_empty());
        let mfa_max_factors = l.parse_or("FERROBASE_MFA_MAX_ENROLLED_FACTORS", 10usize);
        let cleanup_interval = secs_or_off(l.parse_or("FERROBASE_AUTH_CLEANUP_INTERVAL", 60u64));
        let config = Self {
            service,
            site_url,
            external_url,
            jwt_exp,
            jwt_keys,
            jwt_aud,
            admin_roles,
            disable_signup,
            autoconfirm,
            anonymous_users,
            password_min_length,
            password_required_characters,
            bcrypt_cost,
            refresh_token_reuse_interval,
            redirect_allow_list,
            mailer_otp_exp,
            mailer_otp_length,
            smtp_max_frequency,
            email_sent_per_hour,
            audit_log,
            workers,
            secure_email_change,
            secure_password_change,
            outbox_dir,
            smtp,
            smtp_admin_email,
            smtp_sender_name,
            sessions_timebox,
            sessions_inactivity_timeout,
            mfa_issuer,
            mfa_max_factors,
            cleanup_interval,
        };
        l.finish(config)
    }

    /// The `iss` claim of access tokens.
    pub fn issuer(&self) -> String {
        format!("{}/auth/v1", self.external_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Env {
        Env::from_pairs([
            ("FERROBASE_DB_URL", "postgres://localhost/x"),
            (
                "FERROBASE_JWT_SECRET",
                "a-secret-that-is-long-enough-for-the-check",
            ),
        ])
    }

    #[test]
    fn defaults_follow_the_documentation() {
        let c = AuthConfig::from_env(&base()).unwrap();
        assert_eq!(c.bcrypt_cost, 10);
        assert_eq!(c.refresh_token_reuse_interval, Duration::from_secs(10));
        assert_eq!(c.mailer_otp_exp, Duration::from_secs(86400));
        assert_eq!(c.admin_roles, ["service_role", "supabase_admin"]);
        assert_eq!(c.jwt_aud, "authenticated");
        assert!(c.smtp.is_none() && c.outbox_dir.is_none());
        assert!(c.secure_email_change);
        let common = ferrobase_common::config::default_pool_size();
        assert_eq!(c.service.database.pool_size, common.max(MIN_DEFAULT_POOL));
        assert!(c.service.database.pool_size >= 24);
    }

    #[test]
    fn a_pool_size_given_wins_over_auths_default() {
        let c = AuthConfig::from_env(&base().with("FERROBASE_DB_POOL_SIZE", "5")).unwrap();
        assert_eq!(c.service.database.pool_size, 5);
    }

    #[test]
    fn bad_values_are_named() {
        let env = base()
            .with("FERROBASE_BCRYPT_COST", "3")
            .with("FERROBASE_PASSWORD_MIN_LENGTH", "2")
            .with("FERROBASE_MAILER_OTP_LENGTH", "4")
            .with("FERROBASE_REFRESH_TOKEN_REUSE_INTERVAL", "soon");
        let err = AuthConfig::from_env(&env).unwrap_err().to_string();
        for name in [
            "FERROBASE_BCRYPT_COST",
            "FERROBASE_PASSWORD_MIN_LENGTH",
            "FERROBASE_MAILER_OTP_LENGTH",
            "FERROBASE_REFRESH_TOKEN_REUSE_INTERVAL",
        ] {
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn jwt_keys_choose_the_signer_and_stay_secret() {
        let old = ferrobase_common::jwk::generate_es256(false).unwrap();
        let new = ferrobase_common::jwk::generate_es256(true).unwrap();
        let keys = serde_json::json!([old, new]).to_string();
        let c = AuthConfig::from_env(&base().with("FERROBASE_AUTH_JWT_KEYS", keys)).unwrap();
        assert_eq!(c.jwt_keys.keys().len(), 2);
        assert_eq!(c.jwt_keys.signer().unwrap().kid(), new["kid"]);
        let printed = format!("{c:?}");
        for key in [&old, &new] {
            assert!(!printed.contains(key["d"].as_str().unwrap()), "{printed}");
        }
        // Unset or empty (as Compose passes an unset optional value): HS256 only.
        let c = AuthConfig::from_env(&base().with("FERROBASE_AUTH_JWT_KEYS", " ")).unwrap();
        assert!(c.jwt_keys.is_empty());
        assert!(
            AuthConfig::from_env(&base())
                .unwrap()
                .jwt_keys
                .signer()
                .is_none()
        );
    }

    #[test]
    fn bad_jwt_keys_stop_the_start_naming_the_variable() {
        let two_signers = serde_json::json!([
            ferrobase_common::jwk::generate_es256(true).unwrap(),
            ferrobase_common::jwk::generate_es256(true).unwrap(),
        ])
        .to_string();
        let mut no_kid = ferrobase_common::jwk::generate_es256(true).unwrap();
        no_kid.as_object_mut().unwrap().remove("kid");
        for (value, why) in [
            ("[{", "not valid JSON"),
            (r#"[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]"#, "oct"),
            (&serde_json::json!([no_kid]).to_string(), "has no kid"),
            (&two_signers, "exactly one key may sign"),
        ] {
            let err = AuthConfig::from_env(&base().with("FERROBASE_AUTH_JWT_KEYS", value))
                .unwrap_err()
                .to_string();
            assert!(err.contains("FERROBASE_AUTH_JWT_KEYS is invalid"), "{err}");
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn smtp_password_never_prints() {
        let env = base()
            .with("FERROBASE_SMTP_HOST", "mail")
            .with("FERROBASE_SMTP_PASS", "hunter2-secret");
        let c = AuthConfig::from_env(&env).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.smtp.unwrap().port, 25);
    }
}
