//! Helpers of the end-to-end volume tests on real dockerd with the `file` backend: the root
//! check (loop mounts need it), a node agent over real Docker with a file pool, cleanup of its
//! containers and mounts pass or fail, and `docker exec`.

use crate::{Cluster, wait_for};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Whether this process is root; panics under THECLOUD_REQUIRE_STORAGE=1 (CI) if not.
pub fn root() -> bool {
    let ok = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !ok {
        if std::env::var("THECLOUD_REQUIRE_STORAGE").as_deref() == Ok("1") {
            panic!("THECLOUD_REQUIRE_STORAGE=1 but not root (loop mounts need root)");
        }
        eprintln!("skipping: volume end-to-end tests need root (loop devices, mount)");
    }
    ok
}

/// Removes the node's containers, then unmounts its volumes, pass or fail.
pub struct Cleanup {
    pub node: String,
    pub mounts: std::path::PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=thecloud.node-id={}", self.node),
            ])
            .output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        for e in std::fs::read_dir(&self.mounts)
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = Command::new("umount").arg(e.path()).output();
        }
    }
}

/// `sh -c script` in a container; its trimmed stdout.
pub fn exec(container: &str, script: &str) -> String {
    let o = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A node agent on real Docker with a `file` volume pool under its data dir.
pub struct DiskNode {
    pub agent: cloud_agent::AgentHandle,
    pub config: cloud_agent::AgentConfig,
    pub cleanup: Cleanup,
}

impl DiskNode {
    /// Starts the agent `name` and waits until its node is ready and its pool reported.
    pub async fn start(c: &Cluster, name: &str) -> Self {
        let mut config = c.agent_config(name);
        let backend = cloud_agent::storage::FileBackend::new(
            cloud_agent::storage::FileBackendConfig::under(&config.data_dir),
        )
        .expect("file backend");
        config.volumes = Some(Arc::new(backend));
        let agent = Self::run(&config).await;
        let cleanup = Cleanup {
            node: agent.node_id().to_string(),
            mounts: config.data_dir.join("volumes"),
        };
        c.wait_node_ready(name).await;
        let client = c.client();
        wait_for("pool reported", Duration::from_secs(15), || {
            let client = client.clone();
            async move { client.node_get(name).await.ok()?.usage?.volume_pool }
        })
        .await;
        Self {
            agent,
            config,
            cleanup,
        }
    }

    /// Starts an agent process (again) with this node's configuration.
    pub async fn run(config: &cloud_agent::AgentConfig) -> cloud_agent::AgentHandle {
        let runtime = Arc::new(
            cloud_agent::DockerRuntime::connect(None)
                .await
                .expect("docker"),
        );
        cloud_agent::start(config.clone(), runtime)
            .await
            .expect("agent start")
    }
}
