//! `bench-scheduler`: the scheduler under fleet load, measured.
//!
//! Starts the real `cloud-scheduler` binary (a separate process, so its CPU time and peak
//! memory are its own) on SQLite and/or PostgreSQL, attaches N simulated nodes (the real agent
//! code over fake runtimes, in this process), measures the cost of their heartbeats at rest,
//! then submits M instances through the REST API with C requests in flight and reports:
//! time to first placement, placement latency p50/p95/p99 (request sent → answer with the node
//! assigned), time until all placed, time until all running, placements per second, scheduler
//! CPU seconds and peak RSS, and agent messages per second absorbed.
//!
//!     cargo run --release -p cloud-tests --bin bench-scheduler -- --nodes 5000 --instances 50000

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: fail loudly

use anyhow::{Context, bail};
use clap::Parser;
use cloud_api::{
    Client, CreateInstanceRequest, CreateJoinTokenRequest, InstanceKind, RestartPolicy,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// The same allocator as the scheduler and agent binaries (this process hosts the sim nodes).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "bench-scheduler",
    about = "Scheduler benchmark with simulated nodes"
)]
struct Args {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Instances submitted through the API.
    #[arg(long, default_value_t = 10000)]
    instances: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Which stores: sqlite, postgres, or both (postgres needs --postgres-url or
    /// THECLOUD_TEST_DATABASE_URL; a scratch database is created and dropped).
    #[arg(long, default_value = "sqlite")]
    stores: String,
    #[arg(long, env = "THECLOUD_TEST_DATABASE_URL")]
    postgres_url: Option<String>,
    /// How long a simulated container start takes.
    #[arg(long, default_value = "0ms", value_parser = parse_ms)]
    start_delay: Duration,
    /// Seconds of rest with all nodes heartbeating, to measure their cost.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// The scheduler binary (default: next to this one).
    #[arg(long)]
    scheduler_bin: Option<PathBuf>,
}

fn parse_ms(s: &str) -> Result<Duration, String> {
    let n = s
        .trim_end_matches("ms")
        .parse::<u64>()
        .map_err(|e| e.to_string())?;
    Ok(Duration::from_millis(n))
}

struct Figures {
    down_after: Duration,
    moved_after: Duration,
    store: String,
    first_placement: Duration,
    p50: Duration,
    p95: Duration,
    p99: Duration,
    all_placed: Duration,
    all_running: Duration,
    placements_per_s: f64,
    cpu_seconds: f64,
    peak_rss_mib: f64,
    idle_msgs_per_s: f64,
    idle_cpu_cores: f64,
    batch_mean: f64,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let bin = match &args.scheduler_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("cloud-scheduler"),
    };
    anyhow::ensure!(
        bin.exists(),
        "scheduler binary {} not found (cargo build -p cloud-scheduler first)",
        bin.display()
    );
    println!(
        "| store | nodes | instances | first placement | placement p50 / p95 / p99 | all placed | all running | placements/s | scheduler CPU s | peak RSS | idle: agent msgs/s, scheduler cores | mean batch | failover: down / running elsewhere |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let stores: Vec<&str> = args
        .stores
        .split(',')
        .flat_map(|s| {
            if s == "both" {
                vec!["sqlite", "postgres"]
            } else {
                vec![s]
            }
        })
        .collect();
    for store in stores {
        eprintln!(
            "== {store}: {} nodes, {} instances, {} in flight",
            args.nodes, args.instances, args.concurrency
        );
        // Each row is printed as soon as it is measured.
        let f = run(&args, &bin, store).await?;
        println!(
            "| {} | {} | {} | {:.0} ms | {:.1} / {:.1} / {:.1} ms | {:.2} s | {:.2} s | {:.0} | {:.1} | {:.0} MiB | {:.0}/s, {:.2} | {:.0} | {:.1} s / {:.1} s |",
            f.store,
            args.nodes,
            args.instances,
            ms(f.first_placement),
            ms(f.p50),
            ms(f.p95),
            ms(f.p99),
            f.all_placed.as_secs_f64(),
            f.all_running.as_secs_f64(),
            f.placements_per_s,
            f.cpu_seconds,
            f.peak_rss_mib,
            f.idle_msgs_per_s,
            f.idle_cpu_cores,
            f.batch_mean,
            f.down_after.as_secs_f64(),
            f.moved_after.as_secs_f64(),
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The scheduler process; killed on drop.
struct Scheduler {
    child: Child,
    dir: tempfile::TempDir,
    http: String,
    grpc: String,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Scheduler {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // Fields after the command: state is 0, utime is 11, stime is 12.
        (ticks(11) + ticks(12)) / 100.0
    }

    fn peak_rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }

    fn admin_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin.key"))
            .unwrap()
            .trim()
            .to_string()
    }
}

async fn start_scheduler(bin: &Path, database_url: Option<&str>) -> anyhow::Result<Scheduler> {
    let dir = tempfile::tempdir()?;
    let http = format!("127.0.0.1:{}", free_port());
    let grpc = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("scheduler.toml");
    // Generous down detection: the benchmark machine is saturated on purpose.
    std::fs::write(
        &config,
        "node_down_after = \"10s\"\nreschedule_after = \"2s\"\nheartbeat_interval = \"1s\"\ntelemetry_interval = \"10s\"\n",
    )?;
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--http", &http, "--grpc", &grpc, "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let s = Scheduler {
        child,
        dir,
        http,
        grpc,
    };
    let ready = format!("http://{}/readyz", s.http);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("the scheduler did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(client: &Client, name: &str) -> f64 {
    let Ok(resp) = client.raw(cloud_api::Method::GET, "/metrics").send().await else {
        return 0.0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

async fn run(args: &Args, bin: &Path, store: &str) -> anyhow::Result<Figures> {
    let pg = match store {
        "sqlite" => None,
        "postgres" => {
            let admin = args
                .postgres_url
                .as_deref()
                .context("postgres needs --postgres-url or THECLOUD_TEST_DATABASE_URL")?;
            Some(cloud_tests::postgres_scratch_url_from(admin).await?)
        }
        other => bail!("unknown store {other:?}: sqlite, postgres or both"),
    };
    let sched = start_scheduler(bin, pg.as_deref()).await?;
    let client = Client::new(&format!("http://{}", sched.http), Some(sched.admin_key()))?;
    let token = client
        .join_token_create(&CreateJoinTokenRequest {
            uses: Some(u32::try_from(args.nodes)?),
            ttl_seconds: Some(7200),
        })
        .await?;
    let token_file = sched.dir.path().join("bench.token");
    std::fs::write(&token_file, &token.token)?;

    let enroll_started = Instant::now();
    let mut cfg = cloud_agent::sim::SimConfig::new(
        args.nodes,
        sched.grpc.clone(),
        sched.dir.path().join("pki/ca.crt"),
        token_file,
        sched.dir.path().join("sim"),
    );
    cfg.images = vec!["local/busybox:latest".into()];
    cfg.start_delay = args.start_delay;
    cfg.enroll_concurrency = 32;
    cfg.connect_timeout = Duration::from_secs(600);
    let mut sim = cloud_agent::sim::Sim::start(cfg).await?;
    eprintln!(
        "   {} nodes enrolled and connected in {:.1} s",
        sim.len(),
        enroll_started.elapsed().as_secs_f64()
    );

    // At rest: what do N heartbeating nodes cost the scheduler?
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (msgs0, cpu0, t0) = (
        metric(&client, "thecloud_agent_messages_total").await,
        sched.cpu_seconds(),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let (msgs1, cpu1, t1) = (
        metric(&client, "thecloud_agent_messages_total").await,
        sched.cpu_seconds(),
        Instant::now(),
    );
    let window = (t1 - t0).as_secs_f64();
    let idle_msgs_per_s = (msgs1 - msgs0) / window;
    let idle_cpu_cores = (cpu1 - cpu0) / window;
    eprintln!(
        "   at rest: {idle_msgs_per_s:.0} agent messages/s, scheduler {idle_cpu_cores:.2} cores"
    );

    // Load: M creates, C in flight.
    let cpu_before = sched.cpu_seconds();
    let started = Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.instances {
        let permit = sem.clone().acquire_owned().await?;
        let client = client.clone();
        tasks.spawn(async move {
            let req = CreateInstanceRequest {
                disk_gb: None,
                user_data: None,
                name: Some(format!("b{i}")),
                kind: InstanceKind::Container,
                image: "local/busybox:latest".into(),
                command: vec!["sleep".into(), "3600".into()],
                env: Default::default(),
                cpu_millis: 100,
                memory_mb: 64,
                restart_policy: RestartPolicy::Always,
                node_selector: Default::default(),
                placement_group: None,
                placement_strategy: None,
                subnet_id: None,
                private_ip: None,
                security_groups: Vec::new(),
                volumes: Vec::new(),
            };
            let sent = Instant::now();
            let r = client.instance_create(&req).await;
            drop(permit);
            (
                sent,
                Instant::now(),
                r.map(|_| ()).map_err(|e| e.to_string()),
            )
        });
    }
    let mut latencies = Vec::with_capacity(args.instances);
    let mut first: Option<Instant> = None;
    let mut last = started;
    let mut errors = 0usize;
    while let Some(r) = tasks.join_next().await {
        let (sent, done, res) = r?;
        match res {
            Ok(()) => {
                latencies.push(done - sent);
                first = Some(first.map_or(done, |f| f.min(done)));
                last = last.max(done);
            }
            Err(e) => {
                errors += 1;
                if errors <= 5 {
                    eprintln!("   error: {e}");
                }
            }
        }
    }
    if errors > 0 {
        bail!("{errors} of {} requests failed", args.instances);
    }
    let all_placed = last - started;
    eprintln!(
        "   all {} placed in {:.2} s",
        args.instances,
        all_placed.as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let running = metric(&client, "thecloud_instances{status=\"running\"}").await;
        if running as usize >= args.instances {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {running} of {} running after 600 s", args.instances);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_running = started.elapsed();
    let cpu_seconds = sched.cpu_seconds() - cpu_before;
    let peak_rss_mib = sched.peak_rss_mib();
    let batches = metric(&client, "thecloud_planner_batch_size_count").await;
    let batch_sum = metric(&client, "thecloud_planner_batch_size_sum").await;
    latencies.sort();
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    if sim.running_instances() < args.instances {
        bail!(
            "the nodes run {} containers, expected {}",
            sim.running_instances(),
            args.instances
        );
    }
    // Failover: kill a node that runs instances; how long until it is down, and until its
    // instances (restart policy always) run elsewhere?
    let (down_after, moved_after) = failover(&client, &mut sim).await?;
    eprintln!(
        "   failover: node down {:.1} s after the kill, its instances running elsewhere {:.1} s after that",
        down_after.as_secs_f64(),
        moved_after.as_secs_f64()
    );
    sim.shutdown().await;
    drop(sched);
    if let Some(url) = pg {
        cloud_tests::postgres_drop_url(&url, args.postgres_url.as_deref().unwrap_or_default())
            .await;
    }
    Ok(Figures {
        down_after,
        moved_after,
        store: store.to_string(),
        first_placement: first.map_or(Duration::ZERO, |f| f - started),
        p50: q(0.50),
        p95: q(0.95),
        p99: q(0.99),
        all_placed,
        all_running,
        placements_per_s: args.instances as f64 / all_placed.as_secs_f64(),
        cpu_seconds,
        peak_rss_mib,
        idle_msgs_per_s,
        idle_cpu_cores,
        batch_mean: if batches > 0.0 {
            batch_sum / batches
        } else {
            0.0
        },
    })
}

/// Kills the sim node running the most instances; returns (kill → node down, down → all its
/// instances running on other nodes).
async fn failover(
    client: &Client,
    sim: &mut cloud_agent::sim::Sim,
) -> anyhow::Result<(Duration, Duration)> {
    let victim = (0..sim.len())
        .max_by_key(|i| sim.runtime(*i).running_count())
        .context("no nodes")?;
    let name = sim.node_name(victim).to_string();
    let ids: Vec<String> = sim
        .runtime(victim)
        .containers()
        .iter()
        .filter_map(|c| c.label("thecloud.instance-id").map(str::to_string))
        .collect();
    let killed = Instant::now();
    sim.kill(victim);
    loop {
        if client.node_get(&name).await?.status == cloud_api::NodeStatus::Down {
            break;
        }
        if killed.elapsed() > Duration::from_secs(120) {
            bail!("node {name} not down 120 s after the kill");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let down_after = killed.elapsed();
    let down_at = Instant::now();
    loop {
        let mut all = true;
        for id in &ids {
            let inst = client.instance_get(id).await?;
            if inst.status != cloud_api::InstanceStatus::Running
                || inst.node_name.as_deref() == Some(name.as_str())
            {
                all = false;
                break;
            }
        }
        if all {
            break;
        }
        if down_at.elapsed() > Duration::from_secs(120) {
            bail!("the instances of {name} did not run elsewhere within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((down_after, down_at.elapsed()))
}
