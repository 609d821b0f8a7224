//! What every Ferrobase process shares: typed configuration from the
//! environment, telemetry, the error enum that speaks both HTTP and gRPC, the
//! caller's auth context and its propagation across gRPC hops, JWT
//! verification and asymmetric signing keys, the PostgreSQL pool and shared
//! database bootstrap, Prometheus metrics, the gRPC server scaffolding and
//! graceful shutdown.

pub mod auth_context;
pub mod bootstrap;
pub mod config;
pub mod db;
pub mod error;
pub mod grpc;
pub mod health;
pub mod jwk;
pub mod jwt;
pub mod metrics;
pub mod migrate;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod wire;

pub use auth_context::{AuthContext, RequestId};
pub use error::{Error, ErrorCode};
