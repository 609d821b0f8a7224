//! The auth service's configuration (see `docs/configuration.md`).

use std::time::Duration;

use ferrobase_common::config::{ConfigErrors, Env, Loader, ServiceConfig};

/// Everything the auth service needs to start.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub service: ServiceConfig,
    /// The app's URL: the default redirect target of email links.
    pub site_url: String,
    /// The public URL of the gateway; the JWT issuer is `<this>/auth/v1`.
    pub external_url: String,
    /// Lifetime of access tokens.
    pub jwt_exp: Duration,
    pub disable_signup: bool,
    /// Confirm email sign-ups at once (no confirmation mail).
    pub autoconfirm: bool,
    pub anonymous_users: bool,
    pub password_min_length: usize,
    pub bcrypt_cost: u32,
}

impl AuthConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigErrors> {
        let mut l = Loader::new(env);
        let service = ServiceConfig::load(&mut l);
        let site_url = l
            .optional("FERROBASE_SITE_URL")
            .unwrap_or_else(|| "http://localhost:3000".into());
        let external_url = l
            .optional("FERROBASE_API_EXTERNAL_URL")
            .unwrap_or_else(|| "http://localhost:8000".into())
            .trim_end_matches('/')
            .to_owned();
        let jwt_exp = Duration::from_secs(l.parse_or("FERROBASE_JWT_EXP", 3600u64));
        let disable_signup = l.bool_or("FERROBASE_AUTH_DISABLE_SIGNUP", false);
        let autoconfirm = l.bool_or("FERROBASE_AUTH_AUTOCONFIRM", false);
        let anonymous_users = l.bool_or("FERROBASE_AUTH_ANONYMOUS_USERS", false);
        let password_min_length = l.parse_or("FERROBASE_PASSWORD_MIN_LENGTH", 6usize);
        if password_min_length < 6 {
            l.invalid("FERROBASE_PASSWORD_MIN_LENGTH", "must be at least 6");
        }
        let bcrypt_cost = l.parse_or("FERROBASE_BCRYPT_COST", 10u32);
        if !(4..=31).contains(&bcrypt_cost) {
            l.invalid("FERROBASE_BCRYPT_COST", "must be between 4 and 31");
        }
        let config = Self {
            service,
            site_url,
            external_url,
            jwt_exp,
            disable_signup,
            autoconfirm,
            anonymous_users,
            password_min_length,
            bcrypt_cost,
        };
        l.finish(config)
    }

    /// The `iss` claim of access tokens.
    pub fn issuer(&self) -> String {
        format!("{}/auth/v1", self.external_url)
    }
}
