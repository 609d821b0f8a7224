//! The Ferrobase rest service: a PostgREST-compatible engine over the user's
//! schemas, served to clients by the gateway under `/rest/v1`.
//!
//! The gateway forwards each HTTP request as a gRPC `Handle` call with the
//! caller's verified [`AuthContext`](ferrobase_common::AuthContext). [`api`]
//! reads it, [`parser`] parses the query string, [`plan`] resolves names and
//! relationships against the [`schema`] cache and renders SQL with bound
//! values, [`db`] runs it in one transaction as the caller's role (one
//! pipeline on a [`pg`] connection), and
//! PostgreSQL renders the JSON.

pub mod api;
pub mod config;
pub mod db;
pub mod error;
pub mod handler;
pub mod openapi;
pub mod parser;
pub mod pg;
pub mod plan;
pub mod schema;
pub mod service;
pub mod startup;

pub use config::RestConfig;
pub use startup::Application;
