//! Who is calling: the API key check and local JWT verification.
//!
//! The project keys are JWTs signed with the project keys; any such token that
//! verifies and names a `role` is a valid `apikey`. `Authorization: Bearer <jwt>`
//! decides the role when present; without it the API key's claims apply. What a
//! surface does with a bad bearer differs, as it does in Supabase:
//!
//! - rest refuses at the edge with PostgREST's `PGRST301`/`PGRST303`;
//! - auth and storage receive the verdict in the auth context and decide per route
//!   (auth ignores the bearer on public routes; storage falls back to `anon` on some);
//! - meta requires a `service_role` (or `supabase_admin`) token.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use ferrobase_common::AuthContext;
use ferrobase_common::jwt::{KeyStore, LEEWAY_SECS, TokenError, now_secs};
use ferrobase_common::wire;
use serde_json::Value;

use crate::error::EdgeError;
use crate::surface::Surface;

/// Auth routes reached by browser redirects, which carry no API key.
const OPEN_AUTH_PATHS: [&str; 4] = [
    "/verify",
    "/callback",
    "/authorize",
    "/.well-known/jwks.json",
];

/// Roles allowed on the meta surface.
const ADMIN_ROLES: [&str; 2] = ["service_role", "supabase_admin"];

/// Verified tokens remembered before the cache starts over.
const VERIFIED_CAPACITY: usize = 4096;

/// The verification keys, replaceable at run time (key rotation), and the
/// tokens they verified.
///
/// Clients send the same API key and access token on every request, so a
/// token is checked once (signature, header, claims) and its claims are then
/// served from memory until its `exp` (plus the leeway) passes, after which
/// it is verified again and refused as expired. Changing the keys forgets
/// every remembered token.
pub struct Keys {
    store: RwLock<KeyStore>,
    verified: Mutex<HashMap<Box<str>, Verified>>,
}

/// A token that verified: its claims and when they stop being accepted.
struct Verified {
    claims: Value,
    /// The last second (Unix time) the token is accepted: `exp` plus the leeway.
    until: Option<u64>,
}

