//! Rest service integration tests against a real PostgreSQL, over gRPC.

mod cases;
mod support;
