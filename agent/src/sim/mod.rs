//! The node simulator: many simulated nodes in one process, for scale tests, benchmarks and
//! failure experiments. Each node is the real agent ([`crate::start`]: enrollment, the
//! mutual-TLS session, the reconciler) over its own in-memory [`FakeRuntime`] and a
//! [`StaticProbe`], with its own data dir `DIR/<name>`. All nodes share one tokio runtime: no
//! thread per node; enrollment runs with bounded concurrency and every periodic timer of an
//! agent starts at a random phase, so thousands of nodes do not tick together.
//!
//! Nodes can be killed (`kill -9`: the agent stops, its fake containers keep running),
//! restarted over the same runtime and data dir (re-adoption, no re-enrollment), and
//! partitioned from the scheduler (the session drops and stays down; the reconciler keeps
//! enforcing the last desired state) and healed.
//!
//! `cloud-agent sim` ([`cli`]) drives a [`Sim`] from the command line; [`console`] reads the
//! interactive commands.

pub mod cli;
pub mod console;

use crate::agent::{AgentError, AgentHandle};
use crate::config::{AgentConfig, SessionTiming};
use crate::identity::{self, IdentityError};
use crate::model::{Capacity, HostUsage};
use crate::reconcile::ReconcilerConfig;
use crate::runtime::FakeRuntime;
use crate::runtime::fake::FakeDelays;
use crate::telemetry::StaticProbe;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::Code;

/// Label key of the round-robin zone label (`--zones K`).
pub const ZONE_LABEL: &str = "zone";

/// How a simulation is set up. Build with [`SimConfig::new`] and adjust the public fields.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Scheduler gRPC address `HOST:PORT`.
    pub scheduler: String,
    /// CA that signed the scheduler's certificate.
    pub ca_file: PathBuf,
    /// Join token shared by all nodes: it must allow at least as many uses as there are
    /// nodes still to enroll.
    pub join_token_file: PathBuf,
    /// Node `i` keeps its identity and state in `data_dir/<name_prefix>-<i>`.
    pub data_dir: PathBuf,
    /// Node names and hostnames are `<name_prefix>-<i>`.
    pub name_prefix: String,
    /// Capacity each node advertises.
    pub capacity: Capacity,
    /// Labels of every node.
    pub labels: BTreeMap<String, String>,
    /// When > 0, node `i` also gets `zone=z<i % zones>` (overriding a `zone` in `labels`).
    pub zones: usize,
    /// How long a container start takes.
    pub start_delay: Duration,
    /// How long a container create takes.
    pub create_delay: Duration,
    /// How long an image pull takes (every image is pullable on simulated nodes).
    pub pull_delay: Duration,
    /// Images present on every node from the start (others are pulled on first use).
    pub images: Vec<String>,
    /// Nodes enrolling or connecting at the same time (each is a key generation, a TLS
    /// handshake and an RPC, then a mutual-TLS handshake).
    pub enroll_concurrency: usize,
    /// How long one node may take to enroll and connect before [`Sim::start`] or
    /// [`Sim::restart`] gives up.
    pub connect_timeout: Duration,
    /// Record each fake runtime's mutating calls ([`FakeRuntime::calls`]); off by default
    /// so long simulations keep a flat memory profile.
    pub record_calls: bool,
    pub reconciler: ReconcilerConfig,
    pub session: SessionTiming,
}

