//! Verifying the project's JWTs locally: API keys and access tokens.
//!
//! A [`KeyStore`] holds the HS256 project secret and, optionally, public keys
//! (RS256/ES256/EdDSA) from a JSON Web Key Set, chosen by `kid`. The gateway
//! verifies every request with it, without a network call; the set of public
//! keys can be replaced at run time for key rotation.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;

use crate::config::JwtConfig;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Why a token was refused. `Display` gives the client-safe message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("Empty JWT is sent in Authorization header")]
    Empty,
    #[error("Expected 3 parts in JWT; got {0}")]
    Parts(usize),
    #[error("JWT cryptographic operation failed")]
    Malformed,
    #[error("No suitable key or wrong key type")]
    NoSuitableKey,
    #[error("JWT expired")]
    Expired,
    #[error("JWT not yet valid")]
    NotYetValid,
    #[error("JWT issued at future")]
    IssuedInFuture,
}

impl TokenError {
    /// True when the token decoded and verified but its time claims refuse it.
    pub fn is_claims_error(&self) -> bool {
        matches!(
            self,
            Self::Expired | Self::NotYetValid | Self::IssuedInFuture
        )
    }
}

struct KeyedKey {
    key: DecodingKey,
    alg: Algorithm,
}

/// The keys that verify project tokens.
pub struct KeyStore {
    secret: Option<DecodingKey>,
    keyed: HashMap<String, KeyedKey>,
}

impl KeyStore {
    /// A store with only the HS256 project secret.
    pub fn with_secret(secret: &[u8]) -> Self {
        Self {
            secret: Some(DecodingKey::from_secret(secret)),
            keyed: HashMap::new(),
        }
    }

    /// The store described by a [`JwtConfig`]: its secret and its optional key set.
    pub fn from_config(cfg: &JwtConfig) -> Result<Self, String> {
        use secrecy::ExposeSecret;
        let mut store = Self::with_secret(cfg.secret.expose_secret().as_bytes());
        if let Some(jwks) = &cfg.jwks {
            store.set_jwks(jwks)?;
        }
        Ok(store)
    }

    /// Replaces the public keys with those of a JSON Web Key Set. Keys without
    /// `kid` or with an algorithm that cannot be determined are refused.
    pub fn set_jwks(&mut self, jwks_json: &str) -> Result<usize, String> {
        let set: JwkSet =
            serde_json::from_str(jwks_json).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
        let mut keyed = HashMap::new();
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone().ok_or("every key needs a `kid`")?;
            let alg = jwk_algorithm(jwk).ok_or_else(|| format!("key {kid}: unknown algorithm"))?;
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))?;
            keyed.insert(kid, KeyedKey { key, alg });
        }
        let n = keyed.len();
        self.keyed = keyed;
        Ok(n)
    }

    /// Verifies `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Value, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        let parts = token.split('.').count();
        if parts != 3 {
            return Err(TokenError::Parts(parts));
        }
        let header = read_header(token)?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(TokenError::Malformed)?;
        let kid = header.get("kid").and_then(Value::as_str);
        let (key, alg) = match kid.and_then(|k| self.keyed.get(k)) {
            Some(entry) => {
                if alg_name != format!("{:?}", entry.alg) {
                    return Err(TokenError::NoSuitableKey);
                }
                (&entry.key, entry.alg)
            }
            None => {
                let alg = match alg_name {
                    "HS256" => Algorithm::HS256,
                    "HS384" => Algorithm::HS384,
                    "HS512" => Algorithm::HS512,
                    // `none`, and asymmetric tokens whose key we do not hold.
                    _ => return Err(TokenError::NoSuitableKey),
                };
                (self.secret.as_ref().ok_or(TokenError::NoSuitableKey)?, alg)
            }
        };
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Value>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::ImmatureSignature => TokenError::NotYetValid,
                K::InvalidSignature | K::InvalidAlgorithm | K::InvalidKeyFormat => {
                    TokenError::NoSuitableKey
                }
                _ => TokenError::Malformed,
            }
        })?;
        let claims = data.claims;
        if !claims.is_object() {
            return Err(TokenError::Malformed);
        }
        let iat = claims.get("iat").and_then(Value::as_f64);
        if iat.is_some_and(|iat| iat > (now_secs() + LEEWAY_SECS) as f64) {
            return Err(TokenError::IssuedInFuture);
        }
        Ok(claims)
    }
}

