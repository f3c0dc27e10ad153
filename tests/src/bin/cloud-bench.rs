//! `cloud-bench`: measures the platform against a baseline on the same machine, in the same
//! run (these machines are noisy, so absolute numbers alone mean little).
//!
//! * `launch`: time from `POST /v1/instances` to status `running` (polled every 5 ms), and,
//!   interleaved, time for a plain `docker run -d` of the same image to return. Medians of N.
//!   With `--subnet`, instances go into that VPC subnet, so `running` also means their VPC
//!   port is up (the agent reports running only after plugging `eth0` in).
//! * `volume`: `POST /v1/volumes` → `available`, and sequential write throughput (dd with
//!   fsync) inside a container onto a volume vs on the host directly into the directory that
//!   holds the volume images. Medians of N.
//! * `rss`: resident memory of the running `cloud-agent` and `cloud-scheduler` processes.

use clap::{Parser, Subcommand};
use cloud_api::{Client, CreateInstanceRequest, InstanceKind, InstanceStatus, RestartPolicy};
use cloud_tests::benchstats::{median, ms, summary};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "cloud-bench",
    about = "Benchmarks of The Cloud against plain Docker on this machine"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// POST /v1/instances → running, vs `docker run -d`, interleaved, N times each.
    Launch {
        #[arg(long, env = "CLOUD_API_URL", default_value = "http://127.0.0.1:8080")]
        api_url: String,
        #[arg(long, env = "CLOUD_API_KEY")]
        api_key: String,
        #[arg(long, default_value_t = 20)]
        count: usize,
        #[arg(long, default_value = "local/busybox:latest")]
        image: String,
        /// The docker CLI used for the baseline.
        #[arg(long, default_value = "/usr/bin/docker")]
        docker: String,
        /// Launch into this VPC subnet (id): measures request → running with the network up.
        #[arg(long)]
        subnet: Option<cloud_api::SubnetId>,
    },
    /// Volume create time, and write throughput in a container on a volume vs the host.
    Volume {
        #[arg(long, env = "CLOUD_API_URL", default_value = "http://127.0.0.1:8080")]
        api_url: String,
        #[arg(long, env = "CLOUD_API_KEY")]
        api_key: String,
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// MiB written per throughput run.
        #[arg(long, default_value_t = 512)]
        write_mib: u64,
        /// Host directory for the baseline: the filesystem holding the volume images.
        #[arg(long, default_value = "/var/lib/thecloud/agent")]
        host_dir: std::path::PathBuf,
        #[arg(long, default_value = "/usr/bin/docker")]
        docker: String,
    },
    /// Resident set size of the cloud-agent and cloud-scheduler processes.
    Rss,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Launch {
            api_url,
            api_key,
            count,
            image,
            docker,
            subnet,
        } => launch(&api_url, &api_key, count, &image, &docker, subnet).await,
        Cmd::Volume {
            api_url,
            api_key,
            count,
            write_mib,
            host_dir,
            docker,
        } => volume(&api_url, &api_key, count, write_mib, &host_dir, &docker).await,
        Cmd::Rss => rss(),
    }
}

async fn launch(
    url: &str,
    key: &str,
    count: usize,
    image: &str,
    docker: &str,
    subnet: Option<cloud_api::SubnetId>,
) -> anyhow::Result<()> {
    let client = Client::new(url, Some(key.to_string()))?;
    let once_api = |client: &Client, image: &str, name: &str| {
        let (client, image, name) = (client.clone(), image.to_owned(), name.to_owned());
        async move { once_api(&client, &image, &name, subnet).await }
    };
    let mut ours = Vec::with_capacity(count);
    let mut base = Vec::with_capacity(count);
    // One warm-up of each, not counted.
    once_api(&client, image, "bench-warmup").await?;
    once_docker(docker, image)?;
    for i in 0..count {
        ours.push(once_api(&client, image, &format!("bench-{i}")).await?);
        base.push(once_docker(docker, image)?);
        eprintln!(
            "run {:>2}/{count}: api {:>7.1} ms   docker run {:>7.1} ms",
            i + 1,
            ms(ours[i]),
            ms(base[i])
        );
    }
    println!("POST /v1/instances -> running : {}", summary(&mut ours));
    println!("docker run -d (baseline)      : {}", summary(&mut base));
    println!(
        "ratio of medians (api/docker) : {:.2}",
        ms(median(&ours)) / ms(median(&base))
    );
    Ok(())
}