impl SimConfig {
    /// A configuration with the defaults: prefix `sim`, 4000 millicores, 16384 MiB, 200 GB,
    /// no labels, no zones, instant container operations, enrollment concurrency 64.
    pub fn new(
        nodes: usize,
        scheduler: impl Into<String>,
        ca_file: impl Into<PathBuf>,
        join_token_file: impl Into<PathBuf>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            nodes,
            scheduler: scheduler.into(),
            ca_file: ca_file.into(),
            join_token_file: join_token_file.into(),
            data_dir: data_dir.into(),
            name_prefix: "sim".into(),
            capacity: Capacity {
                cpu_millis: 4000,
                memory_mb: 16384,
                disk_gb: 200,
            },
            labels: BTreeMap::new(),
            zones: 0,
            start_delay: Duration::ZERO,
            create_delay: Duration::ZERO,
            pull_delay: Duration::ZERO,
            images: Vec::new(),
            enroll_concurrency: 64,
            connect_timeout: Duration::from_secs(120),
            record_calls: false,
            reconciler: ReconcilerConfig::default(),
            session: SessionTiming::default(),
        }
    }

    /// Name (and hostname) of node `i`.
    pub fn node_name(&self, i: usize) -> String {
        format!("{}-{i}", self.name_prefix)
    }

    /// Labels of node `i`.
    pub fn node_labels(&self, i: usize) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        if self.zones > 0 {
            labels.insert(ZONE_LABEL.to_owned(), format!("z{}", i % self.zones));
        }
        labels
    }

    fn validate(&self) -> Result<(), SimError> {
        let bad = |m: &str| Err(SimError::Config(m.to_owned()));
        if self.nodes == 0 {
            return bad("at least one node is needed");
        }
        if self.enroll_concurrency == 0 {
            return bad("the enrollment concurrency must be at least 1");
        }
        let prefix_ok = !self.name_prefix.is_empty()
            && self
                .name_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && !self.name_prefix.starts_with('.');
        if !prefix_ok {
            return bad(
                "the name prefix must be non-empty and use only letters, digits, '-', '_' and '.'",
            );
        }
        if self.labels.keys().any(|k| k.trim().is_empty()) {
            return bad("label keys must not be empty");
        }
        Ok(())
    }

    /// The agent configuration of node `i`.
    fn agent_config(&self, i: usize) -> AgentConfig {
        let name = self.node_name(i);
        let mut c = AgentConfig::new(
            self.scheduler.clone(),
            self.ca_file.clone(),
            self.join_token_file.clone(),
            self.data_dir.join(&name),
        );
        c.hostname = Some(name.clone());
        c.name = Some(name);
        c.labels = self.node_labels(i);
        let cap = self.capacity;
        c.host_probe = Some(Arc::new(StaticProbe {
            capacity: cap,
            usage: HostUsage {
                memory_total_mb: cap.memory_mb,
                disk_total_gb: cap.disk_gb,
                ..HostUsage::default()
            },
        }));
        c.reconciler = self.reconciler.clone();
        c.session = self.session.clone();
        c
    }

    fn runtime(&self) -> Arc<FakeRuntime> {
        let rt = FakeRuntime::with_images(self.images.iter().map(String::as_str));
        rt.set_pull_any(true);
        rt.set_record_calls(self.record_calls);
        rt.set_delays(FakeDelays {
            pull: self.pull_delay,
            create: self.create_delay,
            start: self.start_delay,
            stop: Duration::ZERO,
        });
        Arc::new(rt)
    }
}

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    /// The token enrolled some nodes, then the scheduler refused it.
    #[error(
        "node {node}: the scheduler accepted the join token for {enrolled} node(s), then refused it ({code:?}: {message}): the join token is single-use (or has no uses left); create a multi-use token with `cloud node token create --uses N` (N ≥ {needed})"
    )]
    SingleUseToken {
        node: String,
        enrolled: usize,
        needed: usize,
        code: Code,
        message: String,
    },
    #[error("node {node}: {source}")]
    Agent {
        node: String,
        #[source]
        source: AgentError,
    },
    #[error("node {node} did not enroll and connect to the scheduler within {after:?}")]
    NotConnected { node: String, after: Duration },
    #[error("no node {index}: the simulator has {len} node(s)")]
    NoSuchNode { index: usize, len: usize },
    #[error("simulator task failed: {0}")]
    Task(String),
}

impl SimError {
    /// Advice for the operator, when there is some beyond the message.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SimError::Agent { source, .. } if source.is_enrollment_refused() => Some(
                "all simulated nodes share one join token: use a multi-use token with at least as many uses as nodes (`cloud node token create --uses N`); a node name already taken also refuses enrollment (pick another --name-prefix)",
            ),
            SimError::NotConnected { .. } => Some(
                "check that the scheduler is up at --scheduler and answers; lower --enroll-concurrency if it is overloaded",
            ),
            _ => None,
        }
    }
}

