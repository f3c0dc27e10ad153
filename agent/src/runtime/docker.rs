//! `ContainerRuntime` over a real dockerd (bollard 0.21). Connects lazily and negotiates the API
//! version on first use, so an agent started before dockerd keeps working once it comes up.

use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerStats, ContainerStatus,
    EngineRestartPolicy, LogOptions, LogStream, RuntimeError, cpu_percent_from_samples,
};
use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
    ContainerStatsResponse, HostConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StatsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Seconds bollard waits for a response header (not for streamed bodies).
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// Bound on one stats call (a non-one-shot sample takes about a second).
const STATS_TIMEOUT: Duration = Duration::from_secs(10);

/// A dockerd reached over its unix socket (default `/var/run/docker.sock`) or HTTP.
pub struct DockerRuntime {
    host: Option<String>,
    client: OnceCell<Docker>,
}

impl DockerRuntime {
    /// A runtime that connects on first use. `docker_host` is `unix:///path`, `tcp://h:p`,
    /// `http://h:p`, or `None` for the local defaults (`DOCKER_HOST` or the standard socket).
    pub fn new(docker_host: Option<&str>) -> Self {
        Self {
            host: docker_host.map(str::to_owned),
            client: OnceCell::new(),
        }
    }

    /// Connects now, negotiates the API version and pings the daemon.
    pub async fn connect(docker_host: Option<&str>) -> Result<Self, RuntimeError> {
        let runtime = Self::new(docker_host);
        runtime.ping().await?;
        Ok(runtime)
    }

    async fn docker(&self) -> Result<&Docker, RuntimeError> {
        self.client
            .get_or_try_init(|| async {
                let docker = match self.host.as_deref() {
                    None => Docker::connect_with_local_defaults(),
                    Some(h) if h.starts_with("unix://") || h.starts_with('/') => {
                        Docker::connect_with_unix(
                            h,
                            REQUEST_TIMEOUT_SECS,
                            bollard::API_DEFAULT_VERSION,
                        )
                    }
                    Some(h) => {
                        let url = h.replacen("tcp://", "http://", 1);
                        Docker::connect_with_http(
                            &url,
                            REQUEST_TIMEOUT_SECS,
                            bollard::API_DEFAULT_VERSION,
                        )
                    }
                }
                .map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
                let docker = docker
                    .negotiate_version()
                    .await
                    .map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
                tracing::info!(docker_host = ?self.host, api_version = %docker.client_version(), "connected to dockerd");
                Ok(docker)
            })
            .await
    }
}

/// Maps a bollard error to ours, keeping Docker's message.
fn map_err(e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => RuntimeError::NotFound(message),
            409 => RuntimeError::Conflict(message),
            _ => RuntimeError::Engine {
                status: status_code,
                message,
            },
        },
        BollardError::DockerStreamError { error } => RuntimeError::Engine {
            status: 500,
            message: error,
        },
        BollardError::RequestTimeoutError => RuntimeError::Timeout {
            what: "docker request".into(),
            after: Duration::from_secs(REQUEST_TIMEOUT_SECS),
        },
        BollardError::SocketNotFoundError(path) => {
            RuntimeError::Unavailable(format!("docker socket {path} not found"))
        }
        other => RuntimeError::Unavailable(other.to_string()),
    }
}

/// Parses Docker's RFC 3339 timestamps; Docker's "never" (`0001-01-01T00:00:00Z`) gives 0.
pub(crate) fn parse_docker_time(s: &str) -> i64 {
    match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) if t.timestamp() > 0 => t.timestamp_millis(),
        _ => 0,
    }
}

fn status_from(s: Option<ContainerStateStatusEnum>) -> ContainerStatus {
    match s {
        Some(ContainerStateStatusEnum::CREATED) => ContainerStatus::Created,
        Some(ContainerStateStatusEnum::RUNNING) => ContainerStatus::Running,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerStatus::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerStatus::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerStatus::Removing,
        Some(ContainerStateStatusEnum::EXITED) => ContainerStatus::Exited,
        Some(ContainerStateStatusEnum::DEAD) => ContainerStatus::Dead,
        _ => ContainerStatus::Unknown,
    }
}

