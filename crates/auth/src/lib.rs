//! The Ferrobase auth service: GoTrue-compatible users, sessions and tokens,
//! served to clients by the gateway under `/auth/v1`.
//!
//! The gateway forwards each HTTP request as a gRPC `Handle` call with the
//! caller's verified [`AuthContext`](ferrobase_common::AuthContext); [`api`]
//! turns it into an [`api::ApiRequest`], [`routes`] answers it, and errors take
//! the shape auth-js and supabase-py parse. The service owns schema `auth`,
//! migrated at start.

pub mod api;
pub mod config;
pub mod migrations;
pub mod routes;
pub mod service;
pub mod startup;

pub use config::AuthConfig;
pub use startup::Application;
