//! Test modules, one per surface.

mod client_compat;
mod hostile;
mod read;
mod rpc;
mod schema;
mod write;