fn read_header(token: &str) -> Result<Value, TokenError> {
    let head = token.split('.').next().ok_or(TokenError::Malformed)?;
    let raw = URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    let header: Value = serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)?;
    header
        .is_object()
        .then_some(header)
        .ok_or(TokenError::Malformed)
}

fn jwk_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm};
    if let Some(alg) = jwk.common.key_algorithm {
        return match alg {
            KeyAlgorithm::HS256 => Some(Algorithm::HS256),
            KeyAlgorithm::HS384 => Some(Algorithm::HS384),
            KeyAlgorithm::HS512 => Some(Algorithm::HS512),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::PS384 => Some(Algorithm::PS384),
            KeyAlgorithm::PS512 => Some(Algorithm::PS512),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            _ => None,
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        AlgorithmParameters::OctetKey(_) => Some(Algorithm::HS256),
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs `claims` with HS256 and the project secret.
pub fn sign_hs256(secret: &[u8], claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

/// An API key for `role` (`anon` or `service_role`) valid for `lifetime_secs`,
/// shaped as the Supabase tooling makes them: `{iss, role, iat, exp}`, no `sub`.
pub fn mint_api_key(
    secret: &[u8],
    role: &str,
    lifetime_secs: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let iat = now_secs();
    sign_hs256(
        secret,
        &serde_json::json!({"iss": "ferrobase", "role": role, "iat": iat, "exp": iat + lifetime_secs}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"an-example-secret-that-is-32-chars-long!";

    fn token(header: Value, claims: Value, sig: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            sig
        )
    }

    #[test]
    fn accepts_a_valid_api_key() {
        let key = mint_api_key(SECRET, "anon", 3600).unwrap();
        let claims = KeyStore::with_secret(SECRET).verify(&key).unwrap();
        assert_eq!(claims["role"], "anon");
    }

    #[test]
    fn refuses_forged_expired_and_unsigned_tokens() {
        let store = KeyStore::with_secret(SECRET);
        let forged = mint_api_key(
            b"another-secret-another-secret-another!",
            "service_role",
            60,
        );
        assert_eq!(
            store.verify(&forged.unwrap()),
            Err(TokenError::NoSuitableKey)
        );

        let now = now_secs();
        let expired = sign_hs256(SECRET, &json!({"role": "anon", "exp": now - 600})).unwrap();
        assert_eq!(store.verify(&expired), Err(TokenError::Expired));

        let future = sign_hs256(SECRET, &json!({"role": "anon", "iat": now + 3600})).unwrap();
        assert_eq!(store.verify(&future), Err(TokenError::IssuedInFuture));

        let unsigned = token(
            json!({"alg": "none", "typ": "JWT"}),
            json!({"role": "service_role"}),
            "",
        );
        assert_eq!(store.verify(&unsigned), Err(TokenError::NoSuitableKey));

        let rs = token(
            json!({"alg": "RS256", "typ": "JWT"}),
            json!({"role": "anon"}),
            "abc",
        );
        assert_eq!(store.verify(&rs), Err(TokenError::NoSuitableKey));

        assert_eq!(store.verify("a.b"), Err(TokenError::Parts(2)));
        assert_eq!(store.verify(""), Err(TokenError::Empty));
        assert_eq!(store.verify("!!.??.##"), Err(TokenError::Malformed));
    }

    #[test]
    fn tampered_payload_fails() {
        let key = mint_api_key(SECRET, "anon", 3600).unwrap();
        let mut parts: Vec<&str> = key.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(json!({"role": "service_role"}).to_string());
        parts[1] = &evil;
        assert_eq!(
            KeyStore::with_secret(SECRET).verify(&parts.join(".")),
            Err(TokenError::NoSuitableKey)
        );
    }

    #[test]
    fn jwks_without_kid_is_refused() {
        let mut store = KeyStore::with_secret(SECRET);
        let err = store
            .set_jwks(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#)
            .unwrap_err();
        assert!(err.contains("kid"), "{err}");
        assert!(store.set_jwks("nope").is_err());
    }
}
