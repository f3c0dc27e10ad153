//! `cloud-agent`: the node agent binary. Parses flags, sets up logging, starts the agent
//! library against the local dockerd, and stops gracefully on SIGINT/SIGTERM. `cloud-agent sim`
//! runs many simulated nodes in this one process instead (`cloud_agent::sim`).

use clap::{Parser, Subcommand, ValueEnum};
use cloud_agent::{AgentConfig, CapacityOverride, DockerRuntime};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

// mimalloc: thousands of simulated nodes (or one busy agent) allocate many small buffers on
// several threads; it is markedly cheaper than glibc malloc there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// This binary's version, with its build stamp (`THECLOUD_BUILD_ID`).
fn version() -> &'static str {
    cloud_proto::build_version!()
}

/// The Cloud's node agent: runs workloads on this host for the scheduler.
#[derive(Debug, Parser)]
#[command(name = "cloud-agent", version = version(), about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll with the scheduler if needed, then run until SIGINT/SIGTERM.
    ///
    /// On first start the agent generates a key, sends a CSR with the one-time join token and
    /// saves the issued identity in --data-dir; later starts reuse it. Stopping the agent never
    /// stops workloads: containers keep running and are re-adopted on the next start.
    Run(RunArgs),
    /// Run N simulated nodes in this process, for scale tests and failure experiments
    ///
    /// Each simulated node is the real agent (enrollment, mutual-TLS session, reconciler) over
    /// an in-memory container engine and fixed host numbers, named <PREFIX>-<I>, with its
    /// identity in DIR/<PREFIX>-<I>. All nodes share ONE join token, so it must be a
    /// multi-use token: `cloud node token create --uses N`. Nodes that already have an
    /// identity in DIR reuse it, so the same command can be run again after a stop.
    ///
    /// Progress goes to stdout while the nodes enroll, then a one-line summary. Then commands
    /// are read from stdin, one per line (I = node index, A-B = index range, or node name):
    ///   kill I        abort the node's agent like kill -9 (its containers keep running)
    ///   restart I     start it again on the same data dir (containers are re-adopted)
    ///   partition I   cut the node's link to the scheduler (the reconciler keeps enforcing
    ///                 the last desired state; no reconnection until healed)
    ///   heal I        restore the link; the node reconnects
    ///   status        connected/total, alive, partitioned, running fake containers, RSS, CPU
    ///   quit          stop every node and exit
    /// SIGINT/SIGTERM stop cleanly too; the end of stdin does not (run it in the background
    /// with </dev/null). Logs go to stderr, at warn level unless RUST_LOG says otherwise.
    #[command(verbatim_doc_comment)]
    Sim(SimCmd),
}

