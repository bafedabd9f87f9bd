//! The bench's command line, run as a user runs it. Having an integration
//! test also makes `cargo test --workspace` build the `ordermesh-bench`
//! binary, which the system tests start (the fronting test's echo service).

use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ordermesh-bench"))
}

#[test]
fn help_lists_every_command() {
    let output = bench().arg("--help").output().expect("run ordermesh-bench");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["run", "echo-server", "compare", "instructions"] {
        assert!(help.contains(command), "`{command}` missing from:\n{help}");
    }
}

#[test]
fn a_bad_flag_is_a_usage_error_not_a_run() {
    let output = bench()
        .args(["run", "--no-such-flag"])
        .output()
        .expect("run ordermesh-bench");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}