impl Keys {
    pub fn new(store: KeyStore) -> Self {
        Self {
            store: RwLock::new(store),
            verified: Mutex::new(HashMap::new()),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Value, TokenError> {
        let token = token.trim();
        let now = now_secs();
        if let Some(hit) = self.lock_verified().get(token)
            && hit.until.is_none_or(|until| now <= until)
        {
            return Ok(hit.claims.clone());
        }
        let claims = match self.store.read() {
            Ok(store) => store.verify(token),
            Err(poisoned) => poisoned.into_inner().verify(token),
        }?;
        // A token whose `exp` is not a whole number of seconds is checked every time.
        let until = match claims.get("exp") {
            None => Some(None),
            Some(exp) => exp.as_u64().map(|e| Some(e.saturating_add(LEEWAY_SECS))),
        };
        if let Some(until) = until {
            let mut verified = self.lock_verified();
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
            verified.insert(
                token.into(),
                Verified {
                    claims: claims.clone(),
                    until,
                },
            );
        }
        Ok(claims)
    }

    /// Replaces the public keys with those of a JSON Web Key Set.
    pub fn set_jwks(&self, jwks: &str) -> Result<usize, String> {
        let n = match self.store.write() {
            Ok(mut store) => store.set_jwks(jwks),
            Err(poisoned) => poisoned.into_inner().set_jwks(jwks),
        }?;
        // Tokens of a key that is gone must not outlive it.
        self.lock_verified().clear();
        Ok(n)
    }

    fn lock_verified(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Verified>> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The `apikey` header, or the `apikey` query parameter (WebSocket upgrades cannot set headers).
pub fn api_key(req: &HttpRequest) -> Option<String> {
    if let Some(v) = req.headers().get("apikey").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_owned());
    }
    url_query_param(req.query_string(), "apikey")
}

/// The token of an `Authorization: Bearer` header: `None` when absent or of another scheme.
pub fn bearer(req: &HttpRequest) -> Option<String> {
    let raw = req.headers().get("authorization")?.to_str().ok()?.trim();
    let (scheme, token) = raw.split_once(' ').unwrap_or((raw, ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn url_query_param(query: &str, name: &str) -> Option<String> {
    wire::query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Verifies an API key: a project JWT naming a role.
fn verify_api_key(keys: &Keys, key: &str) -> Result<Value, EdgeError> {
    let claims = keys.verify(key).map_err(|_| EdgeError::invalid_api_key())?;
    match claims.get("role").and_then(Value::as_str) {
        Some(role) if !role.is_empty() => Ok(claims),
        _ => Err(EdgeError::invalid_api_key()),
    }
}

/// Decides who the caller of `surface` at `path` (below the surface prefix) is.
pub fn authorize(
    keys: &Keys,
    surface: Surface,
    path: &str,
    api_key: Option<&str>,
    bearer: Option<&str>,
) -> Result<AuthContext, EdgeError> {
    match surface {
        Surface::Auth if OPEN_AUTH_PATHS.contains(&path) => Ok(bearer_or_anon(keys, bearer, None)),
        Surface::Auth => {
            let key_claims = required_api_key(keys, api_key)?;
            Ok(bearer_or_anon(keys, bearer, Some(key_claims)))
        }
        Surface::Rest => {
            let key_claims = required_api_key(keys, api_key)?;
            match bearer {
                None => Ok(AuthContext::from_claims(key_claims)),
                Some(token) => match keys.verify(token) {
                    Ok(claims) => Ok(AuthContext::from_claims(claims)),
                    Err(e) => Err(rest_jwt_error(&e)),
                },
            }
        }
        Surface::Storage => {
            // Storage takes a valid bearer alone; without one, the API key stands in for it.
            let token = bearer.or(api_key);
            Ok(bearer_or_anon(keys, token, None))
        }
        Surface::Meta => {
            let token = bearer.or(api_key).ok_or_else(EdgeError::missing_api_key)?;
            let claims = keys
                .verify(token)
                .map_err(|_| EdgeError::invalid_api_key())?;
            let ctx = AuthContext::from_claims(claims);
            if ADMIN_ROLES.contains(&ctx.role.as_str()) {
                Ok(ctx)
            } else {
                Err(EdgeError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the database management API requires the service_role key",
                ))
            }
        }
        // WebSocket upgrades carry the key as the `apikey` query parameter.
        Surface::Realtime => Ok(AuthContext::from_claims(required_api_key(keys, api_key)?)),
        Surface::Edge => Ok(AuthContext::anon()),
    }
}

fn required_api_key(keys: &Keys, api_key: Option<&str>) -> Result<Value, EdgeError> {
    let key = api_key
        .filter(|k| !k.is_empty())
        .ok_or_else(EdgeError::missing_api_key)?;
    verify_api_key(keys, key)
}

/// The bearer's context when it verifies; otherwise the fallback claims' (or
/// anon's) context carrying the reason the bearer failed.
fn bearer_or_anon(keys: &Keys, bearer: Option<&str>, fallback: Option<Value>) -> AuthContext {
    let fallback_ctx = || {
        fallback
            .clone()
            .map_or_else(AuthContext::anon, AuthContext::from_claims)
    };
    match bearer {
        None => fallback_ctx(),
        Some(token) => match keys.verify(token) {
            Ok(claims) => AuthContext::from_claims(claims),
            Err(e) => {
                let mut ctx = fallback_ctx();
                ctx.token_error = Some(e.to_string());
                ctx
            }
        },
    }
}

/// PostgREST's refusal of a bad bearer token.
fn rest_jwt_error(e: &TokenError) -> EdgeError {
    let code = if e.is_claims_error() {
        "PGRST303"
    } else {
        "PGRST301"
    };
    EdgeError::new(StatusCode::UNAUTHORIZED, code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ferrobase_common::jwt::sign_hs256;
    use serde_json::json;

    const SECRET: &[u8] = b"an-example-secret-that-is-32-chars-long!";

    #[test]
    fn remembered_tokens_still_expire() {
        let keys = Keys::new(KeyStore::with_secret(SECRET));
        // Accepted now, refused once `exp` plus the leeway is behind us.
        let exp = now_secs() + 1 - LEEWAY_SECS;
        let token = sign_hs256(SECRET, &json!({"role": "anon", "exp": exp})).unwrap();
        assert_eq!(keys.verify(&token).unwrap()["exp"], json!(exp));
        assert_eq!(keys.verify(&token).unwrap()["role"], "anon", "served again");
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert_eq!(keys.verify(&token), Err(TokenError::Expired));
        // Refusals are never remembered as successes.
        let forged = sign_hs256(
            b"another-secret-another-secret-32!!",
            &json!({"role": "service_role"}),
        )
        .unwrap();
        assert_eq!(keys.verify(&forged), Err(TokenError::NoSuitableKey));
        assert_eq!(keys.verify(&forged), Err(TokenError::NoSuitableKey));
    }

    #[test]
    fn changing_the_keys_forgets_remembered_tokens() {
        let keys = Keys::new(KeyStore::with_secret(SECRET));
        let other = b"the-rotated-key-material-32-bytes!!";
        let jwk =
            json!({"kty": "oct", "kid": "k1", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(other)});
        keys.set_jwks(&json!({"keys": [jwk]}).to_string()).unwrap();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("k1".into());
        let token = jsonwebtoken::encode(
            &header,
            &json!({"role": "authenticated", "sub": "u1"}),
            &jsonwebtoken::EncodingKey::from_secret(other),
        )
        .unwrap();
        assert_eq!(keys.verify(&token).unwrap()["sub"], "u1");
        assert_eq!(keys.verify(&token).unwrap()["sub"], "u1");
        keys.set_jwks(r#"{"keys": []}"#).unwrap();
        assert_eq!(keys.verify(&token), Err(TokenError::NoSuitableKey));
    }

    #[test]
    fn finds_the_api_key_parameter() {
        assert_eq!(
            url_query_param("a=1&apikey=x%2By+z&b", "apikey").as_deref(),
            Some("x+y z")
        );
        assert_eq!(url_query_param("apikey", "apikey").as_deref(), Some(""));
        assert_eq!(url_query_param("b=2", "apikey"), None);
    }
}
