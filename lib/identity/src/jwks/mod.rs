//! The signing keys a verifier trusts: where they come from, how they are
//! read and when they are loaded again.

mod http;
mod keyset;
mod store;

pub(crate) use store::KeyStore;
pub use store::{JwksOptions, JwksSource};

pub(crate) use http::check_jwks_url;
