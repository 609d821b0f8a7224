//! Test modules, one per surface.

mod client_compat;
mod hostile;
mod pipeline;
mod read;
mod rpc;
mod schema;
mod write;