/// Progress of [`Sim::start_with_progress`], reported after each node is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimProgress {
    /// Nodes enrolled (or identified) and connected so far.
    pub ready: usize,
    pub total: usize,
    /// Of `ready`, nodes that enrolled now (the others reused an identity from their dir).
    pub enrolled: usize,
}

/// A snapshot of the whole simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimStatus {
    pub total: usize,
    /// Nodes whose agent runs (not killed).
    pub alive: usize,
    /// Nodes with an established session.
    pub connected: usize,
    pub partitioned: usize,
    /// Fake containers in the running state, all nodes.
    pub running_instances: usize,
    /// Fake containers in any state, all nodes.
    pub containers: usize,
}

impl std::fmt::Display for SimStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connected {}/{} alive {} partitioned {} running {} containers {}",
            self.connected,
            self.total,
            self.alive,
            self.partitioned,
            self.running_instances,
            self.containers
        )
    }
}

struct SimNode {
    name: String,
    node_id: String,
    config: AgentConfig,
    runtime: Arc<FakeRuntime>,
    handle: Option<AgentHandle>,
    partitioned: AtomicBool,
}

/// A running simulation. Dropping it aborts every node like [`Sim::kill`].
pub struct Sim {
    nodes: Vec<SimNode>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

/// Starts one agent; waits for its session unless it starts partitioned.
async fn launch(
    config: AgentConfig,
    runtime: Arc<FakeRuntime>,
    timeout: Duration,
) -> Result<AgentHandle, SimError> {
    let node = config.name.clone().unwrap_or_default();
    let wait_connected = !config.partitioned;
    let up = async {
        let handle = crate::start(config, runtime)
            .await
            .map_err(|source| SimError::Agent {
                node: node.clone(),
                source,
            })?;
        if wait_connected {
            handle.wait_connected(timeout).await;
        }
        Ok(handle)
    };
    tokio::time::timeout(timeout, up)
        .await
        .map_err(|_| SimError::NotConnected {
            node: node.clone(),
            after: timeout,
        })?
}

/// `Some((node, code, message))` when the scheduler refused the join token.
fn token_refusal(e: &SimError) -> Option<(&str, Code, &str)> {
    match e {
        SimError::Agent {
            node,
            source: AgentError::Identity(IdentityError::Refused { code, message }),
        } if matches!(code, Code::Unauthenticated | Code::PermissionDenied) => {
            Some((node.as_str(), *code, message.as_str()))
        }
        _ => None,
    }
}

/// Started nodes, in index order, and the counts for progress reports.
struct Collector {
    slots: Vec<Option<SimNode>>,
    ready: usize,
    enrolled: usize,
}

impl Collector {
    fn add(
        &mut self,
        i: usize,
        config: AgentConfig,
        runtime: Arc<FakeRuntime>,
        handle: AgentHandle,
        fresh: bool,
    ) -> SimProgress {
        self.ready += 1;
        self.enrolled += usize::from(fresh);
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Some(SimNode {
                name: handle.node_name().to_owned(),
                node_id: handle.node_id().to_owned(),
                config,
                runtime,
                handle: Some(handle),
                partitioned: AtomicBool::new(false),
            });
        }
        SimProgress {
            ready: self.ready,
            total: self.slots.len(),
            enrolled: self.enrolled,
        }
    }
}

impl Sim {
    /// Enrolls (or loads the identity of) and starts every node, at most
    /// `enroll_concurrency` at a time, and returns once all are connected. On the first
    /// failure no further node is started, the started ones are aborted, and the error is
    /// returned (identities already saved stay, so a retry reuses them).
    pub async fn start(cfg: SimConfig) -> Result<Sim, SimError> {
        Self::start_with_progress(cfg, |_| {}).await
    }

