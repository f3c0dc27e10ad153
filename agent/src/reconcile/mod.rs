//! The level-triggered reconciler: converges this node's containers toward the last desired
//! state and reports what it observes. It runs on every new desired document and on a timer,
//! and does nothing at all until the first desired document of this process has arrived.
//!
//! It only ever lists or touches containers labelled `thecloud.node-id=<own id>`.

mod net;
#[cfg(test)]
mod net_tests;
mod observe;
mod plan;
mod snapshots;
mod state;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vm_tests;
mod vms;
#[cfg(test)]
mod volume_tests;
mod volumes;

pub use plan::{Action, Failure, container_name};
pub use state::STATE_FILE;

use crate::model::{DesiredState, InstanceSpec, ObservedState, RestartPolicy, RunState};
use crate::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerStatus, EngineRestartPolicy,
    LogOptions, RuntimeError, labels,
};
use futures::StreamExt;
use state::ActedStore;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Directory inside each mounted volume that containers see at their mount path.
const VOLUME_ROOT: &str = "root";

/// Errors of the reconciler.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reconciler state file {path}: {source}")]
    StateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list containers: {0}")]
    Runtime(#[from] RuntimeError),
}

/// Timing knobs of the reconciler.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// Period of the level-triggered timer.
    pub interval: Duration,
    /// Minimum time between two attempts for an instance whose last action failed (unless
    /// its change_generation increases).
    pub retry_after_failure: Duration,
    /// Bound on one image pull.
    pub pull_timeout: Duration,
    /// SIGTERM → SIGKILL grace when stopping.
    pub stop_grace: Duration,
    /// Actions run in parallel within one pass.
    pub concurrency: usize,
    /// How often the VPC data plane is re-checked even when nothing changed: VPCs re-synced
    /// (missing FDB entries, routes, rules restored) and ports that vanished re-plugged.
    pub network_resync: Duration,
    /// How long a VM's guest gets to power off after the ACPI request before its domain is
    /// destroyed.
    pub vm_shutdown_timeout: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            retry_after_failure: Duration::from_secs(30),
            pull_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
            concurrency: 8,
            network_resync: Duration::from_secs(30),
            vm_shutdown_timeout: Duration::from_secs(60),
        }
    }
}

/// Result of one action.
struct Outcome {
    action: Action,
    result: Result<(), String>,
}

/// Converges one node's containers. Owns its state; drive it with [`Reconciler::run`] or,
/// in tests, with [`Reconciler::set_desired`] + [`Reconciler::reconcile_once`].
pub struct Reconciler {
    node_id: String,
    runtime: Arc<dyn ContainerRuntime>,
    config: ReconcilerConfig,
    acted: ActedStore,
    failures: HashMap<String, Failure>,
    /// Last line of output of containers that exited with an error, by container id (and
    /// the start it belongs to), read once and shown in the failure reason.
    exit_notes: HashMap<String, (i64, String)>,
    desired: Option<Arc<DesiredState>>,
    last_error: Option<String>,
    net: net::NetState,
    volumes: volumes::VolState,
    vms: vms::VmHalf,
}

impl Reconciler {
    /// A reconciler for `node_id` keeping its memory in `data_dir`/reconciler-state.json.
    pub fn new(
        node_id: &str,
        runtime: Arc<dyn ContainerRuntime>,
        data_dir: &Path,
        config: ReconcilerConfig,
    ) -> Result<Self, ReconcileError> {
        let path = data_dir.join(STATE_FILE);
        let acted =
            ActedStore::load(&path).map_err(|source| ReconcileError::StateFile { path, source })?;
        let resync = config.network_resync;
        let retry_after = config.retry_after_failure;
        Ok(Self {
            node_id: node_id.to_owned(),
            runtime,
            config,
            acted,
            failures: HashMap::new(),
            exit_notes: HashMap::new(),
            desired: None,
            last_error: None,
            net: net::NetState::new(None, resync),
            volumes: volumes::VolState::new(None, retry_after),
            vms: vms::VmHalf::new(node_id, None, None, retry_after, Duration::from_secs(60)),
        })
    }

