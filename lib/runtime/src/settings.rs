//! Every setting's default is written once, in its clap attribute. `Default`
//! implementations read it from there with [`defaults`], and never from the
//! environment, so a test's settings do not change with the shell it runs in.

use clap::{Args, Command, FromArgMatches};

/// The value of `T` with every flag at its declared default.
///
/// Panics only if `T` declares a required flag, which no settings type does
/// (each `Default` is unit-tested through this).
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(Command::new("defaults"))
        .no_binary_name(true)
        .mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command
        .try_get_matches_from(std::iter::empty::<&str>())
        .unwrap_or_else(|error| panic!("settings without a default: {error}"));
    T::from_arg_matches(&matches).unwrap_or_else(|error| panic!("settings defaults: {error}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Debug, clap::Args)]
    struct Example {
        #[arg(long, env = "ORDERMESH_TEST_SETTINGS_WAIT", default_value = "2s", value_parser = humantime::parse_duration)]
        wait: Duration,
        #[arg(long, env = "ORDERMESH_TEST_SETTINGS_NAME")]
        name: Option<String>,
    }

    #[test]
    fn defaults_come_from_the_attributes_not_the_environment() {
        let example: Example = defaults();
        assert_eq!(example.wait, Duration::from_secs(2));
        assert_eq!(example.name, None);
    }
}
