//! The command tree of `cloud` (clap derive) and the parsers of its argument values.

use crate::cli_network::{
    InstanceSgCmd, SgCmd, SubnetCmd, SubnetRef, VpcCmd, parse_ipv4, parse_subnet_ref,
};
use crate::cli_snapshot::SnapshotCmd;
use crate::cli_volume::VolumeCmd;
use crate::output::OutputFormat;
use clap::{Args, Parser, Subcommand};
use cloud_api::{
    CreateInstanceRequest, GroupPolicy, InstanceKind, PlacementGroup, PlacementStrategy,
    RestartPolicy,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// `cloud`: run containers on The Cloud, a self-hosted cloud platform.
#[derive(Debug, Parser)]
#[command(
    name = "cloud",
    version,
    about = "Command-line client of The Cloud: launch and manage instances, their networks and \
        volumes, inspect nodes",
    long_about = "Command-line client of The Cloud, a self-hosted cloud platform.\n\n\
        It talks to the scheduler's REST API. The endpoint and API key come from, in order: \
        the --api-url/--api-key flags, the CLOUD_API_URL/CLOUD_API_KEY environment variables, \
        the config file (~/.config/thecloud/config.toml, or $CLOUD_CONFIG), and finally the \
        default http://127.0.0.1:8080.",
    after_help = "Examples:\n  \
        cloud config set api-url http://127.0.0.1:8080\n  \
        cloud config set api-key KEY\n  \
        cloud instance launch --name web --image local/busybox:latest -- sleep 3600\n  \
        cloud instance list\n  \
        cloud vpc create prod --cidr 10.10.0.0/16\n  \
        cloud subnet create web --vpc prod --cidr 10.10.1.0/24\n  \
        cloud sg create ssh --rule ingress:tcp:22:0.0.0.0/0\n  \
        cloud instance launch --image local/busybox:latest --subnet prod/web --sg ssh -- sleep 3600\n  \
        cloud volume create data --size 10G\n  \
        cloud -o json node list"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted before or after any subcommand.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// Output format: human tables, or the API objects as JSON (for scripts).
    #[arg(
        short,
        long,
        global = true,
        value_enum,
        default_value_t = OutputFormat::Table,
        help_heading = "Global options"
    )]
    pub output: OutputFormat,
    /// API endpoint, e.g. http://127.0.0.1:8080 (overrides CLOUD_API_URL and the config file).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        help_heading = "Global options"
    )]
    pub api_url: Option<String>,
    /// API key (overrides CLOUD_API_KEY and the config file).
    #[arg(
        long,
        global = true,
        value_name = "KEY",
        help_heading = "Global options"
    )]
    pub api_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Launch, list, inspect, stop, start and remove instances (containers).
    #[command(subcommand, visible_alias = "instances")]
    Instance(InstanceCmd),
    /// List and inspect the compute nodes of the platform.
    #[command(subcommand, visible_alias = "nodes")]
    Node(NodeCmd),
    /// Create, list, inspect and remove VPCs (private networks).
    #[command(
        subcommand,
        visible_alias = "vpcs",
        after_help = "Examples:\n  \
            cloud vpc create prod --cidr 10.10.0.0/16\n  \
            cloud vpc list\n  \
            cloud vpc show prod"
    )]
    Vpc(VpcCmd),
    /// Create, list, inspect and remove the subnets of a VPC.
    #[command(
        subcommand,
        visible_alias = "subnets",
        after_help = "Examples:\n  \
            cloud subnet create web --vpc prod --cidr 10.10.1.0/24 --nat-egress\n  \
            cloud subnet list --vpc prod\n  \
            cloud instance launch --image local/busybox:latest --subnet prod/web -- sleep 3600"
    )]
    Subnet(SubnetCmd),
    /// Manage security groups: the firewall rules of instances.
    #[command(
        subcommand,
        visible_aliases = ["sgs", "security-group", "security-groups"],
        after_help = "Examples:\n  \
            cloud sg create ssh --rule ingress:tcp:22:0.0.0.0/0\n  \
            cloud sg show ssh\n  \
            cloud sg rules add ssh --rule ingress:icmp::0.0.0.0/0\n  \
            cloud instance sg add web ssh\n\n\
            A rule SPEC is DIRECTION:PROTOCOL:PORTS:REMOTE; see `cloud sg create --help`."
    )]
    Sg(SgCmd),
    /// Create, list, inspect and remove volumes (node-local block storage).
    #[command(
        subcommand,
        visible_alias = "volumes",
        after_help = "Examples:\n  \
            cloud volume create data --size 10G\n  \
            cloud volume list\n  \
            cloud volume show data\n  \
            cloud volume rm data"
    )]
    Volume(VolumeCmd),
    /// Take, list, remove and restore snapshots of volumes.
    #[command(
        subcommand,
        visible_alias = "snapshots",
        after_help = "Examples:\n  \
            cloud snapshot create monday --volume data\n  \
            cloud snapshot list --volume data\n  \
            cloud snapshot restore monday --name data-monday\n  \
            cloud snapshot rm monday"
    )]
    Snapshot(SnapshotCmd),
    /// Register, list and remove VM images.
    #[command(
        subcommand,
        visible_alias = "images",
        after_help = "Examples:\n  \
            cloud image create debian-12 --path /var/lib/images/debian-12.qcow2\n  \
            cloud instance launch --kind vm --image debian-12 --cpu 2 --memory 2Gi"
    )]
    Image(crate::commands::image::ImageCmd),
    /// Show or change the CLI's configuration (API endpoint and key).
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Log in with email and password: saves a new (12 h) API key in the config file.
    Login(crate::commands::access::LoginArgs),
    /// Create, list, revoke and rotate your API keys.
    #[command(subcommand, visible_alias = "keys")]
    Key(crate::commands::access::KeyCmd),
    /// Show your project's audit log (project admins).
    Audit(crate::commands::access::AuditArgs),
    /// Show (or follow with -f) your project's events: placements, state changes, deletions.
    Events(crate::commands::access::EventsArgs),
}