    /// [`Sim::start`], calling `progress` after each node is connected.
    pub async fn start_with_progress(
        cfg: SimConfig,
        mut progress: impl FnMut(SimProgress),
    ) -> Result<Sim, SimError> {
        cfg.validate()?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let total = cfg.nodes;
        let mut pending = Vec::with_capacity(total);
        for i in 0..total {
            let config = cfg.agent_config(i);
            let fresh = identity::load(&config.data_dir)
                .map_err(|e| SimError::Agent {
                    node: cfg.node_name(i),
                    source: e.into(),
                })?
                .is_none();
            pending.push((i, config, cfg.runtime(), fresh));
        }
        let mut done = Collector {
            slots: (0..total).map(|_| None).collect(),
            ready: 0,
            enrolled: 0,
        };

        // The first node that must enroll goes alone: if the token then fails for the
        // others, it is a single-use token (a clear message instead of N refusals).
        if let Some(pos) = pending.iter().position(|p| p.3) {
            let (i, config, runtime, fresh) = pending.remove(pos);
            let handle = launch(config.clone(), runtime.clone(), cfg.connect_timeout).await?;
            progress(done.add(i, config, runtime, handle, fresh));
        }

        let fresh_needed = pending.iter().filter(|p| p.3).count();
        let sem = Arc::new(Semaphore::new(cfg.enroll_concurrency));
        let mut tasks = JoinSet::new();
        for (i, config, runtime, fresh) in pending {
            let sem = sem.clone();
            let timeout = cfg.connect_timeout;
            tasks.spawn(async move {
                // A closed semaphore means another node failed: do not start this one.
                let Ok(_permit) = sem.acquire_owned().await else {
                    return None;
                };
                let r = launch(config.clone(), runtime.clone(), timeout).await;
                Some((i, config, runtime, fresh, r))
            });
        }
        let mut failure: Option<SimError> = None;
        while let Some(joined) = tasks.join_next().await {
            let outcome = match joined {
                Ok(Some(o)) => o,
                Ok(None) => continue,
                Err(e) => {
                    sem.close();
                    failure.get_or_insert(SimError::Task(e.to_string()));
                    continue;
                }
            };
            match outcome {
                (i, config, runtime, fresh, Ok(handle)) => {
                    progress(done.add(i, config, runtime, handle, fresh));
                }
                (_, _, _, _, Err(e)) => {
                    sem.close();
                    // Keep the most telling error: a token refusal after successful
                    // enrollments explains all the others.
                    let e = match token_refusal(&e) {
                        Some((node, code, message)) if done.enrolled > 0 => {
                            SimError::SingleUseToken {
                                node: node.to_owned(),
                                enrolled: done.enrolled,
                                needed: done.enrolled + fresh_needed,
                                code,
                                message: message.to_owned(),
                            }
                        }
                        _ => e,
                    };
                    let replace = match &failure {
                        None => true,
                        Some(f) => {
                            !matches!(f, SimError::SingleUseToken { .. })
                                && matches!(e, SimError::SingleUseToken { .. })
                        }
                    };
                    if replace {
                        failure = Some(e);
                    }
                }
            }
        }
        if let Some(e) = failure {
            // Dropping the started handles aborts those agents.
            return Err(e);
        }
        let nodes = done
            .slots
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| SimError::Task("a node was neither started nor failed".into()))?;
        Ok(Sim {
            nodes,
            connect_timeout: cfg.connect_timeout,
        })
    }

    fn node(&self, i: usize) -> Result<&SimNode, SimError> {
        self.nodes.get(i).ok_or(SimError::NoSuchNode {
            index: i,
            len: self.nodes.len(),
        })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a simulation has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s id. Panics when `i >= len()`, like slice indexing.
    pub fn node_id(&self, i: usize) -> &str {
        &self.nodes[i].node_id
    }

    /// Node `i`'s name (also its hostname). Panics when `i >= len()`.
    pub fn node_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the node with this name or id.
    pub fn index_of(&self, name_or_id: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name_or_id || n.node_id == name_or_id)
    }

    /// Node `i`'s fake container engine (it outlives kills and restarts). Panics when
    /// `i >= len()`.
    pub fn runtime(&self, i: usize) -> &Arc<FakeRuntime> {
        &self.nodes[i].runtime
    }

    /// Node `i`'s running agent (`None` after [`Sim::kill`]). Panics when `i >= len()`.
    pub fn agent(&self, i: usize) -> Option<&AgentHandle> {
        self.nodes[i].handle.as_ref()
    }

    /// Whether node `i`'s agent has a session now. False for a bad index.
    pub fn is_connected(&self, i: usize) -> bool {
        self.nodes
            .get(i)
            .and_then(|n| n.handle.as_ref())
            .is_some_and(AgentHandle::is_connected)
    }

    /// Whether node `i` is partitioned. False for a bad index.
    pub fn is_partitioned(&self, i: usize) -> bool {
        self.nodes
            .get(i)
            .is_some_and(|n| n.partitioned.load(Ordering::SeqCst))
    }

    /// Whether node `i`'s agent runs (was not killed). False for a bad index.
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.handle.is_some())
    }

    /// Aborts node `i`'s agent like `kill -9`: its session drops, its fake containers keep
    /// running. Nothing happens for a bad index or a node already killed.
    pub fn kill(&mut self, i: usize) {
        if let Some(h) = self.nodes.get_mut(i).and_then(|n| n.handle.take()) {
            h.abort();
        }
    }

    /// Starts node `i`'s agent again (aborting it first if it runs) over the same fake
    /// runtime and data dir: the identity is reused and running containers are re-adopted,
    /// not restarted. Returns once connected; a partitioned node stays partitioned and
    /// returns once started.
    pub async fn restart(&mut self, i: usize) -> Result<(), SimError> {
        self.kill(i);
        let timeout = self.connect_timeout;
        let node = self.node(i)?;
        let mut config = node.config.clone();
        config.partitioned = node.partitioned.load(Ordering::SeqCst);
        let handle = launch(config, node.runtime.clone(), timeout).await?;
        if let Some(n) = self.nodes.get_mut(i) {
            n.handle = Some(handle);
        }
        Ok(())
    }

    /// Cuts (`on`) or restores node `i`'s link to the scheduler (see
    /// [`AgentHandle::set_partitioned`]). The state survives kill and restart. Nothing
    /// happens for a bad index.
    pub fn partition(&self, i: usize, on: bool) {
        if let Some(n) = self.nodes.get(i) {
            n.partitioned.store(on, Ordering::SeqCst);
            if let Some(h) = &n.handle {
                h.set_partitioned(on);
            }
        }
    }

    /// Total fake containers running, all nodes.
    pub fn running_instances(&self) -> usize {
        self.nodes.iter().map(|n| n.runtime.running_count()).sum()
    }

    /// Nodes with an established session.
    pub fn connected(&self) -> usize {
        (0..self.nodes.len())
            .filter(|i| self.is_connected(*i))
            .count()
    }

    /// A snapshot of the simulation.
    pub fn status(&self) -> SimStatus {
        let mut s = SimStatus {
            total: self.nodes.len(),
            alive: 0,
            connected: 0,
            partitioned: 0,
            running_instances: 0,
            containers: 0,
        };
        for n in &self.nodes {
            s.alive += usize::from(n.handle.is_some());
            s.connected += usize::from(n.handle.as_ref().is_some_and(AgentHandle::is_connected));
            s.partitioned += usize::from(n.partitioned.load(Ordering::SeqCst));
            s.running_instances += n.runtime.running_count();
            s.containers += n.runtime.container_count();
        }
        s
    }

    /// Waits until every live, unpartitioned node is connected, up to `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.nodes.iter().all(|n| match &n.handle {
                Some(h) => n.partitioned.load(Ordering::SeqCst) || h.is_connected(),
                None => true,
            });
            if all {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every agent gracefully (up to 5 s each, all at once). The fake containers
    /// vanish with the simulation.
    pub async fn shutdown(self) {
        let stops = self
            .nodes
            .into_iter()
            .filter_map(|n| n.handle)
            .map(|h| async move {
                if let Err(e) = h.stop(Duration::from_secs(5)).await {
                    tracing::warn!(error = %e, "simulated node did not stop cleanly");
                }
            });
        futures::future::join_all(stops).await;
    }
}

