//! `cloud-scheduler`: the control plane binary.

use anyhow::Context;
use clap::{Parser, Subcommand};
use cloud_scheduler::config::{Config, ConfigFile};
use std::net::SocketAddr;
use std::path::PathBuf;

// mimalloc: the scheduler allocates many small, short-lived buffers on several threads (rows,
// JSON, protobuf); glibc malloc spent a quarter of its CPU time under fleet load (perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// This binary's version, with its build stamp (`THECLOUD_BUILD_ID`).
fn version() -> &'static str {
    cloud_proto::build_version!()
}

#[derive(Parser)]
#[command(
    name = "cloud-scheduler",
    version = version(),
    about = "The Cloud's scheduler: REST API, agent gRPC service, placement and state"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scheduler: the REST API for users and the mutual-TLS gRPC service for agents.
    ///
    /// On first start it creates, in the data dir: the cluster CA (pki/ca.crt, which agents
    /// trust), an admin API key (admin.key, mode 0600, printed once), and a one-time join
    /// token for the next agent (join.token, rewritten after each use). State lives in
    /// DATA_DIR/thecloud.db (SQLite) unless --database-url points at PostgreSQL.
    Serve {
        /// Directory for the database, CA and keys (created with mode 0700).
        #[arg(long, env = "THECLOUD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// postgres://user:pass@host/db, or sqlite://PATH (default: SQLite in the data dir).
        #[arg(long, env = "THECLOUD_DATABASE_URL")]
        database_url: Option<String>,
        /// REST listen address [default: 127.0.0.1:8080].
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Agent gRPC listen address [default: 127.0.0.1:7443].
        #[arg(long)]
        grpc: Option<SocketAddr>,
        /// TOML config file; flags override it. Unknown keys are rejected.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloud-scheduler: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Serve {
        data_dir,
        database_url,
        http,
        grpc,
        config,
    } = cli.command;
    let file = match &config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let mut cfg = Config::from_file(file, data_dir)?;
    if let Some(u) = database_url {
        cfg.database_url = Some(u);
    }
    if let Some(a) = http {
        cfg.http_listen = a;
    }
    if let Some(a) = grpc {
        cfg.grpc_listen = a;
    }
    init_tracing(cfg.log_json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let mut running = cloud_scheduler::start(cfg).await?;
        tokio::select! {
            _ = running.wait() => anyhow::bail!("a listener stopped unexpectedly (see the log above)"),
            _ = shutdown_signal() => {
                tracing::info!("shutting down");
                running.shutdown().await;
                Ok(())
            }
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
