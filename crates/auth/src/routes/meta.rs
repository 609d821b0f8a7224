//! Service metadata: health, public settings, the public keys.

use ferrobase_proto::{Header, HttpResponse};
use serde_json::json;

use crate::api::json_response;
use crate::config::AuthConfig;
use crate::service::State;

/// `GET /health`.
pub fn health() -> HttpResponse {
    json_response(
        200,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "name": "GoTrue",
            "description": "Ferrobase auth is a user registration and authentication API",
        }),
    )
}

/// `GET /settings`: which sign-in methods this deployment offers.
pub fn settings(config: &AuthConfig) -> HttpResponse {
    json_response(
        200,
        &json!({
            "external": {
                "email": true,
                "phone": false,
                "anonymous_users": config.anonymous_users,
                "apple": false, "azure": false, "bitbucket": false, "discord": false,
                "facebook": false, "figma": false, "fly": false, "github": false,
                "gitlab": false, "google": false, "keycloak": false, "kakao": false,
                "linkedin": false, "linkedin_oidc": false, "notion": false, "slack": false,
                "slack_oidc": false, "spotify": false, "twitch": false, "twitter": false,
                "workos": false, "zoom": false,
            },
            "disable_signup": config.disable_signup,
            "mailer_autoconfirm": config.autoconfirm,
            "phone_autoconfirm": false,
            "sms_provider": "",
            "saml_enabled": false,
            "passkeys_enabled": false,
        }),
    )
}

/// `GET /.well-known/jwks.json`: public verification keys (never the HS256 secret).
pub fn jwks(state: &State) -> HttpResponse {
    let mut resp = json_response(200, &state.public_jwks);
    resp.headers.push(Header {
        name: "cache-control".into(),
        value: "public, max-age=600".into(),
    });
    resp
}
