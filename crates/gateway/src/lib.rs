//! The Ferrobase gateway: the only HTTP/WebSocket edge.
//!
//! It routes `/auth/v1`, `/rest/v1`, `/storage/v1`, `/pg` and `/realtime/v1` to
//! their services over long-lived gRPC channels; checks the API key and verifies
//! the bearer JWT locally; applies CORS, request ids, body limits and Redis-backed
//! rate limits; and answers its own refusals in the error shape each Supabase
//! client expects. It knows nothing of PostgREST grammar, storage rules or the
//! Phoenix protocol: it forwards an [`AuthContext`](ferrobase_common::AuthContext)
//! and the request, and relays the answer.

pub mod config;
pub mod cors;
pub mod error;
pub mod identity;
pub mod proxy;
pub mod rate_limit;
pub mod request;
pub mod startup;
pub mod surface;
pub mod upstream;

pub use config::GatewayConfig;
pub use startup::Application;