fn info_from(resp: ContainerInspectResponse) -> ContainerInfo {
    let state = resp.state.unwrap_or_default();
    let host = resp.host_config.unwrap_or_default();
    let config = resp.config.unwrap_or_default();
    let restart_policy = match host.restart_policy.and_then(|p| p.name) {
        Some(RestartPolicyNameEnum::ON_FAILURE) => EngineRestartPolicy::OnFailure,
        Some(RestartPolicyNameEnum::UNLESS_STOPPED | RestartPolicyNameEnum::ALWAYS) => {
            EngineRestartPolicy::UnlessStopped
        }
        _ => EngineRestartPolicy::No,
    };
    ContainerInfo {
        id: resp.id.unwrap_or_default(),
        name: resp
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        status: status_from(state.status),
        exit_code: state.exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        error: state.error.unwrap_or_default(),
        started_at_unix_ms: state.started_at.as_deref().map_or(0, parse_docker_time),
        restart_count: resp.restart_count.unwrap_or(0),
        memory_bytes: host.memory.unwrap_or(0),
        nano_cpus: host.nano_cpus.unwrap_or(0),
        restart_policy,
        pid: state.pid.unwrap_or(0),
    }
}

/// Splits `repo[:tag]` (a `:` after the last `/` is a tag) for the pull API; digests stay whole.
fn split_image(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => (&image[..slash + i], &image[slash + i + 1..]),
        None => (image, "latest"),
    }
}

/// Memory in use as `docker stats` shows it: usage minus inactive page cache.
pub(crate) fn memory_used(stats: &ContainerStatsResponse) -> u64 {
    let Some(mem) = stats.memory_stats.as_ref() else {
        return 0;
    };
    let usage = mem.usage.unwrap_or(0);
    let cache = mem.stats.as_ref().and_then(|s| {
        s.get("total_inactive_file")
            .or_else(|| s.get("inactive_file"))
            .copied()
    });
    match cache {
        Some(c) if c < usage => usage - c,
        _ => usage,
    }
}