    /// Gives the reconciler this node's VPC data plane (without one, instances with a VPC
    /// port fail with a clear reason).
    pub fn with_network(mut self, backend: Arc<dyn crate::network::NetworkBackend>) -> Self {
        self.net = net::NetState::new(Some(backend), self.config.network_resync);
        self
    }

    /// Gives the reconciler this node's volume pool (without one, desired volumes fail with a
    /// clear reason).
    pub fn with_volumes(mut self, backend: Arc<dyn crate::storage::VolumeBackend>) -> Self {
        self.volumes = volumes::VolState::new(Some(backend), self.config.retry_after_failure);
        self
    }

    /// Gives the reconciler this node's hypervisor and VM directory (without them, VM
    /// instances fail with a clear reason).
    pub fn with_vms(
        mut self,
        hypervisor: Arc<dyn crate::vm::Hypervisor>,
        files: crate::vm::VmFiles,
    ) -> Self {
        self.vms = vms::VmHalf::new(
            &self.node_id,
            Some(hypervisor),
            Some(files),
            self.config.retry_after_failure,
            self.config.vm_shutdown_timeout,
        );
        self
    }

    /// Takes a new desired document. Returns false (and ignores it) when its generation is not
    /// newer than the current one.
    pub fn set_desired(&mut self, desired: Arc<DesiredState>) -> bool {
        if let Some(cur) = &self.desired
            && desired.generation <= cur.generation
        {
            if desired.generation < cur.generation {
                tracing::warn!(
                    current = cur.generation,
                    received = desired.generation,
                    "ignoring an older desired state"
                );
            }
            return false;
        }
        tracing::info!(
            generation = desired.generation,
            instances = desired.instances.len(),
            "new desired state"
        );
        self.desired = Some(desired);
        true
    }

    /// The desired document in force, if any has arrived.
    pub fn desired(&self) -> Option<&DesiredState> {
        self.desired.as_deref()
    }

