//! The caller's identity as the gateway verified it, and how it travels in
//! gRPC metadata from the gateway to a service.
//!
//! Metadata keys (documented in `proto/ferrobase/common/v1/http.proto`):
//! `x-ferrobase-role`, `x-ferrobase-subject`, `x-ferrobase-claims-bin` (raw JSON,
//! carried as binary metadata so any UTF-8 survives), `x-ferrobase-token-error`,
//! and `x-request-id`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use http::{HeaderMap, HeaderValue};
use serde_json::Value;

pub const ROLE_HEADER: &str = "x-ferrobase-role";
pub const SUBJECT_HEADER: &str = "x-ferrobase-subject";
pub const CLAIMS_HEADER: &str = "x-ferrobase-claims-bin";
pub const TOKEN_ERROR_HEADER: &str = "x-ferrobase-token-error";
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Who is calling, as verified by the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthContext {
    /// The database role requests run as (`anon`, `authenticated`, `service_role`, ...).
    pub role: String,
    /// The JWT `sub`, when present.
    pub subject: Option<String>,
    /// Every verified claim of the token (an empty object when there was none).
    pub claims: Value,
    /// Set when a bearer token was presented but failed verification; the
    /// client-safe reason. Services whose routes need a valid token refuse with it.
    pub token_error: Option<String>,
}

impl AuthContext {
    /// The anonymous caller with no token.
    pub fn anon() -> Self {
        Self {
            role: "anon".to_owned(),
            subject: None,
            claims: Value::Object(Default::default()),
            token_error: None,
        }
    }

    /// A caller identified by verified claims; the role defaults to `anon` when the token names none.
    pub fn from_claims(claims: Value) -> Self {
        let role = claims
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("anon")
            .to_owned();
        let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        Self {
            role,
            subject,
            claims,
            token_error: None,
        }
    }

    /// Writes this context into outgoing metadata, replacing any previous values.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        // Role and subject come from verified JSON strings; values that are not
        // valid header text are dropped rather than mangled (claims still carry them).
        if let Ok(v) = HeaderValue::from_str(&self.role) {
            headers.insert(ROLE_HEADER, v);
        }
        headers.remove(SUBJECT_HEADER);
        if let Some(sub) = self
            .subject
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            headers.insert(SUBJECT_HEADER, sub);
        }
        let claims = STANDARD_NO_PAD.encode(self.claims.to_string());
        if let Ok(v) = HeaderValue::from_str(&claims) {
            headers.insert(CLAIMS_HEADER, v);
        }
        headers.remove(TOKEN_ERROR_HEADER);
        if let Some(e) = self
            .token_error
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            headers.insert(TOKEN_ERROR_HEADER, e);
        }
    }

    /// Reads a context from incoming metadata; `None` when the caller sent none.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, String> {
        let Some(role) = headers.get(ROLE_HEADER) else {
            return Ok(None);
        };
        let role = role
            .to_str()
            .map_err(|_| "role metadata is not text")?
            .to_owned();
        let subject = match headers.get(SUBJECT_HEADER) {
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| "subject metadata is not text")?
                    .to_owned(),
            ),
            None => None,
        };
        let claims = match headers.get(CLAIMS_HEADER) {
            None => Value::Object(Default::default()),
            Some(v) => {
                // gRPC binary metadata is base64, padded or not.
                let text = v.as_bytes();
                let trimmed: Vec<u8> = text.iter().copied().filter(|b| *b != b'=').collect();
                let raw = STANDARD_NO_PAD
                    .decode(trimmed)
                    .map_err(|_| "claims metadata is not base64")?;
                serde_json::from_slice(&raw).map_err(|_| "claims metadata is not JSON")?
            }
        };
        let token_error = match headers.get(TOKEN_ERROR_HEADER) {
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| "token error metadata is not text")?
                    .to_owned(),
            ),
            None => None,
        };
        Ok(Some(Self {
            role,
            subject,
            claims,
            token_error,
        }))
    }
}

/// The id of the client request a call belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// A fresh random id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// Accepts a client-supplied id when it is short, printable ASCII; otherwise `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= 128
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        ok.then(|| Self(raw.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_unicode_claims() {
        let ctx = AuthContext::from_claims(json!({
            "role": "authenticated", "sub": "3f1c0b6e-0000-4000-8000-000000000001",
            "user_metadata": {"name": "Zoë 🦀"}
        }));
        let mut headers = HeaderMap::new();
        ctx.write_headers(&mut headers);
        let back = AuthContext::from_headers(&headers).unwrap().unwrap();
        assert_eq!(back, ctx);
    }

    #[test]
    fn absent_context_is_none_and_garbage_is_an_error() {
        assert_eq!(AuthContext::from_headers(&HeaderMap::new()), Ok(None));
        let mut headers = HeaderMap::new();
        headers.insert(ROLE_HEADER, HeaderValue::from_static("anon"));
        headers.insert(CLAIMS_HEADER, HeaderValue::from_static("!!!"));
        assert!(AuthContext::from_headers(&headers).is_err());
    }

    #[test]
    fn request_ids_are_sanitised() {
        assert!(RequestId::parse("abc-123_x.y:z").is_some());
        assert!(RequestId::parse("bad id").is_none());
        assert!(RequestId::parse(&"a".repeat(200)).is_none());
        assert!(RequestId::parse("").is_none());
    }
}