#[derive(Debug, clap::Args)]
struct SimCmd {
    #[command(flatten)]
    sim: cloud_agent::sim::cli::SimArgs,
    /// Log output format (stderr). Filtering follows RUST_LOG (default: warn).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Scheduler gRPC address HOST:PORT. HOST must match the scheduler certificate (DNS name
    /// or IP address).
    #[arg(long, value_name = "HOST:PORT", env = "THECLOUD_SCHEDULER")]
    scheduler: String,
    /// PEM file of the CA that signed the scheduler's certificate.
    #[arg(long, value_name = "CA", env = "THECLOUD_CA_FILE")]
    ca_file: PathBuf,
    /// File holding the one-time join token (used only for the first enrollment).
    #[arg(long, value_name = "FILE", env = "THECLOUD_JOIN_TOKEN_FILE")]
    join_token_file: PathBuf,
    /// Directory for the node identity and agent state (created if missing).
    #[arg(long, value_name = "DIR", env = "THECLOUD_DATA_DIR")]
    data_dir: PathBuf,
    /// Node name to request at enrollment (default: the hostname).
    #[arg(long)]
    name: Option<String>,
    /// Node label KEY=VALUE advertised to the scheduler (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Advertised CPU capacity in millicores (default: online CPUs × 1000).
    #[arg(long, value_name = "N")]
    cpu_millis: Option<u64>,
    /// Advertised memory capacity in MiB (default: MemTotal).
    #[arg(long, value_name = "N")]
    memory_mb: Option<u64>,
    /// Advertised disk capacity in GiB (default: size of the data dir's filesystem).
    #[arg(long, value_name = "N")]
    disk_gb: Option<u64>,
    /// Docker endpoint (default: DOCKER_HOST or unix:///var/run/docker.sock).
    #[arg(long, value_name = "URL", env = "DOCKER_HOST")]
    docker_host: Option<String>,
    /// Address other nodes reach this node's VXLAN endpoint (VPC overlay) at: an IPv4
    /// address, `auto` (the source address towards the scheduler, or of the default route
    /// when the scheduler is on this host), or `none` to run no VPC instances here.
    #[arg(
        long,
        value_name = "IP|auto|none",
        env = "THECLOUD_UNDERLAY_IP",
        default_value = "auto"
    )]
    underlay_ip: cloud_agent::network::underlay::UnderlayChoice,
    /// MTU of the underlay network (default: the MTU of the interface holding the underlay
    /// address). Instances get this minus 50 bytes of VXLAN overhead.
    #[arg(long, value_name = "BYTES", env = "THECLOUD_UNDERLAY_MTU")]
    underlay_mtu: Option<u32>,
    /// Prefix of the network namespaces and interfaces the agent creates (1-4 lowercase
    /// letters or digits).
    #[arg(long, value_name = "PREFIX", default_value = "tc", value_parser = parse_prefix)]
    vpc_prefix: String,
    /// Where node-local volumes live: `file` (sparse image files under --volume-dir),
    /// `lvm` (logical volumes in --lvm-vg) or `none`.
    #[arg(long, value_enum, default_value_t = VolumeBackendKind::File, env = "THECLOUD_VOLUME_BACKEND")]
    volume_backend: VolumeBackendKind,
    /// Directory of the `file` backend's images and of every backend's mount points
    /// (default: the agent's data dir).
    #[arg(long, value_name = "DIR", env = "THECLOUD_VOLUME_DIR")]
    volume_dir: Option<PathBuf>,
    /// Volume group of the `lvm` backend (created by the operator).
    #[arg(long, value_name = "VG", env = "THECLOUD_LVM_VG")]
    lvm_vg: Option<String>,
    /// Metadata-only LVM (`activation=0`), for kernels without device-mapper: volumes can be
    /// created and listed but not mounted.
    #[arg(long)]
    lvm_no_activation: bool,
    /// libvirt connection for VMs: a URI, `auto` (qemu:///system when libvirtd's socket
    /// exists) or `none` (no VMs on this node; it does not advertise the libvirt driver).
    #[arg(
        long,
        value_name = "URI|auto|none",
        env = "THECLOUD_LIBVIRT_URI",
        default_value = "auto"
    )]
    libvirt_uri: String,
    /// How QEMU runs guests: `kvm` (hardware virtualisation), `qemu` (TCG emulation), or
    /// `auto` (kvm where the CPU has vmx/svm and libvirt offers kvm domains).
    #[arg(long, value_name = "auto|kvm|qemu", default_value = "auto", value_parser = ["auto", "kvm", "qemu"])]
    virt_type: String,
    /// Directory of VM root disks, cloud-init seeds and serial logs (readable by libvirt's
    /// QEMU user).
    #[arg(
        long,
        value_name = "DIR",
        env = "THECLOUD_VM_DIR",
        default_value = "/var/lib/libvirt/images/thecloud"
    )]
    vm_dir: PathBuf,
    /// How long a guest gets to power off (ACPI) before its domain is destroyed, e.g. 60s.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_secs)]
    vm_shutdown_timeout: std::time::Duration,
    /// Log output format. Filtering follows RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `--virt-type`: None for auto.
fn virt_type(s: &str) -> Option<cloud_agent::vm::VirtType> {
    match s {
        "kvm" => Some(cloud_agent::vm::VirtType::Kvm),
        "qemu" => Some(cloud_agent::vm::VirtType::Qemu),
        _ => None,
    }
}