fn cpu_percent(stats: &ContainerStatsResponse) -> f64 {
    let (Some(cpu), Some(pre)) = (stats.cpu_stats.as_ref(), stats.precpu_stats.as_ref()) else {
        return 0.0;
    };
    let total = |c: &bollard::models::ContainerCpuStats| {
        c.cpu_usage
            .as_ref()
            .and_then(|u| u.total_usage)
            .unwrap_or(0)
    };
    let online = cpu.online_cpus.unwrap_or_else(|| {
        cpu.cpu_usage
            .as_ref()
            .and_then(|u| u.percpu_usage.as_ref())
            .map_or(1, |v| u32::try_from(v.len()).unwrap_or(1))
    });
    cpu_percent_from_samples(
        total(cpu),
        total(pre),
        cpu.system_cpu_usage.unwrap_or(0),
        pre.system_cpu_usage.unwrap_or(0),
        online,
    )
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    fn driver(&self) -> &'static str {
        "docker"
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        self.docker().await?.ping().await.map_err(map_err)?;
        Ok(())
    }

    async fn list(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let docker = self.docker().await?;
        let filter: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let filters = HashMap::from([("label", filter)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = docker
            .list_containers(Some(options))
            .await
            .map_err(map_err)?;
        let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
        let inspected = futures::stream::iter(ids)
            .map(|id| async move { self.inspect(&id).await })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::with_capacity(inspected.len());
        for r in inspected {
            match r {
                Ok(info) => out.push(info),
                // Removed between list and inspect.
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let docker = self.docker().await?;
        let resp = docker.inspect_container(id, None).await.map_err(map_err)?;
        Ok(info_from(resp))
    }

    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        let docker = self.docker().await?;
        match docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) => match map_err(e) {
                RuntimeError::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn pull_image(&self, image: &str) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        let (from, tag) = split_image(image);
        let options = CreateImageOptionsBuilder::default()
            .from_image(from)
            .tag(tag)
            .build();
        docker
            .create_image(Some(options), None, None)
            .map_err(|e| match map_err(e) {
                RuntimeError::NotFound(m) | RuntimeError::Engine { message: m, .. } => {
                    RuntimeError::ImageNotFound(m)
                }
                other => other,
            })
            .try_for_each(|_| async { Ok(()) })
            .await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let docker = self.docker().await?;
        let restart = match spec.restart_policy {
            EngineRestartPolicy::No => RestartPolicyNameEnum::NO,
            EngineRestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
            EngineRestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
        };
        let memory = (spec.memory_bytes > 0).then_some(spec.memory_bytes);
        let host_config = HostConfig {
            memory,
            // Same as the memory limit: no swap beyond the limit.
            memory_swap: memory,
            nano_cpus: (spec.nano_cpus > 0).then_some(spec.nano_cpus),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            // A tiny init (docker-init/tini) as PID 1 forwards signals and reaps zombies, so a
            // shell loop stops on SIGTERM in milliseconds instead of waiting out the grace
            // period to be killed.
            init: Some(true),
            network_mode: spec.network_none.then(|| "none".to_owned()),
            binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
            ..HostConfig::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let resp =
            docker
                .create_container(Some(options), body)
                .await
                .map_err(|e| match map_err(e) {
                    // Docker answers 404 "No such image: x" when the image is missing.
                    RuntimeError::NotFound(m) => RuntimeError::ImageNotFound(m),
                    other => other,
                })?;
        for w in resp.warnings {
            tracing::warn!(container = %spec.name, warning = %w, "docker warning on create");
        }
        Ok(resp.id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        match docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            // 304: already started.
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(secs).build();
        match docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn remove(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        let options = RemoveContainerOptionsBuilder::default()
            .force(force)
            .build();
        docker
            .remove_container(id, Some(options))
            .await
            .map_err(map_err)
    }

    async fn logs(&self, id: &str, options: LogOptions) -> Result<LogStream, RuntimeError> {
        let docker = self.docker().await?;
        // Fail fast with NotFound instead of an error inside the stream.
        docker.inspect_container(id, None).await.map_err(map_err)?;
        let tail = if options.tail == 0 {
            "all".to_owned()
        } else {
            options.tail.to_string()
        };
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(options.follow)
            .tail(&tail)
            .build();
        let stream = docker
            .logs(id, Some(opts))
            .map(|r| r.map(|o| o.into_bytes()).map_err(map_err));
        Ok(stream.boxed())
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        let docker = self.docker().await?;
        // Not one-shot: Docker then fills precpu_stats, which the CPU percent needs.
        let options = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(false)
            .build();
        let mut stream = docker.stats(id, Some(options));
        let next = tokio::time::timeout(STATS_TIMEOUT, stream.next())
            .await
            .map_err(|_| RuntimeError::Timeout {
                what: format!("stats of {id}"),
                after: STATS_TIMEOUT,
            })?;
        let stats = match next {
            Some(r) => r.map_err(map_err)?,
            None => return Err(RuntimeError::NotFound(format!("no stats for {id}"))),
        };
        Ok(ContainerStats {
            cpu_percent: cpu_percent(&stats),
            memory_used_bytes: memory_used(&stats),
            memory_limit_bytes: stats
                .memory_stats
                .as_ref()
                .and_then(|m| m.limit)
                .unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_image_references() {
        assert_eq!(split_image("local/busybox"), ("local/busybox", "latest"));
        assert_eq!(split_image("local/nope:1"), ("local/nope", "1"));
        assert_eq!(
            split_image("registry:5000/a/b:2.0"),
            ("registry:5000/a/b", "2.0")
        );
        assert_eq!(
            split_image("registry:5000/a/b"),
            ("registry:5000/a/b", "latest")
        );
        assert_eq!(split_image("a@sha256:abc"), ("a@sha256:abc", ""));
    }

    #[test]
    fn parses_docker_times() {
        assert_eq!(parse_docker_time("0001-01-01T00:00:00Z"), 0);
        assert_eq!(parse_docker_time(""), 0);
        assert_eq!(
            parse_docker_time("2026-11-28T14:56:08.993530429Z"),
            1_795_877_768_993
        );
    }

    #[test]
    fn memory_used_subtracts_inactive_cache() {
        let stats = ContainerStatsResponse {
            memory_stats: Some(bollard::models::ContainerMemoryStats {
                usage: Some(10_000),
                stats: Some(HashMap::from([("total_inactive_file".to_owned(), 4_000)])),
                limit: Some(64 << 20),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(memory_used(&stats), 6_000);
        let no_stats = ContainerStatsResponse::default();
        assert_eq!(memory_used(&no_stats), 0);
    }
}