#[derive(Debug, Subcommand)]
pub enum InstanceCmd {
    /// Create an instance and, by default, wait until it is running.
    #[command(after_help = LAUNCH_EXAMPLES)]
    Launch(Box<LaunchArgs>),
    /// List the instances of your project.
    #[command(visible_alias = "ls")]
    List,
    /// Show every field of one instance (env values only with -o json).
    #[command(visible_alias = "get")]
    Show(Target),
    /// Print the output (stdout and stderr) of an instance.
    Logs(LogsArgs),
    /// Stop an instance and, by default, wait until it is stopped.
    Stop(ChangeArgs),
    /// Start a stopped instance and, by default, wait until it is running.
    Start(ChangeArgs),
    /// Delete an instance and, by default, wait until it is gone.
    #[command(visible_alias = "delete")]
    Rm(ChangeArgs),
    /// Add or remove the security groups of an instance.
    #[command(
        subcommand,
        after_help = "Examples:\n  cloud instance sg add web ssh\n  cloud instance sg rm web ssh"
    )]
    Sg(InstanceSgCmd),
    /// Open a VM's graphical console on a local port for any VNC viewer (no VNC password:
    /// your API key already authenticated you). Runs until Ctrl-C.
    #[command(
        after_help = "Example:\n  cloud instance console my-vm --listen 127.0.0.1:5901\n  \
        vncviewer 127.0.0.1:5901"
    )]
    Console(ConsoleArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    /// Name or id of the VM.
    #[arg(value_name = "NAME|ID")]
    pub name: String,
    /// Local address the VNC viewer connects to.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5900")]
    pub listen: std::net::SocketAddr,
}

const LAUNCH_EXAMPLES: &str = "Examples:\n  \
    cloud instance launch --name web --image local/busybox:latest --cpu 250m --memory 64Mi \\\n      \
    -- sh -c 'while true; do echo hi; sleep 1; done'\n  \
    cloud instance launch --image local/busybox:latest --env GREETING=hello \\\n      \
    --restart on-failure --no-wait -- env\n  \
    cloud instance launch --name api --image local/busybox:latest --subnet prod/web \\\n      \
    --private-ip 10.10.1.10 --sg ssh --sg web -- sleep 3600\n  \
    cloud instance launch --kind vm --name my-vm --image debian-12 --cpu 2 --memory 2Gi \\\n      \
    --disk 20G --user-data-file cloud-init.yaml";

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub target: Target,
    /// Leave the node's instances running (place nothing new there).
    #[arg(long)]
    pub keep_instances: bool,
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List the compute nodes with their capacity and allocation.
    #[command(visible_alias = "ls")]
    List,
    /// Show every field of one node, including its latest host usage.
    #[command(visible_alias = "get")]
    Show(Target),
    /// Stop placing new instances on a node and move its instances elsewhere
    /// (`always`/`on-failure` instances move, `never` instances are stopped in place).
    ///
    /// With --keep-instances the node only stops taking new instances and its instances keep
    /// running: use it around an agent upgrade or maintenance that does not stop workloads.
    /// The drain holds across agent restarts until `cloud node undrain`.
    Drain(DrainArgs),
    /// Let a drained node take new instances again.
    Undrain(Target),
    /// Join tokens agents enroll with (operators only).
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a join token and print it (shown only once).
    ///
    /// Example: cloud node token create --uses 50 --ttl 2h
    Create {
        /// How many agents may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it stays valid, e.g. 30m, 2h, 1d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
    },
}