/// Resident memory (bytes) and CPU time used so far (user + system) of this process.
pub fn process_usage() -> Option<(u64, Duration)> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    let ticks = procfs::ticks_per_second().max(1);
    let cpu = Duration::from_millis((stat.utime + stat.stime) * 1000 / ticks);
    let rss = stat.rss.saturating_mul(procfs::page_size());
    Some((rss, cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SimConfig {
        SimConfig::new(10, "127.0.0.1:1", "/ca", "/token", "/data")
    }

    #[test]
    fn node_names_labels_and_configs() {
        let mut c = cfg();
        c.labels.insert("env".into(), "sim".into());
        c.labels.insert(ZONE_LABEL.into(), "ignored".into());
        c.zones = 3;
        assert_eq!(c.node_name(7), "sim-7");
        assert_eq!(
            c.node_labels(7),
            BTreeMap::from([
                ("env".to_owned(), "sim".to_owned()),
                ("zone".to_owned(), "z1".to_owned())
            ])
        );
        let a = c.agent_config(4);
        assert_eq!(a.name.as_deref(), Some("sim-4"));
        assert_eq!(a.hostname.as_deref(), Some("sim-4"));
        assert_eq!(a.data_dir, PathBuf::from("/data/sim-4"));
        assert_eq!(a.labels.get("zone").map(String::as_str), Some("z1"));
        assert!(!a.partitioned);
        let probe = a.host_probe.unwrap();
        assert_eq!(
            probe.capacity().unwrap(),
            Capacity {
                cpu_millis: 4000,
                memory_mb: 16384,
                disk_gb: 200
            }
        );
        c.zones = 0;
        assert_eq!(
            c.node_labels(7).get("zone").map(String::as_str),
            Some("ignored")
        );
    }

    #[test]
    fn validation() {
        assert!(cfg().validate().is_ok());
        let mut c = cfg();
        c.nodes = 0;
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.enroll_concurrency = 0;
        assert!(c.validate().is_err());
        for bad in ["", "a/b", ".x", "a b"] {
            let mut c = cfg();
            c.name_prefix = bad.into();
            assert!(c.validate().is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn runtime_of_a_simulated_node_pulls_anything_and_takes_its_time() {
        use crate::runtime::{ContainerRuntime, ContainerSpec, ContainerStatus};
        let mut c = cfg();
        c.start_delay = Duration::from_millis(150);
        c.images = vec!["pre/loaded:1".into()];
        let rt = c.runtime();
        assert!(rt.image_present("pre/loaded:1").await.unwrap());
        assert!(!rt.image_present("any/image").await.unwrap());
        rt.pull_image("any/image").await.unwrap();
        let id = rt
            .create(&ContainerSpec {
                name: "tc-x".into(),
                image: "any/image".into(),
                ..ContainerSpec::default()
            })
            .await
            .unwrap();
        let t = Instant::now();
        rt.start(&id).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert_eq!(
            rt.inspect(&id).await.unwrap().status,
            ContainerStatus::Running
        );
        assert!(rt.calls().is_empty(), "calls are not recorded by default");
        assert_eq!(rt.running_count(), 1);
    }

    #[test]
    fn errors_explain_single_use_tokens() {
        let e = SimError::SingleUseToken {
            node: "sim-1".into(),
            enrolled: 1,
            needed: 20,
            code: Code::Unauthenticated,
            message: "join token unknown, used or expired".into(),
        };
        let s = e.to_string();
        assert!(s.contains("the join token is single-use"), "{s}");
        assert!(s.contains("cloud node token create --uses N"), "{s}");
        assert!(s.contains("N ≥ 20"), "{s}");
    }
}
