//! `api-bench`: the latency of `GET /v1/instances` with 1,000 instances under 200 concurrent
//! connections (wrk), through the real router (API key lookup + constant-time hash check +
//! per-key rate limit + permission check) and through the same routes with a fixed caller
//! instead (no key, no rate limit), interleaved, several rounds. The difference is what the
//! checks cost. Starts its own scheduler (SQLite, in a temp dir) with one simulated node.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: fail loudly

use clap::Parser;
use cloud_api::InstanceStatus;
use cloud_tests::{Cluster, busybox};
use std::process::Command;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "api-bench",
    about = "GET /v1/instances latency with and without auth + rate limiting"
)]
struct Cli {
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    #[arg(long, default_value_t = 200)]
    connections: u32,
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Page size of each GET (the API's maximum is 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
}

/// wrk's latency figure ("1.23ms", "850.00us", "1.02s") in ms.
fn to_ms(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return None,
    })
}

fn wrk(url: &str, key: Option<&str>, connections: u32, seconds: u32) -> Run {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(k) = key {
        cmd.args(["-H", &format!("X-API-Key: {k}")]);
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Connect errors, read/write errors and timeouts would make the figures meaningless.
    assert!(
        !text.contains("Socket errors:"),
        "wrk saw socket errors: {text}"
    );
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
    };
    let non_2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    Run {
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .expect("wrk prints Requests/sec"),
        p50_ms: field("50%")
            .and_then(|v| to_ms(&v))
            .expect("wrk prints a 50% latency"),
        p99_ms: field("99%")
            .and_then(|v| to_ms(&v))
            .expect("wrk prints a 99% latency"),
        non_2xx,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let cli = Cli::parse();
    // The limiter is on (and exercised), with room for the load: it must not refuse here.
    let c = Cluster::start_with(|cfg| {
        cfg.rate_limit_per_second = 1e9;
        cfg.rate_limit_burst = 1_000_000;
    })
    .await;
    let _node = c
        .fake_node_with("bench", |cfg| {
            cfg.capacity_override.cpu_millis = Some(1_000_000);
            cfg.capacity_override.memory_mb = Some(10_000_000);
        })
        .await;
    let key = c.member_key().await;
    let client = cloud_api::Client::new(&c.http_url(), Some(key.clone())).expect("client");
    eprintln!("creating {} instances…", cli.instances);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..cli.instances {
        let client = client.clone();
        tasks.spawn(async move {
            let mut req = busybox(&format!("b{i}"), &["sleep", "100000"]);
            req.cpu_millis = 10;
            req.memory_mb = 8;
            client.instance_create(&req).await.expect("create")
        });
        if tasks.len() >= 32 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
    c.wait_instance(&format!("b{}", cli.instances - 1), InstanceStatus::Running)
        .await;

    // The same routes with the caller fixed: no key, no hash, no rate limit.
    let app = c.running().app.clone();
    let caller = {
        let prefix = key.split('_').nth(1).expect("key prefix");
        let record = app.store.api_key_get_by_prefix(prefix).await.expect("key");
        cloud_scheduler::services::identity::resolve_key(&app, record)
            .await
            .expect("caller")
            .caller
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let plain = listener.local_addr().expect("addr");
    let router = cloud_scheduler::http::router_without_auth(app, caller);
    tokio::spawn(async move { axum::serve(listener, router).await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let path = format!("/v1/instances?limit={}", cli.limit);
    let with = format!("{}{path}", c.http_url());
    let without = format!("http://{plain}{path}");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 1..=cli.rounds {
        let (conns, secs) = (cli.connections, cli.seconds);
        let r1 = tokio::task::spawn_blocking({
            let (u, k) = (with.clone(), key.clone());
            move || wrk(&u, Some(&k), conns, secs)
        })
        .await
        .expect("wrk");
        let r2 = tokio::task::spawn_blocking({
            let u = without.clone();
            move || wrk(&u, None, conns, secs)
        })
        .await
        .expect("wrk");
        eprintln!(
            "round {round}: with auth+RL p50 {:.2} ms p99 {:.2} ms {:.0} req/s (non-2xx {}); without p50 {:.2} ms p99 {:.2} ms {:.0} req/s (non-2xx {})",
            r1.p50_ms, r1.p99_ms, r1.rps, r1.non_2xx, r2.p50_ms, r2.p99_ms, r2.rps, r2.non_2xx
        );
        assert_eq!(r1.non_2xx + r2.non_2xx, 0, "every request must succeed");
        a.push(r1);
        b.push(r2);
    }
    let m = |v: &[Run], f: fn(&Run) -> f64| median(v.iter().map(f).collect());
    println!(
        "| GET /v1/instances (limit {}, {} instances, {} connections) | p50 | p99 | req/s |",
        cli.limit, cli.instances, cli.connections
    );
    println!("|---|---|---|---|");
    println!(
        "| with API key + rate limit + RBAC | {:.2} ms | {:.2} ms | {:.0} |",
        m(&a, |r| r.p50_ms),
        m(&a, |r| r.p99_ms),
        m(&a, |r| r.rps)
    );
    println!(
        "| fixed caller (no key, no rate limit) | {:.2} ms | {:.2} ms | {:.0} |",
        m(&b, |r| r.p50_ms),
        m(&b, |r| r.p99_ms),
        m(&b, |r| r.rps)
    );
    println!(
        "(medians of {} rounds of {} s each, interleaved)",
        cli.rounds, cli.seconds
    );
}
