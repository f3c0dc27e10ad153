//! The volume commands of the `cloud` binary (`volume create/list/show/rm`) against a live
//! scheduler in this process, with an agent over the fake runtime and an in-memory volume
//! backend.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

mod common;

use common::Cli;

use cloud_agent::storage::{FakeVolumes, StorageError, VolumeBackend};
use cloud_tests::Cluster;

/// A node over the fake runtime with a 100 GB volume pool, once the scheduler knows the pool.
async fn pooled_node(c: &Cluster, name: &str) -> (cloud_agent::AgentHandle, FakeVolumes) {
    let (node, volumes) = c.fake_volume_node(name, 100).await;
    (node.agent, volumes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_volume_session_works() {
    let c = Cluster::start().await;
    let (_node, volumes) = pooled_node(&c, "node-1").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let cli = Cli {
        url: c.http_url(),
        key: c.admin_key(),
        config: &config,
    };

    // Create, waiting until available.
    let (out, log) = cli
        .ok_with_log(&["volume", "create", "data", "--size", "2G"])
        .await;
    assert!(log.starts_with("data: creating"), "{log}");
    assert!(log.contains(" … available ("), "{log}");
    let field = |out: &str, key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{key} missing: {out}"))
            .to_string()
    };
    assert_eq!(field(&out, "Status"), "available", "{out}");
    assert_eq!(field(&out, "Size"), "2G", "{out}");
    assert!(field(&out, "Node").starts_with("node-1 ("), "{out}");

    // List and show.
    let table = cli.ok(&["volume", "list"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "ID", "SIZE", "NODE", "STATUS", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[0], "data", "{table}");
    assert_eq!(row[2..5], ["2G", "node-1", "available"], "{table}");
    let list = cli.json(&["volume", "list"]).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "data");
    assert_eq!(list[0]["size_gb"], 2);
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(volumes.get(&id).await.unwrap().size_bytes, 2 << 30);
    let shown = cli.json(&["volume", "show", &id]).await;
    assert_eq!(shown["name"], "data");
    assert_eq!(shown["status"], "available");
    let show = cli.ok(&["volume", "show", "data"]).await;
    assert_eq!(field(&show, "ID"), id, "{show}");
    assert_eq!(field(&show, "Status reason"), "-", "{show}");

    // Refusals reach the user with the server's message.
    let err = cli
        .fails(&["volume", "create", "data", "--size", "1G"])
        .await;
    assert!(
        err.contains("already exists") && err.contains("HTTP 409"),
        "{err}"
    );
    let err = cli
        .fails(&["volume", "create", "huge", "--size", "500G"])
        .await;
    assert!(err.contains("HTTP 409"), "{err}");
    let out = cli.run(&["volume", "create", "zero", "--size", "0"]).await;
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1G"));

    // A volume the node fails to create: the command fails with the reason.
    volumes.fail_next(StorageError::NoSpace("the pool is exhausted".into()));
    let err = cli
        .fails(&["volume", "create", "broken", "--size", "1G"])
        .await;
    assert!(err.contains("error: volume broken failed: "), "{err}");
    assert!(err.contains("the pool is exhausted"), "{err}");
    let show = cli.ok(&["volume", "show", "broken"]).await;
    assert_eq!(field(&show, "Status"), "failed", "{show}");
    assert!(
        field(&show, "Status reason").contains("the pool is exhausted"),
        "{show}"
    );
    assert_eq!(cli.ok(&["volume", "rm", "broken"]).await.trim(), "broken");

    // Without waiting.
    let (out, log) = cli
        .ok_with_log(&["volume", "create", "logs", "--size", "1G", "--no-wait"])
        .await;
    assert_eq!(log.trim(), "logs: created (creating)");
    assert_eq!(field(&out, "Status"), "creating", "{out}");

    // Remove, waiting until gone.
    let (out, log) = cli.ok_with_log(&["volume", "rm", "data"]).await;
    assert_eq!(out.trim(), "data");
    assert!(log.starts_with("data: deleting"), "{log}");
    assert!(log.contains(" … deleted ("), "{log}");
    assert!(volumes.get(&id).await.is_err(), "deleted on the node");
    let err = cli.fails(&["volume", "show", "data"]).await;
    assert!(err.contains("not found"), "{err}");
    let err = cli.fails(&["volume", "rm", "data"]).await;
    assert!(err.contains("not found"), "{err}");

    let gone = cli.json(&["volume", "rm", "logs"]).await;
    assert_eq!(gone["name"], "logs");
    assert_eq!(gone["status"], "deleting");
    assert!(cli.ok(&["volume", "list"]).await.contains("No volumes"));
    assert_eq!(cli.json(&["volume", "list"]).await, serde_json::json!([]));
}
