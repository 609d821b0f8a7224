//! PostgreSQL errors as PostgREST answers them: SQLSTATE, message, detail and
//! hint passed through, with the HTTP status PostgREST maps each class to.

use serde_json::Value;

use crate::api::ApiError;

/// The HTTP status of a SQLSTATE; `anon` is whether the request ran as the anon role.
pub fn status_for(code: &str, message: &str, anon: bool) -> u16 {
    let class = code.get(..2).unwrap_or("");
    match code {
        "23503" | "23505" => return 409,
        "25006" => return 405,
        "21000" if message.ends_with("requires a WHERE clause") => return 400,
        "21000" => return 500,
        "22023" if message.starts_with("role") && message.ends_with("does not exist") => {
            return 401;
        }
        "42883" | "42P01" => return 404,
        "42P17" => return 500,
        "42501" => return if anon { 401 } else { 403 },
        "53400" => return 500,
        "57P01" => return 503,
        "P0001" => return 400,
        _ => {}
    }
    if let Some(n) = code.strip_prefix("PT")
        && let Ok(status) = n.parse::<u16>()
        && (100..600).contains(&status)
    {
        return status;
    }
    match class {
        "08" => 503,
        "09" => 500,
        "0L" | "0P" => 403,
        "25" => 500,
        "28" => 403,
        "2D" | "38" | "39" | "3B" | "40" => 500,
        "53" => 503,
        "54" | "55" | "57" | "58" | "F0" | "HV" | "XX" => 500,
        "P0" => 500,
        _ => 400,
    }
}

/// The answer when the database connection failed (PostgREST's `PGRST001`).
pub fn connection_failed() -> ApiError {
    ApiError::new(
        503,
        "PGRST001",
        "Database client error. Retrying the connection.",
    )
}

/// Maps a driver error to the client's error.
pub fn from_pg(err: &tokio_postgres::Error, anon: bool) -> ApiError {
    let Some(db) = err.as_db_error() else {
        if !err.is_closed() {
            tracing::warn!(error = %err, "database request failed");
        }
        return connection_failed();
    };
    from_parts(db.code().code(), db.message(), db.detail(), db.hint(), anon)
}

/// Maps an error the server reported on a request connection to the client's error.
pub fn from_db(err: &crate::pg::DbError, anon: bool) -> ApiError {
    from_parts(
        &err.code,
        &err.message,
        err.detail.as_deref(),
        err.hint.as_deref(),
        anon,
    )
}

/// A request connection that failed: 503 (or what the server said when it
/// refused the connection).
pub fn from_conn(err: &crate::pg::ConnError, anon: bool) -> ApiError {
    if let crate::pg::ConnError::Refused(db) = err {
        return from_db(db, anon);
    }
    tracing::warn!(error = %err, "database request failed");
    connection_failed()
}

fn from_parts(
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
    anon: bool,
) -> ApiError {
    // `RAISE SQLSTATE 'PGRST'` gives the function full control of the answer.
    if code == "PGRST" {
        return raised(message, detail);
    }
    let status = status_for(code, message, anon);
    let mut e = ApiError::new(status, code, message);
    if let Some(d) = detail {
        e = e.details(d);
    }
    if let Some(h) = hint {
        e = e.hint(h);
    }
    e
}

fn raised(message: &str, detail: Option<&str>) -> ApiError {
    let bad = || {
        ApiError::new(
            500,
            "PGRST121",
            "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error",
        )
        .details(message.to_owned())
    };
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(message) else {
        return bad();
    };
    let Some(Value::Object(d)) = detail.and_then(|d| serde_json::from_str::<Value>(d).ok()) else {
        return bad();
    };
    let status = d
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (100..600).contains(s));
    let Some(status) = status else {
        return bad();
    };
    let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut e = ApiError::new(
        status,
        &text("code").unwrap_or_default(),
        text("message").unwrap_or_default(),
    );
    e.details = m.get("details").cloned().unwrap_or(Value::Null);
    e.hint = text("hint");
    if let Some(Value::Object(h)) = d.get("headers") {
        for (k, v) in h {
            if let Some(v) = v.as_str() {
                e.headers.push((k.to_ascii_lowercase(), v.to_owned()));
            }
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(status_for("23505", "", false), 409);
        assert_eq!(status_for("42501", "", true), 401);
        assert_eq!(status_for("42501", "", false), 403);
        assert_eq!(status_for("22023", "role \"x\" does not exist", false), 401);
        assert_eq!(status_for("22023", "other", false), 400);
        assert_eq!(status_for("PT402", "", false), 402);
        assert_eq!(status_for("08006", "", false), 503);
        assert_eq!(status_for("22P02", "", false), 400);
        assert_eq!(status_for("P0002", "", false), 500);
        assert_eq!(status_for("57014", "", false), 500);
        assert_eq!(status_for("42703", "", false), 400);
    }

    #[test]
    fn raised_errors() {
        let e = raised(
            r#"{"code":"123","message":"Payment Required","details":"d","hint":"h"}"#,
            Some(r#"{"status":402,"headers":{"X-Powered-By":"Nerd Rage"}}"#),
        );
        assert_eq!(e.status, 402);
        assert_eq!(e.code, "123");
        assert_eq!(
            e.headers,
            vec![("x-powered-by".to_owned(), "Nerd Rage".to_owned())]
        );
        assert_eq!(raised("nope", None).code, "PGRST121");
    }
}
