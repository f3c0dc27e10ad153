//! Shared harness of the end-to-end tests: an in-process scheduler on ephemeral ports with a
//! temporary data dir, agents (real code) attached to it, and polling helpers.

// Test support: a failed setup step should stop the test at once with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod benchstats;
pub mod storage_e2e;

use cloud_api::Client;
use cloud_scheduler::{Config, Running};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

pub use cloud_agent;
pub use cloud_scheduler;

/// Routes test logs through the test writer (visible on failure). `RUST_LOG` filters.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn,hyper=warn")
        });
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A scheduler running in this process.
pub struct Cluster {
    pub scheduler: Option<Running>,
    pub dir: tempfile::TempDir,
    pub config: Config,
    http: SocketAddr,
    grpc: SocketAddr,
}

/// Fast timings so failure detection tests do not wait long.
pub fn fast_config(data_dir: &Path) -> Config {
    let mut c = Config::with_data_dir(data_dir);
    c.http_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.grpc_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.heartbeat_interval = Duration::from_millis(200);
    c.telemetry_interval = Duration::from_secs(1);
    c.node_down_after = Duration::from_secs(3);
    // Tests drive the API hard with one key; the limiter has its own test.
    c.rate_limit_per_second = 0.0;
    c
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = fast_config(&dir.path().join("scheduler"));
        tune(&mut config);
        let running = cloud_scheduler::start(config.clone())
            .await
            .expect("scheduler starts");
        let (http, grpc) = (running.http_addr, running.grpc_addr);
        // Restarts reuse the same ports so agents find the scheduler again.
        config.http_listen = http;
        config.grpc_listen = grpc;
        Self {
            scheduler: Some(running),
            dir,
            config,
            http,
            grpc,
        }
    }

    /// A key of a new user who is a `member` of the default project (no operator rights: what
    /// a tenant gets).
    pub async fn member_key(&self) -> String {
        self.key_with_role("member").await
    }

    /// A key of a new user bound to `role` in the default project.
    pub async fn key_with_role(&self, role: &str) -> String {
        let project = self.running().app.default_project.0.to_string();
        self.key_in_project(&project, role).await
    }

    /// A new project (another tenant): its id, and a key of its new admin.
    pub async fn project_admin_key(&self, name: &str) -> (uuid::Uuid, String) {
        let project = self
            .running()
            .app
            .project_create(cloud_api::CreateProjectRequest {
                name: name.into(),
                admin: None,
            })
            .await
            .expect("project");
        let key = self.key_in_project(name, "admin").await;
        (project.id, key)
    }

    /// A key of a new user bound to `role` in `project` (id or name).
    pub async fn key_in_project(&self, project: &str, role: &str) -> String {
        let app = &self.running().app;
        let project = project.to_owned();
        let email = format!("{role}-{}@test.example", uuid::Uuid::now_v7().simple());
        app.user_create(cloud_api::CreateUserRequest {
            email: email.clone(),
            project: Some(project.clone()),
            role: Some(role.into()),
            ..Default::default()
        })
        .await
        .expect("user");
        let (_, key) = app
            .user_key_create(
                &email,
                cloud_api::CreateApiKeyRequest {
                    name: "test".into(),
                    project: Some(project),
                    expires_in_seconds: None,
                },
            )
            .await
            .expect("key");
        key
    }

    pub fn running(&self) -> &Running {
        self.scheduler.as_ref().expect("scheduler is running")
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn grpc_endpoint(&self) -> String {
        self.grpc.to_string()
    }

    pub fn ca_file(&self) -> PathBuf {
        self.config.data_dir.join("pki").join("ca.crt")
    }

    pub fn join_token_file(&self) -> PathBuf {
        self.config.data_dir.join("join.token")
    }

    pub fn admin_key(&self) -> String {
        std::fs::read_to_string(self.config.data_dir.join("admin.key"))
            .expect("admin.key")
            .trim()
            .to_string()
    }

    /// A client with the admin key.
    pub fn client(&self) -> Client {
        Client::new(&self.http_url(), Some(self.admin_key())).expect("client")
    }

    /// A client with no key, or any key.
    pub fn client_with_key(&self, key: Option<&str>) -> Client {
        Client::new(&self.http_url(), key.map(str::to_string)).expect("client")
    }

    /// Stops the scheduler (agents stay up and keep retrying).
    pub async fn stop_scheduler(&mut self) {
        if let Some(r) = self.scheduler.take() {
            r.shutdown().await;
        }
    }

    /// Starts the scheduler again on the same data dir and ports.
    pub async fn start_scheduler(&mut self) {
        let mut last_err = None;
        for _ in 0..50 {
            match cloud_scheduler::start(self.config.clone()).await {
                Ok(r) => {
                    self.scheduler = Some(r);
                    return;
                }
                Err(e) => {
                    last_err = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("scheduler did not restart: {last_err:?}");
    }

    /// Agent configuration for a new agent named `name` with its own data dir.
    pub fn agent_config(&self, name: &str) -> cloud_agent::AgentConfig {
        let mut c = cloud_agent::AgentConfig::new(
            self.grpc_endpoint(),
            self.ca_file(),
            self.join_token_file(),
            self.dir.path().join("agents").join(name),
        );
        c.name = Some(name.to_string());
        c
    }
}

/// Polls `check` until it yields `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the Docker tests can run; panics when they must (`THECLOUD_REQUIRE_DOCKER=1`).
pub async fn docker_available() -> bool {
    let ok = match bollard::Docker::connect_with_local_defaults() {
        Ok(d) => d.ping().await.is_ok(),
        Err(_) => false,
    };
    if !ok {
        if std::env::var("THECLOUD_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("THECLOUD_REQUIRE_DOCKER=1 but Docker is not answering on /var/run/docker.sock");
        }
        eprintln!(
            "skipping: Docker is not answering on /var/run/docker.sock (./scripts/test.sh starts dockerd)"
        );
    }
    ok
}

/// A running agent over the in-memory fake runtime, plus the runtime to inspect.
pub struct FakeNode {
    pub agent: cloud_agent::AgentHandle,
    pub runtime: std::sync::Arc<cloud_agent::FakeRuntime>,
}

impl Cluster {
    /// Starts an agent named `name` over a fake runtime that knows `local/busybox:latest`,
    /// and waits until the scheduler lists its node as ready.
    pub async fn fake_node(&self, name: &str) -> FakeNode {
        let runtime = std::sync::Arc::new(cloud_agent::FakeRuntime::with_images([
            "local/busybox:latest",
        ]));
        let agent = self.start_agent(name, runtime.clone()).await;
        FakeNode { agent, runtime }
    }

    /// A fake node whose agent configuration `tune` adjusts (network, volumes …) before it
    /// starts; waits until the node is ready.
    pub async fn fake_node_with(
        &self,
        name: &str,
        tune: impl FnOnce(&mut cloud_agent::AgentConfig),
    ) -> FakeNode {
        let runtime = std::sync::Arc::new(cloud_agent::FakeRuntime::with_images([
            "local/busybox:latest",
        ]));
        let mut cfg = self.agent_config(name);
        cfg.capacity_override.cpu_millis = Some(4000);
        cfg.capacity_override.memory_mb = Some(8192);
        cfg.capacity_override.disk_gb = Some(100);
        tune(&mut cfg);
        let agent = cloud_agent::start(cfg, runtime.clone())
            .await
            .expect("agent starts");
        self.wait_node_ready(name).await;
        FakeNode { agent, runtime }
    }

    /// A fake node with VPC networking: the in-memory data plane and `underlay` as its VXLAN
    /// endpoint address. The returned `FakeNetwork` shows what the agent built.
    pub async fn fake_vpc_node(
        &self,
        name: &str,
        underlay: std::net::Ipv4Addr,
    ) -> (FakeNode, cloud_agent::network::FakeNetwork) {
        let net = cloud_agent::network::FakeNetwork::new();
        let backend = std::sync::Arc::new(net.clone());
        let node = self
            .fake_node_with(name, |cfg| {
                cfg.network = Some(cloud_agent::config::NodeNetwork {
                    underlay_ip: underlay,
                    underlay_mtu: 1500,
                    backend,
                });
            })
            .await;
        (node, net)
    }

    /// A fake node with an in-memory volume pool of `gb` GB, once the scheduler has its pool
    /// from telemetry (volumes can be placed there from then on).
    pub async fn fake_volume_node(
        &self,
        name: &str,
        gb: u64,
    ) -> (FakeNode, cloud_agent::storage::FakeVolumes) {
        let volumes = cloud_agent::storage::FakeVolumes::new(gb << 30);
        let backend = std::sync::Arc::new(volumes.clone());
        let node = self
            .fake_node_with(name, |cfg| cfg.volumes = Some(backend))
            .await;
        let client = self.client();
        wait_for("volume pool reported", Duration::from_secs(15), || {
            let client = client.clone();
            async move { client.node_get(name).await.ok()?.usage?.volume_pool }
        })
        .await;
        (node, volumes)
    }

    /// Starts an agent over `runtime` and waits until its node is ready.
    pub async fn start_agent(
        &self,
        name: &str,
        runtime: std::sync::Arc<dyn cloud_agent::ContainerRuntime>,
    ) -> cloud_agent::AgentHandle {
        let mut cfg = self.agent_config(name);
        cfg.capacity_override.cpu_millis = Some(4000);
        cfg.capacity_override.memory_mb = Some(8192);
        cfg.capacity_override.disk_gb = Some(100);
        let agent = cloud_agent::start(cfg, runtime)
            .await
            .expect("agent starts");
        self.wait_node_ready(name).await;
        agent
    }

    pub async fn wait_node_ready(&self, name: &str) {
        let client = self.client();
        wait_for(
            &format!("node {name} ready"),
            Duration::from_secs(20),
            || {
                let client = client.clone();
                async move {
                    let n = client.node_get(name).await.ok()?;
                    (n.status == cloud_api::NodeStatus::Ready && n.connected).then_some(())
                }
            },
        )
        .await;
    }

    /// Waits until the instance reaches `status`, returning it.
    pub async fn wait_instance(
        &self,
        id_or_name: &str,
        status: cloud_api::InstanceStatus,
    ) -> cloud_api::Instance {
        let client = self.client();
        wait_for(
            &format!("instance {id_or_name} {status}"),
            Duration::from_secs(30),
            || {
                let client = client.clone();
                async move {
                    let i = client.instance_get(id_or_name).await.ok()?;
                    (i.status == status).then_some(i)
                }
            },
        )
        .await
    }

    /// Waits until the instance is gone (404).
    pub async fn wait_instance_gone(&self, id_or_name: &str) {
        let client = self.client();
        wait_for(
            &format!("instance {id_or_name} deleted"),
            Duration::from_secs(30),
            || {
                let client = client.clone();
                async move {
                    match client.instance_get(id_or_name).await {
                        Err(e) if e.status() == Some(404) => Some(()),
                        _ => None,
                    }
                }
            },
        )
        .await
    }
}

/// A create request for `local/busybox:latest`.
pub fn busybox(name: &str, command: &[&str]) -> cloud_api::CreateInstanceRequest {
    cloud_api::CreateInstanceRequest {
        disk_gb: None,
        user_data: None,
        name: Some(name.to_string()),
        kind: cloud_api::InstanceKind::Container,
        image: "local/busybox:latest".into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        env: Default::default(),
        cpu_millis: 250,
        memory_mb: 64,
        restart_policy: cloud_api::RestartPolicy::Always,
        node_selector: Default::default(),
        placement_group: None,
        placement_strategy: None,
        subnet_id: None,
        private_ip: None,
        security_groups: Vec::new(),
        volumes: Vec::new(),
    }
}

/// A throwaway PostgreSQL database for one test, from `THECLOUD_TEST_DATABASE_URL`; `None`
/// (with the reason printed) when that is not set, unless `THECLOUD_REQUIRE_POSTGRES=1`.
pub async fn postgres_scratch_url() -> Option<String> {
    let Ok(admin_url) = std::env::var("THECLOUD_TEST_DATABASE_URL") else {
        if std::env::var("THECLOUD_REQUIRE_POSTGRES").as_deref() == Ok("1") {
            panic!("THECLOUD_REQUIRE_POSTGRES=1 but THECLOUD_TEST_DATABASE_URL is not set");
        }
        eprintln!("skipping: THECLOUD_TEST_DATABASE_URL is not set (./scripts/test.sh sets it)");
        return None;
    };
    let name = format!("thecloud_e2e_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&admin_url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create scratch database");
    admin.close().await;
    let (base, _) = admin_url.rsplit_once('/').expect("URL with a database");
    Some(format!("{base}/{name}"))
}

/// Drops a database made by `postgres_scratch_url`.
pub async fn postgres_drop(url: &str) {
    let (Ok(admin_url), Some((_, name))) = (
        std::env::var("THECLOUD_TEST_DATABASE_URL"),
        url.rsplit_once('/'),
    ) else {
        return;
    };
    if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
        admin.close().await;
    }
}

impl Cluster {
    /// A multi-use join token written to a file in the cluster's temp dir.
    pub async fn join_token_file_for(&self, uses: u32) -> PathBuf {
        let token = self
            .client()
            .join_token_create(&cloud_api::CreateJoinTokenRequest {
                uses: Some(uses),
                ttl_seconds: Some(3600),
            })
            .await
            .expect("join token");
        let path = self
            .dir
            .path()
            .join(format!("join-{}.token", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, token.token).expect("write token");
        path
    }

    /// `n` simulated nodes (real agent code over fake runtimes) with fast timers, each
    /// 4000 millicores and 8192 MiB unless `tune` says otherwise.
    pub async fn sim(
        &self,
        n: usize,
        tune: impl FnOnce(&mut cloud_agent::sim::SimConfig),
    ) -> cloud_agent::sim::Sim {
        let token = self
            .join_token_file_for(u32::try_from(n).unwrap_or(u32::MAX))
            .await;
        let mut cfg = cloud_agent::sim::SimConfig::new(
            n,
            self.grpc_endpoint(),
            self.ca_file(),
            token,
            self.dir.path().join("sim"),
        );
        cfg.capacity.cpu_millis = 4000;
        cfg.capacity.memory_mb = 8192;
        cfg.images = vec!["local/busybox:latest".into()];
        cfg.reconciler.interval = Duration::from_millis(500);
        cfg.enroll_concurrency = 16;
        tune(&mut cfg);
        cloud_agent::sim::Sim::start(cfg)
            .await
            .expect("simulated nodes start")
    }
}

/// Creates a scratch database next to the one `admin_url` names; returns its URL.
pub async fn postgres_scratch_url_from(admin_url: &str) -> anyhow::Result<String> {
    let name = format!("thecloud_e2e_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(admin_url).await?;
    // The name is generated here (letters, digits, '_'), never user input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await?;
    admin.close().await;
    let (base, _) = admin_url
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("the database URL has no database name"))?;
    Ok(format!("{base}/{name}"))
}

/// Drops the scratch database `url` through the server of `admin_url`.
pub async fn postgres_drop_url(url: &str, admin_url: &str) {
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    if let Ok(admin) = sqlx::PgPool::connect(admin_url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
        admin.close().await;
    }
}
