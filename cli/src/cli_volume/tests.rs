//! Argument parsing, `--size` and `--help` of the volume commands.

use super::*;
use crate::cli::{Cli, Command};
use clap::{CommandFactory, Parser};

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

fn create(args: &[&str]) -> VolumeCreateArgs {
    let mut full = vec!["volume", "create"];
    full.extend_from_slice(args);
    match command(&full) {
        Command::Volume(VolumeCmd::Create(a)) => *a,
        other => panic!("not a create: {other:?}"),
    }
}

#[test]
fn create_defaults() {
    let a = create(&["data", "--size", "10G"]);
    assert!(!a.wait.no_wait);
    assert_eq!(a.wait.timeout, Duration::from_secs(120));
    assert_eq!(
        a.to_request(),
        CreateVolumeRequest {
            name: "data".into(),
            size_gb: 10,
            node: None,
            node_selector: Default::default(),
        }
    );
}

#[test]
fn create_with_every_flag() {
    let a = create(&[
        "db",
        "--size",
        "100Gi",
        "--node",
        "node-2",
        "--selector",
        "disk=ssd",
        "--selector",
        "zone=a",
        "--no-wait",
        "--timeout",
        "5m",
    ]);
    assert!(a.wait.no_wait);
    assert_eq!(a.wait.timeout, Duration::from_secs(300));
    let req = a.to_request();
    assert_eq!((req.name.as_str(), req.size_gb), ("db", 100));
    assert_eq!(req.node.as_deref(), Some("node-2"));
    assert_eq!(
        req.node_selector.into_iter().collect::<Vec<_>>(),
        [
            ("disk".to_string(), "ssd".to_string()),
            ("zone".to_string(), "a".to_string())
        ]
    );
    // The request is what the API takes.
    let json = serde_json::to_value(create(&["x", "--size", "2"]).to_request()).unwrap();
    assert_eq!(json, serde_json::json!({"name": "x", "size_gb": 2}));
}

#[test]
fn create_usage_errors() {
    assert!(usage_error(&["volume", "create", "data"]).contains("--size"));
    usage_error(&["volume", "create", "--size", "10G"]);
    let err = usage_error(&["volume", "create", "data", "--size", "0"]);
    assert!(err.contains("at least 1G"), "{err}");
    let err = usage_error(&["volume", "create", "data", "--size", "1.5G"]);
    assert!(err.contains("whole number"), "{err}");
    let err = usage_error(&["volume", "create", "data", "--size", "16385G"]);
    assert!(err.contains("at most 16384G"), "{err}");
    let err = usage_error(&[
        "volume",
        "create",
        "data",
        "--size",
        "10G",
        "--selector",
        "ssd",
    ]);
    assert!(err.contains("KEY=VALUE"), "{err}");
    let err = usage_error(&[
        "volume",
        "create",
        "data",
        "--size",
        "10G",
        "--timeout",
        "soon",
    ]);
    assert!(err.contains("invalid duration"), "{err}");
}

#[test]
fn sizes() {
    for (s, gb) in [
        ("10G", 10),
        ("10Gi", 10),
        ("10", 10),
        ("10GB", 10),
        ("10GiB", 10),
        ("10g", 10),
        (" 7 ", 7),
        ("1", 1),
        ("1T", 1024),
        ("16Ti", 16384),
        ("16384", 16384),
        ("16384G", 16384),
    ] {
        assert_eq!(parse_size_gb(s), Ok(gb), "{s}");
    }
    for (s, why) in [
        ("0", "at least 1G"),
        ("0G", "at least 1G"),
        ("0T", "at least 1G"),
        ("1.5G", "whole number"),
        ("2.0", "whole number"),
        ("0.5", "whole number"),
        ("16385", "at most 16384G (16T)"),
        ("17T", "at most 16384G"),
        ("99999999999999999999999G", "at most 16384G"),
        ("18014398509481984T", "at most 16384G"),
        ("512M", "whole GB"),
        ("100Mi", "whole GB"),
        ("", "expected e.g. 10G"),
        ("G", "expected e.g. 10G"),
        ("-5G", "expected e.g. 10G"),
        ("10X", "expected e.g. 10G"),
        ("10 G", "expected e.g. 10G"),
        ("ten", "expected e.g. 10G"),
    ] {
        let err = parse_size_gb(s).expect_err(s);
        assert!(err.contains(why), "{s:?}: {err}");
        assert!(err.contains(&format!("{s:?}")), "names the value: {err}");
    }
}

