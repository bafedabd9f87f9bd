//! The identity flags, shared by every role that reads a customer's token.

use std::path::PathBuf;
use std::time::Duration;

use clap::ArgAction;
use clap::builder::BoolishValueParser;

use crate::jwks::check_jwks_url;

/// Who issues customers' tokens and how to check them. With none of
/// `--jwt-issuer`, `--jwks-url` and `--jwks-file`, the development issuer
/// is in effect (unless `--dev-issuer=false`).
#[derive(Clone, Debug, clap::Args)]
pub struct IdentitySettings {
    /// Where the issuer publishes its signing keys (JWKS), over https;
    /// plain http only to a loopback host. (`--help` hides the variable's
    /// value: a URL may carry credentials.)
    #[arg(long, env = "ORDERMESH_JWKS_URL", hide_env_values = true, value_parser = parse_jwks_url, conflicts_with = "jwks_file")]
    pub jwks_url: Option<String>,
    /// A JWKS file instead of a URL; read again when a token names a key it
    /// lacks, e.g. DATA_DIR/dev-issuer-jwks.json of the development issuer.
    #[arg(long, env = "ORDERMESH_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted for `--jwks-url` besides the system's,
    /// for an issuer behind a private CA.
    #[arg(long, env = "ORDERMESH_JWKS_CA_FILE")]
    pub jwks_ca_file: Option<PathBuf>,
    /// The `iss` tokens must carry, exactly (Auth0's ends with a slash).
    #[arg(long, env = "ORDERMESH_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// A value the tokens' `aud` must be or contain.
    #[arg(long, env = "ORDERMESH_JWT_AUDIENCE", default_value = "ordermesh")]
    pub jwt_audience: String,
    /// The claim holding the shop's customer id (an issuer's `sub` is not
    /// always the shop's customer).
    #[arg(long, env = "ORDERMESH_CUSTOMER_CLAIM", default_value = "sub")]
    pub customer_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[arg(long, env = "ORDERMESH_JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,
    /// Run the development issuer when no issuer is configured (its tokens
    /// are anyone's for the asking: never on the internet).
    #[arg(
        long,
        env = "ORDERMESH_DEV_ISSUER",
        default_value_t = true,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub dev_issuer: bool,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        ordermesh_runtime::settings::defaults()
    }
}

impl IdentitySettings {
    /// Whether the development issuer is in effect: on, and no issuer or
    /// key set configured.
    pub fn dev_issuer_in_effect(&self) -> bool {
        self.dev_issuer && !self.issuer_configured()
    }

    fn issuer_configured(&self) -> bool {
        self.jwt_issuer.is_some() || self.jwks_url.is_some() || self.jwks_file.is_some()
    }

    /// The settings' mistakes that clap's attributes cannot express.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        let keys = self.jwks_url.is_some() || self.jwks_file.is_some();
        anyhow::ensure!(
            !(self.jwks_url.is_some() && self.jwks_file.is_some()),
            "--jwks-url and --jwks-file: one or the other"
        );
        anyhow::ensure!(
            self.jwt_issuer.is_none() || keys,
            "--jwt-issuer needs --jwks-url or --jwks-file: where the issuer's signing keys are"
        );
        anyhow::ensure!(
            !keys || self.jwt_issuer.is_some(),
            "--jwks-url/--jwks-file need --jwt-issuer: the `iss` the tokens carry (`ordermesh-dev` for the development issuer's)"
        );
        anyhow::ensure!(
            self.jwks_ca_file.is_none() || self.jwks_url.is_some(),
            "--jwks-ca-file applies to --jwks-url only"
        );
        anyhow::ensure!(
            self.issuer_configured() || self.dev_issuer,
            "no token issuer: pass --jwt-issuer with --jwks-url or --jwks-file, or leave --dev-issuer on"
        );
        anyhow::ensure!(!self.jwt_audience.is_empty(), "--jwt-audience is empty");
        anyhow::ensure!(!self.customer_claim.is_empty(), "--customer-claim is empty");
        Ok(())
    }
}

fn parse_jwks_url(url: &str) -> Result<String, String> {
    check_jwks_url(url).map(|_| url.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        identity: IdentitySettings,
    }

    fn parse(args: &[&str]) -> Result<IdentitySettings, clap::Error> {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map(|cli| cli.identity)
    }

    #[test]
    fn defaults() {
        let settings = IdentitySettings::default();
        assert_eq!(settings.jwt_audience, "ordermesh");
        assert_eq!(settings.customer_claim, "sub");
        assert_eq!(settings.jwt_leeway, Duration::from_secs(30));
        assert!(settings.dev_issuer);
        assert!(settings.dev_issuer_in_effect());
        assert!(settings.check().is_ok());
    }

    #[test]
    fn dev_issuer_flag() {
        let on = |args: &[&str]| parse(args).map(|s| s.dev_issuer).ok();
        assert_eq!(on(&["--dev-issuer=false"]), Some(false));
        assert_eq!(on(&["--dev-issuer=0"]), Some(false));
        assert_eq!(on(&["--dev-issuer"]), Some(true));
        assert_eq!(on(&["--dev-issuer=true"]), Some(true));
        assert_eq!(on(&["--dev-issuer=perhaps"]), None);
        let off = parse(&["--dev-issuer=false"]).expect("parsed");
        assert!(!off.dev_issuer_in_effect());
        assert!(off.check().is_err(), "no issuer at all");
    }

    #[test]
    fn a_configured_issuer_turns_the_dev_issuer_off() {
        let settings = parse(&[
            "--jwt-issuer=https://idp.example/",
            "--jwks-url=https://idp.example/.well-known/jwks.json",
            "--customer-claim=https://shop.example/customer",
            "--jwt-leeway=5s",
        ])
        .expect("parsed");
        assert!(settings.dev_issuer, "the flag is still on");
        assert!(!settings.dev_issuer_in_effect());
        assert!(settings.check().is_ok());
        assert_eq!(settings.jwt_leeway, Duration::from_secs(5));
        let file_only = parse(&["--jwks-file=/tmp/jwks.json"]).expect("parsed");
        assert!(!file_only.dev_issuer_in_effect());
    }

    #[test]
    fn mistakes_are_caught_at_start() {
        assert!(
            parse(&["--jwks-url=http://idp.example/jwks"]).is_err(),
            "plain http"
        );
        assert!(parse(&["--jwks-url=https://a/", "--jwks-file=/x"]).is_err());
        let no_keys = parse(&["--jwt-issuer=https://idp.example/"]).expect("parsed");
        assert!(no_keys.check().is_err());
        let no_issuer = parse(&["--jwks-file=/tmp/jwks.json"]).expect("parsed");
        assert!(no_issuer.check().is_err());
        let stray_ca =
            parse(&["--jwt-issuer=i", "--jwks-file=/x", "--jwks-ca-file=/ca.pem"]).expect("parsed");
        assert!(stray_ca.check().is_err());
    }
}
