//! The `cloud` binary against a live scheduler (in this process) with an agent over the fake
//! runtime: the commands a user types, their exit codes and what they print.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

mod common;

use common::Cli;

use cloud_tests::{Cluster, wait_for};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_cli_session_works() {
    let c = Cluster::start().await;
    let node = c.fake_node("node-1").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let cli = Cli {
        url: c.http_url(),
        key: c.admin_key(),
        config: &config,
    };

    let out = cli
        .ok(&[
            "instance",
            "launch",
            "--name",
            "web",
            "--image",
            "local/busybox:latest",
            "--cpu",
            "250m",
            "--memory",
            "64Mi",
            "--",
            "sh",
            "-c",
            "while true; do echo hi; sleep 1; done",
        ])
        .await;
    assert_eq!(out.trim(), "web");
    let inst = c.client().instance_get("web").await.unwrap();
    assert_eq!(
        inst.status,
        cloud_api::InstanceStatus::Running,
        "launch waits for running"
    );
    assert_eq!((inst.cpu_millis, inst.memory_mb), (250, 64));
    assert_eq!(
        inst.command,
        ["sh", "-c", "while true; do echo hi; sleep 1; done"]
    );

    let table = cli.ok(&["instance", "list"]).await;
    let header = table.lines().next().unwrap();
    for col in ["NAME", "STATUS", "NODE", "IMAGE"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(
        table.lines().any(|l| l.contains("web")
            && l.contains("running")
            && l.contains("node-1")
            && l.contains("250m")),
        "{table}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "instance", "list"]).await).unwrap();
    assert_eq!(json[0]["name"], "web");
    assert_eq!(json[0]["status"], "running");

    let show = cli.ok(&["instance", "show", "web"]).await;
    assert!(
        show.contains(&inst.id.to_string()) && show.contains("local/busybox:latest"),
        "{show}"
    );

    node.runtime
        .push_log(&inst.id.to_string(), b"hello from the fake\n");
    let logs = cli.ok(&["instance", "logs", "web", "--tail", "10"]).await;
    assert!(logs.contains("hello from the fake"), "{logs:?}");

    cli.ok(&["instance", "stop", "web"]).await;
    assert_eq!(
        c.client().instance_get("web").await.unwrap().status,
        cloud_api::InstanceStatus::Stopped
    );
    cli.ok(&["instance", "start", "web"]).await;
    assert_eq!(
        c.client().instance_get("web").await.unwrap().status,
        cloud_api::InstanceStatus::Running
    );

    let nodes = cli.ok(&["node", "list"]).await;
    assert!(
        nodes
            .lines()
            .any(|l| l.contains("node-1") && l.contains("ready")),
        "{nodes}"
    );
    let node_json: serde_json::Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "node", "show", "node-1"]).await).unwrap();
    assert_eq!(node_json["status"], "ready");

    cli.ok(&["instance", "rm", "web"]).await;
    let gone = cli.run(&["instance", "show", "web"]).await;
    assert_eq!(gone.status.code(), Some(1));
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("error:") && err.contains("not found"), "{err}");
    wait_for("container removed", Duration::from_secs(10), || async {
        node.runtime.containers().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_print_the_server_message_and_exit_non_zero() {
    let c = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let bad = Cli {
        url: c.http_url(),
        key: "tck_000000000000_nope".into(),
        config: &config,
    };
    let out = bad.run(&["instance", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("API key"), "{err}");

    let cli = Cli {
        url: c.http_url(),
        key: c.admin_key(),
        config: &config,
    };
    // No node: the capacity error from the server reaches the user.
    let out = cli
        .run(&[
            "instance",
            "launch",
            "--image",
            "local/busybox:latest",
            "--",
            "true",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no nodes are registered"), "{err}");
    // Usage errors are exit 2, before any request.
    let out = cli
        .run(&[
            "instance", "launch", "--image", "x", "--cpu", "lots", "--", "true",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2));

    // `config set` persists the endpoint with owner-only permissions.
    let plain = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloud"))
        .args(["config", "set", "api-key", "tck_000000000000_secret"])
        .env("CLOUD_CONFIG", &config)
        .env_remove("CLOUD_API_KEY")
        .output()
        .await
        .unwrap();
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&config).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}
