//! The verifier tested as its users see it: tokens in, identities or
//! refusals out, keys from a fixed set, a file, or a local HTTP(S) server.

mod cached;
mod dev;
mod file;
mod remote;
mod rules;
mod server;
pub(crate) mod support;
