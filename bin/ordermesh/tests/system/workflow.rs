//! The everyday workflow's scripts, as `make dev-run`, `make test-client`,
//! `make dev-stop` and the deploy targets run them.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::harness::{
    ORDERMESH, RoleProcess, eventually, free_port, sibling_binary, workspace_root,
};

fn script(name: &str, args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(workspace_root().join("scripts").join(name))
        .current_dir(workspace_root())
        // SQLite under the test's own folder, never a shared database.
        .env_remove("DATABASE_URL")
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run the script")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_run_demo_and_dev_stop() {
    let data = tempfile::tempdir().unwrap();
    let ports = [
        ("ORDER_PORT", free_port()),
        ("INVENTORY_PORT", free_port()),
        ("PAYMENT_PORT", free_port()),
        ("GATEWAY_PORT", free_port()),
    ];
    let admin_base = free_port();
    let bin_dir = Path::new(ORDERMESH).parent().unwrap().display().to_string();
    let mut env: Vec<(&str, String)> = vec![
        ("BIN_DIR", bin_dir),
        ("DATA_DIR", data.path().display().to_string()),
        ("ADMIN_PORT_BASE", admin_base.to_string()),
    ];
    env.extend(ports.iter().map(|(k, v)| (*k, v.to_string())));

    // Another ordermesh on this machine, which dev-stop must leave alone.
    let bystander_db = ordermesh_testkit::TestDatabase::sqlite();
    let bystander = RoleProcess::start(&bystander_db, "payment", &[]).await;

    let started = script("dev.sh", &["start"], &env);
    assert!(started.status.success(), "{}", text(&started));
    let [order, inventory, _, gateway] = ports.map(|(_, port)| port);
    let orderctl = sibling_binary("orderctl");
    for url in [
        format!("http://127.0.0.1:{order}"),
        format!("http://127.0.0.1:{gateway}/readyz"),
    ] {
        eventually(Duration::from_secs(30), &format!("{url} serving"), || {
            let ok = Command::new(&orderctl)
                .args(["health", &url, "--timeout", "2s"])
                .output()
                .is_ok_and(|o| o.status.success());
            async move { ok.then_some(()) }
        })
        .await;
    }
    let status = script("dev.sh", &["status"], &env);
    assert!(status.status.success(), "{}", text(&status));
    let pids: Vec<u32> = ["order", "inventory", "payment", "gateway"]
        .iter()
        .map(|role| {
            let file = data.path().join(format!("run/{role}.pid"));
            std::fs::read_to_string(&file)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();

    let mut demo_env = vec![
        ("ORDERCTL", orderctl.display().to_string()),
        ("ORDERCTL_ORDER_URL", format!("http://127.0.0.1:{order}")),
        (
            "ORDERCTL_INVENTORY_URL",
            format!("http://127.0.0.1:{inventory}"),
        ),
        // The roles share the data directory, so one development issuer's
        // key: the gateway's tokens verify at the order service.
        (
            "ORDERCTL_GATEWAY_URL",
            format!("http://127.0.0.1:{gateway}"),
        ),
    ];
    demo_env.extend(env.iter().cloned());
    let demo = script("demo.sh", &[], &demo_env);
    let demo_text = text(&demo);
    assert!(demo.status.success(), "{demo_text}");
    for expected in [
        "Browse the catalog",
        "CONFIRMED",
        "CARD_DECLINED",
        "CANCELLED",
        "demo complete",
    ] {
        assert!(
            demo_text.contains(expected),
            "no {expected:?} in:\n{demo_text}"
        );
    }

    let stopped = script("dev.sh", &["stop"], &env);
    assert!(stopped.status.success(), "{}", text(&stopped));
    for pid in pids {
        assert!(!alive(pid), "pid {pid} still runs after dev-stop");
    }
    assert!(
        crate::harness::connect_checked(bystander.addr()).await,
        "dev-stop stopped a process it did not start"
    );
    for role in ["order", "inventory", "payment", "gateway"] {
        let log = std::fs::read_to_string(data.path().join(format!("logs/{role}.log"))).unwrap();
        assert!(log.contains("\"listening\""), "{role}.log: {log}");
        assert!(
            log.contains("\"stopped\"") || role == "gateway",
            "{role} drained: {log}"
        );
    }
    let after = script("dev.sh", &["status"], &env);
    assert!(!after.status.success(), "status says something still runs");
}

#[test]
fn deploy_targets_print_their_commands_when_the_tool_is_missing() {
    let engine = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    let cluster = Command::new("kubectl")
        .args(["cluster-info", "--request-timeout=3s"])
        .output()
        .is_ok_and(|o| o.status.success());
    for (target, present, expected) in [
        (
            "deploy-docker",
            engine,
            "docker compose -f deploy/docker-compose.yaml up -d --wait",
        ),
        ("deploy-k8s", cluster, "kubectl apply -k k8s/overlays/dev"),
    ] {
        if present {
            continue; // it would really deploy
        }
        let output = Command::new("make")
            .args(["-s", target])
            .current_dir(workspace_root())
            .output()
            .expect("run make");
        assert!(
            !output.status.success(),
            "{target} must fail without its tool"
        );
        assert!(
            text(&output).contains(expected),
            "{target}: {}",
            text(&output)
        );
    }
}

#[test]
fn make_help_lists_every_target() {
    let output = Command::new("make")
        .arg("help")
        .current_dir(workspace_root())
        .output()
        .expect("run make help");
    let help = text(&output);
    for target in [
        "setup",
        "build",
        "test",
        "lint",
        "fmt",
        "test-coverage",
        "proto",
        "dev-run",
        "dev-stop",
        "test-client",
        "deploy-docker",
        "deploy-k8s",
    ] {
        assert!(
            help.lines()
                .any(|line| line.trim_start().starts_with(&format!("{target} "))),
            "make help does not list {target}:\n{help}"
        );
    }
}
