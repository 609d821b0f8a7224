//! One error type for every service, speaking both protocols.
//!
//! [`ErrorCode`] is a closed set that maps to an HTTP status and a
//! [`tonic::Code`]; [`Error`] pairs it with a client-safe message and keeps the
//! internal cause apart, so database text or internal chains never reach a client.

use std::fmt;

/// What went wrong, in terms a caller can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    Conflict,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    Timeout,
    NotImplemented,
    Internal,
}

impl ErrorCode {
    /// The HTTP status for this code.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument => 400,
            Self::Unauthenticated => 401,
            Self::PermissionDenied => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::NotImplemented => 501,
            Self::Unavailable => 503,
            Self::Timeout => 504,
        }
    }

    /// The gRPC status code for this code.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Self::InvalidArgument => tonic::Code::InvalidArgument,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::NotFound => tonic::Code::NotFound,
            Self::Conflict => tonic::Code::AlreadyExists,
            Self::PayloadTooLarge => tonic::Code::OutOfRange,
            Self::RateLimited => tonic::Code::ResourceExhausted,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Timeout => tonic::Code::DeadlineExceeded,
            Self::NotImplemented => tonic::Code::Unimplemented,
            Self::Internal => tonic::Code::Internal,
        }
    }

    /// The code for a gRPC status received from another service.
    pub fn from_grpc(code: tonic::Code) -> Self {
        use tonic::Code as C;
        match code {
            C::InvalidArgument | C::FailedPrecondition => Self::InvalidArgument,
            C::Unauthenticated => Self::Unauthenticated,
            C::PermissionDenied => Self::PermissionDenied,
            C::NotFound => Self::NotFound,
            C::AlreadyExists | C::Aborted => Self::Conflict,
            C::OutOfRange => Self::PayloadTooLarge,
            C::ResourceExhausted => Self::RateLimited,
            C::Unavailable => Self::Unavailable,
            C::DeadlineExceeded | C::Cancelled => Self::Timeout,
            C::Unimplemented => Self::NotImplemented,
            C::Ok | C::Unknown | C::Internal | C::DataLoss => Self::Internal,
        }
    }

    /// A short snake_case name, used in logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::NotImplemented => "not_implemented",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a code, a client-safe message and an optional internal cause.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    code: ErrorCode,
    message: String,
    #[source]
    source: Option<anyhow::Error>,
}

impl Error {
    /// An error whose `message` is safe to show to a client.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// An internal failure: the client sees a generic message, the cause stays in logs.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ErrorCode::Internal,
            message: "internal error".to_owned(),
            source: Some(source.into()),
        }
    }

    /// Attaches the internal cause.
    pub fn with_source(mut self, source: impl Into<anyhow::Error>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message a client may see.
    pub fn client_message(&self) -> &str {
        &self.message
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        // This is where a service hands the error to its caller: log it here, once.
        if let Some(source) = &err.source {
            if err.code == ErrorCode::Internal {
                tracing::error!(error = ?source, code = %err.code, "request failed");
            } else {
                tracing::debug!(error = ?source, code = %err.code, "request refused");
            }
        }
        tonic::Status::new(err.code.grpc_code(), err.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = Error::internal(anyhow::anyhow!("password authentication failed for user x"));
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn codes_round_trip_through_grpc() {
        for code in [
            ErrorCode::InvalidArgument,
            ErrorCode::Unauthenticated,
            ErrorCode::PermissionDenied,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::PayloadTooLarge,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::Timeout,
            ErrorCode::NotImplemented,
            ErrorCode::Internal,
        ] {
            assert_eq!(ErrorCode::from_grpc(code.grpc_code()), code, "{code}");
        }
        assert_eq!(ErrorCode::Unavailable.http_status(), 503);
        assert_eq!(ErrorCode::NotImplemented.http_status(), 501);
    }
}
