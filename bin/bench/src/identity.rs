//! The bench's own token issuer. Every `ordermesh` it starts trusts this
//! issuer's key (a JWKS file), Envoy's transcoder reads the same file, and
//! every request carries one customer's token, so both REST paths pay for
//! the same token check (each caches a repeated token) and direct gRPC for
//! the service's own.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use ordermesh_identity::{DEV_ISSUER, DevIssuer};

/// The customer every benchmark order belongs to.
pub const CUSTOMER: &str = "bench";

pub struct BenchIssuer {
    issuer: DevIssuer,
    token: String,
}

/// The issuer, its key made on first use in a directory kept for the run.
pub fn issuer() -> anyhow::Result<&'static BenchIssuer> {
    static ISSUER: OnceLock<BenchIssuer> = OnceLock::new();
    if let Some(issuer) = ISSUER.get() {
        return Ok(issuer);
    }
    let dir: PathBuf = tempfile::tempdir()
        .context("a directory for the bench's token issuer")?
        .keep();
    let issuer = DevIssuer::load_or_create(&dir).context("the bench's token issuer")?;
    let token = issuer
        .issue(CUSTOMER, None, Duration::from_secs(24 * 60 * 60))
        .context("the bench's token")?;
    Ok(ISSUER.get_or_init(|| BenchIssuer { issuer, token }))
}

impl BenchIssuer {
    /// `Bearer TOKEN`, for CUSTOMER.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// The token itself (the one `authorization` carries).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A token no verifier has seen yet: customer `bench-<n>`.
    pub fn fresh_token(&self, n: u64) -> anyhow::Result<String> {
        self.issuer
            .issue(
                &format!("{CUSTOMER}-{n}"),
                None,
                Duration::from_secs(60 * 60),
            )
            .context("a fresh token")
    }

    pub fn jwks_path(&self) -> &Path {
        self.issuer.jwks_path()
    }

    /// What makes an `ordermesh` process trust this issuer.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            (
                "ORDERMESH_JWKS_FILE",
                self.jwks_path().display().to_string(),
            ),
            ("ORDERMESH_JWT_ISSUER", DEV_ISSUER.to_owned()),
            ("ORDERMESH_DEV_ISSUER", "false".to_owned()),
        ]
    }
}
