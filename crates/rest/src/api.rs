//! The HTTP side of the service: a forwarded request in, a response out,
//! errors in PostgREST's `{code, details, hint, message}` shape, and the
//! request headers PostgREST clients send (`Prefer`, `Accept`, profiles).

use bytes::Bytes;
use ferrobase_common::wire;
use ferrobase_common::{AuthContext, RequestId};
use ferrobase_proto::{Header, HttpRequest, HttpResponse};
use serde_json::{Value, json};

/// One client request, as the gateway forwarded it.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: String,
    /// Path below `/rest/v1`, percent-encoded.
    pub path: String,
    pub query: String,
    pub headers: Vec<Header>,
    pub body: Bytes,
    /// The caller as the gateway verified it (anon when the call carried none).
    pub ctx: AuthContext,
    pub request_id: String,
}

impl ApiRequest {
    /// Builds a request from a gRPC call's message and extensions.
    pub fn from_grpc(req: tonic::Request<HttpRequest>) -> Self {
        let ctx = req
            .extensions()
            .get::<AuthContext>()
            .cloned()
            .unwrap_or_else(AuthContext::anon);
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map_or_else(|| RequestId::generate().0, |r| r.0.clone());
        let r = req.into_inner();
        Self {
            method: r.method.to_ascii_uppercase(),
            path: r.path,
            query: r.query,
            headers: r.headers,
            body: r.body,
            ctx,
            request_id,
        }
    }

    /// The first value of a (lower-case) header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }

    /// Every value of a header, joined with `,`.
    pub fn header_joined(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|h| h.name == name)
            .map(|h| h.value.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    }

    /// The query string as decoded pairs, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        wire::query_pairs(&self.query)
    }

    /// The request headers as the JSON object of `request.headers`.
    pub fn headers_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        for h in &self.headers {
            map.insert(h.name.to_ascii_lowercase(), Value::String(h.value.clone()));
        }
        Value::Object(map)
    }

    /// The cookies as the JSON object of `request.cookies`.
    pub fn cookies_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        if let Some(raw) = self.header("cookie") {
            for part in raw.split(';') {
                if let Some((k, v)) = part.split_once('=') {
                    map.insert(k.trim().to_owned(), Value::String(v.trim().to_owned()));
                }
            }
        }
        Value::Object(map)
    }
}

/// An error answered to the client (boxed: it travels in every `Result`).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError(Box<ErrorBody>);

impl std::ops::Deref for ApiError {
    type Target = ErrorBody;
    fn deref(&self) -> &ErrorBody {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ErrorBody {
        &mut self.0
    }
}

/// The parts of an [`ApiError`].
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorBody {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// A string, `null`, or (for `PGRST201`) an array.
    pub details: Value,
    pub hint: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self(Box::new(ErrorBody {
            status,
            code: code.to_owned(),
            message: message.into(),
            details: Value::Null,
            hint: None,
            headers: Vec::new(),
        }))
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Value::String(details.into());
        self
    }

    pub fn details_json(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A failure inside the service: logged here with its cause, shown generically.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "rest request failed");
        Self::new(500, "PGRST000", "Internal server error")
    }

    /// A feature this engine does not implement yet: 501 naming it.
    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            501,
            "PGRST501",
            format!("{what} is not implemented by this server yet"),
        )
        .hint("Ferrobase's rest engine covers a subset of PostgREST; see docs/configuration.md")
    }

    /// A `PGRST100` parse failure.
    pub fn parse(e: &crate::parser::ParseError) -> Self {
        Self::new(400, "PGRST100", e.message()).details(e.details.clone())
    }

    /// The response carrying this error.
    pub fn response(&self) -> HttpResponse {
        let body = json!({
            "code": self.code,
            "details": self.details,
            "hint": self.hint,
            "message": self.message,
        });
        let mut resp = Response::new(self.status)
            .json_body(body.to_string())
            .header("proxy-status", format!("PostgREST; error={}", self.code));
        if self.status == 401 && !self.headers.iter().any(|(k, _)| k == "www-authenticate") {
            resp = resp.header("www-authenticate", "Bearer".to_owned());
        }
        for (k, v) in &self.headers {
            resp = resp.header(k, v.clone());
        }
        resp.build()
    }
}

/// A response under construction.
pub struct Response {
    status: u16,
    headers: Vec<Header>,
    body: Bytes,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn header(mut self, name: &str, value: String) -> Self {
        self.headers.retain(|h| h.name != name);
        self.headers.push(Header {
            name: name.to_owned(),
            value,
        });
        self
    }

    pub fn json_body(self, body: String) -> Self {
        self.body("application/json; charset=utf-8", Bytes::from(body))
    }