/// `30m`, `2h`, `1d`, `3600s` → Duration.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("expected a duration like 30m, 2h or 1d, got {s:?}"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("expected a duration like 30m, 2h or 1d, got {s:?}"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("unknown unit in {s:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Set a configuration key: api-url or api-key.
    Set {
        /// api-url or api-key (api_url/api_key are accepted too).
        key: String,
        /// The new value.
        value: String,
    },
    /// Remove a configuration key from the config file.
    Unset {
        /// api-url or api-key.
        key: String,
    },
    /// Show the effective endpoint and key (redacted), and where each comes from.
    Show,
}

/// One instance or node, by name or id.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Name or id.
    #[arg(value_name = "NAME|ID")]
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Name or id of the instance.
    #[arg(value_name = "NAME|ID")]
    pub name: String,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// Keep printing new output as it comes (Ctrl-C to stop).
    #[arg(short, long)]
    pub follow: bool,
}

/// Waiting behaviour shared by the commands that change an instance.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Return as soon as the server accepted the request.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the instance to settle, e.g. 120s, 2m, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ChangeArgs {
    /// Name or id of the instance.
    #[arg(value_name = "NAME|ID")]
    pub name: String,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LaunchArgs {
    /// Instance name (lowercase letters, digits and '-'); generated by the server when absent.
    #[arg(long)]
    pub name: Option<String>,
    /// Image to run, e.g. local/busybox:latest.
    #[arg(long)]
    pub image: String,
    /// CPU: millicores (250m) or cores (0.5, 2).
    #[arg(long, default_value = "250m", value_parser = parse_cpu)]
    pub cpu: u64,
    /// Memory limit: 64Mi, 512M, 2Gi (a bare number is MiB).
    #[arg(long, default_value = "128Mi", value_parser = parse_memory)]
    pub memory: u64,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    pub env: Vec<(String, String)>,
    /// What the node does when the process exits: never, on-failure or always.
    #[arg(long, value_name = "POLICY", default_value = "always", value_parser = parse_restart)]
    pub restart: RestartPolicy,
    /// What to run the image as: container or vm.
    #[arg(long, default_value = "container", value_parser = parse_kind)]
    pub kind: InstanceKind,
    /// Only place on nodes with this label KEY=VALUE (repeatable; all must match).
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    pub selector: Vec<(String, String)>,
    /// Keep apart from the other members of this placement group (one per node).
    #[arg(long, value_name = "GROUP", conflicts_with = "pack_group")]
    pub spread_group: Option<String>,
    /// Keep together with the other members of this placement group (same node).
    #[arg(long, value_name = "GROUP")]
    pub pack_group: Option<String>,
    /// How to choose among nodes that fit: binpack (fill nodes) or spread (emptiest node).
    #[arg(long, value_name = "STRATEGY", value_parser = parse_strategy)]
    pub strategy: Option<PlacementStrategy>,
    /// Put the instance in this subnet (gives it a private IP): a subnet id, or VPC/SUBNET
    /// (names or ids), e.g. prod/web.
    #[arg(long, value_name = "SUBNET", value_parser = parse_subnet_ref)]
    pub subnet: Option<SubnetRef>,
    /// The instance's address in the subnet (default: the lowest free one).
    #[arg(long, value_name = "IP", requires = "subnet", value_parser = parse_ipv4)]
    pub private_ip: Option<String>,
    /// Security group (name or id) of the instance (repeatable).
    #[arg(long = "sg", value_name = "SG")]
    pub security_groups: Vec<String>,
    /// VMs (--kind vm): size of the root disk: 10G, 20Gi, a bare number of GB (default 10G).
    #[arg(long, value_name = "SIZE", value_parser = crate::cli_volume::parse_size_gb)]
    pub disk: Option<u64>,
    /// VMs (--kind vm): cloud-init user-data from this file (#cloud-config or a script).
    #[arg(long, value_name = "FILE")]
    pub user_data_file: Option<std::path::PathBuf>,
    /// Mount a volume: VOLUME:/path (name or id; repeatable). The instance then runs on the
    /// volume's node.
    #[arg(long = "volume", short = 'v', value_name = "VOLUME:/PATH", value_parser = parse_volume_mount)]
    pub volumes: Vec<cloud_api::VolumeMount>,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Command and arguments, after `--` (the image's default command when absent).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl LaunchArgs {
    /// The request body of `POST /v1/instances`; a `--subnet VPC/SUBNET` is left for the
    /// caller to resolve into `subnet_id`.
    pub fn to_request(&self) -> CreateInstanceRequest {
        let env: BTreeMap<String, String> = self.env.iter().cloned().collect();
        CreateInstanceRequest {
            disk_gb: self.disk,
            // Read by the command from --user-data-file.
            user_data: None,
            name: self.name.clone(),
            kind: self.kind,
            image: self.image.clone(),
            command: self.command.clone(),
            env,
            cpu_millis: self.cpu,
            memory_mb: self.memory,
            restart_policy: self.restart,
            node_selector: self.selector.iter().cloned().collect(),
            placement_group: match (&self.spread_group, &self.pack_group) {
                (Some(name), _) => Some(PlacementGroup {
                    name: name.clone(),
                    policy: GroupPolicy::Spread,
                }),
                (None, Some(name)) => Some(PlacementGroup {
                    name: name.clone(),
                    policy: GroupPolicy::Pack,
                }),
                (None, None) => None,
            },
            placement_strategy: self.strategy,
            subnet_id: self.subnet.as_ref().and_then(SubnetRef::id),
            private_ip: self.private_ip.clone(),
            security_groups: self.security_groups.clone(),
            volumes: self.volumes.clone(),
        }
    }
}

pub fn parse_strategy(s: &str) -> Result<PlacementStrategy, String> {
    PlacementStrategy::parse(s).ok_or_else(|| format!("expected binpack or spread, got {s:?}"))
}

pub fn parse_cpu(s: &str) -> Result<u64, String> {
    let v = cloud_api::quantity::parse_cpu_millis(s)?;
    if v == 0 {
        return Err("CPU must be more than 0".into());
    }
    Ok(v)
}

pub fn parse_memory(s: &str) -> Result<u64, String> {
    let v = cloud_api::quantity::parse_memory_mb(s)?;
    if v == 0 {
        return Err("memory must be at least 1Mi".into());
    }
    Ok(v)
}

/// `KEY=VALUE`: the key is non-empty and has no whitespace; the value may be empty or hold `=`.
pub fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("expected KEY=VALUE, got {s:?}"));
    };
    if key.is_empty() {
        return Err(format!("empty variable name in {s:?}"));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid variable name {key:?}"));
    }
    Ok((key.to_string(), value.to_string()))
}

