//! The verifier tested as its users see it: tokens in, identities or
//! refusals out, keys from a fixed set, a file, or a local HTTP(S) server.

mod cached;
mod dev;
mod file;
mod remote;
mod rules;
mod server;
pub(crate) mod support;

/// Layers and handlers in tonic and axum need both, across tasks.
#[test]
fn verifier_and_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn send<F: std::future::Future + Send>(_: F) {}
    send_sync::<crate::Verifier>();
    send_sync::<crate::DevIssuer>();
    let (verifier, _) = support::verifier(&[]);
    send(verifier.verify("a.b.c"));
    send(verifier.verify_authorization(None));
}
