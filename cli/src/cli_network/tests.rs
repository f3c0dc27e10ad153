//! Argument parsing and `--help` of the networking commands.

use super::*;
use crate::cli::{Cli, Command, InstanceCmd, LaunchArgs};
use clap::{CommandFactory, Parser};
use cloud_api::{Direction, Protocol};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("cloud").chain(args.iter().copied()))
}

fn command(args: &[&str]) -> Command {
    parse(args)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .command
}

fn usage_error(args: &[&str]) -> String {
    let err = parse(args).expect_err(&format!("{args:?} should not parse"));
    assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
    err.to_string()
}

#[test]
fn vpc_commands() {
    match command(&["vpc", "create", "prod", "--cidr", "10.10.0.0/16"]) {
        Command::Vpc(VpcCmd::Create { name, cidr }) => {
            assert_eq!((name.as_str(), cidr.as_str()), ("prod", "10.10.0.0/16"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        command(&["vpc", "list"]),
        Command::Vpc(VpcCmd::List)
    ));
    assert!(matches!(
        command(&["vpcs", "ls"]),
        Command::Vpc(VpcCmd::List)
    ));
    assert!(
        matches!(command(&["vpc", "show", "prod"]), Command::Vpc(VpcCmd::Show(t)) if t.name == "prod")
    );
    assert!(
        matches!(command(&["vpc", "rm", "prod"]), Command::Vpc(VpcCmd::Rm(t)) if t.name == "prod")
    );
    assert!(usage_error(&["vpc", "create", "prod"]).contains("--cidr"));
    assert!(
        usage_error(&["vpc", "create", "prod", "--cidr", "10.10.0.0"]).contains("invalid CIDR")
    );
}

#[test]
fn subnet_commands() {
    match command(&[
        "subnet",
        "create",
        "web",
        "--vpc",
        "prod",
        "--cidr",
        "10.10.1.0/24",
        "--nat-egress",
    ]) {
        Command::Subnet(SubnetCmd::Create {
            name,
            vpc,
            cidr,
            nat_egress,
        }) => {
            assert_eq!((name.as_str(), vpc.vpc.as_str()), ("web", "prod"));
            assert_eq!(cidr, "10.10.1.0/24");
            assert!(nat_egress);
        }
        other => panic!("{other:?}"),
    }
    match command(&[
        "subnet",
        "create",
        "web",
        "--vpc",
        "prod",
        "--cidr",
        "10.10.1.0/24",
    ]) {
        Command::Subnet(SubnetCmd::Create { nat_egress, .. }) => assert!(!nat_egress),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        command(&["subnet", "list", "--vpc", "prod"]),
        Command::Subnet(SubnetCmd::List { vpc }) if vpc.vpc == "prod"
    ));
    assert!(matches!(
        command(&["subnet", "show", "web", "--vpc", "prod"]),
        Command::Subnet(SubnetCmd::Show(t)) if t.subnet == "web" && t.vpc.vpc == "prod"
    ));
    assert!(matches!(
        command(&["subnets", "rm", "--vpc", "prod", "web"]),
        Command::Subnet(SubnetCmd::Rm(t)) if t.subnet == "web" && t.vpc.vpc == "prod"
    ));
    assert!(usage_error(&["subnet", "list"]).contains("--vpc"));
    assert!(usage_error(&["subnet", "rm", "web"]).contains("--vpc"));
}

#[test]
fn sg_create_takes_repeated_rules() {
    match command(&[
        "sg",
        "create",
        "web",
        "--description",
        "front",
        "--rule",
        "ingress:tcp:80:0.0.0.0/0",
        "--rule",
        "egress:all::0.0.0.0/0",
    ]) {
        Command::Sg(SgCmd::Create {
            name,
            description,
            rules,
        }) => {
            assert_eq!(
                (name.as_str(), description.as_deref()),
                ("web", Some("front"))
            );
            assert_eq!(rules.rules.len(), 2);
            assert_eq!(rules.rules[0].port_min, Some(80));
            assert_eq!(rules.rules[1].direction, Direction::Egress);
            assert_eq!(rules.rules[1].protocol, Protocol::All);
        }
        other => panic!("{other:?}"),
    }
    match command(&["security-group", "create", "empty"]) {
        Command::Sg(SgCmd::Create {
            description, rules, ..
        }) => {
            assert!(description.is_none() && rules.rules.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let err = usage_error(&[
        "sg",
        "create",
        "web",
        "--rule",
        "ingress:tcp:99999:0.0.0.0/0",
    ]);
    assert!(err.contains("invalid port \"99999\""), "{err}");
    assert!(matches!(command(&["sg", "ls"]), Command::Sg(SgCmd::List)));
    assert!(matches!(
        command(&["sg", "show", "web"]),
        Command::Sg(SgCmd::Show(_))
    ));
    assert!(matches!(
        command(&["sg", "rm", "web"]),
        Command::Sg(SgCmd::Rm(_))
    ));
}

#[test]
fn sg_rules_commands() {
    match command(&[
        "sg",
        "rules",
        "set",
        "web",
        "--rule",
        "ingress:icmp::10.0.0.0/8",
    ]) {
        Command::Sg(SgCmd::Rules(SgRulesCmd::Set { group, rules, none })) => {
            assert_eq!(group, "web");
            assert_eq!(rules.rules.len(), 1);
            assert!(!none);
        }
        other => panic!("{other:?}"),
    }
    match command(&["sg", "rules", "set", "web", "--none"]) {
        Command::Sg(SgCmd::Rules(SgRulesCmd::Set { rules, none, .. })) => {
            assert!(none && rules.rules.is_empty());
        }
        other => panic!("{other:?}"),
    }
    usage_error(&["sg", "rules", "set", "web"]);
    usage_error(&[
        "sg",
        "rules",
        "set",
        "web",
        "--none",
        "--rule",
        "egress:all::0.0.0.0/0",
    ]);
    match command(&[
        "sg",
        "rules",
        "add",
        "web",
        "--rule",
        "ingress:tcp:8000-8080:sg=lb",
    ]) {
        Command::Sg(SgCmd::Rules(SgRulesCmd::Add(c))) => {
            assert_eq!(c.group, "web");
            assert_eq!(c.rules[0].source_group.as_deref(), Some("lb"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        command(&["sg", "rules", "rm", "web", "--rule", "ingress:tcp:22:0.0.0.0/0"]),
        Command::Sg(SgCmd::Rules(SgRulesCmd::Rm(c))) if c.rules.len() == 1
    ));
    assert!(usage_error(&["sg", "rules", "add", "web"]).contains("--rule"));
    assert!(usage_error(&["sg", "rules", "rm", "web"]).contains("--rule"));
}

#[test]
fn instance_sg_commands() {
    match command(&["instance", "sg", "add", "api", "web"]) {
        Command::Instance(InstanceCmd::Sg(InstanceSgCmd::Add(a))) => {
            assert_eq!((a.instance.as_str(), a.group.as_str()), ("api", "web"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        command(&["instance", "sg", "rm", "api", "web"]),
        Command::Instance(InstanceCmd::Sg(InstanceSgCmd::Rm(_)))
    ));
    usage_error(&["instance", "sg", "add", "api"]);
}

fn launch(args: &[&str]) -> LaunchArgs {
    let mut full = vec!["instance", "launch", "--image", "x"];
    full.extend_from_slice(args);
    match command(&full) {
        Command::Instance(InstanceCmd::Launch(a)) => *a,
        other => panic!("not a launch: {other:?}"),
    }
}

#[test]
fn launch_network_flags() {
    let a = launch(&[]);
    let req = a.to_request();
    assert_eq!((req.subnet_id, req.private_ip), (None, None));
    assert!(req.security_groups.is_empty());

    let id = SubnetId::new();
    let a = launch(&[
        "--subnet",
        &id.to_string(),
        "--private-ip",
        "10.10.1.10",
        "--sg",
        "ssh",
        "--sg",
        "web",
    ]);
    let req = a.to_request();
    assert_eq!(req.subnet_id, Some(id));
    assert_eq!(req.private_ip.as_deref(), Some("10.10.1.10"));
    assert_eq!(req.security_groups, ["ssh", "web"]);

    let a = launch(&["--subnet", "prod/web"]);
    assert_eq!(
        a.subnet,
        Some(SubnetRef::Path {
            vpc: "prod".into(),
            subnet: "web".into()
        })
    );
    assert_eq!(a.to_request().subnet_id, None, "resolved by the command");

    for bad in ["web", "prod/", "/web", "a/b/c"] {
        let err = usage_error(&["instance", "launch", "--image", "x", "--subnet", bad]);
        assert!(err.contains("VPC/SUBNET"), "{bad}: {err}");
    }
    let err = usage_error(&[
        "instance",
        "launch",
        "--image",
        "x",
        "--subnet",
        "prod/web",
        "--private-ip",
        "10.1",
    ]);
    assert!(err.contains("IPv4 address"), "{err}");
    let err = usage_error(&[
        "instance",
        "launch",
        "--image",
        "x",
        "--private-ip",
        "10.10.1.10",
    ]);
    assert!(
        err.contains("--subnet"),
        "--private-ip needs a subnet: {err}"
    );
}

#[test]
fn every_network_command_has_help_with_an_example() {
    let mut cli = Cli::command();
    cli.build();
    let mut checked = 0;
    for top in ["vpc", "subnet", "sg", "instance"] {
        let Some(group) = cli.find_subcommand(top) else {
            panic!("{top} missing");
        };
        let mut leaves: Vec<(String, clap::Command)> = Vec::new();
        for sub in group.get_subcommands().filter(|c| c.get_name() != "help") {
            if sub.has_subcommands() {
                for leaf in sub.get_subcommands().filter(|c| c.get_name() != "help") {
                    leaves.push((
                        format!("{top} {} {}", sub.get_name(), leaf.get_name()),
                        leaf.clone(),
                    ));
                }
            } else if top != "instance" {
                leaves.push((format!("{top} {}", sub.get_name()), sub.clone()));
            }
        }
        for (path, mut leaf) in leaves {
            if path.starts_with("instance") && !path.starts_with("instance sg") {
                continue;
            }
            assert!(leaf.get_about().is_some(), "{path}: no about");
            let help = leaf.render_long_help().to_string();
            assert!(help.contains("Example"), "{path}: no example:\n{help}");
            assert!(
                help.contains(&format!("cloud {path}")),
                "{path}: example of another command:\n{help}"
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        4 + 4 + 4 + 3 + 2,
        "vpc, subnet, sg, sg rules, instance sg"
    );
    let help = cli
        .find_subcommand_mut("sg")
        .and_then(|sg| sg.find_subcommand_mut("create"))
        .map(|c| c.render_long_help().to_string())
        .unwrap_or_default();
    assert!(help.contains("DIRECTION:PROTOCOL:PORTS:REMOTE"), "{help}");
    assert!(help.contains("sg=NAME_OR_ID"), "{help}");
}
