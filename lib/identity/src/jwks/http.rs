//! Fetching a JWKS over HTTPS: rustls with the ring provider, given to this
//! client only (no process-wide provider is installed, so two verifiers, or
//! another library's TLS, never depend on who started first), trusting the
//! system's CA certificates plus any the operator names. Plain HTTP only to
//! loopback hosts, for local development and tests. Redirects are not
//! followed: the configured URL is the one trusted.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::keyset::MAX_JWKS_BYTES;

/// A JWKS document as fetched, and how long its server says to keep it.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) body: Bytes,
    pub(crate) max_age: Option<Duration>,
}

#[derive(Clone, Debug)]
pub(crate) struct HttpFetcher {
    uri: Uri,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
}

/// Checks a JWKS URL: `https://`, or `http://` to a loopback host only.
pub(crate) fn check_jwks_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let host = uri.host().ok_or("the URL has no host")?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err(format!(
            "plain http is allowed only to a loopback host (localhost, 127.0.0.1, [::1]), not {host}: use https"
        )),
        _ => Err("the URL must start with https://".into()),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl HttpFetcher {
    /// A client for one JWKS URL. `extra_ca_pem` adds CA certificates (PEM)
    /// to the system's, for an issuer behind a private CA.
    pub(crate) fn new(
        url: &str,
        extra_ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let uri = check_jwks_url(url).map_err(anyhow::Error::msg)?;
        let https = uri.scheme_str() == Some("https");
        let mut roots = rustls::RootCertStore::empty();
        if https {
            // The system's store is read once per verifier; unreadable
            // entries are skipped, as a browser would.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
        if let Some(pem) = extra_ca_pem {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .context("reading the JWKS CA certificates")?;
            if certs.is_empty() {
                bail!("the JWKS CA file holds no PEM certificate");
            }
            for cert in certs {
                roots.add(cert).context("adding a JWKS CA certificate")?;
            }
        }
        if https && roots.is_empty() {
            bail!(
                "no CA certificates to check {url} against: install the system's (ca-certificates) or name a CA file"
            );
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let builder = HttpsConnectorBuilder::new().with_tls_config(tls);
        let connector = if https {
            builder.https_only().enable_http1().wrap_connector(http)
        } else {
            builder.https_or_http().enable_http1().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            uri,
            client,
            timeout,
        })
    }

    pub(crate) async fn fetch(&self) -> Result<Fetched, String> {
        tokio::time::timeout(self.timeout, self.fetch_once())
            .await
            .map_err(|_| format!("GET {} took longer than {:?}", self.uri, self.timeout))?
    }

    async fn fetch_once(&self) -> Result<Fetched, String> {
        let request = Request::get(self.uri.clone())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .header(
                header::USER_AGENT,
                concat!("ordermesh/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| format!("building the request: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("GET {}: {}", self.uri, error_chain(&e)))?;
        if response.status() != StatusCode::OK {
            return Err(format!("GET {}: status {}", self.uri, response.status()));
        }
        let max_age = response
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(cache_control_max_age);
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading {}: {e}", self.uri))?
            .to_bytes();
        Ok(Fetched { body, max_age })
    }
}

/// `max-age` of a `Cache-Control` value; `no-cache`/`no-store` as zero
/// (the caller bounds it both ways).
pub(crate) fn cache_control_max_age(value: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            max_age = secs.trim_matches('"').parse().ok().map(Duration::from_secs);
        }
    }
    max_age
}

/// An error and its sources on one line: hyper's own message alone is
/// often just "client error (Connect)".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_to_loopback() {
        assert!(check_jwks_url("https://idp.example/certs").is_ok());
        assert!(check_jwks_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_jwks_url("http://127.9.9.9/jwks").is_ok());
        assert!(check_jwks_url("http://localhost/jwks").is_ok());
        assert!(check_jwks_url("http://[::1]:9/jwks").is_ok());
        assert!(check_jwks_url("http://idp.example/certs").is_err());
        assert!(check_jwks_url("http://10.0.0.1/certs").is_err());
        assert!(check_jwks_url("http://localhost.idp.example/certs").is_err());
        assert!(check_jwks_url("ftp://idp.example/certs").is_err());
        assert!(check_jwks_url("/etc/jwks.json").is_err());
        assert!(check_jwks_url("").is_err());
    }

    #[test]
    fn max_age_from_cache_control() {
        assert_eq!(
            cache_control_max_age("public, max-age=300, must-revalidate"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            cache_control_max_age("Max-Age=\"60\""),
            Some(Duration::from_secs(60))
        );
        assert_eq!(cache_control_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(cache_control_max_age("public"), None);
        assert_eq!(cache_control_max_age("max-age=-1"), None);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        assert!(
            HttpFetcher::new(
                "https://idp.example/",
                Some(b"nothing here"),
                Duration::from_secs(1)
            )
            .is_err()
        );
    }
}
