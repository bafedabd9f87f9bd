//! Who orderctl calls as: `orderctl login CUSTOMER` asks the gateway's
//! development issuer for a token (`POST /v1/dev/token`) and keeps it in the
//! user's config directory, readable by the user only; every order command
//! sends it. With a real identity provider, put its token in `--token` (or
//! `ORDERCTL_TOKEN`) or `orderctl login --token TOKEN` instead.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Where the token is kept: `--config-dir`, else `$XDG_CONFIG_HOME/orderctl`,
/// else `~/.config/orderctl`.
pub fn config_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.to_owned());
    }
    if let Some(config) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(config).join("orderctl"));
    }
    let home = std::env::var_os("HOME").context("no HOME, and no --config-dir")?;
    Ok(PathBuf::from(home).join(".config/orderctl"))
}

fn token_path(dir: &Path) -> PathBuf {
    dir.join("token")
}

/// The token to send: `--token`, else the one `login` kept.
pub fn token(given: Option<&str>, dir: &Path) -> anyhow::Result<String> {
    if let Some(token) = given.filter(|t| !t.is_empty()) {
        return Ok(token.to_owned());
    }
    let path = token_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(token) => Ok(token.trim().to_owned()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            bail!("not signed in: run `orderctl login CUSTOMER` (or pass --token)")
        }
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Keeps `token`, with permissions for the user alone.
pub fn save(dir: &Path, token: &str) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let path = token_path(dir);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    // An existing file keeps its mode on open: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(token.as_bytes())?;
    Ok(path)
}

pub fn forget(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(token_path(dir)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
        _ => Ok(()),
    }
}

/// A development token for `customer` from the gateway at `gateway_url`.
pub async fn dev_token(
    gateway_url: &str,
    customer: &str,
    admin: bool,
) -> anyhow::Result<(String, u64)> {
    let uri: http::Uri = format!("{}/v1/dev/token", gateway_url.trim_end_matches('/'))
        .parse()
        .with_context(|| format!("{gateway_url:?} is not a URL"))?;
    let mut body = serde_json::json!({ "customerId": customer });
    if admin {
        body["scope"] = serde_json::json!("orders:admin");
    }
    let request = http::Request::post(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(request)
        .await
        .with_context(|| format!("POST {uri}"))?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        let message = answer["message"].as_str().unwrap_or("no message");
        if status == http::StatusCode::NOT_FOUND {
            bail!(
                "the gateway at {gateway_url} runs no development issuer (a real identity provider is configured): pass its token with --token"
            );
        }
        bail!("POST {uri}: HTTP {status}: {message}");
    }
    let token = answer["accessToken"]
        .as_str()
        .context("the gateway's answer has no accessToken")?;
    Ok((token.to_owned(), answer["expiresIn"].as_u64().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_token_is_the_users_alone_and_comes_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("orderctl");
        assert!(token(None, &config).is_err(), "nothing kept yet");
        let path = save(&config, "abc.def.ghi").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(token(None, &config).unwrap(), "abc.def.ghi");
        assert_eq!(token(Some("given"), &config).unwrap(), "given");
        forget(&config).unwrap();
        assert!(token(None, &config).is_err());
    }
}