#[test]
fn list_show_rm() {
    assert!(matches!(
        command(&["volume", "list"]),
        Command::Volume(VolumeCmd::List)
    ));
    assert!(matches!(
        command(&["volumes", "ls"]),
        Command::Volume(VolumeCmd::List)
    ));
    assert!(matches!(
        command(&["volume", "show", "data"]),
        Command::Volume(VolumeCmd::Show(t)) if t.volume == "data"
    ));
    assert!(matches!(
        command(&["volume", "get", "data"]),
        Command::Volume(VolumeCmd::Show(_))
    ));
    match command(&["volume", "rm", "data"]) {
        Command::Volume(VolumeCmd::Rm(a)) => {
            assert_eq!(a.target.volume, "data");
            assert!(!a.wait.no_wait);
            assert_eq!(a.wait.timeout, Duration::from_secs(120));
        }
        other => panic!("{other:?}"),
    }
    match command(&["volume", "delete", "data", "--no-wait", "--timeout", "30s"]) {
        Command::Volume(VolumeCmd::Rm(a)) => {
            assert!(a.wait.no_wait);
            assert_eq!(a.wait.timeout, Duration::from_secs(30));
        }
        other => panic!("{other:?}"),
    }
    usage_error(&["volume", "show"]);
    usage_error(&["volume", "rm"]);
    usage_error(&["volume", "list", "data"]);
}

#[test]
fn output_flag_works_on_every_volume_command() {
    for args in [
        &["volume", "create", "data", "--size", "1G", "-o", "json"][..],
        &["-o", "json", "volume", "list"],
        &["volume", "show", "data", "--output", "json"],
        &["volume", "rm", "-o", "json", "data"],
    ] {
        let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(
            cli.global.output,
            crate::output::OutputFormat::Json,
            "{args:?}"
        );
    }
}

#[test]
fn every_volume_command_has_help_with_an_example() {
    let mut cli = Cli::command();
    cli.build();
    let Some(group) = cli.find_subcommand("volume") else {
        panic!("volume missing");
    };
    let mut checked = 0;
    for sub in group.get_subcommands().filter(|c| c.get_name() != "help") {
        let path = format!("volume {}", sub.get_name());
        assert!(sub.get_about().is_some(), "{path}: no about");
        let help = sub.clone().render_long_help().to_string();
        assert!(help.contains("Example"), "{path}: no example:\n{help}");
        assert!(
            help.contains(&format!("cloud {path}")),
            "{path}: example of another command:\n{help}"
        );
        assert!(help.contains("--output"), "{path}: no -o:\n{help}");
        checked += 1;
    }
    assert_eq!(checked, 7, "create, list, show, rm, resize, attach, detach");
    let help = group
        .find_subcommand("create")
        .map(|c| c.clone().render_long_help().to_string())
        .unwrap_or_default();
    for flag in ["--size", "--node", "--selector", "--no-wait", "--timeout"] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}

#[test]
fn resize_parses_sizes_and_needs_one() {
    match command(&["volume", "resize", "data", "--size", "20Gi"]) {
        Command::Volume(VolumeCmd::Resize(a)) => {
            assert_eq!((a.volume.as_str(), a.size), ("data", 20));
        }
        other => panic!("not a resize: {other:?}"),
    }
    usage_error(&["volume", "resize", "data"]);
    assert!(usage_error(&["volume", "resize", "data", "--size", "0"]).contains("at least 1G"));
}

#[test]
fn launch_takes_volume_mounts() {
    let m = crate::cli::parse_volume_mount("data:/var/lib/data").unwrap();
    assert_eq!(
        (m.volume.as_str(), m.mount_path.as_str()),
        ("data", "/var/lib/data")
    );
    for bad in ["data", "data:", "data:rel", ":/x", "data:/"] {
        assert!(crate::cli::parse_volume_mount(bad).is_err(), "{bad}");
    }
}

#[test]
fn attach_and_detach_parse() {
    match command(&[
        "volume",
        "attach",
        "data",
        "--instance",
        "db",
        "--path",
        "/data",
    ]) {
        Command::Volume(VolumeCmd::Attach(a)) => {
            assert_eq!(
                (a.volume.as_str(), a.instance.as_str(), a.path.as_str()),
                ("data", "db", "/data")
            );
        }
        other => panic!("not an attach: {other:?}"),
    }
    usage_error(&["volume", "attach", "data", "--path", "/data"]);
    assert!(matches!(
        command(&["volume", "detach", "data"]),
        Command::Volume(VolumeCmd::Detach(_))
    ));
}