pub fn parse_restart(s: &str) -> Result<RestartPolicy, String> {
    RestartPolicy::parse(s).ok_or_else(|| {
        format!("invalid restart policy {s:?}: expected never, on-failure or always")
    })
}

pub fn parse_kind(s: &str) -> Result<InstanceKind, String> {
    InstanceKind::parse(s).ok_or_else(|| format!("invalid kind {s:?}: expected container or vm"))
}

/// `500ms`, `30s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let err = || format!("invalid duration {s:?}: expected e.g. 500ms, 30s, 2m");
    let (num, scale_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1_000.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (t, 1_000.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| err())?;
    if !v.is_finite() || v < 0.0 || v * scale_ms > 1e12 {
        return Err(err());
    }
    Ok(Duration::from_millis((v * scale_ms).round() as u64))
}

/// `VOLUME:/path` for `--volume`.
pub fn parse_volume_mount(s: &str) -> Result<cloud_api::VolumeMount, String> {
    match s.split_once(':') {
        Some((volume, path)) if !volume.is_empty() && path.starts_with('/') && path.len() > 1 => {
            Ok(cloud_api::VolumeMount {
                volume: volume.to_owned(),
                mount_path: path.to_owned(),
            })
        }
        _ => Err(format!(
            "{s:?}: expected VOLUME:/path, e.g. data:/var/lib/data"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("cloud").chain(args.iter().copied()))
    }

    fn launch(args: &[&str]) -> LaunchArgs {
        let mut full = vec!["instance", "launch"];
        full.extend_from_slice(args);
        match parse(&full).unwrap().command {
            Command::Instance(InstanceCmd::Launch(a)) => *a,
            other => panic!("not a launch: {other:?}"),
        }
    }

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn launch_defaults() {
        let a = launch(&["--image", "local/busybox:latest"]);
        let req = a.to_request();
        assert_eq!(req.name, None);
        assert_eq!(req.image, "local/busybox:latest");
        assert_eq!(req.cpu_millis, 250);
        assert_eq!(req.memory_mb, 128);
        assert_eq!(req.restart_policy, RestartPolicy::Always);
        assert_eq!(req.kind, InstanceKind::Container);
        assert!(req.command.is_empty());
        assert!(req.env.is_empty());
        assert!(!a.wait.no_wait);
        assert_eq!(a.wait.timeout, Duration::from_secs(120));
    }

    #[test]
    fn launch_takes_the_command_after_double_dash() {
        let a = launch(&[
            "--name",
            "web",
            "--image",
            "local/busybox:latest",
            "--cpu",
            "0.5",
            "--memory",
            "1Gi",
            "--",
            "sh",
            "-c",
            "while true; do echo hi; sleep 1; done",
        ]);
        let req = a.to_request();
        assert_eq!(req.name.as_deref(), Some("web"));
        assert_eq!(req.cpu_millis, 500);
        assert_eq!(req.memory_mb, 1024);
        assert_eq!(
            req.command,
            ["sh", "-c", "while true; do echo hi; sleep 1; done"]
        );
    }

    #[test]
    fn launch_flags_after_double_dash_belong_to_the_command() {
        let a = launch(&["--image", "x", "--", "ls", "--no-wait", "-o", "json"]);
        assert_eq!(a.command, ["ls", "--no-wait", "-o", "json"]);
        assert!(!a.wait.no_wait);
    }

    #[test]
    fn launch_command_requires_double_dash() {
        assert!(parse(&["instance", "launch", "--image", "x", "sh"]).is_err());
    }

    #[test]
    fn launch_env_pairs() {
        let a = launch(&[
            "--image", "x", "--env", "A=1", "-e", "B=x=y", "--env", "EMPTY=",
        ]);
        let req = a.to_request();
        assert_eq!(req.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(req.env.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(req.env.get("EMPTY").map(String::as_str), Some(""));
        for bad in ["NOEQUALS", "=v", "BAD KEY=v"] {
            let err = parse(&["instance", "launch", "--image", "x", "--env", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
    }

    #[test]
    fn launch_rejects_bad_quantities_and_policies() {
        for args in [
            ["--cpu", "lots"],
            ["--cpu", "0"],
            ["--memory", "-3Mi"],
            ["--memory", "big"],
            ["--restart", "sometimes"],
            ["--timeout", "soon"],
        ] {
            let mut full = vec!["instance", "launch", "--image", "x"];
            full.extend_from_slice(&args);
            let err = parse(&full).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
        assert!(
            parse(&["instance", "launch"]).is_err(),
            "--image is required"
        );
    }

    #[test]
    fn launch_restart_timeout_and_no_wait() {
        let a = launch(&[
            "--image",
            "x",
            "--restart",
            "on-failure",
            "--timeout",
            "2m",
            "--no-wait",
        ]);
        assert_eq!(a.restart, RestartPolicy::OnFailure);
        assert_eq!(a.wait.timeout, Duration::from_secs(120));
        assert!(a.wait.no_wait);
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&["instance", "list", "-o", "json", "--api-url", "http://x:1"]).unwrap();
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.api_url.as_deref(), Some("http://x:1"));
        let cli = parse(&["--output", "json", "node", "list"]).unwrap();
        assert_eq!(cli.global.output, OutputFormat::Json);
        let cli = parse(&["node", "show", "n1"]).unwrap();
        assert_eq!(cli.global.output, OutputFormat::Table);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("x").is_err());
    }
}
