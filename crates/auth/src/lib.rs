//! The Ferrobase auth service: GoTrue-compatible users, sessions and tokens,
//! served to clients by the gateway under `/auth/v1`.
//!
//! The gateway forwards each HTTP request as a gRPC `Handle` call with the
//! caller's verified [`AuthContext`](ferrobase_common::AuthContext); [`api`]
//! turns it into an [`api::ApiRequest`], [`routes`] answers it, and errors take
//! the shape auth-js and supabase-py parse. The service owns schema `auth`,
//! migrated at start.
//!
//! Sessions, access tokens and rotating refresh tokens live in [`tokens`];
//! rows and their JSON shapes in [`models`]; email one-time tokens, links and
//! PKCE flow states in [`flows`], delivered by the [`mailer`]; password
//! hashing (on the blocking pool), hashes and TOTP in [`crypto`]; input checks
//! in [`validate`]; the audit trail in [`audit`].

pub mod api;
pub mod audit;
pub mod cleanup;
pub mod config;
pub mod crypto;
pub mod flows;
pub mod mailer;
pub mod migrations;
pub mod models;
pub mod routes;
pub mod service;
pub mod startup;
pub mod tokens;
pub mod validate;

pub use config::AuthConfig;
pub use startup::Application;
