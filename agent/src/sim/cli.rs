//! `cloud-agent sim`: the simulator's command line. Parses the options into a [`SimConfig`],
//! starts the nodes with progress lines on stdout, prints a one-line summary, then serves the
//! [`console`](super::console) on stdin until `quit` or a signal.

use super::console::{self, End};
use super::{Sim, SimConfig, SimProgress, process_usage};
use crate::model::Capacity;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Options of `cloud-agent sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Number of simulated nodes.
    #[arg(long, value_name = "N")]
    pub nodes: usize,
    /// Scheduler gRPC address HOST:PORT (HOST must match the scheduler certificate).
    #[arg(long, value_name = "HOST:PORT", env = "THECLOUD_SCHEDULER")]
    pub scheduler: String,
    /// PEM file of the CA that signed the scheduler's certificate.
    #[arg(long, value_name = "CA", env = "THECLOUD_CA_FILE")]
    pub ca_file: PathBuf,
    /// File holding the join token, shared by every node: it must be a multi-use token with
    /// at least N uses (`cloud node token create --uses N`). Not read by nodes that already
    /// hold an identity.
    #[arg(long, value_name = "FILE", env = "THECLOUD_JOIN_TOKEN_FILE")]
    pub join_token_file: PathBuf,
    /// Directory of the nodes' identities and state: node I uses DIR/<prefix>-I. Running the
    /// simulator again on the same DIR reuses the identities (no new enrollment).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Node names and hostnames are <PREFIX>-<I>.
    #[arg(long, value_name = "PREFIX", default_value = "sim")]
    pub name_prefix: String,
    /// CPU capacity each node advertises, in millicores.
    #[arg(long, value_name = "N", default_value_t = 4000)]
    pub cpu_millis: u64,
    /// Memory capacity each node advertises, in MiB.
    #[arg(long, value_name = "N", default_value_t = 16384)]
    pub memory_mb: u64,
    /// Disk capacity each node advertises, in GB.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub disk_gb: u64,
    /// Label KEY=VALUE of every node (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Spread nodes over K zones: node I gets the label zone=z<I mod K> (overrides a zone
    /// given with --label). 0 = no zone label.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub zones: usize,
    /// How long a container start takes on a simulated node (e.g. 200ms, 1.5s, 0).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    pub start_delay: Duration,
    /// How long a container create takes on a simulated node.
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    pub create_delay: Duration,
    /// How long an image pull takes on a simulated node (every image is pullable).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    pub pull_delay: Duration,
    /// Nodes enrolling or connecting at the same time.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub enroll_concurrency: usize,
    /// Give up when one node has not enrolled and connected within this time.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Print a progress line every N nodes while starting.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub progress_every: usize,
}

/// `KEY=VALUE` with a non-empty key.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// A duration: a number with a unit `us`, `ms`, `s`, `m` or `h` (`200ms`, `1.5s`, `2m`);
/// a bare `0` means zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?} has no unit: write e.g. 200ms or 1.5s"))?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: write e.g. 200ms or 1.5s"))?;
    let scale = match unit.trim() {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use us, ms, s, m, h)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{s:?}: {e}"))
}

impl SimArgs {
    /// The simulation these options describe.
    pub fn to_config(&self) -> SimConfig {
        let mut c = SimConfig::new(
            self.nodes,
            self.scheduler.clone(),
            self.ca_file.clone(),
            self.join_token_file.clone(),
            self.data_dir.clone(),
        );
        c.name_prefix = self.name_prefix.clone();
        c.capacity = Capacity {
            cpu_millis: self.cpu_millis,
            memory_mb: self.memory_mb,
            disk_gb: self.disk_gb,
        };
        c.labels = self.labels.iter().cloned().collect::<BTreeMap<_, _>>();
        c.zones = self.zones;
        c.start_delay = self.start_delay;
        c.create_delay = self.create_delay;
        c.pull_delay = self.pull_delay;
        c.enroll_concurrency = self.enroll_concurrency;
        c.connect_timeout = self.connect_timeout;
        c
    }
}

fn mib(bytes: u64) -> u64 {
    bytes / (1024 * 1024)
}

/// Lines of stdin, read on one dedicated thread (tokio's stdin would hold up shutdown).
fn stdin_lines() -> ReceiverStream<String> {
    let (tx, rx) = mpsc::channel(16);
    let spawned = std::thread::Builder::new()
        .name("sim-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot read commands from stdin");
    }
    ReceiverStream::new(rx)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs `cloud-agent sim` until `quit` or until `stop` (a signal) completes. The error is a
/// one-line message for the operator.
pub async fn run(args: SimArgs, stop: impl Future<Output = ()>) -> Result<(), String> {
    for (what, path) in [
        ("CA file", &args.ca_file),
        ("join token file", &args.join_token_file),
    ] {
        if !path.is_file() {
            return Err(format!(
                "{what} {} does not exist or is not a file",
                path.display()
            ));
        }
    }
    let cfg = args.to_config();
    let every = args.progress_every.max(1);
    say(&format!(
        "cloud-agent sim: starting {} nodes against {} (enroll concurrency {}, data in {})",
        cfg.nodes,
        cfg.scheduler,
        cfg.enroll_concurrency,
        cfg.data_dir.display()
    ));
    let t0 = Instant::now();
    let mut last: Option<SimProgress> = None;
    let progress = |p: SimProgress| {
        last = Some(p);
        if p.ready.is_multiple_of(every) && p.ready < p.total {
            say(&format!(
                "  {}/{} nodes connected ({} enrolled now) after {:.1}s",
                p.ready,
                p.total,
                p.enrolled,
                t0.elapsed().as_secs_f64()
            ));
        }
    };
    tokio::pin!(stop);
    let started = tokio::select! {
        r = Sim::start_with_progress(cfg, progress) => r,
        _ = &mut stop => return Err("interrupted while starting the nodes".into()),
    };
    let mut sim = started.map_err(|e| {
        let mut m = crate::tls::error_chain(&e);
        if let Some(h) = e.hint() {
            m.push_str("\nhint: ");
            m.push_str(h);
        }
        m
    })?;
    let enrolled = last.map_or(0, |p| p.enrolled);
    let status = sim.status();
    let usage = process_usage()
        .map(|(rss, cpu)| format!("; rss {} MiB, cpu {:.1}s", mib(rss), cpu.as_secs_f64()))
        .unwrap_or_default();
    say(&format!(
        "ready: {}/{} nodes connected ({enrolled} enrolled now, {} reused their identity) in {:.1}s{usage}. Commands on stdin: kill I, restart I, partition I, heal I, status, help, quit",
        status.connected,
        status.total,
        status.total.saturating_sub(enrolled),
        t0.elapsed().as_secs_f64(),
    ));
    let mut out = std::io::stdout();
    let end = console::run(&mut sim, stdin_lines(), &mut out, &mut stop)
        .await
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    if end == End::Stopped {
        say("signal received");
    }
    say(&format!("stopping {} nodes", sim.len()));
    sim.shutdown().await;
    say("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SimArgs,
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration(" 0ms "), Ok(Duration::ZERO));
        assert!(parse_duration("200").unwrap_err().contains("no unit"));
        assert!(parse_duration("2d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("1.2.3s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn parses_labels() {
        assert_eq!(parse_label("zone=a"), Ok(("zone".into(), "a".into())));
        assert_eq!(parse_label("gpu="), Ok(("gpu".into(), "".into())));
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=x").is_err());
    }

    #[test]
    fn parses_options_into_a_config() {
        let base = [
            "sim",
            "--nodes",
            "5000",
            "--scheduler",
            "10.0.0.1:7443",
            "--ca-file",
            "/ca.crt",
            "--join-token-file",
            "/t",
            "--data-dir",
            "/d",
        ];
        let w = Wrapper::try_parse_from(base).unwrap();
        let c = w.args.to_config();
        assert_eq!(c.nodes, 5000);
        assert_eq!(c.name_prefix, "sim");
        assert_eq!(
            c.capacity,
            Capacity {
                cpu_millis: 4000,
                memory_mb: 16384,
                disk_gb: 200
            }
        );
        assert_eq!(c.enroll_concurrency, 64);
        assert_eq!(c.start_delay, Duration::ZERO);
        assert_eq!(c.zones, 0);
        assert!(c.labels.is_empty());
        assert_eq!(w.args.progress_every, 500);

        let mut full: Vec<&str> = base.to_vec();
        full.extend([
            "--name-prefix",
            "edge",
            "--cpu-millis",
            "8000",
            "--memory-mb",
            "32768",
            "--disk-gb",
            "500",
            "--label",
            "zone=a",
            "--label",
            "tier=gold",
            "--zones",
            "3",
            "--start-delay",
            "200ms",
            "--create-delay",
            "50ms",
            "--enroll-concurrency",
            "16",
            "--connect-timeout",
            "30s",
        ]);
        let c = Wrapper::try_parse_from(full).unwrap().args.to_config();
        assert_eq!(c.name_prefix, "edge");
        assert_eq!(c.node_name(12), "edge-12");
        assert_eq!(c.capacity.cpu_millis, 8000);
        assert_eq!(c.capacity.memory_mb, 32768);
        assert_eq!(c.capacity.disk_gb, 500);
        assert_eq!(c.labels.get("tier").map(String::as_str), Some("gold"));
        assert_eq!(c.node_labels(4).get("zone").map(String::as_str), Some("z1"));
        assert_eq!(c.start_delay, Duration::from_millis(200));
        assert_eq!(c.create_delay, Duration::from_millis(50));
        assert_eq!(c.enroll_concurrency, 16);
        assert_eq!(c.connect_timeout, Duration::from_secs(30));

        let mut bad = base.to_vec();
        bad.extend(["--start-delay", "200"]);
        assert!(Wrapper::try_parse_from(bad).is_err());
        let mut bad = base.to_vec();
        bad.extend(["--label", "nokey"]);
        assert!(Wrapper::try_parse_from(bad).is_err());
        assert!(
            Wrapper::try_parse_from(&base[..3]).is_err(),
            "--scheduler is required"
        );
    }
}
