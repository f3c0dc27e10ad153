//! A stand-alone mock scheduler for simulator experiments: accepts one multi-use join token,
//! serves mutual-TLS sessions, counts what the nodes send and prints rates every few seconds.
//! It writes `ca.pem` and `token` into `--dir`, ready for `cloud-agent sim`:
//!
//! ```text
//! cargo run -p cloud-agent --example mock_scheduler -- --dir /tmp/mock --listen 127.0.0.1:17443 &
//! cloud-agent sim --nodes 1000 --scheduler 127.0.0.1:17443 --ca-file /tmp/mock/ca.pem \
//!     --join-token-file /tmp/mock/token --data-dir /tmp/sim
//! ```

// Test support code: a failed unwrap ends the experiment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use clap::Parser;
use common::mock::{Mock, MockOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Mock scheduler for `cloud-agent sim` experiments.
#[derive(Debug, Parser)]
struct Args {
    /// Where to write ca.pem and token.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:17443")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u32,
    #[arg(long, default_value_t = 5000)]
    telemetry_ms: u32,
    /// Do not send an empty desired state (generation 1) on each session.
    #[arg(long)]
    no_desired: bool,
    /// Seconds between report lines.
    #[arg(long, default_value_t = 10)]
    every: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir).unwrap();
    let mock = Mock::start(
        &args.dir,
        MockOptions {
            token_uses: None,
            heartbeat_ms: args.heartbeat_ms,
            telemetry_ms: args.telemetry_ms,
            send_empty_desired: !args.no_desired,
            listen: args.listen,
        },
    )
    .await;
    println!(
        "mock scheduler on {} (ca {}, token {})",
        mock.addr,
        mock.ca_file.display(),
        mock.token_file.display()
    );
    let c = &mock.state.counters;
    let snap = || {
        [
            c.heartbeats.load(Ordering::Relaxed),
            c.telemetry.load(Ordering::Relaxed),
            c.observed.load(Ordering::Relaxed),
        ]
    };
    let mut last = snap();
    let mut at = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(args.every.max(1)));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let now = snap();
        let secs = at.elapsed().as_secs_f64();
        let rate = |i: usize| (now[i] - last[i]) as f64 / secs;
        println!(
            "enrolled {} connected {} sessions +{}/-{} heartbeats/s {:.0} telemetry/s {:.0} observed/s {:.1}",
            mock.enrolled(),
            mock.connected(),
            c.sessions_opened.load(Ordering::Relaxed),
            c.sessions_closed.load(Ordering::Relaxed),
            rate(0),
            rate(1),
            rate(2),
        );
        last = now;
        at = Instant::now();
    }
}