    fn own_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(labels::NODE_ID.to_owned(), self.node_id.clone())])
    }

    async fn list_own(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let mut v = self.runtime.list(&self.own_labels()).await?;
        // Defence in depth: never trust a runtime filter with someone else's containers.
        v.retain(|c| c.label(labels::NODE_ID) == Some(self.node_id.as_str()));
        Ok(v)
    }

    /// One pass: act, then observe. `Ok(None)` before the first desired document (nothing is
    /// listed or touched then); `Err` when the runtime cannot be listed (nothing is touched).
    pub async fn reconcile_once(&mut self) -> Result<Option<ObservedState>, ReconcileError> {
        let Some(desired) = self.desired.clone() else {
            return Ok(None);
        };
        let actual = self.list_own().await?;
        let now = Instant::now();
        let acted = &self.acted;
        let actions = plan::plan(
            &desired,
            &actual,
            &|id| acted.get(id),
            &self.failures,
            now,
            self.config.retry_after_failure,
        );
        let mut actions = actions;
        actions.extend(self.restarts_after_lost_mounts(&desired, &actual, &actions, now));
        let acted_now = !actions.is_empty();
        if acted_now {
            let outcomes = futures::stream::iter(actions)
                .map(|a| self.execute(a))
                .buffer_unordered(self.config.concurrency.max(1))
                .collect::<Vec<_>>()
                .await;
            for o in outcomes {
                self.apply(&desired, o);
            }
            // Persist what was acted on before anything else can fail: a restart must not
            // repeat (or forget) an action already taken.
            if let Err(e) = self.acted.flush().await {
                tracing::error!(error = %e, "cannot write the reconciler state file");
            }
        }
        // Observe what the actions left behind (no second listing when nothing was done).
        let actual = if acted_now {
            self.list_own().await?
        } else {
            actual
        };
        self.mark_satisfied(&desired, &actual);
        self.failures.retain(|id, _| {
            desired.instances.iter().any(|s| s.instance_id == *id)
                || actual
                    .iter()
                    .any(|c| c.label(labels::INSTANCE_ID) == Some(id))
        });
        if let Err(e) = self.acted.flush().await {
            tracing::error!(error = %e, "cannot write the reconciler state file");
        }
        self.net.converge(&desired, &actual).await;
        // Which instance's container mounts each volume (from the containers' labels).
        let mut users: HashMap<&str, &str> = HashMap::new();
        for c in &actual {
            if let (Some(inst), Some(m)) = (c.label(labels::INSTANCE_ID), c.label(labels::MOUNTS)) {
                for pair in m.split(',') {
                    if let Some((vol, _)) = pair.split_once('=') {
                        users.insert(vol, inst);
                    }
                }
            }
        }
        let in_use: BTreeSet<&str> = users.keys().copied().collect();
        self.volumes.converge(&desired, &in_use).await;
        let vm_links = self.net.vm_links();
        self.vms
            .converge(&desired, &mut self.acted, self.volumes.backend(), &vm_links)
            .await;
        if let Err(e) = self.acted.flush().await {
            tracing::error!(error = %e, "cannot write the reconciler state file");
        }
        self.refresh_exit_notes(&actual).await;
        let notes: HashMap<&str, &str> = self
            .exit_notes
            .iter()
            .map(|(id, (_, note))| (id.as_str(), note.as_str()))
            .collect();
        let mut observed = observe::observe(&desired, &actual, &self.failures, &notes);
        self.volumes.amend(&mut observed);
        self.vms.amend(&mut observed);
        // After the VM half: a running VM whose port broke (rules) is failed like a container.
        self.net.amend(&desired, &mut observed);
        let vm_users = self.vms.volume_users();
        for v in &mut observed.volumes {
            if let Some(inst) = users.get(v.volume_id.as_str()) {
                v.instance_id = (*inst).to_owned();
            } else if let Some(inst) = vm_users.get(&v.volume_id) {
                v.instance_id = inst.clone();
            }
        }
        Ok(Some(observed))
    }

    /// Reads the last line of output of containers that just exited with an error (once per
    /// run), so the failure reason says why: "exited with code 127: exec foo failed: ...".
    async fn refresh_exit_notes(&mut self, actual: &[ContainerInfo]) {
        self.exit_notes.retain(|id, (started, _)| {
            actual
                .iter()
                .any(|c| &c.id == id && c.started_at_unix_ms == *started)
        });
        for c in actual {
            let failed =
                c.status == ContainerStatus::Exited && c.exit_code.is_some_and(|code| code != 0);
            if !failed || self.exit_notes.contains_key(&c.id) {
                continue;
            }
            let note = match self
                .runtime
                .logs(
                    &c.id,
                    LogOptions {
                        tail: 5,
                        follow: false,
                    },
                )
                .await
            {
                Ok(mut stream) => {
                    let mut buf = Vec::new();
                    while let Some(Ok(chunk)) = stream.next().await {
                        buf.extend_from_slice(&chunk);
                        if buf.len() > 64 * 1024 {
                            break;
                        }
                    }
                    last_line(&buf)
                }
                Err(_) => String::new(),
            };
            self.exit_notes
                .insert(c.id.clone(), (c.started_at_unix_ms, note));
        }
    }

    /// Remembers change generations that are satisfied without action (adopted containers,
    /// already-stopped instances), so a later exit on its own is not mistaken for a request.
    fn mark_satisfied(&mut self, desired: &DesiredState, actual: &[ContainerInfo]) {
        let (by_instance, _) = plan::index_containers(actual);
        for spec in &desired.instances {
            let status = by_instance.get(spec.instance_id.as_str()).map(|c| c.status);
            let satisfied = match (spec.desired, status) {
                (RunState::Running, Some(s)) => matches!(
                    s,
                    ContainerStatus::Running
                        | ContainerStatus::Restarting
                        | ContainerStatus::Paused
                ),
                (RunState::Running, None) => false,
                (RunState::Stopped, Some(s)) => !matches!(
                    s,
                    ContainerStatus::Running
                        | ContainerStatus::Restarting
                        | ContainerStatus::Paused
                ),
                (RunState::Stopped, None) => true,
            };
            if satisfied {
                self.acted.mark(&spec.instance_id, spec.change_generation);
            }
        }
        let known: Vec<String> = self
            .acted
            .ids()
            .into_iter()
            .filter(|id| {
                !desired.instances.iter().any(|s| s.instance_id == *id)
                    && !by_instance.contains_key(id.as_str())
            })
            .collect();
        for id in known {
            self.acted.forget(&id);
        }
    }

    fn apply(&mut self, desired: &DesiredState, o: Outcome) {
        let (instance_id, cg) = match &o.action {
            Action::Create { spec } | Action::Start { spec, .. } | Action::Stop { spec, .. } => {
                (Some(spec.instance_id.clone()), spec.change_generation)
            }
            Action::Remove { instance_id, .. } => (instance_id.clone(), 0),
        };
        let Some(id) = instance_id else { return };
        let still_desired = desired.instances.iter().any(|s| s.instance_id == id);
        match (o.result, &o.action) {
            (Ok(()), Action::Remove { .. }) => {
                if !still_desired {
                    self.failures.remove(&id);
                    self.acted.forget(&id);
                }
            }
            (Ok(()), _) => {
                self.failures.remove(&id);
                self.acted.mark(&id, cg);
            }
            (Err(reason), _) => {
                self.failures.insert(
                    id,
                    Failure {
                        change_generation: cg,
                        at: Instant::now(),
                        reason,
                    },
                );
            }
        }
    }

    fn container_spec(&self, spec: &InstanceSpec) -> ContainerSpec {
        let labels = BTreeMap::from([
            (labels::INSTANCE_ID.to_owned(), spec.instance_id.clone()),
            (labels::NODE_ID.to_owned(), self.node_id.clone()),
            (labels::INSTANCE_NAME.to_owned(), spec.name.clone()),
            (
                labels::MANAGED_BY.to_owned(),
                labels::MANAGED_BY_VALUE.to_owned(),
            ),
        ]);
        ContainerSpec {
            name: container_name(&spec.instance_id),
            image: spec.image.clone(),
            command: spec.command.clone(),
            env: spec.env.clone(),
            labels,
            memory_bytes: i64::try_from(spec.memory_mb.saturating_mul(1024 * 1024))
                .unwrap_or(i64::MAX),
            nano_cpus: i64::try_from(spec.cpu_millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
            restart_policy: match spec.restart_policy {
                RestartPolicy::Never => EngineRestartPolicy::No,
                RestartPolicy::OnFailure => EngineRestartPolicy::OnFailure,
                RestartPolicy::Always => EngineRestartPolicy::UnlessStopped,
            },
            network_none: spec.network.is_some(),
            binds: Vec::new(),
        }
    }

    async fn ensure_image(&self, image: &str) -> Result<(), String> {
        let unavailable = |msg: &str| format!("image {image:?} is not available on node: {msg}");
        match self.runtime.image_present(image).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(unavailable(&e.to_string())),
        }
        tracing::info!(
            image,
            timeout_s = self.config.pull_timeout.as_secs(),
            "image not present locally; pulling"
        );
        match tokio::time::timeout(self.config.pull_timeout, self.runtime.pull_image(image)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(unavailable(&e.to_string())),
            Err(_) => Err(unavailable(&format!(
                "pull timed out after {}s",
                self.config.pull_timeout.as_secs()
            ))),
        }
    }

    async fn execute(&self, action: Action) -> Outcome {
        let result = match &action {
            Action::Create { spec } => self.create_and_start(spec).await,
            Action::Start { spec, container_id } => {
                tracing::info!(instance_id = %spec.instance_id, container_id = %container_id, change_generation = spec.change_generation, "starting container");
                // Its volumes may have been unmounted since it was created (host reboot).
                match self.mount_volumes(spec).await {
                    Ok(_) => self
                        .runtime
                        .start(container_id)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                }
            }
            Action::Stop { spec, container_id } => {
                tracing::info!(instance_id = %spec.instance_id, container_id = %container_id, change_generation = spec.change_generation, "stopping container");
                self.runtime
                    .stop(container_id, self.config.stop_grace)
                    .await
                    .map_err(|e| e.to_string())
            }
            Action::Remove {
                instance_id,
                container_id,
            } => {
                tracing::info!(instance_id = ?instance_id, container_id = %container_id, "removing container that is not desired");
                self.stop_and_remove(container_id).await
            }
        };
        if let Err(reason) = &result {
            tracing::warn!(action = ?ActionName(&action), reason = %reason, "reconcile action failed");
        }
        Outcome { action, result }
    }

    async fn create_and_start(&self, spec: &InstanceSpec) -> Result<(), String> {
        tracing::info!(instance_id = %spec.instance_id, image = %spec.image, change_generation = spec.change_generation, "creating container");
        self.ensure_image(&spec.image).await?;
        let mut cspec = self.container_spec(spec);
        if !spec.mounts.is_empty() {
            cspec.binds = self.mount_volumes(spec).await?;
            cspec
                .labels
                .insert(labels::MOUNTS.to_owned(), plan::mounts_label(spec));
        }
        let id = self.runtime.create(&cspec).await.map_err(|e| match e {
            RuntimeError::ImageNotFound(m) => {
                format!("image {:?} is not available on node: {m}", spec.image)
            }
            other => other.to_string(),
        })?;
        tracing::info!(instance_id = %spec.instance_id, container_id = %id, "starting container");
        self.runtime.start(&id).await.map_err(|e| e.to_string())
    }

    /// Mounts the volumes of an instance (idempotent) and returns their Docker binds.
    async fn mount_volumes(&self, spec: &InstanceSpec) -> Result<Vec<String>, String> {
        if spec.mounts.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self
            .volumes
            .backend()
            .ok_or_else(|| volumes::NO_BACKEND.to_owned())?;
        let mut binds = Vec::with_capacity(spec.mounts.len());
        for (volume, path) in &spec.mounts {
            let mountpoint = backend
                .mount(volume)
                .await
                .map_err(|e| format!("volume {volume}: {e}"))?;
            // Bind a directory *inside* the volume's filesystem: should the volume ever be
            // unmounted under a container (host reboot), Docker then refuses to start it
            // instead of silently binding the empty mountpoint on the host's disk.
            let host = mountpoint.join(VOLUME_ROOT);
            // (A backend that mounts nothing real, like the in-memory fake, has no directory.)
            if tokio::fs::metadata(&mountpoint)
                .await
                .is_ok_and(|m| m.is_dir())
            {
                tokio::fs::create_dir_all(&host).await.map_err(|e| {
                    format!("volume {volume}: cannot prepare {}: {e}", host.display())
                })?;
            }
            binds.push(format!("{}:{path}", host.display()));
        }
        Ok(binds)
    }

    /// Starts containers that should run by their restart policy but could not, because the
    /// host lost the mounts of their volumes (a reboot: Docker's own restart failed on the
    /// missing bind source). The start mounts the volumes again first.
    fn restarts_after_lost_mounts(
        &self,
        desired: &DesiredState,
        actual: &[ContainerInfo],
        planned: &[Action],
        now: Instant,
    ) -> Vec<Action> {
        let planned_for = |id: &str| {
            planned.iter().any(|a| match a {
                Action::Create { spec }
                | Action::Start { spec, .. }
                | Action::Stop { spec, .. } => spec.instance_id == id,
                Action::Remove { instance_id, .. } => instance_id.as_deref() == Some(id),
            })
        };
        let mut out = Vec::new();
        for spec in &desired.instances {
            if spec.desired != RunState::Running
                || spec.restart_policy == RestartPolicy::Never
                || !spec.mounts.iter().any(|(v, _)| self.volumes.lost_mount(v))
                || planned_for(&spec.instance_id)
                || self.failures.get(&spec.instance_id).is_some_and(|f| {
                    now.saturating_duration_since(f.at) < self.config.retry_after_failure
                })
            {
                continue;
            }
            let Some(c) = actual
                .iter()
                .find(|c| c.label(labels::INSTANCE_ID) == Some(spec.instance_id.as_str()))
            else {
                continue;
            };
            // `on-failure`: a run that ended cleanly (exit 0) is not started again.
            let finished_cleanly =
                spec.restart_policy == RestartPolicy::OnFailure && c.exit_code == Some(0);
            if !finished_cleanly
                && matches!(
                    c.status,
                    ContainerStatus::Exited | ContainerStatus::Created | ContainerStatus::Dead
                )
            {
                tracing::info!(instance_id = %spec.instance_id, "its volumes were unmounted (host reboot?); mounting them and starting it again");
                out.push(Action::Start {
                    spec: spec.clone(),
                    container_id: c.id.clone(),
                });
            }
        }
        out
    }

    async fn stop_and_remove(&self, container_id: &str) -> Result<(), String> {
        match self
            .runtime
            .stop(container_id, self.config.stop_grace)
            .await
        {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(container_id, error = %e, "stop before removal failed; forcing")
            }
        }
        match self.runtime.remove(container_id, true).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Drives the reconciler: a pass on every new desired document and every `interval`;
    /// publishes each observation. Returns when `shutdown` turns true (between passes).
    pub async fn run(
        mut self,
        mut desired_rx: watch::Receiver<Option<Arc<DesiredState>>>,
        observed_tx: watch::Sender<Option<Arc<ObservedState>>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // The first pass runs at once; the periodic ones at a random phase of the interval,
        // so many agents in one process (the simulator) do not all reconcile together.
        let mut tick = crate::jitter::interval(self.config.interval);
        let mut first = true;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if !std::mem::take(&mut first) {
                tokio::select! {
                    biased;
                    r = shutdown.changed() => if r.is_err() { break },
                    r = desired_rx.changed() => if r.is_err() { break },
                    _ = tick.tick() => {}
                }
            }
            if *shutdown.borrow() {
                break;
            }
            let latest = desired_rx.borrow_and_update().clone();
            if let Some(d) = latest {
                self.set_desired(d);
            }
            match self.reconcile_once().await {
                Ok(Some(obs)) => {
                    if self.last_error.take().is_some() {
                        tracing::info!("container runtime reachable again");
                    }
                    observed_tx.send_if_modified(|cur| {
                        if cur.as_deref() == Some(&obs) {
                            false
                        } else {
                            *cur = Some(Arc::new(obs));
                            true
                        }
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    let msg = e.to_string();
                    if self.last_error.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(error = %msg, "reconcile pass skipped; nothing touched");
                        self.last_error = Some(msg);
                    }
                }
            }
        }
        tracing::debug!("reconciler stopped");
    }
}

/// Logs an action without its spec (whose env may hold secrets).
struct ActionName<'a>(&'a Action);

impl std::fmt::Debug for ActionName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Action::Create { spec } => write!(f, "create {}", spec.instance_id),
            Action::Start { spec, .. } => write!(f, "start {}", spec.instance_id),
            Action::Stop { spec, .. } => write!(f, "stop {}", spec.instance_id),
            Action::Remove { container_id, .. } => write!(f, "remove {container_id}"),
        }
    }
}

/// The last non-empty line of `output`, at most 200 characters.
fn last_line(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut out: String = line.chars().take(200).collect();
    if line.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod last_line_tests {
    use super::last_line;

    #[test]
    fn keeps_the_last_non_empty_line_and_bounds_it() {
        assert_eq!(last_line(b"a\nb\n\n  \n"), "b");
        assert_eq!(last_line(b""), "");
        let long = "x".repeat(300);
        let out = last_line(long.as_bytes());
        assert_eq!(out.chars().count(), 201);
        assert!(out.ends_with('…'));
        assert_eq!(last_line("é\nü".as_bytes()), "ü");
    }
}