async fn once_api(
    client: &Client,
    image: &str,
    name: &str,
    subnet: Option<cloud_api::SubnetId>,
) -> anyhow::Result<Duration> {
    let req = CreateInstanceRequest {
        disk_gb: None,
        user_data: None,
        name: Some(name.to_string()),
        kind: InstanceKind::Container,
        image: image.to_string(),
        command: vec!["sleep".into(), "3600".into()],
        env: Default::default(),
        cpu_millis: 100,
        memory_mb: 32,
        restart_policy: RestartPolicy::Never,
        node_selector: Default::default(),
        placement_group: None,
        placement_strategy: None,
        subnet_id: subnet,
        private_ip: None,
        security_groups: Vec::new(),
        volumes: Vec::new(),
    };
    let started = Instant::now();
    let created = client.instance_create(&req).await?;
    let id = created.id.to_string();
    let elapsed = loop {
        let inst = client.instance_get(&id).await?;
        match inst.status {
            InstanceStatus::Running => break started.elapsed(),
            InstanceStatus::Failed | InstanceStatus::Stopped => {
                anyhow::bail!("{name} ended {}: {:?}", inst.status, inst.status_reason)
            }
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        if started.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("{name} did not start within 60 s");
        }
    };
    client.instance_delete(&id).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.instance_get(&id).await.is_ok() {
        if Instant::now() > deadline {
            anyhow::bail!("{name} was not deleted within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(elapsed)
}

fn once_docker(docker: &str, image: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = Command::new(docker)
        .args([
            "run", "-d", "--memory", "32m", "--cpus", "0.1", image, "sleep", "3600",
        ])
        .output()?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Command::new(docker).args(["rm", "-f", &id]).output()?;
    Ok(elapsed)
}

fn rss() -> anyhow::Result<()> {
    let mut found = false;
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        if comm != "cloud-agent" && comm != "cloud-scheduler" {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        println!(
            "{comm:<16} pid {:>7}  RSS {:.1} MiB",
            entry.file_name().to_string_lossy(),
            rss_kb as f64 / 1024.0
        );
        found = true;
    }
    anyhow::ensure!(
        found,
        "no cloud-agent or cloud-scheduler process is running"
    );
    Ok(())
}

async fn wait_volume(
    client: &Client,
    name: &str,
    want: cloud_api::VolumeStatus,
) -> anyhow::Result<cloud_api::Volume> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = client.volume_get(name).await?;
        if v.status == want {
            return Ok(v);
        }
        anyhow::ensure!(
            v.status != cloud_api::VolumeStatus::Failed,
            "{name} failed: {:?}",
            v.status_reason
        );
        anyhow::ensure!(Instant::now() < deadline, "{name} is still {}", v.status);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_snapshot(client: &Client, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = client.snapshot_get(name).await?;
        match s.status {
            cloud_api::SnapshotStatus::Available => return Ok(()),
            cloud_api::SnapshotStatus::Failed => {
                anyhow::bail!("{name} failed: {:?}", s.status_reason)
            }
            _ => {}
        }
        anyhow::ensure!(Instant::now() < deadline, "{name} is still {}", s.status);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn volume(
    url: &str,
    key: &str,
    count: usize,
    write_mib: u64,
    host_dir: &std::path::Path,
    docker: &str,
) -> anyhow::Result<()> {
    let client = Client::new(url, Some(key.to_string()))?;
    let req = |name: &str| cloud_api::CreateVolumeRequest {
        name: name.into(),
        size_gb: 2,
        node: None,
        node_selector: Default::default(),
    };
    let mut create = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("bench-vol-{i}");
        let t = Instant::now();
        client.volume_create(&req(&name)).await?;
        wait_volume(&client, &name, cloud_api::VolumeStatus::Available).await?;
        create.push(t.elapsed());
        client.volume_delete(&name).await?;
    }
    // Throughput: one instance with a volume at /data.
    client.volume_create(&req("bench-vol-io")).await?;
    wait_volume(&client, "bench-vol-io", cloud_api::VolumeStatus::Available).await?;
    let inst = client
        .instance_create(&CreateInstanceRequest {
            disk_gb: None,
            user_data: None,
            name: Some("bench-io".into()),
            kind: InstanceKind::Container,
            image: "local/busybox:latest".into(),
            command: vec!["sleep".into(), "3600".into()],
            env: Default::default(),
            cpu_millis: 1000,
            memory_mb: 256,
            restart_policy: RestartPolicy::Never,
            node_selector: Default::default(),
            placement_group: None,
            placement_strategy: None,
            subnet_id: None,
            private_ip: None,
            security_groups: Vec::new(),
            volumes: vec![cloud_api::VolumeMount {
                volume: "bench-vol-io".into(),
                mount_path: "/data".into(),
            }],
        })
        .await?;
    let container = loop {
        let i = client.instance_get(&inst.id.to_string()).await?;
        if i.status == InstanceStatus::Running {
            break i.runtime_id.unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dd =
        format!("dd if=/dev/zero of=/data/bench bs=1M count={write_mib} conv=fsync 2>/dev/null");
    let host_file = host_dir.join("bench-host.tmp");
    let mut inside = Vec::new();
    let mut host = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let o = Command::new(docker)
            .args(["exec", &container, "sh", "-c", &dd])
            .output()?;
        anyhow::ensure!(
            o.status.success(),
            "dd in the container failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        inside.push(t.elapsed());
        let t = Instant::now();
        let o = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", host_file.display()))
            .args(["bs=1M", &format!("count={write_mib}"), "conv=fsync"])
            .output()?;
        anyhow::ensure!(o.status.success(), "dd on the host failed");
        host.push(t.elapsed());
        let _ = std::fs::remove_file(&host_file);
    }
    // Snapshot of the volume in use (holding the written file) and restore into a new
    // volume, vs a plain copy of its image on the host (what the file backend does at best).
    let vol = client.volume_get("bench-vol-io").await?;
    let image = host_dir
        .join("volume-images")
        .join(format!("vol-{}.raw", vol.id));
    let (mut snap, mut restore, mut copy) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..3 {
        let (s, r) = (format!("bench-snap-{i}"), format!("bench-restored-{i}"));
        let t = Instant::now();
        client
            .snapshot_create(&cloud_api::CreateSnapshotRequest {
                volume_id: "bench-vol-io".into(),
                name: s.clone(),
            })
            .await?;
        wait_snapshot(&client, &s).await?;
        snap.push(t.elapsed());
        let t = Instant::now();
        client
            .snapshot_restore(
                &s,
                &cloud_api::RestoreSnapshotRequest {
                    name: r.clone(),
                    size_gb: None,
                },
            )
            .await?;
        wait_volume(&client, &r, cloud_api::VolumeStatus::Available).await?;
        restore.push(t.elapsed());
        client.volume_delete(&r).await?;
        client.snapshot_delete(&s).await?;
        let t = Instant::now();
        let copy_file = host_dir.join("bench-copy.tmp");
        let o = Command::new("cp")
            .args(["--sparse=always", "--reflink=auto"])
            .arg(&image)
            .arg(&copy_file)
            .output()?;
        anyhow::ensure!(o.status.success(), "cp of {} failed", image.display());
        let _ = Command::new("sync").arg(&copy_file).output();
        copy.push(t.elapsed());
        let _ = std::fs::remove_file(&copy_file);
    }
    let mbps = |d: Duration| write_mib as f64 / d.as_secs_f64();
    println!(
        "POST /v1/volumes -> available (2 GB) : {}",
        summary(&mut create)
    );
    println!(
        "snapshot of the volume in use ({write_mib} MiB written) -> available : {}",
        summary(&mut snap)
    );
    println!(
        "restore of that snapshot -> new volume available : {}",
        summary(&mut restore)
    );
    println!(
        "baseline: cp --sparse=always of its image + sync on the host : {}",
        summary(&mut copy)
    );
    println!(
        "write {write_mib} MiB + fsync, container on volume : median {:.0} MiB/s ({})",
        mbps(median(&inside)),
        summary(&mut inside)
    );
    println!(
        "write {write_mib} MiB + fsync, host directly       : median {:.0} MiB/s ({})",
        mbps(median(&host)),
        summary(&mut host)
    );
    client.instance_delete(&inst.id.to_string()).await?;
    while client.instance_get(&inst.id.to_string()).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_volume(&client, "bench-vol-io", cloud_api::VolumeStatus::Available).await?;
    client.volume_delete("bench-vol-io").await?;
    Ok(())
}