    pub fn body(mut self, content_type: &str, body: Bytes) -> Self {
        self.body = body;
        self.header("content-type", content_type.to_owned())
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    pub fn build(self) -> HttpResponse {
        HttpResponse {
            status: u32::from(self.status),
            headers: self.headers,
            body: self.body,
        }
    }
}

/// The parsed `Prefer` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefer {
    pub return_: Option<ReturnPref>,
    pub count: Option<CountPref>,
    pub resolution: Option<Resolution>,
    pub missing_default: bool,
    pub tx: Option<TxPref>,
    pub strict: bool,
    pub max_affected: Option<i64>,
    pub timezone: Option<String>,
    /// Preferences not understood.
    pub invalid: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnPref {
    Minimal,
    HeadersOnly,
    Representation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountPref {
    Exact,
    Planned,
    Estimated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Merge,
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxPref {
    Commit,
    Rollback,
}

impl Prefer {
    pub fn parse(raw: Option<&str>) -> Self {
        let mut p = Self::default();
        for token in raw
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            match token {
                "return=minimal" => p.return_ = Some(ReturnPref::Minimal),
                "return=headers-only" => p.return_ = Some(ReturnPref::HeadersOnly),
                "return=representation" => p.return_ = Some(ReturnPref::Representation),
                "count=exact" => p.count = Some(CountPref::Exact),
                "count=planned" => p.count = Some(CountPref::Planned),
                "count=estimated" => p.count = Some(CountPref::Estimated),
                "resolution=merge-duplicates" => p.resolution = Some(Resolution::Merge),
                "resolution=ignore-duplicates" => p.resolution = Some(Resolution::Ignore),
                "missing=default" => p.missing_default = true,
                "missing=null" => p.missing_default = false,
                "tx=commit" => p.tx = Some(TxPref::Commit),
                "tx=rollback" => p.tx = Some(TxPref::Rollback),
                "handling=strict" => p.strict = true,
                "handling=lenient" => p.strict = false,
                other => {
                    if let Some(n) = other.strip_prefix("max-affected=") {
                        match n.parse() {
                            Ok(n) => p.max_affected = Some(n),
                            Err(_) => p.invalid.push(other.to_owned()),
                        }
                    } else if let Some(tz) = other.strip_prefix("timezone=") {
                        p.timezone = Some(tz.to_owned());
                    } else {
                        p.invalid.push(other.to_owned());
                    }
                }
            }
        }
        p
    }
}

/// What the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Json,
    /// One object (`application/vnd.pgrst.object+json`).
    Object {
        strip_nulls: bool,
    },
    Array {
        strip_nulls: bool,
    },
    Csv,
    OpenApi,
    Plan {
        json: bool,
    },
    GeoJson,
}

/// Chooses the response media type from `Accept` (by q-value, then order); 406 `PGRST107` when nothing offered is served.
pub fn negotiate(accept: Option<&str>) -> Result<Media, ApiError> {
    let raw = accept.unwrap_or("").trim();
    if raw.is_empty() {
        return Ok(Media::Json);
    }
    let mut offered: Vec<(f32, usize, &str)> = Vec::new();
    for (i, part) in raw.split(',').enumerate() {
        let part = part.trim();
        let q = part
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        offered.push((q, i, part));
    }
    offered.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
    });
    for (_, _, part) in &offered {
        let mut pieces = part.split(';').map(str::trim);
        let ty = pieces.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<String> = pieces
            .map(|p| p.replace(' ', "").to_ascii_lowercase())
            .collect();
        let strip_nulls = params.iter().any(|p| p == "nulls=stripped");
        let media = match ty.as_str() {
            "application/json" | "*/*" | "application/*" => Some(Media::Json),
            "application/vnd.pgrst.object+json" | "application/vnd.pgrst.object" => {
                Some(Media::Object { strip_nulls })
            }
            "application/vnd.pgrst.array+json" | "application/vnd.pgrst.array" => {
                Some(Media::Array { strip_nulls })
            }
            "text/csv" | "text/*" => Some(Media::Csv),
            "application/openapi+json" => Some(Media::OpenApi),
            "application/vnd.pgrst.plan+json" | "application/vnd.pgrst.plan" => {
                Some(Media::Plan { json: true })
            }
            "application/vnd.pgrst.plan+text" => Some(Media::Plan { json: false }),
            "application/geo+json" => Some(Media::GeoJson),
            _ => None,
        };
        if let Some(m) = media {
            return Ok(m);
        }
    }
    Err(ApiError::new(
        406,
        "PGRST107",
        format!("None of these media types are available: {raw}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_tokens() {
        let p = Prefer::parse(Some(
            "return=representation, count=exact,handling=strict, max-affected=5, foo",
        ));
        assert_eq!(p.return_, Some(ReturnPref::Representation));
        assert_eq!(p.count, Some(CountPref::Exact));
        assert!(p.strict);
        assert_eq!(p.max_affected, Some(5));
        assert_eq!(p.invalid, vec!["foo"]);
    }

    #[test]
    fn accept() {
        assert_eq!(negotiate(None).unwrap(), Media::Json);
        assert_eq!(
            negotiate(Some("application/vnd.pgrst.object+json")).unwrap(),
            Media::Object { strip_nulls: false }
        );
        assert_eq!(
            negotiate(Some("application/vnd.pgrst.array+json;nulls=stripped")).unwrap(),
            Media::Array { strip_nulls: true }
        );
        assert_eq!(negotiate(Some("text/csv")).unwrap(), Media::Csv);
        assert_eq!(
            negotiate(Some("image/png, text/csv;q=0.5")).unwrap(),
            Media::Csv
        );
        let e = negotiate(Some("image/png")).unwrap_err();
        assert_eq!(e.status, 406);
        assert_eq!(e.code, "PGRST107");
    }

    #[test]
    fn error_body_has_four_keys() {
        let r = ApiError::new(400, "PGRST100", "x").response();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            json!({"code": "PGRST100", "details": null, "hint": null, "message": "x"})
        );
    }
}
