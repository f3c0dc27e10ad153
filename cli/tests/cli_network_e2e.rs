//! The networking commands of the `cloud` binary (`vpc`, `subnet`, `sg`, `instance sg`,
//! `instance launch --subnet`) against a live scheduler in this process, with an agent over
//! the fake runtime and the fake VPC data plane.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

mod common;

use common::Cli;

use cloud_tests::Cluster;
use std::net::Ipv4Addr;

/// A node over the fake runtime that can run instances in VPCs (it reports an underlay).
async fn vpc_node(c: &Cluster, name: &str) -> cloud_agent::AgentHandle {
    c.fake_vpc_node(name, Ipv4Addr::new(192, 0, 2, 1))
        .await
        .0
        .agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_network_session_works() {
    let c = Cluster::start().await;
    let _node = vpc_node(&c, "node-1").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let cli = Cli {
        url: c.http_url(),
        key: c.admin_key(),
        config: &config,
    };

    // VPCs.
    let out = cli
        .ok(&["vpc", "create", "prod", "--cidr", "10.10.0.0/16"])
        .await;
    assert!(
        out.contains("VNI:") && out.contains("10.10.0.0/16"),
        "{out}"
    );
    let table = cli.ok(&["vpc", "list"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "ID", "CIDR", "VNI", "AGE"], "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("prod ") && l.contains("10.10.0.0/16")),
        "{table}"
    );
    let vpcs = cli.json(&["vpc", "list"]).await;
    assert_eq!(vpcs[0]["name"], "prod");
    let vpc_id = vpcs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(cli.json(&["vpc", "show", &vpc_id]).await["name"], "prod");

    // Subnets.
    let subnet = cli
        .json(&[
            "subnet",
            "create",
            "web",
            "--vpc",
            "prod",
            "--cidr",
            "10.10.1.0/24",
            "--nat-egress",
        ])
        .await;
    assert_eq!(subnet["gateway"], "10.10.1.1");
    assert_eq!(subnet["nat_egress"], true);
    let table = cli.ok(&["subnet", "list", "--vpc", "prod"]).await;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("10.10.1.0/24") && l.contains("yes")),
        "{table}"
    );
    let show = cli.ok(&["subnet", "show", "web", "--vpc", "prod"]).await;
    assert!(show.contains(&format!("prod ({vpc_id})")), "{show}");
    let show = cli.ok(&["vpc", "show", "prod"]).await;
    assert!(
        show.contains("Subnets:") && show.contains("10.10.1.0/24"),
        "{show}"
    );
    let err = cli
        .fails(&[
            "subnet",
            "create",
            "out",
            "--vpc",
            "prod",
            "--cidr",
            "10.99.0.0/24",
        ])
        .await;
    assert!(
        err.contains("HTTP 4"),
        "the server refuses a range outside the VPC: {err}"
    );

    // Security groups and their rules.
    let web = cli
        .json(&["sg", "create", "web", "--rule", "ingress:tcp:80:0.0.0.0/0"])
        .await;
    assert_eq!(web["rules"].as_array().unwrap().len(), 1);
    cli.ok(&[
        "sg",
        "create",
        "db",
        "--description",
        "the database",
        "--rule",
        "ingress:tcp:5432:sg=web",
        "--rule",
        "egress:all::0.0.0.0/0",
    ])
    .await;
    let show = cli.ok(&["sg", "show", "db"]).await;
    for spec in ["ingress:tcp:5432:sg=web", "egress:all::0.0.0.0/0"] {
        assert!(show.lines().any(|l| l.ends_with(spec)), "{spec}: {show}");
    }
    let list = cli.ok(&["sg", "list"]).await;
    assert!(
        list.lines()
            .any(|l| l.starts_with("db ") && l.contains("the database")),
        "{list}"
    );

    let g = cli
        .json(&[
            "sg",
            "rules",
            "add",
            "web",
            "--rule",
            "ingress:tcp:22:0.0.0.0/0",
        ])
        .await;
    assert_eq!(g["rules"].as_array().unwrap().len(), 2, "{g}");
    // Adding a rule it has changes nothing.
    let g = cli
        .json(&[
            "sg",
            "rules",
            "add",
            "web",
            "--rule",
            "ingress:tcp:22:0.0.0.0/0",
        ])
        .await;
    assert_eq!(g["rules"].as_array().unwrap().len(), 2, "{g}");
    let err = cli
        .fails(&[
            "sg",
            "rules",
            "rm",
            "web",
            "--rule",
            "ingress:udp:53:0.0.0.0/0",
        ])
        .await;
    assert!(
        err.contains("has no rule ingress:udp:53:0.0.0.0/0"),
        "{err}"
    );
    assert!(
        err.contains("ingress:tcp:22:0.0.0.0/0"),
        "lists the rules: {err}"
    );
    let g = cli
        .json(&[
            "sg",
            "rules",
            "rm",
            "web",
            "--rule",
            "ingress:tcp:22:0.0.0.0/0",
        ])
        .await;
    assert_eq!(g["rules"].as_array().unwrap().len(), 1, "{g}");
    // Removing by group name matches the stored id.
    let g = cli
        .json(&[
            "sg",
            "rules",
            "rm",
            "db",
            "--rule",
            "ingress:tcp:5432:sg=web",
        ])
        .await;
    assert_eq!(g["rules"].as_array().unwrap().len(), 1, "{g}");
    let g = cli.json(&["sg", "rules", "set", "db", "--none"]).await;
    assert!(g["rules"].as_array().unwrap().is_empty(), "{g}");
    let g = cli
        .json(&[
            "sg",
            "rules",
            "set",
            "db",
            "--rule",
            "ingress:icmp::10.0.0.0/8",
        ])
        .await;
    assert_eq!(g["rules"][0]["protocol"], "icmp", "{g}");

    // An instance in the subnet, with security groups.
    let out = cli
        .ok(&[
            "instance",
            "launch",
            "--name",
            "api",
            "--image",
            "local/busybox:latest",
            "--subnet",
            "prod/web",
            "--private-ip",
            "10.10.1.10",
            "--sg",
            "web",
            "--no-wait",
            "--",
            "sleep",
            "3600",
        ])
        .await;
    assert_eq!(out.trim(), "api");
    let inst = c.client().instance_get("api").await.unwrap();
    assert_eq!(inst.private_ip.as_deref(), Some("10.10.1.10"));
    assert_eq!(
        inst.subnet_id.map(|s| s.to_string()),
        subnet["id"].as_str().map(String::from)
    );
    let show = cli.ok(&["instance", "show", "api"]).await;
    assert!(show.contains("10.10.1.10"), "{show}");
    assert!(
        show.lines()
            .any(|l| l.starts_with("Security groups:") && l.ends_with("web")),
        "{show}"
    );
    let list = cli.ok(&["instance", "list"]).await;
    assert!(list.lines().next().unwrap().contains(" IP "), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("api ") && l.contains("10.10.1.10")),
        "{list}"
    );

    let out = cli.ok(&["instance", "sg", "add", "api", "db"]).await;
    assert!(out.contains("db") && out.contains("web"), "{out}");
    let i = cli.json(&["instance", "sg", "rm", "api", "web"]).await;
    assert_eq!(i["security_groups"].as_array().unwrap().len(), 1, "{i}");

    // Refusals while in use reach the user.
    let err = cli.fails(&["vpc", "rm", "prod"]).await;
    assert!(err.contains("HTTP 409"), "{err}");
    let err = cli.fails(&["sg", "rm", "db"]).await;
    assert!(err.contains("HTTP 409"), "{err}");

    cli.ok(&["instance", "rm", "api"]).await;
    assert_eq!(
        cli.ok(&["subnet", "rm", "web", "--vpc", "prod"])
            .await
            .trim(),
        "web"
    );
    assert_eq!(cli.ok(&["sg", "rm", "db"]).await.trim(), "db");
    assert_eq!(cli.json(&["sg", "rm", "web"]).await["name"], "web");
    assert_eq!(cli.ok(&["vpc", "rm", "prod"]).await.trim(), "prod");
    assert!(cli.ok(&["vpc", "list"]).await.contains("No VPCs"));
    let err = cli.fails(&["vpc", "show", "prod"]).await;
    assert!(err.contains("not found"), "{err}");
}
