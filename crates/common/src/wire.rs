//! Error bodies in the shapes the official Supabase clients parse, shared by
//! the gateway (for its own refusals) and the services (for theirs).

use serde_json::{Value, json};

/// The API version both Supabase clients send; auth echoes it on errors.
pub const API_VERSION_HEADER: &str = "x-supabase-api-version";
/// The API version whose error format auth uses.
pub const API_VERSION_2024: &str = "2024-01-01";

/// True when the request's `X-Supabase-Api-Version` selects the 2024 error format.
pub fn wants_2024_errors(api_version: Option<&str>) -> bool {
    api_version.is_some_and(|v| v.trim() >= API_VERSION_2024)
}

/// An auth (GoTrue) error: the response headers to add and the JSON body.
///
/// 2024 format: `{"code", "message"}` plus `X-Supabase-Api-Version`; older:
/// `{"code": <status>, "error_code", "msg", "error_id" (5xx)}`. Both set
/// `x-sb-error-code`. `extra` keys (e.g. `weak_password`) are merged in.
pub fn auth_error(
    status: u16,
    code: &str,
    message: &str,
    api_version: Option<&str>,
    request_id: &str,
    extra: Option<&Value>,
) -> (Vec<(&'static str, String)>, Value) {
    let mut headers = vec![("x-sb-error-code", code.to_owned())];
    let mut body = if wants_2024_errors(api_version) {
        headers.push((API_VERSION_HEADER, API_VERSION_2024.to_owned()));
        json!({"code": code, "message": message})
    } else {
        let mut b = json!({"code": status, "error_code": code, "msg": message});
        if status >= 500 {
            b["error_id"] = Value::from(request_id);
        }
        b
    };
    if let (Some(Value::Object(extra)), Value::Object(map)) = (extra, &mut body) {
        for (k, v) in extra {
            map.insert(k.clone(), v.clone());
        }
    }
    (headers, body)
}

/// A PostgREST error body: always the four keys.
pub fn rest_error(code: &str, message: &str, details: Option<&str>, hint: Option<&str>) -> Value {
    json!({"code": code, "details": details, "hint": hint, "message": message})
}

/// Decodes an `application/x-www-form-urlencoded` string (a query) into pairs.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (as a space); malformed escapes stay as they are.
pub fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'+' => Some((b' ', 1)),
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1])
                .zip(hex(bytes[i + 2]))
                .map(|(h, l)| (h * 16 + l, 3)),
            _ => None,
        };
        let (byte, width) = decoded.unwrap_or((bytes[i], 1));
        out.push(byte);
        i += width;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_errors_follow_the_requested_version() {
        let (h, b) = auth_error(
            422,
            "weak_password",
            "too short",
            Some("2024-01-01"),
            "r1",
            None,
        );
        assert_eq!(b, json!({"code": "weak_password", "message": "too short"}));
        assert!(h.contains(&(API_VERSION_HEADER, API_VERSION_2024.to_owned())));
        let (h, b) = auth_error(500, "unexpected_failure", "boom", None, "r1", None);
        assert_eq!(
            b,
            json!({"code": 500, "error_code": "unexpected_failure", "msg": "boom", "error_id": "r1"})
        );
        assert_eq!(
            h,
            vec![("x-sb-error-code", "unexpected_failure".to_owned())]
        );
        let extra = json!({"weak_password": {"reasons": ["length"]}});
        let (_, b) = auth_error(
            422,
            "weak_password",
            "x",
            Some("2024-01-01"),
            "r",
            Some(&extra),
        );
        assert_eq!(b["weak_password"]["reasons"][0], "length");
    }

    #[test]
    fn decodes_queries() {
        let pairs = query_pairs("a=1&apikey=x%2By+z&b&&c=%zz%41");
        assert_eq!(pairs[1], ("apikey".to_owned(), "x+y z".to_owned()));
        assert_eq!(pairs[2], ("b".to_owned(), String::new()));
        assert_eq!(pairs[3], ("c".to_owned(), "%zzA".to_owned()));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
