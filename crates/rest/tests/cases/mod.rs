//! Test modules, one per surface.

mod hostile;
mod read;
mod rpc;
mod schema;
mod write;
