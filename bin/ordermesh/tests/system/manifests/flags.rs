//! The environment variables a role of the binary reads, from its own
//! `--help`: clap prints `[env: NAME=value]` (or `[env: NAME]` when the
//! value is hidden) after every flag that has one, the global flags
//! included. Reading the help needs nothing added to the binary; hidden
//! flags (failpoints) are left out, which is right, since no manifest should
//! set them.
//!
//! The help runs with the manifest's own arguments in front, so a flag the
//! binary does not take fails here already, with clap's message.

use std::collections::BTreeSet;
use std::process::Command;

/// Variables read outside clap: the log filter (lib/runtime/src/telemetry.rs
/// reads `RUST_LOG`, then `LOG_LEVEL`).
const READ_OUTSIDE_CLAP: [&str; 2] = ["RUST_LOG", "LOG_LEVEL"];

/// The names `binary args… --help` declares, with those read outside clap.
pub fn env_names(binary: &str, args: &[String]) -> BTreeSet<String> {
    let output = Command::new(binary)
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .expect("run ordermesh --help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "`ordermesh {} --help` failed: the manifest's arguments are not the binary's:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut names = declared(&help);
    assert!(
        names.len() > 10,
        "`ordermesh {} --help` lists only {names:?}: has clap's help format changed?",
        args.join(" ")
    );
    names.extend(READ_OUTSIDE_CLAP.map(str::to_owned));
    names
}

/// Every `[env: NAME…]` of a help text, wherever clap wrapped its lines.
fn declared(help: &str) -> BTreeSet<String> {
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| {
            let end = rest.find(['=', ']'])?;
            Some(rest[..end].to_owned())
        })
        .collect()
}

#[test]
fn reads_the_env_names_of_a_help_text() {
    let help = "  --order-addr <ORDER_ADDR>\n          Where [env:\n          ORDERMESH_ORDER_ADDR=]\n  \
                --jwks-url <JWKS_URL>  [env: ORDERMESH_JWKS_URL]\n  --x  [default: 1]\n";
    assert_eq!(
        declared(help),
        BTreeSet::from([
            "ORDERMESH_ORDER_ADDR".to_owned(),
            "ORDERMESH_JWKS_URL".to_owned()
        ])
    );
}
