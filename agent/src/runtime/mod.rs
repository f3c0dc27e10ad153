//! The container runtime seam: what the reconciler, log streaming and telemetry need from a
//! container engine. `docker` talks to a real dockerd through bollard; `fake` keeps the same
//! behaviour in memory for unit tests and simulated nodes.

pub mod docker;
pub mod fake;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub use docker::DockerRuntime;
pub use fake::FakeRuntime;

/// Label keys the agent puts on everything it creates.
pub mod labels {
    /// The volumes mounted in the container: `VOLUME_ID=PATH` pairs joined by `,`.
    pub const MOUNTS: &str = "thecloud.mounts";
    /// Instance id (UUID string from the scheduler).
    pub const INSTANCE_ID: &str = "thecloud.instance-id";
    /// Node id of the agent that owns the object. The agent only ever touches its own.
    pub const NODE_ID: &str = "thecloud.node-id";
    /// Instance name, for humans running `docker ps`.
    pub const INSTANCE_NAME: &str = "thecloud.instance-name";
    /// Always `cloud-agent`.
    pub const MANAGED_BY: &str = "thecloud.managed-by";
    /// Value of [`MANAGED_BY`].
    pub const MANAGED_BY_VALUE: &str = "cloud-agent";
}

/// Errors of a container runtime. Messages keep the engine's own wording: they end up in
/// `status_reason` for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The container (or other object) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The image is not present locally (create) or could not be pulled.
    #[error("{0}")]
    ImageNotFound(String),
    /// A name is already taken and similar conflicts.
    #[error("{0}")]
    Conflict(String),
    /// The engine cannot be reached (socket missing, daemon down).
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
    /// An operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// Any other error answered by the engine.
    #[error("{message}")]
    Engine { status: u16, message: String },
}

/// Docker-style state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    Unknown,
}

/// Restart policy in engine terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineRestartPolicy {
    /// Docker `no`.
    #[default]
    No,
    /// Docker `on-failure`.
    OnFailure,
    /// Docker `unless-stopped`.
    UnlessStopped,
}

/// Everything needed to create one container.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Replaces the image's CMD when non-empty.
    pub command: Vec<String>,
    /// Never logged (values may be secrets).
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Memory limit in bytes (0 = unlimited).
    pub memory_bytes: i64,
    /// CPU limit in units of 1e-9 CPUs (0 = unlimited).
    pub nano_cpus: i64,
    pub restart_policy: EngineRestartPolicy,
    /// Docker network mode `none`: the container gets only `lo`; the agent plugs its VPC
    /// port in after start (Docker's own networking plays no part).
    pub network_none: bool,
    /// Bind mounts `HOST_PATH:CONTAINER_PATH` (volumes mounted by the agent).
    pub binds: Vec<String>,
}

impl fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerSpec")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("command", &self.command)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("labels", &self.labels)
            .field("memory_bytes", &self.memory_bytes)
            .field("nano_cpus", &self.nano_cpus)
            .field("restart_policy", &self.restart_policy)
            .field("network_none", &self.network_none)
            .field("binds", &self.binds)
            .finish()
    }
}

/// What the runtime reports about one container (list and inspect return the same shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Name without Docker's leading `/`.
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub status: ContainerStatus,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Engine error of the last start attempt (Docker `State.Error`), empty when none.
    pub error: String,
    /// 0 when the container never started.
    pub started_at_unix_ms: i64,
    pub restart_count: i64,
    /// Memory limit in bytes, 0 = unlimited.
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub restart_policy: EngineRestartPolicy,
    /// Host PID of the container's init process while it runs (0 otherwise); its network
    /// namespace is `/proc/<pid>/ns/net`. Changes on every (re)start.
    pub pid: i64,
}

impl ContainerInfo {
    /// The value of a label, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// How many log lines to return and whether to keep following.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogOptions {
    /// Last N lines, 0 = all.
    pub tail: u32,
    pub follow: bool,
}

/// stdout+stderr of a container, as raw bytes in arrival order.
pub type LogStream = BoxStream<'static, Result<Bytes, RuntimeError>>;

/// One-shot resource usage of a container.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ContainerStats {
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: u64,
}

/// A container engine as seen by the agent.
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Driver name reported to the scheduler in `Hello.drivers` (e.g. `docker`).
    fn driver(&self) -> &'static str;
    /// Whether the engine answers.
    async fn ping(&self) -> Result<(), RuntimeError>;
    /// All containers (any state) carrying every one of `labels`.
    async fn list(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError>;
    /// One container by id or name.
    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError>;
    /// Whether `image` is present locally.
    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError>;
    /// Pulls `image`; the caller bounds the time.
    async fn pull_image(&self, image: &str) -> Result<(), RuntimeError>;
    /// Creates a container (not started) and returns its id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Stops with SIGTERM, then SIGKILL after `grace`. Stopping a stopped container is fine.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Removes a container; `force` kills it first if it runs.
    async fn remove(&self, id: &str, force: bool) -> Result<(), RuntimeError>;
    /// stdout+stderr of a container.
    async fn logs(&self, id: &str, options: LogOptions) -> Result<LogStream, RuntimeError>;
    /// One-shot usage of a running container.
    async fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError>;
}

/// CPU percent of a container between two cumulative samples, as `docker stats` computes it:
/// `(container delta / system delta) * online CPUs * 100`. 0 when the deltas are unusable.
pub fn cpu_percent_from_samples(
    container_now: u64,
    container_before: u64,
    system_now: u64,
    system_before: u64,
    online_cpus: u32,
) -> f64 {
    let container_delta = container_now.saturating_sub(container_before);
    let system_delta = system_now.saturating_sub(system_before);
    if system_delta == 0 || online_cpus == 0 {
        return 0.0;
    }
    container_delta as f64 / system_delta as f64 * f64::from(online_cpus) * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_matches_docker_formula() {
        // 0.5 s of container CPU over 2 s of system time on 2 CPUs → 50 %.
        let p = cpu_percent_from_samples(1_500, 1_000, 6_000, 4_000, 2);
        assert!((p - 50.0).abs() < 1e-9, "got {p}");
        assert_eq!(cpu_percent_from_samples(10, 5, 100, 100, 4), 0.0);
        assert_eq!(cpu_percent_from_samples(10, 5, 200, 100, 0), 0.0);
        // A counter reset never gives a negative value.
        assert_eq!(cpu_percent_from_samples(5, 10, 200, 100, 1), 0.0);
    }

    #[test]
    fn container_spec_debug_hides_env_values() {
        let spec = ContainerSpec {
            env: BTreeMap::from([("PASSWORD".into(), "hunter2".into())]),
            ..ContainerSpec::default()
        };
        let shown = format!("{spec:?}");
        assert!(shown.contains("PASSWORD"));
        assert!(!shown.contains("hunter2"));
    }
}