/// `60s`, `2m` or a bare number of seconds.
fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix('m') {
        (n, 60)
    } else {
        (t.strip_suffix('s').unwrap_or(t), 1)
    };
    num.parse::<u64>()
        .map(|n| std::time::Duration::from_secs(n * scale))
        .map_err(|_| format!("{s:?}: expected e.g. 60s or 2m"))
}

/// The hypervisor the flags ask for (None: no VMs here).
async fn vms(args: &RunArgs) -> Result<Option<cloud_agent::NodeVms>, String> {
    let uri = match args.libvirt_uri.as_str() {
        "none" => return Ok(None),
        "auto" => {
            if !std::path::Path::new("/var/run/libvirt/libvirt-sock").exists() {
                tracing::info!("VMs disabled: libvirtd is not running (--libvirt-uri auto)");
                return Ok(None);
            }
            "qemu:///system"
        }
        uri => uri,
    };
    let missing = cloud_agent::vm::files::missing_tools();
    if !missing.is_empty() && args.libvirt_uri == "auto" {
        tracing::warn!(missing = ?missing, "VMs disabled: libvirtd runs but the tools VMs need are missing (apt-get install qemu-utils genisoimage)");
        return Ok(None);
    }
    if !missing.is_empty() {
        return Err(format!(
            "--libvirt-uri {uri}: VMs need {} (apt-get install qemu-utils genisoimage), or run without VMs with --libvirt-uri none",
            missing.join(" and ")
        ));
    }
    let hv = cloud_agent::vm::LibvirtHypervisor::connect(uri, virt_type(&args.virt_type))
        .await
        .map_err(|e| format!("--libvirt-uri {uri}: {e}"))?;
    std::fs::create_dir_all(&args.vm_dir)
        .map_err(|e| format!("--vm-dir {}: {e}", args.vm_dir.display()))?;
    Ok(Some(cloud_agent::NodeVms {
        hypervisor: Arc::new(hv),
        files: cloud_agent::vm::VmFiles::new(args.vm_dir.clone()),
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum VolumeBackendKind {
    File,
    Lvm,
    None,
}

/// The volume backend the flags ask for.
fn volume_backend(
    args: &RunArgs,
) -> Result<Option<Arc<dyn cloud_agent::storage::VolumeBackend>>, String> {
    use cloud_agent::storage::{FileBackend, FileBackendConfig, LvmBackend, LvmBackendConfig};
    let dir = args
        .volume_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.clone());
    match args.volume_backend {
        VolumeBackendKind::None => Ok(None),
        VolumeBackendKind::File => FileBackend::new(FileBackendConfig::under(&dir))
            .map(|b| Some(Arc::new(b) as Arc<dyn cloud_agent::storage::VolumeBackend>))
            .map_err(|e| format!("file volume backend in {}: {e}", dir.display())),
        VolumeBackendKind::Lvm => {
            let vg = args
                .lvm_vg
                .clone()
                .ok_or("--volume-backend lvm needs --lvm-vg VG")?;
            let mut cfg = LvmBackendConfig::new(vg.clone(), dir.join("volumes"));
            cfg.activation = !args.lvm_no_activation;
            LvmBackend::new(cfg)
                .map(|b| Some(Arc::new(b) as Arc<dyn cloud_agent::storage::VolumeBackend>))
                .map_err(|e| format!("lvm volume backend on VG {vg}: {e}"))
        }
    }
}

fn parse_prefix(s: &str) -> Result<String, String> {
    let ok = (1..=4).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?}: use 1-4 lowercase letters or digits"))
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The error and its causes, one `: `-joined line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    cloud_agent::tls::error_chain(e)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the agent");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    if !args.ca_file.is_file() {
        return Err(format!(
            "CA file {} does not exist or is not a file",
            args.ca_file.display()
        ));
    }
    let volumes = volume_backend(&args)?;
    let node_vms = vms(&args).await?;
    if node_vms.is_some() && args.volume_backend == VolumeBackendKind::File {
        let images = args
            .volume_dir
            .clone()
            .unwrap_or_else(|| args.data_dir.clone())
            .join("volume-images");
        if let Some(blocked) = images.ancestors().skip(1).find(|a| {
            std::fs::metadata(a).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.permissions().mode() & 0o001 == 0
            })
        }) {
            tracing::warn!(
                dir = %blocked.display(),
                "VM volumes will fail: QEMU (libvirt's unprivileged user) cannot traverse this directory to reach {}; put --volume-dir somewhere it can (e.g. under /var/lib/libvirt/images)",
                images.display()
            );
        }
    }
    if let Some(v) = &volumes {
        tracing::info!(backend = v.kind(), "volume backend ready");
    }
    let mut config = AgentConfig::new(
        args.scheduler,
        args.ca_file,
        args.join_token_file,
        args.data_dir,
    );
    config.vms = node_vms;
    config.version = version().to_owned();
    config.reconciler.vm_shutdown_timeout = args.vm_shutdown_timeout;
    config.name = args.name;
    config.volumes = volumes;
    config.labels = args.labels.into_iter().collect::<BTreeMap<_, _>>();
    config.capacity_override = CapacityOverride {
        cpu_millis: args.cpu_millis,
        memory_mb: args.memory_mb,
        disk_gb: args.disk_gb,
    };
    config.network = match cloud_agent::network::underlay::resolve(
        args.underlay_ip,
        &config.scheduler,
    ) {
        None => {
            tracing::info!("VPC networking disabled (--underlay-ip none)");
            None
        }
        Some(ip) => {
            let mtu = args
                .underlay_mtu
                .unwrap_or_else(|| cloud_agent::network::underlay::mtu_of(ip));
            tracing::info!(underlay_ip = %ip, underlay_mtu = mtu, prefix = %args.vpc_prefix, "VPC networking enabled");
            let backend =
                cloud_agent::network::LinuxNetwork::new(cloud_agent::network::LinuxNetworkConfig {
                    underlay_ip: ip,
                    underlay_mtu: mtu,
                    prefix: args.vpc_prefix.clone(),
                    host_netns: None,
                });
            Some(cloud_agent::config::NodeNetwork {
                underlay_ip: ip,
                underlay_mtu: mtu,
                backend: Arc::new(backend),
            })
        }
    };
    let runtime = Arc::new(DockerRuntime::new(args.docker_host.as_deref()));
    let agent = tokio::select! {
        r = cloud_agent::start(config, runtime) => r.map_err(|e| {
            if e.is_enrollment_refused() {
                format!("{e}\nhint: ask the operator for a fresh join token, or pick another --name")
            } else {
                chain(&e)
            }
        })?,
        _ = wait_for_signal() => return Err("interrupted before enrollment finished".into()),
    };
    tracing::info!(node_id = %agent.node_id(), node_name = %agent.node_name(), "agent running");
    wait_for_signal().await;
    tracing::info!("signal received; stopping (workloads keep running)");
    agent
        .stop(Duration::from_secs(20))
        .await
        .map_err(|e| chain(&e))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Run(args) => init_logging(args.log_format, "info"),
        Command::Sim(args) => init_logging(args.log_format, "warn"),
    }
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cloud-agent: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => rt.block_on(run(args)),
        Command::Sim(args) => rt.block_on(cloud_agent::sim::cli::run(args.sim, wait_for_signal())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("cloud-agent: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_parses_labels() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "cloud-agent",
            "run",
            "--scheduler",
            "10.0.0.1:7443",
            "--ca-file",
            "/ca.crt",
            "--join-token-file",
            "/t",
            "--data-dir",
            "/d",
            "--label",
            "zone=a",
            "--label",
            "gpu=",
            "--cpu-millis",
            "1500",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(
            a.labels,
            vec![("zone".into(), "a".into()), ("gpu".into(), "".into())]
        );
        assert_eq!(a.cpu_millis, Some(1500));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=x").is_err());
    }
}
