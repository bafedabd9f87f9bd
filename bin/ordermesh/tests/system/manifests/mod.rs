//! The manifests, run (issue 21): each overlay of `k8s/overlays` rendered by
//! `kubectl kustomize` and every Deployment's container started as a
//! kubelet would on this machine, from the rendered spec alone:
//!
//! - each pod on a host of its own (`ordermesh_testkit::hosts`: a network
//!   namespace, one address), its command and args as written, its env from
//!   the image (the Dockerfile's ENV), the rendered ConfigMap and the
//!   Secrets (envFrom, valueFrom), as its uid with a read-only root and only
//!   its declared volumes writable (`kubelet.rs`, bubblewrap), the Services
//!   resolving to their pods' addresses through its /etc/hosts;
//! - every declared probe run as declared (gRPC health with its service
//!   name, httpGet path and port, tcpSocket), every containerPort connected
//!   to, every env var checked against those the role's `--help` declares
//!   (`flags.rs`);
//! - an order through the gateway pod with a customer's token, then every
//!   pod stopped as the kubelet stops it (preStop, SIGTERM, grace period).
//!
//! The cluster's parts the overlays point at are the test's own: prod's
//! PostgreSQL (the Secret `ordermesh-database` made outside git) is a
//! private server on a host named `postgres.example.internal`, TLS only,
//! with a certificate of the test's CA and the Secret URL docs/rollout.md
//! gives (`sslmode=verify-full`, the image's CA bundle); its NATS a
//! three-node `nats-server -js` cluster at the Service name the overlay
//! uses; the identity provider of `config.env` an HTTPS JWKS server
//! (`openssl s_server`) at `auth.example.com`, with a certificate of a test
//! CA that the sandbox's CA bundle trusts, serving the test issuer's key.
//!
//! Not run, because they need a cluster: Istio (sidecar injection, ztunnel,
//! waypoints, AuthorizationPolicies, mTLS; the ambient overlay differs from
//! prod only there, so its pods run the same way), NetworkPolicies (no CNI
//! enforces them here), Flagger (its Canaries' targets run as the primaries
//! Flagger would make, `app: <name>-primary`, which the apex Services
//! select; its load tester is not our image), the HorizontalPodAutoscaler
//! (one replica each), the OTLP collector (prod's spans fail to export),
//! resource limits. docs/rollout.md, "Proving the manifests on a cluster",
//! has the commands that prove those on a real one.

mod backing;
mod checks;
mod env;
mod flags;
mod image;
mod kubelet;
mod rendered;
mod world;

#[tokio::test(flavor = "multi_thread")]
async fn the_dev_overlay_runs_against_the_binary() {
    world::run_overlay("k8s/overlays/dev").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prod_overlay_runs_against_the_binary_with_postgres_and_nats() {
    world::run_overlay("k8s/overlays/prod").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ambient_overlay_runs_against_the_binary() {
    world::run_overlay("k8s/overlays/ambient").await;
}
